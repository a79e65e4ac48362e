/*
** digest.h: message digests shared by upkit.hash, upkit.fs and upkit.sql
** (implemented in hash.c, over OpenSSL's EVP interface).
*/
#ifndef UPKIT_DIGEST_H
#define UPKIT_DIGEST_H

#include <stdint.h>

#include <openssl/evp.h>

#include "upkit.h"

/* The EVP digest named md5, sha1, sha256 or sha512; EINVAL naming fn otherwise. */
const EVP_MD *upk_digest_by_name(lua_State *L, const char *name, const char *fn);

/*
** The digest of what c has seen so far, without finishing c (a copy is
** finished). Returns 0, or -1 when memory ran out.
*/
int upk_digest_peek(const EVP_MD_CTX *c, unsigned char *out, unsigned *len);

/* Pseudo errno: a file changed (shrank) while it was read. */
#define UPK_SOURCE_CHANGED (-2)

/*
** The digest of the first size bytes of fd (from offset 0), read by
** fs.copy's pipeline (implemented in fs.c). Returns 0, an errno (EINTR on
** Ctrl-C), or UPK_SOURCE_CHANGED.
*/
int upk_hash_fd(int fd, uint64_t size, const EVP_MD *md, unsigned char *digest, unsigned *dlen);

#endif
