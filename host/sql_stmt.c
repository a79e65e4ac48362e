/*
** sql_stmt.c: statements of upkit._sql: binding parameters, describing
** and binding result columns, executing, fetching rows in blocks.
**   db:exec(sql, ...) db:open(sql, ...) db:prepare(sql) db:statement()
**   db:catalog(kind, schema, table)
**   st:execute(...) st:fetch() st:columns() st:close_cursor() st:close()
** A statement keeps its connection alive through its user value. Every
** method first waits for the thread working on the connection, if any.
*/
#include <math.h>
#include <stdio.h>

#include "sql_int.h"

static const char *const kind_names[] = {
  "integer", "float", "boolean", "text", "text", "binary", "date", "timestamp"
};

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
void close_cursor(Stmt *st) {
  prefetch_join(st);
  end_cursor(st);
}

void stmt_release(lua_State *L, Stmt *st) {
  if (!st->h) return;
  if (live(st)) sql_quiesce(st->conn);
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
Stmt *new_stmt(lua_State *L, int ci, Conn *c, const char *fn) {
  Stmt *st = lua_newuserdatauv(L, sizeof *st, 1);
  memset(st, 0, sizeof *st);
  luaL_setmetatable(L, STMT_MT);
  lua_pushvalue(L, ci);
  lua_setiuservalue(L, -2, 1);
  SQLHSTMT h;
  if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_STMT, c->dbc, &h)))
    sql_fail(L, SQL_HANDLE_DBC, c->dbc, fn, c);
  st->h = h;
  st->conn = c;
  upk_track(L, st, STMT_MT);
  if (c->query_timeout)
    SQLSetStmtAttr(h, SQL_ATTR_QUERY_TIMEOUT, (SQLPOINTER)c->query_timeout, 0);
  return st;
}

/* An open statement of an open connection, no thread working on the connection. */
Stmt *checkopen(lua_State *L, int idx, const char *fn) {
  Stmt *st = sql_checkudata(L, idx, STMT_MT, fn);
  if (!st->h) upk_error(L, "CLOSED", "%s: the statement is closed", fn);
  lua_getiuservalue(L, idx, 1);
  Conn *c = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (!c || !c->dbc) upk_error(L, "CLOSED", "%s: the connection is closed", fn);
  sql_settle(L, c, fn);
  return st;
}

/* An open statement that is not fetching ahead (see st:dump). */
Stmt *checkstmt(lua_State *L, int idx, const char *fn) {
  Stmt *st = checkopen(L, idx, fn);
  if (st->pf_running || st->pf_rows || st->pf_fail || st->pf_text)
    upk_error(L, "BUSY", "%s: the statement is fetching ahead for st:dump or st:start_block", fn);
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
    if (!SQL_SUCCEEDED(rc)) sql_fail(L, SQL_HANDLE_STMT, st->h, fn, st->conn);
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
void describe(lua_State *L, Stmt *st, int sizes, const char *fn) {
  SQLSMALLINT n = 0;
  free_cols(st);
  if (!SQL_SUCCEEDED(SQLNumResultCols(st->h, &n)))
    sql_fail(L, SQL_HANDLE_STMT, st->h, fn, st->conn);
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
    if (!SQL_SUCCEEDED(rc)) sql_fail(L, SQL_HANDLE_STMT, st->h, fn, st->conn);
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
      sql_fail(L, SQL_HANDLE_STMT, st->h, fn, st->conn);
  }
}

