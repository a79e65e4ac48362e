/*
** win_argv_win.c: argv -> a Windows command line (see upk_win_cmdline in
** win.h). Windows has no argv: a process gets one string, which the C
** runtime (or CommandLineToArgvW) splits again, and which cmd.exe parses by
** rules of its own when the program is a batch file.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "win.h"

/* A growing UTF-8 buffer. */
typedef struct { char *p; size_t n, cap; int oom; } Buf;

static void put(Buf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->n + n + 1 > b->cap) {
    size_t cap = (b->n + n + 1) * 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) { b->oom = 1; return; }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = '\0';
}

static void putc1(Buf *b, char c) { put(b, &c, 1); }

static void repeat(Buf *b, char c, size_t n) { while (n--) putc1(b, c); }

int upk_win_is_batch(const char *path) {
  size_t n = strlen(path);
  if (n < 4) return 0;
  const char *e = path + n - 4;
  return e[0] == '.' &&
         ((strchr("bB", e[1]) && strchr("aA", e[2]) && strchr("tT", e[3])) ||
          (strchr("cC", e[1]) && strchr("mM", e[2]) && strchr("dD", e[3])));
}

/* One argument by the C runtime's rules: quotes only when needed. */
static void quote_arg(Buf *b, const char *a) {
  if (*a && strpbrk(a, " \t\n\v\"") == NULL) { put(b, a, strlen(a)); return; }
  putc1(b, '"');
  for (const char *p = a;; p++) {
    size_t slashes = 0;
    while (*p == '\\') { slashes++; p++; }
    if (*p == '\0') { repeat(b, '\\', slashes * 2); break; }      /* before the closing quote */
    if (*p == '"') { repeat(b, '\\', slashes * 2 + 1); putc1(b, '"'); }
    else { repeat(b, '\\', slashes); putc1(b, *p); }
  }
  putc1(b, '"');
}

/* One argument of a batch file: quoted when cmd.exe would split or act on it. */
static int batch_arg(Buf *b, const char *a) {
  if (strpbrk(a, "\"%\r\n") != NULL) return EINVAL;
  int q = *a == '\0' || strpbrk(a, " \t&|<>^(),;=!") != NULL;
  if (q) putc1(b, '"');
  put(b, a, strlen(a));
  if (q) putc1(b, '"');
  return 0;
}

int upk_win_cmdline(const char *const *argv, int batch, wchar_t **out, int *bad) {
  Buf b = { NULL, 0, 0, 0 };
  *out = NULL;
  *bad = -1;
  if (argv[0] == NULL || strchr(argv[0], '"') != NULL || (batch && strpbrk(argv[0], "%\r\n"))) {
    *bad = 0;
    return EINVAL;
  }
  if (batch) put(&b, "cmd.exe /d /e:ON /v:OFF /s /c \"", 31);
  putc1(&b, '"');
  put(&b, argv[0], strlen(argv[0]));
  putc1(&b, '"');
  for (int i = 1; argv[i] != NULL; i++) {
    putc1(&b, ' ');
    if (!batch) { quote_arg(&b, argv[i]); continue; }
    if (batch_arg(&b, argv[i]) != 0) { free(b.p); *bad = i; return EINVAL; }
  }
  if (batch) putc1(&b, '"');
  if (b.oom) { free(b.p); return ENOMEM; }
  *out = upk_w(b.p);
  int err = *out ? 0 : errno;
  if (err == EINVAL) *bad = 0;
  free(b.p);
  return err;
}
