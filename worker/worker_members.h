/*
 * worker_members.h: the cluster membership as a worker sees it, placement over it, and the peer
 * allow-list built from it (docs/internals/cluster.md "Membership", "Replication").
 *
 * A struct cairn_wk_members is an immutable snapshot of one `membership` message: built once, then only
 * read, shared between the main thread and the job threads by reference counting. A struct cairn_wk_view
 * holds the latest snapshot and the replication factor R behind a mutex; job threads take a reference
 * (cairn_wk_view_get) and keep using it while the main thread installs newer ones.
 */
#ifndef CAIRN_WORKER_MEMBERS_H
#define CAIRN_WORKER_MEMBERS_H

#include "cairn/crypto.h"
#include "cairn/proto.h"

#include <stdatomic.h>

#define CAIRN_WK_ID_MAX 64
#define CAIRN_WK_ENDPOINT_MAX 256
#define CAIRN_WK_PEERS_DOMAIN "peers"
#define CAIRN_WK_DEFAULT_REPLICAS 2u

struct cairn_net;

struct cairn_wk_member {
    char id[CAIRN_WK_ID_MAX + 1];
    char endpoint[CAIRN_WK_ENDPOINT_MAX + 1];
    char public_key[41];
    bool alive;
};

struct cairn_wk_members {
    atomic_uint refs;
    uint64_t epoch;
    size_t n;
    struct cairn_wk_member *v;   /* every member, in message order */
    size_t nlive;
    const char **live_ids;       /* ids of the live members (pointers into v), for cairn_placement_pick */
    size_t *live_idx;            /* live_ids[i] is v[live_idx[i]] */
};

/* Snapshot of a decoded `membership` message (validated by proto). Caller owns one reference. */
int cairn_wk_members_from_msg(const struct cairn_msg *m, struct cairn_wk_members **out);
/* Snapshot from an array (tests). Copies the members. */
int cairn_wk_members_new(const struct cairn_wk_member *v, size_t n, uint64_t epoch, struct cairn_wk_members **out);
struct cairn_wk_members *cairn_wk_members_ref(struct cairn_wk_members *ms);
/* Drop a reference; the last one frees. NULL-safe; sets *ms = NULL. */
void cairn_wk_members_unref(struct cairn_wk_members **ms);
/* Member by id, or NULL. */
const struct cairn_wk_member *cairn_wk_members_find(const struct cairn_wk_members *ms, const char *id);
/*
 * Placement of a chunk: the min(r, live) live members chosen by cairn_placement_pick, highest score
 * first, into out[0..r). Returns the count. out[] points into ms.
 */
size_t cairn_wk_members_place(const struct cairn_wk_members *ms, unsigned r,
                              const uint8_t domain_id[CAIRN_DOMAIN_ID_BYTES],
                              const uint8_t chunk_id[CAIRN_CHUNK_ID_BYTES], const struct cairn_wk_member **out);

/*
 * Replace the "peers" allow-list of net with the public keys of every member of ms (ms may be NULL)
 * plus the keys of the peers_allow file (path may be NULL). All or nothing: on error (the message
 * names the file and line) the list is unchanged.
 */
int cairn_wk_allow_update(struct cairn_net *net, const struct cairn_wk_members *ms, const char *peers_allow);

struct cairn_wk_view;

int cairn_wk_view_new(struct cairn_wk_view **out);
void cairn_wk_view_destroy(struct cairn_wk_view **v);
/* Install ms (takes the caller's reference) unless its epoch is older than the current one: then false. */
bool cairn_wk_view_update(struct cairn_wk_view *v, struct cairn_wk_members *ms);
/* The latest snapshot (a new reference; unref it), or NULL before the first membership. */
struct cairn_wk_members *cairn_wk_view_get(struct cairn_wk_view *v);
void cairn_wk_view_set_replicas(struct cairn_wk_view *v, unsigned r);
unsigned cairn_wk_view_replicas(struct cairn_wk_view *v);

#endif
