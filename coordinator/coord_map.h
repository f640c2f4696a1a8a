/*
 * coord_map.h: an open-addressing hash map from byte-string keys to pointers,
 * the in-memory indexes of the coordinator (apps, workers, active jobs,
 * dispatches in flight) kept beside RocksDB so that no per-job path scans.
 *
 * Ownership: keys are BORROWED. The bytes a key points to must stay valid and
 * unchanged for as long as the entry exists (typically the key lives inside
 * the value object). Values are opaque pointers; the map never frees them.
 *
 * Hashing is seeded per map with random bytes, so key sets chosen by a
 * client cannot be precomputed to collide. Not thread-safe.
 */
#ifndef CAIRN_COORD_MAP_H
#define CAIRN_COORD_MAP_H

#include "cairn/prelude.h"

struct coord_map_slot {
    const void *key; /* NULL: empty; COORD_MAP_TOMB_: deleted */
    uint32_t klen;
    uint32_t hash32;
    void *val;
};

struct coord_map {
    struct coord_map_slot *slots;
    size_t cap;  /* power of two, 0 before the first put */
    size_t n;    /* live entries */
    size_t tombs;
    uint64_t seed;
};

void coord_map_init(struct coord_map *m);
/* Frees the table (not keys or values); the map may be reused after init. */
void coord_map_release(struct coord_map *m);
/* Insert or replace. CAIRN_ENOMEM (map unchanged) or CAIRN_OK. */
int coord_map_put(struct coord_map *m, const void *key, size_t klen, void *val);
/* The value, or NULL. */
void *coord_map_get(const struct coord_map *m, const void *key, size_t klen);
/* Remove; returns the value that was there, or NULL. */
void *coord_map_del(struct coord_map *m, const void *key, size_t klen);
static inline size_t coord_map_count(const struct coord_map *m) { return m->n; }
/*
 * Iterate: start with *pos = 0; returns false at the end. The map must not be
 * modified during iteration except through coord_map_del of the current key.
 */
bool coord_map_next(const struct coord_map *m, size_t *pos, const void **key, size_t *klen, void **val);

/* String-key conveniences (NUL-terminated keys, stored without the NUL). */
static inline int coord_map_sput(struct coord_map *m, const char *k, void *v) { return coord_map_put(m, k, strlen(k), v); }
static inline void *coord_map_sget(const struct coord_map *m, const char *k) { return coord_map_get(m, k, strlen(k)); }
static inline void *coord_map_sdel(struct coord_map *m, const char *k) { return coord_map_del(m, k, strlen(k)); }

/*
 * coord_vec: a vector of (id, value) kept sorted by id (byte order), for the
 * paged lists (image.ls, sandbox.ls: "after" cursor, ids in order) of one app.
 * Ids are BORROWED like map keys (they live in the value). Insert and remove
 * are O(n) moves of 16-byte entries, lookups O(log n).
 */
struct coord_vec_ent {
    const char *id;
    void *val;
};

struct coord_vec {
    struct coord_vec_ent *v;
    size_t n, cap;
};

/* Insert (or replace the value of an equal id). CAIRN_ENOMEM leaves v unchanged. */
int coord_vec_insert(struct coord_vec *v, const char *id, void *val);
/* Remove the entry with this id (no-op when absent). */
void coord_vec_remove(struct coord_vec *v, const char *id);
/* Index of the first entry whose id is greater than after (NULL or "": 0). */
size_t coord_vec_after(const struct coord_vec *v, const char *after);
void coord_vec_release(struct coord_vec *v);

#endif
