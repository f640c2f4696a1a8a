/*
 * config.c: the option-table configuration of the daemons (see config.h).
 */
#include "cairn/config.h"
#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <strings.h>

#define LINE_MAX_ 4096

static const struct cairn_opt *find(const struct cairn_opt *t, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(t[i].name) == len && memcmp(t[i].name, name, len) == 0)
            return &t[i];
    return NULL;
}

int cairn_duration_parse(const char *s, uint64_t *ms)
{
    char *end;
    if (!s || !isdigit((unsigned char)*s))
        return cairn_err_set(CAIRN_EINVAL, "'%s' is not a duration (e.g. 250ms, 5s, 2m, 1h, 7d)", s ? s : "");
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    uint64_t mult;
    if (!strcmp(end, "ms"))
        mult = 1;
    else if (!strcmp(end, "s") || !*end)
        mult = 1000;
    else if (!strcmp(end, "m"))
        mult = 60000;
    else if (!strcmp(end, "h"))
        mult = 3600000;
    else if (!strcmp(end, "d"))
        mult = 86400000;
    else
        return cairn_err_set(CAIRN_EINVAL, "'%s' is not a duration (e.g. 250ms, 5s, 2m, 1h, 7d)", s);
    if (errno || v > UINT64_MAX / mult)
        return cairn_err_set(CAIRN_EINVAL, "duration '%s' is too large", s);
    *ms = v * mult;
    return CAIRN_OK;
}

static int parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (!strcasecmp(v, yes[i])) {
            *out = true;
            return CAIRN_OK;
        }
        if (!strcasecmp(v, no[i])) {
            *out = false;
            return CAIRN_OK;
        }
    }
    return CAIRN_EINVAL;
}

int cairn_config_set(const struct cairn_opt *t, size_t n, void *cfg, const char *name, const char *value,
                     const char *origin)
{
    const struct cairn_opt *o = find(t, n, name, strlen(name));
    if (!o)
        return cairn_err_set(CAIRN_EINVAL, "%s: unknown setting '%s'", origin, name);
    void *field = (char *)cfg + o->offset;
    uint64_t v = 0;
    char *end;
    switch (o->type) {
    case CAIRN_OPT_STR: {
        char *copy = value ? cairn_strdup(value) : NULL;
        if (value && !copy)
            return cairn_err_set(CAIRN_ENOMEM, "out of memory");
        cairn_free(*(char **)field);
        *(char **)field = copy;
        return CAIRN_OK;
    }
    case CAIRN_OPT_BOOL:
        if (parse_bool(value ? value : "", (bool *)field) != CAIRN_OK)
            return cairn_err_set(CAIRN_EINVAL, "%s: '%s' takes true or false, not '%s'", origin, name,
                                 value ? value : "");
        return CAIRN_OK;
    case CAIRN_OPT_UINT:
        errno = 0;
        v = value && isdigit((unsigned char)*value) ? strtoull(value, &end, 10) : 0;
        if (!value || !isdigit((unsigned char)*value) || *end || errno)
            return cairn_err_set(CAIRN_EINVAL, "%s: '%s' takes a whole number, not '%s'", origin, name,
                                 value ? value : "");
        break;
    case CAIRN_OPT_DURATION:
        if (cairn_duration_parse(value, &v) != CAIRN_OK)
            return cairn_err_set(CAIRN_EINVAL, "%s: '%s' takes a duration (e.g. 250ms, 5s, 2m, 1h, 7d), not '%s'",
                                 origin, name, value ? value : "");
        break;
    }
    if (v < o->min || (o->max && v > o->max))
        return cairn_err_set(CAIRN_EINVAL, "%s: '%s' must be between %" PRIu64 " and %" PRIu64 "%s, not '%s'",
                             origin, name, o->min, o->max, o->type == CAIRN_OPT_DURATION ? " ms" : "", value);
    *(uint64_t *)field = v;
    return CAIRN_OK;
}

