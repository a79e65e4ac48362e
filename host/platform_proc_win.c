/*
** platform_proc_win.c: Windows implementation of platform_proc.h.
**
** A program runs in a job object of its own (KILL_ON_JOB_CLOSE), so ending
** its "group" ends the whole tree, and upkit's exit ends whatever is left.
** Its command line is built by upk_win_cmdline (win.h): CommandLineToArgvW
** rules for programs, cmd.exe with unsafe arguments refused for .bat/.cmd.
** Pipes are anonymous pipes behind C runtime descriptors; upk_proc_poll
** looks at them with PeekNamedPipe every few milliseconds (anonymous pipes
** have no readiness wait), and the parent's stdin end is PIPE_NOWAIT.
** Windows has no signals: TERM and KILL both end the job at once (there is
** no polite stop for a program without a window); the result then reports
** the signal sent and exit code -1, as on POSIX.
*/
#include <errno.h>
#include <fcntl.h>
#include <io.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <windows.h>

#include "platform_proc.h"
#include "win.h"

#define POLL_STEP_MS 5

/* A started program: upkit's pid -> its process and job handles. */
typedef struct Child {
  long pid;
  HANDLE process, job;
  int sig;   /* the signal upkit sent it, 0 when none */
} Child;

static Child *children;
static size_t nchildren, capchildren;
/* Jobs whose first process has ended while others still run in them (kept open until exit). */
static HANDLE *lingering;
static size_t nlingering, caplingering;

static Child *find(long pid) {
  for (size_t i = 0; i < nchildren; i++)
    if (children[i].pid == pid) return &children[i];
  return NULL;
}

static int last_errno(void) {
  return upk_win_errno(GetLastError());
}

static HANDLE fd_handle(int fd) {
  return (HANDLE)_get_osfhandle(fd);
}

int upk_proc_pipe(int fds[2], int parent_end) {
  HANDLE r, w;
  if (!CreatePipe(&r, &w, NULL, 1 << 16)) return last_errno();
  if (parent_end == 1) {
    DWORD mode = PIPE_READMODE_BYTE | PIPE_NOWAIT;
    SetNamedPipeHandleState(w, &mode, NULL, NULL);
  }
  fds[0] = _open_osfhandle((intptr_t)r, _O_RDONLY);
  fds[1] = _open_osfhandle((intptr_t)w, 0);
  if (fds[0] < 0 || fds[1] < 0) {
    if (fds[0] >= 0) _close(fds[0]); else CloseHandle(r);
    if (fds[1] >= 0) _close(fds[1]); else CloseHandle(w);
    return EMFILE;
  }
  return 0;
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

/* An inheritable copy of fd's handle, or of NUL for -1. */
static HANDLE child_handle(int fd, int input) {
  SECURITY_ATTRIBUTES sa = { sizeof sa, NULL, TRUE };
  if (fd < 0)
    return CreateFileW(L"NUL", input ? GENERIC_READ : GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE,
                       &sa, OPEN_EXISTING, 0, NULL);
  HANDLE h = fd_handle(fd), dup = INVALID_HANDLE_VALUE;
  if (h == INVALID_HANDLE_VALUE ||
      !DuplicateHandle(GetCurrentProcess(), h, GetCurrentProcess(), &dup, 0, TRUE, DUPLICATE_SAME_ACCESS))
    return INVALID_HANDLE_VALUE;
  return dup;
}

static int remember(long pid, HANDLE process, HANDLE job) {
  if (nchildren == capchildren) {
    size_t cap = capchildren ? capchildren * 2 : 8;
    Child *c = realloc(children, cap * sizeof *c);
    if (c == NULL) return ENOMEM;
    children = c;
    capchildren = cap;
  }
  children[nchildren++] = (Child){ pid, process, job, 0 };
  return 0;
}

int upk_proc_which(const char *name, char *buf, size_t size) {
  int err = 0;
  wchar_t *w = *name ? resolve(name, &err) : NULL;
  if (w == NULL) return *name ? err : ENOENT;
  err = upk_utf8_path(w, buf, size);
  free(w);
  return err;
}

int upk_proc_spawn(const UpkSpawn *s, long *pid, int *stage) {
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

  HANDLE hs[3] = { INVALID_HANDLE_VALUE, INVALID_HANDLE_VALUE, INVALID_HANDLE_VALUE };
  for (int i = 0; i < 3 && !err; i++)
    if ((hs[i] = child_handle(s->fd[i], i == 0)) == INVALID_HANDLE_VALUE) err = last_errno();

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
                                        (hs[0] == hs[1] ? 1 : 3) * sizeof(HANDLE), NULL, NULL))
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
      } else if ((err = remember((long)pi.dwProcessId, pi.hProcess, job)) != 0) {
        TerminateProcess(pi.hProcess, 1);
      } else {
        ResumeThread(pi.hThread);
        *pid = (long)pi.dwProcessId;
        job = NULL;  /* owned by the table now */
        pi.hProcess = NULL;
      }
      CloseHandle(pi.hThread);
      if (pi.hProcess) CloseHandle(pi.hProcess);
    }
  }
  if (attrs) DeleteProcThreadAttributeList(attrs);
  free(attrs);
  for (int i = 0; i < 3; i++) if (hs[i] != INVALID_HANDLE_VALUE) CloseHandle(hs[i]);
  if (job) CloseHandle(job);
  free(app);
  free(line);
  free(env);
  free(cwd);
  return err;
}

