/*
** platform_proc_win.c: Windows implementation of platform_proc.h.
**
** A program runs in a job object of its own (KILL_ON_JOB_CLOSE), so ending
** its tree ends the job, and upkit's exit ends whatever is left. Its command
** line is built by upk_win_cmdline (win.h): CommandLineToArgvW rules for
** programs, cmd.exe with unsafe arguments refused for .bat/.cmd. Only its
** three standard handles are inherited (PROC_THREAD_ATTRIBUTE_HANDLE_LIST).
** Its pipes are named pipes (a unique name, one instance, local clients
** only): the child gets an ordinary (synchronous) client end, upkit keeps
** the server end opened for overlapped I/O, with one read or write in
** flight per pipe into a buffer of its own. upk_child_wait waits with
** WaitForMultipleObjects on those reads' and writes' events, the process
** handle and the Ctrl-C event: nothing is polled on a timer.
** Windows has no signals: TERM and KILL both end the job at once (there is
** no polite stop for a program without a window); the result then reports
** the signal sent and exit code -1, as on POSIX.
*/
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <windows.h>

#include "platform_proc.h"
#include "win.h"

#define PIPE_BUF_SIZE 65536

/* upkit's end of one standard stream of the child. */
typedef struct Pipe {
  HANDLE h;          /* NULL when closed (or not a pipe) */
  OVERLAPPED ov;     /* its hEvent (manual reset) is set when the I/O in flight completes */
  int pending;       /* a read or write is in flight */
  int end;           /* read: the writers have all gone; write: the reader has gone */
  int closing;       /* stdin: close once the write in flight is done */
  char *buf;         /* read: bytes [off, len) not yet taken; write: the bytes in flight */
  DWORD len, off;
} Pipe;

struct UpkChild {
  long pid;
  HANDLE process, job;
  int sig;           /* the signal upkit sent it, 0 when none */
  int reaped, code;
  Pipe p[3];         /* stdin, stdout, stderr */
};

/* Jobs whose first process has ended while others still run in them (kept open until exit). */
static HANDLE *lingering;
static size_t nlingering, caplingering;

static int last_errno(void) {
  return upk_win_errno(GetLastError());
}

/* Is name a path (has a folder part or a drive)? */
static int has_dir(const char *name) {
  return strchr(name, '/') || strchr(name, '\\') || (name[0] && name[1] == ':');
}

static int is_file(const wchar_t *w) {
  DWORD a = GetFileAttributesW(w);
  return a != INVALID_FILE_ATTRIBUTES && !(a & FILE_ATTRIBUTE_DIRECTORY);
}

/* Try dir\name and dir\name<ext> for the usual executable extensions; malloc'd or NULL. */
static wchar_t *try_exts(const wchar_t *base) {
  static const wchar_t *const exts[] = { L"", L".exe", L".com", L".bat", L".cmd" };
  const wchar_t *dot = wcsrchr(base, L'.'), *sep = wcsrchr(base, L'\\');
  int has_ext = dot && (!sep || dot > sep);
  size_t n = wcslen(base);
  for (size_t i = has_ext ? 0 : 1; i < sizeof exts / sizeof exts[0]; i++) {
    wchar_t *w = malloc((n + 5) * sizeof *w);
    if (w == NULL) return NULL;
    wcscpy(w, base);
    wcscat(w, exts[i]);
    if (is_file(w)) return w;
    free(w);
    if (has_ext) break;
  }
  return NULL;
}

/*
** A resolved "\\?\" path in the form programs expect in a command line (and
** cmd.exe needs for a batch file): "C:\x" or "\\server\share", when it
** fits in MAX_PATH; longer paths keep the prefix.
*/
static void plain_path(wchar_t *w) {
  size_t n = wcslen(w);
  if (wcsncmp(w, L"\\\\?\\UNC\\", 8) == 0 && n - 6 < MAX_PATH) {
    memmove(w + 2, w + 8, (n - 7) * sizeof *w);
  } else if (wcsncmp(w, L"\\\\?\\", 4) == 0 && n - 4 < MAX_PATH) {
    memmove(w, w + 4, (n - 3) * sizeof *w);
  }
}

