/*
 * crypto.c: every cryptographic derivation of cairn, over libsodium (see crypto.h).
 *
 * The derivations below are part of the storage format (chunk ids, domain ids,
 * wrapped DEKs persist on disk): changing one orphans every stored chunk. The
 * known-answer vectors in tests/unit/test_crypto.c pin them.
 *
 *   domain subkeys:  crypto_kdf_derive_from_key(32, id, "cairn-ch", K_d)
 *                    id 1 -> K_d.id, id 2 -> K_d.enc, id 3 -> 32 bytes whose
 *                    first 16 are the domain_id (derived at 32 bytes and cut,
 *                    since BLAKE2b output depends on its length)
 *   managed K_d:     BLAKE2b-256(key = master,
 *                      le32(16) || "cairn managed v1" || le32(len(app)) || app)
 *   CSEK KEK:        BLAKE2b-256(unkeyed,
 *                      le32(13) || "cairn csek v1" || le32(len(csek)) || csek
 *                      || le32(len(image_id)) || image_id)
 *   wrapped DEK:     nonce(24, random) || XChaCha20-Poly1305(KEK, DEK, ad = image_id)
 *
 * Length prefixes make every field boundary unambiguous (no "ab"||"c" vs
 * "a"||"bc" collisions). The KEK is a plain hash of the CSEK rather than a
 * password hash: a CSEK is a customer key of at least 16 bytes, not a password.
 *
 * Secrets (domain keys, DEKs, KEKs on the way) live in sodium_malloc memory or
 * on the stack only for the duration of one call, wiped with sodium_memzero.
 * Error messages name sizes, files and image ids, never key bytes.
 */
#include "cairn/crypto.h"
#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <unistd.h>

#define KDF_CONTEXT "cairn-ch"
#define MANAGED_LABEL "cairn managed v1"
#define CSEK_LABEL "cairn csek v1"
#define APP_MAX 255

_Static_assert(sizeof(KDF_CONTEXT) - 1 == crypto_kdf_CONTEXTBYTES, "kdf context is 8 bytes");
_Static_assert(CAIRN_KEY_BYTES == crypto_kdf_KEYBYTES, "domain key size");
_Static_assert(CAIRN_KEY_BYTES == crypto_aead_xchacha20poly1305_ietf_KEYBYTES, "aead key size");
_Static_assert(CAIRN_WRAPPED_DEK_BYTES == crypto_aead_xchacha20poly1305_ietf_NPUBBYTES +
                                              CAIRN_KEY_BYTES + crypto_aead_xchacha20poly1305_ietf_ABYTES,
               "wrapped dek layout");

/* Lives in sodium_malloc memory, read-only (mprotect) after creation. */
struct cairn_domain {
    uint8_t id_key[CAIRN_KEY_BYTES];
    uint8_t enc_key[CAIRN_KEY_BYTES];
    uint8_t domain_id[CAIRN_DOMAIN_ID_BYTES];
};

int cairn_crypto_init(void)
{
    /* sodium_init is idempotent and thread-safe: 0 first time, 1 afterwards. Core
     * dumps: sodium_malloc marks guarded pages MADV_DONTDUMP; whether to disable
     * dumps of the whole process (prctl PR_SET_DUMPABLE) is each daemon's call. */
    if (sodium_init() < 0)
        return cairn_err_set(CAIRN_EINTERNAL, "libsodium failed to initialise");
    return CAIRN_OK;
}

/* ---- secrets ---------------------------------------------------------- */

int cairn_secret_new(struct cairn_secret **out, size_t len)
{
    *out = NULL;
    struct cairn_secret *s = cairn_calloc(1, sizeof(*s));
    if (!s)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for a secret");
    s->bytes = sodium_malloc(len ? len : 1);
    if (!s->bytes) {
        cairn_free(s);
        return cairn_err_set(CAIRN_ENOMEM, "out of guarded memory for a %zu byte secret", len);
    }
    sodium_memzero(s->bytes, len ? len : 1);
    s->len = len;
    *out = s;
    return CAIRN_OK;
}

int cairn_secret_random(struct cairn_secret **out, size_t len)
{
    CAIRN_FORWARD_IF_ERROR(cairn_secret_new(out, len));
    randombytes_buf((*out)->bytes, len);
    return CAIRN_OK;
}

void cairn_secret_destroy(struct cairn_secret **s)
{
    if (!s || !*s)
        return;
    if ((*s)->bytes) {
        sodium_memzero((*s)->bytes, (*s)->len ? (*s)->len : 1);
        sodium_free((*s)->bytes);
    }
    cairn_free(*s);
    *s = NULL;
}

/*
 * Read through a guarded buffer of max + 1 bytes (so "too long" is detected
 * without trusting fstat, and FIFOs such as /dev/fd/N work), then copy into a
 * secret of the exact size.
 */
