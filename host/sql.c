/*
** sql.c: upkit._sql, SQL through ODBC (unixODBC) for any driver.
** The thin native layer under lua/upkit/sql.lua:
**   _sql.connect(conn, { timeout =, query_timeout =, on_message =, decimals = }) -> db
**   db:exec(sql, ...) db:prepare(sql) db:open(sql, ...) db:statement() db:info()
**   db:begin() db:commit() db:rollback() db:cancel() db:catalog(kind, ...)
**   db:load(block, { insert =, columns =, ... })           (sql_load.c)
**   st:execute(...) st:fetch() st:columns() st:close()     (sql_stmt.c)
**   st:dump(...) st:start_block(sql) st:finish_block([w])  (sql_dump.c)
**   _sql.record_values(block, types)                       (sql_load.c)
** This file: UTF-16 conversion, diagnostics and error objects, Ctrl-C
** (SQLCancel of the statement the caller waits on), connections.
** Text crosses ODBC as UTF-16 (SQLWCHAR) through the wide functions and is
** UTF-8 on the Lua side; BIGINT is SQL_C_SBIGINT; DECIMAL/NUMERIC are text.
*/
#include <dirent.h>
#include <errno.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "sql_int.h"

/* ---------------------------------------------------------------------- */
/* UTF-8 <-> UTF-16 */

