/*
** util.c: error objects, handle tracking and option checking shared by
** every native module.
*/
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "upkit.h"

volatile sig_atomic_t upk_interrupted = 0;

static const char HANDLES_KEY = 'h';

static int error_tostring(lua_State *L) {
  lua_getfield(L, 1, "message");
  if (!lua_isstring(L, -1)) {
    lua_pop(L, 1);
    lua_pushliteral(L, "error");
  }
  return 1;
}

static void push_error_mt(lua_State *L) {
  if (luaL_newmetatable(L, UPK_ERROR_MT)) {
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
  }
}

void upk_vpusherror(lua_State *L, const char *code, const char *fmt, va_list ap) {
  lua_createtable(L, 0, 4);
  lua_pushstring(L, code);
  lua_setfield(L, -2, "code");
  lua_pushvfstring(L, fmt, ap);
  lua_setfield(L, -2, "message");
  push_error_mt(L);
  lua_setmetatable(L, -2);
}

void upk_pusherror(lua_State *L, const char *code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  upk_vpusherror(L, code, fmt, ap);
  va_end(ap);
}

int upk_error(lua_State *L, const char *code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  upk_vpusherror(L, code, fmt, ap);
  va_end(ap);
  return lua_error(L);
}

static const struct { int err; const char *name; } errnames[] = {
  {EPERM, "EPERM"}, {ENOENT, "ENOENT"}, {ESRCH, "ESRCH"}, {EINTR, "EINTR"},
  {EIO, "EIO"}, {ENXIO, "ENXIO"}, {E2BIG, "E2BIG"}, {ENOEXEC, "ENOEXEC"},
  {EBADF, "EBADF"}, {ECHILD, "ECHILD"}, {EAGAIN, "EAGAIN"}, {ENOMEM, "ENOMEM"},
  {EACCES, "EACCES"}, {EFAULT, "EFAULT"}, {EBUSY, "EBUSY"}, {EEXIST, "EEXIST"},
  {EXDEV, "EXDEV"}, {ENODEV, "ENODEV"}, {ENOTDIR, "ENOTDIR"}, {EISDIR, "EISDIR"},
  {EINVAL, "EINVAL"}, {ENFILE, "ENFILE"}, {EMFILE, "EMFILE"}, {ENOTTY, "ENOTTY"},
  {ETXTBSY, "ETXTBSY"}, {EFBIG, "EFBIG"}, {ENOSPC, "ENOSPC"}, {ESPIPE, "ESPIPE"},
  {EROFS, "EROFS"}, {EMLINK, "EMLINK"}, {EPIPE, "EPIPE"}, {EDOM, "EDOM"},
  {ERANGE, "ERANGE"}, {EDEADLK, "EDEADLK"}, {ENAMETOOLONG, "ENAMETOOLONG"},
  {ENOSYS, "ENOSYS"}, {ENOTEMPTY, "ENOTEMPTY"}, {ELOOP, "ELOOP"},
  {EDQUOT, "EDQUOT"}, {ETIMEDOUT, "TIMEOUT"}, {ECONNREFUSED, "ECONNREFUSED"},
  {ECONNRESET, "ECONNRESET"}, {EOPNOTSUPP, "EOPNOTSUPP"}, {ENOTSUP, "ENOTSUP"},
  {0, NULL}
};

const char *upk_errno_name(int err) {
  for (int i = 0; errnames[i].name; i++)
    if (errnames[i].err == err) return errnames[i].name;
  return "EIO";  /* a cause docs/errors.md does not name; the errno field keeps it */
}

void upk_seterrno(lua_State *L, int err) {
  lua_pushinteger(L, err);
  lua_setfield(L, -2, "errno");
}

int upk_errno_error(lua_State *L, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  upk_pusherror(L, upk_errno_name(err), "%s: %s", lua_tostring(L, -1), strerror(err));
  upk_seterrno(L, err);
  return lua_error(L);
}

static void push_handles(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &HANDLES_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &HANDLES_KEY);
  }
}

void upk_track(lua_State *L, const void *p, const char *tname) {
  push_handles(L);
  lua_pushstring(L, tname);
  lua_rawsetp(L, -2, p);
  lua_pop(L, 1);
}

void upk_untrack(lua_State *L, const void *p) {
  push_handles(L);
  lua_pushnil(L);
  lua_rawsetp(L, -2, p);
  lua_pop(L, 1);
}

/* Push an array of the type names of every open handle. */
int upk_open_handles(lua_State *L) {
  int n = 0;
  lua_newtable(L);
  push_handles(L);  /* [list, handles] */
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_rawseti(L, -4, ++n);
  }
  lua_pop(L, 1);
  return 1;
}

void upk_checkopts(lua_State *L, int idx, const char *fn, const char *const keys[]) {
  if (lua_isnoneornil(L, idx)) return;
  if (!lua_istable(L, idx))
    upk_error(L, "EINVAL", "%s: options must be a table, got %s", fn, luaL_typename(L, idx));
  idx = lua_absindex(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    int known = 0;
    if (lua_type(L, -1) == LUA_TSTRING) {
      const char *k = lua_tostring(L, -1);
      for (int i = 0; keys[i]; i++)
        if (strcmp(keys[i], k) == 0) { known = 1; break; }
      if (!known) upk_error(L, "EINVAL", "%s: unknown option '%s'", fn, k);
    } else {
      upk_error(L, "EINVAL", "%s: option keys must be strings", fn);
    }
  }
}