int upk_proc_exit_fd(long pid) {
  (void)pid;
  return -1;  /* no descriptor for a process: proc.c polls the exit */
}

/* Forget a reaped child; its job stays open while other processes still run in it. */
static void forget(Child *c) {
  JOBOBJECT_BASIC_ACCOUNTING_INFORMATION acct;
  int others = QueryInformationJobObject(c->job, JobObjectBasicAccountingInformation, &acct, sizeof acct, NULL) &&
               acct.ActiveProcesses > 0;
  HANDLE *l = others && nlingering == caplingering
            ? realloc(lingering, (caplingering ? caplingering * 2 : 8) * sizeof *l) : NULL;
  if (l) { lingering = l; caplingering = caplingering ? caplingering * 2 : 8; }
  if (others && nlingering < caplingering) lingering[nlingering++] = c->job;
  else CloseHandle(c->job);
  CloseHandle(c->process);
  *c = children[--nchildren];
}

static void result(Child *c, int *code, int *sig) {
  DWORD x = 0;
  GetExitCodeProcess(c->process, &x);
  if (c->sig) { *code = -1; *sig = c->sig; }
  else { *code = (int)x; *sig = 0; }
}

int upk_proc_reap(long pid, int *code, int *sig) {
  Child *c = find(pid);
  if (c == NULL) return -ECHILD;
  if (WaitForSingleObject(c->process, 0) == WAIT_TIMEOUT) return 0;
  result(c, code, sig);
  forget(c);
  return 1;
}

void upk_proc_reap_wait(long pid, int *code, int *sig) {
  Child *c = find(pid);
  if (c == NULL) { *code = -1; *sig = 0; return; }
  WaitForSingleObject(c->process, INFINITE);
  result(c, code, sig);
  forget(c);
}

/* End the job (group) or the process alone; the result will report sig. */
static int terminate(long pid, int sig, int group) {
  Child *c = find(pid);
  if (c == NULL) return ESRCH;
  if (sig == 0) return 0;
  if (WaitForSingleObject(c->process, 0) == WAIT_TIMEOUT && !c->sig) c->sig = sig;
  BOOL ok = group ? TerminateJobObject(c->job, 1) : TerminateProcess(c->process, 1);
  return ok ? 0 : last_errno();
}

int upk_proc_kill_group(long pid, int sig) { return terminate(pid, sig, 1); }
int upk_proc_kill(long pid, int sig) { return terminate(pid, sig, 0); }

const UpkSignal upk_proc_signals[] = {
  {SIGINT, "INT"}, {SIGILL, "ILL"}, {SIGFPE, "FPE"}, {SIGKILL, "KILL"}, {SIGSEGV, "SEGV"},
  {SIGTERM, "TERM"}, {SIGBREAK, "BREAK"}, {SIGABRT, "ABRT"}, {0, NULL}
};

