/*
** platform_proc_linux.c: Linux implementation of platform_proc.h (posix_spawn with glibc's
** addchdir_np, pidfd_open for the exit descriptor).
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
#include <unistd.h>

#include "platform_proc.h"

extern char **environ;

int upk_proc_pipe(int fds[2], int parent_end) {
  if (pipe2(fds, O_CLOEXEC) != 0) return errno;
  if (parent_end >= 0) {
    int fl = fcntl(fds[parent_end], F_GETFL);
    fcntl(fds[parent_end], F_SETFL, fl | O_NONBLOCK);
  }
  return 0;
}

/*
** posix_spawn (a vfork-like clone in glibc, much cheaper than fork for a
** large parent): new process group, default signal dispositions and an
** empty mask in the child, dup2 of the three descriptors, chdir.
*/
int upk_proc_spawn(const UpkSpawn *s, long *pid, int *stage) {
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
    if (s->fd[i] < 0)
      err = posix_spawn_file_actions_addopen(&fa, i, "/dev/null", i == 0 ? O_RDONLY : O_WRONLY, 0);
    else if (s->fd[i] != i)
      err = posix_spawn_file_actions_adddup2(&fa, s->fd[i], i);
  }
  if (!err && s->cwd) err = posix_spawn_file_actions_addchdir_np(&fa, s->cwd);
  *stage = UPK_SPAWN_SETUP;
  if (!err) {
    pid_t p;
    *stage = UPK_SPAWN_EXEC;
    err = posix_spawnp(&p, s->argv[0], &fa, &at, s->argv, s->envp ? s->envp : environ);
    if (!err) *pid = p;
    else if (s->cwd) {
      struct stat st;
      if (stat(s->cwd, &st) != 0 || !S_ISDIR(st.st_mode)) *stage = UPK_SPAWN_CHDIR;
    }
  }
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  return err;
}

int upk_proc_exit_fd(long pid) {
#ifdef SYS_pidfd_open
  int fd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
  if (fd >= 0) fcntl(fd, F_SETFD, FD_CLOEXEC);
  return fd;
#else
  (void)pid;
  return -1;
#endif
}

static void decode(int status, int *code, int *sig) {
  if (WIFEXITED(status)) { *code = WEXITSTATUS(status); *sig = 0; }
  else { *code = -1; *sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0; }
}

int upk_proc_reap(long pid, int *code, int *sig) {
  int status;
  pid_t r;
  do r = waitpid((pid_t)pid, &status, WNOHANG); while (r < 0 && errno == EINTR);
  if (r < 0) return -errno;
  if (r == 0) return 0;
  decode(status, code, sig);
  return 1;
}

void upk_proc_reap_wait(long pid, int *code, int *sig) {
  int status;
  pid_t r;
  do r = waitpid((pid_t)pid, &status, 0); while (r < 0 && errno == EINTR);
  if (r < 0) { *code = -1; *sig = 0; return; }
  decode(status, code, sig);
}

int upk_proc_kill_group(long pid, int sig) {
  if (killpg((pid_t)pid, sig) == 0) return 0;
  return kill((pid_t)pid, sig) == 0 ? 0 : errno;
}

int upk_proc_kill(long pid, int sig) {
  return kill((pid_t)pid, sig) == 0 ? 0 : errno;
}

const UpkSignal upk_proc_signals[] = {
  {SIGHUP, "HUP"}, {SIGINT, "INT"}, {SIGQUIT, "QUIT"}, {SIGILL, "ILL"}, {SIGABRT, "ABRT"},
  {SIGFPE, "FPE"}, {SIGKILL, "KILL"}, {SIGSEGV, "SEGV"}, {SIGPIPE, "PIPE"}, {SIGALRM, "ALRM"},
  {SIGTERM, "TERM"}, {SIGUSR1, "USR1"}, {SIGUSR2, "USR2"}, {SIGCHLD, "CHLD"}, {SIGCONT, "CONT"},
  {SIGSTOP, "STOP"}, {SIGTSTP, "TSTP"}, {SIGBUS, "BUS"}, {0, NULL}
};

int upk_proc_poll(UpkPollFd *fds, int n, int timeout_ms) {
  struct pollfd p[8];
  if (n > 8) return EINVAL;
  for (int i = 0; i < n; i++) {
    p[i].fd = fds[i].fd;
    p[i].events = (short)(((fds[i].want & UPK_POLL_IN) ? POLLIN : 0) |
                          ((fds[i].want & UPK_POLL_OUT) ? POLLOUT : 0));
    p[i].revents = 0;
  }
  int r = poll(p, (nfds_t)n, timeout_ms);
  if (r < 0) return errno;
  for (int i = 0; i < n; i++) {
    short e = p[i].revents;
    fds[i].got = ((e & POLLIN) ? UPK_POLL_IN : 0) | ((e & POLLOUT) ? UPK_POLL_OUT : 0) |
                 ((e & (POLLHUP | POLLERR | POLLNVAL)) ? UPK_POLL_HUP : 0);
  }
  return 0;
}

long upk_proc_read(int fd, void *buf, size_t n) {
  ssize_t r = read(fd, buf, n);
  return r < 0 ? -(long)errno : (long)r;
}

long upk_proc_write(int fd, const void *buf, size_t n) {
  ssize_t r = write(fd, buf, n);
  return r < 0 ? -(long)errno : (long)r;
}

int upk_proc_close(int fd) {
  return close(fd) != 0 ? errno : 0;
}

int upk_proc_open_read(const char *path, int *fd) {
  *fd = open(path, O_RDONLY | O_CLOEXEC);
  return *fd < 0 ? errno : 0;
}

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
