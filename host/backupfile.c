/*
** backupfile.c: upkit._backupfile, the writer and reader of upkit's
** logical backup file (docs/backup-format.md): records of
** [type u8][length u32][payload][sha256], then a trailer with the digest of
** the whole file. No ODBC here.
**   bf.writer(path, magic) -> w: a temporary file beside path (mode 0600)
**     w:record(type, payload)  w:finish() -> bytes, sha256  w:path()  w:close()
**   bf.pending(path) -> w: the same temporary file, unformatted, for a file
**     another writes (SQLite's VACUUM INTO w:path()); w:finish() -> bytes
**   bf.reader(path [, fn]) -> r: r:magic(n) r:next() r:bytes() r:sha256() r:close()
** A writer's file appears at path only in w:finish(), after fsync; the
** rename and the folder's fsync report their own failures. Closing an
** unfinished writer removes its temporary file.
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "backupfile.h"
#include "digest.h"
#include "platform_fs.h"

#define RECORD_MAX (1u << 30)
#define DIGEST 32

struct BfWriter {
  FILE *f;
  int dirfd;
  EVP_MD_CTX *all;        /* NULL for a pending (unformatted) file */
  char *final;            /* the path the file gets when finished */
  const char *base;       /* its name in dirfd (inside final) */
  char *tmp;              /* the temporary file's name in dirfd */
  char *tmppath;          /* and its path */
  uint64_t bytes;
  int done;
};

/* Arguments of this internal module, or raise EINVAL. */
static const char *checkstr(lua_State *L, int idx, size_t *len) {
  if (lua_type(L, idx) != LUA_TSTRING)
    upk_error(L, "EINVAL", "backup file: argument %d must be a string, got %s", idx, luaL_typename(L, idx));
  return lua_tolstring(L, idx, len);
}

static void *checkself(lua_State *L, const char *tname) {
  void *p = luaL_testudata(L, 1, tname);
  if (!p) upk_error(L, "EINVAL", "backup file: expected a %s, got %s", tname, luaL_typename(L, 1));
  return p;
}

/* The SHA-256 of a record's head and payload (its checksum) into out; 0, or ENOMEM. */
static int record_sum(const unsigned char head[5], const void *payload, size_t n, unsigned char *out) {
  unsigned len = 0;
  EVP_MD_CTX *x = EVP_MD_CTX_new();
  if (!x) return ENOMEM;
  EVP_DigestInit_ex(x, EVP_sha256(), NULL);
  EVP_DigestUpdate(x, head, 5);
  EVP_DigestUpdate(x, payload, n);
  EVP_DigestFinal_ex(x, out, &len);
  EVP_MD_CTX_free(x);
  return 0;
}

static void writer_release(lua_State *L, BfWriter *w) {
  if (w->f) {
    fclose(w->f);
    w->f = NULL;
    if (!w->done) upk_fs_unlinkat(w->dirfd, w->tmp);
    upk_untrack(L, w);
  }
  if (w->dirfd >= 0) {
    upk_fs_temp_release(w->dirfd);  /* the private temporary folder, when empty */
    upk_fs_close(w->dirfd);
  }
  w->dirfd = -1;
  EVP_MD_CTX_free(w->all);
  w->all = NULL;
  free(w->final);
  free(w->tmp);
  free(w->tmppath);
  w->final = w->tmp = w->tmppath = NULL;
}

