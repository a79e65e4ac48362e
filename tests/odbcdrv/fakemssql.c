/*
** A scripted ODBC driver that answers like Microsoft SQL Server, for the
** tests (never shipped). unixODBC loads it from an odbcinst.ini the tests
** write, or from its path in Driver=. It reads a JSON script, named by the
** connection string's UpkitScript= or the UPKIT_FAKE_MSSQL environment
** variable:
**
**   { "log": "<file>",                       every statement received, JSON lines
**     "dbms_version": "15.00.4153",          SQL_DBMS_VER (SQL Server 2019 CU)
**     "database": "master", "user": "dbo",   (SQL_DATABASE_NAME: Database= when given)
**     "self_signed": true,                   a certificate Driver 18 rejects unless
**                                            TrustServerCertificate=yes or Encrypt=no
**     "connect_error": [ {state, native, message}, ... ],
**     "forms": [ { "prefix": "BACKUP DATABASE ", "regex": "^BACKUP DATABASE ...$",
**                  "source": "MS-Learn: BACKUP (Transact-SQL)" } ],
**     "rules": [ { "match": "substring", "regex": "POSIX ERE the statement matches",
**                  "params": "substring of the params' JSON",
**                  "once": true, "writes": { "path": f, "bytes": n },
**                  "results": [ { "messages": [ {state, native, message} ],
**                                 "columns": [ ["name", "int|bigint|text|bit|datetime|decimal"] ],
**                                 "rows": [ [v, ...] ], "rowcount": n,
**                                 "error": [ {state, native, message}, ... ] } ] } ] }
**
** A statement that begins with a form's prefix must match the form's
** regex (the documented syntax, tests/sim/FIDELITY.md section 10), or it is
** refused before any rule: HY000 "not the documented form", logged as
** "refused". A statement runs the first rule whose match (and params) it
** contains (a match that starts with ^ must begin the statement) and whose
** regex, if any, it matches. Its
** results come one per SQLExecDirect/SQLMoreResults, as SQL Server sends
** them: an element with messages returns SQL_SUCCESS_WITH_INFO, one with an
** error SQL_ERROR (after its messages). A statement no rule answers fails
** with HY000 "no scripted answer" and is logged as "unanswered". Passwords
** (PWD=, Password=) are removed from the connection string before it is
** logged.
*/
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <regex.h>
#include <sql.h>
#include <sqlext.h>
#include <cjson/cJSON.h>

#define EXPORT __attribute__((visibility("default")))
#define PREFIX "[Microsoft][ODBC Driver %d for SQL Server]"
/* Windows' old built-in driver ("SQL Server", SQLSRV32) says this instead */
#define OLD_PREFIX "[Microsoft][ODBC SQL Server Driver]"

enum { H_ENV = 1, H_DBC, H_STMT };

typedef struct { char state[6]; SQLINTEGER native; char *message; } Diag;

typedef struct {
  int type;
  Diag diags[16];
  int ndiags;
} Head;

typedef struct Env { Head h; } Env;

struct Stmt;

typedef struct Dbc {
  Head h;
  struct Stmt *stmts;        /* statements, freed with the connection (SQLDisconnect) */
  cJSON *script;
  char *logpath;
  char *database;            /* Database= of the connection string */
  int driver_major;
  int connected;
} Dbc;

typedef struct { SQLSMALLINT ctype; SQLPOINTER buf; SQLLEN len; SQLLEN *ind; } Bind;

typedef struct Stmt {
  Head h;
  Dbc *dbc;
  struct Stmt *next;
  char *sql;                 /* prepared text */
  cJSON *results;            /* the rule's results (borrowed) */
  int ri;                    /* current result */
  cJSON *cols, *rows;        /* current result set */
  int row;                   /* next row of rows to fetch */
  int cur;                   /* row the cursor is on (for SQLGetData) */
  SQLLEN rowcount;
  Bind binds[64];
  Bind params[64];
  SQLULEN arraysize;
  SQLULEN *fetched;
  SQLLEN getdata_off[64];
} Stmt;

/* ------------------------------------------------------------------ */

static void clear_diags(Head *h) {
  for (int i = 0; i < h->ndiags; i++) free(h->diags[i].message);
  h->ndiags = 0;
}

static void add_diag(Head *h, const char *state, SQLINTEGER native, const char *fmt, ...) {
  if (h->ndiags >= 16) return;
  Diag *d = &h->diags[h->ndiags++];
  snprintf(d->state, sizeof d->state, "%s", state);
  d->native = native;
  va_list ap;
  va_start(ap, fmt);
  if (vasprintf(&d->message, fmt, ap) < 0) d->message = NULL;
  va_end(ap);
}

/* Add the records of a JSON array [{state, native, message}] as SQL Server sends them. */
static void add_records(Head *h, int major, const cJSON *arr) {
  const cJSON *r;
  cJSON_ArrayForEach(r, arr) {
    const cJSON *st = cJSON_GetObjectItem(r, "state"), *nat = cJSON_GetObjectItem(r, "native"),
                *msg = cJSON_GetObjectItem(r, "message");
    const char *text = cJSON_IsString(msg) ? msg->valuestring : "";
    const char *state = cJSON_IsString(st) ? st->valuestring : "42000";
    int native = cJSON_IsNumber(nat) ? nat->valueint : 0;
    if (major == 0) add_diag(h, state, native, OLD_PREFIX "[SQL Server]%s", text);
    else add_diag(h, state, native, PREFIX "[SQL Server]%s", major, text);
  }
}

static char *redact(const char *cs) {
  size_t n = strlen(cs);
  char *out = malloc(n + 1);
  size_t o = 0;
  const char *p = cs;
  while (*p) {
    const char *start = p;
    while (*p && *p != '=' && *p != ';') p++;
    const char *keyend = p;
    if (*p == '=') {
      p++;
      if (*p == '{') {
        p++;
        while (*p && !(*p == '}' && p[1] != '}')) p += (*p == '}' ? 2 : 1);
        if (*p) p++;
      }
      while (*p && *p != ';') p++;
    }
    while (start < keyend && *start == ' ') start++;
    size_t kl = (size_t)(keyend - start);
    while (kl && start[kl - 1] == ' ') kl--;
    int secret = (kl == 3 && strncasecmp(start, "pwd", 3) == 0) || (kl == 8 && strncasecmp(start, "password", 8) == 0);
    if (*p == ';') p++;
    if (!secret) { memcpy(out + o, start, (size_t)(p - start)); o += (size_t)(p - start); }
  }
  out[o] = 0;
  return out;
}