int cairn_secret_read_file(struct cairn_secret **out, const char *path, size_t min, size_t max)
{
    int rc = CAIRN_OK;
    int fd = -1;
    struct cairn_secret *tmp = NULL;
    *out = NULL;

    if (!path || max == 0 || max == SIZE_MAX || min > max) {
        rc = cairn_err_set(CAIRN_EINVAL, "invalid key file arguments");
        goto done;
    }
    do {
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        int e = errno;
        /* per crypto.h: missing is ENOTFOUND, any other failure EIO (the errno text says which) */
        rc = cairn_err_set_errno(e == ENOENT ? CAIRN_ENOTFOUND : CAIRN_EIO, e, "open key file %s",
                                 path);
        goto done;
    }
    rc = cairn_secret_new(&tmp, max + 1);
    if (rc != CAIRN_OK)
        goto done;
    size_t n = 0;
    while (n < max + 1) {
        ssize_t r = read(fd, tmp->bytes + n, max + 1 - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            rc = cairn_err_set_errno(CAIRN_EIO, e, "read key file %s", path);
            goto done;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n > max) {
        rc = cairn_err_set(CAIRN_EKEY, "key file %s is too long: more than %zu bytes", path, max);
        goto done;
    }
    if (n == 0 && min > 0) {
        rc = cairn_err_set(CAIRN_EKEY, "key file %s is empty (at least %zu bytes)", path, min);
        goto done;
    }
    if (n < min) {
        rc = cairn_err_set(CAIRN_EKEY, "key file %s is too short: %zu bytes (at least %zu)", path,
                           n, min);
        goto done;
    }
    rc = cairn_secret_new(out, n);
    if (rc != CAIRN_OK)
        goto done;
    memcpy((*out)->bytes, tmp->bytes, n);

done:
    cairn_secret_destroy(&tmp);
    if (fd >= 0)
        close(fd);
    return rc;
}

int cairn_csek_validate(const uint8_t *key, size_t len)
{
    if (len == 0)
        return cairn_err_set(CAIRN_EKEY, "encryption key is empty");
    if (len < CAIRN_CSEK_MIN)
        return cairn_err_set(CAIRN_EKEY, "encryption key is too short: %zu bytes (at least %d)",
                             len, CAIRN_CSEK_MIN);
    if (len > CAIRN_CSEK_MAX)
        return cairn_err_set(CAIRN_EKEY, "encryption key is too long: %zu bytes (at most %d)", len,
                             CAIRN_CSEK_MAX);
    if (!key)
        return cairn_err_set(CAIRN_EINVAL, "encryption key is NULL");
    return CAIRN_OK;
}

/* ---- domains ---------------------------------------------------------- */

int cairn_domain_new(struct cairn_domain **out, const uint8_t key[CAIRN_KEY_BYTES])
{
    *out = NULL;
    if (cairn_crypto_init() != CAIRN_OK)
        return CAIRN_EINTERNAL;
    struct cairn_domain *d = sodium_malloc(sizeof(*d));
    if (!d)
        return cairn_err_set(CAIRN_ENOMEM, "out of guarded memory for an encryption domain");
    uint8_t label[32];
    crypto_kdf_derive_from_key(d->id_key, sizeof(d->id_key), 1, KDF_CONTEXT, key);
    crypto_kdf_derive_from_key(d->enc_key, sizeof(d->enc_key), 2, KDF_CONTEXT, key);
    crypto_kdf_derive_from_key(label, sizeof(label), 3, KDF_CONTEXT, key);
    memcpy(d->domain_id, label, sizeof(d->domain_id));
    sodium_memzero(label, sizeof(label));
    sodium_mprotect_readonly(d);
    *out = d;
    return CAIRN_OK;
}

static void hash_field(crypto_generichash_state *st, const void *p, size_t n)
{
    uint8_t len[4];
    cairn_store_le32(len, (uint32_t)n);
    crypto_generichash_update(st, len, sizeof(len));
    crypto_generichash_update(st, p, n);
}

int cairn_domain_new_managed(struct cairn_domain **out, const uint8_t master[CAIRN_KEY_BYTES],
                             const char *app)
{
    *out = NULL;
    if (cairn_crypto_init() != CAIRN_OK)
        return CAIRN_EINTERNAL;
    size_t app_len = app ? strnlen(app, APP_MAX + 1) : 0;
    if (app_len == 0 || app_len > APP_MAX)
        return cairn_err_set(CAIRN_EINVAL, "app name must be 1..%d bytes", APP_MAX);

    crypto_generichash_state st;
    uint8_t k[CAIRN_KEY_BYTES];
    crypto_generichash_init(&st, master, CAIRN_KEY_BYTES, sizeof(k));
    hash_field(&st, MANAGED_LABEL, sizeof(MANAGED_LABEL) - 1);
    hash_field(&st, app, app_len);
    crypto_generichash_final(&st, k, sizeof(k));
    int rc = cairn_domain_new(out, k);
    sodium_memzero(&st, sizeof(st));
    sodium_memzero(k, sizeof(k));
    return rc;
}

void cairn_domain_destroy(struct cairn_domain **d)
{
    if (!d || !*d)
        return;
    sodium_mprotect_readwrite(*d);
    sodium_memzero(*d, sizeof(**d));
    sodium_free(*d);
    *d = NULL;
}

const uint8_t *cairn_domain_id(const struct cairn_domain *d)
{
    return d->domain_id;
}

const uint8_t *cairn__domain_enc_key(const struct cairn_domain *d)
{
    return d->enc_key;
}

void cairn_chunk_id(const struct cairn_domain *d, const uint8_t *data, size_t len,
                    uint8_t out[CAIRN_CHUNK_ID_BYTES])
{
    static const uint8_t empty[1];
    crypto_generichash(out, CAIRN_CHUNK_ID_BYTES, data ? data : empty, len, d->id_key,
                       sizeof(d->id_key));
}

/* ---- CSEK envelope ---------------------------------------------------- */

int cairn_dek_generate(struct cairn_secret **dek)
{
    return cairn_secret_random(dek, CAIRN_KEY_BYTES);
}

static void kek_derive(const uint8_t *csek, size_t csek_len, const char *image_id,
                       uint8_t kek[CAIRN_KEY_BYTES])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, CAIRN_KEY_BYTES);
    hash_field(&st, CSEK_LABEL, sizeof(CSEK_LABEL) - 1);
    hash_field(&st, csek, csek_len);
    hash_field(&st, image_id, strlen(image_id));
    crypto_generichash_final(&st, kek, CAIRN_KEY_BYTES);
    sodium_memzero(&st, sizeof(st));
}

