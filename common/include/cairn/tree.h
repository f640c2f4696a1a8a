/*
 * tree.h: directory trees to chunks and back (DESIGN §3).
 *
 * Capture walks a directory (or an overlayfs upper dir) without following
 * symlinks, records every entry's metadata in a manifest and feeds file data
 * through the parallel pipeline (pool.h): the walking thread reads and chunks
 * files (FastCDC), worker threads hash, dedup, compress, encrypt and store each
 * chunk. Memory is bounded by the pool's queue (chunks in flight), not the tree.
 * The manifest is then encoded, chunked with the same chunker and stored as
 * chunks of the same domain; its chunk list is the tree reference.
 *
 * Materialize decodes the manifest (validating it as hostile input), creates
 * directories, links, devices and files under dest without ever following a
 * path outside dest (each component is opened with O_NOFOLLOW relative to its
 * parent, so `..`, absolute paths and paths through symlinks fail with
 * CAIRN_ECORRUPT), writes file data in parallel, keeps sparse holes, and applies
 * exact metadata (owner, mode, mtime in ns, xattrs) last, directories deepest first.
 *
 * Overlay handling:
 *  - capture with CAIRN_TREE_OVERLAY: a char device 0/0 is a whiteout entry; a dir
 *    with xattr trusted.overlay.opaque=y is an opaque dir (the xattr itself is not
 *    recorded); other trusted.overlay.* xattrs are dropped.
 *  - materialize with CAIRN_TREE_OVERLAY: whiteouts are written as char 0/0
 *    devices and opaque dirs get trusted.overlay.opaque=y (an overlay upper).
 *  - materialize without it (plain): a whiteout deletes the path under dest if
 *    present, an opaque dir empties an existing dir first (applying a diff layer
 *    onto a full tree).
 * Sockets are skipped with a warning. Files that change during capture are
 * stored as read (the caller pauses a sandbox first when it needs a consistent
 * view).
 */
#ifndef CAIRN_TREE_H
#define CAIRN_TREE_H

#include "cairn/manifest.h"
#include "cairn/store.h"

enum cairn_tree_flags {
    CAIRN_TREE_OVERLAY = 1 << 0,
};

/* Where a stored tree's manifest lives: its chunks in order. */
struct cairn_tree_ref {
    uint64_t manifest_len;
    struct cairn_piece *chunks; /* owned */
    uint32_t n_chunks;
};
void cairn_tree_ref_release(struct cairn_tree_ref *ref);

struct cairn_tree_stats {
    uint64_t entries, files, dirs, symlinks, hardlinks, specials, whiteouts, skipped;
    uint64_t bytes;        /* logical file bytes (holes excluded) */
    uint64_t chunks;       /* data chunks referenced */
    uint64_t chunks_new;   /* chunks that were not in the store */
    uint64_t stored_bytes; /* bytes written for new chunks (incl. manifest) */
    uint64_t elapsed_ns;
};

/* Called from the walking/main thread at most ~10 times a second. */
typedef void (*cairn_tree_progress_fn)(void *arg, const struct cairn_tree_stats *st);

struct cairn_tree_opts {
    unsigned flags;          /* enum cairn_tree_flags */
    unsigned threads;        /* 0 = CPU count */
    int level;               /* zstd level; 0 = CAIRN_CODEC_DEFAULT_LEVEL */
    cairn_tree_progress_fn progress; /* may be NULL */
    void *progress_arg;
    /* capture: relative paths (like manifest paths) to leave out, with everything below; may be NULL */
    const char *const *exclude;
    size_t n_exclude;
    /*
     * capture: called with the id of every data chunk of the tree once it is in the store (newly written or
     * already held), from the pipeline's worker threads: concurrently, in no particular order, possibly
     * more than once for the same id, never for the manifest's chunks. Lets a caller start work on the
     * chunks (e.g. replication) while the capture goes on. Must be thread-safe and quick. May be NULL.
     */
    void (*chunk_stored)(void *arg, const uint8_t id[CAIRN_CHUNK_ID_BYTES]);
    void *chunk_stored_arg;
};

int cairn_tree_capture(struct cairn_store *s, const struct cairn_domain *d, const char *src,
                       const struct cairn_tree_opts *opts, struct cairn_tree_ref *out,
                       struct cairn_tree_stats *st);

/* dest is created if missing; it may exist (a plain materialize merges into it). */
int cairn_tree_materialize(struct cairn_store *s, const struct cairn_domain *d,
                           const struct cairn_tree_ref *ref, const char *dest,
                           const struct cairn_tree_opts *opts, struct cairn_tree_stats *st);

/* Encode+store a manifest as chunks; load+decode one. */
int cairn_manifest_store(struct cairn_store *s, struct cairn_codec *c, const struct cairn_domain *d,
                         const struct cairn_manifest *m, struct cairn_tree_ref *out,
                         struct cairn_tree_stats *st);
int cairn_manifest_load(struct cairn_store *s, struct cairn_codec *c, const struct cairn_domain *d,
                        const struct cairn_tree_ref *ref, struct cairn_manifest *m);

/* Every chunk id a stored tree references (manifest chunks and data chunks), for GC and replication. */
int cairn_tree_chunks(struct cairn_store *s, const struct cairn_domain *d, const struct cairn_tree_ref *ref,
                      int (*fn)(void *arg, const uint8_t id[CAIRN_CHUNK_ID_BYTES]), void *arg);

#endif
