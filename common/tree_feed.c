/*
 * tree_feed.c: file data -> pool -> piece blocks, the chunk pipeline shared by
 * cairn_tree_capture (tree_capture.c) and cairn_archive_import (archive.c); see
 * tree_internal.h for the contract.
 *
 * Why one copy: both front ends must give a file the same chunks (a directory
 * and its tarball dedup) and the same memory bound, and both must keep the
 * piece-slot rule (a worker writes into a slot the caller appended earlier, so
 * slots live in fixed blocks that are never moved or freed while tasks are in
 * flight; cairn_pool_wait orders those writes before the caller's reads).
 *
 * Each worker thread has its own struct cairn_codec. A task buffer is one
 * allocation (header + CAIRN_CHUNK_MAX bytes) that goes back on the free list
 * when its task runs or is dropped; the caller blocks in buf_get while
 * bufs_max buffers are out.
 */
#include "tree_internal.h"

#include "cairn/alloc.h"
#include "cairn/chunker.h"
#include "cairn/err.h"
#include "cairn/pool.h"

struct cairn__feedbuf {
    struct cairn__feed *f;
    struct cairn_piece *slot;
    size_t len;
    struct cairn__feedbuf *next; /* free list */
    uint8_t *data;               /* CAIRN_CHUNK_MAX bytes, allocated with the struct */
};

/* ---- worker side ---- */

struct feed_thread {
    struct cairn_codec *codec;
};

static void *feed_thread_new(void *arg)
{
    struct cairn__feed *f = arg;
    struct feed_thread *t = cairn_calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    if (cairn_codec_new(&t->codec, f->level) != CAIRN_OK) {
        cairn_free(t);
        return NULL;
    }
    return t;
}

static void feed_thread_free(void *p)
{
    struct feed_thread *t = p;
    if (!t)
        return;
    cairn_codec_destroy(&t->codec);
    cairn_free(t);
}

