// Gateway access keys: the random part. Keys are shown once and stored as their
// SHA-256; the SQL functions in the extension script keep the catalog rows.
#include "cpp_wall.h"
#include "crypto.h"

// inference_internal.new_access_key() RETURNS text: "pgi_" and 48 hex characters (192 random bits).
PGI_FUNCTION(pgi_new_access_key) {
    (void)fcinfo;
    return pgi::pg::text_datum("pgi_" + pgi::crypto::to_hex(pgi::crypto::random_bytes(24)));
}
