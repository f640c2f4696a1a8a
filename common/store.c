/*
 * store.c: the chunk store (store.h): encoded chunks (codec.h) in a struct
 * cairn_kv under 'c' || domain_id || chunk_id.
 *
 * Design
 * - Dedup before work: put_chunk hashes the plaintext (keyed, so the id is per
 *   domain), asks the kv "have it?" (bloom filter first, kv.c) and only then
 *   compresses and encrypts. Two threads racing on the same new chunk both
 *   encode and write it; the bytes are identical (the nonce is the chunk id and
 *   zstd is deterministic), so the second write is harmless and both report
 *   was_new.
 * - No malloc per chunk on the write path: the encoded value goes to a
 *   per-thread scratch buffer of cairn_codec_bound(CAIRN_CODEC_MAX_PLAIN)
 *   bytes, allocated on a thread's first put and freed at thread exit by a
 *   pthread key destructor. (The main thread's buffer lives until the process
 *   ends.) It only ever holds ciphertext, so it needs no wiping.
 * - Every read verifies twice: RocksDB's checksums (kv.c) and the codec's
 *   keyless checksum + AEAD. Failures are CAIRN_ECORRUPT naming the chunk id in
 *   hex, so the caller can drop it and fetch a replica (DESIGN §5).
 * - Existence tests may have to read the value (kv.c: blob values), so
 *   has_chunk can fail with CAIRN_ECORRUPT for a damaged chunk: the caller
 *   learns the copy needs repair. put_chunk treats that as "absent" and writes
 *   a fresh copy over the damaged one (it holds the plaintext), which heals it.
 * - The scrub reads with RocksDB's checksums off (cairn_kv_iter_new_unverified)
 *   so that one damaged blob record is counted as a corrupt chunk by the codec's
 *   own checksum instead of ending the whole scan with an iterator error.
 */
#include "cairn/store.h"
#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"
#include "cairn/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

#define HEX_ID (2 * CAIRN_CHUNK_ID_BYTES + 1)
#define HEX_DOMAIN (2 * CAIRN_DOMAIN_ID_BYTES + 1)

struct cairn_store {
    struct cairn_kv *kv;
    char *dir;
};

/* ---- per-thread scratch for encoded values ---- */

static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static pthread_key_t scratch_key;
static bool scratch_key_ok;
static _Thread_local uint8_t *tls_scratch;

static void scratch_release(void *p)
{
    cairn_free(p);
}

static void scratch_key_init(void)
{
    scratch_key_ok = pthread_key_create(&scratch_key, scratch_release) == 0;
}

static int scratch_get(uint8_t **out)
{
    *out = tls_scratch;
    if (tls_scratch)
        return CAIRN_OK;
    pthread_once(&scratch_once, scratch_key_init);
    if (!scratch_key_ok)
        return cairn_err_set(CAIRN_EINTERNAL, "cannot create the thread key of the chunk store's buffers");
    uint8_t *p = cairn_malloc(cairn_codec_bound(CAIRN_CODEC_MAX_PLAIN));
    if (!p)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for the chunk store's write buffer");
    if (pthread_setspecific(scratch_key, p) != 0) {
        cairn_free(p);
        return cairn_err_set(CAIRN_ENOMEM, "out of memory registering the chunk store's write buffer");
    }
    tls_scratch = p;
    *out = p;
    return CAIRN_OK;
}

/* ---- helpers ---- */

/* Re-set the current message as "<prefix>: <message>" with the same code. */
static int wrap_err(int code, const char *fmt, ...) CAIRN_PRINTF(2, 3);
static int wrap_err(int code, const char *fmt, ...)
{
    char inner[768], head[256];
    snprintf(inner, sizeof(inner), "%s", cairn_err_msg());
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof(head), fmt, ap);
    va_end(ap);
    return cairn_err_set(code, "%s: %s", head, inner);
}

void cairn_store_chunk_key(uint8_t key[CAIRN_STORE_CHUNK_KEY_BYTES], const uint8_t domain_id[CAIRN_DOMAIN_ID_BYTES],
                           const uint8_t id[CAIRN_CHUNK_ID_BYTES])
{
    key[0] = 'c';
    memcpy(key + 1, domain_id, CAIRN_DOMAIN_ID_BYTES);
    memcpy(key + 1 + CAIRN_DOMAIN_ID_BYTES, id, CAIRN_CHUNK_ID_BYTES);
}

/* ---- lifecycle ---- */

int cairn_store_open(struct cairn_store **out, const char *dir, bool create)
{
    *out = NULL;
    int rc = CAIRN_OK;
    struct cairn_store *s = cairn_calloc(1, sizeof(*s));
    if (!s || !(s->dir = cairn_strdup(dir))) {
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory opening chunk store '%s'", dir);
        goto out;
    }
    rc = cairn_kv_open(&s->kv, dir, create);
out:
    if (rc != CAIRN_OK)
        cairn_store_close(&s);
    *out = s;
    return rc;
}

