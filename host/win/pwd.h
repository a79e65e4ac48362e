/*
** pwd.h for the Windows build: Windows has no passwd database. upkit's one
** use, sql.c's cleanup of psqlODBC's log residue in /tmp, has nothing to do
** there (psqlODBC for Windows logs elsewhere): getpwuid finds no user.
*/
#ifndef UPKIT_WIN_PWD_H
#define UPKIT_WIN_PWD_H

struct passwd { const char *pw_name; };

static inline int getuid(void) { return 0; }
static inline const struct passwd *getpwuid(int uid) { (void)uid; return (const struct passwd *)0; }

#ifndef program_invocation_short_name
#define program_invocation_short_name "upkit"
#endif

#endif