static int getopt_field(lua_State *L, int idx, const char *k) {
  if (lua_isnoneornil(L, idx)) return 0;
  if (lua_getfield(L, idx, k) == LUA_TNIL) { lua_pop(L, 1); return 0; }
  return 1;
}

static void opt_type_error(lua_State *L, const char *fn, const char *k, const char *want) {
  upk_error(L, "EINVAL", "%s: option '%s' must be %s, got %s", fn, k, want, luaL_typename(L, -1));
}

lua_Integer upk_optinteger(lua_State *L, int idx, const char *fn, const char *k, lua_Integer def) {
  if (!getopt_field(L, idx, k)) return def;
  int ok;
  lua_Integer v = lua_tointegerx(L, -1, &ok);
  if (!ok) opt_type_error(L, fn, k, "an integer");
  lua_pop(L, 1);
  return v;
}

lua_Number upk_optnumber(lua_State *L, int idx, const char *fn, const char *k, lua_Number def) {
  if (!getopt_field(L, idx, k)) return def;
  if (lua_type(L, -1) != LUA_TNUMBER) opt_type_error(L, fn, k, "a number");
  lua_Number v = lua_tonumber(L, -1);
  lua_pop(L, 1);
  return v;
}

int upk_optboolean(lua_State *L, int idx, const char *fn, const char *k, int def) {
  if (!getopt_field(L, idx, k)) return def;
  if (lua_type(L, -1) != LUA_TBOOLEAN) opt_type_error(L, fn, k, "a boolean");
  int v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* The returned string stays valid while the options table holds it. */
const char *upk_optstring(lua_State *L, int idx, const char *fn, const char *k, const char *def) {
  if (!getopt_field(L, idx, k)) return def;
  if (lua_type(L, -1) != LUA_TSTRING) opt_type_error(L, fn, k, "a string");
  const char *v = lua_tostring(L, -1);
  lua_pop(L, 1);
  return v;
}

void upk_check_interrupt(lua_State *L, const char *what) {
  if (upk_interrupted) {
    upk_interrupted = 0;
    upk_error(L, "INTERRUPTED", "%s: interrupted", what);
  }
}

char *upk_hex(const unsigned char *d, size_t n, char *out) {
  static const char hx[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    *out++ = hx[d[i] >> 4];
    *out++ = hx[d[i] & 15];
  }
  return out;
}

double upk_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
** The guard around every native function: lauxlib's argument errors
** ("bad argument #1 to 'x' (string expected, got nil)") and memory errors
** are plain strings; they become EINVAL and ENOMEM error objects naming
** the function. Upvalues: the function, its name. Any other error (an
** error object, or a callback's own error) passes through unchanged.
*/
static int guard_call(lua_State *L) {
  int n = lua_gettop(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  int status = lua_pcall(L, n, LUA_MULTRET, 0);
  if (status == LUA_OK) return lua_gettop(L);
  if (lua_type(L, -1) == LUA_TSTRING) {
    const char *msg = lua_tostring(L, -1);
    const char *fn = lua_tostring(L, lua_upvalueindex(2));
    if (status == LUA_ERRMEM) {
      upk_pusherror(L, "ENOMEM", "%s: not enough memory", fn);
    } else if (strncmp(msg, "bad argument", 12) == 0 || strncmp(msg, "calling '", 9) == 0) {
      /* drop lauxlib's " to '?'": the guard names the function itself */
      const char *to = strstr(msg, " to '"), *close = to ? strstr(to + 5, "' ") : NULL;
      if (to && close) {
        lua_pushlstring(L, msg, (size_t)(to - msg));
        lua_pushstring(L, close + 1);
        lua_concat(L, 2);
        msg = lua_tostring(L, -1);
      }
      upk_pusherror(L, "EINVAL", "%s: %s", fn, msg);
    }
  }
  return lua_error(L);
}

void upk_setfuncs(lua_State *L, const luaL_Reg *l, const char *prefix) {
  for (; l->name; l++) {
    if (!l->func) continue;
    lua_pushcfunction(L, l->func);
    if (l->name[0] == '_' && l->name[1] == '_') {  /* metamethods never raise argument errors */
      lua_setfield(L, -2, l->name);
      continue;
    }
    lua_pushfstring(L, "%s%s%s", prefix, *prefix ? (prefix[strlen(prefix) - 1] == ':' ? "" : ".") : "", l->name);
    lua_pushcclosure(L, guard_call, 2);
    lua_setfield(L, -2, l->name);
  }
}

void upk_newlib(lua_State *L, const luaL_Reg *l, const char *prefix) {
  lua_newtable(L);
  upk_setfuncs(L, l, prefix);
}

void upk_newclass(lua_State *L, const char *tname, const luaL_Reg *metameth, const luaL_Reg *meth,
                  const char *prefix) {
  luaL_newmetatable(L, tname);
  luaL_setfuncs(L, metameth, 0);
  upk_newlib(L, meth, prefix);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "__index");
  lua_remove(L, -2);
}
