/*
** sql.c: upkit._sql, SQL through ODBC (unixODBC) for any driver.
** The thin native layer under lua/upkit/sql.lua:
**   _sql.connect(conn, { timeout =, query_timeout =, on_message = }) -> Connection
**   db:exec(sql, ...) db:prepare(sql) db:open(sql, ...) db:info() db:begin()
**   db:commit() db:rollback() db:cancel() db:catalog(kind, ...) db:load(...)
**   st:execute(...) st:fetch() st:columns() st:dump(rows, bytes, ahead) st:close()
**   db:statement() st:start_block(sql) st:finish_block([writer]): text blocks
**   _sql.writer(tmp) / _sql.reader(path): the checksummed logical backup file
**   _sql.record_values(block, types): a text block as a block of values
** Text crosses ODBC as UTF-16 (SQLWCHAR) through the wide functions and is
** UTF-8 on the Lua side; BIGINT is SQL_C_SBIGINT; DECIMAL/NUMERIC are text.
*/
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sql.h>
#include <sqlext.h>
#include <sqlucode.h>

#include <openssl/evp.h>

#include "digest.h"

#define CONN_MT "upkit.sql.Connection"
#define STMT_MT "upkit.sql.Statement"
#define WRITER_MT "upkit.sql.Writer"
#define READER_MT "upkit.sql.Reader"
#define BINARY_MT "upkit.sql.Binary"

#define ROWBUF_BYTES (4 << 20)   /* bound row-array buffers per statement */
#define MAX_ARRAY 1000           /* rows per block fetch */
#define LONG_TEXT 4000           /* longer declared text may not fit a bound buffer */
#define LONG_BINARY 8000
#define LONG_BIND 4096           /* bytes bound per value of such a column */
#define PIECE 65536              /* SQLGetData piece size */

/* How a column's value crosses into Lua. */
enum { K_INT, K_DOUBLE, K_BOOL, K_TEXT, K_ASCII, K_BINARY, K_DATE, K_TIMESTAMP };

static const char *const kind_names[] = {
  "integer", "float", "boolean", "text", "text", "binary", "date", "timestamp"
};

/* Value tags of the logical backup's data blocks. */
enum { V_NULL = 0, V_INT = 'i', V_DOUBLE = 'f', V_BOOL = 'b', V_TEXT = 's', V_BINARY = 'x' };

typedef struct Buf {
  char *p;
  size_t n, cap;
} Buf;

/* Grow b to hold at least need bytes; 0 on allocation failure. */
static int buf_reserve(Buf *b, size_t need) {
  if (need <= b->cap) return 1;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) return 0;
  b->p = p;
  b->cap = cap;
  return 1;
}

static int buf_add(Buf *b, const void *s, size_t n) {
  if (!buf_reserve(b, b->n + n)) return 0;
  memcpy(b->p + b->n, s, n);
  b->n += n;
  return 1;
}

static int buf_addstr(Buf *b, const char *s) { return buf_add(b, s, strlen(s)); }

static void buf_free(Buf *b) {
  free(b->p);
  b->p = NULL;
  b->n = b->cap = 0;
}

/* ---------------------------------------------------------------------- */
/* UTF-8 <-> UTF-16 */

/*
** Convert UTF-8 s[0..n) to UTF-16 in b (b->n counts bytes), with a
** terminating zero unit not counted. 0 when s is not valid UTF-8 or on
** allocation failure (*bad tells which).
*/
static int utf8_to_utf16(Buf *b, const char *s, size_t n, int *bad) {
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
static int utf16_append_utf8(Buf *b, const SQLWCHAR *w, size_t units) {
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
/* Handles */

typedef struct Conn {
  SQLHENV env;
  SQLHDBC dbc;
  SQLHSTMT active;        /* the statement running now, for db:cancel() */
  SQLULEN query_timeout;
  int intrans;
  int sizes;              /* SIZES_*: how far declared text sizes hold */
  int gd_block;           /* SQLGetData works on any row of a fetched block */
  int decimal_numbers;    /* DECIMAL/NUMERIC as Lua numbers, not strings */
  char *label;            /* the connection string without passwords */
  Buf w;                  /* UTF-16 scratch */
  Buf s;                  /* UTF-8 scratch */
  struct Stmt *ahead;     /* the statement fetching ahead in a thread */
  pthread_t ld_thread;    /* runs the last statement of db:load (PostgreSQL) */
  int ld_running;
  SQLHSTMT ld_h;          /* its handle, until its result is taken */
  SQLRETURN ld_rc;
  Buf ld_w;               /* its parameter, UTF-16 */
  Buf ld_sw;              /* its text, UTF-16 */
  Buf ld_sql;             /* its text, UTF-8 */
  SQLLEN ld_ind;
} Conn;

typedef struct Col {
  char *name;             /* the row's key: the column's name, made unique */
  char *label;            /* the name the driver gave, when name had to differ */
  SQLSMALLINT sqltype, digits, nullable, ctype;
  SQLULEN size;
  int kind;
  int islong;             /* a value may not fit: the rest comes from SQLGetData */
  int isotext;            /* text of a timestamp: 'T' between date and time */
  SQLLEN width;           /* bytes per element when bound */
  char *buf;
  size_t cap;
  SQLLEN *ind;
  Buf big;                /* islong: the current row's value when it did not fit */
  SQLLEN bigind;
} Col;

typedef struct Param {
  void *data;
  SQLLEN ind;
  union { SQLBIGINT i; double d; unsigned char b; } v;
} Param;

/* Ways a fetch fails, for code that cannot raise (a prefetch thread). */
enum { FETCH_OK, FETCH_SQL, FETCH_TRUNC, FETCH_NOMEM };

typedef struct Stmt {
  SQLHSTMT h;
  Conn *conn;
  int ncols;
  Col *cols;
  int haslong;            /* some column islong */
  int cursor;             /* a result set is open */
  SQLULEN arraysize, fetched, pos;
  int nparams;
  Param *params;
  int prepared;
  Buf w;                  /* UTF-16 scratch */
  Buf s;                  /* UTF-8 scratch and dump blocks */
  Buf pf;                 /* the block a prefetch thread fetched ahead */
  pthread_t pf_thread;
  int pf_running, pf_fail;
  int pf_text;            /* a st:start_block result waits in pf */
  uint32_t pf_rows;
  lua_Integer pf_maxrows, pf_maxbytes;
} Stmt;

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
  char *r = redact(luaL_checkstring(L, 1));
  if (!r) return upk_error(L, "ENOMEM", "sql.redact: out of memory");
  lua_pushstring(L, r);
  free(r);
  return 1;
}

/* ---------------------------------------------------------------------- */
/* Diagnostics and errors */

/*
** Push an array of the diagnostic records of handle h:
** { { state =, native =, message = }, ... }.
*/
static int push_diags(lua_State *L, SQLSMALLINT ht, SQLHANDLE h) {
  int n = 0;
  lua_newtable(L);
  if (!h) return 0;
  Buf b = {0};
  for (SQLSMALLINT i = 1; i < 100; i++) {
    SQLWCHAR state[6], msg[2048];
    SQLINTEGER native = 0;
    SQLSMALLINT len = 0;
    SQLRETURN rc = SQLGetDiagRecW(ht, h, i, state, &native, msg, (SQLSMALLINT)(sizeof msg / sizeof *msg), &len);
    if (!SQL_SUCCEEDED(rc)) break;
    if (len > (SQLSMALLINT)(sizeof msg / sizeof *msg) - 1) len = (SQLSMALLINT)(sizeof msg / sizeof *msg) - 1;
    lua_createtable(L, 0, 3);
    b.n = 0;
    utf16_append_utf8(&b, state, 5);
    lua_pushlstring(L, b.p ? b.p : "", b.n);
    lua_setfield(L, -2, "state");
    lua_pushinteger(L, native);
    lua_setfield(L, -2, "native");
    b.n = 0;
    utf16_append_utf8(&b, msg, (size_t)len);
    lua_pushlstring(L, b.p ? b.p : "", b.n);
    lua_setfield(L, -2, "message");
    lua_rawseti(L, -2, ++n);
  }
  buf_free(&b);
  return n;
}

/*
** Push the error object of a failed ODBC call on handle h: code = the
** first SQLSTATE, native, diagnostics = every record; the message names the
** operation (what) and the connection (label, without passwords).
*/
static void push_sqlerror(lua_State *L, SQLSMALLINT ht, SQLHANDLE h, const char *what, const char *label) {
  int n = push_diags(L, ht, h);  /* [diags] */
  int di = lua_gettop(L);
  char code[8] = "HY000";
  lua_Integer native = 0;
  luaL_Buffer mb;
  luaL_buffinit(L, &mb);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, di, i);
    lua_getfield(L, -1, "state");
    const char *state = lua_tostring(L, -1);
    /* the code is the first error's state; warnings (01xxx) only when all are */
    if (i == 1 || (strncmp(code, "01", 2) == 0 && state && strncmp(state, "01", 2) != 0)) {
      snprintf(code, sizeof code, "%s", state ? state : "HY000");
      lua_getfield(L, -2, "native");
      native = lua_tointeger(L, -1);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_getfield(L, -1, "message");
    lua_remove(L, -2);
    if (i > 1) luaL_addstring(&mb, "; ");
    luaL_addvalue(&mb);
  }
  if (n == 0) luaL_addstring(&mb, "the driver gave no diagnostics");
  luaL_pushresult(&mb);  /* [diags, text] */
  if (label) upk_pusherror(L, code, "%s: %s: %s", what, label, lua_tostring(L, -1));
  else upk_pusherror(L, code, "%s: %s", what, lua_tostring(L, -1));
  lua_pushinteger(L, native);
  lua_setfield(L, -2, "native");
  lua_pushvalue(L, di);
  lua_setfield(L, -2, "diagnostics");
  lua_replace(L, di);
  lua_settop(L, di);  /* [err] */
}

static int sql_fail(lua_State *L, SQLSMALLINT ht, SQLHANDLE h, const char *what, const char *label) {
  push_sqlerror(L, ht, h, what, label);
  return lua_error(L);
}

/* ---------------------------------------------------------------------- */
/* Connection */

static void prefetch_join(struct Stmt *st);

static void *load_main(void *arg) {
  Conn *c = arg;
  c->ld_rc = SQLExecDirectW(c->ld_h, (SQLWCHAR *)c->ld_sw.p, (SQLINTEGER)(c->ld_sw.n / sizeof(SQLWCHAR)));
  if (SQL_SUCCEEDED(c->ld_rc)) while (SQL_SUCCEEDED(SQLMoreResults(c->ld_h))) {}
  return NULL;
}

/* Wait for the statement db:load left running (asking it to stop first when cancel). */
static void load_join(Conn *c, int cancel) {
  if (!c->ld_running) return;
  if (cancel) SQLCancel(c->ld_h);
  pthread_join(c->ld_thread, NULL);
  c->ld_running = 0;
}

/* Take the result of the statement db:load left running: raises its error. */
static void load_finish(lua_State *L, Conn *c, const char *fn) {
  load_join(c, 0);
  if (!c->ld_h) return;
  SQLHSTMT h = c->ld_h;
  c->ld_h = NULL;
  if (!SQL_SUCCEEDED(c->ld_rc) && c->ld_rc != SQL_NO_DATA) {
    push_sqlerror(L, SQL_HANDLE_STMT, h, fn, c->label);
    SQLFreeHandle(SQL_HANDLE_STMT, h);
    lua_error(L);
  }
  SQLFreeHandle(SQL_HANDLE_STMT, h);
}

/* Stop and forget the statement db:load left running (rollback, close). */
static void load_discard(Conn *c) {
  load_join(c, 1);
  if (c->ld_h) SQLFreeHandle(SQL_HANDLE_STMT, c->ld_h);
  c->ld_h = NULL;
}

