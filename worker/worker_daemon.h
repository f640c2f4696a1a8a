/*
 * worker_daemon.h: the cairn-worker process: startup, the main loop and shutdown (thread model at the
 * top of worker_daemon.c).
 *
 * Run by main() with the flag its signal handlers set; tests run it in a thread of their own, with a
 * flag they set themselves.
 */
#ifndef CAIRN_WORKER_DAEMON_H
#define CAIRN_WORKER_DAEMON_H

#include "worker_config.h"

#include <stdatomic.h>

struct cairn_wk_daemon_opts {
    bool no_coordinator;  /* peer service only: no registration, no jobs from anyone */
    bool subreaper;       /* become a child subreaper and reap orphans (cairn-worker's main() only: the
                             daemon must run on the main thread, which then must spawn nothing itself) */
    atomic_int *stop;     /* set non-zero to stop: running jobs are abandoned, the store closed */
    /* called once the sockets are bound, with the advertised peer endpoint (may be NULL) */
    void (*on_ready)(void *arg, const char *peer_endpoint);
    void *arg;
};

/*
 * Start the worker and serve until *opts->stop. Returns CAIRN_OK after a clean stop, or the startup
 * error (with its message). Also writes the advertised endpoint to DATA_DIR/peer.endpoint.
 */
int cairn_wk_daemon_run(const struct cairn_wk_config *cfg, const struct cairn_wk_daemon_opts *opts);

/*
 * Process-wide malloc tuning for chunk traffic (call first thing in main): chunk-sized buffers (64 KiB
 * .. 1 MiB: ZeroMQ frames, CURVE boxes, RocksDB batches) are allocated and freed at a high rate, and
 * glibc's defaults give that memory back to the kernel and fault it in again each time (about 8 % of
 * the CPU of a peer transfer). Keeps up to 64 MiB of freed heap instead.
 */
void cairn_wk_tune_malloc(void);

#endif
