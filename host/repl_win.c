/*
** repl_win.c: upkit._repl for the Windows build, the same functions as
** repl.c (libedit) over the Windows console's own line editing:
**
**   _repl.readline(prompt) -> line | nil (end of input) | false (Ctrl-C)
**   _repl.add_history(line)          kept for the session's Tab completion
**   _repl.set_completer(fn | nil)    fn(line_before_cursor, word) -> { candidates }
**
** The console edits the line (arrows, Home, End, Backspace) and keeps the
** lines typed in this session (Up, Down, F7); it has no call to load older
** lines into that list, so add_history only records them. Tab wakes the
** read (CONSOLE_READCONSOLE_CONTROL): a single candidate, or the candidates'
** common start, is inserted; several are listed. Ctrl-C while reading
** cancels the line through a console handler of its own, so the host's
** interrupt (which stops running Lua code) is not raised at the prompt.
** Text is UTF-16 at the console and UTF-8 in Lua.
*/
#include <stdlib.h>
#include <string.h>
#include <windows.h>

#include "upkit.h"
#include "win.h"

#define LINE_MAX_CHARS 8192
#define COMPLETER_KEY "upkit.repl.completer"  /* the completion function, in the registry */

static volatile LONG cancelled;

static BOOL WINAPI cancel_handler(DWORD type) {
  if (type != CTRL_C_EVENT && type != CTRL_BREAK_EVENT) return FALSE;
  InterlockedExchange(&cancelled, 1);
  return TRUE;  /* handled: the host's handler is not called while the prompt reads */
}

static void write_utf8(HANDLE out, const char *s) {
  wchar_t *w = upk_w(s);
  DWORD n;
  if (w) WriteConsoleW(out, w, (DWORD)wcslen(w), &n, NULL);
  free(w);
}

/* The completer's text to insert after line (UTF-8), or NULL; lists candidates when several. */
static char *complete(lua_State *L, HANDLE out, const char *line) {
  int top = lua_gettop(L);
  if (lua_getfield(L, LUA_REGISTRYINDEX, COMPLETER_KEY) != LUA_TFUNCTION) {
    lua_settop(L, top);
    return NULL;
  }
  size_t len = strlen(line), word = len;
  while (word > 0 && (strchr("_.:", line[word - 1]) || (unsigned char)line[word - 1] >= 0x80 ||
                      (line[word - 1] >= '0' && line[word - 1] <= '9') ||
                      ((line[word - 1] | 32) >= 'a' && (line[word - 1] | 32) <= 'z'))) word--;
  lua_pushstring(L, line);
  lua_pushstring(L, line + word);
  char *ins = NULL;
  if (lua_pcall(L, 2, 1, 0) == LUA_OK && lua_istable(L, -1)) {
    lua_Integer n = luaL_len(L, -1);
    const char *first = NULL;
    size_t common = 0, wlen = len - word;
    for (lua_Integer i = 1; i <= n; i++) {
      lua_geti(L, -1, i);
      const char *c = lua_tostring(L, -1);
      lua_pop(L, 1);  /* the table keeps the string alive */
      if (c == NULL || strncmp(c, line + word, wlen) != 0) continue;
      if (first == NULL) { first = c; common = strlen(c); continue; }
      size_t k = 0;
      while (k < common && c[k] == first[k]) k++;
      common = k;
    }
    if (first && common > wlen) {
      ins = malloc(common - wlen + 1);
      if (ins) { memcpy(ins, first + wlen, common - wlen); ins[common - wlen] = '\0'; }
    } else if (first && n > 1) {
      write_utf8(out, "\r\n");
      for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, -1, i);
        if (lua_isstring(L, -1)) { write_utf8(out, lua_tostring(L, -1)); write_utf8(out, "  "); }
        lua_pop(L, 1);
      }
      write_utf8(out, "\r\n");
    }
  }
  lua_settop(L, top);
  return ins;
}

