/*
** http.c: upkit._http, HTTP transfers through libcurl.
** A client owns one easy handle for single requests and downloads, a pool
** of easy handles driven by one multi handle for c:all, and a share handle
** so that all of them reuse the same connections, DNS entries and TLS
** sessions. Policy (retries, redirects, redaction, tracing, JSON) lives in
** lua/upkit/http.lua; this file performs one attempt and reports it.
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "upkit.h"

#define CLIENT_MT "upkit.http.Client"
#define ERROR_BODY_MAX (64 * 1024)
#define BUF_KEEP (1 << 20)
#define PROGRESS_EVERY 0.2

typedef struct Buf {
  char *p;
  size_t n, cap;
  int oom;
} Buf;

typedef struct Xfer {
  CURL *easy;
  struct curl_slist *hdrs;
  Buf body, head;
  const char *label;   /* "GET url" with secrets removed; pinned by the request table */
  FILE *out;           /* download target, or NULL */
  curl_off_t offset;   /* bytes already in the file when this attempt began */
  curl_off_t written;  /* bytes written by this attempt */
  int started;         /* first byte of a download body seen */
  int werr;            /* errno of a failed write */
  lua_State *L;
  int progress;        /* stack index of the progress function, or 0 */
  int cberr;           /* registry reference of the callback's error */
  double lastcb;
  lua_Integer index;   /* position in c:all's list; 0 when idle */
  char errbuf[CURL_ERROR_SIZE];
} Xfer;

typedef struct Client {
  CURLSH *share;
  CURLM *multi;
  Xfer one;
  Xfer *pool;
  int npool;
  int open;
} Client;