/*
** Convert UTF-8 s[0..n) to UTF-16 in b (b->n counts bytes), with a
** terminating zero unit not counted. 0 when s is not valid UTF-8 or on
** allocation failure (*bad tells which).
*/
int utf8_to_utf16(Buf *b, const char *s, size_t n, int *bad) {
  const unsigned char *u = (const unsigned char *)s;
  *bad = 0;
  b->n = 0;
  if (!buf_reserve(b, (n + 1) * sizeof(SQLWCHAR))) return 0;
  SQLWCHAR *w = (SQLWCHAR *)b->p;
  size_t k = 0, i = 0;
  while (i < n) {
    unsigned c = u[i], cp, len;
    if (c < 0x80) { w[k++] = (SQLWCHAR)c; i++; continue; }
    else if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else { *bad = 1; return 0; }
    if (i + len > n) { *bad = 1; return 0; }
    for (unsigned j = 1; j < len; j++) {
      if ((u[i + j] & 0xC0) != 0x80) { *bad = 1; return 0; }
      cp = (cp << 6) | (u[i + j] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) { *bad = 1; return 0; }
    if (cp >= 0x10000) {
      cp -= 0x10000;
      w[k++] = (SQLWCHAR)(0xD800 + (cp >> 10));
      w[k++] = (SQLWCHAR)(0xDC00 + (cp & 0x3FF));
    } else {
      w[k++] = (SQLWCHAR)cp;
    }
    i += len;
  }
  w[k] = 0;
  b->n = k * sizeof(SQLWCHAR);
  return 1;
}

/* Append UTF-16 w[0..units) to b as UTF-8; lone surrogates become U+FFFD. */
int utf16_append_utf8(Buf *b, const SQLWCHAR *w, size_t units) {
  if (!buf_reserve(b, b->n + units * 3 + 1)) return 0;
  unsigned char *o = (unsigned char *)b->p + b->n;
  for (size_t i = 0; i < units; i++) {
    unsigned cp = w[i];
    if (cp < 0x80) {
      *o++ = (unsigned char)cp;
      continue;
    }
    if (cp >= 0xD800 && cp <= 0xDBFF && i + 1 < units && w[i + 1] >= 0xDC00 && w[i + 1] <= 0xDFFF) {
      cp = 0x10000 + ((cp - 0xD800) << 10) + (w[i + 1] - 0xDC00);
      i++;
    } else if (cp >= 0xD800 && cp <= 0xDFFF) {
      cp = 0xFFFD;
    }
    if (cp < 0x800) { *o++ = 0xC0 | (cp >> 6); *o++ = 0x80 | (cp & 0x3F); }
    else if (cp < 0x10000) {
      *o++ = 0xE0 | (cp >> 12); *o++ = 0x80 | ((cp >> 6) & 0x3F); *o++ = 0x80 | (cp & 0x3F);
    } else {
      *o++ = 0xF0 | (cp >> 18); *o++ = 0x80 | ((cp >> 12) & 0x3F);
      *o++ = 0x80 | ((cp >> 6) & 0x3F); *o++ = 0x80 | (cp & 0x3F);
    }
  }
  b->n = (size_t)((char *)o - b->p);
  return 1;
}


/* ---------------------------------------------------------------------- */
/* Connection string without passwords */

/* The connection string with every PWD= and Password= pair removed. */
static char *redact(const char *cs) {
  size_t n = strlen(cs);
  char *out = malloc(n + 1);
  if (!out) return NULL;
  size_t o = 0, i = 0;
  while (i < n) {
    size_t start = i;
    while (i < n && cs[i] != '=' && cs[i] != ';') i++;
    size_t keyend = i;
    if (i < n && cs[i] == '=') {
      i++;
      if (i < n && cs[i] == '{') {
        i++;
        while (i < n) {
          if (cs[i] == '}') {
            if (i + 1 < n && cs[i + 1] == '}') { i += 2; continue; }
            i++;
            break;
          }
          i++;
        }
      }
      while (i < n && cs[i] != ';') i++;
    }
    size_t ks = start;
    while (ks < keyend && cs[ks] == ' ') ks++;
    size_t kl = keyend - ks;
    while (kl > 0 && cs[ks + kl - 1] == ' ') kl--;
    int secret = (kl == 3 && strncasecmp(cs + ks, "pwd", 3) == 0) ||
                 (kl == 8 && strncasecmp(cs + ks, "password", 8) == 0);
    if (i < n) i++;  /* the ';' */
    if (!secret) {
      memcpy(out + o, cs + start, i - start);
      o += i - start;
    }
  }
  while (o > 0 && out[o - 1] == ';') o--;
  out[o] = 0;
  return out;
}

/* _sql.redact(conn) -> the connection string without passwords */
static int sql_redact(lua_State *L) {
  char *r = redact(sql_checkstring(L, 1, "sql.redact", NULL));
  if (!r) return upk_error(L, "ENOMEM", "sql.redact: out of memory");
  lua_pushstring(L, r);
  free(r);
  return 1;
}

/* ---------------------------------------------------------------------- */
/* Arguments */

const char *sql_checkstring(lua_State *L, int idx, const char *fn, size_t *len) {
  if (lua_type(L, idx) != LUA_TSTRING)
    upk_error(L, "EINVAL", "%s: argument %d must be a string, got %s", fn, idx, luaL_typename(L, idx));
  return lua_tolstring(L, idx, len);
}

lua_Integer sql_checkinteger(lua_State *L, int idx, const char *fn) {
  int isint;
  lua_Integer v = lua_tointegerx(L, idx, &isint);
  if (!isint) upk_error(L, "EINVAL", "%s: argument %d must be an integer, got %s", fn, idx, luaL_typename(L, idx));
  return v;
}

void *sql_checkudata(lua_State *L, int idx, const char *tname, const char *fn) {
  void *p = luaL_testudata(L, idx, tname);
  if (!p) upk_error(L, "EINVAL", "%s: expected a %s, got %s", fn, tname, luaL_typename(L, idx));
  return p;
}

/* ---------------------------------------------------------------------- */
/* Diagnostics and errors */

#define MESSAGE_MAX 1024   /* bytes of diagnostic text in an error's message */

/* Append UTF-16 text to b as UTF-8, or nothing when out of memory. */
static void add_wide(Buf *b, const SQLWCHAR *w, size_t units) {
  if (!utf16_append_utf8(b, w, units)) b->n = 0;
}

/*
** Push an array of the diagnostic records of handle h:
** { { sqlstate =, native =, message = }, ... }, each message whole
** whatever its length. Returns their count.
*/
static int push_diags(lua_State *L, SQLSMALLINT ht, SQLHANDLE h) {
  int n = 0;
  lua_newtable(L);
  if (!h) return 0;
  Buf b = {0}, m = {0};
  for (SQLSMALLINT i = 1; i < 100; i++) {
    SQLWCHAR state[6];
    SQLINTEGER native = 0;
    SQLSMALLINT len = 0;
    SQLSMALLINT cap = (SQLSMALLINT)(m.cap / sizeof(SQLWCHAR));
    SQLRETURN rc = SQLGetDiagRecW(ht, h, i, state, &native, (SQLWCHAR *)m.p, cap, &len);
    if (!SQL_SUCCEEDED(rc)) break;
    if (len >= cap) {  /* the text did not fit: ask again with room for all of it */
      if (!buf_reserve(&m, ((size_t)len + 1) * sizeof(SQLWCHAR))) break;
      cap = (SQLSMALLINT)(m.cap / sizeof(SQLWCHAR) > 32767 ? 32767 : m.cap / sizeof(SQLWCHAR));
      rc = SQLGetDiagRecW(ht, h, i, state, &native, (SQLWCHAR *)m.p, cap, &len);
      if (!SQL_SUCCEEDED(rc)) break;
      if (len >= cap) len = (SQLSMALLINT)(cap - 1);
    }
    if (len < 0) len = 0;
    lua_createtable(L, 0, 3);
    b.n = 0;
    add_wide(&b, state, 5);
    lua_pushlstring(L, b.p ? b.p : "", b.n);
    lua_setfield(L, -2, "sqlstate");
    lua_pushinteger(L, native);
    lua_setfield(L, -2, "native");
    b.n = 0;
    if (m.p) add_wide(&b, (const SQLWCHAR *)m.p, (size_t)len);
    lua_pushlstring(L, b.p ? b.p : "", b.n);
    lua_setfield(L, -2, "message");
    lua_rawseti(L, -2, ++n);
  }
  buf_free(&b);
  buf_free(&m);
  return n;
}

/*
** The code of a failed ODBC call (docs/errors.md) from its first error
** record's SQLSTATE and native number; cancelled: our own SQLCancel
** stopped it. message is the first record's text.
*/
static const char *code_of(const char *state, lua_Integer native, const char *message, int cancelled) {
  if (cancelled || strcmp(state, "HY008") == 0) return "INTERRUPTED";
  /* psqlODBC reports a refused password as 08001 with the server's text */
  if (strncmp(state, "08", 2) == 0 && strstr(message, "authentication failed")) return "AUTH_FAILED";
  if (strncmp(state, "08", 2) == 0) return "CONNECT_FAILED";
  if (strncmp(state, "28", 2) == 0) return "AUTH_FAILED";
  if (strcmp(state, "HYT00") == 0 || strcmp(state, "HYT01") == 0 || strcmp(state, "57014") == 0) return "TIMEOUT";
  if (strcmp(state, "HY001") == 0) return "ENOMEM";
  if (strcmp(state, "42501") == 0) return "PERMISSION_DENIED";
  if (strcmp(state, "42000") == 0 && (native == 229 || native == 262 || native == 3110 || native == 300))
    return "PERMISSION_DENIED";
  return "SQL_ERROR";
}

/* Append s[0..n) to b cut to at most max bytes at a UTF-8 boundary; 1 when cut. */
static int add_capped(Buf *b, const char *s, size_t n, size_t max) {
  if (n <= max) return buf_add(b, s, n), 0;
  while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80) max--;
  buf_add(b, s, max);
  return 1;
}