/* Create the temporary file of a writer for path; formatted when magic. */
static BfWriter *new_writer(lua_State *L, const char *path, const char *magic, size_t mlen) {
  BfWriter *w = lua_newuserdatauv(L, sizeof *w, 0);
  memset(w, 0, sizeof *w);
  w->dirfd = -1;
  luaL_setmetatable(L, BF_WRITER_MT);
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  if (*base == '\0') upk_error(L, "EINVAL", "sql.backup: '%s' names no file", path);
  size_t dlen = slash ? (slash == path ? 1 : (size_t)(slash - path)) : 1;
  size_t tsize = strlen(base) + 80;
  w->final = strdup(path);
  w->tmp = malloc(tsize);
  w->tmppath = malloc(dlen + tsize + 2);
  if (!w->final || !w->tmp || !w->tmppath || (magic && !(w->all = EVP_MD_CTX_new())))
    upk_error(L, "ENOMEM", "sql.backup: '%s': out of memory", path);
  w->base = w->final + (base - path);
  memcpy(w->tmppath, slash ? path : ".", dlen);
  w->tmppath[dlen] = '\0';
  int err = upk_fs_open_dir(w->tmppath, &w->dirfd);
  if (err) upk_errno_error(L, err, "sql.backup: '%s': its folder", path);
  int fd = -1;
  err = upk_fs_create_temp(w->dirfd, w->base, w->tmp, tsize, &fd);
  if (err) upk_errno_error(L, err, "sql.backup: '%s': temporary file", path);
  w->f = fdopen(fd, "wb");
  if (!w->f) {
    upk_fs_close(fd);
    upk_fs_unlinkat(w->dirfd, w->tmp);
    upk_error(L, "ENOMEM", "sql.backup: '%s': out of memory", path);
  }
  upk_track(L, w, BF_WRITER_MT);
  snprintf(w->tmppath + strlen(w->tmppath), tsize + 2, "/%s", w->tmp);
  if (!magic) return w;
  setvbuf(w->f, NULL, _IOFBF, 1 << 20);
  if (!EVP_DigestInit_ex(w->all, EVP_sha256(), NULL)) upk_error(L, "ENOMEM", "sql.backup: out of memory");
  if (fwrite(magic, 1, mlen, w->f) != mlen) upk_errno_error(L, errno, "sql.backup: '%s'", w->tmppath);
  EVP_DigestUpdate(w->all, magic, mlen);
  w->bytes = mlen;
  return w;
}

/* bf.writer(path, magic) -> writer */
static int bf_writer(lua_State *L) {
  const char *path = checkstr(L, 1, NULL);
  size_t mlen;
  const char *magic = checkstr(L, 2, &mlen);
  new_writer(L, path, magic, mlen);
  return 1;
}

/* bf.pending(path) -> writer of an unformatted file */
static int bf_pending(lua_State *L) {
  new_writer(L, checkstr(L, 1, NULL), NULL, 0);
  return 1;
}

static BfWriter *checkopen_writer(lua_State *L, int idx) {
  BfWriter *w = luaL_testudata(L, idx, BF_WRITER_MT);
  if (!w) upk_error(L, "EINVAL", "backup file: expected a backup writer, got %s", luaL_typename(L, idx));
  if (!w->f || w->done) upk_error(L, "CLOSED", "backup writer: closed");
  return w;
}

BfWriter *bf_checkwriter(lua_State *L, int idx) {
  BfWriter *w = checkopen_writer(L, idx);
  if (!w->all) upk_error(L, "EINVAL", "backup writer: a pending file takes no records");
  return w;
}

void bf_write_record(lua_State *L, BfWriter *w, int type, const char *payload, size_t n) {
  unsigned char head[5] = {(unsigned char)type};
  bf_set_u32(head + 1, (uint32_t)n);
  unsigned char sum[DIGEST];
  if (record_sum(head, payload, n, sum)) upk_error(L, "ENOMEM", "sql.backup: out of memory");
  if (fwrite(head, 1, 5, w->f) != 5 || fwrite(payload, 1, n, w->f) != n || fwrite(sum, 1, DIGEST, w->f) != DIGEST)
    upk_errno_error(L, errno, "sql.backup: '%s'", w->tmppath);
  EVP_DigestUpdate(w->all, head, 5);
  EVP_DigestUpdate(w->all, payload, n);
  EVP_DigestUpdate(w->all, sum, DIGEST);
  w->bytes += 5 + n + DIGEST;
}

/* w:record(type, payload): one record; type is one character */
static int writer_record(lua_State *L) {
  BfWriter *w = bf_checkwriter(L, 1);
  size_t tl, n;
  const char *t = checkstr(L, 2, &tl);
  const char *payload = checkstr(L, 3, &n);
  if (tl != 1 || n >= RECORD_MAX) return upk_error(L, "EINVAL", "backup writer: bad record");
  bf_write_record(L, w, t[0], payload, n);
  return 0;
}

/* w:path() -> the temporary file's path (the final path once finished) */
static int writer_path(lua_State *L) {
  BfWriter *w = checkself(L, BF_WRITER_MT);
  lua_pushstring(L, w->done ? w->final : w->tmppath);
  return 1;
}

