/*
** forward.exe: a Windows-side stand-in of the Octopus simulator (make test-windows only; not in
** the zip). Copied as Octopus.Server.exe, msiexec.exe, sc.exe or filever.exe, it reads
** "<its own path>.forward" (lines port=, token=, target=), sends its arguments (UTF-16 ->
** UTF-8), current folder and stdin (when it is a pipe or a file) to tests/sim/winforward.py on
** 127.0.0.1:port, writes back the stdout and stderr it is sent and exits with the exit code it is
** given, all 32 bits (3010, 1603). Wine would lose the code of the simulator's Unix stand-ins.
**
** Its own failures (no .forward file, the forwarder unreachable or silent, a refused request)
** are one line on stderr starting "forward.exe:" and exit code 1 (or the refusal's code).
** The wire format is in tests/sim/winforward.py.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <winsock2.h>
#include <windows.h>
#include <shellapi.h>

#define SILENCE_MS 60000 /* the forwarder sends a heartbeat every 2 s; this long without one is an error */

typedef struct { char *p; size_t n, cap; } Buf;

_Noreturn static void die(const char *fmt, const char *arg, int code) {
  char msg[1024];
  snprintf(msg, sizeof msg, fmt, arg ? arg : "");
  fprintf(stderr, "forward.exe: %s\n", msg);
  fflush(stderr);
  ExitProcess((UINT)code);
}

static void put(Buf *b, const void *p, size_t n) {
  if (b->n + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + n) cap *= 2;
    char *q = realloc(b->p, cap);
    if (q == NULL) die("out of memory", NULL, 1);
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->n, p, n);
  b->n += n;
}

static void put_u32(Buf *b, unsigned long v) {
  unsigned char c[4] = { (unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8),
                         (unsigned char)v };
  put(b, c, 4);
}

static void put_str(Buf *b, const char *s, size_t n) {
  put_u32(b, (unsigned long)n);
  put(b, s, n);
}

static char *utf8(const wchar_t *w) {
  int n = WideCharToMultiByte(CP_UTF8, 0, w, -1, NULL, 0, NULL, NULL);
  char *s = n > 0 ? malloc((size_t)n) : NULL;
  if (s == NULL || WideCharToMultiByte(CP_UTF8, 0, w, -1, s, n, NULL, NULL) <= 0) die("bad UTF-16 text", NULL, 1);
  return s;
}

/* The .forward file: port, token, target. */
static void read_config(char **port, char **token, char **target) {
  wchar_t self[32768];
  DWORD n = GetModuleFileNameW(NULL, self, 32768 - 16);
  if (n == 0 || n >= 32768 - 16) die("cannot find its own path", NULL, 1);
  wcscat(self, L".forward");
  char *path = utf8(self);
  HANDLE h = CreateFileW(self, GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING, 0, NULL);
  if (h == INVALID_HANDLE_VALUE) die("cannot read %s (it says where the forwarder listens)", path, 1);
  static char text[65536];
  DWORD got = 0;
  if (!ReadFile(h, text, sizeof text - 1, &got, NULL)) die("cannot read %s", path, 1);
  CloseHandle(h);
  text[got] = '\0';
  *port = *token = *target = NULL;
  for (char *line = strtok(text, "\r\n"); line; line = strtok(NULL, "\r\n")) {
    if (strncmp(line, "port=", 5) == 0) *port = line + 5;
    else if (strncmp(line, "token=", 6) == 0) *token = line + 6;
    else if (strncmp(line, "target=", 7) == 0) *target = line + 7;
  }
  if (!*port || !*token || !*target) die("%s lacks port=, token= or target=", path, 1);
  free(path);
}

/* stdin, read whole when it is a pipe or a file (not a console or NUL); NULL otherwise. */
static Buf *read_stdin(void) {
  static Buf in;
  HANDLE h = GetStdHandle(STD_INPUT_HANDLE);
  DWORD type = h && h != INVALID_HANDLE_VALUE ? GetFileType(h) : FILE_TYPE_UNKNOWN;
  if (type != FILE_TYPE_PIPE && type != FILE_TYPE_DISK) return NULL;
  char chunk[65536];
  DWORD got;
  while (ReadFile(h, chunk, sizeof chunk, &got, NULL) && got > 0) put(&in, chunk, got);
  return &in;
}