/*
** Push the error object of a failed ODBC call on handle h: code from the
** SQLSTATE (see code_of; AUTH_FAILED when any record is of class 28),
** sqlstate and native of the first error record
** (a warning, class 01, only when every record is one), diagnostics = every
** record whole. The message names the operation (what) and the connection
** (c's label, without passwords), and holds at most MESSAGE_MAX bytes of
** the driver's text.
*/
void sql_pusherror(lua_State *L, SQLSMALLINT ht, SQLHANDLE h, const char *what, Conn *c) {
  int n = push_diags(L, ht, h);  /* [diags] */
  int di = lua_gettop(L);
  char state[8] = "HY000";
  lua_Integer native = 0;
  int first = 0;  /* the record state and native come from */
  int login = 0;  /* a record of class 28 (invalid authorization), in whatever place */
  Buf text = {0};
  int cut = 0;
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, di, i);
    lua_getfield(L, -1, "sqlstate");
    lua_getfield(L, -2, "native");
    lua_getfield(L, -3, "message");  /* [diags, rec, state, native, message] */
    const char *s = lua_tostring(L, -3);
    if (strncmp(s, "28", 2) == 0) login = 1;
    if (i == 1 || (strncmp(state, "01", 2) == 0 && strncmp(s, "01", 2) != 0)) {
      snprintf(state, sizeof state, "%s", s);
      native = lua_tointeger(L, -2);
      first = i;
    }
    size_t ml;
    const char *m = lua_tolstring(L, -1, &ml);
    if (!cut && i > 1) buf_addstr(&text, "; ");
    if (!cut) cut = add_capped(&text, m, ml, text.n < MESSAGE_MAX ? MESSAGE_MAX - text.n : 0);
    lua_pop(L, 4);
  }
  if (n == 0) buf_addstr(&text, "the driver gave no diagnostics");
  if (cut) buf_addstr(&text, " ... (the whole text is in the error's diagnostics)");
  int cancelled = c && (c->cancelled || (c->cancel_h && c->cancel_h == h));
  if (c && c->cancelled) upk_interrupted = 0;  /* this INTERRUPTED answers the Ctrl-C */
  if (c) {
    c->cancelled = 0;
    c->cancel_h = NULL;
  }
  const char *message = "";
  if (first) {
    lua_rawgeti(L, di, first);
    lua_getfield(L, -1, "message");
    message = lua_tostring(L, -1);
    lua_pop(L, 2);  /* the string stays alive in the diagnostics table */
  }
  const char *code = code_of(state, native, message, cancelled);
  /* SQL Server documents no order: 4060 (42000) may come before 18456 (28000) */
  if (login && strcmp(code, "SQL_ERROR") == 0) code = "AUTH_FAILED";
  const char *label = c ? c->label : NULL;
  lua_pushlstring(L, text.p ? text.p : "", text.n);
  buf_free(&text);
  if (label) upk_pusherror(L, code, "%s: %s: %s", what, label, lua_tostring(L, -1));
  else upk_pusherror(L, code, "%s: %s", what, lua_tostring(L, -1));
  lua_pushstring(L, state);
  lua_setfield(L, -2, "sqlstate");
  lua_pushinteger(L, native);
  lua_setfield(L, -2, "native");
  lua_pushvalue(L, di);
  lua_setfield(L, -2, "diagnostics");
  lua_replace(L, di);
  lua_settop(L, di);  /* [err] */
}

