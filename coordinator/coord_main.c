/*
 * coord_main.c: the cairn-coordinator executable.
 *
 *   cairn-coordinator --config FILE [--key value]...   run (flags win over the file)
 *   cairn-coordinator --init-master-key FILE           write 32 random bytes, 0600, never overwriting
 *   cairn-coordinator --init-admin-token FILE          write 64 random hex characters (no newline), 0600, never overwriting
 *   cairn-coordinator --print-example-config           the commented config (deploy/coordinator.conf.example)
 *
 * Signals only set flags (c-style.md §15): SIGTERM/SIGINT stop the loop (the
 * coordinator then answers parked requests, closes its sockets, syncs and
 * closes RocksDB and exits 0), SIGHUP reloads the allow-lists. Core dumps are
 * disabled: tokens pass through ordinary message buffers.
 * Exit status: 0, or the cairn error code of what failed at start-up.
 */
#include "coord.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"
#include "cairn/log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile sig_atomic_t stop_flag, reload_flag;

static void on_stop(int sig)
{
    CAIRN_UNUSED(sig);
    stop_flag = 1;
}

static void on_hup(int sig)
{
    CAIRN_UNUSED(sig);
    reload_flag = 1;
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_hup;
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

static int fsync_parent(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s", path);
    int fd = open(dirname(buf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return cairn_err_set_errno(cairn_err_from_errno(errno), errno, "open the directory of '%s'", path);
    int rc = fsync(fd) == 0 ? CAIRN_OK : cairn_err_set_errno(CAIRN_EIO, errno, "fsync the directory of '%s'", path);
    close(fd);
    return rc;
}

/* Write a new private file; never replaces an existing one (temp file + link, which fails on EEXIST). */
static int write_new_secret_file(const char *path, const void *data, size_t len)
{
    char tmp[4200];
    struct stat st;
    if (lstat(path, &st) == 0)
        return cairn_err_set(CAIRN_EEXIST, "'%s' already exists: refusing to overwrite it", path);
    int n = snprintf(tmp, sizeof(tmp), "%s.new.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return cairn_err_set(CAIRN_EINVAL, "path '%s' is too long", path);
    CAIRN_FORWARD_IF_ERROR(cairn_file_replace_atomic(tmp, data, len, 0600));
    int rc = CAIRN_OK;
    if (link(tmp, path) != 0) {
        int e = errno;
        rc = e == EEXIST ? cairn_err_set(CAIRN_EEXIST, "'%s' already exists: refusing to overwrite it", path)
                         : cairn_err_set_errno(cairn_err_from_errno(e), e, "create '%s'", path);
    }
    unlink(tmp);
    if (rc == CAIRN_OK)
        rc = fsync_parent(path);
    return rc;
}

static int init_master_key(const char *path)
{
    struct cairn_secret *k = NULL;
    int rc = cairn_crypto_init();
    if (rc == CAIRN_OK)
        rc = cairn_secret_random(&k, CAIRN_KEY_BYTES);
    if (rc == CAIRN_OK)
        rc = write_new_secret_file(path, k->bytes, k->len);
    cairn_secret_destroy(&k);
    if (rc == CAIRN_OK)
        printf("wrote a new %d-byte master key to '%s' (mode 0600)\n", CAIRN_KEY_BYTES, path);
    return rc;
}

static int init_admin_token(const char *path)
{
    struct cairn_secret *raw = NULL, *text = NULL;
    int rc = cairn_crypto_init();
    if (rc == CAIRN_OK)
        rc = cairn_secret_random(&raw, 32);
    if (rc == CAIRN_OK)
        rc = cairn_secret_new(&text, 66);
    if (rc == CAIRN_OK) {
        /* exactly the 64 characters, no newline: readers need not trim (the coordinator would) */
        cairn_hex_encode((char *)text->bytes, raw->bytes, 32);
        rc = write_new_secret_file(path, text->bytes, 64);
    }
    cairn_secret_destroy(&raw);
    cairn_secret_destroy(&text);
    if (rc == CAIRN_OK)
        printf("wrote a new admin token to '%s' (mode 0600)\n", path);
    return rc;
}

/*
 * Flags are the option names (--heartbeat_timeout); the dashed spelling
 * (--heartbeat-timeout, --test-clock as clock.h and the docs write it) is
 * accepted too: rewritten in place before the table parser sees argv.
 */
static void normalize_flags(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || !strcmp(a, "--config") || !strncmp(a, "--config=", 9))
            continue;
        char name[64];
        size_t len = strcspn(a + 2, "=");
        if (len == 0 || len >= sizeof(name))
            continue;
        memcpy(name, a + 2, len);
        name[len] = '\0';
        for (size_t k = 0; k < len; k++)
            if (name[k] == '-')
                name[k] = '_';
        for (size_t o = 0; o < coord_noptions; o++)
            if (!strcmp(coord_options[o].name, name)) {
                memcpy(a + 2, name, len);
                break;
            }
        /* a value that is the next argument is never touched: only argv[i] up to '=' */
    }
}

static int fail(int rc)
{
    fprintf(stderr, "cairn-coordinator: %s: %s\n", cairn_err_name(rc), cairn_err_msg());
    return rc;
}

int main(int argc, char **argv)
{
    static const char summary[] =
        "The cairn coordinator: metadata, jobs and membership of a cairn cluster.\n"
        "Also: --init-master-key FILE, --init-admin-token FILE, --print-example-config, --version.";
    cairn_log_set_prog("cairn-coordinator");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--init-master-key") || !strcmp(a, "--init-admin-token")) {
            if (i + 1 >= argc)
                return fail(cairn_err_set(CAIRN_EINVAL, "%s needs a file", a));
            int rc = !strcmp(a, "--init-master-key") ? init_master_key(argv[i + 1]) : init_admin_token(argv[i + 1]);
            return rc == CAIRN_OK ? 0 : fail(rc);
        }
        if (!strcmp(a, "--print-example-config")) {
            cairn_config_write_example(coord_options, coord_noptions, stdout,
                                       "cairn-coordinator configuration (docs/internals/cluster.md)");
            return 0;
        }
        if (!strcmp(a, "--version")) {
            printf("cairn-coordinator %s (protocol %d)\n", CAIRN_VERSION, CAIRN_PROTO_VERSION);
            return 0;
        }
    }

    struct coord_config cfg;
    struct coord *c = NULL;
    normalize_flags(argc, argv);
    int rc = cairn_config_defaults(coord_options, coord_noptions, &cfg);
    if (rc == CAIRN_OK)
        rc = cairn_config_parse_args(coord_options, coord_noptions, &cfg, argc, argv, "cairn-coordinator", summary);
    if (rc == CAIRN_ECANCELED) {
        cairn_config_release(coord_options, coord_noptions, &cfg);
        return 0; /* --help */
    }
    enum cairn_log_level lvl = CAIRN_LOG_INFO;
    if (rc == CAIRN_OK && cfg.log_level && cairn_log_level_parse(cfg.log_level, &lvl) != CAIRN_OK)
        rc = cairn_err_set(CAIRN_EINVAL, "log_level '%s' is not one of debug, info, warn, error, off", cfg.log_level);
    if (rc != CAIRN_OK) {
        fail(rc);
        cairn_config_release(coord_options, coord_noptions, &cfg);
        return rc;
    }
    cairn_log_set_level(lvl);
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    install_signals();

    rc = coord_new(&c, &cfg);
    if (rc != CAIRN_OK) {
        fail(rc);
        cairn_config_release(coord_options, coord_noptions, &cfg);
        return rc;
    }
    rc = coord_run(c, &stop_flag, &reload_flag);
    cairn_info("stopping (%s): %" PRIu64 " jobs submitted, %" PRIu64 " succeeded, %" PRIu64 " failed this run",
               stop_flag ? "signal" : cairn_err_name(rc), c->stats.jobs_submitted, c->stats.jobs_succeeded,
               c->stats.jobs_failed);
    coord_destroy(&c);
    cairn_info("stopped");
    cairn_config_release(coord_options, coord_noptions, &cfg);
    return stop_flag ? 0 : rc;
}
