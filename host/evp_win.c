/*
** evp_win.c: the EVP digest calls of host/win/openssl/evp.h over CNG
** (BCrypt), for the Windows build. One algorithm provider per digest, opened
** once (thread-safe: fs.c hashes on worker threads); a context owns one
** BCrypt hash object.
*/
#include <stdlib.h>
#include <string.h>
#include <windows.h>
#include <bcrypt.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

struct evp_md_st {
  const wchar_t *alg;     /* BCRYPT_*_ALGORITHM */
  const char *name;       /* OpenSSL's name */
  int size;
  INIT_ONCE once;
  BCRYPT_ALG_HANDLE prov;
};

struct evp_md_ctx_st {
  const EVP_MD *md;
  BCRYPT_HASH_HANDLE h;
};

static EVP_MD mds[] = {
  { BCRYPT_MD5_ALGORITHM, "MD5", 16, INIT_ONCE_STATIC_INIT, NULL },
  { BCRYPT_SHA1_ALGORITHM, "SHA1", 20, INIT_ONCE_STATIC_INIT, NULL },
  { BCRYPT_SHA256_ALGORITHM, "SHA256", 32, INIT_ONCE_STATIC_INIT, NULL },
  { BCRYPT_SHA512_ALGORITHM, "SHA512", 64, INIT_ONCE_STATIC_INIT, NULL },
};

const EVP_MD *EVP_md5(void) { return &mds[0]; }
const EVP_MD *EVP_sha1(void) { return &mds[1]; }
const EVP_MD *EVP_sha256(void) { return &mds[2]; }
const EVP_MD *EVP_sha512(void) { return &mds[3]; }

const EVP_MD *EVP_get_digestbyname(const char *name) {
  char k[16];
  size_t n = 0;
  for (const char *p = name; *p && n + 1 < sizeof k; p++)
    if (*p != '-') k[n++] = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
  k[n] = '\0';
  for (size_t i = 0; i < sizeof mds / sizeof mds[0]; i++)
    if (strcmp(k, mds[i].name) == 0 || (i > 1 && strncmp(k, "SHA2", 4) == 0 && strcmp(k + 4, mds[i].name + 3) == 0))
      return &mds[i];
  return NULL;
}

const char *EVP_MD_get0_name(const EVP_MD *md) { return md->name; }
int EVP_MD_get_size(const EVP_MD *md) { return md->size; }

static BOOL CALLBACK open_provider(PINIT_ONCE once, PVOID arg, PVOID *ctx) {
  EVP_MD *md = arg;
  return BCRYPT_SUCCESS(BCryptOpenAlgorithmProvider(&md->prov, md->alg, NULL, 0));
}

static BCRYPT_ALG_HANDLE provider(const EVP_MD *md) {
  EVP_MD *m = (EVP_MD *)md;
  if (!InitOnceExecuteOnce(&m->once, open_provider, m, NULL)) return NULL;
  return m->prov;
}

EVP_MD_CTX *EVP_MD_CTX_new(void) {
  return calloc(1, sizeof(EVP_MD_CTX));
}

void EVP_MD_CTX_free(EVP_MD_CTX *ctx) {
  if (ctx == NULL) return;
  if (ctx->h) BCryptDestroyHash(ctx->h);
  free(ctx);
}

int EVP_DigestInit_ex(EVP_MD_CTX *ctx, const EVP_MD *md, ENGINE *impl) {
  if (ctx->h) { BCryptDestroyHash(ctx->h); ctx->h = NULL; }
  BCRYPT_ALG_HANDLE prov = md ? provider(md) : NULL;
  if (prov == NULL) return 0;
  if (!BCRYPT_SUCCESS(BCryptCreateHash(prov, &ctx->h, NULL, 0, NULL, 0, 0))) {
    ctx->h = NULL;
    return 0;
  }
  ctx->md = md;
  return 1;
}

int EVP_DigestUpdate(EVP_MD_CTX *ctx, const void *data, size_t n) {
  const unsigned char *p = data;
  if (ctx->h == NULL) return 0;
  while (n > 0) {  /* BCryptHashData takes a ULONG length */
    ULONG k = n > 0x40000000u ? 0x40000000u : (ULONG)n;
    if (!BCRYPT_SUCCESS(BCryptHashData(ctx->h, (PUCHAR)p, k, 0))) return 0;
    p += k;
    n -= k;
  }
  return 1;
}

int EVP_DigestFinal_ex(EVP_MD_CTX *ctx, unsigned char *out, unsigned int *len) {
  if (ctx->h == NULL) return 0;
  NTSTATUS st = BCryptFinishHash(ctx->h, out, (ULONG)ctx->md->size, 0);
  BCryptDestroyHash(ctx->h);  /* a finished hash cannot take more data; Init makes a new one */
  ctx->h = NULL;
  if (!BCRYPT_SUCCESS(st)) return 0;
  if (len) *len = (unsigned)ctx->md->size;
  return 1;
}

int EVP_MD_CTX_copy_ex(EVP_MD_CTX *out, const EVP_MD_CTX *in) {
  if (in->h == NULL) return 0;
  if (out->h) { BCryptDestroyHash(out->h); out->h = NULL; }
  if (!BCRYPT_SUCCESS(BCryptDuplicateHash(in->h, &out->h, NULL, 0, 0))) {
    out->h = NULL;
    return 0;
  }
  out->md = in->md;
  return 1;
}

const char *OpenSSL_version(int what) {
  return "none (hashing through Windows CNG)";
}

/* RFC 2104: H((K ^ opad) || H((K ^ ipad) || data)), K padded to the block size. */
unsigned char *HMAC(const EVP_MD *md, const void *key, int key_len, const unsigned char *d,
                    size_t n, unsigned char *out, unsigned int *len) {
  size_t block = md->size > 32 ? 128 : 64;
  unsigned char k[128], pad[128], inner[EVP_MAX_MD_SIZE];
  unsigned ilen = 0;
  int ok = 1;
  memset(k, 0, sizeof k);
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  if (c == NULL || key_len < 0) { EVP_MD_CTX_free(c); return NULL; }
  if ((size_t)key_len > block) {
    ok = EVP_DigestInit_ex(c, md, NULL) && EVP_DigestUpdate(c, key, (size_t)key_len) &&
         EVP_DigestFinal_ex(c, k, NULL);
  } else if (key_len > 0) {
    memcpy(k, key, (size_t)key_len);
  }
  for (size_t i = 0; i < block; i++) pad[i] = k[i] ^ 0x36;
  ok = ok && EVP_DigestInit_ex(c, md, NULL) && EVP_DigestUpdate(c, pad, block) &&
       EVP_DigestUpdate(c, d, n) && EVP_DigestFinal_ex(c, inner, &ilen);
  for (size_t i = 0; i < block; i++) pad[i] = k[i] ^ 0x5c;
  ok = ok && EVP_DigestInit_ex(c, md, NULL) && EVP_DigestUpdate(c, pad, block) &&
       EVP_DigestUpdate(c, inner, ilen) && EVP_DigestFinal_ex(c, out, len);
  EVP_MD_CTX_free(c);
  SecureZeroMemory(k, sizeof k);
  SecureZeroMemory(pad, sizeof pad);
  return ok ? out : NULL;
}