/*
** Every CURLcode a transfer can end with: its name (kept in the error's
** curl_code field) and the code of docs/errors.md it is raised as.
*/
#define N(e, code) {e, #e, code}
static const struct { CURLcode rc; const char *name, *code; } curlnames[] = {
  N(CURLE_UNSUPPORTED_PROTOCOL, "EINVAL"), N(CURLE_FAILED_INIT, "ENOMEM"),
  N(CURLE_URL_MALFORMAT, "EINVAL"), N(CURLE_NOT_BUILT_IN, "UNSUPPORTED"),
  N(CURLE_COULDNT_RESOLVE_PROXY, "CONNECT_FAILED"), N(CURLE_COULDNT_RESOLVE_HOST, "CONNECT_FAILED"),
  N(CURLE_COULDNT_CONNECT, "CONNECT_FAILED"), N(CURLE_WEIRD_SERVER_REPLY, "NETWORK_ERROR"),
  N(CURLE_REMOTE_ACCESS_DENIED, "PERMISSION_DENIED"), N(CURLE_HTTP2, "NETWORK_ERROR"),
  N(CURLE_PARTIAL_FILE, "NETWORK_ERROR"), N(CURLE_HTTP_RETURNED_ERROR, "HTTP_STATUS"),
  N(CURLE_WRITE_ERROR, "EIO"), N(CURLE_UPLOAD_FAILED, "NETWORK_ERROR"),
  N(CURLE_READ_ERROR, "EIO"), N(CURLE_OUT_OF_MEMORY, "ENOMEM"),
  N(CURLE_OPERATION_TIMEDOUT, "TIMEOUT"), N(CURLE_RANGE_ERROR, "NETWORK_ERROR"),
  N(CURLE_HTTP_POST_ERROR, "NETWORK_ERROR"), N(CURLE_SSL_CONNECT_ERROR, "TLS_FAILED"),
  N(CURLE_BAD_DOWNLOAD_RESUME, "NETWORK_ERROR"), N(CURLE_FILE_COULDNT_READ_FILE, "EIO"),
  N(CURLE_FUNCTION_NOT_FOUND, "UNSUPPORTED"), N(CURLE_ABORTED_BY_CALLBACK, "INTERRUPTED"),
  N(CURLE_BAD_FUNCTION_ARGUMENT, "EINVAL"), N(CURLE_INTERFACE_FAILED, "CONNECT_FAILED"),
  N(CURLE_TOO_MANY_REDIRECTS, "NETWORK_ERROR"), N(CURLE_UNKNOWN_OPTION, "EINVAL"),
  N(CURLE_SETOPT_OPTION_SYNTAX, "EINVAL"), N(CURLE_GOT_NOTHING, "NETWORK_ERROR"),
  N(CURLE_SSL_ENGINE_NOTFOUND, "TLS_FAILED"), N(CURLE_SSL_ENGINE_SETFAILED, "TLS_FAILED"),
  N(CURLE_SEND_ERROR, "NETWORK_ERROR"), N(CURLE_RECV_ERROR, "NETWORK_ERROR"),
  N(CURLE_SSL_CERTPROBLEM, "TLS_FAILED"), N(CURLE_SSL_CIPHER, "TLS_FAILED"),
  N(CURLE_PEER_FAILED_VERIFICATION, "TLS_FAILED"), N(CURLE_BAD_CONTENT_ENCODING, "NETWORK_ERROR"),
  N(CURLE_FILESIZE_EXCEEDED, "NETWORK_ERROR"), N(CURLE_USE_SSL_FAILED, "TLS_FAILED"),
  N(CURLE_SEND_FAIL_REWIND, "NETWORK_ERROR"), N(CURLE_SSL_ENGINE_INITFAILED, "TLS_FAILED"),
  N(CURLE_LOGIN_DENIED, "AUTH_FAILED"), N(CURLE_SSL_CACERT_BADFILE, "TLS_FAILED"),
  N(CURLE_REMOTE_FILE_NOT_FOUND, "NOT_FOUND"), N(CURLE_SSL_SHUTDOWN_FAILED, "TLS_FAILED"),
  N(CURLE_AGAIN, "NETWORK_ERROR"), N(CURLE_SSL_CRL_BADFILE, "TLS_FAILED"),
  N(CURLE_SSL_ISSUER_ERROR, "TLS_FAILED"), N(CURLE_CHUNK_FAILED, "NETWORK_ERROR"),
  N(CURLE_NO_CONNECTION_AVAILABLE, "CONNECT_FAILED"),
  N(CURLE_SSL_PINNEDPUBKEYNOTMATCH, "TLS_FAILED"), N(CURLE_SSL_INVALIDCERTSTATUS, "TLS_FAILED"),
  N(CURLE_HTTP2_STREAM, "NETWORK_ERROR"), N(CURLE_RECURSIVE_API_CALL, "EINVAL"),
  N(CURLE_AUTH_ERROR, "AUTH_FAILED"), N(CURLE_HTTP3, "NETWORK_ERROR"),
  N(CURLE_QUIC_CONNECT_ERROR, "CONNECT_FAILED"), N(CURLE_PROXY, "CONNECT_FAILED"),
  N(CURLE_SSL_CLIENTCERT, "TLS_FAILED"), N(CURLE_UNRECOVERABLE_POLL, "NETWORK_ERROR"),
  {CURLE_OK, NULL, NULL}
};
#undef N

/*
** The name of rc ("CURLE_COULDNT_CONNECT", or "CURLE_<n>" for a newer
** code) and the upkit code it is raised as (NETWORK_ERROR when unknown).
*/
static const char *curl_name(CURLcode rc, char *buf, size_t size, const char **code) {
  for (int i = 0; curlnames[i].name; i++) {
    if (curlnames[i].rc == rc) {
      *code = curlnames[i].code;
      return curlnames[i].name;
    }
  }
  *code = "NETWORK_ERROR";
  snprintf(buf, size, "CURLE_%d", (int)rc);
  return buf;
}

static int buf_add(Buf *b, const char *p, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + n + 1) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) { b->oom = 1; return 0; }
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->n, p, n);
  b->n += n;
  b->p[b->n] = '\0';
  return 1;
}

/* Empty the buffer; give back a large allocation. */
static void buf_reset(Buf *b) {
  if (b->cap > BUF_KEEP) {
    free(b->p);
    b->p = NULL;
    b->cap = 0;
  }
  b->n = 0;
  b->oom = 0;
}

