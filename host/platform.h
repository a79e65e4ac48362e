/*
** platform.h: the operating-system seam of the host itself (paths,
** terminals, signals). Modules keep their own seams beside it
** (platform_<area>.h). Each seam has a Linux implementation (*_linux.c)
** and a Windows one (*_win.c); the build picks one set, and no module
** names the operating system.
*/
#ifndef UPKIT_PLATFORM_H
#define UPKIT_PLATFORM_H

#include <stddef.h>

/* Absolute path of the running executable into buf; 0 on success. */
int upk_exe_path(char *buf, size_t size);

/* 1 when the file descriptor is a terminal. */
int upk_isatty(int fd);

/*
** The folder lua/ and scripts/ are installed in: UPKIT_SHARE (the PREFIX's
** share/upkit) on POSIX; the executable's own folder on Windows, where the
** zip is unpacked as one folder. 0 on success.
*/
int upk_share_dir(char *buf, size_t size);

/* The separator of path lists such as UPKIT_PATH: ':' on POSIX, ';' on Windows. */
#ifdef _WIN32
#define UPK_PATH_LIST_SEP ';'
#else
#define UPK_PATH_LIST_SEP ':'
#endif

/* The user's data directory for upkit (XDG_DATA_HOME/upkit or ~/.local/share/upkit). */
int upk_user_dir(char *buf, size_t size);

/*
** This machine's name: gethostname on Linux; on Windows the NetBIOS name
** (GetComputerNameExW, ComputerNameNetBIOS), which SQL Server's
** SERVERPROPERTY('MachineName') gives. 0 on success.
*/
int upk_hostname(char *buf, size_t size);

/* 1 when path names an existing regular file. */
int upk_isfile(const char *path);

/* Install the SIGINT handler: it calls onint() (async-signal-safe code only). */
void upk_on_sigint(void (*onint)(int));

/* Sleep for the given seconds (fractions allowed); returns early on a signal. */
void upk_sleep(double seconds);

#endif
