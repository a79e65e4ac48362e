/*
** repl.c: upkit._repl, a thin binding of libedit (its histedit interface)
** for the REPL in lua/upkit/repl.lua. One line editor per process.
**
**   _repl.readline(prompt) -> line | nil (end of input) | false (Ctrl-C)
**   _repl.add_history(line)          to the in-memory history (Up, Down)
**   _repl.set_completer(fn | nil)    fn(line_before_cursor, word) -> { candidates }
**
** The history file is read and appended to by lua/upkit/repl.lua.
**
** While a line is read the terminal does not turn Ctrl-C into SIGINT: the
** key is bound to a function that cancels the line, so no signal handler
** and no longjmp is involved. Once the line is read, libedit restores the
** terminal and the host's SIGINT handler interrupts running Lua code.
*/
#include <errno.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <wchar.h>

#include <histedit.h>

#include "upkit.h"

#define HISTORY_MAX 1000
#define EDITOR_MT "upkit.repl.Editor"

static struct {
  EditLine *el;
  History *hist;
  HistEvent ev;
  lua_State *L;        /* the state reading a line, while el_gets runs */
  const char *prompt;  /* the prompt argument, alive while el_gets runs */
  int completer;       /* registry reference of the completion function */
  int cancelled;       /* Ctrl-C pressed while reading */
} ed = {NULL, NULL, {0, NULL}, NULL, NULL, LUA_NOREF, 0};

static char *ed_prompt(EditLine *el) {
  (void)el;
  return (char *)(ed.prompt ? ed.prompt : "");
}

/* Ctrl-C: move to the end, show ^C, and end the line as cancelled. */
static unsigned char ed_cancel(EditLine *el, int ch) {
  (void)ch;
  const LineInfo *li = el_line(el);
  el_cursor(el, (int)(li->lastchar - li->cursor));
  el_insertstr(el, "^C");
  ed.cancelled = 1;
  el_push(el, "\n");
  return CC_REFRESH;
}

static int is_word_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '.' || c == ':';
}

typedef struct Completion {
  const char *line;    /* the line up to the cursor */
  size_t len;
  size_t word;         /* offset where the word under the cursor starts */
  int columns;         /* terminal width */
} Completion;

/* Print candidates in columns, top to bottom then left to right. */
static void list_candidates(lua_State *L, int t, int n, int columns) {
  size_t width = 0;
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, t, i);
    size_t l = lua_rawlen(L, -1);
    if (l > width) width = l;
    lua_pop(L, 1);
  }
  width += 2;
  int cols = (int)((size_t)columns / width);
  if (cols < 1) cols = 1;
  int rows = (n + cols - 1) / cols;
  fputc('\n', stdout);
  for (int r = 0; r < rows; r++) {
    for (int c = 0; c < cols; c++) {
      int i = c * rows + r + 1;
      if (i > n) break;
      lua_rawgeti(L, t, i);
      const char *s = lua_tostring(L, -1);
      if (c == cols - 1 || i + rows > n) fputs(s, stdout);
      else fprintf(stdout, "%-*s", (int)width, s);
      lua_pop(L, 1);
    }
    fputc('\n', stdout);
  }
  fflush(stdout);
}

/*
** Protected part of completion: call the completer, keep the candidates
** that extend the word, and return the text to insert (a string), true
** when the candidates were listed, or nil.
*/
static int complete_protected(lua_State *L) {
  Completion *c = (Completion *)lua_touserdata(L, 1);
  const char *word = c->line + c->word;
  size_t wlen = c->len - c->word;
  lua_rawgeti(L, LUA_REGISTRYINDEX, ed.completer);
  lua_pushlstring(L, c->line, c->len);
  lua_pushlstring(L, word, wlen);
  lua_call(L, 2, 1);  /* [c, result] */
  if (!lua_istable(L, 2)) return 0;
  lua_newtable(L);  /* [c, result, kept] */
  int n = 0;
  lua_Integer total = luaL_len(L, 2);
  for (lua_Integer i = 1; i <= total; i++) {
    size_t l;
    if (lua_geti(L, 2, i) == LUA_TSTRING) {
      const char *s = lua_tolstring(L, -1, &l);
      if (l >= wlen && memcmp(s, word, wlen) == 0) {
        lua_rawseti(L, 3, ++n);
        continue;
      }
    }
    lua_pop(L, 1);
  }
  if (n == 0) return 0;
  lua_rawgeti(L, 3, 1);
  size_t common;
  const char *first = lua_tolstring(L, -1, &common);
  for (int i = 2; i <= n; i++) {
    lua_rawgeti(L, 3, i);
    const char *s = lua_tostring(L, -1);
    size_t k = 0;
    while (k < common && s[k] == first[k]) k++;
    common = k;
    lua_pop(L, 1);
  }
  if (common > wlen) {
    lua_pushlstring(L, first + wlen, common - wlen);
    return 1;
  }
  if (n == 1) return 0;
  list_candidates(L, 3, n, c->columns);
  lua_pushboolean(L, 1);
  return 1;
}