static void buf_free(Buf *b) {
  free(b->p);
  memset(b, 0, sizeof *b);
}

static long response_code(Xfer *x) {
  long code = 0;
  curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
  return code;
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *ud) {
  Xfer *x = ud;
  size_t n = size * nmemb;
  if (x->out) {
    long code = response_code(x);
    if (code >= 200 && code < 300) {
      if (!x->started && code != 206 && x->offset > 0) {
        /* the server ignored the Range: start the file again */
        if (fflush(x->out) != 0 || ftruncate(fileno(x->out), 0) != 0) {
          x->werr = errno;
          return 0;
        }
        x->offset = 0;
      }
      x->started = 1;
      if (fwrite(p, 1, n, x->out) != n) {
        x->werr = errno ? errno : EIO;
        return 0;
      }
      x->written += (curl_off_t)n;
      return n;
    }
    if (x->body.n + n > ERROR_BODY_MAX) return n;
  }
  return buf_add(&x->body, p, n) ? n : 0;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *ud) {
  Xfer *x = ud;
  size_t n = size * nmemb;
  if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) x->head.n = 0;
  return buf_add(&x->head, p, n) ? n : 0;
}

/* Abort on SIGINT; call the Lua progress function (protected) for downloads. */
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
  Xfer *x = ud;
  (void)ultotal;
  (void)ulnow;
  if (upk_interrupted) return 1;
  if (!x->progress || !x->started) return 0;
  double now = upk_now();
  int complete = dltotal > 0 && dlnow >= dltotal;
  if (!complete && now - x->lastcb < PROGRESS_EVERY) return 0;
  x->lastcb = now;
  lua_State *L = x->L;
  lua_pushvalue(L, x->progress);
  lua_pushinteger(L, (lua_Integer)(x->offset + x->written));
  if (dltotal > 0) lua_pushinteger(L, (lua_Integer)(x->offset + dltotal));
  else lua_pushnil(L);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    x->cberr = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
  }
  return 0;
}

/* Read string field k of the table at idx, or NULL; never raises on type. */
static const char *field_string(lua_State *L, int idx, const char *k) {
  lua_getfield(L, idx, k);
  const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  lua_pop(L, 1);  /* the string stays pinned by the table */
  return s;
}

static double field_number(lua_State *L, int idx, const char *k, double def) {
  lua_getfield(L, idx, k);
  double v = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : def;
  lua_pop(L, 1);
  return v;
}

