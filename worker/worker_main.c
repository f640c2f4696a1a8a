/*
 * worker_main.c: main() of cairn-worker: the command line, logging, signals; the daemon itself is
 * worker_daemon.c.
 *
 *   cairn-worker --config worker.conf [--key value]...   run (flags win over the file)
 *   cairn-worker --print-example-config                   the commented example (deploy/worker.conf.example)
 *   cairn-worker --no-coordinator ...                     peer service only (tests, benchmarks)
 *
 * Signals only set a flag (c-style.md §15): SIGTERM and SIGINT stop the worker cleanly (exit 0); a
 * second one exits at once (status 1). SIGPIPE is ignored. Exit status otherwise: the cairn error
 * number of what failed at startup (cairn/err.h), with "cairn-worker: NAME: message" on stderr.
 */
#include "cairn/prelude.h"

#include "worker_config.h"
#include "worker_daemon.h"

#include "cairn/err.h"
#include "cairn/log.h"

#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <unistd.h>

static atomic_int stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    if (atomic_exchange(&stop_flag, 1))
        _exit(1);
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int main(int argc, char **argv)
{
    cairn_wk_tune_malloc();
    struct cairn_wk_config cfg;
    struct cairn_wk_flags flags;
    cairn_log_set_prog("cairn-worker");
    int rc = cairn_wk_config_load(&cfg, &flags, argc, argv);
    if (rc == CAIRN_ECANCELED) { /* --help */
        cairn_wk_config_release(&cfg);
        return 0;
    }
    if (rc == CAIRN_OK && flags.print_example) {
        cairn_wk_config_write_example(stdout);
        cairn_wk_config_release(&cfg);
        return 0;
    }
    enum cairn_log_level level = CAIRN_LOG_INFO;
    if (rc == CAIRN_OK && cfg.log_level && cairn_log_level_parse(cfg.log_level, &level) != CAIRN_OK)
        rc = cairn_err_set(CAIRN_EINVAL, "log_level '%s' is not debug, info, warn, error or off", cfg.log_level);
    if (rc != CAIRN_OK) {
        fprintf(stderr, "cairn-worker: %s: %s\n", cairn_err_name(rc), cairn_err_msg());
        cairn_wk_config_release(&cfg);
        return rc;
    }
    cairn_log_set_level(level);
    /* Job messages carry data keys of CSEK images (guarded memory is MADV_DONTDUMP, but ZeroMQ's buffers are
       not): no core dumps of the worker, ever. runsc and the sandboxes inherit the limit. */
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    install_signals();
    struct cairn_wk_daemon_opts o = {.no_coordinator = flags.no_coordinator, .subreaper = true, .stop = &stop_flag};
    rc = cairn_wk_daemon_run(&cfg, &o);
    if (rc != CAIRN_OK)
        fprintf(stderr, "cairn-worker: %s: %s\n", cairn_err_name(rc), cairn_err_msg());
    cairn_wk_config_release(&cfg);
    return rc;
}
