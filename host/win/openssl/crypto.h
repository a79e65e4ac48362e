/*
** openssl/crypto.h for the Windows build: upkit asks only for the version
** text; the answer names what does the hashing there (CNG).
*/
#ifndef UPKIT_WIN_OPENSSL_CRYPTO_H
#define UPKIT_WIN_OPENSSL_CRYPTO_H

#define OPENSSL_VERSION 0
const char *OpenSSL_version(int what);

#endif