/* Tab: complete the word before the cursor; an empty word inserts a tab. */
static unsigned char ed_complete(EditLine *el, int ch) {
  (void)ch;
  const LineInfo *li = el_line(el);
  Completion c;
  c.line = li->buffer;
  c.len = (size_t)(li->cursor - li->buffer);
  c.word = c.len;
  while (c.word > 0 && is_word_char(c.line[c.word - 1])) c.word--;
  if (c.word == c.len) {
    el_insertstr(el, "\t");
    return CC_REFRESH;
  }
  lua_State *L = ed.L;
  if (L == NULL || ed.completer == LUA_NOREF || !lua_checkstack(L, 8)) return CC_ERROR;
  c.columns = 80;
  el_get(el, EL_GETTC, "co", &c.columns, (void *)NULL);
  int top = lua_gettop(L);
  lua_pushcfunction(L, complete_protected);
  lua_pushlightuserdata(L, &c);
  int status = lua_pcall(L, 1, 1, 0);
  unsigned char rc = CC_REFRESH_BEEP;
  if (status == LUA_OK && lua_type(L, -1) == LUA_TSTRING) {
    rc = el_insertstr(el, lua_tostring(L, -1)) == 0 ? CC_REFRESH : CC_ERROR;
  } else if (status == LUA_OK && lua_toboolean(L, -1)) {
    rc = CC_REDISPLAY;
  }
  lua_settop(L, top);
  return rc;
}

/* Create the line editor on first use (only when reading from a terminal). */
static int open_editor(void) {
  if (ed.el) return 0;
  setlocale(LC_CTYPE, "");
  ed.el = el_init("upkit", stdin, stdout, stderr);
  if (ed.el == NULL) return -1;
  el_set(ed.el, EL_EDITOR, "emacs");
  el_set(ed.el, EL_SIGNAL, 1);
  el_set(ed.el, EL_PROMPT, ed_prompt);
  el_set(ed.el, EL_HIST, history, ed.hist);
  el_set(ed.el, EL_SETTY, "-d", "-isig", (char *)NULL);
  /* the wide form: the narrow one leaks its converted copies of the names */
  el_wset(ed.el, EL_ADDFN, L"upkit-complete", L"complete the word", ed_complete);
  el_wset(ed.el, EL_ADDFN, L"upkit-cancel", L"cancel the line", ed_cancel);
  el_set(ed.el, EL_BIND, "^I", "upkit-complete", (char *)NULL);
  el_set(ed.el, EL_BIND, "^C", "upkit-cancel", (char *)NULL);
  el_source(ed.el, NULL);
  return 0;
}

/* Argument arg of fn as a string (or def when absent and def is not NULL), else EINVAL. */
static const char *arg_string(lua_State *L, int arg, const char *fn, const char *def) {
  if (def != NULL && lua_isnoneornil(L, arg)) return def;
  if (lua_type(L, arg) != LUA_TSTRING)
    upk_error(L, "EINVAL", "%s: argument #%d must be a string, not %s", fn, arg, luaL_typename(L, arg));
  return lua_tostring(L, arg);
}

/*
** _repl.readline([prompt]) -> line | nil (end of input) | false (cancelled)
*/
static int repl_readline(lua_State *L) {
  const char *prompt = arg_string(L, 1, "repl.readline", "> ");
  if (open_editor() != 0) return upk_errno_error(L, errno, "repl.readline: cannot open the line editor");
  ed.prompt = prompt;
  ed.L = L;
  ed.cancelled = 0;
  int n = 0;
  const char *line = el_gets(ed.el, &n);
  int err = errno;
  ed.L = NULL;
  ed.prompt = NULL;
  if (ed.cancelled || (line == NULL && n < 0 && err == EINTR)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (line == NULL || n <= 0) {
    if (line == NULL && n < 0) return upk_errno_error(L, err, "repl.readline");
    lua_pushnil(L);
    return 1;
  }
  size_t len = (size_t)n;
  if (len > 0 && line[len - 1] == '\n') len--;
  lua_pushlstring(L, line, len);
  return 1;
}

/* _repl.add_history(line) */
static int repl_add_history(lua_State *L) {
  const char *line = arg_string(L, 1, "repl.add_history", NULL);
  if (*line) history(ed.hist, &ed.ev, H_ENTER, line);
  return 0;
}

/* _repl.set_completer(fn | nil) */
static int repl_set_completer(lua_State *L) {
  if (!lua_isnoneornil(L, 1) && !lua_isfunction(L, 1))
    return upk_error(L, "EINVAL", "repl.set_completer: argument #1 must be a function or nil, not %s",
                     luaL_typename(L, 1));
  luaL_unref(L, LUA_REGISTRYINDEX, ed.completer);
  ed.completer = LUA_NOREF;
  if (!lua_isnoneornil(L, 1)) {
    lua_settop(L, 1);
    ed.completer = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  return 0;
}

/* Closing the Lua state ends the editor (restoring the terminal). */
static int editor_gc(lua_State *L) {
  (void)L;
  if (ed.el) el_end(ed.el);
  if (ed.hist) history_end(ed.hist);
  ed.el = NULL;
  ed.hist = NULL;
  ed.completer = LUA_NOREF;
  return 0;
}

static const luaL_Reg repl_funcs[] = {
  {"readline", repl_readline},
  {"add_history", repl_add_history},
  {"set_completer", repl_set_completer},
  {NULL, NULL}
};

int luaopen_upkit_repl(lua_State *L) {
  if (ed.hist == NULL) {
    ed.hist = history_init();
    if (ed.hist == NULL) return upk_errno_error(L, ENOMEM, "repl: cannot create the history");
    history(ed.hist, &ed.ev, H_SETSIZE, HISTORY_MAX);
    history(ed.hist, &ed.ev, H_SETUNIQUE, 1);
    lua_newuserdata(L, 0);
    luaL_newmetatable(L, EDITOR_MT);
    lua_pushcfunction(L, editor_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, EDITOR_MT);
  }
  luaL_newlib(L, repl_funcs);
  return 1;
}