int sql_fail(lua_State *L, SQLSMALLINT ht, SQLHANDLE h, const char *what, Conn *c) {
  sql_pusherror(L, ht, h, what, c);
  return lua_error(L);
}

/* ---------------------------------------------------------------------- */
/*
** Ctrl-C. While the caller's thread waits on an ODBC call (or on a worker
** thread's statement), the handle is registered here; a watcher thread,
** started once, polls the SIGINT flag during such waits and cancels that
** statement (SQLCancel, which ODBC allows from another thread). The call
** then fails and its error is INTERRUPTED. A second Ctrl-C before the
** first is taken ends the process (main.c).
*/

#define WATCH_NS 50000000L  /* the watcher looks at the flag this often during a wait */

static pthread_mutex_t wait_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wait_cv = PTHREAD_COND_INITIALIZER;
static SQLHANDLE wait_h;      /* the statement waited on, or NULL */
static Conn *wait_conn;
static int watcher_state;     /* 0 not started, 1 running, -1 could not start */

static void *watcher_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&wait_mu);
  for (;;) {
    while (!wait_h) pthread_cond_wait(&wait_cv, &wait_mu);
    if (upk_interrupted && !wait_conn->cancelled) {
      wait_conn->cancelled = 1;
      SQLCancel(wait_h);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += WATCH_NS;
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    pthread_cond_timedwait(&wait_cv, &wait_mu, &ts);
  }
  return NULL;
}

void sql_wait_begin(Conn *c, SQLHANDLE h) {
  pthread_mutex_lock(&wait_mu);
  if (watcher_state == 0) {
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    watcher_state = pthread_create(&t, &a, watcher_main, NULL) == 0 ? 1 : -1;
    pthread_attr_destroy(&a);
  }
  c->cancelled = 0;
  wait_h = h;
  wait_conn = c;
  pthread_cond_signal(&wait_cv);
  pthread_mutex_unlock(&wait_mu);
}

void sql_wait_end(void) {
  pthread_mutex_lock(&wait_mu);
  wait_h = NULL;
  wait_conn = NULL;
  pthread_mutex_unlock(&wait_mu);
}

/* ---------------------------------------------------------------------- */
/* Connection */

/* Wait for the thread working on the connection, if any (never raises). */
void sql_quiesce(Conn *c) {
  if (c->ahead) prefetch_join(c->ahead);
  load_join(c, 0);
}

/* Wait for the thread working on the connection, if any; raise the error of db:load's last statement. */
void sql_settle(lua_State *L, Conn *c, const char *fn) {
  sql_quiesce(c);
  load_finish(L, c, fn);
}

/*
** psqlODBC with CommLog=0 on every connection still writes one line,
** "PQfinish: <pointer>", when the process's last connection closes: its
** SQLDisconnect restores the driver-wide setting (Debian's odbcinst.ini has
** CommLog=1) before it logs the disconnect, into
** /tmp/psqlodbc_<program>_<user><pid>.log (the program part is psqlODBC's
** own idea of the name, not always ours). Remove such a file of this
** process when it holds nothing but such lines, so that a run leaves
** nothing in /tmp.
*/
static int only_pqfinish_lines(const char *path) {
  FILE *f = fopen(path, "re");
  if (!f) return 0;
  char line[128];
  int only = 1, lines = 0;
  while (only && fgets(line, sizeof line, f)) {
    unsigned long long v;
    char end;
    only = sscanf(line, "PQfinish: %llx%c", &v, &end) == 2 && end == '\n';
    lines++;
  }
  fclose(f);
  return only && lines > 0;
}

/* Open psqlODBC connections: the residue is written, and looked for, when the last one closes. */
static atomic_int pg_open;

