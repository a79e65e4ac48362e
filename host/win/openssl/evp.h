/*
** openssl/evp.h for the Windows build: the part of OpenSSL's EVP digest
** interface that upkit uses (hash.c, fs.c, sql*.c), implemented over CNG
** (BCrypt) in host/evp_win.c. Not OpenSSL: same names and meaning, so the
** digest code is one code on both systems. Only on the Windows include path.
*/
#ifndef UPKIT_WIN_OPENSSL_EVP_H
#define UPKIT_WIN_OPENSSL_EVP_H

#include <stddef.h>

#define EVP_MAX_MD_SIZE 64

typedef struct evp_md_st EVP_MD;           /* an algorithm (static) */
typedef struct evp_md_ctx_st EVP_MD_CTX;   /* a running digest */
typedef struct engine_st ENGINE;           /* always NULL */

/* md5, sha1, sha256, sha512 (any case, also "SHA-256"); NULL for any other name. */
const EVP_MD *EVP_get_digestbyname(const char *name);
const EVP_MD *EVP_md5(void);
const EVP_MD *EVP_sha1(void);
const EVP_MD *EVP_sha256(void);
const EVP_MD *EVP_sha512(void);
/* "MD5", "SHA1", "SHA256", "SHA512": the names OpenSSL gives. */
const char *EVP_MD_get0_name(const EVP_MD *md);
int EVP_MD_get_size(const EVP_MD *md);
#define EVP_MD_size EVP_MD_get_size

EVP_MD_CTX *EVP_MD_CTX_new(void);
void EVP_MD_CTX_free(EVP_MD_CTX *ctx);
/* out becomes a copy of in (its own BCrypt hash); 1 on success, 0 on failure. */
int EVP_MD_CTX_copy_ex(EVP_MD_CTX *out, const EVP_MD_CTX *in);

/* 1 on success, 0 on failure, as in OpenSSL. */
int EVP_DigestInit_ex(EVP_MD_CTX *ctx, const EVP_MD *md, ENGINE *impl);
int EVP_DigestUpdate(EVP_MD_CTX *ctx, const void *data, size_t n);
int EVP_DigestFinal_ex(EVP_MD_CTX *ctx, unsigned char *out, unsigned int *len);

#endif