static void conn_release(Conn *c) {
  if (c->ahead) prefetch_join(c->ahead);
  if (c->dbc) load_discard(c);
  if (c->dbc) {
    if (c->intrans) SQLEndTran(SQL_HANDLE_DBC, c->dbc, SQL_ROLLBACK);
    SQLDisconnect(c->dbc);
    SQLFreeHandle(SQL_HANDLE_DBC, c->dbc);
    c->dbc = NULL;
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

static Conn *checklive(lua_State *L, int idx, const char *fn) {
  Conn *c = luaL_checkudata(L, idx, CONN_MT);
  if (!c->dbc) upk_error(L, "ECLOSED", "%s: the connection is closed", fn);
  return c;
}

/* An open connection, its last db:load statement finished (its error raised). */
static Conn *checkconn(lua_State *L, int idx, const char *fn) {
  Conn *c = checklive(L, idx, fn);
  load_finish(L, c, fn);
  return c;
}

/* Convert a Lua UTF-8 string argument to UTF-16 in b, or raise EINVAL. */
static SQLWCHAR *wide_arg(lua_State *L, Buf *b, int idx, const char *fn, SQLINTEGER *units) {
  size_t n;
  const char *s = luaL_checklstring(L, idx, &n);
  int bad;
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
enum { SIZES_EXACT, SIZES_PG, SIZES_NONE };

static int size_policy(Conn *c) {
  SQLCHAR name[64];
  SQLSMALLINT len = 0;
  if (!SQL_SUCCEEDED(SQLGetInfo(c->dbc, SQL_DBMS_NAME, name, sizeof name, &len))) return SIZES_EXACT;
  if (strncasecmp((char *)name, "sqlite", 6) == 0) return SIZES_NONE;
  if (strncasecmp((char *)name, "postgres", 8) == 0) return SIZES_PG;
  return SIZES_EXACT;
}

/*
** _sql.connect(conn, { timeout =, query_timeout =, on_message = }) -> db
** conn is a connection string (with '=') or a DSN name.
*/
static int sql_connect(lua_State *L) {
  static const char *const keys[] = {"timeout", "query_timeout", "on_message", "decimals", NULL};
  const char *cs = luaL_checkstring(L, 1);
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
    return upk_error(L, "HY001", "sql.connect: %s: cannot allocate an ODBC environment", c->label);
  }
  SQLSetEnvAttr(c->env, SQL_ATTR_ODBC_VERSION, (SQLPOINTER)SQL_OV_ODBC3, 0);
  if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_DBC, c->env, &c->dbc))) {
    c->dbc = NULL;
    return sql_fail(L, SQL_HANDLE_ENV, c->env, "sql.connect", c->label);
  }
  upk_track(L, c, CONN_MT);
  if (timeout > 0) SQLSetConnectAttr(c->dbc, SQL_ATTR_LOGIN_TIMEOUT, (SQLPOINTER)(SQLULEN)timeout, 0);
  SQLINTEGER units;
  SQLWCHAR *w = wide_arg(L, &c->w, 1, "sql.connect", &units);
  SQLWCHAR out[1024];
  SQLSMALLINT outlen;
  SQLRETURN rc = SQLDriverConnectW(c->dbc, NULL, w, (SQLSMALLINT)units, out, 1024, &outlen, SQL_DRIVER_NOPROMPT);
  if (!SQL_SUCCEEDED(rc)) {
    push_sqlerror(L, SQL_HANDLE_DBC, c->dbc, "sql.connect", c->label);
    SQLFreeHandle(SQL_HANDLE_DBC, c->dbc);
    c->dbc = NULL;
    conn_release(c);
    upk_untrack(L, c);
    return lua_error(L);
  }
  c->sizes = size_policy(c);
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
static int notify(lua_State *L, int ci, SQLSMALLINT ht, SQLHANDLE h) {
  if (!push_onmessage(L, ci)) return 0;
  int fi = lua_gettop(L);
  int n = push_diags(L, ht, h);  /* [fn, diags] */
  for (int i = 1; i <= n; i++) {
    lua_pushvalue(L, fi);
    lua_rawgeti(L, fi + 1, i);
    lua_getfield(L, -1, "message");
    lua_getfield(L, -2, "state");
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

/* ---------------------------------------------------------------------- */
/* Statements */

static void free_cols(Stmt *st) {
  for (int i = 0; i < st->ncols; i++) {
    free(st->cols[i].name);
    free(st->cols[i].label);
    free(st->cols[i].buf);
    free(st->cols[i].ind);
    buf_free(&st->cols[i].big);
  }
  free(st->cols);
  st->cols = NULL;
  st->ncols = 0;
  st->haslong = 0;
  st->fetched = st->pos = 0;
}

static void free_params(Stmt *st) {
  for (int i = 0; i < st->nparams; i++)
    if (st->params[i].data != &st->params[i].v) free(st->params[i].data);
  free(st->params);
  st->params = NULL;
  st->nparams = 0;
}

static int live(Stmt *st) { return st->h && st->conn && st->conn->dbc; }

/* Close the cursor; also what the prefetch thread does at the end of the rows. */
static void end_cursor(Stmt *st) {
  if (live(st) && st->cursor) SQLFreeStmt(st->h, SQL_CLOSE);
  st->cursor = 0;
  if (live(st) && st->ncols) SQLFreeStmt(st->h, SQL_UNBIND);
  free_cols(st);
}

/* Close the open cursor, if any, and forget its columns. */
static void close_cursor(Stmt *st) {
  prefetch_join(st);
  end_cursor(st);
}

static void stmt_release(lua_State *L, Stmt *st) {
  if (!st->h) return;
  close_cursor(st);
  if (live(st)) {
    SQLFreeStmt(st->h, SQL_RESET_PARAMS);
    if (st->conn->active == st->h) st->conn->active = NULL;
    /* A closed connection has freed its statements already. */
    SQLFreeHandle(SQL_HANDLE_STMT, st->h);
  }
  free_params(st);
  st->h = NULL;
  buf_free(&st->w);
  buf_free(&st->s);
  buf_free(&st->pf);
  st->pf_rows = 0;
  st->pf_fail = FETCH_OK;
  st->pf_text = 0;
  upk_untrack(L, st);
}

/*
** Push a new statement on connection ci (its user value keeps the
** connection alive) and return it.
*/
static Stmt *new_stmt(lua_State *L, int ci, Conn *c, const char *fn) {
  Stmt *st = lua_newuserdatauv(L, sizeof *st, 1);
  memset(st, 0, sizeof *st);
  luaL_setmetatable(L, STMT_MT);
  lua_pushvalue(L, ci);
  lua_setiuservalue(L, -2, 1);
  SQLHSTMT h;
  if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_STMT, c->dbc, &h)))
    sql_fail(L, SQL_HANDLE_DBC, c->dbc, fn, c->label);
  st->h = h;
  st->conn = c;
  upk_track(L, st, STMT_MT);
  if (c->query_timeout)
    SQLSetStmtAttr(h, SQL_ATTR_QUERY_TIMEOUT, (SQLPOINTER)c->query_timeout, 0);
  return st;
}

static Stmt *checkopen(lua_State *L, int idx, const char *fn) {
  Stmt *st = luaL_checkudata(L, idx, STMT_MT);
  if (!st->h) upk_error(L, "ECLOSED", "%s: the statement is closed", fn);
  lua_getiuservalue(L, idx, 1);
  Conn *c = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (!c || !c->dbc) upk_error(L, "ECLOSED", "%s: the connection is closed", fn);
  load_finish(L, c, fn);
  return st;
}

/* An open statement that is not fetching ahead (see st:dump). */
static Stmt *checkstmt(lua_State *L, int idx, const char *fn) {
  Stmt *st = checkopen(L, idx, fn);
  if (st->pf_running || st->pf_rows || st->pf_fail || st->pf_text)
    upk_error(L, "EBUSY", "%s: the statement is fetching ahead for st:dump or st:start_block", fn);
  return st;
}

/* Is the value at idx the binary wrapper made by sql.binary(s)? */
static int isbinary(lua_State *L, int idx) {
  if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return 0;
  luaL_getmetatable(L, BINARY_MT);
  int is = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return is;
}

/* Bind the Lua values at first..last as the statement's parameters. */
static void bind_params(lua_State *L, Stmt *st, int first, int last, const char *fn) {
  SQLFreeStmt(st->h, SQL_RESET_PARAMS);
  free_params(st);
  int n = last - first + 1;
  if (n <= 0) return;
  st->params = calloc((size_t)n, sizeof *st->params);
  if (!st->params) upk_error(L, "ENOMEM", "%s: out of memory", fn);
  st->nparams = n;
  for (int i = 0; i < n; i++) {
    int idx = first + i;
    Param *p = &st->params[i];
    SQLSMALLINT ctype, sqltype;
    SQLULEN size = 0;
    SQLLEN buflen = 0;
    int asbinary = 0;
    p->data = &p->v;
    switch (lua_type(L, idx)) {
      case LUA_TNIL:
        ctype = SQL_C_CHAR; sqltype = SQL_VARCHAR; size = 1; p->ind = SQL_NULL_DATA;
        break;
      case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) != NULL) goto badtype;
        ctype = SQL_C_CHAR; sqltype = SQL_VARCHAR; size = 1; p->ind = SQL_NULL_DATA;
        break;
      case LUA_TBOOLEAN:
        p->v.b = (unsigned char)lua_toboolean(L, idx);
        ctype = SQL_C_BIT; sqltype = SQL_BIT; size = 1; p->ind = 1;
        break;
      case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
          p->v.i = (SQLBIGINT)lua_tointeger(L, idx);
          ctype = SQL_C_SBIGINT; sqltype = SQL_BIGINT; size = 19; p->ind = 8;
        } else {
          p->v.d = lua_tonumber(L, idx);
          ctype = SQL_C_DOUBLE; sqltype = SQL_DOUBLE; size = 15; p->ind = 8;
        }
        break;
      case LUA_TTABLE:
        if (!isbinary(L, idx)) goto badtype;
        lua_rawgeti(L, idx, 1);
        lua_replace(L, idx);
        if (lua_type(L, idx) != LUA_TSTRING) goto badtype;
        asbinary = 1;
        /* fall through: the wrapped string, as binary */
        __attribute__((fallthrough));
      case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        int bad = 0;
        Buf w = {0};
        if (!asbinary && utf8_to_utf16(&w, s, len, &bad)) {
          p->data = w.p;
          p->ind = (SQLLEN)w.n;
          size = w.n / sizeof(SQLWCHAR);
          ctype = SQL_C_WCHAR;
          sqltype = size > LONG_TEXT ? SQL_WLONGVARCHAR : SQL_WVARCHAR;
          buflen = (SQLLEN)w.n + (SQLLEN)sizeof(SQLWCHAR);
        } else {
          buf_free(&w);
          if (!asbinary && !bad) upk_error(L, "ENOMEM", "%s: out of memory", fn);
          p->data = malloc(len ? len : 1);
          if (!p->data) upk_error(L, "ENOMEM", "%s: out of memory", fn);
          memcpy(p->data, s, len);
          p->ind = (SQLLEN)len;
          size = len;
          ctype = SQL_C_BINARY;
          sqltype = len > LONG_BINARY ? SQL_LONGVARBINARY : SQL_VARBINARY;
          buflen = (SQLLEN)len;
        }
        if (size == 0) size = 1;
        break;
      }
      default:
      badtype:
        upk_error(L, "EINVAL", "%s: parameter %d: cannot bind a %s (use nil, sql.null, a boolean, a number, a string or sql.binary(s))",
                  fn, i + 1, luaL_typename(L, idx));
        return;
    }
    SQLRETURN rc = SQLBindParameter(st->h, (SQLUSMALLINT)(i + 1), SQL_PARAM_INPUT, ctype, sqltype, size,
                                    0, p->data, buflen, &p->ind);
    if (!SQL_SUCCEEDED(rc)) sql_fail(L, SQL_HANDLE_STMT, st->h, fn, st->conn->label);
  }
}

/* Whether another column than skip is called name already. */
static int name_taken(Stmt *st, int skip, const char *name) {
  for (int i = 0; i < st->ncols; i++)
    if (i != skip && st->cols[i].name && strcmp(st->cols[i].name, name) == 0) return 1;
  return 0;
}

/*
** Give a column whose name an earlier column has already the key
** "<name>_2" (or _3, ...: the first free one), keeping the driver's name
** as its label: SELECT * over a join keeps both ids.
*/
static void unique_names(lua_State *L, Stmt *st, const char *fn) {
  for (int i = 1; i < st->ncols; i++) {
    Col *col = &st->cols[i];
    int dup = 0;
    for (int j = 0; j < i && !dup; j++) dup = strcmp(st->cols[j].name, col->name) == 0;
    if (!dup) continue;
    size_t n = strlen(col->name) + 24;
    char *key = malloc(n);
    if (!key) upk_error(L, "ENOMEM", "%s: out of memory", fn);
    for (int k = 2;; k++) {
      snprintf(key, n, "%s_%d", col->name, k);
      if (!name_taken(st, i, key)) break;
    }
    col->label = col->name;
    col->name = key;
  }
}

