/*
 * cairn_bench_dispatch: job dispatch rate of a running cluster (tests/bench/bench_cluster.sh).
 *
 * Submits N jobs of one kind (default noop) through libcairn's pipelined path
 * (cairn_job_submit_many: at most WINDOW calls in flight on one socket, each call waits for its job
 * to finish), so the number measured is jobs submitted, persisted, dispatched, run and reported back,
 * per second of wall time. The cluster is found through the CAIRN_* variables, like the CLI.
 *
 * Output: one JSON object on stdout
 *   {"kind", "n", "window", "succeeded", "failed", "errors", "elapsed_s", "jobs_per_s",
 *    "lat_p50_ms", "lat_p99_ms", "lat_max_ms"}
 * Exit 0 when every job succeeded, else the cairn error code of the first failure.
 */
#include "cairn/prelude.h"

#include "cairn/cairn.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

static int parse_size(const char *s, size_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || !end || *end || !*s || s[0] == '-')
        return CAIRN_EINVAL;
    *out = (size_t)v;
    return CAIRN_OK;
}

int main(int argc, char **argv)
{
    size_t n = 20000, window = 256, sleep_ms = 0;
    const char *kind = "noop";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = CAIRN_EINVAL;
        if (v && !strcmp(a, "--n"))
            rc = parse_size(v, &n);
        else if (v && !strcmp(a, "--window"))
            rc = parse_size(v, &window);
        else if (v && !strcmp(a, "--sleep-ms"))
            rc = parse_size(v, &sleep_ms);
        else if (v && !strcmp(a, "--kind")) {
            kind = v;
            rc = CAIRN_OK;
        }
        if (rc != CAIRN_OK) {
            fprintf(stderr, "usage: cairn_bench_dispatch [--n N] [--window W] [--kind noop] [--sleep-ms MS]\n"
                            "  the cluster comes from CAIRN_COORDINATOR, CAIRN_COORDINATOR_KEY, CAIRN_CLIENT_KEY,\n"
                            "  CAIRN_APP and CAIRN_TOKEN_FILE (deploy/local-cluster.sh up prints them)\n");
            return CAIRN_EINVAL;
        }
        i++;
    }

    struct cairn_client *c = NULL;
    struct cairn_params *p = NULL;
    struct cairn_submit_stats st;
    memset(&st, 0, sizeof(st));
    int rc = cairn_client_new_from_env(&c);
    if (rc != CAIRN_OK) {
        fprintf(stderr, "cairn_bench_dispatch: %s: %s\n", cairn_err_name(rc), cairn_err_msg());
        return rc;
    }
    if (sleep_ms) {
        p = cairn_params_new();
        if (!p || cairn_params_set_u64(p, "sleep_ms", sleep_ms) != CAIRN_OK) {
            rc = CAIRN_ENOMEM;
            goto out;
        }
    }
    rc = cairn_job_submit_many(c, kind, p, n, window, &st);
    if (rc != CAIRN_OK)
        fprintf(stderr, "cairn_bench_dispatch: %s: %s\n", cairn_err_name(rc), cairn_client_err_msg(c));
    double secs = (double)st.elapsed_ns / 1e9;
    printf("{\"kind\": \"%s\", \"n\": %zu, \"window\": %zu, \"succeeded\": %" PRIu64 ", \"failed\": %" PRIu64
           ", \"errors\": %" PRIu64 ", \"elapsed_s\": %.3f, \"jobs_per_s\": %.0f, \"lat_p50_ms\": %.2f, "
           "\"lat_p99_ms\": %.2f, \"lat_max_ms\": %.2f}\n",
           kind, n, window, st.succeeded, st.failed, st.errors, secs, secs > 0 ? (double)st.succeeded / secs : 0.0,
           (double)st.lat_p50_ns / 1e6, (double)st.lat_p99_ns / 1e6, (double)st.lat_max_ns / 1e6);
out:
    cairn_params_destroy(&p);
    cairn_client_destroy(&c);
    return rc;
}
