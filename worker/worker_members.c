/*
 * worker_members.c: membership snapshots, placement and the peer allow-list (see worker_members.h).
 *
 * Which keys may connect to the peer ROUTER: every member of the latest membership, alive or not (a
 * worker declared dead that comes back re-registers, and its chunk.put must not bounce in between),
 * plus the optional peers_allow file, re-read on every membership and whenever the file changes (the
 * daemon checks it every second), so that an operator can add a benchmark tool's key without a
 * restart. The file's format is the transport's allow-list format.
 */
#include "worker_members.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"
#include "cairn/placement.h"
#include "cairn/transport.h"

#include <pthread.h>
#include <stdio.h>

#define ALLOW_FILE_MAX (4u << 20)

static void members_free(struct cairn_wk_members *ms)
{
    if (!ms)
        return;
    cairn_free(ms->v);
    cairn_free(ms->live_ids);
    cairn_free(ms->live_idx);
    cairn_free(ms);
}

/* Fill the live index of ms (ms->v and ms->n set). */
static int members_index(struct cairn_wk_members *ms)
{
    ms->live_ids = cairn_calloc(ms->n ? ms->n : 1, sizeof(*ms->live_ids));
    ms->live_idx = cairn_calloc(ms->n ? ms->n : 1, sizeof(*ms->live_idx));
    if (!ms->live_ids || !ms->live_idx)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for the membership");
    for (size_t i = 0; i < ms->n; i++) {
        if (!ms->v[i].alive)
            continue;
        ms->live_ids[ms->nlive] = ms->v[i].id;
        ms->live_idx[ms->nlive++] = i;
    }
    return CAIRN_OK;
}

int cairn_wk_members_new(const struct cairn_wk_member *v, size_t n, uint64_t epoch, struct cairn_wk_members **out)
{
    *out = NULL;
    struct cairn_wk_members *ms = cairn_calloc(1, sizeof(*ms));
    if (!ms || !(ms->v = cairn_calloc(n ? n : 1, sizeof(*ms->v)))) {
        members_free(ms);
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for the membership");
    }
    atomic_init(&ms->refs, 1);
    ms->epoch = epoch;
    ms->n = n;
    if (n)
        memcpy(ms->v, v, n * sizeof(*v));
    int rc = members_index(ms);
    if (rc != CAIRN_OK) {
        members_free(ms);
        return rc;
    }
    *out = ms;
    return CAIRN_OK;
}

static int copy_str(const struct cairn_mval *rec, const char *key, char *out, size_t cap, size_t idx)
{
    const char *s;
    size_t len;
    const struct cairn_mval *v = cairn_mval_get(rec, key);
    if (!v || cairn_mval_str(v, &s, &len) != CAIRN_OK || len >= cap)
        return cairn_err_set(CAIRN_EPROTO, "membership: workers[%zu].%s is missing or too long", idx, key);
    memcpy(out, s, len);
    out[len] = '\0';
    return CAIRN_OK;
}

int cairn_wk_members_from_msg(const struct cairn_msg *m, struct cairn_wk_members **out)
{
    *out = NULL;
    uint64_t epoch = 0;
    const struct cairn_mval *arr = NULL;
    size_t n = 0;
    struct cairn_wk_member *v = NULL;
    int rc = cairn_msg_get_u64(m, "epoch", &epoch);
    if (rc == CAIRN_OK)
        rc = cairn_msg_get_array(m, "workers", &arr, &n);
    if (rc != CAIRN_OK)
        return cairn_err_set(CAIRN_EPROTO, "membership without epoch or workers");
    v = cairn_calloc(n ? n : 1, sizeof(*v));
    if (!v)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for the membership");
    for (size_t i = 0; i < n && rc == CAIRN_OK; i++) {
        const struct cairn_mval *rec = cairn_mval_at(arr, i);
        const struct cairn_mval *alive = rec ? cairn_mval_get(rec, "alive") : NULL;
        rc = copy_str(rec, "id", v[i].id, sizeof(v[i].id), i);
        rc = rc ? rc : copy_str(rec, "endpoint", v[i].endpoint, sizeof(v[i].endpoint), i);
        rc = rc ? rc : copy_str(rec, "public_key", v[i].public_key, sizeof(v[i].public_key), i);
        if (rc == CAIRN_OK && (!alive || cairn_mval_bool(alive, &v[i].alive) != CAIRN_OK))
            rc = cairn_err_set(CAIRN_EPROTO, "membership: workers[%zu].alive is missing", i);
        if (rc == CAIRN_OK && !cairn_curve_key_valid(v[i].public_key))
            rc = cairn_err_set(CAIRN_EPROTO, "membership: worker '%s' has an invalid public key", v[i].id);
    }
    if (rc == CAIRN_OK)
        rc = cairn_wk_members_new(v, n, epoch, out);
    cairn_free(v);
    return rc;
}

struct cairn_wk_members *cairn_wk_members_ref(struct cairn_wk_members *ms)
{
    if (ms)
        atomic_fetch_add(&ms->refs, 1);
    return ms;
}

void cairn_wk_members_unref(struct cairn_wk_members **msp)
{
    if (!msp || !*msp)
        return;
    if (atomic_fetch_sub(&(*msp)->refs, 1) == 1)
        members_free(*msp);
    *msp = NULL;
}

const struct cairn_wk_member *cairn_wk_members_find(const struct cairn_wk_members *ms, const char *id)
{
    for (size_t i = 0; ms && i < ms->n; i++)
        if (!strcmp(ms->v[i].id, id))
            return &ms->v[i];
    return NULL;
}