static void drop_psqlodbc_residue(void) {
  const struct passwd *pw = getpwuid(getuid());
  if (!pw) return;
  char tail[160];
  int tn = snprintf(tail, sizeof tail, "%s%u.log", pw->pw_name, (unsigned)getpid());
  DIR *d = opendir("/tmp");
  if (!d || tn <= 0 || (size_t)tn >= sizeof tail) {
    if (d) closedir(d);
    return;
  }
  const struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    size_t n = strlen(e->d_name);
    if (n <= 9 + (size_t)tn || strncmp(e->d_name, "psqlodbc_", 9) != 0) continue;
    if (strcmp(e->d_name + n - tn, tail) != 0) continue;
    char c = e->d_name[n - tn - 1];  /* the program part ends in "_" (or is empty) */
    if (c != '_' && n - tn != 9) continue;
    char path[512];
    snprintf(path, sizeof path, "/tmp/%s", e->d_name);
    if (only_pqfinish_lines(path)) unlink(path);
  }
  closedir(d);
}

static void conn_release(Conn *c) {
  if (c->ahead) prefetch_join(c->ahead);
  if (c->dbc) load_discard(c);
  if (c->dbc) {
    if (c->intrans) SQLEndTran(SQL_HANDLE_DBC, c->dbc, SQL_ROLLBACK);
    SQLDisconnect(c->dbc);
    SQLFreeHandle(SQL_HANDLE_DBC, c->dbc);
    c->dbc = NULL;
    if (c->sizes == SIZES_PG && atomic_fetch_sub(&pg_open, 1) == 1) drop_psqlodbc_residue();
  }
  if (c->env) {
    SQLFreeHandle(SQL_HANDLE_ENV, c->env);
    c->env = NULL;
  }
  free(c->label);
  c->label = NULL;
  buf_free(&c->w);
  buf_free(&c->s);
  buf_free(&c->ld_w);
  buf_free(&c->ld_sw);
  buf_free(&c->ld_sql);
}

/* An open connection (its worker may still run). */
Conn *sql_checklive(lua_State *L, int idx, const char *fn) {
  Conn *c = sql_checkudata(L, idx, CONN_MT, fn);
  if (!c->dbc) upk_error(L, "CLOSED", "%s: the connection is closed", fn);
  return c;
}

/* An open connection with no thread working on it (db:load's error raised). */
Conn *sql_checkconn(lua_State *L, int idx, const char *fn) {
  Conn *c = sql_checklive(L, idx, fn);
  sql_settle(L, c, fn);
  return c;
}

/* Convert a Lua UTF-8 string argument to UTF-16 in b, or raise EINVAL. */
SQLWCHAR *wide_arg(lua_State *L, Buf *b, int idx, const char *fn, SQLINTEGER *units) {
  size_t n;
  const char *s = lua_tolstring(L, idx, &n);
  int bad;
  if (!s) upk_error(L, "EINVAL", "%s: argument %d must be a string, got %s", fn, idx, luaL_typename(L, idx));
  if (!utf8_to_utf16(b, s, n, &bad)) {
    if (bad) upk_error(L, "EINVAL", "%s: the text is not valid UTF-8", fn);
    upk_error(L, "ENOMEM", "%s: out of memory", fn);
  }
  if (units) *units = (SQLINTEGER)(b->n / sizeof(SQLWCHAR));
  return (SQLWCHAR *)b->p;
}

/*
** How far a driver's declared text and binary sizes bound the values:
** SQLite does not enforce them; psqlODBC reports unbounded varchar as its
** MaxVarcharSize (255). Such columns are bound with LONG_BIND bytes a value,
** and a value that does not fit is read again with SQLGetData.
*/
static int size_policy(Conn *c) {
  SQLCHAR name[64];
  SQLSMALLINT len = 0;
  if (!SQL_SUCCEEDED(SQLGetInfo(c->dbc, SQL_DBMS_NAME, name, sizeof name, &len))) return SIZES_EXACT;
  if (strncasecmp((char *)name, "sqlite", 6) == 0) return SIZES_NONE;
  if (strncasecmp((char *)name, "postgres", 8) == 0) return SIZES_PG;
  return SIZES_EXACT;
}

