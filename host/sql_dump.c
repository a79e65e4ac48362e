/*
** sql_dump.c: rows as the data blocks of the logical backup (see
** docs/backup-format.md), fetched ahead in a thread:
**   st:dump(max_rows [, max_bytes [, ahead [, timestamps]]]) -> block, rows
**   st:start_block(sql) st:finish_block([writer]): PostgreSQL text blocks
** Such a thread is the one thread working on its connection (conn->ahead)
** until it is joined; every other method of the connection joins it first.
*/
#include <stdio.h>

#include "backupfile.h"
#include "sql_int.h"

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
      case K_INT: { SQLBIGINT v; memcpy(&v, p, 8); tag = V_INT; ok = buf_add(b, &tag, 1) && buf_put_u64(b, (uint64_t)v); break; }
      case K_DOUBLE: { uint64_t v; memcpy(&v, p, 8); tag = V_DOUBLE; ok = buf_add(b, &tag, 1) && buf_put_u64(b, v); break; }
      case K_BOOL: { unsigned char v[2] = {V_BOOL, *(const unsigned char *)p != 0}; ok = buf_add(b, v, 2); break; }
      case K_DATE: case K_TIMESTAMP: {
        char out[64];
        size_t n = iso8601(col, p, out, sizeof out);
        tag = V_TEXT;
        ok = buf_add(b, &tag, 1) && buf_put_u32(b, (uint32_t)n) && buf_add(b, out, n);
        break;
      }
      case K_TEXT: {
        /* converted in place after the tag and a length filled in after */
        size_t at = b->n + 5;
        tag = V_TEXT;
        ok = buf_add(b, &tag, 1) && buf_put_u32(b, 0) &&
             utf16_append_utf8(b, (const SQLWCHAR *)p, (size_t)ind / sizeof(SQLWCHAR));
        if (!ok) break;
        size_t n = b->n - at;
        char *t = b->p + at;
        if (col->isotext && n >= 13 && t[4] == '-' && t[7] == '-' && t[10] == ' ') t[10] = 'T';  /* YYYY-MM-DD HH */
        bf_set_u32((unsigned char *)t - 4, (uint32_t)n);
        break;
      }
      default:
        tag = col->kind == K_BINARY ? V_BINARY : V_TEXT;
        ok = buf_add(b, &tag, 1) && buf_put_u32(b, (uint32_t)ind) && buf_add(b, p, (size_t)ind);
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
  if (!buf_put_u32(b, 0)) return FETCH_NOMEM;
  while ((lua_Integer)*rows < maxrows && (lua_Integer)b->n < maxbytes && !upk_interrupted) {
    int more = fetch_next(st, &fail);
    if (more <= 0) break;
    if (!encode_row(st, b)) { fail = FETCH_NOMEM; break; }
    (*rows)++;
  }
  bf_set_u32((unsigned char *)b->p, *rows);
  return fail;
}

static void *prefetch_main(void *arg) {
  Stmt *st = arg;
  st->pf_fail = fetch_block(st, &st->pf, st->pf_maxrows, st->pf_maxbytes, &st->pf_rows);
  return NULL;
}

/*
** Wait for the statement's thread, if one runs (a wait Ctrl-C can cancel);
** what it fetched stays for st:dump or st:finish_block.
*/
void prefetch_join(Stmt *st) {
  if (!st->pf_running) return;
  Conn *c = st->conn;
  if (c && c->dbc) sql_wait_begin(c, st->h);
  pthread_join(st->pf_thread, NULL);
  if (c && c->dbc) sql_wait_end();
  st->pf_running = 0;
  if (c && c->ahead == st) c->ahead = NULL;
  if (c && c->active == st->h) c->active = NULL;
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
int stmt_dump(lua_State *L) {
  Stmt *st = sql_checkudata(L, 1, STMT_MT, "st:dump");
  prefetch_join(st);
  checkopen(L, 1, "st:dump");
  if (st->pf_text) return upk_error(L, "BUSY", "st:dump: the statement has a block started by st:start_block");
  lua_Integer maxrows = sql_checkinteger(L, 2, "st:dump");
  lua_Integer maxbytes = lua_isnoneornil(L, 3) ? 4 << 20 : sql_checkinteger(L, 3, "st:dump");
  int ahead = lua_toboolean(L, 4);
  size_t tslen = 0;
  const char *ts = lua_isnoneornil(L, 5) ? "" : sql_checkstring(L, 5, "st:dump", &tslen);
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
    sql_wait_begin(st->conn, st->h);
    fail = fetch_block(st, &st->s, maxrows, maxbytes, &rows);
    sql_wait_end();
  }
  if (fail != FETCH_OK) return fetch_error(L, st, fail, "st:dump");
  if (st->conn->cancel_h == st->h) st->conn->cancel_h = NULL;
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
      st->conn->active = st->h;
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
  if (!buf_put_u32(b, (uint32_t)count)) { st->pf_fail = FETCH_NOMEM; return NULL; }
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

/*
** st:start_block(sql): run sql, which returns one row (count, text), in a
** thread; st:finish_block() waits for it. The thread is the one working
** on the connection: any other method of the connection waits for it (the
** block stays for st:finish_block).
*/
int stmt_start_block(lua_State *L) {
  Stmt *st = checkstmt(L, 1, "st:start_block");
  size_t n;
  const char *s = sql_checkstring(L, 2, "st:start_block", &n);
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


/*
** st:finish_block() -> block, rows: the u32 row count then the text; nil when no rows.
** st:finish_block(w) -> rows: the block goes to the backup writer w as an
** "R" record (when it has rows) without becoming a Lua string.
*/
int stmt_finish_block(lua_State *L) {
  Stmt *st = sql_checkudata(L, 1, STMT_MT, "st:finish_block");
  BfWriter *w = lua_isnoneornil(L, 2) ? NULL : bf_checkwriter(L, 2);
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
    sql_pusherror(L, SQL_HANDLE_STMT, st->h, "st:finish_block", st->conn);
    SQLFreeStmt(st->h, SQL_CLOSE);
    return lua_error(L);
  }
  SQLFreeStmt(st->h, SQL_CLOSE);
  if (st->conn->cancel_h == st->h) st->conn->cancel_h = NULL;  /* it ended before the cancel reached it */
  upk_check_interrupt(L, "st:finish_block");
  if (w) {
    if (rows) bf_write_record(L, w, 'R', st->pf.p, st->pf.n);
    lua_pushinteger(L, rows);
  } else if (rows) {
    lua_pushlstring(L, st->pf.p, st->pf.n);
    lua_pushinteger(L, rows);
  }
  if (st->pf.cap > (16u << 20)) buf_free(&st->pf);
  return w ? 1 : rows ? 2 : 0;
}

