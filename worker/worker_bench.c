/*
 * worker_bench.c: cairn-worker-bench, the peer chunk transfer benchmark (loopback, CURVE).
 *
 * Why: the cluster issue sets a target for chunk transfer between workers (>= 300 MB/s of ~64 KiB
 * chunks in batches of 64 with 8 batches in flight). This measures exactly that path: a real worker
 * (the daemon, peer service only, its RocksDB store in a temp dir) runs in a thread of this process;
 * the replication client of the job threads pushes encoded chunks to it with chunk.put, and every
 * batch is stored and synced before it is acknowledged.
 *
 *   cairn-worker-bench [--mb 512] [--chunk-kib 64] [--batch 64] [--window 8] [--dir DIR]
 *
 * Prints one line: MB (10^6 bytes) of stored values per second, acknowledged. The chunk values are a
 * small set of encoded random chunks sent under fresh random ids, so every put is a new write.
 */
#include "cairn/prelude.h"

#include "worker_daemon.h"
#include "worker_members.h"
#include "worker_repl.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/codec.h"
#include "cairn/crypto.h"
#include "cairn/err.h"
#include "cairn/log.h"
#include "cairn/transport.h"

#include <pthread.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define VALUES 64

struct node {
    struct cairn_wk_config cfg;
    atomic_int stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool ready, done;
    int rc;
    char endpoint[CAIRN_WK_ENDPOINT_MAX + 1];
};

static void on_ready(void *arg, const char *ep)
{
    struct node *n = arg;
    pthread_mutex_lock(&n->mu);
    snprintf(n->endpoint, sizeof(n->endpoint), "%s", ep);
    n->ready = true;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

static void *node_main(void *arg)
{
    struct node *n = arg;
    pthread_setname_np(pthread_self(), "wk-main");
    struct cairn_wk_daemon_opts o = {.no_coordinator = true, .stop = &n->stop, .on_ready = on_ready, .arg = n};
    n->rc = cairn_wk_daemon_run(&n->cfg, &o);
    if (n->rc != CAIRN_OK)
        fprintf(stderr, "cairn-worker-bench: worker: %s: %s\n", cairn_err_name(n->rc), cairn_err_msg());
    pthread_mutex_lock(&n->mu);
    n->done = true;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
    return NULL;
}

static int die(const char *what)
{
    fprintf(stderr, "cairn-worker-bench: %s: %s\n", what, cairn_err_msg());
    return 1;
}

static unsigned long arg_num(int argc, char **argv, const char *name, unsigned long dflt)
{
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name))
            return strtoul(argv[i + 1], NULL, 10);
    return dflt;
}

static const char *arg_str(int argc, char **argv, const char *name, const char *dflt)
{
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name))
            return argv[i + 1];
    return dflt;
}