static int field_boolean(lua_State *L, int idx, const char *k, int def) {
  lua_getfield(L, idx, k);
  int v = lua_isnil(L, -1) ? def : lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* Take every pooled transfer out of the multi handle (after an interruption or a bad request). */
static void detach_all(Client *c) {
  for (int i = 0; i < c->npool; i++) {
    if (!c->pool[i].index) continue;
    curl_multi_remove_handle(c->multi, c->pool[i].easy);
    c->pool[i].index = 0;
  }
}

static int make_easy(Xfer *x) {
  if (!x->easy) x->easy = curl_easy_init();
  return x->easy != NULL;
}

/*
** Configure x for the request table at idx: { method, url, label, headers
** = { "Name: value", ... }, body, timeout, connect_timeout, stall, verify,
** cafile, proxy, encoding }. The strings stay pinned by that table.
** Before it raises, every transfer of c:all is taken out of the multi
** handle: no error leaves an easy handle attached.
*/
static void setup(lua_State *L, Client *c, Xfer *x, int idx, const char *fn) {
  const char *url = field_string(L, idx, "url");
  const char *method = field_string(L, idx, "method");
  const char *label = field_string(L, idx, "label");
  if (!url) { detach_all(c); upk_error(L, "EINVAL", "%s: request has no url", fn); }
  if (!method) method = "GET";
  if (!make_easy(x)) { detach_all(c); upk_error(L, "ENOMEM", "%s: cannot create a curl handle", fn); }
  curl_slist_free_all(x->hdrs);
  x->hdrs = NULL;
  buf_reset(&x->body);
  buf_reset(&x->head);
  x->label = label ? label : method;
  x->errbuf[0] = '\0';
  x->written = 0;
  x->started = 0;
  x->werr = 0;
  x->lastcb = 0;

  CURL *e = x->easy;
  curl_easy_reset(e);
  curl_easy_setopt(e, CURLOPT_SHARE, c->share);
  curl_easy_setopt(e, CURLOPT_PRIVATE, x);
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
  curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(e, CURLOPT_XFERINFODATA, x);
  curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_USERAGENT, "upkit/" UPKIT_VERSION);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");

  double timeout = field_number(L, idx, "timeout", 0);
  double ctimeout = field_number(L, idx, "connect_timeout", 0);
  double stall = field_number(L, idx, "stall", 0);
  if (timeout > 0) curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
  if (ctimeout > 0) curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(ctimeout * 1000));
  if (stall > 0) {
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)(stall < 1 ? 1 : stall));
  }
  int verify = field_boolean(L, idx, "verify", 1);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, verify ? 1L : 0L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, verify ? 2L : 0L);
  const char *cafile = field_string(L, idx, "cafile");
  if (cafile) curl_easy_setopt(e, CURLOPT_CAINFO, cafile);
  const char *proxy = field_string(L, idx, "proxy");
  if (proxy) curl_easy_setopt(e, CURLOPT_PROXY, proxy);
  if (field_boolean(L, idx, "encoding", 1)) curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");

  lua_getfield(L, idx, "body");
  size_t blen = 0;
  const char *body = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &blen) : NULL;
  lua_pop(L, 1);
  if (strcmp(method, "GET") == 0 && !body) {
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  } else if (strcmp(method, "HEAD") == 0) {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else {
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
        strcmp(method, "PATCH") == 0) {
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "");
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
    }
  }

  x->hdrs = curl_slist_append(NULL, "Expect:");
  if (lua_getfield(L, idx, "headers") == LUA_TTABLE) {
    lua_Integer n = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= n && x->hdrs; i++) {
      lua_rawgeti(L, -1, i);
      const char *h = lua_tostring(L, -1);
      if (h) {
        struct curl_slist *s = curl_slist_append(x->hdrs, h);
        if (!s) { curl_slist_free_all(x->hdrs); x->hdrs = NULL; }
        else x->hdrs = s;
      }
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  if (!x->hdrs) {
    detach_all(c);
    upk_error(L, "ENOMEM", "%s: %s: cannot build the header list", fn, x->label);
  }
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
}

/* Push the response headers as a table: lower-case name -> value (repeats joined with ", "). */
static void push_headers(lua_State *L, Buf *h) {
  lua_newtable(L);
  if (!h->p) return;
  char *line = h->p, *end = h->p + h->n;
  while (line < end) {
    char *nl = memchr(line, '\n', (size_t)(end - line));
    char *le = nl ? nl : end;
    char *colon = memchr(line, ':', (size_t)(le - line));
    if (colon && colon > line && memcmp(line, "HTTP/", 5) != 0) {
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      for (char *q = line; q < colon; q++) luaL_addchar(&b, (char)(*q >= 'A' && *q <= 'Z' ? *q + 32 : *q));
      luaL_pushresult(&b);  /* [t, name] */
      char *v = colon + 1, *ve = le;
      while (v < ve && (*v == ' ' || *v == '\t')) v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
      lua_pushvalue(L, -1);
      if (lua_rawget(L, -3) == LUA_TSTRING) {  /* [t, name, old] */
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, v, (size_t)(ve - v));
        lua_concat(L, 3);
      } else {
        lua_pop(L, 1);
        lua_pushlstring(L, v, (size_t)(ve - v));
      }
      lua_rawset(L, -3);
    }
    line = le + 1;
  }
}