/* The program file for argv[0]: a path as given, otherwise looked up in PATH. */
static wchar_t *resolve(const char *name, int *err) {
  if (has_dir(name)) {
    wchar_t *w = upk_wpath(name);
    if (w == NULL) { *err = errno; return NULL; }
    wchar_t *found = try_exts(w);
    free(w);
    if (found == NULL) *err = ENOENT;
    else plain_path(found);
    return found;
  }
  wchar_t *wname = upk_w(name);
  if (wname == NULL) { *err = errno; return NULL; }
  wchar_t path[32768];
  DWORD n = GetEnvironmentVariableW(L"PATH", path, sizeof path / sizeof path[0]);
  if (n >= sizeof path / sizeof path[0]) n = 0;
  path[n] = L'\0';
  wchar_t *found = NULL, *ctx = NULL;
  for (wchar_t *dir = wcstok_s(path, L";", &ctx); dir && !found; dir = wcstok_s(NULL, L";", &ctx)) {
    if (*dir == L'\0') continue;
    size_t len = wcslen(dir) + wcslen(wname) + 2;
    wchar_t *base = malloc(len * sizeof *base);
    if (base == NULL) break;
    wcscpy(base, dir);
    if (dir[wcslen(dir) - 1] != L'\\') wcscat(base, L"\\");
    wcscat(base, wname);
    found = try_exts(base);
    free(base);
  }
  free(wname);
  if (found == NULL) *err = ENOENT;
  return found;
}

/* The environment block for CreateProcessW from "K=V" strings; malloc'd. */
static wchar_t *env_block(char *const *envp, int *err) {
  size_t total = 1;
  for (int i = 0; envp[i]; i++) total += strlen(envp[i]) + 1;
  wchar_t *block = malloc(total * sizeof *block), *p = block;
  if (block == NULL) { *err = ENOMEM; return NULL; }
  for (int i = 0; envp[i]; i++) {
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, envp[i], -1, p, (int)(total - (size_t)(p - block)));
    if (n <= 0) { free(block); *err = EINVAL; return NULL; }
    p += n;
  }
  *p = L'\0';
  return block;
}

/* ---------------------------------------------------------------------- */
/* Pipes                                                                   */

/*
** A named pipe: *mine (upkit's, overlapped) reads when inbound, writes
** otherwise; *theirs is the child's inheritable end. The name is unique
** (pid, a counter, the tick count) and FIRST_PIPE_INSTANCE refuses a name
** someone else made first.
*/
static int new_pipe(int inbound, Pipe *mine, HANDLE *theirs) {
  static LONG serial;
  wchar_t name[96];
  HANDLE h = INVALID_HANDLE_VALUE;
  for (int tries = 0; tries < 8 && h == INVALID_HANDLE_VALUE; tries++) {
    _snwprintf(name, sizeof name / sizeof name[0], L"\\\\.\\pipe\\upkit-%lu-%ld-%lx",
               (unsigned long)GetCurrentProcessId(), (long)InterlockedIncrement(&serial),
               (unsigned long)(GetTickCount64() & 0xffffffffu));
    name[sizeof name / sizeof name[0] - 1] = L'\0';
    h = CreateNamedPipeW(name, (inbound ? PIPE_ACCESS_INBOUND : PIPE_ACCESS_OUTBOUND) | FILE_FLAG_OVERLAPPED |
                         FILE_FLAG_FIRST_PIPE_INSTANCE,
                         PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
                         1, PIPE_BUF_SIZE, PIPE_BUF_SIZE, 0, NULL);
    if (h == INVALID_HANDLE_VALUE && GetLastError() != ERROR_ACCESS_DENIED && GetLastError() != ERROR_PIPE_BUSY)
      break;
  }
  if (h == INVALID_HANDLE_VALUE) return last_errno();
  SECURITY_ATTRIBUTES sa = { sizeof sa, NULL, TRUE };
  *theirs = CreateFileW(name, inbound ? GENERIC_WRITE | FILE_READ_ATTRIBUTES : GENERIC_READ | FILE_WRITE_ATTRIBUTES,
                        0, &sa, OPEN_EXISTING, 0, NULL);
  int err = 0;
  if (*theirs == INVALID_HANDLE_VALUE) err = last_errno();
  else if ((mine->ov.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL)) == NULL) err = last_errno();
  else if ((mine->buf = malloc(PIPE_BUF_SIZE)) == NULL) err = ENOMEM;
  if (err) {
    if (*theirs != INVALID_HANDLE_VALUE) CloseHandle(*theirs);
    *theirs = INVALID_HANDLE_VALUE;
    if (mine->ov.hEvent) CloseHandle(mine->ov.hEvent);
    mine->ov.hEvent = NULL;
    CloseHandle(h);
    return err;
  }
  mine->h = h;
  return 0;
}

