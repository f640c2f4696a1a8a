/*
 * coord_map.c: open addressing with linear probing and tombstones (see
 * coord_map.h). Why not a tree: every lookup of the dispatch path (job by id,
 * dispatch by rid, worker by id) is a point lookup, and a flat table keeps
 * them at one or two cache misses. The table grows at 70 % load counting
 * tombstones, and is rebuilt in place of the tombstones when deletes pile up.
 */
#include "coord_map.h"

#include "cairn/alloc.h"
#include "cairn/crypto.h"
#include "cairn/err.h"

static const char tomb_marker_;
#define COORD_MAP_TOMB_ ((const void *)&tomb_marker_)

static uint64_t map_hash(uint64_t seed, const void *key, size_t len)
{
    const uint8_t *p = key;
    uint64_t h = 0xcbf29ce484222325ull ^ seed;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    /* splitmix64 finaliser: FNV's low bits are weak, and the table masks them */
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

void coord_map_init(struct coord_map *m)
{
    memset(m, 0, sizeof(*m));
    cairn_random_bytes(&m->seed, sizeof(m->seed));
}

void coord_map_release(struct coord_map *m)
{
    if (!m)
        return;
    CAIRN_FREE(m->slots);
    m->cap = m->n = m->tombs = 0;
}

static bool slot_live(const struct coord_map_slot *s)
{
    return s->key && s->key != COORD_MAP_TOMB_;
}

static struct coord_map_slot *find(const struct coord_map *m, const void *key, size_t klen, uint64_t h)
{
    if (!m->cap)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        struct coord_map_slot *s = &m->slots[i];
        if (!s->key)
            return NULL;
        if (s->key != COORD_MAP_TOMB_ && s->hash32 == (uint32_t)h && s->klen == klen &&
            memcmp(s->key, key, klen) == 0)
            return s;
    }
}

static int rehash(struct coord_map *m, size_t cap)
{
    struct coord_map_slot *slots = cairn_calloc(cap, sizeof(*slots));
    if (!slots)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory growing an index to %zu slots", cap);
    size_t mask = cap - 1;
    for (size_t i = 0; i < m->cap; i++) {
        struct coord_map_slot *s = &m->slots[i];
        if (!slot_live(s))
            continue;
        uint64_t h = map_hash(m->seed, s->key, s->klen);
        size_t j = (size_t)h & mask;
        while (slots[j].key)
            j = (j + 1) & mask;
        slots[j] = *s;
    }
    cairn_free(m->slots);
    m->slots = slots;
    m->cap = cap;
    m->tombs = 0;
    return CAIRN_OK;
}

int coord_map_put(struct coord_map *m, const void *key, size_t klen, void *val)
{
    if (klen > UINT32_MAX)
        return cairn_err_set(CAIRN_ETOOBIG, "index key of %zu bytes", klen);
    uint64_t h = map_hash(m->seed, key, klen);
    struct coord_map_slot *s = find(m, key, klen, h);
    if (s) {
        s->key = key; /* the new owner's bytes (equal content) */
        s->val = val;
        return CAIRN_OK;
    }
    if ((m->n + m->tombs + 1) * 10 > m->cap * 7) {
        size_t cap = m->cap ? m->cap : 16;
        while ((m->n + 1) * 10 > cap * 5)
            cap *= 2;
        CAIRN_FORWARD_IF_ERROR(rehash(m, cap));
    }
    size_t mask = m->cap - 1;
    size_t i = (size_t)h & mask;
    while (slot_live(&m->slots[i]))
        i = (i + 1) & mask;
    if (m->slots[i].key == COORD_MAP_TOMB_)
        m->tombs--;
    m->slots[i] = (struct coord_map_slot){.key = key, .klen = (uint32_t)klen, .hash32 = (uint32_t)h, .val = val};
    m->n++;
    return CAIRN_OK;
}

void *coord_map_get(const struct coord_map *m, const void *key, size_t klen)
{
    struct coord_map_slot *s = find(m, key, klen, map_hash(m->seed, key, klen));
    return s ? s->val : NULL;
}

void *coord_map_del(struct coord_map *m, const void *key, size_t klen)
{
    struct coord_map_slot *s = find(m, key, klen, map_hash(m->seed, key, klen));
    if (!s)
        return NULL;
    void *v = s->val;
    s->key = COORD_MAP_TOMB_;
    s->val = NULL;
    m->n--;
    m->tombs++;
    return v;
}

bool coord_map_next(const struct coord_map *m, size_t *pos, const void **key, size_t *klen, void **val)
{
    for (size_t i = *pos; i < m->cap; i++) {
        const struct coord_map_slot *s = &m->slots[i];
        if (slot_live(s)) {
            *key = s->key;
            *klen = s->klen;
            *val = s->val;
            *pos = i + 1;
            return true;
        }
    }
    *pos = m->cap;
    return false;
}

/* ---- sorted vector ----------------------------------------------------------------------------- */

/* First index whose id is >= id (or > id when strict). */
static size_t vec_bound(const struct coord_vec *v, const char *id, bool strict)
{
    size_t lo = 0, hi = v->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(v->v[mid].id, id);
        if (c < 0 || (strict && c == 0))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int coord_vec_insert(struct coord_vec *v, const char *id, void *val)
{
    size_t i = vec_bound(v, id, false);
    if (i < v->n && strcmp(v->v[i].id, id) == 0) {
        v->v[i].id = id;
        v->v[i].val = val;
        return CAIRN_OK;
    }
    CAIRN_FORWARD_IF_ERROR(cairn_array_grow((void **)&v->v, &v->cap, v->n + 1, sizeof(*v->v)));
    memmove(v->v + i + 1, v->v + i, (v->n - i) * sizeof(*v->v));
    v->v[i].id = id;
    v->v[i].val = val;
    v->n++;
    return CAIRN_OK;
}

void coord_vec_remove(struct coord_vec *v, const char *id)
{
    size_t i = vec_bound(v, id, false);
    if (i >= v->n || strcmp(v->v[i].id, id) != 0)
        return;
    memmove(v->v + i, v->v + i + 1, (v->n - i - 1) * sizeof(*v->v));
    v->n--;
}

size_t coord_vec_after(const struct coord_vec *v, const char *after)
{
    if (!after || !*after)
        return 0;
    return vec_bound(v, after, true);
}

void coord_vec_release(struct coord_vec *v)
{
    CAIRN_FREE(v->v);
    v->n = v->cap = 0;
}