/* Push { status, headers, body, url, redirect_url, seconds, bytes } for a finished transfer. */
static void push_response(lua_State *L, Xfer *x) {
  lua_createtable(L, 0, 8);
  lua_pushinteger(L, response_code(x));
  lua_setfield(L, -2, "status");
  push_headers(L, &x->head);
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, x->body.p ? x->body.p : "", x->body.n);
  lua_setfield(L, -2, "body");
  char *s = NULL;
  if (curl_easy_getinfo(x->easy, CURLINFO_EFFECTIVE_URL, &s) == CURLE_OK && s) {
    lua_pushstring(L, s);
    lua_setfield(L, -2, "url");
  }
  s = NULL;
  if (curl_easy_getinfo(x->easy, CURLINFO_REDIRECT_URL, &s) == CURLE_OK && s) {
    lua_pushstring(L, s);
    lua_setfield(L, -2, "redirect_url");
  }
  curl_off_t us = 0;
  curl_easy_getinfo(x->easy, CURLINFO_TOTAL_TIME_T, &us);
  lua_pushnumber(L, (lua_Number)us / 1e6);
  lua_setfield(L, -2, "seconds");
  if (x->out) {
    lua_pushinteger(L, (lua_Integer)x->written);
    lua_setfield(L, -2, "bytes");
    lua_pushinteger(L, (lua_Integer)(x->offset + x->written));
    lua_setfield(L, -2, "size");
  }
}

/*
** Push the error object of a failed transfer: the callback's own error,
** INTERRUPTED, a failed write (errno name), or the code of the libcurl
** error (curlnames) with fields curl_code and curl_error.
*/
static void push_failure(lua_State *L, Xfer *x, CURLcode rc) {
  if (x->cberr != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, x->cberr);
    luaL_unref(L, LUA_REGISTRYINDEX, x->cberr);
    x->cberr = LUA_NOREF;
    return;
  }
  if (rc == CURLE_ABORTED_BY_CALLBACK && upk_interrupted) {
    upk_interrupted = 0;
    upk_pusherror(L, "INTERRUPTED", "http: %s: interrupted", x->label);
    return;
  }
  if (x->werr) {
    upk_pusherror(L, upk_errno_name(x->werr), "http: %s: writing the file: %s", x->label,
                  strerror(x->werr));
    upk_seterrno(L, x->werr);
    return;
  }
  if (x->body.oom || x->head.oom) {
    upk_pusherror(L, "ENOMEM", "http: %s: not enough memory for the response", x->label);
    return;
  }
  char nb[32];
  const char *code;
  const char *name = curl_name(rc, nb, sizeof nb, &code);
  const char *detail = x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc);
  upk_pusherror(L, code, "http: %s: %s", x->label, detail);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "curl_code");
  lua_pushstring(L, detail);
  lua_setfield(L, -2, "curl_error");
  if (x->out) {
    lua_pushinteger(L, (lua_Integer)x->written);
    lua_setfield(L, -2, "bytes");
  }
}

/* Push the result of a finished transfer: a response, or an error object. Returns 1 for a response. */
static int push_result(lua_State *L, Xfer *x, CURLcode rc) {
  int ok = rc == CURLE_OK && !x->werr;
  if (ok) push_response(L, x);
  else push_failure(L, x, rc);
  buf_reset(&x->body);
  buf_reset(&x->head);
  return ok;
}

static void xfer_release(lua_State *L, Xfer *x) {
  if (x->easy) curl_easy_cleanup(x->easy);
  x->easy = NULL;
  curl_slist_free_all(x->hdrs);
  x->hdrs = NULL;
  buf_free(&x->body);
  buf_free(&x->head);
  if (x->out) fclose(x->out);
  x->out = NULL;
  if (x->cberr != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, x->cberr);
  x->cberr = LUA_NOREF;
}

static void client_release(lua_State *L, Client *c) {
  if (!c->open) return;
  c->open = 0;
  for (int i = 0; i < c->npool; i++) {
    if (c->pool[i].index && c->multi) curl_multi_remove_handle(c->multi, c->pool[i].easy);
    xfer_release(L, &c->pool[i]);
  }
  free(c->pool);
  c->pool = NULL;
  c->npool = 0;
  xfer_release(L, &c->one);
  if (c->multi) curl_multi_cleanup(c->multi);
  c->multi = NULL;
  if (c->share) curl_share_cleanup(c->share);
  c->share = NULL;
  upk_untrack(L, c);
}