/* Has the I/O in flight completed? A read keeps what it got; a failure is the end. */
static void complete(Pipe *q, int reading) {
  if (!q->pending) return;
  DWORD n = 0;
  if (!GetOverlappedResult(q->h, &q->ov, &n, FALSE)) {
    if (GetLastError() == ERROR_IO_INCOMPLETE) return;
    q->end = 1;
    n = 0;
  }
  q->pending = 0;
  q->off = 0;
  q->len = reading ? n : 0;
}

/*
** Start a read when the buffer is empty. A read of 0 bytes is not the end
** (a writer may write nothing: read again); the end is a broken pipe. When
** reads keep giving 0 bytes at once, the event is left set so that the next
** wait comes back here instead of waiting for an I/O that is not in flight.
*/
static void arm_read(Pipe *q) {
  if (q->h == NULL || q->pending || q->end || q->off < q->len) return;
  q->off = q->len = 0;
  for (int tries = 0; tries < 16; tries++) {
    DWORD n = 0;
    if (!ReadFile(q->h, q->buf, PIPE_BUF_SIZE, &n, &q->ov)) {
      if (GetLastError() == ERROR_IO_PENDING) q->pending = 1;
      else q->end = 1;
      return;
    }
    if (n > 0) {
      q->len = n;
      return;
    }
  }
  SetEvent(q->ov.hEvent);
}

/* Stop the I/O in flight, close the handle and free the buffer. */
static void pipe_close(Pipe *q) {
  if (q->h == NULL) return;
  if (q->pending) {
    DWORD n;
    CancelIoEx(q->h, &q->ov);
    GetOverlappedResult(q->h, &q->ov, &n, TRUE);
    q->pending = 0;
  }
  CloseHandle(q->h);
  CloseHandle(q->ov.hEvent);
  free(q->buf);
  memset(q, 0, sizeof *q);
}

/* stdin closed while a write was in flight: close it once that is done. */
static void finish_closing(Pipe *q) {
  if (!q->closing) return;
  complete(q, 0);
  if (!q->pending) pipe_close(q);
}

/* ---------------------------------------------------------------------- */
/* Starting                                                                */

/* An inheritable handle of the null device. */
static HANDLE null_handle(int input) {
  SECURITY_ATTRIBUTES sa = { sizeof sa, NULL, TRUE };
  return CreateFileW(L"NUL", input ? GENERIC_READ : GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE,
                     &sa, OPEN_EXISTING, 0, NULL);
}

/* An inheritable copy of this process's standard handle i (the null device when it has none). */
static HANDLE inherit_handle(int i) {
  static const DWORD which[3] = { STD_INPUT_HANDLE, STD_OUTPUT_HANDLE, STD_ERROR_HANDLE };
  HANDLE h = GetStdHandle(which[i]), dup = INVALID_HANDLE_VALUE;
  if (h == NULL || h == INVALID_HANDLE_VALUE) return null_handle(i == 0);
  if (!DuplicateHandle(GetCurrentProcess(), h, GetCurrentProcess(), &dup, 0, TRUE, DUPLICATE_SAME_ACCESS))
    return INVALID_HANDLE_VALUE;
  return dup;
}