void cairn_store_close(struct cairn_store **sp)
{
    if (!sp || !*sp)
        return;
    cairn_kv_close(&(*sp)->kv);
    cairn_free((*sp)->dir);
    cairn_free(*sp);
    *sp = NULL;
}

struct cairn_kv *cairn_store_kv(struct cairn_store *s)
{
    return s->kv;
}

int cairn_store_sync(struct cairn_store *s)
{
    return cairn_kv_sync(s->kv);
}

/* ---- chunks ---- */

int cairn_store_put_chunk(struct cairn_store *s, struct cairn_codec *c, const struct cairn_domain *d,
                          const uint8_t *plain, size_t len, uint8_t id_out[CAIRN_CHUNK_ID_BYTES],
                          struct cairn_put_result *res)
{
    struct cairn_put_result r = {false, 0};
    if (res)
        *res = r;
    if (len > CAIRN_CODEC_MAX_PLAIN)
        return cairn_err_set(CAIRN_ETOOBIG, "chunk of %zu bytes is over the limit of %u", len, CAIRN_CODEC_MAX_PLAIN);
    uint8_t id[CAIRN_CHUNK_ID_BYTES];
    cairn_chunk_id(d, plain, len, id);
    memcpy(id_out, id, CAIRN_CHUNK_ID_BYTES);

    uint8_t key[CAIRN_STORE_CHUNK_KEY_BYTES];
    cairn_store_chunk_key(key, cairn_domain_id(d), id);
    char hex[HEX_ID];
    bool found = false;
    int rc = cairn_kv_has(s->kv, key, sizeof(key), &found);
    if (rc == CAIRN_ECORRUPT) {
        /* our copy is damaged and we hold the plaintext: write a fresh one over it */
        cairn_hex_encode(hex, id, CAIRN_CHUNK_ID_BYTES);
        cairn_warn("chunk %s in store '%s' is damaged; rewriting it from new data", hex, s->dir);
        found = false;
    } else if (rc != CAIRN_OK) {
        cairn_hex_encode(hex, id, CAIRN_CHUNK_ID_BYTES);
        return wrap_err(rc, "chunk %s", hex);
    }
    if (found)
        return CAIRN_OK;
    uint8_t *buf;
    CAIRN_FORWARD_IF_ERROR(scratch_get(&buf));
    size_t n = 0;
    CAIRN_FORWARD_IF_ERROR(
        cairn_codec_encode(c, d, id, plain, len, buf, cairn_codec_bound(CAIRN_CODEC_MAX_PLAIN), &n));
    rc = cairn_kv_put(s->kv, key, sizeof(key), buf, n);
    if (rc != CAIRN_OK) {
        cairn_hex_encode(hex, id, CAIRN_CHUNK_ID_BYTES);
        return wrap_err(rc, "store chunk %s", hex);
    }
    r.was_new = true;
    r.stored_len = n;
    if (res)
        *res = r;
    return CAIRN_OK;
}

int cairn_store_put_raw(struct cairn_store *s, const uint8_t domain_id[CAIRN_DOMAIN_ID_BYTES],
                        const uint8_t id[CAIRN_CHUNK_ID_BYTES], const uint8_t *stored, size_t len)
{
    char hex[HEX_ID];
    cairn_hex_encode(hex, id, CAIRN_CHUNK_ID_BYTES);
    int rc = cairn_codec_verify(stored, len);
    if (rc != CAIRN_OK)
        return wrap_err(rc, "chunk %s refused", hex);
    struct cairn_chunk_header h;
    rc = cairn_codec_parse_header(stored, len, &h);
    if (rc != CAIRN_OK)
        return wrap_err(rc, "chunk %s refused", hex);
    if (memcmp(h.domain_id, domain_id, CAIRN_DOMAIN_ID_BYTES) != 0) {
        char got[HEX_DOMAIN], want[HEX_DOMAIN];
        cairn_hex_encode(got, h.domain_id, CAIRN_DOMAIN_ID_BYTES);
        cairn_hex_encode(want, domain_id, CAIRN_DOMAIN_ID_BYTES);
        return cairn_err_set(CAIRN_ECORRUPT, "chunk %s refused: its header names domain %s, expected %s", hex, got,
                             want);
    }
    uint8_t key[CAIRN_STORE_CHUNK_KEY_BYTES];
    cairn_store_chunk_key(key, domain_id, id);
    rc = cairn_kv_put(s->kv, key, sizeof(key), stored, len);
    if (rc != CAIRN_OK)
        return wrap_err(rc, "store chunk %s", hex);
    return CAIRN_OK;
}

int cairn_store_has_chunk(struct cairn_store *s, const uint8_t domain_id[CAIRN_DOMAIN_ID_BYTES],
                          const uint8_t id[CAIRN_CHUNK_ID_BYTES], bool *found)
{
    uint8_t key[CAIRN_STORE_CHUNK_KEY_BYTES];
    cairn_store_chunk_key(key, domain_id, id);
    int rc = cairn_kv_has(s->kv, key, sizeof(key), found);
    if (rc != CAIRN_OK) {
        char hex[HEX_ID];
        cairn_hex_encode(hex, id, CAIRN_CHUNK_ID_BYTES);
        return wrap_err(rc, "chunk %s", hex);
    }
    return CAIRN_OK;
}

