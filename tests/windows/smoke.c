/*
** smoke.exe URL: the Windows toolchain end to end. Links the cross-built Lua, LuaFileSystem
** and libcurl (Schannel) statically, then runs a Lua chunk that checks the interpreter, lfs,
** and an HTTP GET through libcurl against the loopback server at URL (tests/lib/httpd.py).
** Prints TAP; exits 0 only when every check passed.
*/
#include <curl/curl.h>
#include <lauxlib.h>
#include <lfs.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { char *p; size_t n; } Body;

static size_t on_data(char *data, size_t size, size_t nmemb, void *ud) {
  Body *b = ud;
  size_t len = size * nmemb;
  char *p = realloc(b->p, b->n + len + 1);
  if (p == NULL) return 0;
  memcpy(p + b->n, data, len);
  b->p = p;
  b->n += len;
  return len;
}

/*
** get(url) -> status, body   |   nil, curl error text
*/
static int l_get(lua_State *L) {
  const char *url = luaL_checkstring(L, 1);
  Body b = { NULL, 0 };
  long status = 0;
  CURL *h = curl_easy_init();
  if (h == NULL) return luaL_error(L, "curl_easy_init failed");
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
  CURLcode rc = curl_easy_perform(h);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(h);
  if (rc != CURLE_OK) {
    free(b.p);
    lua_pushnil(L);
    lua_pushstring(L, curl_easy_strerror(rc));
    return 2;
  }
  lua_pushinteger(L, status);
  lua_pushlstring(L, b.p ? b.p : "", b.n);
  free(b.p);
  return 2;
}

static const char *const checks =
  "local url = ...\n"
  "local n, failed = 0, 0\n"
  "local function ok(cond, name)\n"
  "  n = n + 1\n"
  "  if not cond then failed = failed + 1 end\n"
  "  print((cond and 'ok ' or 'not ok ') .. n .. ' - ' .. name)\n"
  "end\n"
  "print('1..6')\n"
  "ok(_VERSION == 'Lua 5.4' and math.type(2^53 // 1) == 'float', 'Lua 5.4 runs')\n"
  "ok(string.format('%q', 1/3) ~= nil and utf8.char(228) == '\\xc3\\xa4', 'string and utf8 libraries')\n"
  "local lfs = require 'lfs'\n"
  "ok(lfs.attributes('.', 'mode') == 'directory', 'lfs sees the current directory')\n"
  "local status, body = get(url .. '/data?size=100000')\n"
  "local good = status == 200 and #body == 100000\n"
  "for i = 1, #body, 997 do good = good and body:byte(i) == (i - 1) % 251 end\n"
  "ok(good, 'libcurl GET /data: 100000 bytes, pattern intact (' .. tostring(status) .. ')')\n"
  "status = get(url .. '/status/404')\n"
  "ok(status == 404, 'libcurl GET /status/404 gives the status')\n"
  "local s, err = get('http://127.0.0.1:1/')\n"
  "ok(s == nil and err:find('onnect') ~= nil, 'a refused connection is an error: ' .. tostring(err))\n"
  "return failed\n";

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: smoke.exe URL\n");
    return 2;
  }
  curl_global_init(CURL_GLOBAL_ALL);
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "lfs", luaopen_lfs, 0);
  lua_pop(L, 1);
  lua_register(L, "get", l_get);
  int failed = 1;
  if (luaL_loadstring(L, checks) != LUA_OK) {
    fprintf(stderr, "smoke: %s\n", lua_tostring(L, -1));
  } else {
    lua_pushstring(L, argv[1]);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
      fprintf(stderr, "smoke: %s\n", lua_tostring(L, -1));
    else
      failed = (int)lua_tointeger(L, -1);
  }
  lua_close(L);
  curl_global_cleanup();
  return failed == 0 ? 0 : 1;
}
