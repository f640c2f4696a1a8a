/*
 * worker_fetch.h: the fetch client: brings chunks this worker lacks from its peers with chunk.get
 * (docs/internals/sandboxes.md "Layer cache"), for the layer cache of sandbox-create.
 *
 * Each chunk is asked of its placement set first (the R live workers with the highest rendezvous score,
 * cairn/placement.h), then of every other live member, in score order, never of this worker. A peer that
 * answers with an empty frame (missing or corrupt there), an error reply or nothing within the timeout
 * passes the chunk to the next candidate; when none is left the run fails with ENOTFOUND naming the chunk
 * and the workers asked. A fetched value is verified (keyless checksum, header domain and, with the domain's
 * key, decryption: a peer cannot substitute another chunk's value) before cairn_store_put_raw keeps it.
 *
 * Flow control as in PROTOCOL.md §6: batches of up to 64 ids, at most 8 requests in flight per peer.
 *
 * Thread-safety: one struct cairn_wk_fetch belongs to one thread (one DEALER per peer, kept across runs and
 * reconnected when a member's endpoint or key changes).
 */
#ifndef CAIRN_WORKER_FETCH_H
#define CAIRN_WORKER_FETCH_H

#include "worker_members.h"
#include "worker_peer.h"

#include "cairn/store.h"
#include "cairn/transport.h"

struct cairn_wk_fetch;

/* net and keys are borrowed and must outlive the client. */
int cairn_wk_fetch_new(struct cairn_wk_fetch **out, struct cairn_net *net, const struct cairn_curve_keys *keys);
void cairn_wk_fetch_destroy(struct cairn_wk_fetch **f);

struct cairn_wk_fetch_req {
    struct cairn_store *store;
    struct cairn_wk_stats *stats;          /* counted into as chunks are stored (may be NULL) */
    const struct cairn_wk_members *ms;     /* membership to ask */
    unsigned replicas;                     /* R: the size of a chunk's placement set */
    const char *self_id;                   /* never asked */
    const struct cairn_domain *domain;     /* the chunks' domain (its key verifies what peers send) */
    struct cairn_codec *codec;             /* for that verification */
    const uint8_t (*ids)[CAIRN_CHUNK_ID_BYTES]; /* the chunks to fetch, without duplicates */
    size_t n;
    const char *what;                      /* for messages, e.g. "image 'im-...'" */
    int (*check)(void *arg);               /* called between steps: a non-zero code stops the run with it */
    void *check_arg;
    uint64_t timeout_ms;                   /* a request without an answer moves on after this (0: 30000) */
};

/*
 * Fetch every chunk of rq and store it. *chunks / *bytes: chunks stored and their stored bytes.
 * CAIRN_ENOTFOUND (a chunk no live worker has), CAIRN_EIO (the store), or check's code.
 */
int cairn_wk_fetch_run(struct cairn_wk_fetch *f, const struct cairn_wk_fetch_req *rq, uint64_t *chunks,
                       uint64_t *bytes);

#endif
