/*
 * pool.h: a fixed set of worker threads over a bounded FIFO of tasks: the
 * parallel pipeline's engine. Bounded memory comes from the bound: submit blocks
 * while `max_queued` tasks wait.
 *
 * Errors: a task returns a cairn code; the first failure is kept with its message
 * (copied from the failing thread) and cairn_pool_wait() returns it after every
 * submitted task has run or been dropped. Once a task failed, queued tasks are
 * dropped (their `drop` callback, if any, runs so they can free their argument)
 * and submit returns that error at once.
 */
#ifndef CAIRN_POOL_H
#define CAIRN_POOL_H

#include "cairn/prelude.h"

struct cairn_pool;

typedef int (*cairn_task_fn)(void *thread_ctx, void *arg);
typedef void (*cairn_drop_fn)(void *arg);

/*
 * nthreads: 0 = number of online CPUs. thread_ctx_new/free (may be NULL) build
 * one context per thread (e.g. a codec and scratch buffers) passed to each task.
 */
int cairn_pool_new(struct cairn_pool **out, unsigned nthreads, size_t max_queued,
                   void *(*thread_ctx_new)(void *arg), void (*thread_ctx_free)(void *ctx),
                   void *ctx_arg);
/* Queue a task; blocks while the queue is full. Returns the pool's first error if it failed. */
int cairn_pool_submit(struct cairn_pool *p, cairn_task_fn fn, cairn_drop_fn drop, void *arg);
/* Wait until every submitted task finished; returns the first error (and sets its message). */
int cairn_pool_wait(struct cairn_pool *p);
/* Stop the threads (after wait) and free; NULL-safe. */
void cairn_pool_destroy(struct cairn_pool **p);
unsigned cairn_pool_threads(const struct cairn_pool *p);
/* Number of online CPUs (at least 1). */
unsigned cairn_cpu_count(void);

#endif
