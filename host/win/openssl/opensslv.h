/* openssl/opensslv.h for the Windows build: see openssl/crypto.h. */
#include <openssl/crypto.h>
