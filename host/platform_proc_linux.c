/*
** platform_proc_linux.c: Linux implementation of platform_proc.h: posix_spawn (glibc's
** addchdir_np) into a new process group, pipes whose upkit end is non-blocking, and poll()
** over them and a pidfd (pidfd_open) that becomes readable at the exit.
*/
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "platform_proc.h"

extern char **environ;
/* Set by upkit's SIGINT handler (main.c, upkit.h); upk_child_wait looks at it with SIGINT blocked. */
extern volatile sig_atomic_t upk_interrupted;

struct UpkChild {
  pid_t pid;
  int pidfd;     /* readable at the exit; -1 where the kernel has none (then the exit is polled) */
  int fd[3];     /* upkit's ends of stdin, stdout, stderr; -1 when closed or not a pipe */
  int reaped, code, sig;
};

/* A pipe with both ends close-on-exec; upkit's end (parent_end) non-blocking. */
static int new_pipe(int fds[2], int parent_end) {
  if (pipe2(fds, O_CLOEXEC) != 0) return errno;
  int fl = fcntl(fds[parent_end], F_GETFL);
  fcntl(fds[parent_end], F_SETFL, fl | O_NONBLOCK);
  return 0;
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/*
** posix_spawn (a vfork-like clone in glibc, much cheaper than fork for a
** large parent): new process group, default signal dispositions and an
** empty mask in the child, dup2 of the three descriptors, chdir.
*/
static int spawn(const UpkSpawn *s, const int fd[3], pid_t *pid, int *stage) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  sigset_t none, all;
  int err;
  if ((err = posix_spawn_file_actions_init(&fa)) != 0) { *stage = UPK_SPAWN_SETUP; return err; }
  if ((err = posix_spawnattr_init(&at)) != 0) {
    posix_spawn_file_actions_destroy(&fa);
    *stage = UPK_SPAWN_SETUP;
    return err;
  }
  sigemptyset(&none);
  sigfillset(&all);
  sigdelset(&all, SIGKILL);
  sigdelset(&all, SIGSTOP);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&at, 0);
  posix_spawnattr_setsigmask(&at, &none);
  posix_spawnattr_setsigdefault(&at, &all);
  for (int i = 0; i < 3 && !err; i++) {
    if (fd[i] < 0)
      err = posix_spawn_file_actions_addopen(&fa, i, "/dev/null", i == 0 ? O_RDONLY : O_WRONLY, 0);
    else if (fd[i] != i)
      err = posix_spawn_file_actions_adddup2(&fa, fd[i], i);
  }
  if (!err && s->cwd) err = posix_spawn_file_actions_addchdir_np(&fa, s->cwd);
  *stage = UPK_SPAWN_SETUP;
  if (!err) {
    *stage = UPK_SPAWN_EXEC;
    err = posix_spawnp(pid, s->argv[0], &fa, &at, s->argv, s->envp ? s->envp : environ);
    if (err && s->cwd) {
      struct stat st;
      if (stat(s->cwd, &st) != 0 || !S_ISDIR(st.st_mode)) *stage = UPK_SPAWN_CHDIR;
    }
  }
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  return err;
}

int upk_child_spawn(const UpkSpawn *s, UpkChild **child, int *stage) {
  UpkChild *c = calloc(1, sizeof *c);
  int theirs[3] = {-1, -1, -1}, err = 0;
  *stage = UPK_SPAWN_SETUP;
  if (c == NULL) return ENOMEM;
  c->pidfd = c->fd[0] = c->fd[1] = c->fd[2] = -1;
  for (int i = 0; i < 3 && !err; i++) {
    int pp[2];
    switch (s->stdio[i]) {
    case UPK_STDIO_PIPE:
      if ((err = new_pipe(pp, i == 0 ? 1 : 0)) != 0) break;
      c->fd[i] = pp[i == 0 ? 1 : 0];
      theirs[i] = pp[i == 0 ? 0 : 1];
      break;
    case UPK_STDIO_INHERIT:
      theirs[i] = i;
      break;
    case UPK_STDIO_FILE:
      if (i == 0 && (theirs[0] = open(s->in_file, O_RDONLY | O_CLOEXEC)) < 0) {
        err = errno;
        *stage = UPK_SPAWN_STDIN;
      }
      break;
    }
  }
  if (!err) err = spawn(s, theirs, &c->pid, stage);
  for (int i = 0; i < 3; i++) if (theirs[i] > 2) close(theirs[i]);
  if (err) {
    for (int i = 0; i < 3; i++) close_fd(&c->fd[i]);
    free(c);
    return err;
  }
#ifdef SYS_pidfd_open
  c->pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
  if (c->pidfd >= 0) fcntl(c->pidfd, F_SETFD, FD_CLOEXEC);
#endif
  *child = c;
  return 0;
}

long upk_child_pid(const UpkChild *c) {
  return (long)c->pid;
}

/* Has the child ended (without reaping it)? */
static int ended(UpkChild *c) {
  siginfo_t si;
  if (c->reaped) return 1;
  memset(&si, 0, sizeof si);
  int r;
  do r = waitid(P_PID, (id_t)c->pid, &si, WEXITED | WNOHANG | WNOWAIT); while (r < 0 && errno == EINTR);
  return r < 0 || si.si_pid != 0;
}

