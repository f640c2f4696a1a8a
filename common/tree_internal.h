/*
 * tree_internal.h: helpers shared by tree.c, tree_capture.c and
 * tree_materialize.c. Not a public header (not under include/).
 *
 * Directory chain: the open directory fds from a root fd down to the current
 * directory, with the current directory's path relative to the root. Every
 * component is opened with openat(parent, name, O_DIRECTORY | O_NOFOLLOW), so a
 * chain never leaves its root through a symlink and works at any depth (paths
 * longer than PATH_MAX). Only the deepest CAIRN__DIRCHAIN_WINDOW levels (and
 * the root) keep their fd open; popping back to a level whose fd was closed
 * reopens it with openat(child, "..") and checks that (st_dev, st_ino) is the
 * directory first opened there (ESTALE otherwise), so fd use stays bounded and
 * going back up costs O(1).
 *
 * Functions returning int here return 0 or a positive errno value (ELOOP or
 * ENOTDIR when a component is a symlink or not a directory, ENOENT, ENOMEM,
 * ESTALE, ...): callers turn them into cairn codes with a message that names
 * the entry. (The chunk feed at the end returns cairn codes.)
 */
#ifndef CAIRN_TREE_INTERNAL_H
#define CAIRN_TREE_INTERNAL_H

#include "cairn/prelude.h"

#include "cairn/tree.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>

#define CAIRN__DIRCHAIN_WINDOW 32

struct cairn__dirlevel {
    int fd;          /* -1 when closed by the window */
    dev_t dev;
    ino_t ino;
    size_t path_len; /* length of the chain path at this level */
};

struct cairn__dirchain {
    struct cairn__dirlevel *lv;
    size_t cap;
    size_t depth;    /* index of the top level; 0 = root */
    char *path;      /* NUL-terminated; "" at the root, else "a/b/c" */
    size_t path_len, path_cap;
    bool own_root;   /* close the root fd on release */
};

/* Start a chain at rootfd (borrowed unless own_root). */
int cairn__dirchain_init(struct cairn__dirchain *c, int rootfd, bool own_root);
void cairn__dirchain_release(struct cairn__dirchain *c);
static inline int cairn__dirchain_fd(const struct cairn__dirchain *c) { return c->lv[c->depth].fd; }
/* Open the component name[0..len) below the top and make it the top. */
int cairn__dirchain_push(struct cairn__dirchain *c, const char *name, size_t len);
/* Same with a directory the caller opened already (fd taken, even on failure). */
int cairn__dirchain_push_fd(struct cairn__dirchain *c, const char *name, size_t len, int fd,
                            const struct stat *st);
int cairn__dirchain_pop(struct cairn__dirchain *c);
/*
 * Make the chain's path equal to dir[0..len) (a '/'-separated relative path,
 * "" for the root): pops to the common prefix, then pushes the rest. On
 * failure the chain is left at some valid prefix.
 */
int cairn__dirchain_goto(struct cairn__dirchain *c, const char *dir, size_t len);

/* The names of a directory (without "." and ".."), read in one go. */
struct cairn__names {
    char *buf;       /* name\0name\0... */
    size_t len, cap;
    size_t *off;
    size_t n, off_cap;
};
int cairn__names_read(int dirfd, struct cairn__names *out); /* out is reset first */
void cairn__names_release(struct cairn__names *n);
static inline const char *cairn__names_at(const struct cairn__names *n, size_t i) { return n->buf + n->off[i]; }

/* Delete everything inside the directory dirfd (recursively, never following symlinks). */
int cairn__dir_empty(int dirfd);
/* Delete dirfd/name whatever it is (recursively for a directory). ENOENT when absent. */
int cairn__remove_at(int dirfd, const char *name);

/* "/proc/self/fd/<dirfd>/<name>": the l*xattr path of an entry without an fd of its own. */
static inline int cairn__proc_path(char *buf, size_t cap, int dirfd, const char *name)
{
    int n = snprintf(buf, cap, "/proc/self/fd/%d/%s", dirfd, name);
    return n < 0 || (size_t)n >= cap ? ENAMETOOLONG : 0;
}

