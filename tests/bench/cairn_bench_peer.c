/*
 * cairn_bench_peer: chunk transfer throughput of one worker's peer socket (tests/bench/bench_cluster.sh).
 *
 * Acts as a peer: a CURVE DEALER whose key must be on the worker's peers_allow list. It prepares
 * --bytes of random plaintext cut in --chunk byte chunks, encodes each as a stored chunk value of a
 * fresh random domain (cairn/codec.h: encrypted, with the keyless checksum the worker verifies), then
 *   put: sends them as chunk.put batches of --batch chunks with at most --window batches in flight
 *        (PROTOCOL.md section 6: each reply returns one credit), checking every status is 0;
 *   get: reads them back with chunk.get in the same batches and window, comparing every frame with
 *        what was sent;
 *   has: (untimed) chunk.has of every id, all must be held.
 * Encoding happens before the clock starts: the phases time the wire, the worker's verification and
 * its durable store (the worker syncs its WAL before it answers a put).
 *
 * Output: one JSON object on stdout with MB/s (10^6 bytes of stored values per second) of each phase.
 * Exit 0 on success, else a cairn error code.
 */
#include "cairn/prelude.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/codec.h"
#include "cairn/crypto.h"
#include "cairn/err.h"
#include "cairn/transport.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

struct bench {
    struct cairn_sock *sock;
    uint8_t dom[CAIRN_DOMAIN_ID_BYTES];
    size_t n, batch, window, stride;
    uint8_t *vals;  /* n values, one per stride */
    size_t *lens;
    uint8_t (*ids)[CAIRN_CHUNK_ID_BYTES];
    uint64_t total_bytes; /* sum of lens */
    unsigned timeout_ms;
};

static int parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || !end || !*s || s[0] == '-')
        return CAIRN_EINVAL;
    uint64_t mul = 1;
    if (!strcmp(end, "K") || !strcmp(end, "KiB"))
        mul = 1024;
    else if (!strcmp(end, "M") || !strcmp(end, "MiB"))
        mul = 1024 * 1024;
    else if (!strcmp(end, "G") || !strcmp(end, "GiB"))
        mul = 1024ull * 1024 * 1024;
    else if (*end)
        return CAIRN_EINVAL;
    *out = v * mul;
    return CAIRN_OK;
}

/* Build the request of batch b (chunk.put with frames, chunk.get or chunk.has without). */
static struct cairn_msg *batch_msg(struct bench *B, enum cairn_msg_type t, size_t b)
{
    size_t first = b * B->batch, last = CAIRN_MIN(first + B->batch, B->n);
    struct cairn_msg *m = cairn_msg_new(t);
    if (!m)
        return NULL;
    cairn_msg_set_rid(m, b + 1);
    cairn_msg_set_bin(m, "domain", B->dom, sizeof(B->dom));
    struct cairn_mval *ids = cairn_msg_set_array(m, "ids");
    for (size_t i = first; i < last; i++) {
        cairn_mval_push_bin(m, ids, B->ids[i], CAIRN_CHUNK_ID_BYTES);
        if (t == CAIRN_MSG_CHUNK_PUT)
            cairn_msg_add_frame(m, B->vals + i * B->stride, B->lens[i]);
    }
    return m;
}

/* Check the reply of batch b. */
static int check_reply(struct bench *B, enum cairn_msg_type t, const struct cairn_msg *r, size_t b)
{
    size_t first = b * B->batch, last = CAIRN_MIN(first + B->batch, B->n);
    if (cairn_msg_code(r) != 0)
        return cairn_err_set(cairn_msg_code(r), "batch %zu: error reply %s: %s", b, cairn_err_name(cairn_msg_code(r)),
                             cairn_msg_text(r) ? cairn_msg_text(r) : "");
    if (t == CAIRN_MSG_CHUNK_PUT) {
        const struct cairn_mval *st = NULL;
        size_t n = 0;
        if (cairn_msg_get_array(r, "status", &st, &n) != CAIRN_OK || n != last - first)
            return cairn_err_set(CAIRN_EPROTO, "batch %zu: chunk.put reply without %zu statuses", b, last - first);
        for (size_t i = 0; i < n; i++) {
            uint64_t s = 1;
            if (cairn_mval_u64(cairn_mval_at(st, i), &s) != CAIRN_OK || s != 0)
                return cairn_err_set(CAIRN_EIO, "batch %zu: chunk %zu not stored: status %" PRIu64, b, first + i, s);
        }
    } else if (t == CAIRN_MSG_CHUNK_GET) {
        if (cairn_msg_frame_count(r) != last - first)
            return cairn_err_set(CAIRN_EPROTO, "batch %zu: chunk.get reply has %zu frames, want %zu", b,
                                 cairn_msg_frame_count(r), last - first);
        for (size_t i = first; i < last; i++) {
            const uint8_t *p = NULL;
            size_t len = 0;
            if (cairn_msg_frame(r, i - first, &p, &len) != CAIRN_OK || len != B->lens[i] ||
                memcmp(p, B->vals + i * B->stride, len) != 0) {
                char hex[2 * CAIRN_CHUNK_ID_BYTES + 1];
                cairn_hex_encode(hex, B->ids[i], CAIRN_CHUNK_ID_BYTES);
                return cairn_err_set(CAIRN_ECORRUPT, "chunk %s came back %s (%zu bytes, sent %zu)", hex,
                                     len ? "different" : "missing", len, B->lens[i]);
            }
        }
    } else {
        const uint8_t *bm = NULL;
        size_t bl = 0;
        if (cairn_msg_get_bin(r, "bitmap", &bm, &bl) != CAIRN_OK || bl * 8 < last - first)
            return cairn_err_set(CAIRN_EPROTO, "batch %zu: chunk.has reply without a bitmap", b);
        for (size_t i = 0; i < last - first; i++)
            if (!(bm[i / 8] & (1u << (i % 8))))
                return cairn_err_set(CAIRN_ENOTFOUND, "chunk %zu not held after the put", first + i);
    }
    return CAIRN_OK;
}