int upk_child_wait(UpkChild *c, int want, int timeout_ms) {
  struct pollfd p[4];
  int bit[4], n = 0;
  static const int bits[3] = {UPK_EV_STDIN, UPK_EV_STDOUT, UPK_EV_STDERR};
  for (int i = 0; i < 3; i++)
    if ((want & bits[i]) && c->fd[i] >= 0) {
      p[n] = (struct pollfd){c->fd[i], i == 0 ? POLLOUT : POLLIN, 0};
      bit[n++] = bits[i];
    }
  if (want & UPK_EV_EXIT) {
    if (c->reaped) return UPK_EV_EXIT;
    if (c->pidfd >= 0) {
      p[n] = (struct pollfd){c->pidfd, POLLIN, 0};
      bit[n++] = UPK_EV_EXIT;
    } else {
      if (ended(c)) return UPK_EV_EXIT;
      if (timeout_ms < 0 || timeout_ms > 20) timeout_ms = 20;  /* no pidfd: look again soon */
    }
  }
  /*
  ** SIGINT stays blocked from the look at the flag until ppoll waits, so a
  ** Ctrl-C that arrives just before the wait ends it instead of being seen
  ** only at the deadline.
  */
  sigset_t intr, old;
  sigemptyset(&intr);
  sigaddset(&intr, SIGINT);
  sigprocmask(SIG_BLOCK, &intr, &old);
  if (upk_interrupted) {
    sigprocmask(SIG_SETMASK, &old, NULL);
    return -EINTR;
  }
  struct timespec ts = { timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L };
  int r = ppoll(p, (nfds_t)n, timeout_ms < 0 ? NULL : &ts, &old);
  int err = errno;
  sigprocmask(SIG_SETMASK, &old, NULL);
  if (r < 0) return -err;
  int got = 0;
  for (int i = 0; i < n; i++) if (p[i].revents) got |= bit[i];
  if (!got && (want & UPK_EV_EXIT) && c->pidfd < 0 && ended(c)) got = UPK_EV_EXIT;
  return got;
}

long upk_child_read(UpkChild *c, int stream, void *buf, size_t n) {
  if (stream < 1 || stream > 2 || c->fd[stream] < 0) return 0;
  ssize_t r = read(c->fd[stream], buf, n);
  return r < 0 ? (errno == EWOULDBLOCK ? -EAGAIN : -(long)errno) : (long)r;
}

long upk_child_write(UpkChild *c, const void *buf, size_t n) {
  if (c->fd[0] < 0) return -EPIPE;
  ssize_t r = write(c->fd[0], buf, n);
  if (r >= 0) return (long)r;
  return errno == EWOULDBLOCK ? -EAGAIN : -(long)errno;
}

void upk_child_close(UpkChild *c, int stream) {
  if (stream >= 0 && stream <= 2) close_fd(&c->fd[stream]);
}

static void decode(UpkChild *c, int status) {
  if (WIFEXITED(status)) { c->code = WEXITSTATUS(status); c->sig = 0; }
  else { c->code = -1; c->sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0; }
}

int upk_child_reap(UpkChild *c, int block, int *code, int *sig) {
  if (!c->reaped) {
    int status;
    pid_t r;
    do r = waitpid(c->pid, &status, block ? 0 : WNOHANG); while (r < 0 && errno == EINTR);
    if (r == 0) return 0;
    if (r < 0) { c->code = -1; c->sig = 0; }
    else decode(c, status);
    c->reaped = 1;
    close_fd(&c->pidfd);
  }
  *code = c->code;
  *sig = c->sig;
  return 1;
}

/* The group first; a child that left it (setsid) still gets the signal itself. */
int upk_child_kill(UpkChild *c, int sig) {
  if (c->reaped) return ESRCH;
  if (killpg(c->pid, sig) == 0) return 0;
  return kill(c->pid, sig) == 0 ? 0 : errno;
}

void upk_child_free(UpkChild *c) {
  if (c == NULL) return;
  int code, sig;
  if (!c->reaped) {
    upk_child_kill(c, SIGKILL);
    upk_child_reap(c, 1, &code, &sig);
  }
  for (int i = 0; i < 3; i++) close_fd(&c->fd[i]);
  close_fd(&c->pidfd);
  free(c);
}

const UpkSignal upk_proc_signals[] = {
  {SIGHUP, "HUP"}, {SIGINT, "INT"}, {SIGQUIT, "QUIT"}, {SIGILL, "ILL"}, {SIGABRT, "ABRT"},
  {SIGFPE, "FPE"}, {SIGKILL, "KILL"}, {SIGSEGV, "SEGV"}, {SIGPIPE, "PIPE"}, {SIGALRM, "ALRM"},
  {SIGTERM, "TERM"}, {SIGUSR1, "USR1"}, {SIGUSR2, "USR2"}, {SIGCHLD, "CHLD"}, {SIGCONT, "CONT"},
  {SIGSTOP, "STOP"}, {SIGTSTP, "TSTP"}, {SIGBUS, "BUS"}, {0, NULL}
};

void upk_proc_ignore_sigpipe(void) {
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
  }
}

static int runnable(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

int upk_proc_which(const char *name, char *buf, size_t size) {
  if (*name == '\0') return ENOENT;
  if (strchr(name, '/')) {
    if (!runnable(name)) return ENOENT;
    if (strlen(name) >= size) return ENAMETOOLONG;
    strcpy(buf, name);
    return 0;
  }
  const char *path = getenv("PATH");
  for (const char *p = path ? path : ""; *p;) {
    const char *e = strchr(p, ':');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len > 0) {
      int n = snprintf(buf, size, "%.*s/%s", (int)len, p, name);
      if (n >= 0 && (size_t)n < size && runnable(buf)) return 0;
    }
    p += len + (e ? 1 : 0);
  }
  return ENOENT;
}

char **upk_proc_environ(void) {
  return environ;
}
