/*
** hash.c: upkit.hash, message digests and HMAC through OpenSSL's EVP.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "digest.h"
#include "platform_fs.h"

#define HASHER_MT "upkit.hash.Hasher"

static const char *const algnames[] = {"md5", "sha1", "sha256", "sha512", NULL};

typedef struct Hasher {
  EVP_MD_CTX *ctx;
  const char *alg;
} Hasher;

const EVP_MD *upk_digest_by_name(lua_State *L, const char *name, const char *fn) {
  for (int i = 0; algnames[i]; i++) {
    if (strcmp(name, algnames[i]) == 0) {
      const EVP_MD *md = EVP_get_digestbyname(name);
      if (md) return md;
    }
  }
  upk_error(L, "EINVAL", "%s: unknown algorithm '%s' (md5, sha1, sha256, sha512)", fn, name);
  return NULL;
}

int upk_digest_peek(const EVP_MD_CTX *c, unsigned char *out, unsigned *len) {
  EVP_MD_CTX *x = EVP_MD_CTX_new();
  if (!x || !EVP_MD_CTX_copy_ex(x, c)) {
    EVP_MD_CTX_free(x);
    return -1;
  }
  EVP_DigestFinal_ex(x, out, len);
  EVP_MD_CTX_free(x);
  return 0;
}

static const EVP_MD *checkmd(lua_State *L, int idx, const char *fn) {
  return upk_digest_by_name(L, luaL_checkstring(L, idx), fn);
}

static void pushhex(lua_State *L, const unsigned char *d, unsigned int n) {
  char buf[EVP_MAX_MD_SIZE * 2];
  upk_hex(d, n, buf);
  lua_pushlstring(L, buf, 2 * (size_t)n);
}

/*
** hash.file(alg, path) -> hex digest; the same reader as fs.copy's
** (upk_hash_fd: large files hashed in a second thread while the next block
** is read), in constant memory. A regular file only: EISDIR for a folder,
** EINVAL for a device or FIFO; SOURCE_CHANGED when the file shrinks while
** it is read.
*/
static int hash_file(lua_State *L) {
  const EVP_MD *md = checkmd(L, 1, "hash.file");
  const char *path = luaL_checkstring(L, 2);
  int fd;
  UpkStat st;
  int err = upk_fs_open_read(path, &fd);
  if (err) return upk_errno_error(L, err, "hash.file: '%s'", path);
  if ((err = upk_fs_fstat(fd, &st)) == 0 && st.type != UPK_FT_FILE) err = st.type == UPK_FT_DIR ? EISDIR : EINVAL;
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int outlen = 0;
  if (!err) err = upk_hash_fd(fd, st.size, md, out, &outlen);
  upk_fs_close(fd);
  if (err == EINTR) upk_check_interrupt(L, "hash.file");
  if (err == UPK_SOURCE_CHANGED)
    return upk_error(L, "SOURCE_CHANGED", "hash.file: '%s': the file changed while it was read", path);
  if (err) return upk_errno_error(L, err, "hash.file: '%s'", path);
  pushhex(L, out, outlen);
  return 1;
}

/*
** hash.new(alg) -> hasher
*/
static int hash_new(lua_State *L) {
  const EVP_MD *md = checkmd(L, 1, "hash.new");
  Hasher *h = lua_newuserdatauv(L, sizeof *h, 0);
  h->ctx = NULL;
  h->alg = EVP_MD_get0_name(md);
  luaL_setmetatable(L, HASHER_MT);
  h->ctx = EVP_MD_CTX_new();
  if (!h->ctx || !EVP_DigestInit_ex(h->ctx, md, NULL))
    return upk_error(L, "ENOMEM", "hash.new: cannot create a digest context");
  upk_track(L, h, HASHER_MT);
  return 1;
}

static Hasher *checkopen(lua_State *L, const char *fn) {
  Hasher *h = luaL_checkudata(L, 1, HASHER_MT);
  if (!h->ctx) upk_error(L, "CLOSED", "%s: hasher is closed", fn);
  return h;
}

