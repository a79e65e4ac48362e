/*
** compat.h: included first into every host file of the Windows build
** (mk/windows.mk passes -include). What the POSIX-minded modules name and
** mingw-w64 lacks, given values of their own so that the modules compile
** unchanged; the platform_*_win.c files do the work behind them.
*/
#ifndef UPKIT_WIN_COMPAT_H
#define UPKIT_WIN_COMPAT_H

#define WIN32_LEAN_AND_MEAN
#define NOMINMAX
#include <windows.h>  /* before the ODBC headers, which need its types */
#include <fcntl.h>
#include <limits.h>

/* Paths: mingw's PATH_MAX is MAX_PATH (260); upkit uses \\?\ paths, so buffers get Linux's size. */
#undef PATH_MAX
#define PATH_MAX 4096

#ifndef NAME_MAX
#define NAME_MAX 255  /* one path component, in bytes of UTF-8 as upkit counts it */
#endif
#ifndef EDQUOT
#define EDQUOT 200    /* not produced on Windows (quota errors map to ENOSPC); outside mingw's range */
#endif
#ifndef SIGKILL
#define SIGKILL 9     /* ends a process tree: the job object is terminated */
#endif
#ifndef O_CLOEXEC
#define O_CLOEXEC _O_NOINHERIT
#endif

/* fsync through FlushFileBuffers (host/win_compat_win.c) */
int upk_win_fsync(int fd);
#define fsync upk_win_fsync

#endif