static void send_all(SOCKET s, const char *p, size_t n) {
  while (n > 0) {
    int k = send(s, p, n > 65536 ? 65536 : (int)n, 0);
    if (k <= 0) die("the forwarder closed the connection while receiving the request", NULL, 1);
    p += k;
    n -= (size_t)k;
  }
}

/* Read exactly n bytes, or die when the forwarder closes or stays silent. */
static void recv_all(SOCKET s, char *p, size_t n) {
  while (n > 0) {
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(s, &rd);
    struct timeval tv = { SILENCE_MS / 1000, 0 };
    int r = select(0, &rd, NULL, NULL, &tv);
    if (r == 0) die("the forwarder sent nothing for %s s", "60", 1);
    int k = r > 0 ? recv(s, p, n > 65536 ? 65536 : (int)n, 0) : -1;
    if (k <= 0) die("the forwarder closed the connection before an exit code", NULL, 1);
    p += k;
    n -= (size_t)k;
  }
}

static unsigned long get_u32(const unsigned char *c) {
  return ((unsigned long)c[0] << 24) | ((unsigned long)c[1] << 16) | ((unsigned long)c[2] << 8) | c[3];
}

static void write_to(DWORD which, const char *p, size_t n) {
  HANDLE h = GetStdHandle(which);
  DWORD w;
  while (n > 0 && h && h != INVALID_HANDLE_VALUE && WriteFile(h, p, (DWORD)n, &w, NULL) && w > 0) {
    p += w;
    n -= w;
  }
}

int main(void) {
  char *port, *token, *target;
  read_config(&port, &token, &target);
  char *end;
  long portnum = strtol(port, &end, 10);
  if (*end || portnum <= 0 || portnum > 65535) die("bad port %s in the .forward file", port, 1);

  int argc;
  wchar_t **wargv = CommandLineToArgvW(GetCommandLineW(), &argc);
  if (wargv == NULL) die("cannot split the command line", NULL, 1);
  wchar_t cwdw[32768];
  DWORD cn = GetCurrentDirectoryW(32768, cwdw);
  if (cn == 0 || cn >= 32768) die("cannot read the current folder", NULL, 1);
  char *cwd = utf8(cwdw);

  Buf req = { 0 };
  put(&req, "UPKFWD1\n", 8);
  put_str(&req, token, strlen(token));
  put_str(&req, target, strlen(target));
  put_str(&req, cwd, strlen(cwd));
  put_u32(&req, (unsigned long)(argc > 0 ? argc - 1 : 0));
  for (int i = 1; i < argc; i++) {
    char *a = utf8(wargv[i]);
    put_str(&req, a, strlen(a));
    free(a);
  }
  Buf *in = read_stdin();
  if (in) put_str(&req, in->p ? in->p : "", in->n);
  else put_u32(&req, 0xFFFFFFFFul);

  WSADATA wsa;
  if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0) die("WSAStartup failed", NULL, 1);
  SOCKET s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
  if (s == INVALID_SOCKET) die("cannot make a socket", NULL, 1);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((u_short)portnum);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(s, (struct sockaddr *)&sa, sizeof sa) != 0) {
    char where[64];
    snprintf(where, sizeof where, "127.0.0.1:%ld (WSA error %d)", portnum, WSAGetLastError());
    die("cannot reach the forwarder at %s; is tests/sim/winforward.py running?", where, 1);
  }
  send_all(s, req.p, req.n);

  for (;;) {
    unsigned char head[5];
    recv_all(s, (char *)head, 5);
    size_t n = get_u32(head + 1);
    if (n > (64u << 20)) die("the forwarder sent a frame of bad length", NULL, 1);
    char *p = malloc(n + 1);
    if (p == NULL) die("out of memory", NULL, 1);
    recv_all(s, p, n);
    p[n] = '\0';
    switch (head[0]) {
      case 'o': write_to(STD_OUTPUT_HANDLE, p, n); break;
      case 'e': write_to(STD_ERROR_HANDLE, p, n); break;
      case 'h': break;
      case 'x':
        if (n != 4) die("the forwarder sent a bad exit code", NULL, 1);
        closesocket(s);
        ExitProcess((UINT)get_u32((unsigned char *)p));
      case 'f':
        if (n < 4) die("the forwarder sent a bad refusal", NULL, 1);
        die("the forwarder refused: %s", p + 4, (int)get_u32((unsigned char *)p));
      default: die("the forwarder sent an unknown frame", NULL, 1);
    }
    free(p);
  }
}
