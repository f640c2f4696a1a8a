/*
 * kv.c: the RocksDB adapter (kv.h). The only file of cairn that includes
 * <rocksdb/c.h>: everything else sees struct cairn_kv and cairn error codes.
 *
 * Design
 * - Options are chosen for a chunk store: values >= 4 KiB go to blob files
 *   (keeps compaction of the LSM cheap: it moves keys and small blob indexes,
 *   not 64 KiB chunks), blob compression off (chunks are zstd'd and encrypted
 *   already), blob GC on (deleted chunks give their space back), a bloom filter
 *   per SST (a dedup lookup of a chunk we do not have rarely touches disk).
 * - Reads verify RocksDB's checksums (block CRCs and blob record CRCs), so a
 *   flipped bit on disk becomes a "Corruption" status, which we map to
 *   CAIRN_ECORRUPT. The chunk codec has its own checksum on top (codec.h).
 * - Writes go to the WAL unsynced; cairn_kv_sync() fsyncs the WAL.
 * - Values are returned in cairn_malloc'd buffers (a pinned get, then one copy)
 *   rather than RocksDB's malloc'd string: that C API cannot tell an empty value
 *   from a missing one (a zero-byte malloc may return NULL).
 * - cairn_kv_has() asks rocksdb_key_may_exist() first: "no" is certain (bloom
 *   filter and memtable), "yes, value found" is certain (found in memory);
 *   anything else falls back to a real get, so the answer is always exact.
 * - Error strings of RocksDB (they name files and statuses, never values) are
 *   mapped: "Corruption" -> ECORRUPT, the LOCK file held -> EBUSY, "NotFound" /
 *   "does not exist" -> ENOTFOUND, anything else -> EIO. They are freed here,
 *   and corruption and IO failures are logged once (warn) as they are mapped.
 * - cairn_kv_open_readonly() is RocksDB's read-only mode: no LOCK taken, so a
 *   tool can list a store a running daemon holds (cairn-store chunks). It sees
 *   the SST and blob files of the MANIFEST plus the WAL replayed into memory at
 *   the open, and writes nothing into the directory (no flush at close; writes
 *   are refused here with EINVAL before RocksDB sees them).
 */
#include "cairn/kv.h"
#include "cairn/alloc.h"
#include "cairn/err.h"
#include "cairn/log.h"

#include <rocksdb/c.h>

#include <errno.h>
#include <sys/stat.h>

#define KV_MIN_BLOB_SIZE 4096
#define KV_WRITE_BUFFER (64u << 20)
#define KV_MAX_OPEN_FILES 512
#define KV_BLOOM_BITS 10.0

struct cairn_kv {
    rocksdb_t *db;
    rocksdb_readoptions_t *ropts;
    rocksdb_writeoptions_t *wopts;
    char *path;
    bool readonly;
};

struct cairn_kv_batch {
    rocksdb_writebatch_t *wb;
};

struct cairn_kv_iter {
    rocksdb_iterator_t *it;
    rocksdb_readoptions_t *ropts;
    uint8_t *prefix; /* owned copy */
    size_t plen;
    uint8_t *upper;  /* owned; the readoptions' upper bound points into it */
    const char *path; /* borrowed from the kv, for messages */
    bool started;
    bool done;
};

/* Map and free a RocksDB error string; the message is "<what>: <rocksdb text>". */
static int kv_error(char *errptr, const char *what, const char *path)
{
    const char *e = errptr ? errptr : "unknown error";
    int code;
    if (strstr(e, "Corruption"))
        code = CAIRN_ECORRUPT;
    else if (strstr(e, "lock hold by current process") || strstr(e, "While lock file") || strstr(e, "/LOCK:"))
        code = CAIRN_EBUSY;
    else if (strstr(e, "NotFound") || strstr(e, "does not exist"))
        code = CAIRN_ENOTFOUND;
    else
        code = CAIRN_EIO;
    if (code == CAIRN_EBUSY)
        cairn_err_set(code, "store '%s' is in use by another process (%s)", path, e);
    else if (code == CAIRN_ENOTFOUND && strstr(e, "create_if_missing"))
        cairn_err_set(code, "kv store '%s' does not exist (%s)", path, e);
    else
        cairn_err_set(code, "%s '%s': %s", what, path, e);
    /* damage and OS failures are logged once here; the expected statuses (busy, absent) are the caller's to report */
    if (code == CAIRN_ECORRUPT || code == CAIRN_EIO)
        cairn_warn("kv: %s", cairn_err_msg());
    rocksdb_free(errptr);
    return code;
}