/* Set up the columns of the result set just opened. */
static void describe(lua_State *L, Stmt *st, int sizes, const char *fn) {
  SQLSMALLINT n = 0;
  free_cols(st);
  if (!SQL_SUCCEEDED(SQLNumResultCols(st->h, &n)))
    sql_fail(L, SQL_HANDLE_STMT, st->h, fn, st->conn->label);
  if (n <= 0) { st->cursor = 0; return; }
  st->cursor = 1;
  st->cols = calloc((size_t)n, sizeof *st->cols);
  if (!st->cols) upk_error(L, "ENOMEM", "%s: out of memory", fn);
  st->ncols = n;
  SQLLEN rowwidth = 0;
  for (int i = 0; i < n; i++) {
    Col *col = &st->cols[i];
    SQLWCHAR name[512];
    SQLSMALLINT namelen = 0;
    SQLRETURN rc = SQLDescribeColW(st->h, (SQLUSMALLINT)(i + 1), name, 512, &namelen, &col->sqltype,
                                   &col->size, &col->digits, &col->nullable);
    if (!SQL_SUCCEEDED(rc)) sql_fail(L, SQL_HANDLE_STMT, st->h, fn, st->conn->label);
    if (namelen > 511) namelen = 511;
    Buf b = {0};
    if (!utf16_append_utf8(&b, name, (size_t)namelen) || !buf_add(&b, "", 1)) {
      buf_free(&b);
      upk_error(L, "ENOMEM", "%s: out of memory", fn);
    }
    col->name = b.p;
    switch (col->sqltype) {
      case SQL_TINYINT: case SQL_SMALLINT: case SQL_INTEGER: case SQL_BIGINT:
        col->kind = K_INT; col->ctype = SQL_C_SBIGINT; col->width = sizeof(SQLBIGINT);
        break;
      case SQL_REAL: case SQL_FLOAT: case SQL_DOUBLE:
        col->kind = K_DOUBLE; col->ctype = SQL_C_DOUBLE; col->width = sizeof(double);
        break;
      case SQL_BIT:
        col->kind = K_BOOL; col->ctype = SQL_C_BIT; col->width = 1;
        break;
      case SQL_DECIMAL: case SQL_NUMERIC:
        col->kind = K_ASCII; col->ctype = SQL_C_CHAR;
        col->width = (SQLLEN)(col->size > 125 ? col->size + 3 : 128);
        col->islong = col->size == 0 || col->size > LONG_TEXT;
        break;
      case SQL_TYPE_DATE: case SQL_DATE:
        col->kind = K_DATE; col->ctype = SQL_C_TYPE_DATE; col->width = sizeof(SQL_DATE_STRUCT);
        break;
      case SQL_TYPE_TIMESTAMP: case SQL_TIMESTAMP:
        col->kind = K_TIMESTAMP; col->ctype = SQL_C_TYPE_TIMESTAMP; col->width = sizeof(SQL_TIMESTAMP_STRUCT);
        break;
      case SQL_BINARY: case SQL_VARBINARY: case SQL_LONGVARBINARY:
        col->kind = K_BINARY; col->ctype = SQL_C_BINARY;
        col->islong = sizes == SIZES_NONE || col->sqltype == SQL_LONGVARBINARY || col->size == 0 || col->size > LONG_BINARY;
        col->width = (SQLLEN)col->size;
        break;
      default:
        col->kind = K_TEXT; col->ctype = SQL_C_WCHAR;
        col->islong = sizes == SIZES_NONE || (sizes == SIZES_PG && col->size >= 255) ||
                      col->sqltype == SQL_LONGVARCHAR || col->sqltype == SQL_WLONGVARCHAR ||
                      col->size == 0 || col->size > LONG_TEXT;
        col->width = (SQLLEN)((col->size * 2 + 1) * sizeof(SQLWCHAR));
        break;
    }
    if (col->islong) {
      col->width = LONG_BIND;
      st->haslong = 1;
    }
    rowwidth += col->width + (SQLLEN)sizeof(SQLLEN);
  }
  unique_names(L, st, fn);
  SQLULEN rows = (SQLULEN)(ROWBUF_BYTES / (rowwidth ? rowwidth : 1));
  /* A driver that cannot read a value of any row of a block (SQLite's) fetches such tables a row at a time. */
  st->arraysize = rows < 1 || (st->haslong && !st->conn->gd_block) ? 1 : rows > MAX_ARRAY ? MAX_ARRAY : rows;
  for (int i = 0; i < n; i++) {
    Col *col = &st->cols[i];
    col->cap = (size_t)col->width * st->arraysize;
    col->buf = malloc(col->cap ? col->cap : 1);
    col->ind = malloc(st->arraysize * sizeof(SQLLEN));
    if (!col->buf || !col->ind) upk_error(L, "ENOMEM", "%s: out of memory", fn);
  }
  SQLSetStmtAttr(st->h, SQL_ATTR_ROW_BIND_TYPE, (SQLPOINTER)SQL_BIND_BY_COLUMN, 0);
  SQLSetStmtAttr(st->h, SQL_ATTR_ROW_ARRAY_SIZE, (SQLPOINTER)st->arraysize, 0);
  SQLSetStmtAttr(st->h, SQL_ATTR_ROWS_FETCHED_PTR, &st->fetched, 0);
  for (int i = 0; i < n; i++) {
    Col *col = &st->cols[i];
    if (!SQL_SUCCEEDED(SQLBindCol(st->h, (SQLUSMALLINT)(i + 1), col->ctype, col->buf, col->width, col->ind)))
      sql_fail(L, SQL_HANDLE_STMT, st->h, fn, st->conn->label);
  }
}


/*
** Send SQL text s[0..n) (UTF-8) to execute (or prepare). The text goes as
** UTF-16 through the wide functions, except to SQLite, whose driver takes
** UTF-8 as is but mangles characters outside the BMP in wide SQL text.
** *bad is set when s is not valid UTF-8 (then nothing is sent).
*/
static SQLRETURN send_sql(Conn *c, SQLHSTMT h, Buf *w, const char *s, size_t n, int prepare, int *bad) {
  if (!utf8_to_utf16(w, s, n, bad)) return SQL_ERROR;
  SQLRETURN rc;
  c->active = h;
  if (c->sizes == SIZES_NONE) {
    rc = prepare ? SQLPrepare(h, (SQLCHAR *)s, (SQLINTEGER)n) : SQLExecDirect(h, (SQLCHAR *)s, (SQLINTEGER)n);
  } else {
    SQLINTEGER units = (SQLINTEGER)(w->n / sizeof(SQLWCHAR));
    rc = prepare ? SQLPrepareW(h, (SQLWCHAR *)w->p, units) : SQLExecDirectW(h, (SQLWCHAR *)w->p, units);
  }
  c->active = NULL;
  return rc;
}

/* send_sql for the Lua string at idx; raises EINVAL or ENOMEM before sending. */
static SQLRETURN send_arg(lua_State *L, Conn *c, SQLHSTMT h, Buf *w, int idx, int prepare, const char *fn) {
  size_t n;
  const char *s = luaL_checklstring(L, idx, &n);
  int bad = 0;
  SQLRETURN rc = send_sql(c, h, w, s, n, prepare, &bad);
  if (bad) upk_error(L, "EINVAL", "%s: the SQL text is not valid UTF-8", fn);
  if (rc == SQL_ERROR && !w->p) upk_error(L, "ENOMEM", "%s: out of memory", fn);
  return rc;
}

/*
** Execute the statement: sql at sqlidx (0 when prepared), parameters at
** first..last. Opens the first result set, if any. Returns rows affected
** (-1 for a result set). The statement's user value at si is the connection.
*/
static lua_Integer run(lua_State *L, Stmt *st, int si, int sqlidx, int first, int last, const char *fn) {
  close_cursor(st);
  bind_params(L, st, first, last, fn);
  SQLRETURN rc;
  Conn *c = st->conn;
  if (sqlidx) {
    rc = send_arg(L, c, st->h, &st->w, sqlidx, 0, fn);
  } else {
    c->active = st->h;
    rc = SQLExecute(st->h);
  }
  c->active = NULL;
  if (rc == SQL_NO_DATA) return 0;
  if (!SQL_SUCCEEDED(rc)) sql_fail(L, SQL_HANDLE_STMT, st->h, fn, c->label);
  lua_getiuservalue(L, si, 1);
  int ci = lua_gettop(L);
  if (rc == SQL_SUCCESS_WITH_INFO && notify(L, ci, SQL_HANDLE_STMT, st->h)) {
    close_cursor(st);
    lua_error(L);
  }
  lua_pop(L, 1);
  describe(L, st, c->sizes, fn);
  if (st->cursor) return -1;
  SQLLEN count = 0;
  SQLRowCount(st->h, &count);
  return count;
}

/*
** Consume every remaining result set of the statement (SQLMoreResults),
** giving informational messages to on_message. Returns the sum of the
** rows affected, counting from initial.
*/
static lua_Integer drain(lua_State *L, Stmt *st, int si, lua_Integer initial, const char *fn) {
  lua_Integer total = initial > 0 ? initial : 0;
  lua_getiuservalue(L, si, 1);
  int ci = lua_gettop(L);
  for (;;) {
    if (st->cursor) SQLFreeStmt(st->h, SQL_UNBIND);
    free_cols(st);
    st->conn->active = st->h;
    SQLRETURN rc = SQLMoreResults(st->h);
    st->conn->active = NULL;
    if (rc == SQL_NO_DATA) break;
    if (!SQL_SUCCEEDED(rc)) sql_fail(L, SQL_HANDLE_STMT, st->h, fn, st->conn->label);
    if (rc == SQL_SUCCESS_WITH_INFO && notify(L, ci, SQL_HANDLE_STMT, st->h)) {
      close_cursor(st);
      lua_error(L);
    }
    SQLSMALLINT n = 0;
    SQLNumResultCols(st->h, &n);
    if (n == 0) {
      SQLLEN count = 0;
      SQLRowCount(st->h, &count);
      if (count > 0) total += count;
    }
    st->cursor = n > 0;
  }
  st->cursor = 0;
  lua_pop(L, 1);
  return total;
}

/* Bytes of the terminator the driver writes after a value of col. */
static SQLLEN term(const Col *col) {
  return col->ctype == SQL_C_WCHAR ? (SQLLEN)sizeof(SQLWCHAR) : col->ctype == SQL_C_CHAR ? 1 : 0;
}

/* Whether a value with indicator ind did not fit col's bound buffer. */
static int overflowed(const Col *col, SQLLEN ind) {
  return ind == SQL_NO_TOTAL || (ind != SQL_NULL_DATA && ind > col->width - term(col));
}

/* Read col's value of the current row whole, in pieces, into col->big: FETCH_*. */
static int get_long(Stmt *st, int i) {
  Col *col = &st->cols[i];
  size_t t = (size_t)term(col);
  Buf *b = &col->big;
  size_t off = 0;
  for (;;) {
    if (!buf_reserve(b, off + PIECE)) return FETCH_NOMEM;
    SQLLEN ind = 0;
    size_t avail = b->cap - off;
    if (t == sizeof(SQLWCHAR)) avail &= ~(size_t)1;
    SQLRETURN rc = SQLGetData(st->h, (SQLUSMALLINT)(i + 1), col->ctype, b->p + off, (SQLLEN)avail, &ind);
    if (rc == SQL_NO_DATA) break;
    if (!SQL_SUCCEEDED(rc)) return FETCH_SQL;
    if (ind == SQL_NULL_DATA) { col->bigind = SQL_NULL_DATA; return FETCH_OK; }
    if (ind == SQL_NO_TOTAL || (size_t)ind > avail - t) {
      off += avail - t;
      continue;
    }
    off += (size_t)ind;
    break;
  }
  col->bigind = (SQLLEN)off;
  return FETCH_OK;
}

/*
** Read again, whole, the values of the current row that did not fit their
** bound buffers (positioning the block's cursor on the row first): FETCH_*.
*/
static int get_overflow(Stmt *st) {
  int positioned = st->arraysize == 1;
  for (int i = 0; i < st->ncols; i++) {
    Col *col = &st->cols[i];
    if (!col->islong || !overflowed(col, col->ind[st->pos])) continue;
    if (!positioned) {
      if (!SQL_SUCCEEDED(SQLSetPos(st->h, (SQLSETPOSIROW)(st->pos + 1), SQL_POSITION, SQL_LOCK_NO_CHANGE)))
        return FETCH_SQL;
      positioned = 1;
    }
    int fail = get_long(st, i);
    if (fail != FETCH_OK) return fail;
  }
  return FETCH_OK;
}

/* Whether a value of a column with a bounded size was cut short in the block. */
static int truncated(Stmt *st) {
  for (int i = 0; i < st->ncols; i++) {
    Col *col = &st->cols[i];
    if (col->islong || (col->ctype != SQL_C_WCHAR && col->ctype != SQL_C_CHAR && col->ctype != SQL_C_BINARY)) continue;
    for (SQLULEN r = 0; r < st->fetched; r++)
      if (overflowed(col, col->ind[r])) return 1;
  }
  return 0;
}

/*
** Advance to the next row of the open result set: 1, 0 at its end, or -1
** with *fail set to the FETCH_* reason (diagnostics stay on the handle).
*/
static int fetch_next(Stmt *st, int *fail) {
  if (!st->cursor) return 0;
  if (st->pos + 1 < st->fetched) {
    st->pos++;
  } else {
    SQLRETURN rc = SQLFetch(st->h);
    if (rc == SQL_NO_DATA) {
      end_cursor(st);
      return 0;
    }
    if (!SQL_SUCCEEDED(rc)) { *fail = FETCH_SQL; return -1; }
    if (st->fetched == 0) {
      end_cursor(st);
      return 0;
    }
    st->pos = 0;
    if (truncated(st)) { *fail = FETCH_TRUNC; return -1; }
  }
  if (st->haslong && (*fail = get_overflow(st)) != FETCH_OK) return -1;
  return 1;
}

