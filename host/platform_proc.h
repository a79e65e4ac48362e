/*
** platform_proc.h: the process seam of upkit.proc. Functions return 0 or
** an errno value and never touch Lua. A Windows build adds
** platform_proc_win.c beside platform_proc_linux.c.
*/
#ifndef UPKIT_PLATFORM_PROC_H
#define UPKIT_PLATFORM_PROC_H

#include <stddef.h>

typedef struct UpkSpawn {
  char *const *argv;    /* argv[0] is looked up in PATH when it has no '/' */
  char *const *envp;    /* NULL: inherit this process's environment */
  const char *cwd;      /* NULL: this process's folder */
  int fd[3];            /* the child's stdin, stdout, stderr; -1: /dev/null */
} UpkSpawn;

enum { UPK_SPAWN_EXEC = 1, UPK_SPAWN_CHDIR = 2, UPK_SPAWN_SETUP = 3 };

/*
** Start a program in a new process group (its pid is the group id).
** On failure *stage says what failed in the child (UPK_SPAWN_*) and the
** errno is returned; the child is already reaped.
*/
int upk_proc_spawn(const UpkSpawn *s, long *pid, int *stage);

/* A pipe with both ends close-on-exec; the parent's end is non-blocking. */
int upk_proc_pipe(int fds[2], int parent_end);

/* A descriptor that becomes readable when pid exits, or -1 where there is none. */
int upk_proc_exit_fd(long pid);

/*
** Reap pid without blocking: returns 1 when it has ended (then *code is
** its exit code or -1, *sig the signal that ended it or 0), 0 while it
** runs, or -errno.
*/
int upk_proc_reap(long pid, int *code, int *sig);
/* Reap pid, blocking until it ends. */
void upk_proc_reap_wait(long pid, int *code, int *sig);

/* Send sig to the process group of pid (falling back to pid alone). */
int upk_proc_kill_group(long pid, int sig);
int upk_proc_kill(long pid, int sig);

/* The signals of this system by name ("TERM"), ended by { 0, NULL }; proc.c looks them up. */
typedef struct UpkSignal { int sig; const char *name; } UpkSignal;
extern const UpkSignal upk_proc_signals[];

/* Wait for one of n descriptors; events are UPK_POLL_* bits. */
enum { UPK_POLL_IN = 1, UPK_POLL_OUT = 2, UPK_POLL_HUP = 4 };
typedef struct UpkPollFd { int fd, want, got; } UpkPollFd;
int upk_proc_poll(UpkPollFd *fds, int n, int timeout_ms);

/* Read or write without blocking: bytes done, 0 at end of file, -errno. */
long upk_proc_read(int fd, void *buf, size_t n);
long upk_proc_write(int fd, const void *buf, size_t n);
int upk_proc_close(int fd);
int upk_proc_open_read(const char *path, int *fd);

/* Ignore SIGPIPE in this process (writes to a closed pipe give EPIPE). */
void upk_proc_ignore_sigpipe(void);

/*
** The program file upk_proc_spawn would start for name (argv[0]): a name
** with a folder part as it is, otherwise the first match in PATH (on Windows
** also with .exe, .com, .bat and .cmd). 0, ENOENT, or ENAMETOOLONG.
*/
int upk_proc_which(const char *name, char *buf, size_t size);

/* The inherited environment, NULL-terminated. */
char **upk_proc_environ(void);

#endif
