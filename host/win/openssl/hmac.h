/*
** openssl/hmac.h for the Windows build: OpenSSL's one-shot HMAC(), over the
** CNG digests of openssl/evp.h (host/evp_win.c).
*/
#ifndef UPKIT_WIN_OPENSSL_HMAC_H
#define UPKIT_WIN_OPENSSL_HMAC_H

#include <openssl/evp.h>

/* HMAC of d with key under md into out (*len bytes); out, or NULL on failure. */
unsigned char *HMAC(const EVP_MD *md, const void *key, int key_len, const unsigned char *d,
                    size_t n, unsigned char *out, unsigned int *len);

#endif