/* Raise the error of a failed fetch (FETCH_*) on statement st. */
static int fetch_error(lua_State *L, Stmt *st, int fail, const char *fn) {
  if (fail == FETCH_NOMEM) return upk_error(L, "ENOMEM", "%s: out of memory", fn);
  if (fail == FETCH_TRUNC)
    return upk_error(L, "01004", "%s: %s: a value is longer than its column's declared size", fn, st->conn->label);
  return sql_fail(L, SQL_HANDLE_STMT, st->h, fn, st->conn->label);
}

/* Advance to the next row of the open result set; 0 at its end. */
static int next_row(lua_State *L, Stmt *st, const char *fn) {
  int fail = FETCH_OK;
  st->conn->active = st->h;
  int r = fetch_next(st, &fail);
  st->conn->active = NULL;
  if (r < 0) fetch_error(L, st, fail, fn);
  return r;
}

/* The value of column col in the current row: its indicator and bytes. */
static SQLLEN cell(Stmt *st, Col *col, const char **data) {
  SQLLEN ind = col->ind[st->pos];
  *data = col->buf + st->pos * (size_t)col->width;
  if (col->islong && overflowed(col, ind)) {
    *data = col->big.p;
    return col->bigind;
  }
  return ind;
}

/* Format a date or timestamp as ISO 8601 into out; returns its length. */
static size_t iso8601(const Col *col, const char *data, char *out, size_t n) {
  if (col->kind == K_DATE) {
    SQL_DATE_STRUCT d;
    memcpy(&d, data, sizeof d);
    return (size_t)snprintf(out, n, "%04d-%02u-%02u", d.year, d.month, d.day);
  }
  SQL_TIMESTAMP_STRUCT t;
  memcpy(&t, data, sizeof t);
  int k = snprintf(out, n, "%04d-%02u-%02uT%02u:%02u:%02u", t.year, t.month, t.day, t.hour, t.minute, t.second);
  if (t.fraction) {
    k += snprintf(out + k, n - (size_t)k, ".%09u", (unsigned)t.fraction);
    while (out[k - 1] == '0') k--;
    out[k] = 0;
  }
  return (size_t)k;
}

/*
** Replace the decimal text on top of the stack with its Lua number: an
** integer when the text is one and fits ("12"), else the nearest float
** ("12.50", "1e40"); NaN and (-)Infinity as such; anything else stays text.
*/
static void push_decimal(lua_State *L) {
  const char *s = lua_tostring(L, -1);
  if (lua_stringtonumber(L, s)) {
    lua_remove(L, -2);
    return;
  }
  if (strcmp(s, "NaN") == 0) lua_pushnumber(L, (lua_Number)NAN);
  else if (strcmp(s, "Infinity") == 0) lua_pushnumber(L, (lua_Number)HUGE_VAL);
  else if (strcmp(s, "-Infinity") == 0) lua_pushnumber(L, -(lua_Number)HUGE_VAL);
  else return;
  lua_remove(L, -2);
}

/* Push the value of column col of the current row. */
static void push_cell(lua_State *L, Stmt *st, Col *col) {
  const char *p;
  SQLLEN ind = cell(st, col, &p);
  if (ind == SQL_NULL_DATA) {
    lua_pushlightuserdata(L, NULL);
    return;
  }
  switch (col->kind) {
    case K_INT: { SQLBIGINT v; memcpy(&v, p, sizeof v); lua_pushinteger(L, (lua_Integer)v); break; }
    case K_DOUBLE: { double v; memcpy(&v, p, sizeof v); lua_pushnumber(L, v); break; }
    case K_BOOL: lua_pushboolean(L, *(const unsigned char *)p != 0); break;
    case K_DATE: case K_TIMESTAMP: {
      char out[64];
      size_t n = iso8601(col, p, out, sizeof out);
      lua_pushlstring(L, out, n);
      break;
    }
    case K_TEXT:
      st->s.n = 0;
      if (!utf16_append_utf8(&st->s, (const SQLWCHAR *)p, (size_t)ind / sizeof(SQLWCHAR)))
        upk_error(L, "ENOMEM", "fetch: out of memory");
      lua_pushlstring(L, st->s.p, st->s.n);
      break;
    case K_ASCII:
      lua_pushlstring(L, p, (size_t)ind);
      if (st->conn->decimal_numbers) push_decimal(L);
      break;
    default:
      lua_pushlstring(L, p, (size_t)ind);
      break;
  }
}

static void push_row(lua_State *L, Stmt *st) {
  lua_createtable(L, 0, st->ncols);
  for (int i = 0; i < st->ncols; i++) {
    push_cell(L, st, &st->cols[i]);
    lua_setfield(L, -2, st->cols[i].name);
  }
}

/* ---------------------------------------------------------------------- */
/* Connection methods */

/*
** db:exec(sql, ...) -> rows affected; every result set of the batch is
** consumed, informational messages go to on_message.
*/
static int conn_exec(lua_State *L) {
  checkconn(L, 1, "db:exec");
  luaL_checkstring(L, 2);
  int last = lua_gettop(L);
  Stmt *st = new_stmt(L, 1, checkconn(L, 1, "db:exec"), "db:exec");
  int si = lua_gettop(L);
  lua_Integer n = run(L, st, si, 2, 3, last, "db:exec");
  n = drain(L, st, si, n, "db:exec");
  stmt_release(L, st);
  lua_pushinteger(L, n);
  return 1;
}

/* db:open(sql, ...) -> statement with its first result set open */
static int conn_open(lua_State *L) {
  Conn *c = checkconn(L, 1, "db:open");
  luaL_checkstring(L, 2);
  int last = lua_gettop(L);
  Stmt *st = new_stmt(L, 1, c, "db:open");
  run(L, st, lua_gettop(L), 2, 3, last, "db:open");
  return 1;
}

/* db:prepare(sql) -> statement */
static int conn_prepare(lua_State *L) {
  Conn *c = checkconn(L, 1, "db:prepare");
  luaL_checkstring(L, 2);
  Stmt *st = new_stmt(L, 1, c, "db:prepare");
  if (!SQL_SUCCEEDED(send_arg(L, c, st->h, &st->w, 2, 1, "db:prepare")))
    sql_fail(L, SQL_HANDLE_STMT, st->h, "db:prepare", c->label);
  st->prepared = 1;
  return 1;
}

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
**   odbc_version =, database =, user =, search_escape =, connection = }
*/
static int conn_info(lua_State *L) {
  Conn *c = checkconn(L, 1, "db:info");
  lua_createtable(L, 0, 9);
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
                                   (SQLPOINTER)(on ? SQL_AUTOCOMMIT_ON : SQL_AUTOCOMMIT_OFF), 0);
  if (!SQL_SUCCEEDED(rc)) sql_fail(L, SQL_HANDLE_DBC, c->dbc, fn, c->label);
}

/* db:begin(): start a transaction (autocommit off until commit or rollback) */
static int conn_begin(lua_State *L) {
  Conn *c = checkconn(L, 1, "db:begin");
  if (c->intrans) return upk_error(L, "EBUSY", "db:begin: %s: a transaction is already open", c->label);
  autocommit(L, c, 0, "db:begin");
  c->intrans = 1;
  return 0;
}

static int endtran(lua_State *L, SQLSMALLINT how, const char *fn) {
  Conn *c = how == SQL_ROLLBACK ? checklive(L, 1, fn) : checkconn(L, 1, fn);
  load_discard(c);
  if (!c->intrans) return upk_error(L, "EINVAL", "%s: %s: no transaction is open", fn, c->label);
  SQLRETURN rc = SQLEndTran(SQL_HANDLE_DBC, c->dbc, how);
  if (!SQL_SUCCEEDED(rc)) {
    push_sqlerror(L, SQL_HANDLE_DBC, c->dbc, fn, c->label);
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
  lua_pushboolean(L, checkconn(L, 1, "db:in_transaction")->intrans);
  return 1;
}

/* db:cancel() -> true when a running statement was asked to stop */
static int conn_cancel(lua_State *L) {
  Conn *c = checklive(L, 1, "db:cancel");
  int did = 0;
  if (c->ld_running) did = SQL_SUCCEEDED(SQLCancel(c->ld_h));
  else if (c->active) did = SQL_SUCCEEDED(SQLCancel(c->active));
  lua_pushboolean(L, did);
  return 1;
}

/*
** db:catalog(kind, schema, table) -> statement over the ODBC catalog result:
** "tables" (schema and table are search patterns), "columns", "primary_keys",
** "statistics" (unique indexes).
*/
static int conn_catalog(lua_State *L) {
  static const char *const kinds[] = {"tables", "columns", "primary_keys", "statistics", NULL};
  Conn *c = checkconn(L, 1, "db:catalog");
  int kind = luaL_checkoption(L, 2, NULL, kinds);
  Stmt *st = new_stmt(L, 1, c, "db:catalog");
  int si = lua_gettop(L);
  SQLWCHAR *schema = NULL, *table = NULL;
  SQLSMALLINT sl = 0, tl = 0;
  SQLINTEGER units;
  if (lua_isstring(L, 3)) { schema = wide_arg(L, &st->w, 3, "db:catalog", &units); sl = (SQLSMALLINT)units; }
  if (lua_isstring(L, 4)) {
    table = wide_arg(L, &st->s, 4, "db:catalog", &units);
    tl = (SQLSMALLINT)units;
  }
  static SQLWCHAR tabletype[] = {'T', 'A', 'B', 'L', 'E', 0};
  SQLRETURN rc;
  switch (kind) {
    case 0: rc = SQLTablesW(st->h, NULL, 0, schema, sl, table, tl, tabletype, SQL_NTS); break;
    case 1: rc = SQLColumnsW(st->h, NULL, 0, schema, sl, table, tl, NULL, 0); break;
    case 2: rc = SQLPrimaryKeysW(st->h, NULL, 0, schema, sl, table, tl); break;
    default: rc = SQLStatisticsW(st->h, NULL, 0, schema, sl, table, tl, SQL_INDEX_UNIQUE, SQL_QUICK); break;
  }
  if (!SQL_SUCCEEDED(rc)) sql_fail(L, SQL_HANDLE_STMT, st->h, "db:catalog", c->label);
  describe(L, st, SIZES_NONE, "db:catalog");
  lua_settop(L, si);
  return 1;
}

/* db:connection_string() -> the full connection string (with its password) */
static int conn_connection_string(lua_State *L) {
  checkconn(L, 1, "db:connection_string");
  lua_getiuservalue(L, 1, 2);
  return 1;
}

/* db:on_message(fn or nil): set the callback for informational messages */
static int conn_on_message(lua_State *L) {
  checkconn(L, 1, "db:on_message");
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, 1);
  return 0;
}

/* db:close(): idempotent */
static int conn_close(lua_State *L) {
  Conn *c = luaL_checkudata(L, 1, CONN_MT);
  if (c->dbc || c->env) upk_untrack(L, c);
  conn_release(c);
  return 0;
}

/* tostring(db): the connection string without its password */
static int conn_tostring(lua_State *L) {
  Conn *c = luaL_checkudata(L, 1, CONN_MT);
  if (c->dbc) lua_pushfstring(L, "sql.Connection (%s)", c->label);
  else lua_pushliteral(L, "sql.Connection (closed)");
  return 1;
}

/* ---------------------------------------------------------------------- */
/* Statement methods */

/* st:execute(...) -> rows affected (-1 when it opened a result set) */
static int stmt_execute(lua_State *L) {
  Stmt *st = checkstmt(L, 1, "st:execute");
  if (!st->prepared) return upk_error(L, "EINVAL", "st:execute: only a prepared statement runs again");
  lua_Integer n = run(L, st, 1, 0, 2, lua_gettop(L), "st:execute");
  if (n >= 0) n = drain(L, st, 1, n, "st:execute");
  lua_pushinteger(L, n);
  return 1;
}

/* st:fetch() -> row keyed by column name, or nil after the last */
static int stmt_fetch(lua_State *L) {
  Stmt *st = checkstmt(L, 1, "st:fetch");
  if (!next_row(L, st, "st:fetch")) return 0;
  push_row(L, st);
  return 1;
}

