/*
 * store.h: the chunk store, a struct cairn_kv holding encoded chunks (codec.h).
 *
 * Keys: 'c' || domain_id[16] || chunk_id[32]   -> stored chunk value
 *       other leading bytes are free for the store's users ('s' snapshots,
 *       'm' metadata, ...): cairn_store_kv() exposes the kv.
 * Dedup: cairn_store_put_chunk() hashes the plaintext and asks "have it?" before
 * compressing and encrypting; an existing chunk costs one lookup.
 * Reads: every get verifies the keyless checksum and the AEAD; a failure is
 * CAIRN_ECORRUPT with the chunk id in hex in the message.
 *
 * Thread-safety: a store may be shared by threads; each thread brings its own
 * struct cairn_codec.
 */
#ifndef CAIRN_STORE_H
#define CAIRN_STORE_H

#include "cairn/codec.h"
#include "cairn/kv.h"

#define CAIRN_STORE_CHUNK_KEY_BYTES (1 + CAIRN_DOMAIN_ID_BYTES + CAIRN_CHUNK_ID_BYTES)

struct cairn_store;

/* Open the store whose RocksDB lives in dir (created when `create`). */
int cairn_store_open(struct cairn_store **out, const char *dir, bool create);
void cairn_store_close(struct cairn_store **s);
struct cairn_kv *cairn_store_kv(struct cairn_store *s);

void cairn_store_chunk_key(uint8_t key[CAIRN_STORE_CHUNK_KEY_BYTES], const uint8_t domain_id[CAIRN_DOMAIN_ID_BYTES],
                           const uint8_t id[CAIRN_CHUNK_ID_BYTES]);

struct cairn_put_result {
    bool was_new;        /* false: deduplicated */
    size_t stored_len;   /* bytes written (0 when deduplicated) */
};

/* Hash, dedup, encode and store one chunk of plaintext (len <= CAIRN_CODEC_MAX_PLAIN). */
int cairn_store_put_chunk(struct cairn_store *s, struct cairn_codec *c, const struct cairn_domain *d,
                          const uint8_t *plain, size_t len, uint8_t id_out[CAIRN_CHUNK_ID_BYTES],
                          struct cairn_put_result *res);
/* Store an already-encoded value under (domain_id, id) (replication; verified first). */
int cairn_store_put_raw(struct cairn_store *s, const uint8_t domain_id[CAIRN_DOMAIN_ID_BYTES],
                        const uint8_t id[CAIRN_CHUNK_ID_BYTES], const uint8_t *stored, size_t len);
/*
 * Exact existence test. May have to read the value (large values live in blob
 * files), so a damaged chunk can answer CAIRN_ECORRUPT (naming the chunk): it
 * needs repair. put_chunk treats such a chunk as absent and writes a fresh copy.
 */
int cairn_store_has_chunk(struct cairn_store *s, const uint8_t domain_id[CAIRN_DOMAIN_ID_BYTES],
                          const uint8_t id[CAIRN_CHUNK_ID_BYTES], bool *found);
/*
 * Fetch and decode into out[0..cap) (cap >= the chunk's plain length; CAIRN_CODEC_MAX_PLAIN always suffices).
 * CAIRN_ENOTFOUND (message names the chunk), CAIRN_ECORRUPT (names the chunk).
 */
int cairn_store_get_chunk(struct cairn_store *s, struct cairn_codec *c, const struct cairn_domain *d,
                          const uint8_t id[CAIRN_CHUNK_ID_BYTES], uint8_t *out, size_t cap, size_t *len);
int cairn_store_delete_chunk(struct cairn_store *s, const uint8_t domain_id[CAIRN_DOMAIN_ID_BYTES],
                             const uint8_t id[CAIRN_CHUNK_ID_BYTES]);

struct cairn_store_scan {
    uint64_t chunks;
    uint64_t bytes;     /* stored bytes */
    uint64_t corrupt;   /* chunks failing the keyless check */
};
/*
 * Keyless scrub of every chunk: checksum and header. For each corrupt chunk calls
 * on_corrupt (may be NULL) with its domain and id. Returns CAIRN_OK when the scan
 * ran (inspect scan->corrupt), an error when it could not.
 */
int cairn_store_scrub(struct cairn_store *s, struct cairn_store_scan *scan,
                      void (*on_corrupt)(void *arg, const uint8_t *domain_id, const uint8_t *id),
                      void *arg);
int cairn_store_sync(struct cairn_store *s);

#endif
