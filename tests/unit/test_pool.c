/*
 * test_pool.c: the thread pool runs every task once, bounds its queue, builds
 * one context per thread, and reports the first failure with its message while
 * dropping (not running) what was still queued.
 */
#include "testutil.h"

#include "cairn/err.h"
#include "cairn/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct ctx_counts {
    atomic_int created, freed;
    atomic_int live;
};

struct tctx {
    struct ctx_counts *counts;
    pthread_t owner;
    bool owner_set;
    long tasks;
};

static void *ctx_new(void *arg)
{
    struct ctx_counts *c = arg;
    struct tctx *t = calloc(1, sizeof(*t));
    t->counts = c;
    atomic_fetch_add(&c->created, 1);
    atomic_fetch_add(&c->live, 1);
    return t;
}

static void ctx_free(void *p)
{
    struct tctx *t = p;
    atomic_fetch_add(&t->counts->freed, 1);
    atomic_fetch_sub(&t->counts->live, 1);
    free(t);
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static atomic_long sum;
static atomic_int wrong_thread;

static int add_task(void *thread_ctx, void *arg)
{
    struct tctx *t = thread_ctx;
    /* a context belongs to exactly one thread */
    if (!t->owner_set) {
        t->owner = pthread_self();
        t->owner_set = true;
    } else if (!pthread_equal(t->owner, pthread_self())) {
        atomic_fetch_add(&wrong_thread, 1);
    }
    t->tasks++;
    atomic_fetch_add(&sum, (long)(intptr_t)arg);
    return CAIRN_OK;
}

static void test_many_tasks(void **state)
{
    (void)state;
    struct ctx_counts counts = {0};
    struct cairn_pool *p = NULL;
    atomic_store(&sum, 0);
    atomic_store(&wrong_thread, 0);
    assert_int_equal(cairn_pool_new(&p, 4, 16, ctx_new, ctx_free, &counts), CAIRN_OK);
    assert_int_equal(cairn_pool_threads(p), 4);
    assert_int_equal(atomic_load(&counts.created), 4);
    long want = 0;
    for (long i = 1; i <= 100000; i++) {
        assert_int_equal(cairn_pool_submit(p, add_task, NULL, (void *)(intptr_t)i), CAIRN_OK);
        want += i;
    }
    assert_int_equal(cairn_pool_wait(p), CAIRN_OK);
    assert_int_equal(atomic_load(&sum), want);
    /* the pool is reusable after a successful wait */
    for (long i = 1; i <= 100; i++)
        assert_int_equal(cairn_pool_submit(p, add_task, NULL, (void *)(intptr_t)1), CAIRN_OK);
    assert_int_equal(cairn_pool_wait(p), CAIRN_OK);
    assert_int_equal(atomic_load(&sum), want + 100);
    assert_int_equal(atomic_load(&wrong_thread), 0);
    cairn_pool_destroy(&p);
    assert_null(p);
    cairn_pool_destroy(&p); /* NULL-safe */
    assert_int_equal(atomic_load(&counts.created), 4);
    assert_int_equal(atomic_load(&counts.freed), 4);
    assert_int_equal(atomic_load(&counts.live), 0);
}

static void test_default_threads(void **state)
{
    (void)state;
    struct cairn_pool *p = NULL;
    assert_true(cairn_cpu_count() >= 1);
    assert_int_equal(cairn_pool_new(&p, 0, 0, NULL, NULL, NULL), CAIRN_OK);
    assert_int_equal(cairn_pool_threads(p), cairn_cpu_count());
    cairn_pool_destroy(&p);
    assert_null(p);
}

/* ---- errors ---- */

static atomic_int ran, dropped, started;
static atomic_int gate; /* 0: blocked tasks wait, 1: go */

static int blocking_task(void *tc, void *arg)
{
    (void)tc;
    free(arg);
    atomic_fetch_add(&started, 1);
    while (!atomic_load(&gate))
        sleep_us(1000);
    atomic_fetch_add(&ran, 1);
    return CAIRN_OK;
}

static int failing_task(void *tc, void *arg)
{
    (void)tc;
    free(arg);
    atomic_fetch_add(&started, 1);
    while (!atomic_load(&gate))
        sleep_us(1000);
    atomic_fetch_add(&ran, 1);
    return cairn_err_set(CAIRN_ECORRUPT, "chunk %s is bad in thread", "00ff");
}

static int counting_task(void *tc, void *arg)
{
    (void)tc;
    free(arg);
    atomic_fetch_add(&ran, 1);
    return CAIRN_OK;
}

static void drop_arg(void *arg)
{
    free(arg);
    atomic_fetch_add(&dropped, 1);
}

static void test_error_propagation(void **state)
{
    (void)state;
    struct cairn_pool *p = NULL;
    atomic_store(&ran, 0);
    atomic_store(&dropped, 0);
    atomic_store(&gate, 0);
    /* one thread: the failing task runs first, the rest wait in the queue */
    assert_int_equal(cairn_pool_new(&p, 1, 64, NULL, NULL, NULL), CAIRN_OK);
    assert_int_equal(cairn_pool_submit(p, failing_task, drop_arg, malloc(8)), CAIRN_OK);
    for (int i = 0; i < 20; i++)
        assert_int_equal(cairn_pool_submit(p, counting_task, drop_arg, malloc(8)), CAIRN_OK);
    cairn_err_set(CAIRN_OK, "unrelated message of the main thread");
    atomic_store(&gate, 1);
    assert_int_equal(cairn_pool_wait(p), CAIRN_ECORRUPT);
    /* the message was copied from the failing thread */
    assert_string_equal(cairn_err_msg(), "chunk 00ff is bad in thread");
    assert_int_equal(cairn_err_code(), CAIRN_ECORRUPT);
    assert_int_equal(atomic_load(&ran), 1);
    assert_int_equal(atomic_load(&dropped), 20);
    /* sticky: submit fails at once and does not take the argument */
    cairn_err_clear();
    void *arg = malloc(8);
    assert_int_equal(cairn_pool_submit(p, counting_task, drop_arg, arg), CAIRN_ECORRUPT);
    assert_string_equal(cairn_err_msg(), "chunk 00ff is bad in thread");
    free(arg);
    assert_int_equal(atomic_load(&dropped), 20);
    assert_int_equal(cairn_pool_wait(p), CAIRN_ECORRUPT);
    cairn_pool_destroy(&p);
}

static int plain_fail_task(void *tc, void *arg)
{
    (void)tc;
    (void)arg;
    return CAIRN_EIO; /* no message set */
}

static void test_error_without_message(void **state)
{
    (void)state;
    struct cairn_pool *p = NULL;
    assert_int_equal(cairn_pool_new(&p, 2, 4, NULL, NULL, NULL), CAIRN_OK);
    assert_int_equal(cairn_pool_submit(p, plain_fail_task, NULL, NULL), CAIRN_OK);
    assert_int_equal(cairn_pool_wait(p), CAIRN_EIO);
    assert_true(strlen(cairn_err_msg()) > 0);
    cairn_pool_destroy(&p);
}

/* ---- bounded queue: submit blocks while max_queued tasks wait ---- */

struct submitter {
    struct cairn_pool *p;
    atomic_int submitted;
    int n;
};

static void *submit_thread(void *arg)
{
    struct submitter *s = arg;
    for (int i = 0; i < s->n; i++) {
        void *a = malloc(8);
        if (cairn_pool_submit(s->p, blocking_task, drop_arg, a) != CAIRN_OK) {
            free(a); /* a failed submit leaves the argument with the caller */
            break;
        }
        atomic_fetch_add(&s->submitted, 1);
    }
    return NULL;
}

static void test_bounded_queue(void **state)
{
    (void)state;
    struct cairn_pool *p = NULL;
    atomic_store(&ran, 0);
    atomic_store(&dropped, 0);
    atomic_store(&gate, 0);
    atomic_store(&started, 0);
    assert_int_equal(cairn_pool_new(&p, 2, 3, NULL, NULL, NULL), CAIRN_OK);
    /* both threads busy first, so what follows only fills the queue */
    assert_int_equal(cairn_pool_submit(p, blocking_task, drop_arg, malloc(8)), CAIRN_OK);
    assert_int_equal(cairn_pool_submit(p, blocking_task, drop_arg, malloc(8)), CAIRN_OK);
    for (int i = 0; i < 2000 && atomic_load(&started) < 2; i++)
        sleep_us(1000);
    assert_int_equal(atomic_load(&started), 2);
    struct submitter s = {.p = p, .n = 10};
    pthread_t t;
    pthread_create(&t, NULL, submit_thread, &s);
    /* 3 queued, the 4th submit blocks */
    for (int i = 0; i < 2000 && atomic_load(&s.submitted) < 3; i++)
        sleep_us(1000);
    sleep_us(100000);
    assert_int_equal(atomic_load(&s.submitted), 3);
    atomic_store(&gate, 1);
    pthread_join(t, NULL);
    assert_int_equal(atomic_load(&s.submitted), 10);
    assert_int_equal(cairn_pool_wait(p), CAIRN_OK);
    assert_int_equal(atomic_load(&ran), 12);
    assert_int_equal(atomic_load(&dropped), 0);
    cairn_pool_destroy(&p);
}

/* A submitter blocked on a full queue is released with the error when a task fails. */
static void test_blocked_submit_sees_failure(void **state)
{
    (void)state;
    struct cairn_pool *p = NULL;
    atomic_store(&ran, 0);
    atomic_store(&dropped, 0);
    atomic_store(&gate, 0);
    atomic_store(&started, 0);
    assert_int_equal(cairn_pool_new(&p, 1, 2, NULL, NULL, NULL), CAIRN_OK);
    assert_int_equal(cairn_pool_submit(p, failing_task, drop_arg, malloc(8)), CAIRN_OK);
    for (int i = 0; i < 2000 && atomic_load(&started) < 1; i++)
        sleep_us(1000);
    struct submitter s = {.p = p, .n = 10};
    pthread_t t;
    pthread_create(&t, NULL, submit_thread, &s);
    for (int i = 0; i < 2000 && atomic_load(&s.submitted) < 2; i++)
        sleep_us(1000);
    sleep_us(100000);
    assert_int_equal(atomic_load(&s.submitted), 2); /* queue full, blocked */
    atomic_store(&gate, 1);
    pthread_join(t, NULL); /* released by the failure */
    assert_int_equal(cairn_pool_wait(p), CAIRN_ECORRUPT);
    assert_int_equal(atomic_load(&ran), 1);
    assert_int_equal(atomic_load(&dropped), 2);
    cairn_pool_destroy(&p);
}

/* destroy without wait drops queued tasks and frees contexts once. */
static void test_destroy_drops(void **state)
{
    (void)state;
    struct ctx_counts counts = {0};
    struct cairn_pool *p = NULL;
    atomic_store(&ran, 0);
    atomic_store(&dropped, 0);
    atomic_store(&gate, 0);
    assert_int_equal(cairn_pool_new(&p, 2, 8, ctx_new, ctx_free, &counts), CAIRN_OK);
    for (int i = 0; i < 8; i++)
        assert_int_equal(cairn_pool_submit(p, blocking_task, drop_arg, malloc(8)), CAIRN_OK);
    sleep_us(50000);
    atomic_store(&gate, 1);
    cairn_pool_destroy(&p);
    assert_null(p);
    assert_int_equal(atomic_load(&ran) + atomic_load(&dropped), 8);
    assert_int_equal(atomic_load(&counts.created), 2);
    assert_int_equal(atomic_load(&counts.freed), 2);
}

static atomic_int ctx_calls;
static void *ctx_new_fails_third(void *arg)
{
    (void)arg;
    if (atomic_fetch_add(&ctx_calls, 1) == 2) {
        cairn_err_set(CAIRN_ENOMEM, "no codec for you");
        return NULL;
    }
    return malloc(16);
}

static void test_ctx_failure(void **state)
{
    (void)state;
    struct cairn_pool *p = (struct cairn_pool *)1;
    atomic_store(&ctx_calls, 0);
    assert_int_equal(cairn_pool_new(&p, 4, 4, ctx_new_fails_third, free, NULL), CAIRN_ENOMEM);
    assert_null(p);
    assert_string_equal(cairn_err_msg(), "no codec for you");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_tasks),
        cmocka_unit_test(test_default_threads),
        cmocka_unit_test(test_error_propagation),
        cmocka_unit_test(test_error_without_message),
        cmocka_unit_test(test_bounded_queue),
        cmocka_unit_test(test_blocked_submit_sees_failure),
        cmocka_unit_test(test_destroy_drops),
        cmocka_unit_test(test_ctx_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