size_t cairn_wk_members_place(const struct cairn_wk_members *ms, unsigned r,
                              const uint8_t domain_id[CAIRN_DOMAIN_ID_BYTES],
                              const uint8_t chunk_id[CAIRN_CHUNK_ID_BYTES], const struct cairn_wk_member **out)
{
    if (!ms || ms->nlive == 0 || r == 0)
        return 0;
    size_t idx[64];
    size_t want = CAIRN_MIN((size_t)r, CAIRN_ARRAY_LEN(idx));
    size_t k = cairn_placement_pick(ms->live_ids, ms->nlive, want, domain_id, chunk_id, idx);
    for (size_t i = 0; i < k; i++)
        out[i] = &ms->v[ms->live_idx[idx[i]]];
    return k;
}

/* ---- allow-list ---- */

/* Append the keys of an allow-list file to *keys (Z85 strings in buf, 41 bytes each). */
static int allow_file_keys(const char *path, char (**keys)[41], size_t *n, size_t *cap)
{
    uint8_t *text = NULL;
    size_t len = 0;
    int rc = cairn_file_read_all(path, ALLOW_FILE_MAX, &text, &len);
    if (rc != CAIRN_OK)
        return rc;
    unsigned line = 0;
    for (size_t off = 0; off < len && rc == CAIRN_OK;) {
        line++;
        const char *p = (const char *)text + off;
        const char *nl = memchr(p, '\n', len - off);
        size_t llen = nl ? (size_t)(nl - p) : len - off;
        off += llen + (nl ? 1 : 0);
        size_t i = 0;
        while (i < llen && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r'))
            i++;
        if (i == llen || p[i] == '#')
            continue;
        size_t tok = i;
        while (i < llen && p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
            i++;
        char z85[41] = "";
        if (i - tok == 40)
            memcpy(z85, p + tok, 40);
        if (!cairn_curve_key_valid(z85)) {
            rc = cairn_err_set(CAIRN_ECORRUPT, "peers_allow file '%s' line %u: not a Z85 CURVE public key", path, line);
            break;
        }
        rc = cairn_array_grow((void **)keys, cap, *n + 1, sizeof(**keys));
        if (rc == CAIRN_OK)
            memcpy((*keys)[(*n)++], z85, 41);
    }
    cairn_free(text);
    return rc;
}

int cairn_wk_allow_update(struct cairn_net *net, const struct cairn_wk_members *ms, const char *peers_allow)
{
    char (*keys)[41] = NULL;
    const char **ptrs = NULL;
    size_t n = 0, cap = 0;
    int rc = CAIRN_OK;
    for (size_t i = 0; ms && i < ms->n && rc == CAIRN_OK; i++) {
        rc = cairn_array_grow((void **)&keys, &cap, n + 1, sizeof(*keys));
        if (rc == CAIRN_OK)
            memcpy(keys[n++], ms->v[i].public_key, 41);
    }
    if (rc == CAIRN_OK && peers_allow)
        rc = allow_file_keys(peers_allow, &keys, &n, &cap);
    if (rc == CAIRN_OK && !(ptrs = cairn_calloc(n ? n : 1, sizeof(*ptrs))))
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory for the peer allow-list");
    for (size_t i = 0; rc == CAIRN_OK && i < n; i++)
        ptrs[i] = keys[i];
    if (rc == CAIRN_OK)
        rc = cairn_net_allow_set(net, CAIRN_WK_PEERS_DOMAIN, ptrs, n);
    cairn_free(ptrs);
    cairn_free(keys);
    return rc;
}

/* ---- the view ---- */

struct cairn_wk_view {
    pthread_mutex_t mu;
    struct cairn_wk_members *cur; /* guarded by mu */
    atomic_uint replicas;
};

int cairn_wk_view_new(struct cairn_wk_view **out)
{
    *out = NULL;
    struct cairn_wk_view *v = cairn_calloc(1, sizeof(*v));
    if (!v)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for the membership view");
    pthread_mutex_init(&v->mu, NULL);
    atomic_init(&v->replicas, CAIRN_WK_DEFAULT_REPLICAS);
    *out = v;
    return CAIRN_OK;
}

void cairn_wk_view_destroy(struct cairn_wk_view **vp)
{
    if (!vp || !*vp)
        return;
    cairn_wk_members_unref(&(*vp)->cur);
    pthread_mutex_destroy(&(*vp)->mu);
    cairn_free(*vp);
    *vp = NULL;
}

bool cairn_wk_view_update(struct cairn_wk_view *v, struct cairn_wk_members *ms)
{
    struct cairn_wk_members *old = NULL;
    bool installed = false;
    pthread_mutex_lock(&v->mu);
    if (!v->cur || ms->epoch >= v->cur->epoch) {
        old = v->cur;
        v->cur = ms;
        installed = true;
    } else {
        old = ms;
    }
    pthread_mutex_unlock(&v->mu);
    cairn_wk_members_unref(&old);
    return installed;
}

struct cairn_wk_members *cairn_wk_view_get(struct cairn_wk_view *v)
{
    pthread_mutex_lock(&v->mu);
    struct cairn_wk_members *ms = cairn_wk_members_ref(v->cur);
    pthread_mutex_unlock(&v->mu);
    return ms;
}

void cairn_wk_view_set_replicas(struct cairn_wk_view *v, unsigned r)
{
    if (r >= 1)
        atomic_store(&v->replicas, r);
}

unsigned cairn_wk_view_replicas(struct cairn_wk_view *v) { return atomic_load(&v->replicas); }