static Client *checkopen(lua_State *L, const char *fn) {
  Client *c = luaL_checkudata(L, 1, CLIENT_MT);
  if (!c->open) upk_error(L, "CLOSED", "%s: the http client is closed", fn);
  return c;
}

/*
** http.client(config) -> client; config is kept as the client's user value
** (the Lua facade validates it and reads it back with c:_config()).
*/
static int http_client(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  Client *c = lua_newuserdatauv(L, sizeof *c, 1);
  memset(c, 0, sizeof *c);
  c->one.cberr = LUA_NOREF;
  luaL_setmetatable(L, CLIENT_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  c->share = curl_share_init();
  if (!c->share) return upk_error(L, "ENOMEM", "http.client: cannot create a curl share handle");
  c->open = 1;
  upk_track(L, c, CLIENT_MT);
  curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
  curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
  curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  return 1;
}

/* c:_config() -> the configuration table the client was made with */
static int client_config(lua_State *L) {
  luaL_checkudata(L, 1, CLIENT_MT);
  lua_getiuservalue(L, 1, 1);
  return 1;
}

/* c:is_open() -> boolean */
static int client_is_open(lua_State *L) {
  Client *c = luaL_checkudata(L, 1, CLIENT_MT);
  lua_pushboolean(L, c->open);
  return 1;
}

/*
** c:_perform(req) -> response; raises the transfer's error object.
*/
static int client_perform(lua_State *L) {
  Client *c = checkopen(L, "http.request");
  luaL_checktype(L, 2, LUA_TTABLE);
  Xfer *x = &c->one;
  setup(L, c, x, 2, "http.request");
  x->L = L;
  x->progress = 0;
  CURLcode rc = curl_easy_perform(x->easy);
  if (!push_result(L, x, rc)) return lua_error(L);
  return 1;
}

/*
** c:_download(req) -> response with bytes and size; req adds file (the
** temporary path), offset (bytes already there: sent as a Range) and
** progress (function(done, total)). Only a 2xx body goes to the file.
*/
static int client_download(lua_State *L) {
  Client *c = checkopen(L, "http.download");
  luaL_checktype(L, 2, LUA_TTABLE);
  const char *file = field_string(L, 2, "file");
  if (!file) return upk_error(L, "EINVAL", "http.download: request has no file");
  lua_Integer offset = (lua_Integer)field_number(L, 2, "offset", 0);
  lua_getfield(L, 2, "progress");  /* [c, req, progress] */
  int progress = lua_isfunction(L, 3) ? 3 : 0;
  Xfer *x = &c->one;
  setup(L, c, x, 2, "http.download");
  x->L = L;
  x->progress = progress;
  x->offset = offset > 0 ? offset : 0;
  char range[48];
  if (x->offset > 0) {
    snprintf(range, sizeof range, "%lld-", (long long)x->offset);
    curl_easy_setopt(x->easy, CURLOPT_RANGE, range);
  }
  x->out = fopen(file, x->offset > 0 ? "abe" : "wbe");  /* e: close-on-exec */
  if (!x->out) return upk_errno_error(L, errno, "http.download: %s: cannot open '%s'", x->label, file);
  CURLcode rc = curl_easy_perform(x->easy);
  if (fflush(x->out) != 0 || fsync(fileno(x->out)) != 0) {
    if (!x->werr) x->werr = errno;
  }
  int ok = push_result(L, x, rc);
  fclose(x->out);
  x->out = NULL;
  x->progress = 0;
  if (!ok) return lua_error(L);
  return 1;
}

/* Grow the pool of easy handles for c:all to n; 0 when memory runs out. */
static int ensure_pool(Client *c, int n) {
  if (c->npool >= n) return 1;
  Xfer *p = realloc(c->pool, sizeof *p * (size_t)n);
  if (!p) return 0;
  for (int i = c->npool; i < n; i++) {
    memset(&p[i], 0, sizeof p[i]);
    p[i].cberr = LUA_NOREF;
  }
  c->pool = p;
  c->npool = n;
  return 1;
}

/*
** c:_all(requests, concurrency) -> results, in order: each a response or
** an error object (returned, not raised). INTERRUPTED is raised.
*/
static int client_all(lua_State *L) {
  Client *c = checkopen(L, "http.all");
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer n = luaL_len(L, 2);
  lua_Integer k = luaL_optinteger(L, 3, 8);
  if (k < 1) k = 1;
  if (k > n) k = n > 0 ? n : 1;
  if (k > 256) k = 256;
  lua_settop(L, 2);
  lua_createtable(L, (int)n, 0);  /* [c, reqs, results] */
  if (!c->multi) {
    c->multi = curl_multi_init();
    if (!c->multi) return upk_error(L, "ENOMEM", "http.all: cannot create a curl multi handle");
  }
  if (!ensure_pool(c, (int)k)) return upk_error(L, "ENOMEM", "http.all: not enough memory");
  detach_all(c);
  curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)k);
  lua_Integer next = 1, done = 0;
  int active = 0;
  while (done < n) {
    for (int i = 0; i < k && next <= n; i++) {
      Xfer *x = &c->pool[i];
      if (x->index) continue;
      lua_rawgeti(L, 2, next);  /* [.., req] */
      if (!lua_istable(L, -1)) {
        detach_all(c);
        return upk_error(L, "EINVAL", "http.all: request %d is not a table", (int)next);
      }
      setup(L, c, x, lua_gettop(L), "http.all");
      lua_pop(L, 1);
      x->L = L;
      x->progress = 0;
      x->index = next++;
      curl_multi_add_handle(c->multi, x->easy);
      active++;
    }
    int running = 0;
    curl_multi_perform(c->multi, &running);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(c->multi, &left))) {
      if (msg->msg != CURLMSG_DONE) continue;
      Xfer *x = NULL;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
      CURLcode rc = msg->data.result;
      curl_multi_remove_handle(c->multi, x->easy);
      lua_Integer idx = x->index;
      x->index = 0;
      active--;
      done++;
      push_result(L, x, rc);
      lua_rawseti(L, 3, idx);
    }
    if (upk_interrupted && active > 0) {
      detach_all(c);
      upk_check_interrupt(L, "http.all");
    }
    if (active > 0 && done < n) curl_multi_poll(c->multi, NULL, 0, 100, NULL);
  }
  return 1;
}

