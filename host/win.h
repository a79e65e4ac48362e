/*
** win.h: what the Windows implementations share (platform_*_win.c and the
** upkit.win module): UTF-8 <-> UTF-16 at every Windows call, long paths,
** and Windows error codes mapped to errno values. Windows builds only.
*/
#ifndef UPKIT_WIN_H
#define UPKIT_WIN_H

#include <stddef.h>
#include <wchar.h>

/*
** A UTF-16 copy of a UTF-8 string (malloc'd; free it), or NULL with errno
** set (EINVAL for a string that is not UTF-8, ENOMEM).
*/
wchar_t *upk_w(const char *utf8);

/*
** A UTF-16 path for the Windows file API: '/' becomes '\', and an absolute
** path gets the "\\?\" prefix (UNC "\\server\share" becomes "\\?\UNC\server\share")
** so that paths longer than MAX_PATH work. Relative paths are made absolute
** first. malloc'd, or NULL with errno set.
*/
wchar_t *upk_wpath(const char *utf8);

/* A UTF-8 copy of a UTF-16 string (malloc'd), or NULL with errno set. */
char *upk_utf8(const wchar_t *w);

/*
** A UTF-8 path from a Windows one: the "\\?\" prefix dropped, '\' as '/'.
** Written into buf; 0, or ENAMETOOLONG / EINVAL.
*/
int upk_utf8_path(const wchar_t *w, char *buf, size_t size);

/* Counts Ctrl-C and Ctrl-Break events (platform_win.c); waits compare it to return EINTR. */
extern volatile long upk_win_interrupts;
/*
** The event Ctrl-C sets (auto-reset; after upk_win_interrupts and the interrupt flag have
** changed), or NULL before upk_on_sigint: a wait adds it to its handles (platform_proc_win.c).
*/
void *upk_win_interrupt_event(void);

/* The errno value for a Windows error code (GetLastError()); EIO when there is none closer. */
int upk_win_errno(unsigned long err);

/* 1 when path names a batch file (its name ends in .bat or .cmd, any case). */
int upk_win_is_batch(const char *path);

/*
** The command line for CreateProcessW that gives argv back (UTF-8 in,
** UTF-16 out, malloc'd into *out):
** - a program: argv[1..] quoted by the rules CommandLineToArgvW and the C
**   runtime reverse (backslashes doubled only before a quote); argv[0] quoted
**   whole and refused when it holds a quote.
** - a batch file (batch != 0): cmd.exe parses that line, not
**   CommandLineToArgvW, so quoting cannot protect an argument (the "BatBadBut"
**   injection): the line becomes  cmd.exe /d /e:ON /v:OFF /s /c ""<file>" <args>"
**   (to be started as the system's cmd.exe), every argument with a space or one of &|<>^(),;= is quoted, and an
**   argument holding ", %, a line break or a NUL is refused.
** Returns 0, EINVAL (*bad = the index of the refused argument), or ENOMEM.
*/
int upk_win_cmdline(const char *const *argv, int batch, wchar_t **out, int *bad);

#endif