/*
** The stdin end whose last write found the pipe full, and when: it counts
** as writable again one poll step later, so a child that does not read yet
** is not asked again in a busy loop.
*/
static int full_fd = -1;
static ULONGLONG full_at;

/* Readiness of one pipe end now. */
static int ready(const UpkPollFd *f) {
  HANDLE h = fd_handle(f->fd);
  if (h == INVALID_HANDLE_VALUE) return UPK_POLL_HUP;
  if (f->want & UPK_POLL_IN) {
    DWORD avail = 0;
    if (!PeekNamedPipe(h, NULL, 0, NULL, &avail, NULL)) return UPK_POLL_IN | UPK_POLL_HUP;  /* closed */
    return avail > 0 ? UPK_POLL_IN : 0;
  }
  if (f->fd == full_fd && GetTickCount64() - full_at < POLL_STEP_MS) return 0;
  return UPK_POLL_OUT;  /* a PIPE_NOWAIT end: a write takes what fits, or says EAGAIN */
}

int upk_proc_poll(UpkPollFd *fds, int n, int timeout_ms) {
  long seen = upk_win_interrupts;
  ULONGLONG end = GetTickCount64() + (ULONGLONG)(timeout_ms < 0 ? 0 : timeout_ms);
  for (;;) {
    int any = 0;
    for (int i = 0; i < n; i++) any |= (fds[i].got = ready(&fds[i]));
    if (any) return 0;
    if (upk_win_interrupts != seen) return EINTR;
    ULONGLONG now = GetTickCount64();
    if (timeout_ms >= 0 && now >= end) return 0;
    DWORD step = POLL_STEP_MS;
    if (timeout_ms >= 0 && end - now < step) step = (DWORD)(end - now);
    Sleep(step);
  }
}

long upk_proc_read(int fd, void *buf, size_t n) {
  HANDLE h = fd_handle(fd);
  DWORD avail = 0, got = 0;
  if (!PeekNamedPipe(h, NULL, 0, NULL, &avail, NULL)) {
    DWORD e = GetLastError();
    if (e == ERROR_BROKEN_PIPE) return 0;
    if (e != ERROR_INVALID_FUNCTION) return -(long)upk_win_errno(e);
    avail = (DWORD)n;  /* not a pipe (a file): read it */
  }
  if (avail == 0) return -EAGAIN;
  DWORD want = n < avail ? (DWORD)n : avail;
  if (!ReadFile(h, buf, want, &got, NULL))
    return GetLastError() == ERROR_BROKEN_PIPE ? 0 : -(long)last_errno();
  return (long)got;
}

long upk_proc_write(int fd, const void *buf, size_t n) {
  DWORD k = 0, want = n > 0x10000 ? 0x10000 : (DWORD)n;
  if (!WriteFile(fd_handle(fd), buf, want, &k, NULL)) {
    DWORD e = GetLastError();
    return e == ERROR_NO_DATA || e == ERROR_BROKEN_PIPE ? -EPIPE : -(long)upk_win_errno(e);
  }
  if (k == 0) {
    full_fd = fd;
    full_at = GetTickCount64();
    return -EAGAIN;
  }
  if (fd == full_fd) full_fd = -1;
  return (long)k;
}

int upk_proc_close(int fd) {
  if (fd == full_fd) full_fd = -1;
  return _close(fd) != 0 ? errno : 0;
}

int upk_proc_open_read(const char *path, int *fd) {
  wchar_t *w = upk_wpath(path);
  if (w == NULL) return errno;
  HANDLE h = CreateFileW(w, GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                         OPEN_EXISTING, 0, NULL);
  free(w);
  if (h == INVALID_HANDLE_VALUE) return last_errno();
  *fd = _open_osfhandle((intptr_t)h, _O_RDONLY);
  if (*fd < 0) { CloseHandle(h); return EMFILE; }
  return 0;
}

void upk_proc_ignore_sigpipe(void) {
  /* no SIGPIPE on Windows: a write to a closed pipe fails with EPIPE */
}

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
