/*
** main.c: the upkit host. It makes one Lua state, registers the native
** modules in package.preload, points package.path at the Lua library
** roots, and hands the command line to upkit.cli, all under lua_pcall
** with a traceback handler. The commands themselves live in Lua.
*/
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "platform.h"
#include "upkit.h"

int luaopen_lfs(lua_State *L);

#define UPK_MODULE(n) int luaopen_upkit_##n(lua_State *L);
#include "modules.h"
#undef UPK_MODULE

static const luaL_Reg natives[] = {
#define UPK_MODULE(n) {"upkit._" #n, luaopen_upkit_##n},
#include "modules.h"
#undef UPK_MODULE
  {"lfs", luaopen_lfs},
  {NULL, NULL}
};

static lua_State *globalL = NULL;

/*
** Hook set by the SIGINT handler: raise at the next instruction, unless C
** code has raised INTERRUPTED for it already (and cleared the flag).
*/
static void lstop(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  if (!upk_interrupted) return;
  upk_interrupted = 0;
  upk_error(L, "INTERRUPTED", "interrupted");
}

/* SIGINT: ask the running work to stop; a second one before the first is taken ends the process, as lua.c does. */
static void on_sigint(int sig) {
  static const char msg[] = "\nupkit: interrupted twice; exiting\n";
  if (upk_interrupted) {
    if (write(2, msg, sizeof msg - 1) < 0) _exit(128 + sig);
    _exit(128 + sig);
  }
  upk_interrupted = 1;
  if (globalL) {
    int flag = LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT;
    lua_sethook(globalL, lstop, flag, 1);
  }
}

/*
** Message handler: an error object gets a 'traceback' field and stays an
** object; anything else becomes a string with the traceback appended.
*/
static int msghandler(lua_State *L) {
  if (lua_type(L, 1) == LUA_TTABLE) {
    luaL_traceback(L, L, NULL, 1);
    lua_setfield(L, 1, "traceback");
    lua_settop(L, 1);
    return 1;
  }
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/*
** The library roots, in search order: each entry of UPKIT_PATH, the user's
** directory, the installed share directory, the source tree (when the binary
** runs from build/ in a checkout). Sets package.path and upkit roots.
*/
static void set_roots(lua_State *L) {
  char buf[PATH_MAX];
  int n = 0;
  lua_newtable(L);  /* [roots] */
  const char *env = getenv("UPKIT_PATH");
  if (env && *env) {
    const char *p = env;
    while (*p) {
      const char *e = strchr(p, UPK_PATH_LIST_SEP);
      size_t len = e ? (size_t)(e - p) : strlen(p);
      if (len > 0) { lua_pushlstring(L, p, len); lua_rawseti(L, -2, ++n); }
      p += len + (e ? 1 : 0);
    }
  }
  if (upk_user_dir(buf, sizeof buf) == 0) { lua_pushstring(L, buf); lua_rawseti(L, -2, ++n); }
  if (upk_share_dir(buf, sizeof buf) == 0) { lua_pushstring(L, buf); lua_rawseti(L, -2, ++n); }
  /* <prefix>/share/upkit beside <prefix>/bin/upkit: an install moved elsewhere (DESTDIR) */
  if (upk_exe_path(buf, sizeof buf) == 0) {
    char *slash = strrchr(buf, '/');
    if (slash) {
      *slash = '\0';
      char share[PATH_MAX + 64], probe[PATH_MAX + 96];
      snprintf(share, sizeof share, "%s/../share/upkit", buf);
      snprintf(probe, sizeof probe, "%s/lua/upkit/cli.lua", share);
      if (upk_isfile(probe)) { lua_pushstring(L, share); lua_rawseti(L, -2, ++n); }
    }
  }
  /* the source tree: the nearest ancestor of the binary's folder holding lua/upkit/cli.lua */
  if (upk_exe_path(buf, sizeof buf) == 0) {
    for (int up = 0; up < 3; up++) {
      char *slash = strrchr(buf, '/');
      if (!slash || slash == buf) break;
      *slash = '\0';
      char probe[PATH_MAX + 32];
      snprintf(probe, sizeof probe, "%s/lua/upkit/cli.lua", buf);
      if (up > 0 && upk_isfile(probe)) { lua_pushstring(L, buf); lua_rawseti(L, -2, ++n); break; }
    }
  }
  for (int i = 1; i <= n; i++) {  /* [roots, parts...] */
    lua_rawgeti(L, -i, i);
    const char *root = lua_tostring(L, -1);
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;", root, root);
    lua_remove(L, -2);
  }
  lua_concat(L, n);  /* [roots, path] */
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");  /* [roots, path, package, default] */
  lua_pushvalue(L, -3);
  lua_pushvalue(L, -2);
  lua_concat(L, 2);
  lua_setfield(L, -3, "path");
  lua_pop(L, 3);  /* [roots] */
  lua_setfield(L, LUA_REGISTRYINDEX, "upkit.roots");
}

/*
** A searcher placed after the others: "upkit.NAME" with no Lua facade on
** disk resolves to the native module "upkit._NAME".
*/
static int native_searcher(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  if (strncmp(name, "upkit.", 6) != 0) return 0;
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushfstring(L, "upkit._%s", name + 6);
  if (lua_rawget(L, -2) == LUA_TNIL) {
    lua_pushfstring(L, "no native module 'upkit._%s'", name + 6);
    return 1;
  }
  lua_pushliteral(L, ":preload:");
  return 2;
}

static void register_natives(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const luaL_Reg *m = natives; m->name; m++) {
    lua_pushcfunction(L, m->func);
    lua_setfield(L, -2, m->name);
  }
  lua_pop(L, 1);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "searchers");
  lua_pushcfunction(L, native_searcher);
  lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
  lua_pop(L, 2);
}

static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  luaL_checkversion(L);
  luaL_openlibs(L);
  register_natives(L);
  set_roots(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "upkit.cli");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "main");
  lua_createtable(L, argc, 1);
  lua_pushstring(L, argv[0]);
  lua_rawseti(L, -2, 0);
  for (int i = 1; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_call(L, 1, 1);
  return 1;
}

static void report(lua_State *L) {
  if (lua_type(L, -1) == LUA_TTABLE) {
    lua_getfield(L, -1, "message");
    lua_getfield(L, -2, "code");
    lua_getfield(L, -3, "traceback");
    const char *tb = lua_tostring(L, -1);
    fprintf(stderr, "upkit: %s [%s]\n", lua_tostring(L, -3) ? lua_tostring(L, -3) : "error",
            lua_tostring(L, -2) ? lua_tostring(L, -2) : "?");
    if (tb && getenv("UPKIT_TRACEBACK")) fprintf(stderr, "%s\n", tb);
    lua_pop(L, 3);
  } else {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "upkit: %s\n", msg ? msg : "(error without a message)");
  }
}

int main(int argc, char **argv) {
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    fprintf(stderr, "upkit: cannot create Lua state: not enough memory\n");
    return EXIT_FAILURE;
  }
  globalL = L;
  upk_on_sigint(on_sigint);
  lua_pushcfunction(L, msghandler);
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  int status = lua_pcall(L, 2, 1, 1);
  int code;
  if (status != LUA_OK) {
    report(L);
    code = 1;
  } else {
    code = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : 0;
  }
  globalL = NULL;
  lua_close(L);
  return code;
}
