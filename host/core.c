/*
** core.c: upkit._core, the host's own functions: versions, library roots,
** error objects, open handles, terminal and clock helpers.
*/
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/opensslv.h>

#include "platform.h"
#include "platform_fs.h"
#include "upkit.h"

#ifndef UPK_ODBC_VERSION
#define UPK_ODBC_VERSION "unknown"
#endif

/*
** core.versions() -> { upkit =, lua =, libcurl =, openssl =, unixodbc = }
*/
static int core_versions(lua_State *L) {
  curl_version_info_data *cv = curl_version_info(CURLVERSION_NOW);
  lua_createtable(L, 0, 5);
  lua_pushliteral(L, UPKIT_VERSION); lua_setfield(L, -2, "upkit");
  lua_pushliteral(L, LUA_RELEASE); lua_setfield(L, -2, "lua");
  lua_pushstring(L, cv->version); lua_setfield(L, -2, "libcurl");
  lua_pushstring(L, OpenSSL_version(OPENSSL_VERSION)); lua_setfield(L, -2, "openssl");
  lua_pushliteral(L, UPK_ODBC_VERSION); lua_setfield(L, -2, "unixodbc");
  return 1;
}

/* core.roots() -> array of library roots, in search order */
static int core_roots(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, "upkit.roots");
  if (lua_isnil(L, -1)) { lua_pop(L, 1); lua_newtable(L); }
  return 1;
}

/*
** core.new_error(code, message [, fields]) -> error object (not raised)
*/
static int core_new_error(lua_State *L) {
  const char *code = luaL_checkstring(L, 1);
  const char *msg = luaL_tolstring(L, 2, NULL);  /* any value: the message of a wrapped error */
  lua_replace(L, 2);
  upk_pusherror(L, code, "%s", msg);
  if (lua_istable(L, 3)) {
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_settable(L, -4);
    }
  }
  return 1;
}

/* core.error(code, message [, fields]): raise an error object */
static int core_error(lua_State *L) {
  core_new_error(L);
  return lua_error(L);
}

/* core.is_error(v) -> true when v is an upkit error object */
static int core_is_error(lua_State *L) {
  int is = 0;
  if (lua_getmetatable(L, 1)) {
    luaL_getmetatable(L, UPK_ERROR_MT);
    is = lua_rawequal(L, -1, -2);
  }
  lua_pushboolean(L, is);
  return 1;
}

/* core.open_handles() -> array of the type names of open native handles */
static int core_open_handles(lua_State *L) {
  return upk_open_handles(L);
}

/* core.isatty(fd) -> boolean */
static int core_isatty(lua_State *L) {
  lua_pushboolean(L, upk_isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

/* core.hostname() -> this machine's name (Windows: its NetBIOS name) */
static int core_hostname(lua_State *L) {
  char buf[256];
  if (upk_hostname(buf, sizeof buf) != 0) return upk_error(L, "EIO", "hostname: this machine's name could not be read");
  lua_pushstring(L, buf);
  return 1;
}

/* core.now() -> seconds from a monotonic clock */
static int core_now(lua_State *L) {
  lua_pushnumber(L, upk_now());
  return 1;
}

/* core.sleep(seconds): raises INTERRUPTED on Ctrl-C */
static int core_sleep(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  double end = upk_now() + s;
  for (;;) {
    upk_check_interrupt(L, "sleep");
    double left = end - upk_now();
    if (left <= 0) break;
    upk_sleep(left);
  }
  return 0;
}

/*
** core.fsync(file): flush a Lua file handle and fsync it to disk.
*/
static int core_fsync(lua_State *L) {
  luaL_Stream *s = (luaL_Stream *)luaL_checkudata(L, 1, LUA_FILEHANDLE);
  if (s->closef == NULL || s->f == NULL) return upk_error(L, "CLOSED", "fsync: file is closed");
  if (fflush(s->f) != 0 || fsync(fileno(s->f)) != 0)
    return upk_errno_error(L, errno, "fsync");
  return 0;
}

/* core.errno_name(n) -> the error code of errno n ("ENOENT"; "EIO" for one docs/errors.md does not name) */
static int core_errno_name(lua_State *L) {
  lua_pushstring(L, upk_errno_name((int)luaL_checkinteger(L, 1)));
  return 1;
}

/* core.pid() -> this process's id */
static int core_pid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getpid());
  return 1;
}

/* core.uuid() -> a random (version 4) UUID in lower case, from the system's random source */
static int core_uuid(lua_State *L) {
  unsigned char b[16];
  char hex[32], out[37];
  int err = upk_fs_random(b, sizeof b);
  if (err) return upk_errno_error(L, err, "upkit.uuid");
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
  upk_hex(b, sizeof b, hex);
  snprintf(out, sizeof out, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
  lua_pushstring(L, out);
  return 1;
}

static const luaL_Reg core_funcs[] = {
  {"fsync", core_fsync},
  {"uuid", core_uuid},
  {"pid", core_pid},
  {"errno_name", core_errno_name},
  {"versions", core_versions},
  {"roots", core_roots},
  {"new_error", core_new_error},
  {"error", core_error},
  {"is_error", core_is_error},
  {"open_handles", core_open_handles},
  {"isatty", core_isatty},
  {"hostname", core_hostname},
  {"now", core_now},
  {"sleep", core_sleep},
  {NULL, NULL}
};

int luaopen_upkit_core(lua_State *L) {
  upk_newlib(L, core_funcs, "upkit");
  lua_pushliteral(L, UPKIT_VERSION);
  lua_setfield(L, -2, "VERSION");
  return 1;
}
