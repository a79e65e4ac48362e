/*
** sql_load.c: the rows of backup blocks into a table, as multi-row INSERT
** statements (a restore):
**   db:load(block, { insert =, columns =, per_statement =, row_type =, record_text = }) -> rows
**   _sql.record_values(text_block, types) -> data block
** On PostgreSQL (row_type given) the last statement runs in a thread (the
** load thread, the one thread working on the connection) while the caller
** reads the next block; every method of the connection waits for it.
*/
#include <errno.h>
#include <math.h>
#include <stdio.h>

#include "backupfile.h"
#include "sql_int.h"

static void *load_main(void *arg) {
  Conn *c = arg;
  c->ld_rc = SQLExecDirectW(c->ld_h, (SQLWCHAR *)c->ld_sw.p, (SQLINTEGER)(c->ld_sw.n / sizeof(SQLWCHAR)));
  if (SQL_SUCCEEDED(c->ld_rc)) while (SQL_SUCCEEDED(SQLMoreResults(c->ld_h))) {}
  return NULL;
}

/*
** Wait for the statement db:load left running (asking it to stop first
** when cancel), keeping its result; Ctrl-C cancels it.
*/
void load_join(Conn *c, int cancel) {
  if (!c->ld_running) return;
  if (cancel) SQLCancel(c->ld_h);
  sql_wait_begin(c, c->ld_h);
  pthread_join(c->ld_thread, NULL);
  sql_wait_end();
  c->ld_running = 0;
}

/* Take the result of the statement db:load left running: raises its error. */
void load_finish(lua_State *L, Conn *c, const char *fn) {
  load_join(c, 0);
  if (!c->ld_h) return;
  SQLHSTMT h = c->ld_h;
  c->ld_h = NULL;
  if (!SQL_SUCCEEDED(c->ld_rc) && c->ld_rc != SQL_NO_DATA) {
    sql_pusherror(L, SQL_HANDLE_STMT, h, fn, c);
    SQLFreeHandle(SQL_HANDLE_STMT, h);
    lua_error(L);
  }
  if (c->cancel_h == h) c->cancel_h = NULL;  /* it ended before the cancel reached it */
  SQLFreeHandle(SQL_HANDLE_STMT, h);
}

/* Stop and forget the statement db:load left running (rollback, close). */
void load_discard(Conn *c) {
  load_join(c, 1);
  if (c->ld_h) SQLFreeHandle(SQL_HANDLE_STMT, c->ld_h);
  if (c->cancel_h == c->ld_h) c->cancel_h = NULL;
  c->ld_h = NULL;
}

/* ---------------------------------------------------------------------- */
/* Restore: multi-row INSERT statements built from data blocks */

static int add_hex(Buf *b, const unsigned char *p, size_t n) {
  if (!buf_reserve(b, b->n + 2 * n)) return 0;
  b->n = (size_t)(upk_hex(p, n, b->p + b->n) - b->p);
  return 1;
}

/* One tagged value of a data block (see docs/backup-format.md). */
typedef struct Value {
  int tag;
  int64_t i;
  double d;
  const unsigned char *s;   /* V_TEXT, V_BINARY: n bytes; V_BOOL: 1 byte */
  uint32_t n;
} Value;

/* Read the value at *pp (end e) into v and advance *pp; 0 when it runs past e or has no known tag. */
static int read_value(const unsigned char **pp, const unsigned char *e, Value *v) {
  const unsigned char *p = *pp;
  if (p >= e) return 0;
  v->tag = *p++;
  size_t left = (size_t)(e - p);
  switch (v->tag) {
    case V_NULL: break;
    case V_INT: case V_DOUBLE: {
      if (left < 8) return 0;
      uint64_t u = bf_get_u64(p);
      v->i = (int64_t)u;
      memcpy(&v->d, &u, 8);
      p += 8;
      break;
    }
    case V_BOOL:
      if (left < 1 || *p > 1) return 0;
      v->s = p++;
      break;
    case V_TEXT: case V_BINARY:
      if (left < 4 || left - 4 < bf_get_u32(p)) return 0;
      v->n = bf_get_u32(p);
      v->s = p + 4;
      p += 4 + v->n;
      break;
    default: return 0;
  }
  *pp = p;
  return 1;
}

/* Append an integer or a finite double as decimal text; 0 when out of memory. */
static int add_number(Buf *b, const Value *v) {
  char num[64];
  int n = v->tag == V_INT ? snprintf(num, sizeof num, "%lld", (long long)v->i) : snprintf(num, sizeof num, "%.17g", v->d);
  return buf_add(b, num, (size_t)n);
}

