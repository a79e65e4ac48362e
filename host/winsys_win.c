/*
** winsys_win.c: upkit._win, what the Octopus procedures need from Windows
** itself (Windows builds only): an executable's version resource and
** Windows services through the Service Control Manager. lua/upkit/win.lua
** is the public module (waits, defaults, option checks).
*/
#include <stdlib.h>
#include <string.h>
#include <windows.h>

#include "upkit.h"
#include "win.h"

/*
** Push and raise an error object for Windows error err: code from
** upk_win_errno (or code when not NULL), message "<what>: <system text>",
** field errno = the Windows error code (docs/errors.md).
*/
static int win_error(lua_State *L, DWORD err, const char *code, const char *what) {
  wchar_t *w = NULL;
  char *text = NULL;
  if (FormatMessageW(FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM |
                     FORMAT_MESSAGE_IGNORE_INSERTS, NULL, err, 0, (LPWSTR)&w, 0, NULL)) {
    text = upk_utf8(w);
    LocalFree(w);
  }
  if (text) {
    size_t n = strlen(text);
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r' || text[n - 1] == '.')) text[--n] = '\0';
  }
  upk_pusherror(L, code ? code : upk_errno_name(upk_win_errno(err)), "%s: %s", what,
                text ? text : "Windows error");
  free(text);
  lua_pushinteger(L, (lua_Integer)err);
  lua_setfield(L, -2, "errno");
  return lua_error(L);
}

/* A UTF-16 copy of argument idx (EINVAL naming fn when it is not UTF-8). */
static wchar_t *check_w(lua_State *L, int idx, const char *fn, int path) {
  const char *s = luaL_checkstring(L, idx);
  wchar_t *w = path ? upk_wpath(s) : upk_w(s);
  if (w == NULL) upk_error(L, "EINVAL", "%s: '%s' is not a valid UTF-8 %s", fn, s, path ? "path" : "name");
  return w;
}

static void push_utf8(lua_State *L, const wchar_t *w) {
  char *s = upk_utf8(w);
  if (s) lua_pushstring(L, s);
  else lua_pushliteral(L, "");
  free(s);
}

static void push_version(lua_State *L, DWORD ms, DWORD ls) {
  lua_pushfstring(L, "%d.%d.%d.%d", (int)HIWORD(ms), (int)LOWORD(ms), (int)HIWORD(ls), (int)LOWORD(ls));
}

/*
** _win.file_version(path) -> { file = "a.b.c.d", product = "a.b.c.d",
**   strings = { FileVersion =, ProductVersion =, ProductName =, CompanyName =,
**               FileDescription = } }
** The numbers come from the fixed file information; strings from the first
** language of the string table (what PowerShell's VersionInfo shows).
** ENOENT for a missing file; NOT_FOUND when the file has no version resource.
*/
static int win_file_version(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  wchar_t *w = check_w(L, 1, "win.file_version", 1);
  DWORD ignored = 0;
  DWORD size = GetFileVersionInfoSizeW(w, &ignored);
  DWORD err = GetLastError();
  void *data = size ? malloc(size) : NULL;
  if (size && data == NULL) { free(w); return upk_error(L, "ENOMEM", "win.file_version: out of memory"); }
  if (size && !GetFileVersionInfoW(w, 0, size, data)) { size = 0; err = GetLastError(); }
  free(w);
  if (size == 0) {
    free(data);
    if (err == ERROR_RESOURCE_DATA_NOT_FOUND || err == ERROR_RESOURCE_TYPE_NOT_FOUND ||
        err == ERROR_RESOURCE_NAME_NOT_FOUND || err == ERROR_BAD_EXE_FORMAT)
      return upk_error(L, "NOT_FOUND", "win.file_version: '%s' has no version resource", path);
    lua_pushfstring(L, "win.file_version: '%s'", path);
    return win_error(L, err, NULL, lua_tostring(L, -1));
  }
  VS_FIXEDFILEINFO *fixed = NULL;
  UINT len = 0;
  lua_createtable(L, 0, 3);
  if (VerQueryValueW(data, L"\\", (void **)&fixed, &len) && fixed && len >= sizeof *fixed) {
    push_version(L, fixed->dwFileVersionMS, fixed->dwFileVersionLS);
    lua_setfield(L, -2, "file");
    push_version(L, fixed->dwProductVersionMS, fixed->dwProductVersionLS);
    lua_setfield(L, -2, "product");
  }
  lua_newtable(L);  /* [result, strings] */
  struct { WORD lang, codepage; } *tr = NULL;
  if (VerQueryValueW(data, L"\\VarFileInfo\\Translation", (void **)&tr, &len) && tr && len >= 4) {
    static const wchar_t *const names[] = { L"FileVersion", L"ProductVersion", L"ProductName",
                                            L"CompanyName", L"FileDescription" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
      wchar_t key[96];
      wchar_t *val = NULL;
      _snwprintf(key, sizeof key / sizeof key[0], L"\\StringFileInfo\\%04x%04x\\%ls",
                 tr->lang, tr->codepage, names[i]);
      key[sizeof key / sizeof key[0] - 1] = L'\0';
      if (VerQueryValueW(data, key, (void **)&val, &len) && val && len > 0) {
        push_utf8(L, val);
        push_utf8(L, names[i]);
        lua_insert(L, -2);
        lua_rawset(L, -3);
      }
    }
  }
  lua_setfield(L, -2, "strings");
  free(data);
  return 1;
}

