/*
** sql_int.h: what the files of upkit._sql share (private to sql*.c).
**   sql.c       UTF-16, diagnostics and errors, Ctrl-C, connections, luaopen
**   sql_stmt.c  statements: bind, describe, execute, fetch, rows
**   sql_dump.c  rows as backup data blocks, the prefetch and text-block threads
**   sql_load.c  data blocks as INSERT statements, the load thread
** The backup file format itself is backupfile.c, which knows nothing of ODBC.
*/
#ifndef UPKIT_SQL_INT_H
#define UPKIT_SQL_INT_H

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sql.h>
#include <sqlext.h>
#include <sqlucode.h>

#include "backupfile.h"
#include "upkit.h"

#define CONN_MT "upkit.sql.Connection"
#define STMT_MT "upkit.sql.Statement"
#define BINARY_MT "upkit.sql.Binary"

#define ROWBUF_BYTES (4 << 20)   /* bound row-array buffers per statement */
#define MAX_ARRAY 1000           /* rows per block fetch */
#define LONG_TEXT 4000           /* longer declared text may not fit a bound buffer */
#define LONG_BINARY 8000
#define LONG_BIND 4096           /* bytes bound per value of such a column */
#define PIECE 65536              /* SQLGetData piece size */

/* How a column's value crosses into Lua. */
enum { K_INT, K_DOUBLE, K_BOOL, K_TEXT, K_ASCII, K_BINARY, K_DATE, K_TIMESTAMP };

/* How far a driver's declared text and binary sizes bound the values (see size_policy). */
enum { SIZES_EXACT, SIZES_PG, SIZES_NONE };

/* Ways a fetch fails, for code that cannot raise (a prefetch thread). */
enum { FETCH_OK, FETCH_SQL, FETCH_TRUNC, FETCH_NOMEM };

typedef struct Buf {
  char *p;
  size_t n, cap;
} Buf;

/* Grow b to hold at least need bytes; 0 on allocation failure. */
static inline int buf_reserve(Buf *b, size_t need) {
  if (need <= b->cap) return 1;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) return 0;
  b->p = p;
  b->cap = cap;
  return 1;
}

static inline int buf_add(Buf *b, const void *s, size_t n) {
  if (!buf_reserve(b, b->n + n)) return 0;
  memcpy(b->p + b->n, s, n);
  b->n += n;
  return 1;
}

static inline int buf_addstr(Buf *b, const char *s) { return buf_add(b, s, strlen(s)); }

static inline int buf_put_u32(Buf *b, uint32_t v) {
  unsigned char x[4];
  bf_set_u32(x, v);
  return buf_add(b, x, 4);
}

static inline int buf_put_u64(Buf *b, uint64_t v) {
  unsigned char x[8];
  bf_set_u64(x, v);
  return buf_add(b, x, 8);
}

static inline void buf_free(Buf *b) {
  free(b->p);
  b->p = NULL;
  b->n = b->cap = 0;
}

struct Stmt;

/*
** A connection. At most one thread besides the caller's works on it at a
** time (worker): a statement fetching ahead (st:dump), a text block
** (st:start_block) or the last statement of db:load; every method waits
** for it first (sql_settle).
*/
typedef struct Conn {
  SQLHENV env;
  SQLHDBC dbc;
  SQLHSTMT active;        /* the worker's statement, for db:cancel() */
  SQLULEN query_timeout;
  int intrans;
  int sizes;              /* SIZES_* */
  int gd_block;           /* SQLGetData works on any row of a fetched block */
  int decimal_numbers;    /* DECIMAL/NUMERIC as Lua numbers, not strings */
  volatile int cancelled; /* the Ctrl-C watcher cancelled the statement waited on */
  SQLHSTMT cancel_h;      /* the worker's statement db:cancel() cancelled */
  char *label;            /* the connection string without passwords */
  Buf w;                  /* UTF-16 scratch */
  Buf s;                  /* UTF-8 scratch */
  struct Stmt *ahead;     /* the statement whose thread works on the connection */
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

/* sql.c */
/* Arguments, or raise EINVAL naming fn (len may be NULL). */
const char *sql_checkstring(lua_State *L, int idx, const char *fn, size_t *len);
lua_Integer sql_checkinteger(lua_State *L, int idx, const char *fn);
void *sql_checkudata(lua_State *L, int idx, const char *tname, const char *fn);
int utf8_to_utf16(Buf *b, const char *s, size_t n, int *bad);
int utf16_append_utf8(Buf *b, const SQLWCHAR *w, size_t units);
void sql_pusherror(lua_State *L, SQLSMALLINT ht, SQLHANDLE h, const char *what, Conn *c);
int sql_fail(lua_State *L, SQLSMALLINT ht, SQLHANDLE h, const char *what, Conn *c);
void sql_wait_begin(Conn *c, SQLHANDLE h);
void sql_wait_end(void);
Conn *sql_checklive(lua_State *L, int idx, const char *fn);
Conn *sql_checkconn(lua_State *L, int idx, const char *fn);
void sql_quiesce(Conn *c);
void sql_settle(lua_State *L, Conn *c, const char *fn);
SQLWCHAR *wide_arg(lua_State *L, Buf *b, int idx, const char *fn, SQLINTEGER *units);
int notify(lua_State *L, int ci, SQLSMALLINT ht, SQLHANDLE h);
SQLRETURN send_sql(Conn *c, SQLHSTMT h, Buf *w, const char *s, size_t n, int prepare, int *bad);

/* sql_stmt.c */
Stmt *new_stmt(lua_State *L, int ci, Conn *c, const char *fn);
void stmt_release(lua_State *L, Stmt *st);
Stmt *checkopen(lua_State *L, int idx, const char *fn);
Stmt *checkstmt(lua_State *L, int idx, const char *fn);
void describe(lua_State *L, Stmt *st, int sizes, const char *fn);
void close_cursor(Stmt *st);
int fetch_next(Stmt *st, int *fail);
int fetch_error(lua_State *L, Stmt *st, int fail, const char *fn);
SQLLEN cell(Stmt *st, Col *col, const char **data);
size_t iso8601(const Col *col, const char *data, char *out, size_t n);
int conn_exec(lua_State *L);
int conn_open(lua_State *L);
int conn_prepare(lua_State *L);
int conn_catalog(lua_State *L);
int conn_statement(lua_State *L);
extern const luaL_Reg upk_sql_stmt_meth[];
extern const luaL_Reg upk_sql_stmt_metameth[];

/* sql_dump.c */
void prefetch_join(Stmt *st);
int stmt_dump(lua_State *L);
int stmt_start_block(lua_State *L);
int stmt_finish_block(lua_State *L);

/* sql_load.c */
void load_join(Conn *c, int cancel);
void load_finish(lua_State *L, Conn *c, const char *fn);
void load_discard(Conn *c);
int conn_load(lua_State *L);
int sql_record_values(lua_State *L);
int sql_check_block(lua_State *L);

#endif