int main(int argc, char **argv)
{
    unsigned long mb = arg_num(argc, argv, "--mb", 512), kib = arg_num(argc, argv, "--chunk-kib", 64);
    unsigned batch = (unsigned)arg_num(argc, argv, "--batch", 64);
    unsigned window = (unsigned)arg_num(argc, argv, "--window", 8);
    const char *base = arg_str(argc, argv, "--dir", "/tmp");
    cairn_wk_tune_malloc();
    cairn_log_set_prog("cairn-worker-bench");
    cairn_log_set_level(getenv("CAIRN_BENCH_LOG") ? CAIRN_LOG_INFO : CAIRN_LOG_WARN);
    if (cairn_crypto_init() != CAIRN_OK || kib == 0 || kib > 1024 || mb == 0)
        return die("usage: [--mb N] [--chunk-kib 1..1024] [--batch N] [--window N] [--dir DIR]");

    char dir[4096], path[4200];
    snprintf(dir, sizeof(dir), "%s/cairn-worker-bench.XXXXXX", base);
    if (!mkdtemp(dir))
        return die("mkdtemp");
    struct cairn_curve_keys wk, ck;
    if (cairn_curve_keypair(&wk) || cairn_curve_keypair(&ck))
        return die("keys");
    snprintf(path, sizeof(path), "%s/worker.key", dir);
    if (cairn_curve_keys_write(path, &wk) != CAIRN_OK)
        return die("write keys");
    char allow[64];
    int al = snprintf(allow, sizeof(allow), "%s\n", ck.public_z85);
    snprintf(path, sizeof(path), "%s/peers.allow", dir);
    if (cairn_file_replace_atomic(path, allow, (size_t)al, 0644) != CAIRN_OK)
        return die("write allow-list");

    struct node n = {0};
    pthread_mutex_init(&n.mu, NULL);
    pthread_cond_init(&n.cv, NULL);
    cairn_wk_config_defaults(&n.cfg);
    cairn_wk_config_set(&n.cfg, "id", "bench");
    snprintf(path, sizeof(path), "%s/data", dir);
    cairn_wk_config_set(&n.cfg, "data_dir", path);
    snprintf(path, sizeof(path), "%s/worker.key", dir);
    cairn_wk_config_set(&n.cfg, "keys", path);
    snprintf(path, sizeof(path), "%s/peers.allow", dir);
    cairn_wk_config_set(&n.cfg, "peers_allow", path);
    cairn_wk_config_set(&n.cfg, "peer_endpoint", "tcp://127.0.0.1:*");
    pthread_t th;
    pthread_create(&th, NULL, node_main, &n);
    pthread_mutex_lock(&n.mu);
    while (!n.ready && !n.done)
        pthread_cond_wait(&n.cv, &n.mu);
    pthread_mutex_unlock(&n.mu);
    if (!n.ready)
        return 1;

    /* VALUES encoded chunks of random data */
    uint8_t key[CAIRN_KEY_BYTES];
    cairn_random_bytes(key, sizeof(key));
    struct cairn_domain *d = NULL;
    struct cairn_codec *codec = NULL;
    if (cairn_domain_new(&d, key) || cairn_codec_new(&codec, 1))
        return die("domain");
    size_t plain_len = kib * 1024;
    uint8_t *plain = cairn_malloc(plain_len);
    uint8_t *vals[VALUES];
    size_t lens[VALUES];
    for (int i = 0; i < VALUES; i++) {
        uint8_t id[CAIRN_CHUNK_ID_BYTES];
        cairn_random_bytes(plain, plain_len);
        cairn_chunk_id(d, plain, plain_len, id);
        vals[i] = cairn_malloc(cairn_codec_bound(plain_len));
        if (cairn_codec_encode(codec, d, id, plain, plain_len, vals[i], cairn_codec_bound(plain_len), &lens[i]))
            return die("encode");
    }

    struct cairn_net *net = NULL;
    struct cairn_wk_repl *r = NULL;
    struct cairn_wk_repl_opts o = {.batch_max = batch, .window = window, .timeout_ms = 60000};
    if (cairn_net_new(&net) || cairn_wk_repl_new(&r, net, &ck, &o))
        return die("client");
    struct cairn_wk_member m = {.id = "bench", .alive = true};
    snprintf(m.endpoint, sizeof(m.endpoint), "%s", n.endpoint);
    snprintf(m.public_key, sizeof(m.public_key), "%s", wk.public_z85);
    const struct cairn_wk_member *targets[] = {&m};
    cairn_wk_repl_begin(r, NULL, NULL);

    /* warm up: connect and handshake before the clock starts */
    uint8_t id[CAIRN_CHUNK_ID_BYTES];
    cairn_random_bytes(id, sizeof(id));
    cairn_wk_repl_push(r, targets, 1, cairn_domain_id(d), id, vals[0], lens[0], NULL, false);
    while (cairn_wk_repl_pending(r))
        if (cairn_wk_repl_pump(r, 100) != CAIRN_OK)
            return die("warm-up");

    uint64_t total = (uint64_t)mb * 1000000u, sent = 0, count = 0;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    uint64_t t0 = cairn_now_mono_ns();
    while (sent < total || cairn_wk_repl_pending(r)) {
        while (sent < total && cairn_wk_repl_pending_bytes(r) < (64u << 20)) {
            int v = (int)(count++ % VALUES);
            cairn_random_bytes(id, sizeof(id));
            if (cairn_wk_repl_push(r, targets, 1, cairn_domain_id(d), id, vals[v], lens[v], NULL, false))
                return die("push");
            sent += lens[v];
        }
        if (cairn_wk_repl_pump(r, 50) != CAIRN_OK)
            return die("replicate");
    }
    double secs = (double)(cairn_now_mono_ns() - t0) / 1e9;
    getrusage(RUSAGE_SELF, &ru1);
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                 (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
                 (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    printf("peer chunk.put over CURVE loopback: %llu chunks of %lu KiB, batch %u, window %u: "
           "%.1f MB in %.2f s = %.1f MB/s (both ends: %.2f CPU-s, %.0f MB per CPU-s)\n",
           (unsigned long long)count, kib, batch, window, (double)sent / 1e6, secs, (double)sent / 1e6 / secs, cpu,
           (double)sent / 1e6 / cpu);

    cairn_wk_repl_destroy(&r);
    cairn_net_destroy(&net);
    atomic_store(&n.stop, 1);
    pthread_join(th, NULL);
    for (int i = 0; i < VALUES; i++)
        cairn_free(vals[i]);
    cairn_free(plain);
    cairn_codec_destroy(&codec);
    cairn_domain_destroy(&d);
    cairn_wk_config_release(&n.cfg);
    char cmd[4200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cairn-worker-bench: could not remove %s\n", dir);
    return n.rc == CAIRN_OK ? 0 : 1;
}