static const char *state_name(DWORD s) {
  switch (s) {
  case SERVICE_STOPPED: return "stopped";
  case SERVICE_START_PENDING: return "start_pending";
  case SERVICE_STOP_PENDING: return "stop_pending";
  case SERVICE_RUNNING: return "running";
  case SERVICE_CONTINUE_PENDING: return "continue_pending";
  case SERVICE_PAUSE_PENDING: return "pause_pending";
  case SERVICE_PAUSED: return "paused";
  default: return "unknown";
  }
}

static const char *start_name(DWORD t) {
  switch (t) {
  case SERVICE_BOOT_START: return "boot";
  case SERVICE_SYSTEM_START: return "system";
  case SERVICE_AUTO_START: return "auto";
  case SERVICE_DEMAND_START: return "demand";
  case SERVICE_DISABLED: return "disabled";
  default: return "unknown";
  }
}

/* Open the service named at idx with the given access; raises (NOT_FOUND for no such service). */
static SC_HANDLE open_service(lua_State *L, int idx, const char *fn, DWORD access, SC_HANDLE *scm) {
  const char *name = luaL_checkstring(L, idx);
  wchar_t *w = check_w(L, idx, fn, 0);
  *scm = OpenSCManagerW(NULL, NULL, SC_MANAGER_CONNECT);
  if (*scm == NULL) {
    DWORD err = GetLastError();
    free(w);
    lua_pushfstring(L, "%s: '%s': the Service Control Manager", fn, name);
    win_error(L, err, NULL, lua_tostring(L, -1));
    return NULL;
  }
  SC_HANDLE h = OpenServiceW(*scm, w, access);
  DWORD err = GetLastError();
  free(w);
  if (h == NULL) {
    CloseServiceHandle(*scm);
    lua_pushfstring(L, "%s: service '%s'", fn, name);
    win_error(L, err, err == ERROR_SERVICE_DOES_NOT_EXIST ? "NOT_FOUND" : NULL, lua_tostring(L, -1));
    return NULL;
  }
  return h;
}