int cairn_dek_wrap(const uint8_t *csek, size_t csek_len, const char *image_id,
                   const struct cairn_secret *dek, uint8_t out[CAIRN_WRAPPED_DEK_BYTES])
{
    CAIRN_FORWARD_IF_ERROR(cairn_csek_validate(csek, csek_len));
    CAIRN_RETURN_ERROR_IF(!image_id || !*image_id, CAIRN_EINVAL, "wrapping a key needs an image id");
    CAIRN_RETURN_ERROR_IF(!dek || dek->len != CAIRN_KEY_BYTES, CAIRN_EINVAL,
                          "data key for image %s must be %d bytes", image_id, CAIRN_KEY_BYTES);
    CAIRN_FORWARD_IF_ERROR(cairn_crypto_init());

    uint8_t kek[CAIRN_KEY_BYTES];
    kek_derive(csek, csek_len, image_id, kek);
    uint8_t *nonce = out;
    randombytes_buf(nonce, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(
        out + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, &clen, dek->bytes, CAIRN_KEY_BYTES,
        (const uint8_t *)image_id, strlen(image_id), NULL, nonce, kek);
    sodium_memzero(kek, sizeof(kek));
    return CAIRN_OK;
}

int cairn_dek_unwrap(const uint8_t *csek, size_t csek_len, const char *image_id,
                     const uint8_t wrapped[CAIRN_WRAPPED_DEK_BYTES], struct cairn_secret **dek)
{
    *dek = NULL;
    CAIRN_FORWARD_IF_ERROR(cairn_csek_validate(csek, csek_len));
    CAIRN_RETURN_ERROR_IF(!image_id || !*image_id, CAIRN_EINVAL, "unwrapping a key needs an image id");
    CAIRN_FORWARD_IF_ERROR(cairn_crypto_init());

    struct cairn_secret *s = NULL;
    CAIRN_FORWARD_IF_ERROR(cairn_secret_new(&s, CAIRN_KEY_BYTES));
    uint8_t kek[CAIRN_KEY_BYTES];
    kek_derive(csek, csek_len, image_id, kek);
    unsigned long long mlen = 0;
    int bad = crypto_aead_xchacha20poly1305_ietf_decrypt(
        s->bytes, &mlen, NULL, wrapped + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
        CAIRN_WRAPPED_DEK_BYTES - crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
        (const uint8_t *)image_id, strlen(image_id), wrapped, kek);
    sodium_memzero(kek, sizeof(kek));
    if (bad || mlen != CAIRN_KEY_BYTES) {
        cairn_secret_destroy(&s);
        return cairn_err_set(CAIRN_EKEY, "wrong encryption key for image %s", image_id);
    }
    *dek = s;
    return CAIRN_OK;
}

/* ---- keyless helpers -------------------------------------------------- */

void cairn_checksum(const uint8_t *data, size_t len, uint8_t out[CAIRN_CHECKSUM_BYTES])
{
    static const uint8_t empty[1];
    crypto_generichash(out, CAIRN_CHECKSUM_BYTES, data ? data : empty, len, NULL, 0);
}

void cairn_random_bytes(void *out, size_t n)
{
    randombytes_buf(out, n);
}

void cairn_token_hash(const uint8_t *token, size_t len, uint8_t out[CAIRN_TOKEN_HASH_BYTES])
{
    static const char label[] = "cairn token v1";
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, CAIRN_TOKEN_HASH_BYTES);
    crypto_generichash_update(&st, (const uint8_t *)label, sizeof(label) - 1);
    crypto_generichash_update(&st, token, len);
    crypto_generichash_final(&st, out, CAIRN_TOKEN_HASH_BYTES);
    sodium_memzero(&st, sizeof(st));
}

bool cairn_const_equal(const uint8_t *a, const uint8_t *b, size_t len)
{
    return sodium_memcmp(a, b, len) == 0;
}