/*
** _sql.connect(conn, { timeout =, query_timeout =, on_message =, decimals = }) -> db
** conn is a connection string (with '=') or a DSN name.
*/
static int sql_connect(lua_State *L) {
  static const char *const keys[] = {"timeout", "query_timeout", "on_message", "decimals", NULL};
  if (lua_type(L, 1) != LUA_TSTRING)
    return upk_error(L, "EINVAL", "sql.connect: expected a connection string or DSN, got %s", luaL_typename(L, 1));
  const char *cs = lua_tostring(L, 1);
  upk_checkopts(L, 2, "sql.connect", keys);
  lua_Integer timeout = upk_optinteger(L, 2, "sql.connect", "timeout", 30);
  lua_Integer qtimeout = upk_optinteger(L, 2, "sql.connect", "query_timeout", 0);
  const char *decimals = upk_optstring(L, 2, "sql.connect", "decimals", "string");
  if (strcmp(decimals, "string") != 0 && strcmp(decimals, "number") != 0)
    return upk_error(L, "EINVAL", "sql.connect: option 'decimals' must be \"string\" or \"number\", not \"%s\"", decimals);
  if (!lua_isnoneornil(L, 2)) {
    lua_getfield(L, 2, "on_message");
    if (!lua_isnil(L, -1) && !lua_isfunction(L, -1))
      upk_error(L, "EINVAL", "sql.connect: option 'on_message' must be a function");
  } else {
    lua_pushnil(L);
  }
  int onmsg = lua_gettop(L);
  if (!strchr(cs, '=')) {
    lua_pushfstring(L, "DSN=%s", cs);
    lua_replace(L, 1);
    cs = lua_tostring(L, 1);
  }
  Conn *c = lua_newuserdatauv(L, sizeof *c, 2);  /* [.., db] */
  memset(c, 0, sizeof *c);
  luaL_setmetatable(L, CONN_MT);
  lua_pushvalue(L, onmsg);
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 2);
  c->label = redact(cs);
  c->query_timeout = (SQLULEN)(qtimeout > 0 ? qtimeout : 0);
  c->decimal_numbers = decimals[0] == 'n';
  if (!c->label) return upk_error(L, "ENOMEM", "sql.connect: out of memory");
  if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_ENV, SQL_NULL_HANDLE, &c->env))) {
    c->env = NULL;
    return upk_error(L, "ENOMEM", "sql.connect: %s: cannot allocate an ODBC environment", c->label);
  }
  SQLSetEnvAttr(c->env, SQL_ATTR_ODBC_VERSION, (SQLPOINTER)SQL_OV_ODBC3, 0);
  if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_DBC, c->env, &c->dbc))) {
    c->dbc = NULL;
    return sql_fail(L, SQL_HANDLE_ENV, c->env, "sql.connect", c);
  }
  upk_track(L, c, CONN_MT);
  if (timeout > 0) SQLSetConnectAttr(c->dbc, SQL_ATTR_LOGIN_TIMEOUT, (SQLPOINTER)(SQLULEN)timeout, 0);
  SQLINTEGER units;
  SQLWCHAR *w = wide_arg(L, &c->w, 1, "sql.connect", &units);
  SQLWCHAR out[1024];
  SQLSMALLINT outlen;
  SQLRETURN rc = SQLDriverConnectW(c->dbc, NULL, w, (SQLSMALLINT)units, out, 1024, &outlen, SQL_DRIVER_NOPROMPT);
  if (!SQL_SUCCEEDED(rc)) {
    sql_pusherror(L, SQL_HANDLE_DBC, c->dbc, "sql.connect", c);
    SQLFreeHandle(SQL_HANDLE_DBC, c->dbc);
    c->dbc = NULL;
    conn_release(c);
    upk_untrack(L, c);
    return lua_error(L);
  }
  c->sizes = size_policy(c);
  if (c->sizes == SIZES_PG) atomic_fetch_add(&pg_open, 1);
  SQLUINTEGER gd = 0;
  c->gd_block = SQL_SUCCEEDED(SQLGetInfo(c->dbc, SQL_GETDATA_EXTENSIONS, &gd, sizeof gd, NULL)) &&
                (gd & SQL_GD_BLOCK) && (gd & SQL_GD_BOUND);
  return 1;
}

/* Push the on_message callback of the connection at index ci, or nil. */
static int push_onmessage(lua_State *L, int ci) {
  lua_getiuservalue(L, ci, 1);
  if (lua_isfunction(L, -1)) return 1;
  lua_pop(L, 1);
  return 0;
}

/*
** Give the informational records of handle h to the connection's on_message
** callback as on_message(message, sqlstate, native), each under lua_pcall.
** Returns 0, or 1 with the callback's error on the stack top.
*/
int notify(lua_State *L, int ci, SQLSMALLINT ht, SQLHANDLE h) {
  if (!push_onmessage(L, ci)) return 0;
  int fi = lua_gettop(L);
  int n = push_diags(L, ht, h);  /* [fn, diags] */
  for (int i = 1; i <= n; i++) {
    lua_pushvalue(L, fi);
    lua_rawgeti(L, fi + 1, i);
    lua_getfield(L, -1, "message");
    lua_getfield(L, -2, "sqlstate");
    lua_getfield(L, -3, "native");
    lua_remove(L, -4);  /* [fn, diags, fn, message, state, native] */
    if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
      lua_replace(L, fi);
      lua_settop(L, fi);
      return 1;
    }
  }
  lua_settop(L, fi - 1);
  return 0;
}