/*
** Append the SQL literal of v to b, spelled as standard SQL (SQLite and
** others; PostgreSQL takes rows as an array of records, see add_pg_field).
** Returns 1, or 0 when out of memory.
*/
static int add_literal(Buf *b, const Value *v) {
  switch (v->tag) {
    case V_NULL: return buf_addstr(b, "NULL");
    case V_INT: return add_number(b, v);
    case V_DOUBLE:
      if (isfinite(v->d)) return add_number(b, v);
      return buf_addstr(b, isnan(v->d) ? "NULL" : v->d > 0 ? "9e999" : "-9e999");
    case V_BOOL: return buf_addstr(b, *v->s ? "1" : "0");
    case V_BINARY: return buf_addstr(b, "X'") && add_hex(b, v->s, v->n) && buf_addstr(b, "'");
    default: {
      if (!buf_addstr(b, "'") || !buf_reserve(b, b->n + 2 * (size_t)v->n + 1)) return 0;
      for (uint32_t i = 0; i < v->n; i++) {
        if (v->s[i] == '\'') b->p[b->n++] = '\'';
        b->p[b->n++] = (char)v->s[i];
      }
      return buf_addstr(b, "'");
    }
  }
}

/* Run one statement of UTF-8 text on a private handle; 0 or raises. */
static void exec_text(lua_State *L, Conn *c, Buf *sqlb, Buf *w, const char *fn) {
  SQLHSTMT h;
  if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_STMT, c->dbc, &h)))
    sql_fail(L, SQL_HANDLE_DBC, c->dbc, fn, c);
  int bad = 0;
  SQLRETURN rc = send_sql(c, h, w, sqlb->p, sqlb->n, 0, &bad);
  if (bad || (rc == SQL_ERROR && !w->p)) {
    SQLFreeHandle(SQL_HANDLE_STMT, h);
    upk_error(L, bad ? "EINVAL" : "ENOMEM", "%s: %s", fn, bad ? "a value is not valid UTF-8" : "out of memory");
  }
  if (!SQL_SUCCEEDED(rc) && rc != SQL_NO_DATA) {
    sql_pusherror(L, SQL_HANDLE_STMT, h, fn, c);
    SQLFreeHandle(SQL_HANDLE_STMT, h);
    lua_error(L);
  }
  sql_wait_begin(c, h);
  while (SQL_SUCCEEDED(SQLMoreResults(h))) {}
  sql_wait_end();
  SQLFreeHandle(SQL_HANDLE_STMT, h);
}

/*
** Append v to b as a field of a PostgreSQL record inside an array element
** (the text of an array of records): text is quoted for the record ("),
** the quotes and backslashes of that escaped again for the array. NULL is
** an empty field. Returns 1, or 0 when out of memory.
*/
static int add_pg_field(Buf *b, const Value *v) {
  switch (v->tag) {
    case V_NULL: return 1;
    case V_INT: return add_number(b, v);
    case V_DOUBLE:
      if (isfinite(v->d)) return add_number(b, v);
      return buf_addstr(b, isnan(v->d) ? "NaN" : v->d > 0 ? "Infinity" : "-Infinity");
    case V_BOOL: return buf_addstr(b, *v->s ? "t" : "f");
    default: break;
  }
  size_t n = v->n;
  if (!buf_reserve(b, b->n + (v->tag == V_BINARY ? 2 * n + 10 : 4 * n + 4))) return 0;
  char *o = b->p + b->n;
  *o++ = '\\'; *o++ = '"';
  if (v->tag == V_BINARY) {
    memcpy(o, "\\\\\\\\x", 5);
    o += 5;
    o = upk_hex(v->s, n, o);
  } else {
    for (size_t i = 0; i < n; i++) {
      unsigned char c = v->s[i];
      if (c == '"') { memcpy(o, "\\\"\\\"", 4); o += 4; }
      else if (c == '\\') { memcpy(o, "\\\\\\\\", 4); o += 4; }
      else *o++ = (char)c;
    }
  }
  *o++ = '\\'; *o++ = '"';
  b->n = (size_t)(o - b->p);
  return 1;
}

