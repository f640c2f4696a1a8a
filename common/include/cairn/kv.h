/*
 * kv.h: the key-value adapter over RocksDB (the only file that includes
 * <rocksdb/c.h> is common/kv.c).
 *
 * Options: blob files on for values >= 4 KiB (chunks are large values; keeping
 * them out of the LSM makes compaction cheap); RocksDB's own block compression
 * off for blobs (chunks are already compressed and encrypted); checksums verified
 * on every read (ReadOptions.verify_checksums); WAL on, not synced per write:
 * cairn_kv_sync() makes everything written so far durable.
 *
 * Errors: RocksDB "Corruption" statuses become CAIRN_ECORRUPT, missing keys
 * CAIRN_ENOTFOUND, a database already opened (its LOCK file held, by another
 * process or another open in this one) CAIRN_EBUSY, other IO failures CAIRN_EIO
 * (message carries RocksDB's text, which never contains values).
 *
 * Thread-safety: a struct cairn_kv may be used by many threads at once (RocksDB
 * guarantees this); batches and iterators belong to one thread.
 */
#ifndef CAIRN_KV_H
#define CAIRN_KV_H

#include "cairn/prelude.h"

struct cairn_kv;
struct cairn_kv_batch;
struct cairn_kv_iter;

/* Open (create if `create`) the database directory at path. CAIRN_ENOTFOUND when absent and !create. */
int cairn_kv_open(struct cairn_kv **out, const char *path, bool create);
/*
 * Open an existing database read-only (RocksDB's read-only mode): takes no LOCK, so it
 * works while another process holds the database open for writing, and sees what was
 * written up to the open (its WAL included); later writes of that process are not seen
 * (open again). Nothing is written into the directory; put/delete/batch_commit return
 * CAIRN_EINVAL, sync is a no-op. CAIRN_ENOTFOUND when absent. Closed with cairn_kv_close.
 */
int cairn_kv_open_readonly(struct cairn_kv **out, const char *path);
/* Flush (not when read-only) and close; NULL-safe; sets *kv = NULL. */
void cairn_kv_close(struct cairn_kv **kv);

int cairn_kv_put(struct cairn_kv *kv, const void *key, size_t klen, const void *val, size_t vlen);
/* *val is owned by the caller: free with cairn_kv_free. CAIRN_ENOTFOUND when absent. */
int cairn_kv_get(struct cairn_kv *kv, const void *key, size_t klen, uint8_t **val, size_t *vlen);
void cairn_kv_free(void *val);
/* *found set; a cheap existence test (bloom filters, no value read when possible). */
int cairn_kv_has(struct cairn_kv *kv, const void *key, size_t klen, bool *found);
int cairn_kv_delete(struct cairn_kv *kv, const void *key, size_t klen);
/* Make every write so far durable (WAL fsync). */
int cairn_kv_sync(struct cairn_kv *kv);

int cairn_kv_batch_new(struct cairn_kv_batch **out);
void cairn_kv_batch_put(struct cairn_kv_batch *b, const void *key, size_t klen, const void *val, size_t vlen);
void cairn_kv_batch_delete(struct cairn_kv_batch *b, const void *key, size_t klen);
size_t cairn_kv_batch_count(const struct cairn_kv_batch *b);
/* Apply atomically; the batch is cleared and may be reused. */
int cairn_kv_batch_commit(struct cairn_kv *kv, struct cairn_kv_batch *b);
void cairn_kv_batch_destroy(struct cairn_kv_batch **b);

/* Iterate keys starting with prefix (plen may be 0: everything), in key order. */
int cairn_kv_iter_new(struct cairn_kv *kv, const void *prefix, size_t plen, struct cairn_kv_iter **out);
/*
 * Same, but RocksDB's own checksums are not verified, so a value whose bytes were
 * damaged on disk is returned as is instead of ending the iteration with an
 * error. Only for callers that verify every value themselves (the keyless chunk
 * scrub): it lets one damaged record be counted and the scan go on.
 */
int cairn_kv_iter_new_unverified(struct cairn_kv *kv, const void *prefix, size_t plen,
                                 struct cairn_kv_iter **out);
/*
 * Advance: returns CAIRN_OK with *key and *val pointing into the iterator (valid until
 * the next call) and *done = false, or *done = true at the end; CAIRN_ECORRUPT/EIO on errors.
 */
int cairn_kv_iter_next(struct cairn_kv_iter *it, const uint8_t **key, size_t *klen,
                       const uint8_t **val, size_t *vlen, bool *done);
void cairn_kv_iter_destroy(struct cairn_kv_iter **it);

#endif
