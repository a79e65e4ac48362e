/* openssl/hmac.h for the Windows build: the digests of openssl/evp.h (upkit uses no HMAC call). */
#include <openssl/evp.h>
