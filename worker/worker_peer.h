/*
 * worker_peer.h: the peer service of a worker: chunk.has, chunk.get and chunk.put (PROTOCOL.md 140-142)
 * served from the chunk store on the peer ROUTER, and the store counters reported in heartbeats.
 *
 * Thread-safety: cairn_wk_peer_serve / _flush / _waiting run on the thread that owns the peer socket
 * (the main thread of the daemon); the service's own sync thread only calls cairn_store_sync. The
 * store counters are atomic: job threads update them too.
 */
#ifndef CAIRN_WORKER_PEER_H
#define CAIRN_WORKER_PEER_H

#include "cairn/store.h"
#include "cairn/transport.h"

#include <stdatomic.h>

/* Chunks held and their stored bytes; kept up to date by every put and delete of the worker. */
struct cairn_wk_stats {
    atomic_uint_fast64_t chunks;
    atomic_uint_fast64_t bytes;
};

/* Initialise the counters by one pass over the store's chunk keys (values are read: blob files). */
int cairn_wk_stats_scan(struct cairn_wk_stats *st, struct cairn_store *store);
void cairn_wk_stats_added(struct cairn_wk_stats *st, uint64_t bytes);
void cairn_wk_stats_removed(struct cairn_wk_stats *st, uint64_t bytes);

/*
 * Keyless "held" test of one chunk: present, trailer checksum correct, header naming the domain.
 * A corrupt copy is not held. *held set; errors only when the store itself failed (EIO).
 */
int cairn_wk_chunk_held(struct cairn_store *store, const uint8_t domain_id[CAIRN_DOMAIN_ID_BYTES],
                        const uint8_t id[CAIRN_CHUNK_ID_BYTES], bool *held);

struct cairn_wk_peer;

/*
 * The peer service over store (borrowed; outlives it), counting into stats. Starts its sync thread,
 * which makes written chunk.put batches durable (cairn_store_sync) while the caller goes on serving.
 */
int cairn_wk_peer_new(struct cairn_wk_peer **out, struct cairn_store *store, struct cairn_wk_stats *stats);
/* Waits for the sync in progress, stops the thread; replies still waiting are dropped. NULL-safe. */
void cairn_wk_peer_destroy(struct cairn_wk_peer **p);

/*
 * Serve what is readable on sock now: up to 8 requests are received without waiting and handled.
 * chunk.has / chunk.get and errors are answered at once. chunk.put values are written and their
 * replies wait for a sync of the store, asked of the sync thread once per group (group commit), so
 * that a batch is only acknowledged once it is durable: cairn_wk_peer_flush sends them. Requests of
 * other types get EUNSUPPORTED, malformed ones the decode error; replies are dropped.
 * Returns CAIRN_OK, or an error only when the socket itself failed (ECANCELED at shutdown).
 */
int cairn_wk_peer_serve(struct cairn_wk_peer *p, struct cairn_sock *sock);
/* Send the chunk.put replies whose sync has finished (status 0, or the sync's error code). */
void cairn_wk_peer_flush(struct cairn_wk_peer *p, struct cairn_sock *sock);
/* True while replies wait for a sync: the caller should call flush again soon (within ~1 ms). */
bool cairn_wk_peer_waiting(const struct cairn_wk_peer *p);
/* Requests answered, chunks stored by chunk.put, store syncs: for logs and tests. */
void cairn_wk_peer_counts(struct cairn_wk_peer *p, uint64_t *requests, uint64_t *chunks_in, uint64_t *syncs);

#endif