/* send_sql for the Lua string at idx; raises EINVAL or ENOMEM before sending. */
static SQLRETURN send_arg(lua_State *L, Conn *c, SQLHSTMT h, Buf *w, int idx, int prepare, const char *fn) {
  size_t n;
  const char *s = sql_checkstring(L, idx, fn, &n);
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
    sql_wait_begin(c, st->h);
    rc = SQLExecute(st->h);
    sql_wait_end();
  }
  if (rc == SQL_NO_DATA) return 0;
  if (!SQL_SUCCEEDED(rc)) sql_fail(L, SQL_HANDLE_STMT, st->h, fn, c);
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
    sql_wait_begin(st->conn, st->h);
    SQLRETURN rc = SQLMoreResults(st->h);
    sql_wait_end();
    if (rc == SQL_NO_DATA) break;
    if (!SQL_SUCCEEDED(rc)) sql_fail(L, SQL_HANDLE_STMT, st->h, fn, st->conn);
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
int fetch_next(Stmt *st, int *fail) {
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
int fetch_error(lua_State *L, Stmt *st, int fail, const char *fn) {
  if (fail == FETCH_NOMEM) return upk_error(L, "ENOMEM", "%s: out of memory", fn);
  if (fail == FETCH_TRUNC) {
    upk_pusherror(L, "BAD_RESPONSE", "%s: %s: the driver gave a value longer than its column's declared size", fn,
                  st->conn->label);
    lua_pushliteral(L, "01004");
    lua_setfield(L, -2, "sqlstate");
    return lua_error(L);
  }
  return sql_fail(L, SQL_HANDLE_STMT, st->h, fn, st->conn);
}

/* Advance to the next row of the open result set; 0 at its end. */
static int next_row(lua_State *L, Stmt *st, const char *fn) {
  int fail = FETCH_OK;
  sql_wait_begin(st->conn, st->h);
  int r = fetch_next(st, &fail);
  sql_wait_end();
  if (r < 0) fetch_error(L, st, fail, fn);
  return r;
}

/* The value of column col in the current row: its indicator and bytes. */
SQLLEN cell(Stmt *st, Col *col, const char **data) {
  SQLLEN ind = col->ind[st->pos];
  *data = col->buf + st->pos * (size_t)col->width;
  if (col->islong && overflowed(col, ind)) {
    *data = col->big.p;
    return col->bigind;
  }
  return ind;
}

/* Format a date or timestamp as ISO 8601 into out; returns its length. */
size_t iso8601(const Col *col, const char *data, char *out, size_t n) {
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

/* The bodies below run under lua_pcall (see with_stmt): [st, sql, arguments...]. */

static int exec_body(lua_State *L) {
  Stmt *st = lua_touserdata(L, 1);
  lua_Integer n = run(L, st, 1, 2, 3, lua_gettop(L), "db:exec");
  lua_pushinteger(L, drain(L, st, 1, n, "db:exec"));
  return 1;
}

static int open_body(lua_State *L) {
  run(L, lua_touserdata(L, 1), 1, 2, 3, lua_gettop(L), "db:open");
  return 0;
}

static int prepare_body(lua_State *L) {
  Stmt *st = lua_touserdata(L, 1);
  if (!SQL_SUCCEEDED(send_arg(L, st->conn, st->h, &st->w, 2, 1, "db:prepare")))
    sql_fail(L, SQL_HANDLE_STMT, st->h, "db:prepare", st->conn);
  st->prepared = 1;
  return 0;
}

/* [st, kind, schema, table] */
static int catalog_body(lua_State *L) {
  static const char *const kinds[] = {"tables", "columns", "primary_keys", "statistics", NULL};
  Stmt *st = lua_touserdata(L, 1);
  const char *k = lua_tostring(L, 2);
  int kind = 0;
  while (kinds[kind] && strcmp(kinds[kind], k) != 0) kind++;
  if (!kinds[kind])
    upk_error(L, "EINVAL", "db:catalog: kind must be tables, columns, primary_keys or statistics, not '%s'", k);
  SQLWCHAR *schema = NULL, *table = NULL;
  SQLSMALLINT sl = 0, tl = 0;
  SQLINTEGER units;
  if (lua_isstring(L, 3)) { schema = wide_arg(L, &st->w, 3, "db:catalog", &units); sl = (SQLSMALLINT)units; }
  if (lua_isstring(L, 4)) { table = wide_arg(L, &st->s, 4, "db:catalog", &units); tl = (SQLSMALLINT)units; }
  static SQLWCHAR tabletype[] = {'T', 'A', 'B', 'L', 'E', 0};
  SQLRETURN rc;
  sql_wait_begin(st->conn, st->h);
  switch (kind) {
    case 0: rc = SQLTablesW(st->h, NULL, 0, schema, sl, table, tl, tabletype, SQL_NTS); break;
    case 1: rc = SQLColumnsW(st->h, NULL, 0, schema, sl, table, tl, NULL, 0); break;
    case 2: rc = SQLPrimaryKeysW(st->h, NULL, 0, schema, sl, table, tl); break;
    default: rc = SQLStatisticsW(st->h, NULL, 0, schema, sl, table, tl, SQL_INDEX_UNIQUE, SQL_QUICK); break;
  }
  sql_wait_end();
  if (!SQL_SUCCEEDED(rc)) sql_fail(L, SQL_HANDLE_STMT, st->h, "db:catalog", st->conn);
  describe(L, st, SIZES_NONE, "db:catalog");
  return 0;
}

/*
** Push a new statement on the connection at 1 and run body(st, the
** arguments from 2 on) under lua_pcall: when it fails, the statement is
** closed before the error goes on. Leaves [st, nres results] on the top.
*/
static Stmt *with_stmt(lua_State *L, lua_CFunction body, int nres, const char *fn) {
  Conn *c = sql_checkconn(L, 1, fn);
  sql_checkstring(L, 2, fn, NULL);
  int top = lua_gettop(L);
  if (!lua_checkstack(L, top + 4)) upk_error(L, "EINVAL", "%s: too many parameters (%d)", fn, top - 2);
  Stmt *st = new_stmt(L, 1, c, fn);  /* [db, sql, args..., st] */
  lua_pushcfunction(L, body);
  lua_pushvalue(L, top + 1);
  for (int i = 2; i <= top; i++) lua_pushvalue(L, i);
  if (lua_pcall(L, top, nres, 0) != LUA_OK) {
    stmt_release(L, st);
    lua_error(L);
  }
  return st;
}

/*
** db:exec(sql, ...) -> rows affected; every result set of the batch is
** consumed, informational messages go to on_message.
*/
int conn_exec(lua_State *L) {
  Stmt *st = with_stmt(L, exec_body, 1, "db:exec");
  stmt_release(L, st);
  return 1;
}

/* db:open(sql, ...) -> statement with its first result set open */
int conn_open(lua_State *L) {
  with_stmt(L, open_body, 0, "db:open");
  return 1;
}

/* db:prepare(sql) -> statement */
int conn_prepare(lua_State *L) {
  with_stmt(L, prepare_body, 0, "db:prepare");
  return 1;
}

/*
** db:catalog(kind, schema, table) -> statement over the ODBC catalog result:
** "tables" (schema and table are search patterns), "columns", "primary_keys",
** "statistics" (unique indexes).
*/
int conn_catalog(lua_State *L) {
  with_stmt(L, catalog_body, 0, "db:catalog");
  return 1;
}

/* db:statement() -> a statement with no SQL yet, for st:start_block */
int conn_statement(lua_State *L) {
  Conn *c = sql_checkconn(L, 1, "db:statement");
  new_stmt(L, 1, c, "db:statement");
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

/* st:close_cursor(): close the open result set, keep the statement */
static int stmt_close_cursor(lua_State *L) {
  Stmt *st = sql_checkudata(L, 1, STMT_MT, "st:close_cursor");
  if (live(st)) sql_quiesce(st->conn);
  if (st->h) close_cursor(st);
  return 0;
}

/* st:close(): idempotent; also __gc and __close */
static int stmt_close(lua_State *L) {
  Stmt *st = sql_checkudata(L, 1, STMT_MT, "st:close");
  stmt_release(L, st);
  return 0;
}

/* tostring(st) */
static int stmt_tostring(lua_State *L) {
  Stmt *st = sql_checkudata(L, 1, STMT_MT, "tostring");
  lua_pushstring(L, st->h ? "sql.Statement" : "sql.Statement (closed)");
  return 1;
}

const luaL_Reg upk_sql_stmt_meth[] = {
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

const luaL_Reg upk_sql_stmt_metameth[] = {
  {"__gc", stmt_close},
  {"__close", stmt_close},
  {"__tostring", stmt_tostring},
  {NULL, NULL}
};
