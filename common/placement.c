/*
 * placement.c: rendezvous hashing (see placement.h). A partial selection sort
 * over n scores: r is small (2..3) and n is the cluster size.
 */
#include "cairn/placement.h"
#include "cairn/alloc.h"
#include "cairn/bytes.h"

#include <sodium.h>

uint64_t cairn_placement_score(const char *worker_id, const uint8_t domain_id[CAIRN_DOMAIN_ID_BYTES],
                               const uint8_t chunk_id[CAIRN_CHUNK_ID_BYTES])
{
    static const char label[] = "cairn place v1";
    uint8_t len[4], out[8];
    size_t wl = strlen(worker_id);
    crypto_generichash_state st;
    cairn_store_le32(len, (uint32_t)wl);
    crypto_generichash_init(&st, NULL, 0, sizeof(out));
    crypto_generichash_update(&st, (const uint8_t *)label, sizeof(label) - 1);
    crypto_generichash_update(&st, len, sizeof(len));
    crypto_generichash_update(&st, (const uint8_t *)worker_id, wl);
    crypto_generichash_update(&st, domain_id, CAIRN_DOMAIN_ID_BYTES);
    crypto_generichash_update(&st, chunk_id, CAIRN_CHUNK_ID_BYTES);
    crypto_generichash_final(&st, out, sizeof(out));
    return cairn_load_le64(out);
}

/* a before b: higher score, then lower id */
static bool ranks_before(uint64_t sa, const char *a, uint64_t sb, const char *b)
{
    return sa != sb ? sa > sb : strcmp(a, b) < 0;
}

size_t cairn_placement_pick(const char *const *workers, size_t n, size_t r,
                            const uint8_t domain_id[CAIRN_DOMAIN_ID_BYTES],
                            const uint8_t chunk_id[CAIRN_CHUNK_ID_BYTES], size_t *out)
{
    uint64_t stack_scores[64];
    uint64_t *scores = n <= 64 ? stack_scores : cairn_calloc(n, sizeof(*scores));
    if (!scores)
        return 0;
    for (size_t i = 0; i < n; i++)
        scores[i] = cairn_placement_score(workers[i], domain_id, chunk_id);
    size_t k = r < n ? r : n;
    for (size_t j = 0; j < k; j++) {
        size_t best = SIZE_MAX;
        for (size_t i = 0; i < n; i++) {
            bool taken = false;
            for (size_t t = 0; t < j; t++)
                taken |= out[t] == i;
            if (taken)
                continue;
            if (best == SIZE_MAX || ranks_before(scores[i], workers[i], scores[best], workers[best]))
                best = i;
        }
        out[j] = best;
    }
    if (scores != stack_scores)
        cairn_free(scores);
    return k;
}