/*
** st:columns() -> { { name =, type =, sql_type =, type_name =, size =,
**   digits =, nullable = }, ... } in result order
*/
static int stmt_columns(lua_State *L) {
  Stmt *st = checkstmt(L, 1, "st:columns");
  lua_createtable(L, st->ncols, 0);
  for (int i = 0; i < st->ncols; i++) {
    Col *col = &st->cols[i];
    lua_createtable(L, 0, 8);
    lua_pushstring(L, col->name); lua_setfield(L, -2, "name");
    lua_pushstring(L, col->label ? col->label : col->name); lua_setfield(L, -2, "label");
    lua_pushstring(L, kind_names[col->kind]); lua_setfield(L, -2, "type");
    lua_pushinteger(L, col->sqltype); lua_setfield(L, -2, "sql_type");
    lua_pushinteger(L, (lua_Integer)col->size); lua_setfield(L, -2, "size");
    lua_pushinteger(L, col->digits); lua_setfield(L, -2, "digits");
    lua_pushboolean(L, col->nullable != SQL_NO_NULLS); lua_setfield(L, -2, "nullable");
    SQLWCHAR tn[128];
    SQLSMALLINT len = 0;
    if (SQL_SUCCEEDED(SQLColAttributeW(st->h, (SQLUSMALLINT)(i + 1), SQL_DESC_TYPE_NAME, tn, sizeof tn, &len, NULL))) {
      st->s.n = 0;
      if (utf16_append_utf8(&st->s, tn, (size_t)len / sizeof(SQLWCHAR))) {
        lua_pushlstring(L, st->s.p, st->s.n);
        lua_setfield(L, -2, "type_name");
      }
    }
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static int put_u32(Buf *b, uint32_t v) {
  unsigned char x[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
  return buf_add(b, x, 4);
}

static int put_u64(Buf *b, uint64_t v) {
  unsigned char x[8];
  for (int i = 0; i < 8; i++) x[i] = (unsigned char)(v >> (8 * i));
  return buf_add(b, x, 8);
}

static uint32_t get_u32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* Append the current row to b in the backup's value encoding. */
static int encode_row(Stmt *st, Buf *b) {
  for (int i = 0; i < st->ncols; i++) {
    Col *col = &st->cols[i];
    const char *p;
    SQLLEN ind = cell(st, col, &p);
    int ok = 1;
    unsigned char tag;
    if (ind == SQL_NULL_DATA) { tag = V_NULL; ok = buf_add(b, &tag, 1); continue; }
    switch (col->kind) {
      case K_INT: { SQLBIGINT v; memcpy(&v, p, 8); tag = V_INT; ok = buf_add(b, &tag, 1) && put_u64(b, (uint64_t)v); break; }
      case K_DOUBLE: { uint64_t v; memcpy(&v, p, 8); tag = V_DOUBLE; ok = buf_add(b, &tag, 1) && put_u64(b, v); break; }
      case K_BOOL: { unsigned char v[2] = {V_BOOL, *(const unsigned char *)p != 0}; ok = buf_add(b, v, 2); break; }
      case K_DATE: case K_TIMESTAMP: {
        char out[64];
        size_t n = iso8601(col, p, out, sizeof out);
        tag = V_TEXT;
        ok = buf_add(b, &tag, 1) && put_u32(b, (uint32_t)n) && buf_add(b, out, n);
        break;
      }
      case K_TEXT: {
        /* converted in place after the tag and a length filled in after */
        size_t at = b->n + 5;
        tag = V_TEXT;
        ok = buf_add(b, &tag, 1) && put_u32(b, 0) &&
             utf16_append_utf8(b, (const SQLWCHAR *)p, (size_t)ind / sizeof(SQLWCHAR));
        if (!ok) break;
        size_t n = b->n - at;
        char *t = b->p + at;
        if (col->isotext && n >= 13 && t[4] == '-' && t[7] == '-' && t[10] == ' ') t[10] = 'T';  /* YYYY-MM-DD HH */
        unsigned char *u = (unsigned char *)t - 4;
        u[0] = (unsigned char)n; u[1] = (unsigned char)(n >> 8); u[2] = (unsigned char)(n >> 16); u[3] = (unsigned char)(n >> 24);
        break;
      }
      default:
        tag = col->kind == K_BINARY ? V_BINARY : V_TEXT;
        ok = buf_add(b, &tag, 1) && put_u32(b, (uint32_t)ind) && buf_add(b, p, (size_t)ind);
        break;
    }
    if (!ok) return 0;
  }
  return 1;
}

/*
** Fetch up to maxrows rows (or about maxbytes) into b as a data block of
** the logical backup: u32 row count, then each row's values (see
** docs/backup-format.md). Never raises: returns FETCH_OK or an FETCH_* failure;
** *rows is 0 at the end of the result set.
*/
static int fetch_block(Stmt *st, Buf *b, lua_Integer maxrows, lua_Integer maxbytes, uint32_t *rows) {
  int fail = FETCH_OK;
  b->n = 0;
  *rows = 0;
  if (!put_u32(b, 0)) return FETCH_NOMEM;
  while ((lua_Integer)*rows < maxrows && (lua_Integer)b->n < maxbytes && !upk_interrupted) {
    int more = fetch_next(st, &fail);
    if (more <= 0) break;
    if (!encode_row(st, b)) { fail = FETCH_NOMEM; break; }
    (*rows)++;
  }
  unsigned char *p = (unsigned char *)b->p;
  p[0] = (unsigned char)*rows; p[1] = (unsigned char)(*rows >> 8);
  p[2] = (unsigned char)(*rows >> 16); p[3] = (unsigned char)(*rows >> 24);
  return fail;
}

static void *prefetch_main(void *arg) {
  Stmt *st = arg;
  st->pf_fail = fetch_block(st, &st->pf, st->pf_maxrows, st->pf_maxbytes, &st->pf_rows);
  return NULL;
}

/* Wait for the statement's prefetch thread, if one runs. */
static void prefetch_join(Stmt *st) {
  if (!st->pf_running) return;
  pthread_join(st->pf_thread, NULL);
  st->pf_running = 0;
  if (st->conn && st->conn->ahead == st) st->conn->ahead = NULL;
}

/*
** st:dump(max_rows [, max_bytes [, ahead [, timestamps]]]) -> block, rows; or nil at the end.
** The block is the logical backup's data payload: u32 row count, then each
** row's values (see docs/backup-format.md). timestamps has a character per
** column, 'T' where the column is the text of a timestamp ("YYYY-MM-DD
** HH:MM:SS", as PostgreSQL writes it): its space becomes the 'T' of ISO
** 8601 (other values of such a column stay as they are). With ahead, a thread fetches
** the next block while the caller handles this one (one such statement per
** connection at a time); the statement then serves only st:dump and close.
*/
static int stmt_dump(lua_State *L) {
  Stmt *st = luaL_checkudata(L, 1, STMT_MT);
  prefetch_join(st);
  checkopen(L, 1, "st:dump");
  if (st->pf_text) return upk_error(L, "EBUSY", "st:dump: the statement has a block started by st:start_block");
  lua_Integer maxrows = luaL_checkinteger(L, 2);
  lua_Integer maxbytes = luaL_optinteger(L, 3, 4 << 20);
  int ahead = lua_toboolean(L, 4);
  size_t tslen = 0;
  const char *ts = luaL_optlstring(L, 5, "", &tslen);
  for (int i = 0; i < st->ncols; i++) st->cols[i].isotext = (size_t)i < tslen && ts[i] == 'T';
  uint32_t rows = 0;
  int fail;
  if (st->pf_rows || st->pf_fail) {  /* the block fetched ahead */
    Buf t = st->s;
    st->s = st->pf;
    st->pf = t;
    rows = st->pf_rows;
    fail = st->pf_fail;
    st->pf_rows = 0;
    st->pf_fail = FETCH_OK;
  } else {
    st->conn->active = st->h;
    fail = fetch_block(st, &st->s, maxrows, maxbytes, &rows);
    st->conn->active = NULL;
  }
  if (fail != FETCH_OK) return fetch_error(L, st, fail, "st:dump");
  upk_check_interrupt(L, "st:dump");
  if (rows == 0) return 0;
  lua_pushlstring(L, st->s.p, st->s.n);
  lua_pushinteger(L, rows);
  if (st->s.cap > (8u << 20)) buf_free(&st->s);
  if (st->pf.cap > (8u << 20)) buf_free(&st->pf);
  if (ahead && st->cursor && !st->conn->ahead) {
    st->pf_maxrows = maxrows;
    st->pf_maxbytes = maxbytes;
    if (pthread_create(&st->pf_thread, NULL, prefetch_main, st) == 0) {
      st->pf_running = 1;
      st->conn->ahead = st;
    }
  }
  return 2;
}

/*
** Text blocks (PostgreSQL's logical backup, format version 2): a query that
** returns one row of two columns, a row count and the text of those rows,
** runs in a thread while the caller writes the block before it; the text
** crosses ODBC as SQL_C_BINARY, the server's UTF-8 bytes untouched, one
** value for thousands of rows.
*/
static void *textblock_main(void *arg) {
  Stmt *st = arg;
  Buf *b = &st->pf;
  SQLHSTMT h = st->h;
  b->n = 0;
  st->pf_rows = 0;
  st->pf_fail = FETCH_SQL;
  SQLRETURN rc = SQLExecDirectW(h, (SQLWCHAR *)st->w.p, (SQLINTEGER)(st->w.n / sizeof(SQLWCHAR)));
  if (!SQL_SUCCEEDED(rc)) return NULL;
  rc = SQLFetch(h);
  if (rc == SQL_NO_DATA) { st->pf_fail = FETCH_OK; return NULL; }
  if (!SQL_SUCCEEDED(rc)) return NULL;
  SQLBIGINT count = 0;
  SQLLEN ind = 0;
  if (!SQL_SUCCEEDED(SQLGetData(h, 1, SQL_C_SBIGINT, &count, 0, &ind))) return NULL;
  if (ind == SQL_NULL_DATA || count <= 0) { st->pf_fail = FETCH_OK; return NULL; }
  if (count > (SQLBIGINT)UINT32_MAX) { st->pf_fail = FETCH_TRUNC; return NULL; }
  if (!put_u32(b, (uint32_t)count)) { st->pf_fail = FETCH_NOMEM; return NULL; }
  /*
  ** The length first, then the whole value in one piece: psqlODBC ends
  ** each piece of a text value read as binary with a NUL of its own.
  */
  char probe[1];
  rc = SQLGetData(h, 2, SQL_C_BINARY, probe, 0, &ind);
  if (!SQL_SUCCEEDED(rc) || ind == SQL_NULL_DATA || ind == SQL_NO_TOTAL || ind < 0) return NULL;
  size_t len = (size_t)ind;
  if (!buf_reserve(b, b->n + len + 1)) { st->pf_fail = FETCH_NOMEM; return NULL; }
  if (len > 0) {
    rc = SQLGetData(h, 2, SQL_C_BINARY, b->p + b->n, (SQLLEN)(len + 1), &ind);
    if (!SQL_SUCCEEDED(rc) || ind != (SQLLEN)len) return NULL;
    b->n += len;
  }
  st->pf_rows = (uint32_t)count;
  st->pf_fail = FETCH_OK;
  return NULL;
}

/* db:statement() -> a statement with no SQL yet, for st:start_block */
static int conn_statement(lua_State *L) {
  Conn *c = checkconn(L, 1, "db:statement");
  new_stmt(L, 1, c, "db:statement");
  return 1;
}

/*
** st:start_block(sql): run sql, which returns one row (count, text), in a
** thread; st:finish_block() waits for it. One such statement per
** connection runs at a time, and the connection serves nothing else until
** then.
*/
static int stmt_start_block(lua_State *L) {
  Stmt *st = checkstmt(L, 1, "st:start_block");
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  if (st->conn->ahead) return upk_error(L, "EBUSY", "st:start_block: the connection is busy with another statement");
  close_cursor(st);
  int bad = 0;
  if (!utf8_to_utf16(&st->w, s, n, &bad))
    return upk_error(L, bad ? "EINVAL" : "ENOMEM", "st:start_block: %s", bad ? "the SQL text is not valid UTF-8" : "out of memory");
  st->pf_text = 1;
  st->conn->active = st->h;
  if (pthread_create(&st->pf_thread, NULL, textblock_main, st) == 0) {
    st->pf_running = 1;
    st->conn->ahead = st;
  } else {
    textblock_main(st);
  }
  return 0;
}

typedef struct Writer Writer;
static void write_record(lua_State *L, Writer *w, int type, const char *payload, size_t n);
static Writer *checkwriter_at(lua_State *L, int idx);

/*
** st:finish_block() -> block, rows: the u32 row count then the text; nil when no rows.
** st:finish_block(w) -> rows: the block goes to the backup writer w as an
** "R" record (when it has rows) without becoming a Lua string.
*/
static int stmt_finish_block(lua_State *L) {
  Stmt *st = luaL_checkudata(L, 1, STMT_MT);
  Writer *w = lua_isnoneornil(L, 2) ? NULL : checkwriter_at(L, 2);
  prefetch_join(st);
  if (!st->pf_text) return upk_error(L, "EINVAL", "st:finish_block: no block was started");
  st->pf_text = 0;
  if (st->conn && st->conn->active == st->h) st->conn->active = NULL;
  int fail = st->pf_fail;
  uint32_t rows = st->pf_rows;
  st->pf_fail = FETCH_OK;
  st->pf_rows = 0;
  checkopen(L, 1, "st:finish_block");
  if (fail == FETCH_TRUNC) return upk_error(L, "EINVAL", "st:finish_block: more than 2^32 rows in one block");
  if (fail == FETCH_NOMEM) {
    SQLFreeStmt(st->h, SQL_CLOSE);
    return upk_error(L, "ENOMEM", "st:finish_block: out of memory");
  }
  if (fail != FETCH_OK) {
    push_sqlerror(L, SQL_HANDLE_STMT, st->h, "st:finish_block", st->conn->label);
    SQLFreeStmt(st->h, SQL_CLOSE);
    return lua_error(L);
  }
  SQLFreeStmt(st->h, SQL_CLOSE);
  upk_check_interrupt(L, "st:finish_block");
  if (w) {
    if (rows) write_record(L, w, 'R', st->pf.p, st->pf.n);
    lua_pushinteger(L, rows);
  } else if (rows) {
    lua_pushlstring(L, st->pf.p, st->pf.n);
    lua_pushinteger(L, rows);
  }
  if (st->pf.cap > (16u << 20)) buf_free(&st->pf);
  return w ? 1 : rows ? 2 : 0;
}

/* st:close_cursor(): close the open result set, keep the statement */
static int stmt_close_cursor(lua_State *L) {
  Stmt *st = luaL_checkudata(L, 1, STMT_MT);
  if (st->h) close_cursor(st);
  return 0;
}

/* st:close(): idempotent; also __gc and __close */
static int stmt_close(lua_State *L) {
  Stmt *st = luaL_checkudata(L, 1, STMT_MT);
  stmt_release(L, st);
  return 0;
}

/* ---------------------------------------------------------------------- */
/* Restore: multi-row INSERT statements built from data blocks */

enum { D_GENERIC, D_POSTGRESQL, D_SQLITE, D_MSSQL };

static int add_hex(Buf *b, const unsigned char *p, size_t n) {
  if (!buf_reserve(b, b->n + 2 * n)) return 0;
  b->n = (size_t)(upk_hex(p, n, b->p + b->n) - b->p);
  return 1;
}

/*
** Append the SQL literal of the value at *pp (end e) to b; advance *pp.
** Returns 1, 0 when out of memory, -1 when the block is malformed.
*/
static int add_literal(Buf *b, const unsigned char **pp, const unsigned char *e, int dialect) {
  const unsigned char *p = *pp;
  if (p >= e) return -1;
  int tag = *p++;
  char num[64];
  int ok = 1;
  switch (tag) {
    case V_NULL: ok = buf_addstr(b, "NULL"); break;
    case V_INT:
      if (e - p < 8) return -1;
      snprintf(num, sizeof num, "%lld", (long long)(int64_t)get_u64(p));
      p += 8;
      ok = buf_addstr(b, num);
      break;
    case V_DOUBLE: {
      if (e - p < 8) return -1;
      uint64_t u = get_u64(p);
      double d;
      memcpy(&d, &u, 8);
      p += 8;
      if (isfinite(d)) { snprintf(num, sizeof num, "%.17g", d); ok = buf_addstr(b, num); }
      else if (dialect == D_POSTGRESQL)
        ok = buf_addstr(b, isnan(d) ? "'NaN'" : d > 0 ? "'Infinity'" : "'-Infinity'");
      else ok = buf_addstr(b, isnan(d) ? "NULL" : d > 0 ? "9e999" : "-9e999");
      break;
    }
    case V_BOOL:
      if (e - p < 1) return -1;
      if (dialect == D_POSTGRESQL) ok = buf_addstr(b, *p ? "TRUE" : "FALSE");
      else ok = buf_addstr(b, *p ? "1" : "0");
      p++;
      break;
    case V_TEXT: case V_BINARY: {
      if (e - p < 4) return -1;
      uint32_t n = get_u32(p);
      p += 4;
      if ((size_t)(e - p) < n) return -1;
      if (tag == V_BINARY) {
        if (dialect == D_POSTGRESQL) ok = buf_addstr(b, "'\\x") && add_hex(b, p, n) && buf_addstr(b, "'::bytea");
        else if (dialect == D_MSSQL) ok = buf_addstr(b, "0x") && add_hex(b, p, n);
        else ok = buf_addstr(b, "X'") && add_hex(b, p, n) && buf_addstr(b, "'");
      } else {
        ok = buf_addstr(b, dialect == D_MSSQL ? "N'" : "'") && buf_reserve(b, b->n + 2 * (size_t)n + 1);
        for (uint32_t i = 0; ok && i < n; i++) {
          if (p[i] == '\'') b->p[b->n++] = '\'';
          b->p[b->n++] = (char)p[i];
        }
        ok = ok && buf_addstr(b, "'");
      }
      p += n;
      break;
    }
    default: return -1;
  }
  *pp = p;
  return ok;
}

/* Run one statement of UTF-8 text on a private handle; 0 or raises. */
static void exec_text(lua_State *L, Conn *c, Buf *sqlb, Buf *w, const char *fn) {
  SQLHSTMT h;
  if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_STMT, c->dbc, &h)))
    sql_fail(L, SQL_HANDLE_DBC, c->dbc, fn, c->label);
  int bad = 0;
  SQLRETURN rc = send_sql(c, h, w, sqlb->p, sqlb->n, 0, &bad);
  if (bad || (rc == SQL_ERROR && !w->p)) {
    SQLFreeHandle(SQL_HANDLE_STMT, h);
    upk_error(L, bad ? "EINVAL" : "ENOMEM", "%s: %s", fn, bad ? "a value is not valid UTF-8" : "out of memory");
  }
  if (!SQL_SUCCEEDED(rc) && rc != SQL_NO_DATA) {
    push_sqlerror(L, SQL_HANDLE_STMT, h, fn, c->label);
    SQLFreeHandle(SQL_HANDLE_STMT, h);
    lua_error(L);
  }
  while (SQL_SUCCEEDED(SQLMoreResults(h))) {}
  SQLFreeHandle(SQL_HANDLE_STMT, h);
}