/* _repl.readline(prompt) -> line | nil (end of input) | false (Ctrl-C) */
static int repl_readline(lua_State *L) {
  const char *prompt = luaL_optstring(L, 1, "> ");
  HANDLE in = GetStdHandle(STD_INPUT_HANDLE), out = GetStdHandle(STD_OUTPUT_HANDLE);
  DWORD mode;
  if (!GetConsoleMode(in, &mode)) return upk_error(L, "ENOTTY", "repl.readline: the input is not a console");
  SetConsoleOutputCP(CP_UTF8);
  wchar_t *buf = malloc(LINE_MAX_CHARS * sizeof *buf);
  if (buf == NULL) return upk_error(L, "ENOMEM", "repl.readline: out of memory");
  InterlockedExchange(&cancelled, 0);
  SetConsoleCtrlHandler(cancel_handler, TRUE);
  write_utf8(out, prompt);
  DWORD have = 0;  /* characters already typed (shown) when a read starts again after Tab */
  int result = 0;  /* 1 line, 0 end of input, -1 cancelled, -2 error */
  for (;;) {
    CONSOLE_READCONSOLE_CONTROL ctl = { sizeof ctl, have, 1u << L'\t', 0 };
    DWORD got = 0;
    BOOL ok = ReadConsoleW(in, buf, LINE_MAX_CHARS - 1, &got, &ctl);
    if (cancelled) { result = -1; break; }
    if (!ok) { result = -2; break; }
    if (got == 0) { result = 0; break; }
    wchar_t *tab = got > 0 ? wmemchr(buf, L'\t', got) : NULL;
    if (tab == NULL) {
      while (got > 0 && (buf[got - 1] == L'\n' || buf[got - 1] == L'\r')) got--;
      buf[got] = L'\0';
      result = 1;
      break;
    }
    *tab = L'\0';  /* the line before the cursor; what followed it is dropped */
    char *line = upk_utf8(buf);
    char *ins = line ? complete(L, out, line) : NULL;
    wchar_t *wins = ins ? upk_w(ins) : NULL;
    if (wins && wcslen(buf) + wcslen(wins) < LINE_MAX_CHARS - 1) wcscat(buf, wins);
    /* show the line again: prompt and text, the console reads on from its end */
    write_utf8(out, "\r");
    write_utf8(out, prompt);
    DWORD n;
    WriteConsoleW(out, buf, (DWORD)wcslen(buf), &n, NULL);
    have = (DWORD)wcslen(buf);
    free(line); free(ins); free(wins);
  }
  SetConsoleCtrlHandler(cancel_handler, FALSE);
  int err = result == -2 ? upk_win_errno(GetLastError()) : 0;
  if (result == 1) {
    char *line = upk_utf8(buf);
    if (line) lua_pushstring(L, line); else lua_pushliteral(L, "");
    free(line);
  } else if (result == -1) {
    write_utf8(out, "^C\r\n");
    lua_pushboolean(L, 0);
  } else if (result == 0) {
    lua_pushnil(L);
  }
  free(buf);
  if (result == -2) return upk_errno_error(L, err, "repl.readline");
  return 1;
}

/* _repl.add_history(line): the console keeps this session's lines itself; see above */
static int repl_add_history(lua_State *L) {
  luaL_checkstring(L, 1);
  return 0;
}

/* _repl.set_completer(fn | nil) */
static int repl_set_completer(lua_State *L) {
  luaL_argexpected(L, lua_isnoneornil(L, 1) || lua_isfunction(L, 1), 1, "function or nil");
  lua_settop(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, COMPLETER_KEY);
  return 0;
}

static const luaL_Reg repl_funcs[] = {
  {"readline", repl_readline},
  {"add_history", repl_add_history},
  {"set_completer", repl_set_completer},
  {NULL, NULL}
};

int luaopen_upkit_repl(lua_State *L) {
  upk_newlib(L, repl_funcs, "repl");
  return 1;
}