/* The child's three handles (inheritable) and upkit's pipe ends in c. */
static int child_handles(const UpkSpawn *s, UpkChild *c, HANDLE hs[3], int *stage) {
  for (int i = 0; i < 3; i++) {
    int err = 0;
    switch (s->stdio[i]) {
    case UPK_STDIO_PIPE:
      if ((err = new_pipe(i != 0, &c->p[i], &hs[i])) != 0) return err;
      continue;
    case UPK_STDIO_INHERIT:
      hs[i] = inherit_handle(i);
      break;
    case UPK_STDIO_FILE:
      if (i == 0) {
        SECURITY_ATTRIBUTES sa = { sizeof sa, NULL, TRUE };
        wchar_t *w = upk_wpath(s->in_file);
        if (w == NULL) { *stage = UPK_SPAWN_STDIN; return errno; }
        hs[i] = CreateFileW(w, GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, &sa,
                            OPEN_EXISTING, 0, NULL);
        free(w);
        if (hs[i] == INVALID_HANDLE_VALUE) { *stage = UPK_SPAWN_STDIN; return last_errno(); }
        continue;
      }
      /* fall through */
    default:
      hs[i] = null_handle(i == 0);
    }
    if (hs[i] == INVALID_HANDLE_VALUE) return last_errno();
  }
  return 0;
}