/* Run one phase with at most `window` batches in flight; *secs gets its wall time. */
static int run_phase(struct bench *B, enum cairn_msg_type t, size_t batch, double *secs)
{
    size_t saved = B->batch;
    B->batch = batch;
    size_t nb = (B->n + batch - 1) / batch, next = 0, done = 0, inflight = 0;
    int rc = CAIRN_OK;
    uint64_t t0 = cairn_now_mono_ns();
    while (done < nb) {
        while (inflight < B->window && next < nb) {
            struct cairn_msg *m = batch_msg(B, t, next);
            if (!m) {
                rc = cairn_err_set(CAIRN_ENOMEM, "out of memory for batch %zu", next);
                goto out;
            }
            rc = cairn_sock_send(B->sock, m);
            cairn_msg_destroy(&m);
            if (rc == CAIRN_EAGAIN)
                break; /* read a reply first */
            if (rc != CAIRN_OK)
                goto out;
            next++;
            inflight++;
        }
        struct cairn_msg *r = NULL;
        rc = cairn_sock_recv(B->sock, (int)B->timeout_ms, &r);
        if (rc == CAIRN_ETIMEDOUT) {
            rc = cairn_err_set(CAIRN_ETIMEDOUT, "no reply for %u ms with %zu batches in flight", B->timeout_ms, inflight);
            goto out;
        }
        if (rc != CAIRN_OK) {
            cairn_msg_destroy(&r);
            goto out;
        }
        uint64_t rid = cairn_msg_rid(r);
        if (rid == 0 || rid > nb) {
            rc = cairn_err_set(CAIRN_EPROTO, "reply with unexpected rid %" PRIu64, rid);
        } else {
            rc = check_reply(B, t, r, (size_t)rid - 1);
        }
        cairn_msg_destroy(&r);
        if (rc != CAIRN_OK)
            goto out;
        done++;
        inflight--;
    }
out:
    *secs = (double)(cairn_now_mono_ns() - t0) / 1e9;
    B->batch = saved;
    return rc;
}