/*
** Send SQL text s[0..n) (UTF-8) to execute (or prepare), a wait Ctrl-C can
** cancel. The text goes as UTF-16 through the wide functions, except to
** SQLite, whose driver takes UTF-8 as is but mangles characters outside
** the BMP in wide SQL text. *bad is set when s is not valid UTF-8 (then
** nothing is sent).
*/
SQLRETURN send_sql(Conn *c, SQLHSTMT h, Buf *w, const char *s, size_t n, int prepare, int *bad) {
  if (!utf8_to_utf16(w, s, n, bad)) return SQL_ERROR;
  SQLRETURN rc;
  sql_wait_begin(c, h);
  if (c->sizes == SIZES_NONE) {
    rc = prepare ? SQLPrepare(h, (SQLCHAR *)s, (SQLINTEGER)n) : SQLExecDirect(h, (SQLCHAR *)s, (SQLINTEGER)n);
  } else {
    SQLINTEGER units = (SQLINTEGER)(w->n / sizeof(SQLWCHAR));
    rc = prepare ? SQLPrepareW(h, (SQLWCHAR *)w->p, units) : SQLExecDirectW(h, (SQLWCHAR *)w->p, units);
  }
  sql_wait_end();
  return rc;
}

/* ---------------------------------------------------------------------- */
/* Connection methods */

static void setinfo(lua_State *L, Conn *c, SQLUSMALLINT what, const char *key) {
  SQLWCHAR out[256];
  SQLSMALLINT len = 0;
  if (!SQL_SUCCEEDED(SQLGetInfoW(c->dbc, what, out, sizeof out, &len))) return;
  Buf b = {0};
  if (utf16_append_utf8(&b, out, (size_t)len / sizeof(SQLWCHAR))) {
    lua_pushlstring(L, b.p, b.n);
    lua_setfield(L, -2, key);
  }
  buf_free(&b);
}

/*
** db:info() -> { dbms =, dbms_version =, driver =, driver_version =,
**   odbc_version =, database =, user =, search_escape =, quote =, connection = }
*/
static int conn_info(lua_State *L) {
  Conn *c = sql_checkconn(L, 1, "db:info");
  lua_createtable(L, 0, 10);
  setinfo(L, c, SQL_DBMS_NAME, "dbms");
  setinfo(L, c, SQL_DBMS_VER, "dbms_version");
  setinfo(L, c, SQL_DRIVER_NAME, "driver");
  setinfo(L, c, SQL_DRIVER_VER, "driver_version");
  setinfo(L, c, SQL_DRIVER_ODBC_VER, "odbc_version");
  setinfo(L, c, SQL_DATABASE_NAME, "database");
  setinfo(L, c, SQL_USER_NAME, "user");
  setinfo(L, c, SQL_SEARCH_PATTERN_ESCAPE, "search_escape");
  setinfo(L, c, SQL_IDENTIFIER_QUOTE_CHAR, "quote");
  lua_pushstring(L, c->label);
  lua_setfield(L, -2, "connection");
  return 1;
}

static void autocommit(lua_State *L, Conn *c, int on, const char *fn) {
  SQLRETURN rc = SQLSetConnectAttr(c->dbc, SQL_ATTR_AUTOCOMMIT,
                                   (SQLPOINTER)(uintptr_t)(on ? SQL_AUTOCOMMIT_ON : SQL_AUTOCOMMIT_OFF), 0);
  if (!SQL_SUCCEEDED(rc)) sql_fail(L, SQL_HANDLE_DBC, c->dbc, fn, c);
}

/* db:begin(): start a transaction (autocommit off until commit or rollback) */
static int conn_begin(lua_State *L) {
  Conn *c = sql_checkconn(L, 1, "db:begin");
  if (c->intrans) return upk_error(L, "BUSY", "db:begin: %s: a transaction is already open", c->label);
  autocommit(L, c, 0, "db:begin");
  c->intrans = 1;
  return 0;
}