/* CreateProcessW with the command line of s, suspended, into a new job; *c gets the handles. */
static int start(const UpkSpawn *s, UpkChild *c, HANDLE hs[3], int *stage) {
  int err = 0;
  *stage = UPK_SPAWN_SETUP;
  wchar_t *app = resolve(s->argv[0], &err), *line = NULL, *env = NULL, *cwd = NULL;
  if (app == NULL) { *stage = UPK_SPAWN_EXEC; return err; }
  char *app8 = upk_utf8(app);
  int batch = app8 && upk_win_is_batch(app8);
  free(app8);
  if (batch) {  /* cmd.exe from the system folder, never from PATH */
    wchar_t sys[MAX_PATH + 16];
    UINT n = GetSystemDirectoryW(sys, MAX_PATH);
    free(app);
    app = n ? _wcsdup(wcscat(sys, L"\\cmd.exe")) : NULL;
    if (app == NULL) return ENOMEM;
  }
  /* the file the line names: the resolved one, so a lookup cannot differ */
  char *resolved = NULL;
  if (!batch) resolved = upk_utf8(app);
  else {
    int e2 = 0;
    wchar_t *b = resolve(s->argv[0], &e2);
    resolved = b ? upk_utf8(b) : NULL;
    free(b);
  }
  size_t argc = 0;
  while (s->argv[argc]) argc++;
  const char **argv = malloc((argc + 1) * sizeof *argv);
  if (argv == NULL || resolved == NULL) err = ENOMEM;
  else {
    for (char *p = resolved; *p; p++) if (*p == '/') *p = '\\';
    argv[0] = resolved;
    for (size_t i = 1; i <= argc; i++) argv[i] = s->argv[i];
    int bad;
    err = upk_win_cmdline(argv, batch, &line, &bad);
  }
  free(argv);
  free(resolved);
  if (!err && s->envp) env = env_block(s->envp, &err);
  if (!err && s->cwd && (cwd = upk_w(s->cwd)) == NULL) err = errno;
  if (cwd) for (wchar_t *p = cwd; *p; p++) if (*p == L'/') *p = L'\\';

  HANDLE job = NULL;
  if (!err && (job = CreateJobObjectW(NULL, NULL)) == NULL) err = last_errno();
  if (!err) {
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION lim;
    memset(&lim, 0, sizeof lim);
    lim.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
    if (!SetInformationJobObject(job, JobObjectExtendedLimitInformation, &lim, sizeof lim)) err = last_errno();
  }

  /* only the three handles are inherited */
  LPPROC_THREAD_ATTRIBUTE_LIST attrs = NULL;
  SIZE_T asize = 0;
  if (!err) {
    InitializeProcThreadAttributeList(NULL, 1, 0, &asize);
    attrs = malloc(asize);
    if (attrs == NULL || !InitializeProcThreadAttributeList(attrs, 1, 0, &asize)) err = ENOMEM;
    else if (!UpdateProcThreadAttribute(attrs, 0, PROC_THREAD_ATTRIBUTE_HANDLE_LIST, hs,
                                        3 * sizeof(HANDLE), NULL, NULL))
      err = last_errno();
  }

  PROCESS_INFORMATION pi;
  memset(&pi, 0, sizeof pi);
  if (!err) {
    STARTUPINFOEXW si;
    memset(&si, 0, sizeof si);
    si.StartupInfo.cb = sizeof si;
    si.StartupInfo.dwFlags = STARTF_USESTDHANDLES;
    si.StartupInfo.hStdInput = hs[0];
    si.StartupInfo.hStdOutput = hs[1];
    si.StartupInfo.hStdError = hs[2];
    si.lpAttributeList = attrs;
    *stage = UPK_SPAWN_EXEC;
    DWORD flags = CREATE_SUSPENDED | CREATE_UNICODE_ENVIRONMENT | CREATE_NEW_PROCESS_GROUP |
                  EXTENDED_STARTUPINFO_PRESENT;
    if (!CreateProcessW(app, line, NULL, NULL, TRUE, flags, env, cwd, &si.StartupInfo, &pi)) {
      err = last_errno();
      if (cwd && GetLastError() == ERROR_DIRECTORY) { *stage = UPK_SPAWN_CHDIR; err = ENOENT; }
      else if (cwd && (GetFileAttributesW(cwd) == INVALID_FILE_ATTRIBUTES ||
                       !(GetFileAttributesW(cwd) & FILE_ATTRIBUTE_DIRECTORY))) {
        *stage = UPK_SPAWN_CHDIR;
        err = GetFileAttributesW(cwd) == INVALID_FILE_ATTRIBUTES ? ENOENT : ENOTDIR;
      }
    } else {
      if (!AssignProcessToJobObject(job, pi.hProcess)) {
        err = last_errno();
        TerminateProcess(pi.hProcess, 1);
        WaitForSingleObject(pi.hProcess, INFINITE);
      } else {
        ResumeThread(pi.hThread);
        c->pid = (long)pi.dwProcessId;
        c->process = pi.hProcess;
        c->job = job;
        job = NULL;  /* c owns them now */
        pi.hProcess = NULL;
      }
      CloseHandle(pi.hThread);
      if (pi.hProcess) CloseHandle(pi.hProcess);
    }
  }
  if (attrs) DeleteProcThreadAttributeList(attrs);
  free(attrs);
  if (job) CloseHandle(job);
  free(app);
  free(line);
  free(env);
  free(cwd);
  return err;
}

int upk_child_spawn(const UpkSpawn *s, UpkChild **child, int *stage) {
  HANDLE hs[3] = { INVALID_HANDLE_VALUE, INVALID_HANDLE_VALUE, INVALID_HANDLE_VALUE };
  UpkChild *c = calloc(1, sizeof *c);
  *stage = UPK_SPAWN_SETUP;
  if (c == NULL) return ENOMEM;
  int err = child_handles(s, c, hs, stage);
  if (!err) err = start(s, c, hs, stage);
  for (int i = 0; i < 3; i++) if (hs[i] != INVALID_HANDLE_VALUE) CloseHandle(hs[i]);
  if (err) {
    for (int i = 0; i < 3; i++) pipe_close(&c->p[i]);
    free(c);
    return err;
  }
  *child = c;
  return 0;
}

long upk_child_pid(const UpkChild *c) {
  return c->pid;
}