int main(int argc, char **argv)
{
    const char *endpoint = NULL, *keys_path = NULL, *server_key_path = NULL;
    uint64_t bytes = 1ull << 30, chunk = 65536, batch = 64, window = CAIRN_PROTO_CHUNK_WINDOW, timeout_ms = 60000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = v ? CAIRN_OK : CAIRN_EINVAL;
        if (!v)
            ;
        else if (!strcmp(a, "--endpoint"))
            endpoint = v;
        else if (!strcmp(a, "--keys"))
            keys_path = v;
        else if (!strcmp(a, "--server-key"))
            server_key_path = v;
        else if (!strcmp(a, "--bytes"))
            rc = parse_u64(v, &bytes);
        else if (!strcmp(a, "--chunk"))
            rc = parse_u64(v, &chunk);
        else if (!strcmp(a, "--batch"))
            rc = parse_u64(v, &batch);
        else if (!strcmp(a, "--window"))
            rc = parse_u64(v, &window);
        else if (!strcmp(a, "--timeout-ms"))
            rc = parse_u64(v, &timeout_ms);
        else
            rc = CAIRN_EINVAL;
        if (rc != CAIRN_OK) {
            fprintf(stderr, "usage: cairn_bench_peer --endpoint E --keys KEYPAIR --server-key PUBFILE [--bytes 1G]\n"
                            "                        [--chunk 65536] [--batch 64] [--window 8] [--timeout-ms 60000]\n");
            return CAIRN_EINVAL;
        }
        i++;
    }
    if (!endpoint || !keys_path || !server_key_path || chunk < 1 || chunk > CAIRN_CODEC_MAX_PLAIN || batch < 1 ||
        batch > 256 || window < 1 || window > 1024 || bytes < chunk || timeout_ms > 3600000) {
        fprintf(stderr, "cairn_bench_peer: --endpoint, --keys and --server-key are required; chunk 1..%u, batch "
                        "1..256, window 1..1024, bytes >= chunk\n", CAIRN_CODEC_MAX_PLAIN);
        return CAIRN_EINVAL;
    }

    struct bench B;
    memset(&B, 0, sizeof(B));
    B.batch = (size_t)batch;
    B.window = (size_t)window;
    B.n = (size_t)(bytes / chunk);
    B.timeout_ms = (unsigned)timeout_ms;
    B.stride = cairn_codec_bound((size_t)chunk);
    struct cairn_curve_keys keys;
    char server_key[CAIRN_CURVE_Z85_LEN + 1];
    struct cairn_net *net = NULL;
    struct cairn_codec *codec = NULL;
    struct cairn_domain *d = NULL;
    uint8_t *plain = NULL;
    uint8_t dkey[CAIRN_KEY_BYTES];
    memset(&keys, 0, sizeof(keys));
    int rc = cairn_crypto_init();
    if (rc == CAIRN_OK)
        rc = cairn_curve_keys_read(keys_path, &keys);
    if (rc == CAIRN_OK)
        rc = cairn_curve_public_read(server_key_path, server_key);
    if (rc == CAIRN_OK)
        rc = cairn_net_new(&net);
    if (rc == CAIRN_OK)
        rc = cairn_sock_client(net, endpoint, &keys, server_key, NULL, &B.sock);
    if (rc != CAIRN_OK)
        goto out;

    /* prepare the values (untimed) */
    B.vals = cairn_malloc(B.n * B.stride);
    B.lens = cairn_calloc(B.n, sizeof(*B.lens));
    B.ids = cairn_calloc(B.n, sizeof(*B.ids));
    plain = cairn_malloc((size_t)chunk);
    if (!B.vals || !B.lens || !B.ids || !plain) {
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory for %zu chunks of %" PRIu64 " bytes", B.n, chunk);
        goto out;
    }
    cairn_random_bytes(dkey, sizeof(dkey));
    if ((rc = cairn_domain_new(&d, dkey)) != CAIRN_OK || (rc = cairn_codec_new(&codec, 1)) != CAIRN_OK)
        goto out;
    memcpy(B.dom, cairn_domain_id(d), sizeof(B.dom));
    uint64_t p0 = cairn_now_mono_ns();
    for (size_t i = 0; i < B.n; i++) {
        cairn_random_bytes(plain, (size_t)chunk);
        cairn_chunk_id(d, plain, (size_t)chunk, B.ids[i]);
        rc = cairn_codec_encode(codec, d, B.ids[i], plain, (size_t)chunk, B.vals + i * B.stride, B.stride, &B.lens[i]);
        if (rc != CAIRN_OK)
            goto out;
        B.total_bytes += B.lens[i];
    }
    double prep_s = (double)(cairn_now_mono_ns() - p0) / 1e9;

    /* a first chunk.has round trip: the handshake is done and the key is allowed */
    double warm_s = 0, put_s = 0, get_s = 0, has_s = 0;
    size_t saved_n = B.n;
    B.n = 1;
    rc = run_phase(&B, CAIRN_MSG_CHUNK_HAS, 1, &warm_s);
    B.n = saved_n;
    if (rc == CAIRN_ENOTFOUND)
        rc = CAIRN_OK; /* not held yet: expected */
    if (rc != CAIRN_OK) {
        fprintf(stderr, "cairn_bench_peer: the worker at %s does not answer (is this key on its peers_allow?)\n",
                endpoint);
        goto out;
    }
    if ((rc = run_phase(&B, CAIRN_MSG_CHUNK_PUT, B.batch, &put_s)) != CAIRN_OK)
        goto out;
    if ((rc = run_phase(&B, CAIRN_MSG_CHUNK_GET, B.batch, &get_s)) != CAIRN_OK)
        goto out;
    if ((rc = run_phase(&B, CAIRN_MSG_CHUNK_HAS, 1024, &has_s)) != CAIRN_OK)
        goto out;
    printf("{\"chunks\": %zu, \"chunk_bytes\": %" PRIu64 ", \"stored_bytes\": %" PRIu64 ", \"batch\": %zu, "
           "\"window\": %zu, \"prepare_s\": %.3f, \"put_s\": %.3f, \"get_s\": %.3f, \"has_s\": %.3f, "
           "\"put_mb_s\": %.1f, \"get_mb_s\": %.1f}\n",
           B.n, chunk, B.total_bytes, B.batch, B.window, prep_s, put_s, get_s, has_s,
           (double)B.total_bytes / 1e6 / put_s, (double)B.total_bytes / 1e6 / get_s);
out:
    if (rc != CAIRN_OK)
        fprintf(stderr, "cairn_bench_peer: %s: %s\n", cairn_err_name(rc), cairn_err_msg());
    explicit_bzero(dkey, sizeof(dkey));
    cairn_domain_destroy(&d);
    cairn_codec_destroy(&codec);
    cairn_free(plain);
    cairn_free(B.vals);
    cairn_free(B.lens);
    cairn_free(B.ids);
    cairn_sock_destroy(&B.sock);
    cairn_net_destroy(&net);
    cairn_curve_keys_clear(&keys);
    return rc;
}