/*
** Append the rows of a data block at *pp (end e) to b, at most max of them,
** as multi-row VALUES lists, or for PostgreSQL (rowtype given) as the
** elements of an array of the table's row type. *rows counts the rows
** added. Returns 1, 0 when out of memory, -1 when the block is malformed.
*/
static int add_rows(Buf *b, const unsigned char **pp, const unsigned char *e, lua_Integer ncols,
                    int pgarray, uint32_t max, uint32_t *rows) {
  for (uint32_t r = 0; r < max; r++) {
    if (pgarray) {
      if (!buf_addstr(b, r ? ",\"(" : "\"(")) return 0;
    } else if (!buf_addstr(b, r ? ",(" : "(")) {
      return 0;
    }
    for (lua_Integer k = 0; k < ncols; k++) {
      if (k && !buf_add(b, ",", 1)) return 0;
      Value v;
      if (!read_value(pp, e, &v)) return -1;
      if (!(pgarray ? add_pg_field(b, &v) : add_literal(b, &v))) return 0;
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
      return buf_add(b, &tag, 1) && buf_put_u64(b, (uint64_t)v);
    }
  } else if (t == 'f' && f->n > 0) {
    double d = strtod(s, &end);
    if (end == s + f->n) {
      uint64_t u;
      memcpy(&u, &d, 8);
      tag = V_DOUBLE;
      return buf_add(b, &tag, 1) && buf_put_u64(b, u);
    }
  } else if (t == 'b' && f->n == 1 && strchr("tf10", s[0])) {
    unsigned char v[2] = {V_BOOL, s[0] == 't' || s[0] == '1'};
    return buf_add(b, v, 2);
  } else if (t == 'x' && f->n >= 2 && s[0] == '\\' && s[1] == 'x' && f->n % 2 == 0) {
    size_t n = (f->n - 2) / 2;
    size_t at = b->n + 5;
    tag = V_BINARY;
    if (!buf_add(b, &tag, 1) || !buf_put_u32(b, (uint32_t)n) || !buf_reserve(b, at + n)) return 0;
    unsigned char *o = (unsigned char *)b->p + at;
    for (size_t i = 0; i < n; i++) {
      int hi = upk_hexval((unsigned char)s[2 + 2 * i]), lo = upk_hexval((unsigned char)s[3 + 2 * i]);
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
  return buf_add(b, &tag, 1) && buf_put_u32(b, (uint32_t)f->n) && buf_add(b, f->p, f->n);
}

/*
** Read text block blk[0..blen) as rows of ncols record fields each; with
** out, append them as a data block of tagged values (types: see
** _sql.record_values). Returns 1, -1 when the block is not that, -2 when
** out of memory.
*/
static int text_rows(const unsigned char *blk, size_t blen, const char *types, size_t ncols, Buf *out) {
  if (blen < 4 || ncols == 0) return -1;
  uint32_t want = bf_get_u32(blk), rows = 0;
  const unsigned char *p = blk + 4, *e = blk + blen;
  Buf f = {0};
  int ok = !out || buf_put_u32(out, want) ? 1 : -2;
  while (ok > 0 && p < e) {
    if (rows && *p++ != '\n') { ok = -1; break; }
    if (p >= e || *p++ != '(') { ok = -1; break; }
    for (size_t k = 0; ok > 0 && k < ncols; k++) {
      if (k && (p >= e || *p++ != ',')) { ok = -1; break; }
      int r = record_field(&f, &p, e);
      if (r < 0 || !out) ok = r < 0 ? r : ok;
      else if (r == 0) { unsigned char z = V_NULL; if (!buf_add(out, &z, 1)) ok = -2; }
      else if (!put_field(out, &f, types[k])) ok = -2;
    }
    if (ok > 0 && (p >= e || *p++ != ')')) ok = -1;
    rows++;
  }
  if (ok > 0 && rows != want) ok = -1;
  buf_free(&f);
  return ok;
}

/*
** _sql.record_values(block, types) -> block: a text block made a data
** block of tagged values (the version 1 encoding), for engines other than
** PostgreSQL. types has a character per column: 'i' integer, 'f' float,
** 'b' boolean, 'x' binary (bytea's hex text), 'T' timestamp (its space
** becomes ISO 8601's 'T'), 's' text. A field that does not read as its
** column's type stays text.
*/
int sql_record_values(lua_State *L) {
  size_t blen, ncols;
  const unsigned char *blk = (const unsigned char *)sql_checkstring(L, 1, "sql.restore", &blen);
  const char *types = sql_checkstring(L, 2, "sql.restore", &ncols);
  Buf out = {0};
  int ok = text_rows(blk, blen, types, ncols, &out);
  if (ok > 0) lua_pushlstring(L, out.p, out.n);
  buf_free(&out);
  if (ok == -2) return upk_error(L, "ENOMEM", "sql.restore: out of memory");
  if (ok < 0) return upk_error(L, "BAD_FORMAT", "sql.restore: a text block is not rows of %d fields", (int)ncols);
  return 1;
}

/*
** _sql.check_block(block, columns, text) -> true, or raise BAD_FORMAT: a
** data block (or with text, a text block) holds exactly its row count of
** rows of columns values (fields).
*/
int sql_check_block(lua_State *L) {
  size_t blen;
  const unsigned char *blk = (const unsigned char *)sql_checkstring(L, 1, "sql.verify", &blen);
  lua_Integer ncols = sql_checkinteger(L, 2, "sql.verify");
  int ok = blen >= 4 && ncols >= 0;
  if (ok && lua_toboolean(L, 3)) {
    ok = text_rows(blk, blen, NULL, (size_t)ncols, NULL) > 0;
  } else if (ok) {
    const unsigned char *p = blk + 4, *e = blk + blen;
    uint64_t values = (uint64_t)bf_get_u32(blk) * (uint64_t)ncols;
    Value v;
    for (uint64_t i = 0; ok && i < values; i++) ok = read_value(&p, e, &v);
    ok = ok && p == e;
  }
  if (!ok) return upk_error(L, "BAD_FORMAT", "a %s block is not its count of rows of %d values",
                            lua_toboolean(L, 3) ? "text" : "data", (int)ncols);
  lua_pushboolean(L, 1);
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
    sql_fail(L, SQL_HANDLE_DBC, c->dbc, fn, c);
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
** db:load(block, { insert =, columns =, per_statement =, row_type =, record_text = }) -> rows
** Inserts the rows of a data block of columns values each with multi-row
** statements "<insert> VALUES (...),(...)", per_statement rows each (1000).
** With row_type (PostgreSQL: the table's quoted name) each statement is
** "<insert> SELECT * FROM unnest(CAST(? AS <row_type>[]))" with the rows as
** the text of an array of records, bound as a parameter: the server reads
** that much faster than it parses VALUES lists, and the driver does not
** scan it as SQL text; the last statement then still runs when db:load
** returns, and the next call on the connection waits for it and raises its
** error. With record_text (row_type only) block is a text block of record
** text, bound whole as the array's text in one statement.
*/
int conn_load(lua_State *L) {
  static const char *const keys[] = {"insert", "columns", "per_statement", "row_type", "record_text", NULL};
  Conn *c = sql_checklive(L, 1, "db:load");
  size_t plen, blen, tlen = 0;
  const unsigned char *blk = (const unsigned char *)sql_checkstring(L, 2, "db:load", &blen);
  if (!lua_istable(L, 3)) return upk_error(L, "EINVAL", "db:load: options must be a table, got %s", luaL_typename(L, 3));
  upk_checkopts(L, 3, "db:load", keys);
  const char *prefix = upk_optstring(L, 3, "db:load", "insert", NULL);
  lua_Integer ncols = upk_optinteger(L, 3, "db:load", "columns", 0);
  lua_Integer per = upk_optinteger(L, 3, "db:load", "per_statement", 1000);
  const char *rowtype = upk_optstring(L, 3, "db:load", "row_type", NULL);
  int text = upk_optboolean(L, 3, "db:load", "record_text", 0);
  if (!prefix || ncols < 1)
    return upk_error(L, "EINVAL", "db:load: options 'insert' (the INSERT INTO head) and 'columns' (> 0) are required");
  plen = strlen(prefix);
  if (rowtype) tlen = strlen(rowtype);
  int pgarray = rowtype != NULL;
  if (text && !pgarray) return upk_error(L, "EINVAL", "db:load: record_text needs row_type (PostgreSQL)");
  if (!pgarray) load_finish(L, c, "db:load");
  if (c->ahead) prefetch_join(c->ahead);
  if (per < 1) per = 1;
  if (blen < 4) return upk_error(L, "BAD_FORMAT", "db:load: a data block is too short");
  uint32_t rows = bf_get_u32(blk);
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
      ok = buf_add(b, "{", 1) && add_rows(b, &p, e, ncols, pgarray, n, &done);
      if (ok > 0) ok = buf_add(b, "}", 1) && buf_add(sqlb, prefix, plen) &&
                       buf_addstr(sqlb, " SELECT * FROM unnest(CAST(? AS ") && buf_add(sqlb, rowtype, tlen) &&
                       buf_addstr(sqlb, "[]))");
      if (ok > 0) exec_behind(L, c, sqlb, b, "db:load");
    } else {
      ok = buf_add(b, prefix, plen) && buf_addstr(b, " VALUES ");
      if (ok) ok = add_rows(b, &p, e, ncols, pgarray, n, &done);
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