/* Push the status table of an open service: fields of win.service (see lua/upkit/win.lua). */
static int push_status(lua_State *L, SC_HANDLE h, const char *name, DWORD *err) {
  SERVICE_STATUS_PROCESS st;
  DWORD need = 0;
  if (!QueryServiceStatusEx(h, SC_STATUS_PROCESS_INFO, (BYTE *)&st, sizeof st, &need)) {
    *err = GetLastError();
    return -1;
  }
  lua_createtable(L, 0, 10);
  lua_pushstring(L, name); lua_setfield(L, -2, "name");
  lua_pushstring(L, state_name(st.dwCurrentState)); lua_setfield(L, -2, "state");
  lua_pushinteger(L, (lua_Integer)st.dwProcessId); lua_setfield(L, -2, "pid");
  lua_pushinteger(L, (lua_Integer)st.dwWin32ExitCode); lua_setfield(L, -2, "exit_code");
  lua_pushinteger(L, (lua_Integer)st.dwServiceSpecificExitCode); lua_setfield(L, -2, "service_exit_code");
  lua_pushboolean(L, (st.dwControlsAccepted & SERVICE_ACCEPT_STOP) != 0); lua_setfield(L, -2, "accepts_stop");
  QUERY_SERVICE_CONFIGW *cfg = NULL;
  QueryServiceConfigW(h, NULL, 0, &need);
  if (need > 0 && (cfg = malloc(need)) != NULL && QueryServiceConfigW(h, cfg, need, &need)) {
    lua_pushstring(L, start_name(cfg->dwStartType)); lua_setfield(L, -2, "start_type");
    if (cfg->lpBinaryPathName) { push_utf8(L, cfg->lpBinaryPathName); lua_setfield(L, -2, "binary_path"); }
    if (cfg->lpDisplayName) { push_utf8(L, cfg->lpDisplayName); lua_setfield(L, -2, "display_name"); }
    if (cfg->lpServiceStartName) { push_utf8(L, cfg->lpServiceStartName); lua_setfield(L, -2, "account"); }
  }
  free(cfg);
  return 0;
}

/*
** _win.service_query(name) -> { name, state, pid, exit_code, service_exit_code,
**   accepts_stop, start_type, binary_path, display_name, account }
*/
static int win_service_query(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  SC_HANDLE scm, h = open_service(L, 1, "win.service", SERVICE_QUERY_STATUS | SERVICE_QUERY_CONFIG, &scm);
  DWORD err = 0;
  int rc = push_status(L, h, name, &err);
  CloseServiceHandle(h);
  CloseServiceHandle(scm);
  if (rc != 0) {
    lua_pushfstring(L, "win.service: service '%s'", name);
    return win_error(L, err, NULL, lua_tostring(L, -1));
  }
  return 1;
}

/*
** _win.service_control(name, "start" | "stop") -> true, or false when the
** service is already in that state (running, or not active). Does not wait.
*/
static int win_service_control(lua_State *L) {
  static const char *const verbs[] = { "start", "stop", NULL };
  const char *name = luaL_checkstring(L, 1);
  int verb = luaL_checkoption(L, 2, NULL, verbs);
  const char *fn = verb == 0 ? "win.service_start" : "win.service_stop";
  SC_HANDLE scm, h = open_service(L, 1, fn, verb == 0 ? SERVICE_START : SERVICE_STOP, &scm);
  SERVICE_STATUS st;
  BOOL ok = verb == 0 ? StartServiceW(h, 0, NULL) : ControlService(h, SERVICE_CONTROL_STOP, &st);
  DWORD err = ok ? 0 : GetLastError();
  CloseServiceHandle(h);
  CloseServiceHandle(scm);
  if (ok) { lua_pushboolean(L, 1); return 1; }
  if ((verb == 0 && err == ERROR_SERVICE_ALREADY_RUNNING) || (verb == 1 && err == ERROR_SERVICE_NOT_ACTIVE)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_pushfstring(L, "%s: service '%s'", fn, name);
  return win_error(L, err, err == ERROR_SERVICE_DISABLED ? "UNSUPPORTED" : NULL, lua_tostring(L, -1));
}

static const luaL_Reg win_funcs[] = {
  {"file_version", win_file_version},
  {"service_query", win_service_query},
  {"service_control", win_service_control},
  {NULL, NULL}
};

int luaopen_upkit_win(lua_State *L) {
  upk_newlib(L, win_funcs, "win");
  return 1;
}