/* ---------------------------------------------------------------------- */
/* Waiting, reading, writing                                               */

static int has_ended(UpkChild *c) {
  return c->reaped || WaitForSingleObject(c->process, 0) == WAIT_OBJECT_0;
}

int upk_child_wait(UpkChild *c, int want, int timeout_ms) {
  static const int bits[3] = { UPK_EV_STDIN, UPK_EV_STDOUT, UPK_EV_STDERR };
  long seen = upk_win_interrupts;
  ULONGLONG end = GetTickCount64() + (ULONGLONG)(timeout_ms < 0 ? 0 : timeout_ms);
  for (int round = 0;; round++) {
    HANDLE hs[6];
    DWORD n = 0;
    int got = 0;
    Pipe *in = &c->p[0];
    if (in->closing) {
      finish_closing(in);
      if (in->closing) hs[n++] = in->ov.hEvent;
    }
    for (int i = 0; i < 3; i++) {
      Pipe *q = &c->p[i];
      if (!(want & bits[i]) || q->h == NULL || q->closing) continue;
      complete(q, i != 0);
      if (i != 0) arm_read(q);
      int ready = i == 0 ? !q->pending : q->off < q->len || q->end;
      if (ready) got |= bits[i];
      else hs[n++] = q->ov.hEvent;
    }
    if (want & UPK_EV_EXIT) {
      if (has_ended(c)) got |= UPK_EV_EXIT;
      else hs[n++] = c->process;
    }
    if (got) return got;
    if (upk_win_interrupts != seen) return -EINTR;
    DWORD ms = INFINITE;
    if (timeout_ms >= 0) {
      ULONGLONG now = GetTickCount64();
      if (now >= end && round > 0) return 0;
      ms = now >= end ? 0 : (DWORD)(end - now);
    }
    /* Ctrl-C sets this event (after the flags): also one that came just before this wait */
    HANDLE intr = upk_win_interrupt_event();
    DWORD intr_at = n;
    if (intr) hs[n++] = intr;
    if (n == 0) {  /* nothing to wait for: only the deadline */
      if (ms == INFINITE) return 0;
      Sleep(ms);
      return 0;
    }
    DWORD r = WaitForMultipleObjects(n, hs, FALSE, ms);
    if (r == WAIT_TIMEOUT) return 0;
    if (r == WAIT_FAILED) return -last_errno();
    if (intr && r == WAIT_OBJECT_0 + intr_at) return -EINTR;
  }
}

long upk_child_read(UpkChild *c, int stream, void *buf, size_t n) {
  if (stream < 1 || stream > 2) return 0;
  Pipe *q = &c->p[stream];
  if (q->h == NULL) return 0;
  complete(q, 1);
  if (q->off < q->len) {
    DWORD k = q->len - q->off;
    if (n < k) k = (DWORD)n;
    memcpy(buf, q->buf + q->off, k);
    q->off += k;
    if (q->off == q->len) arm_read(q);  /* the next read is in flight at once */
    return (long)k;
  }
  if (q->end) return 0;
  arm_read(q);
  return -EAGAIN;
}

long upk_child_write(UpkChild *c, const void *buf, size_t n) {
  Pipe *q = &c->p[0];
  if (q->h == NULL || q->closing) return -EPIPE;
  complete(q, 0);
  if (q->end) return -EPIPE;
  if (q->pending) return -EAGAIN;
  DWORD k = n > PIPE_BUF_SIZE ? PIPE_BUF_SIZE : (DWORD)n;
  memcpy(q->buf, buf, k);
  q->len = k;
  if (WriteFile(q->h, q->buf, k, NULL, &q->ov)) return (long)k;
  DWORD e = GetLastError();
  if (e == ERROR_IO_PENDING) {
    q->pending = 1;
    return (long)k;
  }
  q->end = 1;
  return e == ERROR_NO_DATA || e == ERROR_BROKEN_PIPE ? -EPIPE : -(long)upk_win_errno(e);
}