/* hasher:update(data, ...) -> hasher */
static int hasher_update(lua_State *L) {
  Hasher *h = checkopen(L, "hasher:update");
  int n = lua_gettop(L);
  for (int i = 2; i <= n; i++) {
    size_t len;
    const char *s = luaL_checklstring(L, i, &len);
    EVP_DigestUpdate(h->ctx, s, len);
  }
  lua_settop(L, 1);
  return 1;
}

/* Finish a copy of the context, so the hasher can go on after a look. */
static unsigned int finish(lua_State *L, Hasher *h, unsigned char *out) {
  unsigned int outlen = 0;
  if (upk_digest_peek(h->ctx, out, &outlen) != 0)
    upk_error(L, "ENOMEM", "hasher: cannot copy the digest context");
  return outlen;
}

/* hasher:hex() -> hex digest of what was given so far */
static int hasher_hex(lua_State *L) {
  Hasher *h = checkopen(L, "hasher:hex");
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = finish(L, h, out);
  pushhex(L, out, n);
  return 1;
}

/* hasher:digest() -> binary digest of what was given so far */
static int hasher_digest(lua_State *L) {
  Hasher *h = checkopen(L, "hasher:digest");
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = finish(L, h, out);
  lua_pushlstring(L, (const char *)out, n);
  return 1;
}

/* hasher:algorithm() -> name */
static int hasher_algorithm(lua_State *L) {
  Hasher *h = luaL_checkudata(L, 1, HASHER_MT);
  lua_pushstring(L, h->alg);
  return 1;
}

/* hasher:close(): idempotent; also __gc and __close */
static int hasher_close(lua_State *L) {
  Hasher *h = luaL_checkudata(L, 1, HASHER_MT);
  if (h->ctx) {
    EVP_MD_CTX_free(h->ctx);
    h->ctx = NULL;
    upk_untrack(L, h);
  }
  return 0;
}

static int hasher_tostring(lua_State *L) {
  Hasher *h = luaL_checkudata(L, 1, HASHER_MT);
  lua_pushfstring(L, "upkit.hash.Hasher (%s%s)", h->alg, h->ctx ? "" : ", closed");
  return 1;
}

/*
** hash.hmac(alg, key, data [, raw]) -> hex (or binary when raw) HMAC
*/
static int hash_hmac(lua_State *L) {
  const EVP_MD *md = checkmd(L, 1, "hash.hmac");
  size_t klen, dlen;
  const char *key = luaL_checklstring(L, 2, &klen);
  const char *data = luaL_checklstring(L, 3, &dlen);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int outlen = 0;
  if (!HMAC(md, key, (int)klen, (const unsigned char *)data, dlen, out, &outlen))
    return upk_error(L, "EINVAL", "hash.hmac: OpenSSL refused the computation");
  if (lua_toboolean(L, 4)) lua_pushlstring(L, (const char *)out, outlen);
  else pushhex(L, out, outlen);
  return 1;
}

/* hash.algorithms() -> { "md5", "sha1", "sha256", "sha512" } */
static int hash_algorithms(lua_State *L) {
  lua_newtable(L);
  for (int i = 0; algnames[i]; i++) {
    lua_pushstring(L, algnames[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static const luaL_Reg hash_funcs[] = {
  {"file", hash_file},
  {"new", hash_new},
  {"hmac", hash_hmac},
  {"algorithms", hash_algorithms},
  {NULL, NULL}
};

static const luaL_Reg hasher_meth[] = {
  {"update", hasher_update},
  {"hex", hasher_hex},
  {"digest", hasher_digest},
  {"algorithm", hasher_algorithm},
  {"close", hasher_close},
  {NULL, NULL}
};

static const luaL_Reg hasher_metameth[] = {
  {"__index", NULL},
  {"__gc", hasher_close},
  {"__close", hasher_close},
  {"__tostring", hasher_tostring},
  {NULL, NULL}
};

int luaopen_upkit_hash(lua_State *L) {
  upk_newclass(L, HASHER_MT, hasher_metameth, hasher_meth, "hasher:");
  lua_pop(L, 1);
  upk_newlib(L, hash_funcs, "hash");
  return 1;
}