static void buf_put(struct cairn__feed *f, struct cairn__feedbuf *b)
{
    pthread_mutex_lock(&f->mu);
    b->next = f->free_list;
    f->free_list = b;
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static int buf_get(struct cairn__feed *f, struct cairn__feedbuf **out)
{
    pthread_mutex_lock(&f->mu);
    while (!f->free_list && f->bufs_made >= f->bufs_max)
        pthread_cond_wait(&f->cv, &f->mu);
    struct cairn__feedbuf *b = f->free_list;
    if (b) {
        f->free_list = b->next;
    } else {
        b = cairn_malloc(sizeof(*b) + CAIRN_CHUNK_MAX);
        if (b) {
            b->data = (uint8_t *)(b + 1);
            f->bufs_made++;
        }
    }
    pthread_mutex_unlock(&f->mu);
    *out = b;
    if (!b)
        return f->fail(f->ctx, CAIRN_ENOMEM, CAIRN__FEED_NOMEM_BUFFER);
    b->f = f;
    return CAIRN_OK;
}

static int feed_task(void *thread_ctx, void *arg)
{
    struct feed_thread *t = thread_ctx;
    struct cairn__feedbuf *b = arg;
    struct cairn__feed *f = b->f;
    struct cairn_put_result res = {0};
    int rc = cairn_store_put_chunk(f->s, t->codec, f->d, b->data, b->len, b->slot->id, &res);
    if (rc == CAIRN_OK && res.was_new) {
        atomic_fetch_add_explicit(&f->chunks_new, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&f->stored_bytes, res.stored_len, memory_order_relaxed);
    }
    if (rc == CAIRN_OK && f->stored)
        f->stored(f->stored_arg, b->slot->id);
    buf_put(f, b);
    return rc;
}

static void feed_drop(void *arg)
{
    struct cairn__feedbuf *b = arg;
    buf_put(b->f, b);
}

/* ---- caller side ---- */

void cairn__feed_init(struct cairn__feed *f, struct cairn_store *s, const struct cairn_domain *d, int level,
                      struct cairn_tree_stats *st, void *ctx,
                      int (*fail)(void *ctx, int code, enum cairn__feed_fail why), void (*tick)(void *ctx))
{
    memset(f, 0, sizeof(*f));
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    atomic_init(&f->chunks_new, 0);
    atomic_init(&f->stored_bytes, 0);
    f->s = s;
    f->d = d;
    f->level = level;
    f->st = st;
    f->ctx = ctx;
    f->fail = fail;
    f->tick = tick;
}

void cairn__feed_release(struct cairn__feed *f)
{
    cairn_pool_destroy(&f->pool);
    while (f->free_list) {
        struct cairn__feedbuf *b = f->free_list;
        f->free_list = b->next;
        cairn_free(b);
    }
    for (size_t i = 0; i < f->n_blocks; i++)
        cairn_free(f->blocks[i]);
    cairn_free(f->blocks);
    f->blocks = NULL;
    f->n_blocks = f->blocks_cap = 0;
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
}

int cairn__feed_pool_new(struct cairn__feed *f, unsigned threads, size_t queued)
{
    f->bufs_max = queued + threads + 1;
    return cairn_pool_new(&f->pool, threads, queued, feed_thread_new, feed_thread_free, f);
}

static struct cairn_piece *arena_add(struct cairn__feed *f)
{
    size_t bi = (size_t)(f->n_arena / CAIRN__PIECE_BLOCK), off = (size_t)(f->n_arena % CAIRN__PIECE_BLOCK);
    if (bi == f->n_blocks) {
        void *arr = f->blocks;
        if (cairn_array_grow(&arr, &f->blocks_cap, f->n_blocks + 1, sizeof(*f->blocks)) != CAIRN_OK)
            return NULL;
        f->blocks = arr;
        f->blocks[f->n_blocks] = cairn_malloc(CAIRN__PIECE_BLOCK * sizeof(struct cairn_piece));
        if (!f->blocks[f->n_blocks])
            return NULL;
        f->n_blocks++;
    }
    struct cairn_piece *p = &f->blocks[bi][off];
    memset(p, 0, sizeof(*p));
    f->n_arena++;
    return p;
}

/* A new piece of the current file, counted in *npieces. */
static int piece_add(struct cairn__feed *f, uint32_t *npieces, struct cairn_piece **out)
{
    if (*npieces == UINT32_MAX)
        return f->fail(f->ctx, CAIRN_ETOOBIG, CAIRN__FEED_TOO_MANY_PIECES);
    *out = arena_add(f);
    if (!*out)
        return f->fail(f->ctx, CAIRN_ENOMEM, CAIRN__FEED_NOMEM_PIECES);
    (*npieces)++;
    return CAIRN_OK;
}

int cairn__feed_hole(struct cairn__feed *f, uint64_t len, uint32_t *npieces)
{
    while (len > 0) {
        uint32_t n = len > CAIRN__HOLE_PIECE_MAX ? CAIRN__HOLE_PIECE_MAX : (uint32_t)len;
        struct cairn_piece *p;
        CAIRN_FORWARD_IF_ERROR(piece_add(f, npieces, &p));
        p->hole = true;
        p->len = n;
        len -= n;
    }
    return CAIRN_OK;
}

static int submit_chunk(struct cairn__feed *f, const uint8_t *data, size_t len, uint32_t *npieces)
{
    struct cairn_piece *slot;
    CAIRN_FORWARD_IF_ERROR(piece_add(f, npieces, &slot));
    slot->len = (uint32_t)len;
    struct cairn__feedbuf *b;
    CAIRN_FORWARD_IF_ERROR(buf_get(f, &b));
    memcpy(b->data, data, len);
    b->len = len;
    b->slot = slot;
    int rc = cairn_pool_submit(f->pool, feed_task, feed_drop, b);
    if (rc != CAIRN_OK) {
        buf_put(f, b);
        return rc;
    }
    f->st->chunks++;
    f->st->bytes += len;
    if (f->tick)
        f->tick(f->ctx);
    return CAIRN_OK;
}

int cairn__feed_cut(struct cairn__feed *f, const uint8_t *data, size_t avail, bool final, uint32_t *npieces,
                    size_t *cut)
{
    size_t c = cairn_chunker_cut(data, avail, final);
    if (c == 0 || c > avail)
        c = avail; /* cannot happen with the callers' window invariant; be safe */
    CAIRN_FORWARD_IF_ERROR(submit_chunk(f, data, c, npieces));
    *cut = c;
    return CAIRN_OK;
}

void cairn__feed_pieces(const struct cairn__feed *f, uint64_t start, uint32_t n, struct cairn_piece *out)
{
    for (uint32_t j = 0; j < n; j++, start++)
        out[j] = f->blocks[start / CAIRN__PIECE_BLOCK][start % CAIRN__PIECE_BLOCK];
}

void cairn__feed_take_stats(struct cairn__feed *f, struct cairn_tree_stats *st)
{
    st->chunks_new += atomic_load(&f->chunks_new);
    st->stored_bytes += atomic_load(&f->stored_bytes);
    atomic_store(&f->chunks_new, 0);
    atomic_store(&f->stored_bytes, 0);
}