/* The value of key in a connection string (braces removed), malloc'ed, or NULL. */
static char *conn_value(const char *cs, const char *key) {
  const char *p = cs;
  size_t kl = strlen(key);
  while (*p) {
    while (*p == ' ' || *p == ';') p++;
    const char *k = p;
    while (*p && *p != '=' && *p != ';') p++;
    const char *ke = p;
    while (ke > k && ke[-1] == ' ') ke--;
    if (*p != '=') continue;
    p++;
    const char *v = p, *ve;
    if (*p == '{') {
      v = ++p;
      while (*p && !(*p == '}' && p[1] != '}')) p += (*p == '}' ? 2 : 1);
      ve = p;
      if (*p) p++;
      while (*p && *p != ';') p++;
    } else {
      while (*p && *p != ';') p++;
      ve = p;
    }
    if ((size_t)(ke - k) == kl && strncasecmp(k, key, kl) == 0) {
      char *out = malloc((size_t)(ve - v) + 1);
      memcpy(out, v, (size_t)(ve - v));
      out[ve - v] = 0;
      return out;
    }
  }
  return NULL;
}

static void log_event(Dbc *c, cJSON *ev) {
  if (!c->logpath) { cJSON_Delete(ev); return; }
  char *s = cJSON_PrintUnformatted(ev);
  FILE *f = fopen(c->logpath, "a");
  if (f && s) { fputs(s, f); fputc('\n', f); }
  if (f) fclose(f);
  free(s);
  cJSON_Delete(ev);
}

static const char *jstr(const cJSON *o, const char *k, const char *dflt) {
  const cJSON *v = cJSON_GetObjectItem(o, k);
  return cJSON_IsString(v) ? v->valuestring : dflt;
}

/* ------------------------------------------------------------------ */
/* Handles */

EXPORT SQLRETURN SQLAllocHandle(SQLSMALLINT type, SQLHANDLE in, SQLHANDLE *out) {
  if (type == SQL_HANDLE_ENV) {
    Env *e = calloc(1, sizeof *e);
    e->h.type = H_ENV;
    *out = e;
  } else if (type == SQL_HANDLE_DBC) {
    Dbc *c = calloc(1, sizeof *c);
    c->h.type = H_DBC;
    c->driver_major = 17;
    *out = c;
  } else if (type == SQL_HANDLE_STMT) {
    Stmt *s = calloc(1, sizeof *s);
    s->h.type = H_STMT;
    s->dbc = in;
    s->arraysize = 1;
    s->next = s->dbc->stmts;
    s->dbc->stmts = s;
    *out = s;
  } else {
    return SQL_ERROR;
  }
  return SQL_SUCCESS;
}

EXPORT SQLRETURN SQLAllocEnv(SQLHENV *e) { return SQLAllocHandle(SQL_HANDLE_ENV, NULL, e); }
EXPORT SQLRETURN SQLAllocConnect(SQLHENV e, SQLHDBC *c) { return SQLAllocHandle(SQL_HANDLE_DBC, e, c); }
EXPORT SQLRETURN SQLAllocStmt(SQLHDBC c, SQLHSTMT *s) { return SQLAllocHandle(SQL_HANDLE_STMT, c, s); }

static void stmt_reset(Stmt *s) {
  s->results = NULL;
  s->cols = s->rows = NULL;
  s->ri = 0;
  s->row = s->cur = 0;
  s->rowcount = -1;
}

static void stmt_free(Stmt *s) {
  clear_diags(&s->h);
  free(s->sql);
  free(s);
}

/* Free every statement of the connection (SQLDisconnect does, per the ODBC rules). */
static void free_stmts(Dbc *c) {
  while (c->stmts) {
    Stmt *next = c->stmts->next;
    stmt_free(c->stmts);
    c->stmts = next;
  }
}

EXPORT SQLRETURN SQLFreeHandle(SQLSMALLINT type, SQLHANDLE h) {
  if (!h) return SQL_INVALID_HANDLE;
  if (type == SQL_HANDLE_STMT) {
    Stmt *s = h;
    for (Stmt **p = &s->dbc->stmts; *p; p = &(*p)->next) {
      if (*p == s) { *p = s->next; break; }
    }
    stmt_free(s);
    return SQL_SUCCESS;
  }
  clear_diags(h);
  if (type == SQL_HANDLE_DBC) {
    Dbc *c = h;
    free_stmts(c);
    cJSON_Delete(c->script);
    free(c->logpath);
    free(c->database);
  }
  free(h);
  return SQL_SUCCESS;
}

EXPORT SQLRETURN SQLFreeEnv(SQLHENV e) { return SQLFreeHandle(SQL_HANDLE_ENV, e); }
EXPORT SQLRETURN SQLFreeConnect(SQLHDBC c) { return SQLFreeHandle(SQL_HANDLE_DBC, c); }

EXPORT SQLRETURN SQLFreeStmt(SQLHSTMT h, SQLUSMALLINT opt) {
  Stmt *s = h;
  if (opt == SQL_DROP) return SQLFreeHandle(SQL_HANDLE_STMT, h);
  if (opt == SQL_CLOSE) { s->cols = s->rows = NULL; s->results = NULL; }
  if (opt == SQL_UNBIND) memset(s->binds, 0, sizeof s->binds);
  if (opt == SQL_RESET_PARAMS) memset(s->params, 0, sizeof s->params);
  return SQL_SUCCESS;
}

EXPORT SQLRETURN SQLCloseCursor(SQLHSTMT h) { return SQLFreeStmt(h, SQL_CLOSE); }

EXPORT SQLRETURN SQLSetEnvAttr(SQLHENV e, SQLINTEGER a, SQLPOINTER v, SQLINTEGER l) { return SQL_SUCCESS; }

EXPORT SQLRETURN SQLGetEnvAttr(SQLHENV e, SQLINTEGER a, SQLPOINTER v, SQLINTEGER l, SQLINTEGER *o) {
  if (v) *(SQLINTEGER *)v = SQL_OV_ODBC3;
  return SQL_SUCCESS;
}