/*
** Append one value of a data block at *pp (end e) to b as a field of a
** PostgreSQL record inside an array element (the text of an array of
** records): text is quoted for the record ("), the quotes and backslashes
** of that escaped again for the array. NULL is an empty field. Returns 1, 0 when out of memory, -1 when the
** block is malformed.
*/
static int add_pg_field(Buf *b, const unsigned char **pp, const unsigned char *e) {
  const unsigned char *p = *pp;
  if (p >= e) return -1;
  int tag = *p++;
  char num[64];
  int ok = 1;
  switch (tag) {
    case V_NULL: break;
    case V_INT:
      if (e - p < 8) return -1;
      ok = buf_add(b, num, (size_t)snprintf(num, sizeof num, "%lld", (long long)(int64_t)get_u64(p)));
      p += 8;
      break;
    case V_DOUBLE: {
      if (e - p < 8) return -1;
      uint64_t u = get_u64(p);
      double d;
      memcpy(&d, &u, 8);
      p += 8;
      if (isfinite(d)) ok = buf_add(b, num, (size_t)snprintf(num, sizeof num, "%.17g", d));
      else ok = buf_addstr(b, isnan(d) ? "NaN" : d > 0 ? "Infinity" : "-Infinity");
      break;
    }
    case V_BOOL:
      if (e - p < 1) return -1;
      ok = buf_addstr(b, *p ? "t" : "f");
      p++;
      break;
    case V_TEXT: case V_BINARY: {
      if (e - p < 4) return -1;
      uint32_t n = get_u32(p);
      p += 4;
      if ((size_t)(e - p) < n) return -1;
      if (!buf_reserve(b, b->n + (tag == V_BINARY ? 2 * (size_t)n + 10 : 4 * (size_t)n + 4))) return 0;
      char *o = b->p + b->n;
      *o++ = '\\'; *o++ = '"';
      if (tag == V_BINARY) {
        memcpy(o, "\\\\\\\\x", 5);
        o += 5;
        o = upk_hex(p, n, o);
      } else {
        for (uint32_t i = 0; i < n; i++) {
          unsigned char c = p[i];
          if (c == '"') { memcpy(o, "\\\"\\\"", 4); o += 4; }
          else if (c == '\\') { memcpy(o, "\\\\\\\\", 4); o += 4; }
          else *o++ = (char)c;
        }
      }
      *o++ = '\\'; *o++ = '"';
      b->n = (size_t)(o - b->p);
      p += n;
      break;
    }
    default: return -1;
  }
  *pp = p;
  return ok;
}

/*
** Append the rows of a data block at *pp (end e) to b, at most max of them,
** as multi-row VALUES lists, or for PostgreSQL (rowtype given) as the
** elements of an array of the table's row type. *rows counts the rows
** added. Returns 1, 0 when out of memory, -1 when the block is malformed.
*/
static int add_rows(Buf *b, const unsigned char **pp, const unsigned char *e, lua_Integer ncols,
                    int dialect, int pgarray, uint32_t max, uint32_t *rows) {
  for (uint32_t r = 0; r < max; r++) {
    if (pgarray) {
      if (!buf_addstr(b, r ? ",\"(" : "\"(")) return 0;
    } else if (!buf_addstr(b, r ? ",(" : "(")) {
      return 0;
    }
    for (lua_Integer k = 0; k < ncols; k++) {
      if (k && !buf_add(b, ",", 1)) return 0;
      int ok = pgarray ? add_pg_field(b, pp, e) : add_literal(b, pp, e, dialect);
      if (ok <= 0) return ok;
    }
    if (!buf_addstr(b, pgarray ? ")\"" : ")")) return 0;
    (*rows)++;
  }
  return 1;
}

/*
** Text blocks (format version 2) hold rows as PostgreSQL writes a record
** (record_out): "(f1,f2,...)", a field empty for NULL, quoted with "" when
** it holds a quote, backslash, parenthesis, comma, space or is empty, the
** quotes and backslashes inside doubled; rows end with a newline, which
** therefore never appears outside quotes.
*/

/*
** Append the rows of text block p..e to b as the elements of an array of
** records (each row quoted for the array, its quotes and backslashes
** escaped once more). Returns the row count, -1 when the text is not rows
** of record text, -2 when out of memory.
*/
static long long add_pg_rowtext(Buf *b, const unsigned char *p, const unsigned char *e) {
  size_t n = (size_t)(e - p);
  if (n == 0) return 0;
  if (!buf_reserve(b, b->n + 3 * n + 4)) return -2;
  char *o = b->p + b->n;
  long long rows = 1;
  int inq = 0, esc = 0, start = 1;
  *o++ = '"';
  for (; p < e; p++) {
    unsigned char c = *p;
    if (start && c != '(') return -1;
    start = 0;
    if (esc) esc = 0;
    else if (c == '\\') esc = 1;
    else if (c == '"') inq = !inq;
    else if (c == '\n' && !inq) {
      if (p[-1] != ')') return -1;
      memcpy(o, "\",\"", 3);
      o += 3;
      rows++;
      start = 1;
      continue;
    }
    if (c == '"' || c == '\\') *o++ = '\\';
    *o++ = (char)c;
  }
  if (inq || esc || start || e[-1] != ')') return -1;
  *o++ = '"';
  b->n = (size_t)(o - b->p);
  return rows;
}

/*
** Read one field of record text at *pp (end e) into out, unescaped; *pp
** stops at the ',' or ')' after it. Returns 1, 0 for NULL (an empty field
** without quotes), -1 when malformed, -2 when out of memory.
*/
static int record_field(Buf *out, const unsigned char **pp, const unsigned char *e) {
  const unsigned char *p = *pp;
  out->n = 0;
  if (p < e && (*p == ',' || *p == ')')) return 0;
  int quoted = 0;
  while (p < e) {
    unsigned char c = *p;
    if (c == '\\') {
      if (++p >= e) return -1;
      c = *p;
    } else if (c == '"') {
      if (quoted && p + 1 < e && p[1] == '"') p++;
      else { quoted = !quoted; p++; continue; }
    } else if (!quoted && (c == ',' || c == ')')) {
      break;
    }
    if (!buf_add(out, &c, 1)) return -2;
    p++;
  }
  if (quoted || p >= e) return -1;
  *pp = p;
  return 1;
}

static int hexval(unsigned char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Append field f (type t, see _sql.record_values) to b as a tagged value; 0 when out of memory. */
static int put_field(Buf *b, Buf *f, char t) {
  unsigned char tag = V_TEXT;
  if (!buf_reserve(f, f->n + 1)) return 0;
  f->p[f->n] = '\0';
  const char *s = f->p;
  char *end = NULL;
  if (t == 'i' && f->n > 0) {
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno == 0 && end == s + f->n) {
      tag = V_INT;
      return buf_add(b, &tag, 1) && put_u64(b, (uint64_t)v);
    }
  } else if (t == 'f' && f->n > 0) {
    double d = strtod(s, &end);
    if (end == s + f->n) {
      uint64_t u;
      memcpy(&u, &d, 8);
      tag = V_DOUBLE;
      return buf_add(b, &tag, 1) && put_u64(b, u);
    }
  } else if (t == 'b' && f->n == 1 && strchr("tf10", s[0])) {
    unsigned char v[2] = {V_BOOL, s[0] == 't' || s[0] == '1'};
    return buf_add(b, v, 2);
  } else if (t == 'x' && f->n >= 2 && s[0] == '\\' && s[1] == 'x' && f->n % 2 == 0) {
    size_t n = (f->n - 2) / 2;
    size_t at = b->n + 5;
    tag = V_BINARY;
    if (!buf_add(b, &tag, 1) || !put_u32(b, (uint32_t)n) || !buf_reserve(b, at + n)) return 0;
    unsigned char *o = (unsigned char *)b->p + at;
    for (size_t i = 0; i < n; i++) {
      int hi = hexval((unsigned char)s[2 + 2 * i]), lo = hexval((unsigned char)s[3 + 2 * i]);
      if (hi < 0 || lo < 0) { b->n = at - 5; goto text; }
      o[i] = (unsigned char)(hi << 4 | lo);
    }
    b->n = at + n;
    return 1;
  } else if (t == 'T' && f->n >= 13 && s[4] == '-' && s[7] == '-' && s[10] == ' ') {
    f->p[10] = 'T';
  }
text:
  tag = t == 'x' ? V_BINARY : V_TEXT;
  return buf_add(b, &tag, 1) && put_u32(b, (uint32_t)f->n) && buf_add(b, f->p, f->n);
}