int cairn_config_defaults(const struct cairn_opt *t, size_t n, void *cfg)
{
    for (size_t i = 0; i < n; i++) {
        void *field = (char *)cfg + t[i].offset;
        if (t[i].type == CAIRN_OPT_STR)
            *(char **)field = NULL;
        else if (t[i].type == CAIRN_OPT_BOOL)
            *(bool *)field = false;
        else
            *(uint64_t *)field = 0;
        if (t[i].dflt)
            CAIRN_FORWARD_IF_ERROR(cairn_config_set(t, n, cfg, t[i].name, t[i].dflt, "default"));
    }
    return CAIRN_OK;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

int cairn_config_load_file(const struct cairn_opt *t, size_t n, void *cfg, const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return cairn_err_set_errno(cairn_err_from_errno(errno), errno, "config file '%s'", path);
    char line[LINE_MAX_], origin[LINE_MAX_ + 32];
    int rc = CAIRN_OK, lineno = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        snprintf(origin, sizeof(origin), "%s:%d", path, lineno);
        if (!strchr(line, '\n') && !feof(f)) {
            rc = cairn_err_set(CAIRN_EINVAL, "%s: line too long", origin);
            break;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = trim(line);
        if (!*s)
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = cairn_err_set(CAIRN_EINVAL, "%s: expected 'key = value'", origin);
            break;
        }
        *eq = '\0';
        rc = cairn_config_set(t, n, cfg, trim(s), trim(eq + 1), origin);
        if (rc != CAIRN_OK)
            break;
    }
    fclose(f);
    return rc;
}

static void usage(const struct cairn_opt *t, size_t n, const char *prog, const char *summary)
{
    printf("usage: %s [--config FILE] [--option value]...\n%s\n\noptions (also valid as 'key = value' in the config file):\n",
           prog, summary ? summary : "");
    for (size_t i = 0; i < n; i++)
        printf("  --%-24s %s (default: %s)\n", t[i].name, t[i].doc, t[i].dflt ? t[i].dflt : "unset");
}

int cairn_config_parse_args(const struct cairn_opt *t, size_t n, void *cfg, int argc, char **argv,
                            const char *prog, const char *summary)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(t, n, prog, summary);
            return CAIRN_ECANCELED;
        }
        if (!strcmp(argv[i], "--config") || !strncmp(argv[i], "--config=", 9)) {
            const char *p = argv[i][8] == '=' ? argv[i] + 9 : (i + 1 < argc ? argv[++i] : NULL);
            if (!p)
                return cairn_err_set(CAIRN_EINVAL, "--config takes a file");
            CAIRN_FORWARD_IF_ERROR(cairn_config_load_file(t, n, cfg, p));
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--config")) {
            i++;
            continue;
        }
        if (!strncmp(a, "--config=", 9))
            continue;
        if (strncmp(a, "--", 2) != 0)
            return cairn_err_set(CAIRN_EINVAL, "unexpected argument '%s' (options are --name value)", a);
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const struct cairn_opt *o = find(t, n, name, len);
        if (!o)
            return cairn_err_set(CAIRN_EINVAL, "unknown option '--%.*s' (see --help)", (int)len, name);
        char origin[300];
        snprintf(origin, sizeof(origin), "option --%s", o->name);
        const char *val;
        if (eq)
            val = eq + 1;
        else if (o->type == CAIRN_OPT_BOOL && (i + 1 >= argc || !strncmp(argv[i + 1], "--", 2)))
            val = "true";
        else if (i + 1 < argc)
            val = argv[++i];
        else
            return cairn_err_set(CAIRN_EINVAL, "option --%s needs a value", o->name);
        CAIRN_FORWARD_IF_ERROR(cairn_config_set(t, n, cfg, o->name, val, origin));
    }
    return CAIRN_OK;
}

void cairn_config_release(const struct cairn_opt *t, size_t n, void *cfg)
{
    for (size_t i = 0; i < n; i++)
        if (t[i].type == CAIRN_OPT_STR)
            CAIRN_FREE(*(char **)((char *)cfg + t[i].offset));
}

void cairn_config_write_example(const struct cairn_opt *t, size_t n, FILE *f, const char *title)
{
    fprintf(f, "# %s\n#\n# Every setting is also a flag: --name value (flags win over this file).\n"
               "# Durations: 250ms, 5s, 2m, 1h, 7d (a bare number is seconds).\n\n", title);
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "# %s\n", t[i].doc);
        if (t[i].dflt)
            fprintf(f, "%s = %s\n\n", t[i].name, t[i].dflt);
        else
            fprintf(f, "# %s =\n\n", t[i].name);
    }
}