/*
 * Chunk feed (tree_feed.c): file data -> pool -> piece blocks, the pipeline
 * shared by tree_capture.c and archive.c. The caller cuts a file's data with
 * cairn__feed_cut (cairn_chunker_cut over its own staging window) and records
 * holes with cairn__feed_hole; each chunk is copied into a task buffer
 * (CAIRN_CHUNK_MAX bytes, recycled through a free list: at most
 * queued + threads + 1 exist, the caller blocks for one) and handed to the
 * pool, whose workers (own codec) store it and write its id into its piece
 * slot. Slots live in an arena of fixed blocks of CAIRN__PIECE_BLOCK pieces
 * that never move while tasks are in flight (only the caller appends, growing
 * the array of block pointers, never a block); after cairn_pool_wait the caller
 * copies them out with cairn__feed_pieces. Messages are the caller's: fail()
 * sets one for each failure the feed itself detects.
 */
#define CAIRN__PIECE_BLOCK 4096u
#define CAIRN__HOLE_PIECE_MAX (1u << 30)

enum cairn__feed_fail {
    CAIRN__FEED_TOO_MANY_PIECES, /* CAIRN_ETOOBIG: a file past UINT32_MAX pieces */
    CAIRN__FEED_NOMEM_PIECES,    /* CAIRN_ENOMEM: an arena block */
    CAIRN__FEED_NOMEM_BUFFER,    /* CAIRN_ENOMEM: a task buffer */
};

struct cairn__feedbuf;

struct cairn__feed {
    struct cairn_store *s;
    const struct cairn_domain *d;
    int level;
    struct cairn_pool *pool;

    struct cairn_piece **blocks; /* the piece arena */
    size_t n_blocks, blocks_cap;
    uint64_t n_arena;

    pthread_mutex_t mu; /* task buffers */
    pthread_cond_t cv;
    struct cairn__feedbuf *free_list;
    size_t bufs_made, bufs_max;

    atomic_uint_fast64_t chunks_new, stored_bytes; /* workers' counts */
    struct cairn_tree_stats *st; /* chunks and bytes counted on submit */
    void *ctx;
    int (*fail)(void *ctx, int code, enum cairn__feed_fail why); /* sets the message, returns code */
    void (*tick)(void *ctx);                                   /* after each chunk submitted */
    /* optional, set after cairn__feed_init: called by a worker after each chunk's put succeeded */
    void (*stored)(void *arg, const uint8_t id[CAIRN_CHUNK_ID_BYTES]);
    void *stored_arg;
};

/* No allocation; pair with cairn__feed_release. */
void cairn__feed_init(struct cairn__feed *f, struct cairn_store *s, const struct cairn_domain *d, int level,
                      struct cairn_tree_stats *st, void *ctx,
                      int (*fail)(void *ctx, int code, enum cairn__feed_fail why), void (*tick)(void *ctx));
/* Releases the pool (waiting for nothing: drain with cairn_pool_wait first), buffers and the arena. */
void cairn__feed_release(struct cairn__feed *f);
int cairn__feed_pool_new(struct cairn__feed *f, unsigned threads, size_t queued);
/* Cut one chunk from data[0..avail) (final: the region ends there), submit it; *cut is its length. */
int cairn__feed_cut(struct cairn__feed *f, const uint8_t *data, size_t avail, bool final, uint32_t *npieces,
                    size_t *cut);
/* Hole pieces of at most CAIRN__HOLE_PIECE_MAX bytes each. */
int cairn__feed_hole(struct cairn__feed *f, uint64_t len, uint32_t *npieces);
/* After cairn_pool_wait: arena slots [start, start + n) into out. */
void cairn__feed_pieces(const struct cairn__feed *f, uint64_t start, uint32_t n, struct cairn_piece *out);
/* After cairn_pool_wait: move the workers' counts into *st. */
void cairn__feed_take_stats(struct cairn__feed *f, struct cairn_tree_stats *st);

/*
 * Exclude lists (cairn_tree_opts.exclude) for capture and tarball import: each entry is normalised like a
 * manifest path ("./a/" -> "a"; empty entries are dropped), and a path is excluded when it equals an entry
 * or lies below one. `who` prefixes the out-of-memory message ("capture", "archive").
 */
struct cairn__excl {
    char **v; /* owned */
    size_t n;
};
int cairn__excl_init(struct cairn__excl *x, const struct cairn_tree_opts *o, const char *who);
bool cairn__excl_match(const struct cairn__excl *x, const char *p, size_t len);
void cairn__excl_release(struct cairn__excl *x);

#endif
