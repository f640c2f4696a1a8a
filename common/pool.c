/*
 * pool.c: the thread pool behind the parallel pipelines (tree capture and
 * materialize, memory images): N threads over a bounded FIFO of tasks.
 *
 * Design
 * - One mutex guards everything; `not_empty` wakes workers, `not_full` wakes a
 *   submitter blocked on a full queue once half of it is free again (fewer
 *   wake-ups: the submitter then queues several tasks in one go), `idle` wakes
 *   cairn_pool_wait when the pool drains. The queue is a ring of `max_queued` slots allocated once, so a pool
 *   never allocates after cairn_pool_new.
 * - Thread contexts are built by cairn_pool_new on the calling thread (one per
 *   worker, so a failing constructor is reported there and not by a worker that
 *   cannot report) and freed by cairn_pool_destroy after the workers joined.
 * - Errors: a task returning non-OK records the first failure and copies its
 *   detail message (cairn_err_msg is per thread) into the pool; cairn_pool_wait
 *   re-sets it on the waiting thread. The failure is sticky: every later wait
 *   and submit returns it.
 * - After a failure, workers take the remaining queued tasks and call their drop
 *   callback (outside the lock) instead of running them, so the queue drains and
 *   every argument is released exactly once: by fn, or by drop.
 * - A submit that fails (the pool already failed) does NOT take the argument: the
 *   caller still owns it and frees it itself.
 * - destroy without a prior wait drops whatever is still queued, waits for the
 *   running tasks and joins the threads.
 *
 * Invariants (under mu): 0 <= count <= cap; running <= nthreads;
 * the pool is idle when count == 0 && running == 0.
 */
#include "cairn/pool.h"

#include "cairn/alloc.h"
#include "cairn/err.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <unistd.h>

struct pool_task {
    cairn_task_fn fn;
    cairn_drop_fn drop;
    void *arg;
};

struct pool_thread {
    struct cairn_pool *pool;
    pthread_t tid;
    void *ctx;
    bool started;
};

struct cairn_pool {
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full, idle;
    struct pool_task *ring;
    size_t cap, head, count;
    unsigned running;
    unsigned submit_waiting; /* submitters blocked on a full queue */
    bool stop;
    int err;
    char errmsg[1024];
    struct pool_thread *threads;
    unsigned nthreads;
    void (*ctx_free)(void *ctx);
};

unsigned cairn_cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return (unsigned)n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1u;
}

/* Caller holds mu. Records the first failure with the failing thread's message. */
static void pool_fail_locked(struct cairn_pool *p, int rc, const char *msg)
{
    if (p->err != CAIRN_OK)
        return;
    p->err = rc;
    if (msg && *msg)
        snprintf(p->errmsg, sizeof(p->errmsg), "%s", msg);
    else
        snprintf(p->errmsg, sizeof(p->errmsg), "task failed: %s", cairn_strerror(rc));
    /* a blocked submitter must learn about the failure now */
    pthread_cond_broadcast(&p->not_full);
}