/*
** w:finish() -> bytes [, sha256]: a formatted file gets its trailer (the
** SHA-256 of every byte before it) and sha256 is the whole file's; then the
** file is flushed and fsync'd, renamed to its path, and the folder fsync'd.
*/
static int writer_finish(lua_State *L) {
  BfWriter *w = checkopen_writer(L, 1);
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned dl = 0;
  if (w->all) {
    if (upk_digest_peek(w->all, d, &dl) != 0) return upk_error(L, "ENOMEM", "sql.backup: out of memory");
    bf_write_record(L, w, 'Z', (const char *)d, dl);
    EVP_DigestFinal_ex(w->all, d, &dl);
  }
  const char *step = "write";
  int err = fflush(w->f) != 0 ? errno : 0;
  UpkStat st;
  if (!err) { step = "fsync"; err = upk_fs_fsync(fileno(w->f)); }
  if (!err) err = upk_fs_fstat(fileno(w->f), &st);
  if (!err) { step = "rename"; err = upk_fs_rename(w->dirfd, w->tmp, w->dirfd, w->base, 0); }
  if (err) return upk_errno_error(L, err, "sql.backup: '%s': %s", w->final, step);
  w->done = 1;
  fclose(w->f);
  w->f = NULL;
  upk_untrack(L, w);
  err = upk_fs_fsync(w->dirfd);
  if (err) return upk_errno_error(L, err, "sql.backup: '%s': folder fsync", w->final);
  lua_pushinteger(L, (lua_Integer)(w->all ? w->bytes : st.size));
  if (!w->all) return 1;
  char hex[2 * EVP_MAX_MD_SIZE + 1];
  *upk_hex(d, dl, hex) = 0;
  lua_pushstring(L, hex);
  return 2;
}

/* w:close(): idempotent; an unfinished file is removed */
static int writer_close(lua_State *L) {
  writer_release(L, checkself(L, BF_WRITER_MT));
  return 0;
}

/* ---------------------------------------------------------------------- */
/* Reader */

typedef struct Reader {
  FILE *f;
  EVP_MD_CTX *all;
  char *path;
  const char *fn;         /* the operation named in errors (a literal) */
  uint64_t bytes, size;
  int ended;
  unsigned char *b;
  size_t cap;
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
  free(r->b);
  r->b = NULL;
  r->cap = 0;
}

/* bf.reader(path [, fn]) -> reader; fn ("sql.verify" or "sql.restore") names errors */
static int bf_reader(lua_State *L) {
  static const char *const fns[] = {"sql.restore", "sql.verify", NULL};
  const char *path = checkstr(L, 1, NULL);
  const char *fn = lua_isstring(L, 2) && strcmp(lua_tostring(L, 2), fns[1]) == 0 ? fns[1] : fns[0];
  Reader *r = lua_newuserdatauv(L, sizeof *r, 0);
  memset(r, 0, sizeof *r);
  luaL_setmetatable(L, BF_READER_MT);
  r->fn = fn;
  UpkStat st;
  r->f = fopen(path, "rbe");
  if (!r->f) return upk_errno_error(L, errno, "%s: '%s'", fn, path);
  upk_track(L, r, BF_READER_MT);
  int err = upk_fs_fstat(fileno(r->f), &st);
  if (!err && st.type == UPK_FT_DIR) err = EISDIR;
  if (err) return upk_errno_error(L, err, "%s: '%s'", fn, path);
  r->size = st.size;
  r->path = strdup(path);
  r->all = EVP_MD_CTX_new();
  if (!r->path || !r->all || !EVP_DigestInit_ex(r->all, EVP_sha256(), NULL))
    return upk_error(L, "ENOMEM", "%s: out of memory", fn);
  setvbuf(r->f, NULL, _IOFBF, 1 << 20);
  return 1;
}

static Reader *checkreader(lua_State *L) {
  Reader *r = checkself(L, BF_READER_MT);
  if (!r->f) upk_error(L, "CLOSED", "backup reader: closed");
  return r;
}

static int truncated(lua_State *L, Reader *r, uint64_t at) {
  return upk_error(L, "BAD_FORMAT", "%s: '%s': the file is truncated at byte %I", r->fn, r->path, (lua_Integer)at);
}

/* Read exactly n bytes into p, or raise BAD_FORMAT (truncated) / errno. */
static void readn(lua_State *L, Reader *r, void *p, size_t n, uint64_t at) {
  size_t got = fread(p, 1, n, r->f);
  if (got == n) return;
  if (ferror(r->f)) upk_errno_error(L, errno, "%s: '%s'", r->fn, r->path);
  truncated(L, r, at + got);
}