/*
** _sql.record_values(block, types) -> block: a text block made a data
** block of tagged values (the version 1 encoding), for engines other than
** PostgreSQL. types has a character per column: 'i' integer, 'f' float,
** 'b' boolean, 'x' binary (bytea's hex text), 'T' timestamp (its space
** becomes ISO 8601's 'T'), 's' text. A field that does not read as its
** column's type stays text.
*/
static int sql_record_values(lua_State *L) {
  size_t blen, ncols;
  const unsigned char *blk = (const unsigned char *)luaL_checklstring(L, 1, &blen);
  const char *types = luaL_checklstring(L, 2, &ncols);
  if (blen < 4 || ncols == 0) return upk_error(L, "BAD_FORMAT", "sql.restore: a text block is too short");
  uint32_t want = get_u32(blk), rows = 0;
  const unsigned char *p = blk + 4, *e = blk + blen;
  Buf out = {0}, f = {0};
  int ok = put_u32(&out, want) ? 1 : -2;
  while (ok > 0 && p < e) {
    if (rows && *p++ != '\n') { ok = -1; break; }
    if (p >= e || *p++ != '(') { ok = -1; break; }
    for (size_t k = 0; ok > 0 && k < ncols; k++) {
      if (k && (p >= e || *p++ != ',')) { ok = -1; break; }
      int r = record_field(&f, &p, e);
      if (r < 0) ok = r;
      else if (r == 0) { unsigned char z = V_NULL; if (!buf_add(&out, &z, 1)) ok = -2; }
      else if (!put_field(&out, &f, types[k])) ok = -2;
    }
    if (ok > 0 && (p >= e || *p++ != ')')) ok = -1;
    rows++;
  }
  if (ok > 0 && rows != want) ok = -1;
  buf_free(&f);
  if (ok > 0) lua_pushlstring(L, out.p, out.n);
  buf_free(&out);
  if (ok == -2) return upk_error(L, "ENOMEM", "sql.restore: out of memory");
  if (ok < 0) return upk_error(L, "BAD_FORMAT", "sql.restore: a text block does not hold %d rows of %d columns", (int)want, (int)ncols);
  return 1;
}

/*
** Run SQL text sqlb (UTF-8) with one text parameter, param (UTF-8), in a
** thread on a handle of its own, once the statement run that way before
** has finished (its error is raised here): the caller builds the next
** statement while the server runs this one.
*/
static void exec_behind(lua_State *L, Conn *c, Buf *sqlb, Buf *param, const char *fn) {
  int bad = 0;
  if (!utf8_to_utf16(&c->w, param->p, param->n, &bad))
    upk_error(L, bad ? "EINVAL" : "ENOMEM", "%s: %s", fn, bad ? "a value is not valid UTF-8" : "out of memory");
  load_finish(L, c, fn);
  if (!utf8_to_utf16(&c->ld_sw, sqlb->p, sqlb->n, &bad))
    upk_error(L, bad ? "EINVAL" : "ENOMEM", "%s: %s", fn, bad ? "the SQL text is not valid UTF-8" : "out of memory");
  Buf t = c->ld_w;
  c->ld_w = c->w;
  c->w = t;
  c->ld_ind = (SQLLEN)c->ld_w.n;
  SQLHSTMT h;
  if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_STMT, c->dbc, &h)))
    sql_fail(L, SQL_HANDLE_DBC, c->dbc, fn, c->label);
  c->ld_h = h;
  SQLULEN units = c->ld_w.n / sizeof(SQLWCHAR);
  if (!SQL_SUCCEEDED(SQLBindParameter(h, 1, SQL_PARAM_INPUT, SQL_C_WCHAR, SQL_WLONGVARCHAR, units ? units : 1, 0,
                                      c->ld_w.p, (SQLLEN)c->ld_w.n + (SQLLEN)sizeof(SQLWCHAR), &c->ld_ind))) {
    c->ld_rc = SQL_ERROR;
    load_finish(L, c, fn);
  }
  if (pthread_create(&c->ld_thread, NULL, load_main, c) == 0) {
    c->ld_running = 1;
  } else {
    load_main(c);
    load_finish(L, c, fn);
  }
}

/*
** db:load(insert_prefix, block, ncols, dialect [, rows_per_statement [, rowtype [, text]]]) -> rows
** Inserts the rows of a data block with multi-row statements
** "<prefix> VALUES (...),(...)"; dialect is "postgresql", "sqlite",
** "mssql" or "generic" (how literals are spelled). For PostgreSQL with
** rowtype (the quoted table name) each statement is
** "<prefix> SELECT * FROM unnest(CAST(? AS <rowtype>[]))" with the rows as
** the text of an array of records, bound as a parameter: the server reads
** that much faster than it parses VALUES lists, and the driver does not
** scan it as SQL text; the
** last statement then still runs when db:load returns, and the next call
** on the connection waits for it and raises its error. With text (PostgreSQL
** and rowtype only) block is a text block of record text, bound whole as
** the array's text in one statement.
*/
static int conn_load(lua_State *L) {
  static const char *const dialects[] = {"generic", "postgresql", "sqlite", "mssql", NULL};
  Conn *c = checklive(L, 1, "db:load");
  size_t plen, blen, tlen = 0;
  const char *prefix = luaL_checklstring(L, 2, &plen);
  const unsigned char *blk = (const unsigned char *)luaL_checklstring(L, 3, &blen);
  lua_Integer ncols = luaL_checkinteger(L, 4);
  int dialect = luaL_checkoption(L, 5, "generic", dialects);
  lua_Integer per = luaL_optinteger(L, 6, 1000);
  const char *rowtype = luaL_optlstring(L, 7, NULL, &tlen);
  int pgarray = rowtype && dialect == D_POSTGRESQL;
  int text = lua_toboolean(L, 8);
  if (text && !pgarray) return upk_error(L, "EINVAL", "db:load: a text block loads only into PostgreSQL with its row type");
  if (!pgarray) load_finish(L, c, "db:load");
  if (per < 1) per = 1;
  if (blen < 4 || ncols < 1) return upk_error(L, "BAD_FORMAT", "db:load: a data block is too short");
  uint32_t rows = get_u32(blk);
  const unsigned char *p = blk + 4, *e = blk + blen;
  Buf *b = &c->s, *w = &c->w;
  uint32_t done = 0;
  int ok = 1;
  if (text && rows > 0) {
    Buf *sqlb = &c->ld_sql;
    sqlb->n = 0;
    b->n = 0;
    long long got = buf_add(b, "{", 1) ? add_pg_rowtext(b, p, e) : -2;
    if (got >= 0 && (uint64_t)got != rows) got = -1;
    ok = got == -2 ? 0 : got < 0 ? -1 : 1;
    if (ok > 0) ok = buf_add(b, "}", 1) && buf_add(sqlb, prefix, plen) &&
                     buf_addstr(sqlb, " SELECT * FROM unnest(CAST(? AS ") && buf_add(sqlb, rowtype, tlen) &&
                     buf_addstr(sqlb, "[]))");
    if (ok > 0) {
      exec_behind(L, c, sqlb, b, "db:load");
      done = rows;
      p = e;
    }
  }
  while (!text && done < rows && ok > 0) {
    uint32_t n = rows - done < (uint64_t)per ? rows - done : (uint32_t)per;
    b->n = 0;
    if (pgarray) {
      Buf *sqlb = &c->ld_sql;
      sqlb->n = 0;
      ok = buf_add(b, "{", 1) && add_rows(b, &p, e, ncols, dialect, pgarray, n, &done);
      if (ok > 0) ok = buf_add(b, "}", 1) && buf_add(sqlb, prefix, plen) &&
                       buf_addstr(sqlb, " SELECT * FROM unnest(CAST(? AS ") && buf_add(sqlb, rowtype, tlen) &&
                       buf_addstr(sqlb, "[]))");
      if (ok > 0) exec_behind(L, c, sqlb, b, "db:load");
    } else {
      ok = buf_add(b, prefix, plen) && buf_addstr(b, " VALUES ");
      if (ok) ok = add_rows(b, &p, e, ncols, dialect, pgarray, n, &done);
      if (ok > 0) exec_text(L, c, b, w, "db:load");
    }
    if (ok <= 0) break;
    upk_check_interrupt(L, "db:load");
  }
  if (ok > 0 && p != e) ok = -1;
  if (b->cap > (16u << 20)) buf_free(b);
  if (w->cap > (16u << 20)) buf_free(w);
  if (ok == 0) return upk_error(L, "ENOMEM", "db:load: out of memory");
  if (ok < 0 && text) return upk_error(L, "BAD_FORMAT", "db:load: a text block does not hold %d rows of record text", (int)rows);
  if (ok < 0) return upk_error(L, "BAD_FORMAT", "db:load: a data block does not match its table's %d columns", (int)ncols);
  lua_pushinteger(L, done);
  return 1;
}

/* ---------------------------------------------------------------------- */
/* Logical backup files: records of [type u8][length u32][payload][sha256] */

#define RECORD_MAX (1u << 30)

struct Writer {
  FILE *f;
  EVP_MD_CTX *all;
  char *path;
  uint64_t bytes;
  int done;
};

static void writer_release(lua_State *L, Writer *w) {
  if (w->f) {
    fclose(w->f);
    w->f = NULL;
    if (!w->done && w->path) unlink(w->path);
    upk_untrack(L, w);
  }
  EVP_MD_CTX_free(w->all);
  w->all = NULL;
  free(w->path);
  w->path = NULL;
}

static void hexdigest(const unsigned char *d, unsigned n, char *out) {
  *upk_hex(d, n, out) = 0;
}

/*
** _sql.writer(tmp_path, magic) -> writer: creates tmp_path (it must not
** exist), writes the magic bytes. Closing an unfinished writer removes it.
*/
static int sql_writer(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t mlen;
  const char *magic = luaL_checklstring(L, 2, &mlen);
  Writer *w = lua_newuserdatauv(L, sizeof *w, 0);
  memset(w, 0, sizeof *w);
  luaL_setmetatable(L, WRITER_MT);
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return upk_errno_error(L, errno, "sql.backup: '%s'", path);
  w->f = fdopen(fd, "wb");
  w->path = strdup(path);
  w->all = EVP_MD_CTX_new();
  if (!w->f || !w->path || !w->all || !EVP_DigestInit_ex(w->all, EVP_sha256(), NULL)) {
    if (w->f) fclose(w->f); else close(fd);
    w->f = NULL;
    unlink(path);
    return upk_error(L, "ENOMEM", "sql.backup: '%s': out of memory", path);
  }
  upk_track(L, w, WRITER_MT);
  setvbuf(w->f, NULL, _IOFBF, 1 << 20);
  if (fwrite(magic, 1, mlen, w->f) != mlen) return upk_errno_error(L, errno, "sql.backup: '%s'", path);
  EVP_DigestUpdate(w->all, magic, mlen);
  w->bytes = mlen;
  return 1;
}

static Writer *checkwriter_at(lua_State *L, int idx) {
  Writer *w = luaL_checkudata(L, idx, WRITER_MT);
  if (!w->f || w->done) upk_error(L, "ECLOSED", "backup writer: closed");
  return w;
}

static Writer *checkwriter(lua_State *L) { return checkwriter_at(L, 1); }