static int endtran(lua_State *L, SQLSMALLINT how, const char *fn) {
  Conn *c = how == SQL_ROLLBACK ? sql_checklive(L, 1, fn) : sql_checkconn(L, 1, fn);
  if (c->ahead) prefetch_join(c->ahead);
  load_discard(c);
  if (!c->intrans) return upk_error(L, "EINVAL", "%s: %s: no transaction is open", fn, c->label);
  SQLRETURN rc = SQLEndTran(SQL_HANDLE_DBC, c->dbc, how);
  if (!SQL_SUCCEEDED(rc)) {
    sql_pusherror(L, SQL_HANDLE_DBC, c->dbc, fn, c);
    if (how == SQL_COMMIT) SQLEndTran(SQL_HANDLE_DBC, c->dbc, SQL_ROLLBACK);
    c->intrans = 0;
    SQLSetConnectAttr(c->dbc, SQL_ATTR_AUTOCOMMIT, (SQLPOINTER)SQL_AUTOCOMMIT_ON, 0);
    return lua_error(L);
  }
  c->intrans = 0;
  autocommit(L, c, 1, fn);
  return 0;
}

/* db:commit() */
static int conn_commit(lua_State *L) { return endtran(L, SQL_COMMIT, "db:commit"); }

/* db:rollback() */
static int conn_rollback(lua_State *L) { return endtran(L, SQL_ROLLBACK, "db:rollback"); }

/* db:in_transaction() -> boolean */
static int conn_in_transaction(lua_State *L) {
  lua_pushboolean(L, sql_checklive(L, 1, "db:in_transaction")->intrans);
  return 1;
}

/* db:cancel() -> true when the statement a thread runs on the connection was asked to stop */
static int conn_cancel(lua_State *L) {
  Conn *c = sql_checklive(L, 1, "db:cancel");
  int did = 0;
  if (c->ld_running) did = SQL_SUCCEEDED(SQLCancel(c->ld_h));
  else if (c->active) did = SQL_SUCCEEDED(SQLCancel(c->active));
  if (did) c->cancel_h = c->ld_running ? c->ld_h : c->active;
  lua_pushboolean(L, did);
  return 1;
}

/* db:connection_string() -> the full connection string (with its password) */
static int conn_connection_string(lua_State *L) {
  sql_checklive(L, 1, "db:connection_string");
  lua_getiuservalue(L, 1, 2);
  return 1;
}

/* db:on_message(fn or nil): set the callback for informational messages */
static int conn_on_message(lua_State *L) {
  sql_checklive(L, 1, "db:on_message");
  if (!lua_isnoneornil(L, 2) && !lua_isfunction(L, 2))
    return upk_error(L, "EINVAL", "db:on_message: expected a function or nil, got %s", luaL_typename(L, 2));
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, 1);
  return 0;
}

/* db:close(): idempotent; also __gc and __close */
static int conn_close(lua_State *L) {
  Conn *c = sql_checkudata(L, 1, CONN_MT, "db:close");
  if (c->dbc || c->env) upk_untrack(L, c);
  conn_release(c);
  return 0;
}

/* tostring(db): the connection string without its password */
static int conn_tostring(lua_State *L) {
  Conn *c = sql_checkudata(L, 1, CONN_MT, "db:close");
  if (c->dbc) lua_pushfstring(L, "sql.Connection (%s)", c->label);
  else lua_pushliteral(L, "sql.Connection (closed)");
  return 1;
}

/* ---------------------------------------------------------------------- */

static const luaL_Reg conn_meth[] = {
  {"exec", conn_exec},
  {"open", conn_open},
  {"prepare", conn_prepare},
  {"statement", conn_statement},
  {"info", conn_info},
  {"begin", conn_begin},
  {"commit", conn_commit},
  {"rollback", conn_rollback},
  {"in_transaction", conn_in_transaction},
  {"cancel", conn_cancel},
  {"catalog", conn_catalog},
  {"load", conn_load},
  {"connection_string", conn_connection_string},
  {"on_message", conn_on_message},
  {"close", conn_close},
  {NULL, NULL}
};

static const luaL_Reg conn_metameth[] = {
  {"__gc", conn_close},
  {"__close", conn_close},
  {"__tostring", conn_tostring},
  {NULL, NULL}
};

static const luaL_Reg sql_funcs[] = {
  {"connect", sql_connect},
  {"redact", sql_redact},
  {"record_values", sql_record_values},
  {"check_block", sql_check_block},
  {NULL, NULL}
};

int luaopen_upkit_sql(lua_State *L) {
  upk_newlib(L, sql_funcs, "sql");
  upk_newclass(L, CONN_MT, conn_metameth, conn_meth, "db:");
  lua_setfield(L, -2, "Connection");  /* method tables, so the Lua facade can add methods */
  upk_newclass(L, STMT_MT, upk_sql_stmt_metameth, upk_sql_stmt_meth, "st:");
  lua_setfield(L, -2, "Statement");
  luaL_newmetatable(L, BINARY_MT);
  lua_setfield(L, -2, "Binary");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  return 1;
}
