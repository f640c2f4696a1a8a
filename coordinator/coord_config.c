/*
 * coord_config.c: the coordinator's configuration as one option table
 * (c-style.md §15). The same table fills defaults, reads --config files and
 * --flags, prints --help and the example config (deploy/coordinator.conf.example
 * is `cairn-coordinator --print-example-config`).
 */
#include "coord.h"

#include "cairn/err.h"
#include "cairn/log.h"

#define OPT(name, type, field, dflt, min, max, doc) \
    {name, CAIRN_OPT_##type, offsetof(struct coord_config, field), dflt, min, max, doc}

const struct cairn_opt coord_options[] = {
    OPT("data_dir", STR, data_dir, NULL, 0, 0,
        "directory of the coordinator's state (metadata in DATA_DIR/meta); created 0700 if missing (required)"),
    OPT("client_endpoint", STR, client_endpoint, "tcp://127.0.0.1:7300", 0, 0,
        "ZeroMQ endpoint of the client ROUTER (CLI, libcairn)"),
    OPT("worker_endpoint", STR, worker_endpoint, "tcp://127.0.0.1:7301", 0, 0,
        "ZeroMQ endpoint of the worker ROUTER"),
    OPT("keys", STR, keys, NULL, 0, 0,
        "the coordinator's CURVE key pair file, mode 0600 (cairn keygen --out FILE) (required)"),
    OPT("clients_allow", STR, clients_allow, NULL, 0, 0,
        "allow-list of client public keys, one Z85 key per line; reloaded on SIGHUP (required)"),
    OPT("workers_allow", STR, workers_allow, NULL, 0, 0,
        "allow-list of worker public keys, one Z85 key per line; reloaded on SIGHUP (required)"),
    OPT("admin_token_file", STR, admin_token_file, NULL, 0, 0,
        "file with the admin token, 64 hex characters, mode 0600 (cairn-coordinator --init-admin-token FILE) (required)"),
    OPT("master_key", STR, master_key, NULL, 0, 0,
        "file with the 32-byte cluster master key, mode 0600 (cairn-coordinator --init-master-key FILE) (required)"),
    OPT("heartbeat_interval", DURATION, heartbeat_interval, "1s", 10, 3600000,
        "how often workers send a heartbeat"),
    OPT("heartbeat_timeout", DURATION, heartbeat_timeout, "5s", 20, 86400000,
        "silence after which a worker is declared dead and its running jobs fail"),
    OPT("replicas", UINT, replicas, "2", 1, 64, "replication factor R: copies of every chunk"),
    OPT("queue_timeout", DURATION, queue_timeout, "60s", 10, 0,
        "a job that found no live worker for this long fails with EUNAVAILABLE"),
    OPT("log_level", STR, log_level, "info", 0, 0, "debug, info, warn, error or off"),
    OPT("test_clock", BOOL, test_clock, "false", 0, 0,
        "allow admin.clock.advance (tests only: moves the retention clock forward)"),
    OPT("dir_retention", DURATION, dir_retention, "30d", 1000, 0,
        "directory snapshots expire this long after they were last created or used (mounted, or a sandbox "
        "created from one), unless given a --ttl"),
};
const size_t coord_noptions = CAIRN_ARRAY_LEN(coord_options);

int coord_config_check(const struct coord_config *cfg)
{
    static const struct {
        size_t off;
        const char *name;
    } required[] = {
        {offsetof(struct coord_config, data_dir), "data_dir"},
        {offsetof(struct coord_config, keys), "keys"},
        {offsetof(struct coord_config, clients_allow), "clients_allow"},
        {offsetof(struct coord_config, workers_allow), "workers_allow"},
        {offsetof(struct coord_config, admin_token_file), "admin_token_file"},
        {offsetof(struct coord_config, master_key), "master_key"},
        {offsetof(struct coord_config, client_endpoint), "client_endpoint"},
        {offsetof(struct coord_config, worker_endpoint), "worker_endpoint"},
    };
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(required); i++) {
        const char *v = *(char *const *)((const char *)cfg + required[i].off);
        if (!v || !*v)
            return cairn_err_set(CAIRN_EINVAL, "setting '%s' is required (see --help)", required[i].name);
    }
    if (cfg->heartbeat_timeout <= cfg->heartbeat_interval)
        return cairn_err_set(CAIRN_EINVAL, "heartbeat_timeout (%llu ms) must be longer than heartbeat_interval (%llu ms)",
                             (unsigned long long)cfg->heartbeat_timeout,
                             (unsigned long long)cfg->heartbeat_interval);
    enum cairn_log_level lvl;
    if (cfg->log_level && cairn_log_level_parse(cfg->log_level, &lvl) != CAIRN_OK)
        return cairn_err_set(CAIRN_EINVAL, "log_level '%s' is not one of debug, info, warn, error, off",
                             cfg->log_level);
    return CAIRN_OK;
}