static void write_record(lua_State *L, Writer *w, int type, const char *payload, size_t n) {
  unsigned char head[5] = {(unsigned char)type, (unsigned char)n, (unsigned char)(n >> 8),
                           (unsigned char)(n >> 16), (unsigned char)(n >> 24)};
  unsigned char sum[EVP_MAX_MD_SIZE];
  unsigned slen = 0;
  EVP_MD_CTX *x = EVP_MD_CTX_new();
  if (!x) upk_error(L, "ENOMEM", "sql.backup: out of memory");
  EVP_DigestInit_ex(x, EVP_sha256(), NULL);
  EVP_DigestUpdate(x, head, 5);
  EVP_DigestUpdate(x, payload, n);
  EVP_DigestFinal_ex(x, sum, &slen);
  EVP_MD_CTX_free(x);
  if (fwrite(head, 1, 5, w->f) != 5 || fwrite(payload, 1, n, w->f) != n || fwrite(sum, 1, slen, w->f) != slen)
    upk_errno_error(L, errno, "sql.backup: '%s'", w->path);
  EVP_DigestUpdate(w->all, head, 5);
  EVP_DigestUpdate(w->all, payload, n);
  EVP_DigestUpdate(w->all, sum, slen);
  w->bytes += 5 + n + slen;
}

/* w:record(type, payload): one record; type is one character */
static int writer_record(lua_State *L) {
  Writer *w = checkwriter(L);
  size_t tl, n;
  const char *t = luaL_checklstring(L, 2, &tl);
  const char *payload = luaL_checklstring(L, 3, &n);
  if (tl != 1 || n >= RECORD_MAX) return upk_error(L, "EINVAL", "backup writer: bad record");
  write_record(L, w, t[0], payload, n);
  return 0;
}

/*
** w:finish() -> bytes, sha256: writes the trailer (the SHA-256 of every
** byte before it), flushes and fsyncs the file; sha256 is the whole file's.
*/
static int writer_finish(lua_State *L) {
  Writer *w = checkwriter(L);
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned dl = 0;
  if (upk_digest_peek(w->all, d, &dl) != 0) return upk_error(L, "ENOMEM", "sql.backup: out of memory");
  write_record(L, w, 'Z', (const char *)d, dl);
  EVP_DigestFinal_ex(w->all, d, &dl);
  if (fflush(w->f) != 0 || fsync(fileno(w->f)) != 0) return upk_errno_error(L, errno, "sql.backup: '%s'", w->path);
  int rc = fclose(w->f);
  w->f = NULL;
  w->done = 1;
  upk_untrack(L, w);
  if (rc != 0) return upk_errno_error(L, errno, "sql.backup: '%s'", w->path);
  char hex[2 * EVP_MAX_MD_SIZE + 1];
  hexdigest(d, dl, hex);
  lua_pushinteger(L, (lua_Integer)w->bytes);
  lua_pushstring(L, hex);
  return 2;
}

/* w:close(): idempotent; an unfinished file is removed */
static int writer_close(lua_State *L) {
  writer_release(L, luaL_checkudata(L, 1, WRITER_MT));
  return 0;
}

typedef struct Reader {
  FILE *f;
  EVP_MD_CTX *all;
  char *path;
  uint64_t bytes;
  int ended;
  Buf b;
  char hex[2 * EVP_MAX_MD_SIZE + 1];
} Reader;

static void reader_release(lua_State *L, Reader *r) {
  if (r->f) {
    fclose(r->f);
    r->f = NULL;
    upk_untrack(L, r);
  }
  EVP_MD_CTX_free(r->all);
  r->all = NULL;
  free(r->path);
  r->path = NULL;
  buf_free(&r->b);
}

/* _sql.reader(path) -> reader */
static int sql_reader(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  Reader *r = lua_newuserdatauv(L, sizeof *r, 0);
  memset(r, 0, sizeof *r);
  luaL_setmetatable(L, READER_MT);
  r->f = fopen(path, "rbe");
  if (!r->f) return upk_errno_error(L, errno, "sql.restore: '%s'", path);
  upk_track(L, r, READER_MT);
  r->path = strdup(path);
  r->all = EVP_MD_CTX_new();
  if (!r->path || !r->all || !EVP_DigestInit_ex(r->all, EVP_sha256(), NULL))
    return upk_error(L, "ENOMEM", "sql.restore: out of memory");
  setvbuf(r->f, NULL, _IOFBF, 1 << 20);
  return 1;
}

static Reader *checkreader(lua_State *L) {
  Reader *r = luaL_checkudata(L, 1, READER_MT);
  if (!r->f) upk_error(L, "ECLOSED", "backup reader: closed");
  return r;
}

/* Read exactly n bytes into p, or raise BAD_FORMAT (truncated) / errno. */
static void readn(lua_State *L, Reader *r, void *p, size_t n) {
  size_t got = fread(p, 1, n, r->f);
  if (got == n) return;
  if (ferror(r->f)) upk_errno_error(L, errno, "sql.restore: '%s'", r->path);
  upk_error(L, "BAD_FORMAT", "sql.restore: '%s': the file is truncated at byte %d", r->path,
            (int)(r->bytes + got));
}

/* r:magic(n) -> the first n bytes (raises BAD_FORMAT when shorter) */
static int reader_magic(lua_State *L) {
  Reader *r = checkreader(L);
  size_t n = (size_t)luaL_checkinteger(L, 2);
  char m[64];
  if (n > sizeof m) n = sizeof m;
  size_t got = fread(m, 1, n, r->f);
  EVP_DigestUpdate(r->all, m, got);
  r->bytes += got;
  lua_pushlstring(L, m, got);
  return 1;
}

/*
** r:next() -> type, payload: the next record, its checksum verified
** (CHECKSUM_MISMATCH) and its framing checked (BAD_FORMAT). At the trailer
** 'Z' the whole file's digest is checked and the end of file required;
** then r:next() returns nil.
*/
static int reader_next(lua_State *L) {
  Reader *r = checkreader(L);
  if (r->ended) return 0;
  unsigned char head[5], sum[32], want[EVP_MAX_MD_SIZE];
  unsigned wl = 0;
  uint64_t at = r->bytes;
  readn(L, r, head, 5);
  uint32_t n = get_u32(head + 1);
  if (!strchr("HTDERZ", head[0]) || head[0] == 0)
    return upk_error(L, "BAD_FORMAT", "sql.restore: '%s': unknown record type at byte %d", r->path, (int)at);
  if (n >= RECORD_MAX || (head[0] == 'Z' && n != 32))
    return upk_error(L, "BAD_FORMAT", "sql.restore: '%s': bad record length at byte %d", r->path, (int)at);
  r->b.n = 0;
  if (!buf_reserve(&r->b, n ? n : 1)) return upk_error(L, "ENOMEM", "sql.restore: out of memory");
  readn(L, r, r->b.p, n);
  readn(L, r, sum, 32);
  EVP_MD_CTX *x = EVP_MD_CTX_new();
  if (!x) return upk_error(L, "ENOMEM", "sql.restore: out of memory");
  EVP_DigestInit_ex(x, EVP_sha256(), NULL);
  EVP_DigestUpdate(x, head, 5);
  EVP_DigestUpdate(x, r->b.p, n);
  EVP_DigestFinal_ex(x, want, &wl);
  EVP_MD_CTX_free(x);
  if (memcmp(want, sum, 32) != 0)
    return upk_error(L, "CHECKSUM_MISMATCH", "sql.restore: '%s': the record at byte %d fails its checksum",
                     r->path, (int)at);
  if (head[0] == 'Z') {
    unsigned char all[EVP_MAX_MD_SIZE];
    unsigned al = 0;
    if (upk_digest_peek(r->all, all, &al) != 0) return upk_error(L, "ENOMEM", "sql.restore: out of memory");
    if (memcmp(all, r->b.p, 32) != 0)
      return upk_error(L, "CHECKSUM_MISMATCH", "sql.restore: '%s': the file fails its SHA-256 trailer", r->path);
    if (fgetc(r->f) != EOF)
      return upk_error(L, "BAD_FORMAT", "sql.restore: '%s': data after the trailer", r->path);
    r->ended = 1;
  }
  EVP_DigestUpdate(r->all, head, 5);
  EVP_DigestUpdate(r->all, r->b.p, n);
  EVP_DigestUpdate(r->all, sum, 32);
  r->bytes += 5 + (uint64_t)n + 32;
  if (r->ended) {
    EVP_DigestFinal_ex(r->all, want, &wl);
    hexdigest(want, wl, r->hex);
  }
  lua_pushlstring(L, (const char *)head, 1);
  lua_pushlstring(L, r->b.p, n);
  if (r->b.cap > (8u << 20)) buf_free(&r->b);
  return 2;
}

/* r:bytes() -> bytes read; r:sha256() -> the whole file's digest after the trailer */
static int reader_bytes(lua_State *L) {
  Reader *r = luaL_checkudata(L, 1, READER_MT);
  lua_pushinteger(L, (lua_Integer)r->bytes);
  return 1;
}

static int reader_sha256(lua_State *L) {
  Reader *r = luaL_checkudata(L, 1, READER_MT);
  if (!r->ended) return 0;
  lua_pushstring(L, r->hex);
  return 1;
}

/* r:close(): idempotent */
static int reader_close(lua_State *L) {
  reader_release(L, luaL_checkudata(L, 1, READER_MT));
  return 0;
}

/* ---------------------------------------------------------------------- */
/* Files */

/* _sql.fsync(path): flush a file (or folder) to disk */
static int sql_fsync(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return upk_errno_error(L, errno, "sql: fsync '%s'", path);
  int rc = fsync(fd), err = errno;
  close(fd);
  if (rc != 0 && err != EINVAL) return upk_errno_error(L, err, "sql: fsync '%s'", path);
  return 0;
}

/* _sql.rename(from, to): atomic rename, then fsync of the folder of to */
static int sql_rename(lua_State *L) {
  const char *from = luaL_checkstring(L, 1);
  const char *to = luaL_checkstring(L, 2);
  if (rename(from, to) != 0) return upk_errno_error(L, errno, "sql: rename '%s' -> '%s'", from, to);
  const char *slash = strrchr(to, '/');
  if (slash) lua_pushlstring(L, to, slash == to ? 1 : (size_t)(slash - to));
  else lua_pushliteral(L, ".");
  int fd = open(lua_tostring(L, -1), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
  return 0;
}

/* ---------------------------------------------------------------------- */

static int conn_gc(lua_State *L) { return conn_close(L); }

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
  {"__gc", conn_gc},
  {"__close", conn_gc},
  {"__tostring", conn_tostring},
  {NULL, NULL}
};

static const luaL_Reg stmt_meth[] = {
  {"execute", stmt_execute},
  {"fetch", stmt_fetch},
  {"columns", stmt_columns},
  {"dump", stmt_dump},
  {"start_block", stmt_start_block},
  {"finish_block", stmt_finish_block},
  {"close_cursor", stmt_close_cursor},
  {"close", stmt_close},
  {NULL, NULL}
};

static int stmt_tostring(lua_State *L) {
  Stmt *st = luaL_checkudata(L, 1, STMT_MT);
  lua_pushstring(L, st->h ? "sql.Statement" : "sql.Statement (closed)");
  return 1;
}

static const luaL_Reg stmt_metameth[] = {
  {"__gc", stmt_close},
  {"__close", stmt_close},
  {"__tostring", stmt_tostring},
  {NULL, NULL}
};

static const luaL_Reg writer_meth[] = {
  {"record", writer_record},
  {"finish", writer_finish},
  {"close", writer_close},
  {NULL, NULL}
};

static const luaL_Reg reader_meth[] = {
  {"magic", reader_magic},
  {"next", reader_next},
  {"bytes", reader_bytes},
  {"sha256", reader_sha256},
  {"close", reader_close},
  {NULL, NULL}
};

/* Create metatable tname with methods meth (also returned as field) and metamethods. */
static void newclass(lua_State *L, const char *tname, const luaL_Reg *meth, const luaL_Reg *metameth,
                     lua_CFunction close) {
  luaL_newmetatable(L, tname);
  if (metameth) luaL_setfuncs(L, metameth, 0);
  else {
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__close");
  }
  lua_newtable(L);
  luaL_setfuncs(L, meth, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

static const luaL_Reg sql_funcs[] = {
  {"connect", sql_connect},
  {"redact", sql_redact},
  {"writer", sql_writer},
  {"reader", sql_reader},
  {"fsync", sql_fsync},
  {"rename", sql_rename},
  {"record_values", sql_record_values},
  {NULL, NULL}
};

int luaopen_upkit_sql(lua_State *L) {
  newclass(L, CONN_MT, conn_meth, conn_metameth, NULL);
  newclass(L, STMT_MT, stmt_meth, stmt_metameth, NULL);
  newclass(L, WRITER_MT, writer_meth, NULL, writer_close);
  newclass(L, READER_MT, reader_meth, NULL, reader_close);
  luaL_newmetatable(L, BINARY_MT);
  lua_pop(L, 1);
  luaL_newlib(L, sql_funcs);
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  /* method tables, so the Lua facade can add methods */
  const char *const mts[] = {CONN_MT, STMT_MT, NULL};
  const char *const names[] = {"Connection", "Statement"};
  for (int i = 0; mts[i]; i++) {
    luaL_getmetatable(L, mts[i]);
    lua_getfield(L, -1, "__index");
    lua_setfield(L, -3, names[i]);
    lua_pop(L, 1);
  }
  luaL_getmetatable(L, BINARY_MT);
  lua_setfield(L, -2, "Binary");
  return 1;
}
