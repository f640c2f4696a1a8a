/*
 * crypto.h: every cryptographic primitive of cairn, over libsodium (DESIGN §3).
 *
 * Domains. Every chunk belongs to an encryption domain d with a 32-byte key K_d.
 * From K_d, crypto_kdf (context "cairn-ch") derives:
 *   subkey 1: K_d.id   (32 B) the BLAKE2b key for chunk ids
 *   subkey 2: K_d.enc  (32 B) the XChaCha20-Poly1305 key
 *   subkey 3: domain_id (first 16 B) a public label of the domain
 * Managed domain of an app: K_d = BLAKE2b-256(key = master, "cairn managed v1" || len || app).
 * CSEK domain: K_d = the image's random DEK.
 *
 * CSEK envelope: KEK = BLAKE2b-256 (unkeyed) over
 *   le32(len("cairn csek v1")) || "cairn csek v1" || le32(len(csek)) || csek || le32(len(image_id)) || image_id
 * wrapped = nonce(24, random) || XChaCha20-Poly1305(KEK, DEK, ad = image_id) (32 + 16 bytes).
 * A wrong key fails the unwrap: that is the key check (CAIRN_EKEY).
 *
 * Secrets. Keys live in guarded memory (sodium_malloc: guard pages, mlock,
 * excluded from core dumps where the OS allows) and are wiped on destroy. No
 * function here logs or formats key bytes into error messages.
 *
 * Thread-safety: a struct cairn_domain is read-only after creation and may be
 * shared by threads. Call cairn_crypto_init() once before anything else.
 */
#ifndef CAIRN_CRYPTO_H
#define CAIRN_CRYPTO_H

#include "cairn/prelude.h"

#define CAIRN_KEY_BYTES 32
#define CAIRN_DOMAIN_ID_BYTES 16
#define CAIRN_CHUNK_ID_BYTES 32
#define CAIRN_CSEK_MIN 16
#define CAIRN_CSEK_MAX 512
#define CAIRN_WRAPPED_DEK_BYTES (24 + 32 + 16)

/* sodium_init; also disables core dumps of secrets where possible. CAIRN_EINTERNAL on failure. */
int cairn_crypto_init(void);

/* A secret byte string in guarded memory. */
struct cairn_secret {
    uint8_t *bytes; /* sodium_malloc'd, owned */
    size_t len;
};
/* Allocate len bytes of guarded memory (zeroed). CAIRN_ENOMEM. */
int cairn_secret_new(struct cairn_secret **out, size_t len);
/* Fill a new secret with random bytes. */
int cairn_secret_random(struct cairn_secret **out, size_t len);
/*
 * Read a key file (raw bytes, taken whole) into guarded memory. The file must be
 * between min and max bytes; the message names the file and the size rule but
 * never the content. CAIRN_EKEY for a size out of range, CAIRN_EIO/ENOTFOUND else.
 */
int cairn_secret_read_file(struct cairn_secret **out, const char *path, size_t min, size_t max);
/* Wipe and free; NULL-safe; sets *s = NULL. */
void cairn_secret_destroy(struct cairn_secret **s);

/*
 * Validate a customer-supplied key: bytes, not empty, 16..512 long.
 * CAIRN_EKEY with a message that says which rule failed (empty / too short: N
 * bytes, at least 16 / too long: N bytes, at most 512).
 */
int cairn_csek_validate(const uint8_t *key, size_t len);

struct cairn_domain; /* opaque; guarded memory */

/* Domain from a 32-byte domain key (e.g. a DEK). */
int cairn_domain_new(struct cairn_domain **out, const uint8_t key[CAIRN_KEY_BYTES]);
/* Managed domain of `app` under the 32-byte cluster master key. app: 1..255 bytes. */
int cairn_domain_new_managed(struct cairn_domain **out, const uint8_t master[CAIRN_KEY_BYTES],
                             const char *app);
void cairn_domain_destroy(struct cairn_domain **d);
/* The public 16-byte label; valid while d lives. */
const uint8_t *cairn_domain_id(const struct cairn_domain *d);
/* The 32-byte encryption subkey (for the codec); valid while d lives. Never log it. */
const uint8_t *cairn__domain_enc_key(const struct cairn_domain *d);

/* chunk_id = BLAKE2b-256(key = K_d.id, data). */
void cairn_chunk_id(const struct cairn_domain *d, const uint8_t *data, size_t len,
                    uint8_t out[CAIRN_CHUNK_ID_BYTES]);

/* A fresh random DEK in guarded memory (32 bytes). */
int cairn_dek_generate(struct cairn_secret **dek);
/* Wrap dek (32 B) under csek for image_id. Validates the csek first (CAIRN_EKEY). */
int cairn_dek_wrap(const uint8_t *csek, size_t csek_len, const char *image_id,
                   const struct cairn_secret *dek, uint8_t out[CAIRN_WRAPPED_DEK_BYTES]);
/*
 * Unwrap; CAIRN_EKEY "wrong encryption key" when the csek (or image id) does not
 * match, CAIRN_EKEY for a csek of invalid size. *dek is a new secret on success.
 */
int cairn_dek_unwrap(const uint8_t *csek, size_t csek_len, const char *image_id,
                     const uint8_t wrapped[CAIRN_WRAPPED_DEK_BYTES], struct cairn_secret **dek);

/* Keyless checksum used by the chunk codec: BLAKE2b-128 of data. */
#define CAIRN_CHECKSUM_BYTES 16
void cairn_checksum(const uint8_t *data, size_t len, uint8_t out[CAIRN_CHECKSUM_BYTES]);

/* Tokens (app and admin tokens): the coordinator keeps only BLAKE2b-256("cairn token v1" || token). */
#define CAIRN_TOKEN_HASH_BYTES 32
void cairn_token_hash(const uint8_t *token, size_t len, uint8_t out[CAIRN_TOKEN_HASH_BYTES]);
/* Constant-time comparison of two equal-length byte strings. */
bool cairn_const_equal(const uint8_t *a, const uint8_t *b, size_t len);

/* Random bytes (not secret: ids, nonces). */
void cairn_random_bytes(void *out, size_t n);

#endif
