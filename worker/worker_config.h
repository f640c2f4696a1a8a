/*
 * worker_config.h: the configuration of cairn-worker, one option table (c-style.md §15, cairn/config.h).
 *
 * The keys are listed in docs/internals/cluster.md ("Worker") and in deploy/worker.conf.example, which is
 * the output of `cairn-worker --print-example-config`.
 */
#ifndef CAIRN_WORKER_CONFIG_H
#define CAIRN_WORKER_CONFIG_H

#include "cairn/config.h"

#include <stdio.h>

struct cairn_wk_config {
    char *id;                     /* worker id; the hostname when unset */
    char *data_dir;               /* the chunk store is DATA_DIR/chunks */
    char *coordinator;            /* the coordinator's worker endpoint */
    char *coordinator_key;        /* file: the coordinator's public key */
    char *keys;                   /* file: this worker's key pair (0600) */
    char *peer_endpoint;          /* bind address of the peer ROUTER */
    char *peer_advertise;         /* endpoint announced to the others; default: the bound peer endpoint */
    char *peers_allow;            /* optional file of extra public keys allowed on the peer ROUTER */
    char *master_key;             /* file: the 32-byte cluster master key (0600) */
    uint64_t capacity;            /* maximum sandboxes */
    uint64_t job_threads;         /* threads running jobs */
    uint64_t job_queue;           /* accepted jobs waiting for a thread before job.dispatch is refused (EBUSY) */
    uint64_t replication_timeout; /* ms a chunk may take to reach a peer, retries included */
    char *log_level;
};

/* Flags of the command line that are not settings (never in the config file). */
struct cairn_wk_flags {
    bool print_example;  /* --print-example-config: write the commented example and exit */
    bool no_coordinator; /* --no-coordinator: serve peers only (tests, benchmarks) */
};

/*
 * Defaults, then --config FILE, then flags (flags win). Fills the id from the hostname when unset and
 * checks that the keys needed by the mode are set. CAIRN_ECANCELED after --help (usage printed).
 * On error the message names the key or flag. Release with cairn_wk_config_release in every case.
 */
int cairn_wk_config_load(struct cairn_wk_config *cfg, struct cairn_wk_flags *flags, int argc, char **argv);
/* Defaults only (tests build a config by hand from here). */
int cairn_wk_config_defaults(struct cairn_wk_config *cfg);
/* Set one key from text, as a config file line would ("origin" names where it came from). */
int cairn_wk_config_set(struct cairn_wk_config *cfg, const char *key, const char *value);
void cairn_wk_config_release(struct cairn_wk_config *cfg);
void cairn_wk_config_write_example(FILE *f);

#endif