/* c:close(): idempotent */
static int client_close(lua_State *L) {
  Client *c = luaL_checkudata(L, 1, CLIENT_MT);
  client_release(L, c);
  return 0;
}

static int client_tostring(lua_State *L) {
  Client *c = luaL_checkudata(L, 1, CLIENT_MT);
  lua_pushfstring(L, "http.client (%s): %p", c->open ? "open" : "closed", (void *)c);
  return 1;
}

static const luaL_Reg client_meth[] = {
  {"_config", client_config},
  {"_perform", client_perform},
  {"_download", client_download},
  {"_all", client_all},
  {"is_open", client_is_open},
  {"close", client_close},
  {NULL, NULL}
};

static const luaL_Reg client_metameth[] = {
  {"__gc", client_close},
  {"__close", client_close},
  {"__tostring", client_tostring},
  {"__index", NULL},
  {NULL, NULL}
};

/* _http.getdate(s) -> seconds since the epoch of an HTTP date (any of the three forms), or nil */
static int http_getdate(lua_State *L) {
  const char *s = luaL_checkstring(L, 1);
  time_t t = curl_getdate(s, NULL);
  if (t == (time_t)-1) return 0;
  lua_pushinteger(L, (lua_Integer)t);
  return 1;
}

static const luaL_Reg funcs[] = {
  {"client", http_client},
  {"getdate", http_getdate},
  {NULL, NULL}
};

int luaopen_upkit_http(lua_State *L) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  upk_newlib(L, funcs, "http");
  upk_newclass(L, CLIENT_MT, client_metameth, client_meth, "client:");
  lua_setfield(L, -2, "Client");  /* lib.Client = methods, for the Lua facade */
  return 1;
}