/* r:magic(n) -> the first n bytes (fewer when the file is shorter) */
static int reader_magic(lua_State *L) {
  Reader *r = checkreader(L);
  size_t n = (size_t)lua_tointeger(L, 2);
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
** (CHECKSUM_MISMATCH) and its framing checked (BAD_FORMAT): a length that
** runs past the end of the file is refused before anything is allocated.
** At the trailer 'Z' the whole file's digest is checked and the end of file
** required; then r:next() returns nil.
*/
static int reader_next(lua_State *L) {
  Reader *r = checkreader(L);
  if (r->ended) return 0;
  unsigned char head[5], sum[DIGEST], want[EVP_MAX_MD_SIZE];
  unsigned wl = 0;
  uint64_t at = r->bytes;
  readn(L, r, head, 5, at);
  uint32_t n = bf_get_u32(head + 1);
  if (head[0] == 0 || !strchr("HTDERZ", head[0]))
    return upk_error(L, "BAD_FORMAT", "%s: '%s': unknown record type at byte %I", r->fn, r->path, (lua_Integer)at);
  if (n >= RECORD_MAX || (head[0] == 'Z' && n != DIGEST))
    return upk_error(L, "BAD_FORMAT", "%s: '%s': bad record length at byte %I", r->fn, r->path, (lua_Integer)at);
  if (at + 5 + (uint64_t)n + DIGEST > r->size) return truncated(L, r, r->size);
  if (n + 1 > r->cap) {
    unsigned char *p = realloc(r->b, n + 1);
    if (!p) return upk_error(L, "ENOMEM", "%s: out of memory", r->fn);
    r->b = p;
    r->cap = n + 1;
  }
  readn(L, r, r->b, n, at + 5);
  readn(L, r, sum, DIGEST, at + 5 + n);
  if (record_sum(head, r->b, n, want)) return upk_error(L, "ENOMEM", "%s: out of memory", r->fn);
  if (memcmp(want, sum, DIGEST) != 0)
    return upk_error(L, "CHECKSUM_MISMATCH", "%s: '%s': the record at byte %I fails its checksum",
                     r->fn, r->path, (lua_Integer)at);
  if (head[0] == 'Z') {
    unsigned char all[EVP_MAX_MD_SIZE];
    unsigned al = 0;
    if (upk_digest_peek(r->all, all, &al) != 0) return upk_error(L, "ENOMEM", "%s: out of memory", r->fn);
    if (memcmp(all, r->b, DIGEST) != 0)
      return upk_error(L, "CHECKSUM_MISMATCH", "%s: '%s': the file fails its SHA-256 trailer", r->fn, r->path);
    if (fgetc(r->f) != EOF)
      return upk_error(L, "BAD_FORMAT", "%s: '%s': data after the trailer", r->fn, r->path);
    r->ended = 1;
  }
  EVP_DigestUpdate(r->all, head, 5);
  EVP_DigestUpdate(r->all, r->b, n);
  EVP_DigestUpdate(r->all, sum, DIGEST);
  r->bytes += 5 + (uint64_t)n + DIGEST;
  if (r->ended) {
    EVP_DigestFinal_ex(r->all, want, &wl);
    *upk_hex(want, wl, r->hex) = 0;
  }
  lua_pushlstring(L, (const char *)head, 1);
  lua_pushlstring(L, (const char *)r->b, n);
  if (r->cap > (8u << 20)) {
    free(r->b);
    r->b = NULL;
    r->cap = 0;
  }
  return 2;
}

/* r:bytes() -> bytes read */
static int reader_bytes(lua_State *L) {
  Reader *r = checkself(L, BF_READER_MT);
  lua_pushinteger(L, (lua_Integer)r->bytes);
  return 1;
}

/* r:sha256() -> the whole file's digest, after the trailer */
static int reader_sha256(lua_State *L) {
  Reader *r = checkself(L, BF_READER_MT);
  if (!r->ended) return 0;
  lua_pushstring(L, r->hex);
  return 1;
}

/* r:close(): idempotent */
static int reader_close(lua_State *L) {
  reader_release(L, checkself(L, BF_READER_MT));
  return 0;
}

static const luaL_Reg writer_meth[] = {
  {"record", writer_record},
  {"finish", writer_finish},
  {"path", writer_path},
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

static const luaL_Reg bf_funcs[] = {
  {"writer", bf_writer},
  {"pending", bf_pending},
  {"reader", bf_reader},
  {NULL, NULL}
};

static const luaL_Reg writer_metameth[] = {{"__gc", writer_close}, {"__close", writer_close}, {NULL, NULL}};
static const luaL_Reg reader_metameth[] = {{"__gc", reader_close}, {"__close", reader_close}, {NULL, NULL}};

int luaopen_upkit_backupfile(lua_State *L) {
  upk_newclass(L, BF_WRITER_MT, writer_metameth, writer_meth, "backup writer:");
  upk_newclass(L, BF_READER_MT, reader_metameth, reader_meth, "backup reader:");
  lua_pop(L, 2);
  upk_newlib(L, bf_funcs, "backupfile");
  return 1;
}