void upk_child_close(UpkChild *c, int stream) {
  if (stream < 0 || stream > 2) return;
  Pipe *q = &c->p[stream];
  if (stream == 0 && q->pending && !q->end) {
    q->closing = 1;  /* upk_child_wait and upk_child_free finish it */
    finish_closing(q);
  } else {
    pipe_close(q);
  }
}

/* ---------------------------------------------------------------------- */
/* Ending                                                                  */

int upk_child_reap(UpkChild *c, int block, int *code, int *sig) {
  if (!c->reaped) {
    if (WaitForSingleObject(c->process, block ? INFINITE : 0) != WAIT_OBJECT_0) return 0;
    DWORD x = 0;
    GetExitCodeProcess(c->process, &x);
    c->code = c->sig ? -1 : (int)x;
    c->reaped = 1;
  }
  *code = c->code;
  *sig = c->sig;
  return 1;
}

/* End the job; the result will report sig. */
int upk_child_kill(UpkChild *c, int sig) {
  if (c->reaped) return ESRCH;
  if (sig == 0) return 0;
  if (WaitForSingleObject(c->process, 0) == WAIT_TIMEOUT && !c->sig) c->sig = sig;
  return TerminateJobObject(c->job, 1) ? 0 : last_errno();
}

/* Free c; its job stays open while other processes still run in it (until upkit exits). */
void upk_child_free(UpkChild *c) {
  if (c == NULL) return;
  int code, sig;
  if (!c->reaped) {
    upk_child_kill(c, SIGKILL);
    upk_child_reap(c, 1, &code, &sig);
  }
  for (int i = 0; i < 3; i++) pipe_close(&c->p[i]);
  JOBOBJECT_BASIC_ACCOUNTING_INFORMATION acct;
  int others = QueryInformationJobObject(c->job, JobObjectBasicAccountingInformation, &acct, sizeof acct, NULL) &&
               acct.ActiveProcesses > 0;
  HANDLE *l = others && nlingering == caplingering
            ? realloc(lingering, (caplingering ? caplingering * 2 : 8) * sizeof *l) : NULL;
  if (l) { lingering = l; caplingering = caplingering ? caplingering * 2 : 8; }
  if (others && nlingering < caplingering) lingering[nlingering++] = c->job;
  else CloseHandle(c->job);
  CloseHandle(c->process);
  free(c);
}

void upk_proc_ignore_sigpipe(void) {
  /* no SIGPIPE on Windows: a write to a closed pipe fails with EPIPE */
}

int upk_proc_which(const char *name, char *buf, size_t size) {
  int err = 0;
  wchar_t *w = *name ? resolve(name, &err) : NULL;
  if (w == NULL) return *name ? err : ENOENT;
  err = upk_utf8_path(w, buf, size);
  free(w);
  return err;
}

const UpkSignal upk_proc_signals[] = {
  {SIGINT, "INT"}, {SIGILL, "ILL"}, {SIGFPE, "FPE"}, {SIGKILL, "KILL"}, {SIGSEGV, "SEGV"},
  {SIGTERM, "TERM"}, {SIGBREAK, "BREAK"}, {SIGABRT, "ABRT"}, {0, NULL}
};

char **upk_proc_environ(void) {
  static char **env;
  if (env) {
    for (char **e = env; *e; e++) free(*e);
    free(env);
    env = NULL;
  }
  wchar_t *block = GetEnvironmentStringsW();
  if (block == NULL) return NULL;
  size_t n = 0;
  for (wchar_t *p = block; *p; p += wcslen(p) + 1) n++;
  env = calloc(n + 1, sizeof *env);
  size_t k = 0;
  for (wchar_t *p = block; env && *p; p += wcslen(p) + 1)
    if (*p != L'=' && (env[k] = upk_utf8(p)) != NULL) k++;  /* "=C:=C:\x": per-drive folders, not variables */
  FreeEnvironmentStringsW(block);
  return env;
}
