/*
 * worker_repl.h: the replication client: sends chunks to the peers of their placement set with
 * chunk.put, and tells its owner when every peer acknowledged a chunk (docs/internals/cluster.md
 * "Replication").
 *
 * Flow control is credit based: per peer at most `window` (8) chunk.put batches of up to `batch_max`
 * (64) chunks are in flight; each reply returns one credit. A batch without a reply after
 * timeout_ms / attempts is sent again (chunk.put is idempotent); a chunk that failed `attempts` times
 * fails the replication (ETIMEDOUT for silence, the peer's code otherwise, naming the peer and chunk).
 *
 * Thread-safety: one struct cairn_wk_repl belongs to one thread (it owns one DEALER per peer; ZeroMQ
 * sockets are single-thread). Job threads each keep their own, reused across jobs: connections stay up.
 */
#ifndef CAIRN_WORKER_REPL_H
#define CAIRN_WORKER_REPL_H

#include "worker_members.h"

#include "cairn/transport.h"

struct cairn_wk_repl_opts {
    unsigned batch_max;  /* chunks per chunk.put (64; at most 256) */
    unsigned window;     /* batches in flight per peer (8; at most 32) */
    uint64_t timeout_ms; /* per chunk, retries included (30000) */
    unsigned attempts;   /* sends of a batch before giving up (3) */
};

/*
 * Called once a chunk is acknowledged by every peer it was pushed to. delete_local is the flag given
 * to cairn_wk_repl_push (the chunk's local copy is not in its placement set).
 */
typedef void (*cairn_wk_repl_done_fn)(void *arg, const uint8_t domain_id[CAIRN_DOMAIN_ID_BYTES],
                                      const uint8_t id[CAIRN_CHUNK_ID_BYTES], size_t len, bool delete_local);

struct cairn_wk_repl;

/* net and keys are borrowed and must outlive the client. opts NULL: defaults. */
int cairn_wk_repl_new(struct cairn_wk_repl **out, struct cairn_net *net, const struct cairn_curve_keys *keys,
                      const struct cairn_wk_repl_opts *opts);
void cairn_wk_repl_destroy(struct cairn_wk_repl **r);

/* Start a new run: forget what is pending (values freed), clear the sticky error, set the callback. */
void cairn_wk_repl_begin(struct cairn_wk_repl *r, cairn_wk_repl_done_fn done, void *arg);

/*
 * Queue one stored chunk value for the n target peers (n >= 1, none of them this worker). The value is
 * taken: free_fn(value) runs once every target acknowledged (or on begin/destroy). Returns the sticky
 * error of the run, if any (the value is freed then too).
 */
int cairn_wk_repl_push(struct cairn_wk_repl *r, const struct cairn_wk_member *const *targets, size_t n,
                       const uint8_t domain_id[CAIRN_DOMAIN_ID_BYTES], const uint8_t id[CAIRN_CHUNK_ID_BYTES],
                       uint8_t *value, size_t len, void (*free_fn)(void *), bool delete_local);

/*
 * Send what the credits allow, wait up to timeout_ms for replies, handle them and the batches that
 * timed out. Returns CAIRN_OK or the run's sticky error (with its message set on this thread).
 */
int cairn_wk_repl_pump(struct cairn_wk_repl *r, int timeout_ms);

/*
 * Fail the run with EUNAVAILABLE if a peer that still owes acknowledgements is dead or gone in ms
 * ("worker 'w2' died during replication (membership epoch 7)"). Idle peers that are dead or gone lose
 * their connection; peers that moved are reconnected. Returns the sticky error.
 */
int cairn_wk_repl_check_members(struct cairn_wk_repl *r, const struct cairn_wk_members *ms);

/* Chunks pushed and not yet acknowledged by all their targets, and the bytes of their values. */
size_t cairn_wk_repl_pending(const struct cairn_wk_repl *r);
uint64_t cairn_wk_repl_pending_bytes(const struct cairn_wk_repl *r);
/* Acknowledgements received in this run: (chunk, peer) pairs and their bytes. */
void cairn_wk_repl_stats(const struct cairn_wk_repl *r, uint64_t *acks, uint64_t *ack_bytes);

#endif
