/*
 * worker_config.c: the option table of cairn-worker and its command line.
 *
 * Why a file of its own: the table is the single source of the config keys, of their defaults and docs,
 * of `--help` and of deploy/worker.conf.example (`--print-example-config`), so that the three cannot
 * drift apart. Two command-line flags are not settings and are taken out of argv before the table
 * parses it: --print-example-config and --no-coordinator (tests and benchmarks: peer service only).
 */
#include "worker_config.h"

#include "cairn/alloc.h"
#include "cairn/err.h"

#include <limits.h>
#include <unistd.h>

#define OPT(name, type, field, dflt, min, max, doc) \
    {name, CAIRN_OPT_##type, offsetof(struct cairn_wk_config, field), dflt, min, max, doc}

static const struct cairn_opt table[] = {
    OPT("id", STR, id, NULL, 0, 0,
        "worker id, unique in the cluster, [A-Za-z0-9._-], 1..64 bytes (default: the hostname)"),
    OPT("data_dir", STR, data_dir, "./var/worker", 0, 0, "data directory; the chunk store is DATA_DIR/chunks"),
    OPT("coordinator", STR, coordinator, "tcp://127.0.0.1:7301", 0, 0, "the coordinator's worker endpoint"),
    OPT("coordinator_key", STR, coordinator_key, NULL, 0, 0,
        "file with the coordinator's CURVE public key (cairn keygen --public); required"),
    OPT("keys", STR, keys, NULL, 0, 0, "this worker's CURVE key pair file (cairn keygen --out), mode 0600; required"),
    OPT("peer_endpoint", STR, peer_endpoint, "tcp://127.0.0.1:7310", 0, 0,
        "endpoint the peer ROUTER binds (chunk transfer between workers); port * picks a free one"),
    OPT("peer_advertise", STR, peer_advertise, NULL, 0, 0,
        "peer endpoint the other workers connect to (default: the bound peer_endpoint)"),
    OPT("peers_allow", STR, peers_allow, NULL, 0, 0,
        "optional file of extra CURVE public keys allowed on the peer endpoint (e.g. a benchmark tool), one per line"),
    OPT("master_key", STR, master_key, NULL, 0, 0,
        "file with the 32-byte cluster master key, mode 0600 (managed encryption domains); required"),
    OPT("capacity", UINT, capacity, "8", 0, 4096, "maximum sandboxes on this worker"),
    OPT("job_threads", UINT, job_threads, "2", 1, 64, "threads that run jobs"),
    OPT("job_queue", UINT, job_queue, "8", 0, 4096,
        "jobs accepted while every job thread is busy; beyond that job.dispatch is refused with EBUSY"),
    OPT("replication_timeout", DURATION, replication_timeout, "30s", 1000, 86400000,
        "how long a chunk may take to reach a peer, retries included, before its job fails"),
    OPT("log_level", STR, log_level, "info", 0, 0, "debug | info | warn | error | off"),
};

static bool id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                  c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

int cairn_wk_config_defaults(struct cairn_wk_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    return cairn_config_defaults(table, CAIRN_ARRAY_LEN(table), cfg);
}

int cairn_wk_config_set(struct cairn_wk_config *cfg, const char *key, const char *value)
{
    return cairn_config_set(table, CAIRN_ARRAY_LEN(table), cfg, key, value, "setting");
}

void cairn_wk_config_release(struct cairn_wk_config *cfg)
{
    if (cfg)
        cairn_config_release(table, CAIRN_ARRAY_LEN(table), cfg);
}

void cairn_wk_config_write_example(FILE *f)
{
    cairn_config_write_example(table, CAIRN_ARRAY_LEN(table), f,
                               "cairn-worker configuration (docs/internals/cluster.md, \"Worker\")");
}

static int check(const struct cairn_wk_config *cfg, const struct cairn_wk_flags *flags)
{
    CAIRN_RETURN_ERROR_IF(!id_valid(cfg->id), CAIRN_EINVAL,
                          "id '%.80s' is not a worker id: 1..64 bytes of [A-Za-z0-9._-]", cfg->id);
    CAIRN_RETURN_ERROR_IF(!cfg->data_dir || !*cfg->data_dir, CAIRN_EINVAL, "data_dir is required");
    CAIRN_RETURN_ERROR_IF(!cfg->keys, CAIRN_EINVAL, "keys is required: this worker's key pair file (cairn keygen)");
    CAIRN_RETURN_ERROR_IF(!cfg->peer_endpoint || !*cfg->peer_endpoint, CAIRN_EINVAL, "peer_endpoint is required");
    if (flags && flags->no_coordinator)
        return CAIRN_OK;
    CAIRN_RETURN_ERROR_IF(!cfg->coordinator || !*cfg->coordinator, CAIRN_EINVAL, "coordinator is required");
    CAIRN_RETURN_ERROR_IF(!cfg->coordinator_key, CAIRN_EINVAL,
                          "coordinator_key is required: the coordinator's public key file");
    CAIRN_RETURN_ERROR_IF(!cfg->master_key, CAIRN_EINVAL, "master_key is required: the cluster master key file");
    return CAIRN_OK;
}

int cairn_wk_config_load(struct cairn_wk_config *cfg, struct cairn_wk_flags *flags, int argc, char **argv)
{
    memset(flags, 0, sizeof(*flags));
    int rc = cairn_wk_config_defaults(cfg);
    if (rc != CAIRN_OK)
        return rc;
    /* take the non-setting flags out of argv; the table parses the rest */
    char **args = cairn_calloc((size_t)argc + 1, sizeof(*args));
    if (!args)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory parsing the command line");
    int n = 0;
    for (int i = 0; i < argc; i++) {
        if (i > 0 && !strcmp(argv[i], "--print-example-config"))
            flags->print_example = true;
        else if (i > 0 && !strcmp(argv[i], "--no-coordinator"))
            flags->no_coordinator = true;
        else
            args[n++] = argv[i];
    }
    if (flags->print_example) {
        cairn_free(args);
        return CAIRN_OK;
    }
    rc = cairn_config_parse_args(table, CAIRN_ARRAY_LEN(table), cfg, n, args, "cairn-worker",
                                 "cairn worker: runs jobs and stores chunks (docs/internals/cluster.md).\n"
                                 "Extra flags: --print-example-config, --no-coordinator (peer service only, tests)");
    cairn_free(args);
    if (rc != CAIRN_OK)
        return rc;
    if (!cfg->id) {
        char host[HOST_NAME_MAX + 1] = "";
        if (gethostname(host, sizeof(host)) != 0 || !host[0])
            return cairn_err_set(CAIRN_EINVAL, "id is unset and the hostname cannot be read: set id");
        host[HOST_NAME_MAX] = '\0';
        if (!(cfg->id = cairn_strdup(host)))
            return cairn_err_set(CAIRN_ENOMEM, "out of memory");
    }
    return check(cfg, flags);
}