static int kv_open(struct cairn_kv **out, const char *path, bool create, bool readonly)
{
    *out = NULL;
    int rc = CAIRN_OK;
    char *err = NULL;
    rocksdb_options_t *opts = NULL;
    rocksdb_block_based_table_options_t *topts = NULL;
    struct cairn_kv *kv = cairn_calloc(1, sizeof(*kv));
    if (!kv) {
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory opening kv store '%s'", path);
        goto out;
    }
    kv->path = cairn_strdup(path);
    opts = rocksdb_options_create();
    topts = rocksdb_block_based_options_create();
    kv->ropts = rocksdb_readoptions_create();
    kv->wopts = rocksdb_writeoptions_create();
    if (!kv->path || !opts || !topts || !kv->ropts || !kv->wopts) {
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory opening kv store '%s'", path);
        goto out;
    }
    rocksdb_options_set_create_if_missing(opts, create ? 1 : 0);
    rocksdb_options_increase_parallelism(opts, 2);
    rocksdb_options_set_write_buffer_size(opts, KV_WRITE_BUFFER);
    rocksdb_options_set_max_open_files(opts, KV_MAX_OPEN_FILES);
    rocksdb_options_set_keep_log_file_num(opts, 4);
    rocksdb_options_set_max_log_file_size(opts, 16u << 20);
    rocksdb_options_set_enable_blob_files(opts, 1);
    rocksdb_options_set_min_blob_size(opts, KV_MIN_BLOB_SIZE);
    rocksdb_options_set_blob_compression_type(opts, rocksdb_no_compression);
    rocksdb_options_set_enable_blob_gc(opts, 1);
    /* the block-based options take ownership of the filter policy */
    rocksdb_block_based_options_set_filter_policy(topts, rocksdb_filterpolicy_create_bloom(KV_BLOOM_BITS));
    rocksdb_options_set_block_based_table_factory(opts, topts);
    rocksdb_readoptions_set_verify_checksums(kv->ropts, 1);
    rocksdb_writeoptions_set_sync(kv->wopts, 0);

    kv->readonly = readonly;
    if (readonly)
        kv->db = rocksdb_open_for_read_only(opts, path, 0 /* a WAL is expected: the writer may be running */, &err);
    else
        kv->db = rocksdb_open(opts, path, &err);
    if (err || !kv->db) {
        rc = kv_error(err, "open kv store", path);
        goto out;
    }
out:
    rocksdb_block_based_options_destroy(topts);
    rocksdb_options_destroy(opts);
    if (rc != CAIRN_OK)
        cairn_kv_close(&kv);
    *out = kv;
    return rc;
}

int cairn_kv_open(struct cairn_kv **out, const char *path, bool create)
{
    return kv_open(out, path, create, false);
}

int cairn_kv_open_readonly(struct cairn_kv **out, const char *path)
{
    /* RocksDB reports a missing database here as an IO error on CURRENT: say "does not exist" like cairn_kv_open */
    *out = NULL;
    struct stat st;
    size_t n = strlen(path);
    char *current = cairn_malloc(n + sizeof("/CURRENT"));
    if (!current)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory opening kv store '%s'", path);
    memcpy(current, path, n);
    memcpy(current + n, "/CURRENT", sizeof("/CURRENT"));
    int found = stat(current, &st);
    int err = errno;
    cairn_free(current);
    if (found != 0 && err == ENOENT)
        return cairn_err_set(CAIRN_ENOTFOUND, "kv store '%s' does not exist", path);
    return kv_open(out, path, false, true);
}

/* Writes on a read-only kv are refused here, so the caller gets a clear message (RocksDB's is "Not implemented"). */
static int kv_refuse_readonly(const struct cairn_kv *kv, const char *what)
{
    return cairn_err_set(CAIRN_EINVAL, "cannot %s kv store '%s': it is open read-only", what, kv->path);
}

void cairn_kv_close(struct cairn_kv **kvp)
{
    if (!kvp || !*kvp)
        return;
    struct cairn_kv *kv = *kvp;
    if (kv->db && !kv->readonly) {
        /* flush the memtable so the data sits in SST and blob files, not only in the WAL */
        rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
        char *err = NULL;
        if (fo) {
            rocksdb_flushoptions_set_wait(fo, 1);
            rocksdb_flush(kv->db, fo, &err);
            rocksdb_flushoptions_destroy(fo);
        }
        rocksdb_free(err); /* best effort: the WAL still holds everything */
    }
    if (kv->db)
        rocksdb_close(kv->db);
    if (kv->ropts)
        rocksdb_readoptions_destroy(kv->ropts);
    if (kv->wopts)
        rocksdb_writeoptions_destroy(kv->wopts);
    cairn_free(kv->path);
    cairn_free(kv);
    *kvp = NULL;
}

