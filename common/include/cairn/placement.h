/*
 * placement.h: where a chunk lives — rendezvous (highest random weight) hashing
 * of (domain_id, chunk_id) over the live workers (DESIGN §5).
 *
 * score(w, c) = first 8 bytes (LE) of BLAKE2b-64("cairn place v1" || len(w) || w || domain_id || chunk_id)
 * The R workers with the highest scores hold the chunk (ties broken by id).
 * Adding or removing one worker moves only the chunks that worker gains or
 * loses (about 1/N of them), which is why rendezvous hashing is used.
 * Deterministic and identical on every node: tests compute it too.
 */
#ifndef CAIRN_PLACEMENT_H
#define CAIRN_PLACEMENT_H

#include "cairn/crypto.h"

uint64_t cairn_placement_score(const char *worker_id, const uint8_t domain_id[CAIRN_DOMAIN_ID_BYTES],
                               const uint8_t chunk_id[CAIRN_CHUNK_ID_BYTES]);

/*
 * Choose min(r, n) of the n workers: out[i] receives indexes into workers[],
 * highest score first. Returns the number chosen.
 */
size_t cairn_placement_pick(const char *const *workers, size_t n, size_t r,
                            const uint8_t domain_id[CAIRN_DOMAIN_ID_BYTES],
                            const uint8_t chunk_id[CAIRN_CHUNK_ID_BYTES], size_t *out);

#endif
