/*
 * config.h: daemon configuration as one table of options (c-style.md §15).
 *
 * A daemon declares `static const struct cairn_opt table[]` with, per option,
 * its name, type, default, bounds and doc, and the offset of its field in the
 * daemon's config struct. The same table then
 *   - fills defaults (cairn_config_defaults),
 *   - reads a file of `key = value` lines, '#' comments, blank lines ignored
 *     (cairn_config_load_file; unknown keys and bad values are CAIRN_EINVAL
 *     naming "file:line" and the key),
 *   - reads flags `--key value`, `--key=value`, and `--key` alone for booleans
 *     (cairn_config_parse_args; flags win over the file),
 *   - prints a fully commented example config (cairn_config_write_example), which
 *     the deploy/ example configs are checked against.
 * Types: STR (char *, owned, freed by cairn_config_release), UINT (uint64_t,
 * within min..max), DURATION (uint64_t milliseconds; "250ms", "5s", "2m", "1h",
 * "7d", a bare number is seconds), BOOL (bool; true/false/yes/no/on/off/1/0).
 */
#ifndef CAIRN_CONFIG_H
#define CAIRN_CONFIG_H

#include "cairn/prelude.h"

#include <stdio.h>

enum cairn_opt_type {
    CAIRN_OPT_STR = 1,
    CAIRN_OPT_UINT,
    CAIRN_OPT_DURATION,
    CAIRN_OPT_BOOL,
};

struct cairn_opt {
    const char *name;   /* also the flag: --name */
    enum cairn_opt_type type;
    size_t offset;      /* offsetof(struct daemon_config, field) */
    const char *dflt;   /* default as text; NULL = unset (STR NULL, numbers 0) */
    uint64_t min, max;  /* UINT/DURATION bounds (max 0 = no bound) */
    const char *doc;    /* one line */
};

int cairn_config_defaults(const struct cairn_opt *t, size_t n, void *cfg);
int cairn_config_set(const struct cairn_opt *t, size_t n, void *cfg, const char *name, const char *value,
                     const char *origin);
int cairn_config_load_file(const struct cairn_opt *t, size_t n, void *cfg, const char *path);
/*
 * Parse argv[1..]: options from the table, plus `--config FILE` (loaded first,
 * wherever it stands, so flags win). Positional arguments are not allowed.
 * "--help" returns CAIRN_ECANCELED after printing usage (prog, the table) to stdout.
 */
int cairn_config_parse_args(const struct cairn_opt *t, size_t n, void *cfg, int argc, char **argv,
                            const char *prog, const char *summary);
void cairn_config_release(const struct cairn_opt *t, size_t n, void *cfg);
void cairn_config_write_example(const struct cairn_opt *t, size_t n, FILE *f, const char *title);

/* "250ms" "5s" "2m" "1h" "7d" or a bare number of seconds, into milliseconds. CAIRN_EINVAL otherwise. */
int cairn_duration_parse(const char *s, uint64_t *ms);

#endif