static void *pool_main(void *arg)
{
    struct pool_thread *t = arg;
    struct cairn_pool *p = t->pool;

    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->count == 0 && !p->stop)
            pthread_cond_wait(&p->not_empty, &p->mu);
        if (p->count == 0)
            break; /* stop requested and nothing queued */
        struct pool_task task = p->ring[p->head];
        p->head = (p->head + 1) % p->cap;
        p->count--;
        p->running++;
        bool run = p->err == CAIRN_OK && !p->stop;
        /* hysteresis: a blocked submitter wakes when half the queue is free, then refills it in one go */
        if (p->submit_waiting && p->count <= p->cap / 2)
            pthread_cond_signal(&p->not_full);
        pthread_mutex_unlock(&p->mu);

        int rc = CAIRN_OK;
        if (run) {
            cairn_err_clear();
            rc = task.fn(t->ctx, task.arg);
        } else if (task.drop) {
            task.drop(task.arg);
        }

        pthread_mutex_lock(&p->mu);
        if (rc != CAIRN_OK)
            pool_fail_locked(p, rc, cairn_err_msg());
        p->running--;
        if (p->count == 0 && p->running == 0)
            pthread_cond_broadcast(&p->idle);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int cairn_pool_new(struct cairn_pool **out, unsigned nthreads, size_t max_queued,
                   void *(*thread_ctx_new)(void *arg), void (*thread_ctx_free)(void *ctx),
                   void *ctx_arg)
{
    int rc = CAIRN_OK;
    *out = NULL;
    if (nthreads == 0)
        nthreads = cairn_cpu_count();
    if (nthreads > 1024)
        return cairn_err_set(CAIRN_EINVAL, "pool: %u threads is too many (at most 1024)", nthreads);
    if (max_queued == 0)
        max_queued = 4 * (size_t)nthreads;

    struct cairn_pool *p = cairn_calloc(1, sizeof(*p));
    if (!p)
        return cairn_err_set(CAIRN_ENOMEM, "pool: out of memory");
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->not_empty, NULL);
    pthread_cond_init(&p->not_full, NULL);
    pthread_cond_init(&p->idle, NULL);
    p->cap = max_queued;
    p->ctx_free = thread_ctx_free;
    p->ring = cairn_calloc(max_queued, sizeof(*p->ring));
    p->threads = cairn_calloc(nthreads, sizeof(*p->threads));
    if (!p->ring || !p->threads) {
        rc = cairn_err_set(CAIRN_ENOMEM, "pool: out of memory for %zu queue slots", max_queued);
        goto fail;
    }
    p->nthreads = nthreads;
    for (unsigned i = 0; i < nthreads; i++) {
        p->threads[i].pool = p;
        if (thread_ctx_new) {
            cairn_err_clear();
            p->threads[i].ctx = thread_ctx_new(ctx_arg);
            if (!p->threads[i].ctx) {
                rc = cairn_err_code() != CAIRN_OK
                         ? cairn_err_code()
                         : cairn_err_set(CAIRN_ENOMEM, "pool: creating the context of thread %u failed", i);
                goto fail;
            }
        }
    }
    for (unsigned i = 0; i < nthreads; i++) {
        int e = pthread_create(&p->threads[i].tid, NULL, pool_main, &p->threads[i]);
        if (e != 0) {
            rc = cairn_err_set_errno(e == EAGAIN ? CAIRN_EAGAIN : CAIRN_EINTERNAL, e,
                                     "pool: starting thread %u of %u", i, nthreads);
            goto fail;
        }
        p->threads[i].started = true;
    }
    *out = p;
    return CAIRN_OK;

fail:
    cairn_pool_destroy(&p);
    return rc;
}

int cairn_pool_submit(struct cairn_pool *p, cairn_task_fn fn, cairn_drop_fn drop, void *arg)
{
    pthread_mutex_lock(&p->mu);
    while (p->count == p->cap && p->err == CAIRN_OK && !p->stop) {
        p->submit_waiting++;
        pthread_cond_wait(&p->not_full, &p->mu);
        p->submit_waiting--;
    }
    int rc = p->err;
    if (rc == CAIRN_OK && p->stop)
        rc = cairn_err_set(CAIRN_ECANCELED, "pool: submit after destroy");
    else if (rc != CAIRN_OK)
        cairn_err_set(rc, "%s", p->errmsg);
    if (rc == CAIRN_OK) {
        p->ring[(p->head + p->count) % p->cap] = (struct pool_task){fn, drop, arg};
        p->count++;
        pthread_cond_signal(&p->not_empty);
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

int cairn_pool_wait(struct cairn_pool *p)
{
    pthread_mutex_lock(&p->mu);
    while (p->count != 0 || p->running != 0)
        pthread_cond_wait(&p->idle, &p->mu);
    int rc = p->err;
    if (rc != CAIRN_OK)
        cairn_err_set(rc, "%s", p->errmsg);
    pthread_mutex_unlock(&p->mu);
    return rc;
}

void cairn_pool_destroy(struct cairn_pool **pp)
{
    if (!pp || !*pp)
        return;
    struct cairn_pool *p = *pp;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->not_empty);
    pthread_cond_broadcast(&p->not_full);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++)
        if (p->threads[i].started)
            pthread_join(p->threads[i].tid, NULL);
    for (unsigned i = 0; i < p->nthreads; i++)
        if (p->threads[i].ctx && p->ctx_free)
            p->ctx_free(p->threads[i].ctx);
    pthread_cond_destroy(&p->idle);
    pthread_cond_destroy(&p->not_full);
    pthread_cond_destroy(&p->not_empty);
    pthread_mutex_destroy(&p->mu);
    cairn_free(p->threads);
    cairn_free(p->ring);
    cairn_free(p);
    *pp = NULL;
}

unsigned cairn_pool_threads(const struct cairn_pool *p)
{
    return p ? p->nthreads : 0;
}