int cairn_kv_put(struct cairn_kv *kv, const void *key, size_t klen, const void *val, size_t vlen)
{
    if (kv->readonly)
        return kv_refuse_readonly(kv, "put into");
    char *err = NULL;
    rocksdb_put(kv->db, kv->wopts, key, klen, val, vlen, &err);
    if (err)
        return kv_error(err, "put into kv store", kv->path);
    return CAIRN_OK;
}

int cairn_kv_get(struct cairn_kv *kv, const void *key, size_t klen, uint8_t **val, size_t *vlen)
{
    *val = NULL;
    *vlen = 0;
    char *err = NULL;
    rocksdb_pinnableslice_t *ps = rocksdb_get_pinned(kv->db, kv->ropts, key, klen, &err);
    if (err) {
        rocksdb_pinnableslice_destroy(ps);
        return kv_error(err, "read from kv store", kv->path);
    }
    if (!ps)
        return cairn_err_set(CAIRN_ENOTFOUND, "key not found in kv store '%s'", kv->path);
    size_t n = 0;
    const char *v = rocksdb_pinnableslice_value(ps, &n);
    uint8_t *copy = cairn_memdup(v, n);
    rocksdb_pinnableslice_destroy(ps);
    if (!copy)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory reading a %zu-byte value", n);
    *val = copy;
    *vlen = n;
    return CAIRN_OK;
}

void cairn_kv_free(void *val)
{
    cairn_free(val);
}

int cairn_kv_has(struct cairn_kv *kv, const void *key, size_t klen, bool *found)
{
    *found = false;
    char *mval = NULL;
    size_t mlen = 0;
    unsigned char value_found = 0;
    unsigned char may = rocksdb_key_may_exist(kv->db, kv->ropts, key, klen, &mval, &mlen, NULL, 0, &value_found);
    if (mval)
        rocksdb_free(mval);
    if (!may)
        return CAIRN_OK;
    if (value_found) {
        *found = true;
        return CAIRN_OK;
    }
    char *err = NULL;
    rocksdb_pinnableslice_t *ps = rocksdb_get_pinned(kv->db, kv->ropts, key, klen, &err);
    if (err) {
        rocksdb_pinnableslice_destroy(ps);
        return kv_error(err, "read from kv store", kv->path);
    }
    *found = ps != NULL;
    rocksdb_pinnableslice_destroy(ps);
    return CAIRN_OK;
}

int cairn_kv_delete(struct cairn_kv *kv, const void *key, size_t klen)
{
    if (kv->readonly)
        return kv_refuse_readonly(kv, "delete from");
    char *err = NULL;
    rocksdb_delete(kv->db, kv->wopts, key, klen, &err);
    if (err)
        return kv_error(err, "delete from kv store", kv->path);
    return CAIRN_OK;
}

int cairn_kv_sync(struct cairn_kv *kv)
{
    if (kv->readonly)
        return CAIRN_OK; /* nothing was written */
    char *err = NULL;
    rocksdb_flush_wal(kv->db, 1, &err);
    if (err)
        return kv_error(err, "sync kv store", kv->path);
    return CAIRN_OK;
}

int cairn_kv_batch_new(struct cairn_kv_batch **out)
{
    *out = NULL;
    struct cairn_kv_batch *b = cairn_calloc(1, sizeof(*b));
    if (!b)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory creating a write batch");
    b->wb = rocksdb_writebatch_create();
    if (!b->wb) {
        cairn_free(b);
        return cairn_err_set(CAIRN_ENOMEM, "out of memory creating a write batch");
    }
    *out = b;
    return CAIRN_OK;
}

void cairn_kv_batch_put(struct cairn_kv_batch *b, const void *key, size_t klen, const void *val, size_t vlen)
{
    rocksdb_writebatch_put(b->wb, key, klen, val, vlen);
}

void cairn_kv_batch_delete(struct cairn_kv_batch *b, const void *key, size_t klen)
{
    rocksdb_writebatch_delete(b->wb, key, klen);
}

size_t cairn_kv_batch_count(const struct cairn_kv_batch *b)
{
    int n = rocksdb_writebatch_count(b->wb);
    return n > 0 ? (size_t)n : 0;
}

int cairn_kv_batch_commit(struct cairn_kv *kv, struct cairn_kv_batch *b)
{
    if (kv->readonly) {
        rocksdb_writebatch_clear(b->wb);
        return kv_refuse_readonly(kv, "write batch to");
    }
    char *err = NULL;
    rocksdb_write(kv->db, kv->wopts, b->wb, &err);
    /* cleared either way (kv.h): a failed write leaves RocksDB in an error state, a retry needs a new batch */
    rocksdb_writebatch_clear(b->wb);
    if (err)
        return kv_error(err, "write batch to kv store", kv->path);
    return CAIRN_OK;
}