EXPORT SQLRETURN SQLSetConnectAttr(SQLHDBC c, SQLINTEGER a, SQLPOINTER v, SQLINTEGER l) { return SQL_SUCCESS; }

EXPORT SQLRETURN SQLGetConnectAttr(SQLHDBC c, SQLINTEGER a, SQLPOINTER v, SQLINTEGER l, SQLINTEGER *o) {
  if (v) *(SQLULEN *)v = a == SQL_ATTR_AUTOCOMMIT ? SQL_AUTOCOMMIT_ON : 0;
  return SQL_SUCCESS;
}

EXPORT SQLRETURN SQLSetStmtAttr(SQLHSTMT h, SQLINTEGER a, SQLPOINTER v, SQLINTEGER l) {
  Stmt *s = h;
  if (a == SQL_ATTR_ROW_ARRAY_SIZE) s->arraysize = (SQLULEN)v ? (SQLULEN)v : 1;
  if (a == SQL_ATTR_ROWS_FETCHED_PTR) s->fetched = v;
  return SQL_SUCCESS;
}

EXPORT SQLRETURN SQLGetStmtAttr(SQLHSTMT h, SQLINTEGER a, SQLPOINTER v, SQLINTEGER l, SQLINTEGER *o) {
  Stmt *s = h;
  if (!v) return SQL_SUCCESS;
  if (a == SQL_ATTR_ROW_ARRAY_SIZE) *(SQLULEN *)v = s->arraysize;
  else if (a == SQL_ATTR_APP_ROW_DESC || a == SQL_ATTR_APP_PARAM_DESC || a == SQL_ATTR_IMP_ROW_DESC ||
           a == SQL_ATTR_IMP_PARAM_DESC) *(SQLPOINTER *)v = s;
  else *(SQLULEN *)v = 0;
  return SQL_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* Connect */

static cJSON *load_script(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *text = malloc((size_t)n + 1);
  size_t got = fread(text, 1, (size_t)n, f);
  text[got] = 0;
  fclose(f);
  cJSON *j = cJSON_Parse(text);
  free(text);
  return j;
}

static int yes(const char *v) {
  return v && (strcasecmp(v, "yes") == 0 || strcasecmp(v, "mandatory") == 0 || strcasecmp(v, "strict") == 0);
}

EXPORT SQLRETURN SQLDriverConnect(SQLHDBC h, SQLHWND w, SQLCHAR *in, SQLSMALLINT inlen, SQLCHAR *out,
                                  SQLSMALLINT outmax, SQLSMALLINT *outlen, SQLUSMALLINT completion) {
  Dbc *c = h;
  clear_diags(&c->h);
  size_t n = inlen == SQL_NTS ? strlen((char *)in) : (size_t)inlen;
  char *cs = malloc(n + 1);
  memcpy(cs, in, n);
  cs[n] = 0;
  char *driver = conn_value(cs, "Driver");
  /* "ODBC Driver 18 for SQL Server", "ODBC Driver 17 ...", or the old "SQL Server" */
  const char *d = driver ? strcasestr(driver, "ODBC Driver ") : NULL;
  if (d) c->driver_major = atoi(d + 12);
  else if (driver && strcasecmp(driver, "SQL Server") == 0) c->driver_major = 0;
  free(c->database);
  c->database = conn_value(cs, "Database");
  char *script = conn_value(cs, "UpkitScript");
  const char *path = script ? script : getenv("UPKIT_FAKE_MSSQL");
  c->script = path ? load_script(path) : NULL;
  free(script);
  SQLRETURN rc = SQL_SUCCESS;
  if (!c->script) {
    add_diag(&c->h, "HY000", 0, "[upkit test driver] no script (UpkitScript= or UPKIT_FAKE_MSSQL): %s", path ? path : "none");
    free(cs);
    free(driver);
    return SQL_ERROR;
  }
  const char *lp = jstr(c->script, "log", NULL);
  c->logpath = lp ? strdup(lp) : NULL;
  char *red = redact(cs);
  cJSON *ev = cJSON_CreateObject();
  cJSON_AddStringToObject(ev, "event", "connect");
  cJSON_AddStringToObject(ev, "connection", red);
  cJSON_AddStringToObject(ev, "driver", driver ? driver : "");
  free(red);
  /*
  ** Driver 18 encrypts by default and checks the certificate (Driver 17 and
  ** the old one do not). Encrypt takes yes/mandatory, no/optional and strict
  ** from Driver 18, yes and no before ("DSN and Connection String Keywords",
  ** Encrypt); strict ignores TrustServerCertificate. Any other value is
  ** refused here (what a real driver does with one is unverified).
  */
  char *enc = conn_value(cs, "Encrypt"), *tsc = conn_value(cs, "TrustServerCertificate");
  int encrypt = enc ? yes(enc) : c->driver_major >= 18;
  int strict = enc && strcasecmp(enc, "strict") == 0;
  int known = !enc || strcasecmp(enc, "yes") == 0 || strcasecmp(enc, "no") == 0 ||
              (c->driver_major >= 18 && (strict || strcasecmp(enc, "mandatory") == 0 || strcasecmp(enc, "optional") == 0));
  const cJSON *err = cJSON_GetObjectItem(c->script, "connect_error");
  if (!known) {
    add_diag(&c->h, "08001", 0, "[upkit test driver] Encrypt=%s is not a value this driver documents", enc);
    rc = SQL_ERROR;
  } else if (encrypt && (strict || !yes(tsc)) && cJSON_IsTrue(cJSON_GetObjectItem(c->script, "self_signed"))) {
    add_diag(&c->h, "08001", -1, PREFIX "SSL Provider: [error:0A000086:SSL routines::certificate verify failed:self-signed certificate]",
             c->driver_major);
    add_diag(&c->h, "08001", -1, PREFIX "Client unable to establish connection", c->driver_major);
    rc = SQL_ERROR;
  } else if (cJSON_IsArray(err)) {
    add_records(&c->h, c->driver_major, err);
    rc = SQL_ERROR;
  } else {
    c->connected = 1;
  }
  cJSON_AddBoolToObject(ev, "ok", rc == SQL_SUCCESS);
  cJSON_AddBoolToObject(ev, "encrypt", encrypt);
  log_event(c, ev);
  if (out && outmax > 0) {
    snprintf((char *)out, (size_t)outmax, "%s", "");
    if (outlen) *outlen = 0;
  }
  free(enc);
  free(tsc);
  free(driver);
  free(cs);
  return rc;
}

EXPORT SQLRETURN SQLConnect(SQLHDBC h, SQLCHAR *dsn, SQLSMALLINT l1, SQLCHAR *uid, SQLSMALLINT l2, SQLCHAR *pwd,
                            SQLSMALLINT l3) {
  add_diag(h, "IM001", 0, "[upkit test driver] SQLConnect is not supported; use SQLDriverConnect");
  return SQL_ERROR;
}

EXPORT SQLRETURN SQLDisconnect(SQLHDBC h) {
  Dbc *c = h;
  c->connected = 0;
  free_stmts(c);
  return SQL_SUCCESS;
}

static SQLRETURN put_str(const char *v, SQLPOINTER out, SQLSMALLINT max, SQLSMALLINT *len) {
  size_t n = strlen(v);
  if (len) *len = (SQLSMALLINT)n;
  if (out && max > 0) snprintf(out, (size_t)max, "%s", v);
  return out && (size_t)max <= n ? SQL_SUCCESS_WITH_INFO : SQL_SUCCESS;
}

EXPORT SQLRETURN SQLGetInfo(SQLHDBC h, SQLUSMALLINT what, SQLPOINTER out, SQLSMALLINT max, SQLSMALLINT *len) {
  Dbc *c = h;
  char drv[64];
  switch (what) {
    case SQL_DBMS_NAME: return put_str("Microsoft SQL Server", out, max, len);
    case SQL_DBMS_VER: return put_str(jstr(c->script, "dbms_version", "15.00.4153"), out, max, len);
    case SQL_DRIVER_NAME:
      snprintf(drv, sizeof drv, "libmsodbcsql-%d.so (upkit test driver)", c->driver_major);
      return put_str(drv, out, max, len);
    case SQL_DRIVER_VER: return put_str("17.10.0006", out, max, len);
    case SQL_DRIVER_ODBC_VER: return put_str("03.80", out, max, len);
    case SQL_DATABASE_NAME: return put_str(c->database ? c->database : jstr(c->script, "database", "master"), out, max, len);
    case SQL_USER_NAME: return put_str(jstr(c->script, "user", "dbo"), out, max, len);
    case SQL_SERVER_NAME: return put_str(jstr(c->script, "server", "SQL01"), out, max, len);
    case SQL_SEARCH_PATTERN_ESCAPE: return put_str("\\", out, max, len);
    case SQL_IDENTIFIER_QUOTE_CHAR: return put_str("\"", out, max, len);
    case SQL_DATA_SOURCE_READ_ONLY: return put_str("N", out, max, len);
    case SQL_GETDATA_EXTENSIONS:
      if (out) *(SQLUINTEGER *)out = SQL_GD_ANY_COLUMN | SQL_GD_ANY_ORDER | SQL_GD_BOUND;
      return SQL_SUCCESS;
    case SQL_CURSOR_COMMIT_BEHAVIOR: case SQL_CURSOR_ROLLBACK_BEHAVIOR:
      if (out) *(SQLUSMALLINT *)out = SQL_CB_CLOSE;
      return SQL_SUCCESS;
    case SQL_TXN_CAPABLE:
      if (out) *(SQLUSMALLINT *)out = SQL_TC_ALL;
      return SQL_SUCCESS;
    default:
      if (out && max >= (SQLSMALLINT)sizeof(SQLUINTEGER)) *(SQLUINTEGER *)out = 0;
      else if (out) *(SQLUSMALLINT *)out = 0;
      return SQL_SUCCESS;
  }
}

EXPORT SQLRETURN SQLEndTran(SQLSMALLINT type, SQLHANDLE h, SQLSMALLINT how) {
  if (type == SQL_HANDLE_DBC) {
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "event", how == SQL_COMMIT ? "commit" : "rollback");
    log_event(h, ev);
  }
  return SQL_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* Statements */

EXPORT SQLRETURN SQLBindParameter(SQLHSTMT h, SQLUSMALLINT n, SQLSMALLINT io, SQLSMALLINT ctype, SQLSMALLINT sqltype,
                                  SQLULEN size, SQLSMALLINT digits, SQLPOINTER buf, SQLLEN len, SQLLEN *ind) {
  Stmt *s = h;
  if (n < 1 || n > 64) return SQL_ERROR;
  s->params[n - 1] = (Bind){ ctype, buf, len, ind };
  return SQL_SUCCESS;
}

/* UTF-16 (SQLWCHAR) to UTF-8, appended to a malloc'ed string. */
static char *from_wide(const SQLWCHAR *w, size_t units) {
  char *out = malloc(units * 3 + 1), *o = out;
  for (size_t i = 0; i < units; i++) {
    unsigned c = w[i];
    if (c >= 0xD800 && c < 0xDC00 && i + 1 < units) c = 0x10000 + ((c - 0xD800) << 10) + (w[++i] - 0xDC00);
    if (c < 0x80) *o++ = (char)c;
    else if (c < 0x800) { *o++ = (char)(0xC0 | c >> 6); *o++ = (char)(0x80 | (c & 63)); }
    else if (c < 0x10000) { *o++ = (char)(0xE0 | c >> 12); *o++ = (char)(0x80 | (c >> 6 & 63)); *o++ = (char)(0x80 | (c & 63)); }
    else { *o++ = (char)(0xF0 | c >> 18); *o++ = (char)(0x80 | (c >> 12 & 63)); *o++ = (char)(0x80 | (c >> 6 & 63)); *o++ = (char)(0x80 | (c & 63)); }
  }
  *o = 0;
  return out;
}

static cJSON *params_json(Stmt *s) {
  cJSON *a = cJSON_CreateArray();
  for (int i = 0; i < 64 && s->params[i].buf; i++) {
    Bind *p = &s->params[i];
    SQLLEN ind = p->ind ? *p->ind : SQL_NTS;
    cJSON *v;
    if (ind == SQL_NULL_DATA) v = cJSON_CreateNull();
    else if (p->ctype == SQL_C_SBIGINT) v = cJSON_CreateNumber((double)*(SQLBIGINT *)p->buf);
    else if (p->ctype == SQL_C_DOUBLE) v = cJSON_CreateNumber(*(double *)p->buf);
    else if (p->ctype == SQL_C_BIT) v = cJSON_CreateBool(*(unsigned char *)p->buf);
    else if (p->ctype == SQL_C_WCHAR) {
      char *t = from_wide(p->buf, ind == SQL_NTS ? 0 : (size_t)ind / sizeof(SQLWCHAR));
      v = cJSON_CreateString(t);
      free(t);
    } else {
      size_t n = ind == SQL_NTS ? strlen(p->buf) : (size_t)ind;
      char *t = malloc(n + 1);
      memcpy(t, p->buf, n);
      t[n] = 0;
      v = cJSON_CreateString(t);
      free(t);
    }
    cJSON_AddItemToArray(a, v);
  }
  return a;
}

static void write_file(const cJSON *w) {
  const char *path = jstr(w, "path", NULL);
  const cJSON *bytes = cJSON_GetObjectItem(w, "bytes");
  if (!path) return;
  FILE *f = fopen(path, "wb");
  if (!f) return;
  for (int i = 0; i < (cJSON_IsNumber(bytes) ? bytes->valueint : 0); i++) fputc('B' + i % 7, f);
  fclose(f);
}

/* Take the current result (s->ri): diagnostics, cursor or row count. */
static SQLRETURN open_result(Stmt *s) {
  Dbc *c = s->dbc;
  s->cols = s->rows = NULL;
  s->row = s->cur = 0;
  s->rowcount = -1;
  memset(s->getdata_off, 0, sizeof s->getdata_off);
  cJSON *r = cJSON_GetArrayItem(s->results, s->ri);
  if (!r) return SQL_NO_DATA;
  SQLRETURN rc = SQL_SUCCESS;
  const cJSON *msgs = cJSON_GetObjectItem(r, "messages");
  if (cJSON_GetArraySize(msgs) > 0) {
    add_records(&s->h, c->driver_major, msgs);
    rc = SQL_SUCCESS_WITH_INFO;
  }
  const cJSON *err = cJSON_GetObjectItem(r, "error");
  if (cJSON_IsArray(err)) {
    add_records(&s->h, c->driver_major, err);
    return SQL_ERROR;
  }
  const cJSON *cols = cJSON_GetObjectItem(r, "columns");
  if (cJSON_IsArray(cols)) {
    s->cols = (cJSON *)cols;
    s->rows = cJSON_GetObjectItem(r, "rows");
  } else {
    const cJSON *rc2 = cJSON_GetObjectItem(r, "rowcount");
    s->rowcount = cJSON_IsNumber(rc2) ? (SQLLEN)rc2->valuedouble : -1;
  }
  return rc;
}

/* Whether sql matches the POSIX extended regular expression re (1), not (0), or re is bad (-1). */
static int ere_match(const char *re, const char *sql) {
  regex_t rx;
  if (regcomp(&rx, re, REG_EXTENDED | REG_NOSUB) != 0) return -1;
  int hit = regexec(&rx, sql, 0, NULL, 0) == 0;
  regfree(&rx);
  return hit;
}

/* The form sql begins with the prefix of but does not match, or NULL. */
static const cJSON *wrong_form(Dbc *c, const char *sql) {
  const cJSON *f;
  cJSON_ArrayForEach(f, cJSON_GetObjectItem(c->script, "forms")) {
    const char *prefix = jstr(f, "prefix", ""), *re = jstr(f, "regex", NULL);
    if (re && strncmp(sql, prefix, strlen(prefix)) == 0 && ere_match(re, sql) != 1) return f;
  }
  return NULL;
}

static SQLRETURN execute(Stmt *s, const char *sql) {
  Dbc *c = s->dbc;
  clear_diags(&s->h);
  stmt_reset(s);
  cJSON *params = params_json(s);
  char *ptext = cJSON_PrintUnformatted(params);
  cJSON *ev = cJSON_CreateObject();
  cJSON_AddStringToObject(ev, "event", "exec");
  cJSON_AddStringToObject(ev, "sql", sql);
  cJSON_AddItemToObject(ev, "params", params);
  const cJSON *form = wrong_form(c, sql);
  if (form) {
    cJSON_AddBoolToObject(ev, "refused", 1);
    cJSON_AddStringToObject(ev, "form", jstr(form, "source", ""));
    log_event(c, ev);
    free(ptext);
    add_diag(&s->h, "HY000", 50001, "[upkit test driver] not the documented form of %s(%s): %s",
             jstr(form, "prefix", ""), jstr(form, "source", ""), sql);
    return SQL_ERROR;
  }
  cJSON *rules = cJSON_GetObjectItem(c->script, "rules"), *rule = NULL, *r;
  cJSON_ArrayForEach(r, rules) {
    const char *m = jstr(r, "match", ""), *pm = jstr(r, "params", NULL), *re = jstr(r, "regex", NULL);
    if (cJSON_IsTrue(cJSON_GetObjectItem(r, "used"))) continue;
    int hit = m[0] == '^' ? strncmp(sql, m + 1, strlen(m + 1)) == 0 : strstr(sql, m) != NULL;
    if (hit && re) hit = ere_match(re, sql) == 1;
    if (hit && (!pm || strstr(ptext, pm))) { rule = r; break; }
  }
  free(ptext);
  if (!rule) {
    cJSON_AddBoolToObject(ev, "unanswered", 1);
    log_event(c, ev);
    add_diag(&s->h, "HY000", 50000, "[upkit test driver] no scripted answer for: %s", sql);
    return SQL_ERROR;
  }
  log_event(c, ev);
  if (cJSON_IsTrue(cJSON_GetObjectItem(rule, "once"))) cJSON_AddBoolToObject(rule, "used", 1);
  const cJSON *w = cJSON_GetObjectItem(rule, "writes");
  if (w) write_file(w);
  s->results = cJSON_GetObjectItem(rule, "results");
  if (cJSON_GetArraySize(s->results) == 0) { s->rowcount = 0; return SQL_SUCCESS; }
  return open_result(s);
}

static char *text_arg(SQLCHAR *sql, SQLINTEGER len) {
  size_t n = len == SQL_NTS ? strlen((char *)sql) : (size_t)len;
  char *t = malloc(n + 1);
  memcpy(t, sql, n);
  t[n] = 0;
  return t;
}

EXPORT SQLRETURN SQLExecDirect(SQLHSTMT h, SQLCHAR *sql, SQLINTEGER len) {
  char *t = text_arg(sql, len);
  SQLRETURN rc = execute(h, t);
  free(t);
  return rc;
}

/*
** The catalog functions run as statements "CATALOG <kind> <schema>.<table>"
** (schema and table as given, empty when NULL), answered by the rules.
*/
static SQLRETURN catalog(SQLHSTMT h, const char *kind, SQLCHAR *schema, SQLSMALLINT sl, SQLCHAR *table, SQLSMALLINT tl) {
  char *sc = schema ? text_arg(schema, sl) : strdup(""), *tb = table ? text_arg(table, tl) : strdup("");
  char *q = NULL;
  if (asprintf(&q, "CATALOG %s %s.%s", kind, sc, tb) < 0) q = NULL;
  SQLRETURN rc = q ? execute(h, q) : SQL_ERROR;
  free(q);
  free(sc);
  free(tb);
  return rc;
}

EXPORT SQLRETURN SQLTables(SQLHSTMT h, SQLCHAR *cat, SQLSMALLINT cl, SQLCHAR *schema, SQLSMALLINT sl, SQLCHAR *table,
                           SQLSMALLINT tl, SQLCHAR *type, SQLSMALLINT yl) {
  return catalog(h, "TABLES", schema, sl, table, tl);
}

EXPORT SQLRETURN SQLColumns(SQLHSTMT h, SQLCHAR *cat, SQLSMALLINT cl, SQLCHAR *schema, SQLSMALLINT sl, SQLCHAR *table,
                            SQLSMALLINT tl, SQLCHAR *col, SQLSMALLINT ol) {
  return catalog(h, "COLUMNS", schema, sl, table, tl);
}

EXPORT SQLRETURN SQLPrimaryKeys(SQLHSTMT h, SQLCHAR *cat, SQLSMALLINT cl, SQLCHAR *schema, SQLSMALLINT sl,
                                SQLCHAR *table, SQLSMALLINT tl) {
  return catalog(h, "PRIMARY_KEYS", schema, sl, table, tl);
}

EXPORT SQLRETURN SQLStatistics(SQLHSTMT h, SQLCHAR *cat, SQLSMALLINT cl, SQLCHAR *schema, SQLSMALLINT sl,
                               SQLCHAR *table, SQLSMALLINT tl, SQLUSMALLINT unique, SQLUSMALLINT reserved) {
  return catalog(h, "STATISTICS", schema, sl, table, tl);
}

EXPORT SQLRETURN SQLPrepare(SQLHSTMT h, SQLCHAR *sql, SQLINTEGER len) {
  Stmt *s = h;
  free(s->sql);
  s->sql = text_arg(sql, len);
  return SQL_SUCCESS;
}

EXPORT SQLRETURN SQLExecute(SQLHSTMT h) {
  Stmt *s = h;
  return execute(s, s->sql ? s->sql : "");
}

EXPORT SQLRETURN SQLMoreResults(SQLHSTMT h) {
  Stmt *s = h;
  clear_diags(&s->h);
  if (!s->results) return SQL_NO_DATA;
  s->ri++;
  SQLRETURN rc = open_result(s);
  if (rc == SQL_NO_DATA) s->results = NULL;
  return rc;
}

EXPORT SQLRETURN SQLCancel(SQLHSTMT h) { return SQL_SUCCESS; }

EXPORT SQLRETURN SQLNumResultCols(SQLHSTMT h, SQLSMALLINT *n) {
  Stmt *s = h;
  *n = (SQLSMALLINT)(s->cols ? cJSON_GetArraySize(s->cols) : 0);
  return SQL_SUCCESS;
}

EXPORT SQLRETURN SQLRowCount(SQLHSTMT h, SQLLEN *n) {
  *n = ((Stmt *)h)->rowcount;
  return SQL_SUCCESS;
}

static const char *col_type(Stmt *s, int i) {
  return cJSON_GetArrayItem(cJSON_GetArrayItem(s->cols, i), 1)->valuestring;
}

static SQLSMALLINT sql_type(const char *t) {
  if (!strcmp(t, "int")) return SQL_INTEGER;
  if (!strcmp(t, "bigint")) return SQL_BIGINT;
  if (!strcmp(t, "bit")) return SQL_BIT;
  if (!strcmp(t, "datetime")) return SQL_TYPE_TIMESTAMP;
  if (!strcmp(t, "decimal")) return SQL_DECIMAL;
  return SQL_WVARCHAR;
}

EXPORT SQLRETURN SQLDescribeCol(SQLHSTMT h, SQLUSMALLINT n, SQLCHAR *name, SQLSMALLINT max, SQLSMALLINT *namelen,
                                SQLSMALLINT *type, SQLULEN *size, SQLSMALLINT *digits, SQLSMALLINT *nullable) {
  Stmt *s = h;
  cJSON *col = cJSON_GetArrayItem(s->cols, n - 1);
  if (!col) return SQL_ERROR;
  put_str(cJSON_GetArrayItem(col, 0)->valuestring, name, max, namelen);
  const char *t = col_type(s, n - 1);
  SQLSMALLINT st = sql_type(t);
  if (type) *type = st;
  if (size) {
    *size = st == SQL_INTEGER ? 10 : st == SQL_BIGINT ? 19 : st == SQL_BIT ? 1 : st == SQL_TYPE_TIMESTAMP ? 23
          : st == SQL_DECIMAL ? 38 : 4000;
  }
  if (digits) *digits = st == SQL_TYPE_TIMESTAMP ? 3 : 0;
  if (nullable) *nullable = SQL_NULLABLE;
  return SQL_SUCCESS;
}

EXPORT SQLRETURN SQLColAttribute(SQLHSTMT h, SQLUSMALLINT n, SQLUSMALLINT field, SQLPOINTER out, SQLSMALLINT max,
                                 SQLSMALLINT *len, SQLLEN *num) {
  Stmt *s = h;
  if (!cJSON_GetArrayItem(s->cols, n - 1)) return SQL_ERROR;
  const char *t = col_type(s, n - 1);
  if (field == SQL_DESC_TYPE_NAME) return put_str(!strcmp(t, "text") ? "nvarchar" : t, out, max, len);
  if (num) *num = 0;
  return SQL_SUCCESS;
}

EXPORT SQLRETURN SQLBindCol(SQLHSTMT h, SQLUSMALLINT n, SQLSMALLINT ctype, SQLPOINTER buf, SQLLEN len, SQLLEN *ind) {
  Stmt *s = h;
  if (n < 1 || n > 64) return SQL_ERROR;
  s->binds[n - 1] = (Bind){ ctype, buf, len, ind };
  return SQL_SUCCESS;
}

/* The text of a JSON value (numbers as integers when they are). */
static void value_text(const cJSON *v, char *out, size_t n) {
  if (cJSON_IsString(v)) snprintf(out, n, "%s", v->valuestring);
  else if (cJSON_IsBool(v)) snprintf(out, n, "%d", cJSON_IsTrue(v));
  else if (cJSON_IsNumber(v) && v->valuedouble == (double)(long long)v->valuedouble) snprintf(out, n, "%lld", (long long)v->valuedouble);
  else if (cJSON_IsNumber(v)) snprintf(out, n, "%.17g", v->valuedouble);
  else out[0] = 0;
}

/*
** Convert value v to C type ctype into buf (at most len bytes), from byte
** offset off of its text for SQLGetData. *ind gets the whole length left.
** Returns 1 when the value was cut short.
*/
static int convert(const cJSON *v, SQLSMALLINT ctype, SQLPOINTER buf, SQLLEN len, SQLLEN *ind, SQLLEN off) {
  static char text[65536];
  if (!v || cJSON_IsNull(v)) { if (ind) *ind = SQL_NULL_DATA; return 0; }
  value_text(v, text, sizeof text);
  switch (ctype) {
    case SQL_C_SBIGINT: *(SQLBIGINT *)buf = strtoll(text, NULL, 10); if (ind) *ind = 8; return 0;
    case SQL_C_LONG: case SQL_C_SLONG: *(SQLINTEGER *)buf = (SQLINTEGER)strtol(text, NULL, 10); if (ind) *ind = 4; return 0;
    case SQL_C_DOUBLE: *(double *)buf = strtod(text, NULL); if (ind) *ind = 8; return 0;
    case SQL_C_BIT: *(unsigned char *)buf = (unsigned char)(atoi(text) != 0); if (ind) *ind = 1; return 0;
    case SQL_C_TYPE_TIMESTAMP: {
      SQL_TIMESTAMP_STRUCT t = {0};
      int y = 0, mo = 0, d = 0, hh = 0, mi = 0, ss = 0;
      sscanf(text, "%d-%d-%d%*c%d:%d:%d", &y, &mo, &d, &hh, &mi, &ss);
      t.year = (SQLSMALLINT)y; t.month = (SQLUSMALLINT)mo; t.day = (SQLUSMALLINT)d;
      t.hour = (SQLUSMALLINT)hh; t.minute = (SQLUSMALLINT)mi; t.second = (SQLUSMALLINT)ss;
      memcpy(buf, &t, sizeof t);
      if (ind) *ind = sizeof t;
      return 0;
    }
    case SQL_C_WCHAR: {
      /* UTF-8 to UTF-16 */
      static SQLWCHAR w[65536];
      size_t units = 0;
      for (const unsigned char *p = (const unsigned char *)text; *p && units < 65534;) {
        unsigned c = *p++;
        if (c >= 0xF0) { c = (c & 7) << 18; c |= (*p++ & 63u) << 12; c |= (*p++ & 63u) << 6; c |= *p++ & 63u; }
        else if (c >= 0xE0) { c = (c & 15) << 12; c |= (*p++ & 63u) << 6; c |= *p++ & 63u; }
        else if (c >= 0xC0) { c = (c & 31) << 6; c |= *p++ & 63u; }
        if (c >= 0x10000) { c -= 0x10000; w[units++] = (SQLWCHAR)(0xD800 + (c >> 10)); w[units++] = (SQLWCHAR)(0xDC00 + (c & 1023)); }
        else w[units++] = (SQLWCHAR)c;
      }
      SQLLEN bytes = (SQLLEN)(units * sizeof(SQLWCHAR)) - off;
      if (bytes < 0) bytes = 0;
      if (ind) *ind = bytes;
      SQLLEN room = len - (SQLLEN)sizeof(SQLWCHAR);
      if (room < 0) return 1;
      SQLLEN put = bytes < room ? bytes : room & ~(SQLLEN)1;
      memcpy(buf, (char *)w + off, (size_t)put);
      ((SQLWCHAR *)buf)[put / 2] = 0;
      return put < bytes;
    }
    default: {
      SQLLEN bytes = (SQLLEN)strlen(text) - off;
      if (bytes < 0) bytes = 0;
      if (ind) *ind = bytes;
      int term = ctype == SQL_C_CHAR;
      SQLLEN room = len - term;
      if (room < 0) return 1;
      SQLLEN put = bytes < room ? bytes : room;
      memcpy(buf, text + off, (size_t)put);
      if (term) ((char *)buf)[put] = 0;
      return put < bytes;
    }
  }
}

EXPORT SQLRETURN SQLFetch(SQLHSTMT h) {
  Stmt *s = h;
  clear_diags(&s->h);
  if (!s->cols) {
    add_diag(&s->h, "24000", 0, "[upkit test driver] Invalid cursor state");
    return SQL_ERROR;
  }
  int nrows = cJSON_GetArraySize(s->rows), ncols = cJSON_GetArraySize(s->cols);
  if (s->row >= nrows) { if (s->fetched) *s->fetched = 0; return SQL_NO_DATA; }
  SQLULEN k = 0;
  int cut = 0;
  s->cur = s->row;
  for (; k < s->arraysize && s->row < nrows; k++, s->row++) {
    cJSON *row = cJSON_GetArrayItem(s->rows, s->row);
    for (int i = 0; i < ncols && i < 64; i++) {
      Bind *b = &s->binds[i];
      if (!b->buf) continue;
      cut |= convert(cJSON_GetArrayItem(row, i), b->ctype, (char *)b->buf + k * (SQLULEN)b->len, b->len,
                     b->ind ? b->ind + k : NULL, 0);
    }
  }
  memset(s->getdata_off, 0, sizeof s->getdata_off);
  if (s->fetched) *s->fetched = k;
  if (cut) { add_diag(&s->h, "01004", 0, "[upkit test driver] String data, right truncation"); return SQL_SUCCESS_WITH_INFO; }
  return SQL_SUCCESS;
}

EXPORT SQLRETURN SQLFetchScroll(SQLHSTMT h, SQLSMALLINT orient, SQLLEN off) {
  if (orient != SQL_FETCH_NEXT) return SQL_ERROR;
  return SQLFetch(h);
}

EXPORT SQLRETURN SQLSetPos(SQLHSTMT h, SQLSETPOSIROW row, SQLUSMALLINT op, SQLUSMALLINT lock) {
  Stmt *s = h;
  if (op != SQL_POSITION || row < 1) return SQL_ERROR;
  int first = s->row - (int)(s->fetched ? *s->fetched : 1);
  s->cur = first + (int)row - 1;
  memset(s->getdata_off, 0, sizeof s->getdata_off);
  return SQL_SUCCESS;
}

EXPORT SQLRETURN SQLGetData(SQLHSTMT h, SQLUSMALLINT n, SQLSMALLINT ctype, SQLPOINTER buf, SQLLEN len, SQLLEN *ind) {
  Stmt *s = h;
  if (!s->cols || n < 1 || n > 64) return SQL_ERROR;
  cJSON *v = cJSON_GetArrayItem(cJSON_GetArrayItem(s->rows, s->cur), n - 1);
  SQLLEN off = s->getdata_off[n - 1];
  if (off < 0) return SQL_NO_DATA;
  SQLLEN whole = 0;
  int cut = convert(v, ctype, buf, len, &whole, off);
  if (ind) *ind = whole;
  if (cut) {
    SQLLEN got = ctype == SQL_C_WCHAR ? (len - 2) & ~(SQLLEN)1 : ctype == SQL_C_CHAR ? len - 1 : len;
    s->getdata_off[n - 1] = off + got;
    return SQL_SUCCESS_WITH_INFO;
  }
  s->getdata_off[n - 1] = -1;
  return SQL_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* Diagnostics */

static Head *head(SQLHANDLE h) { return h; }

EXPORT SQLRETURN SQLGetDiagRec(SQLSMALLINT type, SQLHANDLE h, SQLSMALLINT i, SQLCHAR *state, SQLINTEGER *native,
                               SQLCHAR *msg, SQLSMALLINT max, SQLSMALLINT *len) {
  Head *hd = head(h);
  if (!hd || i < 1 || i > hd->ndiags) return SQL_NO_DATA;
  Diag *d = &hd->diags[i - 1];
  if (state) memcpy(state, d->state, 6);
  if (native) *native = d->native;
  return put_str(d->message ? d->message : "", msg, max, len);
}

EXPORT SQLRETURN SQLGetDiagField(SQLSMALLINT type, SQLHANDLE h, SQLSMALLINT i, SQLSMALLINT field, SQLPOINTER out,
                                 SQLSMALLINT max, SQLSMALLINT *len) {
  Head *hd = head(h);
  if (!hd) return SQL_INVALID_HANDLE;
  if (field == SQL_DIAG_NUMBER) { *(SQLINTEGER *)out = hd->ndiags; return SQL_SUCCESS; }
  if (field == SQL_DIAG_RETURNCODE) { *(SQLRETURN *)out = SQL_SUCCESS; return SQL_SUCCESS; }
  if (field == SQL_DIAG_ROW_COUNT) { *(SQLLEN *)out = type == SQL_HANDLE_STMT ? ((Stmt *)h)->rowcount : 0; return SQL_SUCCESS; }
  if (field == SQL_DIAG_CURSOR_ROW_COUNT || field == SQL_DIAG_DYNAMIC_FUNCTION_CODE) { *(SQLLEN *)out = 0; return SQL_SUCCESS; }
  if (field == SQL_DIAG_DYNAMIC_FUNCTION) return put_str("", out, max, len);
  if (i < 1 || i > hd->ndiags) return SQL_NO_DATA;
  Diag *d = &hd->diags[i - 1];
  switch (field) {
    case SQL_DIAG_SQLSTATE: return put_str(d->state, out, max, len);
    case SQL_DIAG_NATIVE: *(SQLINTEGER *)out = d->native; return SQL_SUCCESS;
    case SQL_DIAG_MESSAGE_TEXT: return put_str(d->message ? d->message : "", out, max, len);
    case SQL_DIAG_CLASS_ORIGIN: case SQL_DIAG_SUBCLASS_ORIGIN: return put_str("ODBC 3.0", out, max, len);
    case SQL_DIAG_CONNECTION_NAME: case SQL_DIAG_SERVER_NAME: return put_str("", out, max, len);
    case SQL_DIAG_ROW_NUMBER: *(SQLLEN *)out = SQL_ROW_NUMBER_UNKNOWN; return SQL_SUCCESS;
    case SQL_DIAG_COLUMN_NUMBER: *(SQLINTEGER *)out = SQL_COLUMN_NUMBER_UNKNOWN; return SQL_SUCCESS;
    default: return SQL_ERROR;
  }
}

EXPORT SQLRETURN SQLError(SQLHENV e, SQLHDBC c, SQLHSTMT s, SQLCHAR *state, SQLINTEGER *native, SQLCHAR *msg,
                          SQLSMALLINT max, SQLSMALLINT *len) {
  SQLHANDLE h = s ? s : c ? c : e;
  Head *hd = head(h);
  if (!hd || hd->ndiags == 0) return SQL_NO_DATA;
  SQLRETURN rc = SQLGetDiagRec(0, h, 1, state, native, msg, max, len);
  free(hd->diags[0].message);
  memmove(hd->diags, hd->diags + 1, (size_t)(hd->ndiags - 1) * sizeof *hd->diags);
  hd->ndiags--;
  return rc;
}
