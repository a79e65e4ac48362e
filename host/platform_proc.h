/*
** platform_proc.h: the process seam of upkit.proc. Functions never touch Lua;
** they return 0 or an errno value unless said otherwise.
**
** A child is started with its standard streams as pipes, the null device, a
** file (stdin) or this process's own (inherit), inside a tree upkit can end
** as a whole (a process group on Linux, a job object on Windows). Then the
** caller waits for what it wants, with a deadline: data (or the end) on the
** child's stdout or stderr, room in its stdin, its exit. One wait covers
** every stream, so a child that fills one pipe while upkit waits on the
** other cannot deadlock it. Reads and writes never block.
**
** Linux (platform_proc_linux.c): posix_spawn, non-blocking pipes, poll() over
** them and a pidfd. Windows (platform_proc_win.c): CreateProcessW in a job,
** named pipes whose upkit end is overlapped, WaitForMultipleObjects over
** their events, the process and the Ctrl-C event. Neither polls on a timer.
*/
#ifndef UPKIT_PLATFORM_PROC_H
#define UPKIT_PLATFORM_PROC_H

#include <stddef.h>

typedef struct UpkChild UpkChild;

/* What a standard stream of the child is. */
enum { UPK_STDIO_NULL, UPK_STDIO_PIPE, UPK_STDIO_INHERIT, UPK_STDIO_FILE };

typedef struct UpkSpawn {
  char *const *argv;    /* argv[0] is looked up in PATH when it has no folder part */
  char *const *envp;    /* NULL: inherit this process's environment */
  const char *cwd;      /* NULL: this process's folder */
  int stdio[3];         /* UPK_STDIO_* of stdin, stdout, stderr; FILE for stdin only */
  const char *in_file;  /* the file stdin reads, for UPK_STDIO_FILE */
} UpkSpawn;

/* What failed when upk_child_spawn fails. */
enum { UPK_SPAWN_EXEC = 1, UPK_SPAWN_CHDIR = 2, UPK_SPAWN_SETUP = 3, UPK_SPAWN_STDIN = 4 };

/*
** Start a program in a tree of its own (a new process group whose id is its
** pid; a job object). On failure *stage says what failed (UPK_SPAWN_*), the
** errno is returned and nothing is left behind.
*/
int upk_child_spawn(const UpkSpawn *s, UpkChild **child, int *stage);

long upk_child_pid(const UpkChild *c);

/* Events of upk_child_wait: bits of `want` and of the result. */
enum { UPK_EV_STDOUT = 1, UPK_EV_STDERR = 2, UPK_EV_STDIN = 4, UPK_EV_EXIT = 8 };

/*
** Wait until one of the events in want is ready, or timeout_ms passes (-1:
** no deadline, 0: only look). Returns the ready subset of want (a stream:
** data or its end can be read; stdin: a write would take something or
** fail; exit: the child has ended, upk_child_reap returns at once), 0 at
** the deadline, or -EINTR when Ctrl-C arrived (also just before the call:
** upkit's interrupt flag is looked at with nothing lost between the look and
** the wait). Streams not in want are not touched; only open streams count.
*/
int upk_child_wait(UpkChild *c, int want, int timeout_ms);

/* Read from stream 1 (stdout) or 2 (stderr) without blocking: bytes, 0 at its end, or -EAGAIN. */
long upk_child_read(UpkChild *c, int stream, void *buf, size_t n);

/*
** Write to the child's stdin without blocking: the bytes taken (the rest is
** for a later call), -EAGAIN when the pipe is full, -EPIPE when the child no
** longer reads it.
*/
long upk_child_write(UpkChild *c, const void *buf, size_t n);

/*
** Close upkit's end of stream 0, 1 or 2 (idempotent). The child then sees
** the end of its stdin once it has read what was written before.
*/
void upk_child_close(UpkChild *c, int stream);

/*
** Has the child ended? 1 (then *code is its exit code or -1, and *sig the
** signal that ended it or 0), 0 while it runs. With block, waits for the end.
*/
int upk_child_reap(UpkChild *c, int block, int *code, int *sig);

/* Send sig to the child's whole tree. Windows: any signal but 0 ends the job at once. */
int upk_child_kill(UpkChild *c, int sig);

/* End the tree (SIGKILL) if the child still runs, reap it, close every end, free c. */
void upk_child_free(UpkChild *c);

/* The signals of this system by name ("TERM"), ended by { 0, NULL }; proc.c looks them up. */
typedef struct UpkSignal { int sig; const char *name; } UpkSignal;
extern const UpkSignal upk_proc_signals[];

/* Ignore SIGPIPE in this process (writes to a closed pipe give EPIPE). */
void upk_proc_ignore_sigpipe(void);

/*
** The program file upk_child_spawn would start for name (argv[0]): a name
** with a folder part as it is, otherwise the first match in PATH (on Windows
** also with .exe, .com, .bat and .cmd). 0, ENOENT, or ENAMETOOLONG.
*/
int upk_proc_which(const char *name, char *buf, size_t size);

/* The inherited environment, NULL-terminated. */
char **upk_proc_environ(void);

#endif