void cairn_kv_batch_destroy(struct cairn_kv_batch **bp)
{
    if (!bp || !*bp)
        return;
    rocksdb_writebatch_destroy((*bp)->wb);
    cairn_free(*bp);
    *bp = NULL;
}

/*
 * The smallest key greater than every key starting with prefix: the prefix with
 * its last non-0xff byte incremented and the rest dropped. None (returns 0) when
 * the prefix is all 0xff or empty.
 */
static size_t prefix_upper_bound(const uint8_t *prefix, size_t plen, uint8_t *upper)
{
    size_t n = plen;
    while (n > 0 && prefix[n - 1] == 0xff)
        n--;
    if (n == 0)
        return 0;
    memcpy(upper, prefix, n);
    upper[n - 1]++;
    return n;
}

static int kv_iter_new(struct cairn_kv *kv, const void *prefix, size_t plen, bool verify,
                       struct cairn_kv_iter **out)
{
    *out = NULL;
    int rc = CAIRN_OK;
    struct cairn_kv_iter *it = cairn_calloc(1, sizeof(*it));
    if (!it) {
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory creating an iterator");
        goto out;
    }
    it->plen = plen;
    it->path = kv->path;
    it->prefix = cairn_memdup(prefix, plen);
    it->upper = cairn_malloc(plen);
    it->ropts = rocksdb_readoptions_create();
    if (!it->prefix || !it->upper || !it->ropts) {
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory creating an iterator");
        goto out;
    }
    rocksdb_readoptions_set_verify_checksums(it->ropts, verify ? 1 : 0);
    size_t ulen = plen ? prefix_upper_bound(it->prefix, plen, it->upper) : 0;
    if (ulen)
        rocksdb_readoptions_set_iterate_upper_bound(it->ropts, (const char *)it->upper, ulen);
    it->it = rocksdb_create_iterator(kv->db, it->ropts);
    if (!it->it) {
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory creating an iterator");
        goto out;
    }
out:
    if (rc != CAIRN_OK)
        cairn_kv_iter_destroy(&it);
    *out = it;
    return rc;
}

int cairn_kv_iter_new(struct cairn_kv *kv, const void *prefix, size_t plen, struct cairn_kv_iter **out)
{
    return kv_iter_new(kv, prefix, plen, true, out);
}

int cairn_kv_iter_new_unverified(struct cairn_kv *kv, const void *prefix, size_t plen,
                                 struct cairn_kv_iter **out)
{
    return kv_iter_new(kv, prefix, plen, false, out);
}

int cairn_kv_iter_next(struct cairn_kv_iter *it, const uint8_t **key, size_t *klen,
                       const uint8_t **val, size_t *vlen, bool *done)
{
    *done = true;
    *key = *val = NULL;
    *klen = *vlen = 0;
    if (it->done)
        return CAIRN_OK;
    if (!it->started) {
        it->started = true;
        if (it->plen)
            rocksdb_iter_seek(it->it, (const char *)it->prefix, it->plen);
        else
            rocksdb_iter_seek_to_first(it->it);
    } else {
        rocksdb_iter_next(it->it);
    }
    if (!rocksdb_iter_valid(it->it)) {
        it->done = true;
        char *err = NULL;
        rocksdb_iter_get_error(it->it, &err);
        if (err)
            return kv_error(err, "iterate kv store", it->path);
        return CAIRN_OK;
    }
    size_t kl = 0, vl = 0;
    const char *k = rocksdb_iter_key(it->it, &kl);
    if (kl < it->plen || memcmp(k, it->prefix, it->plen) != 0) {
        it->done = true;
        return CAIRN_OK;
    }
    const char *v = rocksdb_iter_value(it->it, &vl);
    *key = (const uint8_t *)k;
    *klen = kl;
    *val = (const uint8_t *)v;
    *vlen = vl;
    *done = false;
    return CAIRN_OK;
}

void cairn_kv_iter_destroy(struct cairn_kv_iter **itp)
{
    if (!itp || !*itp)
        return;
    struct cairn_kv_iter *it = *itp;
    if (it->it)
        rocksdb_iter_destroy(it->it);
    if (it->ropts)
        rocksdb_readoptions_destroy(it->ropts);
    cairn_free(it->prefix);
    cairn_free(it->upper);
    cairn_free(it);
    *itp = NULL;
}