int cairn_store_get_chunk(struct cairn_store *s, struct cairn_codec *c, const struct cairn_domain *d,
                          const uint8_t id[CAIRN_CHUNK_ID_BYTES], uint8_t *out, size_t cap, size_t *len)
{
    *len = 0;
    uint8_t key[CAIRN_STORE_CHUNK_KEY_BYTES];
    cairn_store_chunk_key(key, cairn_domain_id(d), id);
    char hex[HEX_ID];
    cairn_hex_encode(hex, id, CAIRN_CHUNK_ID_BYTES);
    uint8_t *val = NULL;
    size_t vlen = 0;
    int rc = cairn_kv_get(s->kv, key, sizeof(key), &val, &vlen);
    if (rc == CAIRN_ENOTFOUND) {
        char dom[HEX_DOMAIN];
        cairn_hex_encode(dom, cairn_domain_id(d), CAIRN_DOMAIN_ID_BYTES);
        return cairn_err_set(CAIRN_ENOTFOUND, "chunk %s not found in domain %s", hex, dom);
    }
    if (rc != CAIRN_OK)
        return wrap_err(rc, "chunk %s", hex);
    /* the codec's messages name the chunk already */
    rc = cairn_codec_decode(c, d, id, val, vlen, out, cap, len);
    cairn_kv_free(val);
    return rc;
}

int cairn_store_delete_chunk(struct cairn_store *s, const uint8_t domain_id[CAIRN_DOMAIN_ID_BYTES],
                             const uint8_t id[CAIRN_CHUNK_ID_BYTES])
{
    uint8_t key[CAIRN_STORE_CHUNK_KEY_BYTES];
    cairn_store_chunk_key(key, domain_id, id);
    int rc = cairn_kv_delete(s->kv, key, sizeof(key));
    if (rc != CAIRN_OK) {
        char hex[HEX_ID];
        cairn_hex_encode(hex, id, CAIRN_CHUNK_ID_BYTES);
        return wrap_err(rc, "delete chunk %s", hex);
    }
    return CAIRN_OK;
}

/* Keyless check of one stored value under its key: checksum, header, and the header's domain. */
static int scrub_one(const uint8_t *key, const uint8_t *val, size_t vlen)
{
    CAIRN_FORWARD_IF_ERROR(cairn_codec_verify(val, vlen));
    struct cairn_chunk_header h;
    CAIRN_FORWARD_IF_ERROR(cairn_codec_parse_header(val, vlen, &h));
    if (memcmp(h.domain_id, key + 1, CAIRN_DOMAIN_ID_BYTES) != 0)
        return cairn_err_set(CAIRN_ECORRUPT, "header names another domain than its key");
    return CAIRN_OK;
}

int cairn_store_scrub(struct cairn_store *s, struct cairn_store_scan *scan,
                      void (*on_corrupt)(void *arg, const uint8_t *domain_id, const uint8_t *id), void *arg)
{
    memset(scan, 0, sizeof(*scan));
    struct cairn_kv_iter *it = NULL;
    int rc = cairn_kv_iter_new_unverified(s->kv, "c", 1, &it);
    if (rc != CAIRN_OK)
        goto out;
    for (;;) {
        const uint8_t *key, *val;
        size_t klen, vlen;
        bool done;
        rc = cairn_kv_iter_next(it, &key, &klen, &val, &vlen, &done);
        if (rc != CAIRN_OK) {
            wrap_err(rc, "scrub of chunk store '%s' stopped after %llu chunks", s->dir,
                     (unsigned long long)scan->chunks);
            goto out;
        }
        if (done)
            break;
        scan->chunks++;
        scan->bytes += vlen;
        if (klen != CAIRN_STORE_CHUNK_KEY_BYTES) {
            /* not a key we write: count it, but there is no (domain, id) to report */
            scan->corrupt++;
            cairn_warn("scrub: chunk store '%s' has a chunk key of %zu bytes (expected %d)", s->dir, klen,
                       CAIRN_STORE_CHUNK_KEY_BYTES);
            continue;
        }
        if (scrub_one(key, val, vlen) != CAIRN_OK) {
            char hex[HEX_ID], dom[HEX_DOMAIN];
            cairn_hex_encode(hex, key + 1 + CAIRN_DOMAIN_ID_BYTES, CAIRN_CHUNK_ID_BYTES);
            cairn_hex_encode(dom, key + 1, CAIRN_DOMAIN_ID_BYTES);
            cairn_warn("scrub: chunk %s in domain %s of store '%s' is corrupt: %s", hex, dom, s->dir,
                       cairn_err_msg());
            scan->corrupt++;
            if (on_corrupt)
                on_corrupt(arg, key + 1, key + 1 + CAIRN_DOMAIN_ID_BYTES);
        }
    }
    rc = CAIRN_OK;
out:
    cairn_kv_iter_destroy(&it);
    return rc;
}
