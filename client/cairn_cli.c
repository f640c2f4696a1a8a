/*
 * cairn: the command-line client of a cairn cluster (DESIGN §7), a thin layer
 * over libcairn (cairn/cairn.h).
 *
 * Why it looks like this
 *   - noun-verb commands; every option, and --json, is accepted anywhere on the
 *     line (before or after the command words), so scripts can prepend flags.
 *   - Output contract (DESIGN §7, cluster.md): without --json, a created
 *     object's id (or the one value asked for) alone on stdout's last line and
 *     errors as "cairn: NAME: message" on stderr; with --json exactly one JSON
 *     object on stdout, errors as {"error": {"code", "name", "message"}}.
 *     Exit status 0, or the cairn error number (cairn/err.h). Created ids go
 *     in "id" (restore: also all of them in "ids", one a line without
 *     --json); commands that create nothing print what they acted on (rm,
 *     terminate: the id; mount, unmount: the path).
 *   - The cluster is found through CAIRN_* variables (libcairn reads them);
 *     commands that need no cluster (keygen, help) never look at them.
 *   - Keys (--key-file, CSEK): the file is read as raw bytes (at most 4096
 *     read) into guarded memory (cairn_secret_read_file) and checked with
 *     cairn_csek_validate before any connection, so an empty, short or long
 *     key gets that function's exact message with EINVAL (1), the code the
 *     coordinator gives for the same refusal. Before reading, core dumps are
 *     switched off for the process (RLIMIT_CORE 0 and not dumpable: the key
 *     is also in the request's buffers for a moment). The key never appears in
 *     any output, --json included; it is wiped when the command ends.
 *   - Long jobs (snapshot-fs, mount, snapshot-dir, snapshot, restore) show a
 *     progress line on stderr when it is a terminal and --json is not given.
 *   - `sandbox exec` streams the command's output to our stdout/stderr as it
 *     is produced and exits with the command's exit code (the cairn error
 *     number only when the call itself failed); the words after `--` are the
 *     command, so its options never reach our parser.
 *
 * --wait: `--wait` alone waits until the job finished; `--wait MS` (digits:
 * milliseconds) or `--wait 30s` (a duration, cairn/config.h) bounds the wait.
 */
#include "cairn/prelude.h"

#include "cairn/cairn.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/config.h"
#include "client_json.h"

#include "cairn/crypto.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORDS 300 /* command words, and the words of `sandbox exec SB CMD ARGS` */
#define MAX_ENV 256
#define KEY_FILE_MAX 4096 /* bytes of a --key-file read at most (a key is 16..512) */
#define RESTORE_COUNT_MAX 256 /* the wire model's limit per request */

enum opt_bits {
    O_OUT = 1 << 0,
    O_PUBLIC = 1 << 1,
    O_FORCE = 1 << 2,
    O_TOKEN_OUT = 1 << 3,
    O_PARAM = 1 << 4,
    O_WORKER = 1 << 5,
    O_WAIT = 1 << 6,
    O_REQ_ID = 1 << 7,
    O_COUNT = 1 << 8,
    O_NAME = 1 << 9,
    O_APP = 1 << 10,
    O_IMAGE = 1 << 11,
    O_ENABLE_SNAPSHOT = 1 << 12,
    O_GPU = 1 << 13,
    O_ENV = 1 << 14,
    O_WORKDIR = 1 << 15,
    O_TTL = 1 << 16,
    O_ALL = 1 << 17,
    O_KEY_FILE = 1 << 18,
};

struct cli {
    bool json;
    bool help;
    unsigned used; /* enum opt_bits given */
    const char *words[MAX_WORDS];
    size_t nwords;
    const char *out, *token_out, *worker, *req_id, *timeout, *count, *window;
    const char *name, *app, *image, *gpu, *workdir, *ttl, *key_file;
    const char *env[MAX_ENV];
    size_t nenv;
    char **after_dd; /* the words after `--` (a sandbox's command) */
    size_t nafter_dd;
    bool dashdash;   /* `--` was given */
    bool timeout_is_cmd; /* sandbox exec: --timeout is the command's, not the call's */
    bool wait;
    const char *wait_val; /* NULL: until finished */
    struct cairn_params *params;
    char cmd[64]; /* "job submit", for messages */
};

static const char usage_text[] =
    "usage: cairn [--json] [--timeout MS] COMMAND [ARGS]\n"
    "\n"
    "  keygen --out FILE [--force]          write a new key pair file (mode 0600); prints its public key\n"
    "  keygen --public KEYPAIR [OUT]        print the public key of a key pair file; write it to OUT if given\n"
    "  ping                                 check that the coordinator answers (no app needed)\n"
    "  cluster status                       workers: id, addr, alive, chunks, bytes, sandboxes, last seen\n"
    "  app create NAME [--token-out FILE]   admin: create an app; prints its token (hex), or writes it\n"
    "                                       to FILE (mode 0600)\n"
    "  job submit KIND [--param k=v]... [--param-str k=v]... [--worker W] [--req-id R] [--wait [MS]]\n"
    "                                       start a job; prints its id, or its result with --wait\n"
    "  job submit KIND --count N [--window W] [--param k=v]...\n"
    "                                       N jobs, W in flight (default 16), each waited for; prints\n"
    "                                       jobs/s and latencies (the dispatch benchmark)\n"
    "  job get JOB [--wait [MS]]            state of a job (and its result once it succeeded)\n"
    "  admin clock advance DUR              admin, test clusters: move the coordinator's clock (29d, 12h)\n"
    "\n"
    "  image import PATH|TARBALL [--name N] a directory (sent as a tar) or a tarball (tar, tar.gz, tar.zst,\n"
    "                                       ...) as a base image; prints its id (im-...)\n"
    "  image ls | show ID|NAME | rm ID      the app's images\n"
    "  sandbox create [--image ID|NAME] [--enable-snapshot] [--gpu N] [--worker W] [--env K=V]...\n"
    "                 [--workdir D] [-- CMD ARGS...]\n"
    "                                       start a sandbox (default image: the app's image named\n"
    "                                       'default'; default CMD: sleep forever); prints its id (sb-...)\n"
    "  sandbox exec SB [--timeout DUR] [--env K=V]... [--workdir D] -- CMD [ARGS...]\n"
    "                                       run CMD in SB: its stdout and stderr stream to ours and its\n"
    "                                       exit code is ours; our stdin goes to it when it is not a\n"
    "                                       terminal (64 KiB at most); --timeout kills CMD (exit 137).\n"
    "                                       With --json: {\"exit_code\", \"stdout\", \"stderr\"}, exit 0\n"
    "  sandbox snapshot-fs SB [--ttl DUR]   filesystem snapshot (SB keeps running); prints the image id,\n"
    "                                       and the pause on stderr\n"
    "  sandbox mount SB PATH [IMAGE] [--key-file F]\n"
    "                                       mount IMAGE (id or name; none: an empty directory) at PATH\n"
    "                                       (absolute, not /) in SB, writable; a CSEK image needs its key\n"
    "  sandbox unmount SB PATH              remove a mount: what was below PATH shows again\n"
    "  sandbox snapshot-dir SB PATH [--key-file F] [--ttl DUR]\n"
    "                                       snapshot a directory mounted with 'sandbox mount' into an\n"
    "                                       image; prints its id (im-...). With --key-file: encrypted\n"
    "                                       with that key (CSEK), needed again to mount it. Kept 30 days\n"
    "                                       after its last use, or --ttl DUR after now\n"
    "  sandbox snapshot SB                  memory snapshot (processes, memory, files, mounts); SB must\n"
    "                                       have been created with --enable-snapshot and is terminated;\n"
    "                                       prints its id (sn-...), kept 7 days\n"
    "  sandbox restore SN [--count N] [--worker W]\n"
    "                                       N clones (default 1, at most 256) of memory snapshot SN;\n"
    "                                       prints their ids (sb-...), one a line\n"
    "  sandbox ls [--all] | terminate SB    the app's sandboxes (--all: terminated ones too); stop one\n"
    "  snapshot ls | show SN | rm SN        the app's memory snapshots\n"
    "\n"
    "  --json            print exactly one JSON object on stdout (errors too); accepted anywhere\n"
    "  --app A           image and sandbox commands: act in app A (CAIRN_TOKEN_FILE / CAIRN_TOKEN\n"
    "                    must then hold A's token)\n"
    "  --param k=v       123 is a number, true/false a bool, [a,b] an array of strings, else a string;\n"
    "                    --param-str k=v always a string\n"
    "  --wait [MS]       wait until the job finished; MS (or 30s, 2m) bounds the wait\n"
    "  --key-file F      a customer-supplied encryption key (CSEK): the file's raw bytes, 16..512 of\n"
    "                    them; never printed, never stored by cairn: keep it, without it the data is lost\n"
    "  --ttl DUR         30s, 5m, 2h, 7d: the snapshot expires that long after now\n"
    "  --timeout MS      per-call deadline (default CAIRN_TIMEOUT_MS or 10000); for sandbox exec, the\n"
    "                    command's time limit as a duration (30s, 5m)\n"
    "\n"
    "environment (printed by `deploy/local-cluster.sh up`): CAIRN_COORDINATOR, CAIRN_COORDINATOR_KEY,\n"
    "CAIRN_CLIENT_KEY, CAIRN_APP, CAIRN_TOKEN_FILE (or CAIRN_TOKEN), CAIRN_ADMIN_TOKEN_FILE, CAIRN_TIMEOUT_MS\n"
    "exit status: 0, or the cairn error number: 1 EINVAL (bad argument, key of a bad size), 3 EIO,\n"
    "4 ECORRUPT, 5 ENOTFOUND (also expired images and snapshots, a missing key file), 6 EEXIST (a mount\n"
    "at that path), 7 EAUTH, 8 EKEY (missing or wrong encryption key), 10 ETOOBIG, 11 EUNSUPPORTED\n"
    "(e.g. memory snapshot of a sandbox without --enable-snapshot), 12 EPERM, 14 ETIMEDOUT, 15 EPROTO,\n"
    "19 EBUSY (an exec still runs), 20 EINTERNAL, 21 EUNAVAILABLE (no live worker fits); sandbox exec\n"
    "exits with the command's exit code once the command ran\n";

/* ---- output ---------------------------------------------------------------------------------- */

/*
 * Print a JSON buffer as one line on stdout and return exit_rc; build_rc is the
 * first error of building it (then nothing is printed and that error is returned).
 */
static int emit_json_rc(struct cairn_buf *b, int build_rc, int exit_rc)
{
    int rc = build_rc ? build_rc : cairn__json_finish(b);
    if (rc == CAIRN_OK) {
        fwrite(b->data, 1, b->len, stdout);
        fputc('\n', stdout);
    }
    if (b->data)
        explicit_bzero(b->data, b->cap); /* may hold a token */
    cairn_buf_release(b);
    if (rc != CAIRN_OK) {
        fprintf(stderr, "cairn: %s: cannot format the output: %s\n", cairn_err_name(rc), cairn_err_msg());
        return rc;
    }
    return exit_rc;
}

static int emit_json(struct cairn_buf *b, int build_rc) { return emit_json_rc(b, build_rc, CAIRN_OK); }

/* Write the "error" member (no braces). */
static int json_error_member(struct cairn_buf *b, int code, const char *msg, bool first)
{
    int rc = cairn__json_key(b, "error", first);
    rc = rc ? rc : cairn__json_raw(b, "{");
    rc = rc ? rc : cairn__json_key(b, "code", true);
    rc = rc ? rc : cairn__json_i64(b, code);
    rc = rc ? rc : cairn__json_key(b, "name", false);
    rc = rc ? rc : cairn__json_cstr(b, cairn_err_name(code));
    rc = rc ? rc : cairn__json_key(b, "message", false);
    rc = rc ? rc : cairn__json_cstr(b, msg);
    return rc ? rc : cairn__json_raw(b, "}");
}

/* Report an error and return the exit status. */
static int fail_msg(const struct cli *cl, int code, const char *msg)
{
    if (code == CAIRN_OK)
        code = CAIRN_EINTERNAL;
    if (!msg || !*msg)
        msg = cairn_strerror(code);
    if (cl && cl->json) {
        struct cairn_buf b;
        cairn_buf_init(&b, 0);
        int rc = cairn__json_raw(&b, "{");
        rc = rc ? rc : json_error_member(&b, code, msg, true);
        rc = rc ? rc : cairn__json_raw(&b, "}");
        if (rc == CAIRN_OK)
            return emit_json_rc(&b, rc, code);
        cairn_buf_release(&b);
    }
    fprintf(stderr, "cairn: %s: %s\n", cairn_err_name(code), msg);
    return code;
}

static int fail(const struct cli *cl, int code) { return fail_msg(cl, code, cairn_err_msg()); }

static int failf(const struct cli *cl, int code, const char *fmt, ...) CAIRN_PRINTF(3, 4);
static int failf(const struct cli *cl, int code, const char *fmt, ...)
{
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return fail_msg(cl, code, msg);
}

/* ---- argument parsing ------------------------------------------------------------------------ */

struct optdef {
    const char *name;
    int arity; /* 0 flag, 1 value, 2 optional value (taken when it starts with a digit) */
    unsigned bit;
};

static const struct optdef optdefs[] = {
    {"--json", 0, 0},        {"--help", 0, 0},          {"-h", 0, 0},
    {"--timeout", 1, 0},     {"--out", 1, O_OUT},       {"--public", 0, O_PUBLIC},
    {"--force", 0, O_FORCE}, {"--token-out", 1, O_TOKEN_OUT}, {"--param", 1, O_PARAM},
    {"--param-str", 1, O_PARAM}, {"--worker", 1, O_WORKER}, {"--wait", 2, O_WAIT},
    {"--req-id", 1, O_REQ_ID}, {"--count", 1, O_COUNT}, {"--window", 1, O_COUNT},
    {"--name", 1, O_NAME},   {"--app", 1, O_APP},       {"--image", 1, O_IMAGE},
    {"--enable-snapshot", 0, O_ENABLE_SNAPSHOT}, {"--gpu", 1, O_GPU}, {"--env", 1, O_ENV},
    {"--workdir", 1, O_WORKDIR}, {"--ttl", 1, O_TTL},  {"--all", 0, O_ALL},
    {"--key-file", 1, O_KEY_FILE},
};

/* Parse argv into cl. On error returns the exit status (the error already printed). */
static int parse_args(struct cli *cl, int argc, char **argv)
{
    bool only_words = false;
    /* --json decides how errors print, so find it before reporting anything */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            break;
        if (!strcmp(argv[i], "--json"))
            cl->json = true;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_words)
            break;
        if (a[0] != '-' || !strcmp(a, "-")) {
            if (cl->nwords >= MAX_WORDS)
                return failf(cl, CAIRN_EINVAL, "too many arguments (at '%s'); see cairn --help", a);
            cl->words[cl->nwords++] = a;
            continue;
        }
        if (!strcmp(a, "--")) {
            only_words = true;
            cl->dashdash = true;
            cl->after_dd = argv + i + 1;
            cl->nafter_dd = (size_t)(argc - i - 1);
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        const struct optdef *d = NULL;
        for (size_t k = 0; k < CAIRN_ARRAY_LEN(optdefs); k++)
            if (strlen(optdefs[k].name) == nlen && !strncmp(optdefs[k].name, a, nlen))
                d = &optdefs[k];
        if (!d)
            return failf(cl, CAIRN_EINVAL, "unknown option '%.*s'; see cairn --help", (int)nlen, a);
        const char *val = NULL;
        if (eq) {
            if (d->arity == 0)
                return failf(cl, CAIRN_EINVAL, "option '%.*s' takes no value", (int)nlen, a);
            val = eq + 1;
        } else if (d->arity == 1) {
            if (i + 1 >= argc)
                return failf(cl, CAIRN_EINVAL, "option '%s' needs a value", a);
            val = argv[++i];
        } else if (d->arity == 2 && i + 1 < argc && argv[i + 1][0] >= '0' && argv[i + 1][0] <= '9') {
            val = argv[++i];
        }
        cl->used |= d->bit;
        if (!strcmp(d->name, "--json")) {
            cl->json = true;
        } else if (!strcmp(d->name, "--help") || !strcmp(d->name, "-h")) {
            cl->help = true;
        } else if (!strcmp(d->name, "--timeout")) {
            cl->timeout = val;
        } else if (d->bit == O_OUT) {
            cl->out = val;
        } else if (d->bit == O_TOKEN_OUT) {
            cl->token_out = val;
        } else if (d->bit == O_WORKER) {
            cl->worker = val;
        } else if (d->bit == O_REQ_ID) {
            cl->req_id = val;
        } else if (!strcmp(d->name, "--count")) {
            cl->count = val;
        } else if (!strcmp(d->name, "--window")) {
            cl->window = val;
        } else if (d->bit == O_WAIT) {
            cl->wait = true;
            cl->wait_val = val;
        } else if (d->bit == O_NAME) {
            cl->name = val;
        } else if (d->bit == O_APP) {
            cl->app = val;
        } else if (d->bit == O_IMAGE) {
            cl->image = val;
        } else if (d->bit == O_GPU) {
            cl->gpu = val;
        } else if (d->bit == O_WORKDIR) {
            cl->workdir = val;
        } else if (d->bit == O_TTL) {
            cl->ttl = val;
        } else if (d->bit == O_KEY_FILE) {
            cl->key_file = val;
        } else if (d->bit == O_ENV) {
            if (cl->nenv >= MAX_ENV)
                return failf(cl, CAIRN_EINVAL, "at most %d --env options", MAX_ENV);
            const char *veq = strchr(val, '=');
            if (!veq || veq == val)
                return failf(cl, CAIRN_EINVAL, "--env '%s' is not NAME=value", val);
            cl->env[cl->nenv++] = val;
        } else if (d->bit == O_PARAM) {
            if (!cl->params && !(cl->params = cairn_params_new()))
                return fail(cl, CAIRN_ENOMEM);
            int rc = cairn_params_parse_kv(cl->params, val, !strcmp(d->name, "--param-str"));
            if (rc != CAIRN_OK)
                return fail(cl, rc);
        }
    }
    return CAIRN_OK;
}

/* Refuse options the command does not take; check the word count. */
static int check_cmd(const struct cli *cl, unsigned allowed, size_t min_words, size_t max_words)
{
    unsigned extra = cl->used & ~allowed;
    if (extra) {
        for (size_t k = 0; k < CAIRN_ARRAY_LEN(optdefs); k++)
            if (optdefs[k].bit & extra)
                return failf(cl, CAIRN_EINVAL, "'%s' takes no %s option; see cairn --help", cl->cmd, optdefs[k].name);
    }
    if (cl->nwords < min_words)
        return failf(cl, CAIRN_EINVAL, "'%s' needs more arguments; see cairn --help", cl->cmd);
    if (cl->nwords > max_words)
        return failf(cl, CAIRN_EINVAL, "'%s': unexpected argument '%s'; see cairn --help", cl->cmd,
                     cl->words[max_words]);
    return CAIRN_OK;
}

/* --wait value into ms (CAIRN_WAIT_FOREVER when absent). */
static int parse_wait(const struct cli *cl, uint32_t *ms)
{
    *ms = CAIRN_WAIT_FOREVER;
    if (!cl->wait_val)
        return CAIRN_OK;
    const char *v = cl->wait_val;
    uint64_t x = 0;
    if (v[0] && strspn(v, "0123456789") == strlen(v)) {
        errno = 0;
        x = strtoull(v, NULL, 10);
        if (errno)
            x = UINT64_MAX;
    } else if (cairn_duration_parse(v, &x) != CAIRN_OK) {
        return failf(cl, CAIRN_EINVAL, "--wait '%s': expected milliseconds or a duration like 30s", v);
    }
    if (x >= CAIRN_WAIT_FOREVER)
        return failf(cl, CAIRN_EINVAL, "--wait '%s' is too long", v);
    *ms = (uint32_t)x;
    return CAIRN_OK;
}

/* ---- commands -------------------------------------------------------------------------------- */

static int open_client(const struct cli *cl, struct cairn_client **c)
{
    /* --app A: act in app A (with the token the environment gives: that app's) */
    if (cl->app && setenv("CAIRN_APP", cl->app, 1) != 0)
        return failf(cl, CAIRN_ENOMEM, "cannot set CAIRN_APP");
    int rc = cairn_client_new_from_env(c);
    if (rc != CAIRN_OK)
        return fail(cl, rc);
    if (cl->timeout && !cl->timeout_is_cmd) {
        char *end = NULL;
        errno = 0;
        unsigned long v = strtoul(cl->timeout, &end, 10);
        if (errno || !end || *end || cl->timeout[0] == '-' || v < 1 || v > 3600000) {
            cairn_client_destroy(c);
            return failf(cl, CAIRN_EINVAL, "--timeout '%s' is not a number of milliseconds (1..3600000)", cl->timeout);
        }
        cairn_client_timeout_set(*c, (unsigned)v);
    }
    return CAIRN_OK;
}

static int cmd_keygen(struct cli *cl)
{
    char pub[41];
    int rc;
    const char *file;
    if (cl->used & O_PUBLIC) {
        rc = check_cmd(cl, O_PUBLIC, 2, 3);
        if (rc)
            return rc;
        file = cl->nwords == 3 ? cl->words[2] : NULL;
        rc = cairn_key_public_export(cl->words[1], file, pub);
    } else {
        rc = check_cmd(cl, O_OUT | O_FORCE, 1, 1);
        if (rc)
            return rc;
        if (!cl->out)
            return failf(cl, CAIRN_EINVAL, "keygen needs --out FILE (or --public KEYPAIR [OUT])");
        file = cl->out;
        rc = cairn_keypair_generate(file, cl->used & O_FORCE, pub);
    }
    if (rc != CAIRN_OK)
        return fail(cl, rc);
    if (!cl->json) {
        printf("%s\n", pub);
        return CAIRN_OK;
    }
    struct cairn_buf b;
    cairn_buf_init(&b, 0);
    rc = cairn__json_raw(&b, "{");
    rc = rc ? rc : cairn__json_key(&b, "public_key", true);
    rc = rc ? rc : cairn__json_cstr(&b, pub);
    if (file) {
        rc = rc ? rc : cairn__json_key(&b, "file", false);
        rc = rc ? rc : cairn__json_cstr(&b, file);
    }
    rc = rc ? rc : cairn__json_raw(&b, "}");
    return emit_json(&b, rc);
}

static int cmd_ping(struct cli *cl)
{
    int rc = check_cmd(cl, 0, 1, 1);
    if (rc)
        return rc;
    struct cairn_client *c = NULL;
    if ((rc = open_client(cl, &c)))
        return rc;
    struct cairn_ping_info pi;
    rc = cairn_ping(c, &pi);
    if (rc != CAIRN_OK) {
        rc = fail(cl, rc);
        goto out;
    }
    if (!cl->json) {
        printf("pong from %s: cairn %s, protocol %u, %.2f ms\n", cairn_client_endpoint(c), pi.version, pi.proto,
               (double)pi.rtt_ns / 1e6);
        goto out;
    }
    struct cairn_buf b;
    cairn_buf_init(&b, 0);
    rc = cairn__json_raw(&b, "{");
    rc = rc ? rc : cairn__json_key(&b, "endpoint", true);
    rc = rc ? rc : cairn__json_cstr(&b, cairn_client_endpoint(c));
    rc = rc ? rc : cairn__json_key(&b, "version", false);
    rc = rc ? rc : cairn__json_cstr(&b, pi.version);
    rc = rc ? rc : cairn__json_key(&b, "proto", false);
    rc = rc ? rc : cairn__json_u64(&b, pi.proto);
    rc = rc ? rc : cairn__json_key(&b, "now", false);
    rc = rc ? rc : cairn__json_i64(&b, pi.now_ns);
    rc = rc ? rc : cairn__json_key(&b, "rtt_us", false);
    rc = rc ? rc : cairn__json_u64(&b, pi.rtt_ns / 1000);
    rc = rc ? rc : cairn__json_raw(&b, "}");
    rc = emit_json(&b, rc);
out:
    cairn_client_destroy(&c);
    return rc;
}

static void fmt_bytes(char *out, size_t cap, uint64_t v)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double d = (double)v;
    size_t u = 0;
    while (d >= 1024 && u + 1 < CAIRN_ARRAY_LEN(units)) {
        d /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(out, cap, "%" PRIu64 " B", v);
    else
        snprintf(out, cap, "%.1f %s", d, units[u]);
}

static void fmt_ago(char *out, size_t cap, int64_t now_ns, int64_t then_ns)
{
    if (then_ns <= 0) {
        snprintf(out, cap, "never");
        return;
    }
    double s = (double)(now_ns - then_ns) / 1e9;
    if (s < 0)
        s = 0;
    if (s < 120)
        snprintf(out, cap, "%.1fs ago", s);
    else if (s < 7200)
        snprintf(out, cap, "%.0fm ago", s / 60);
    else if (s < 172800)
        snprintf(out, cap, "%.0fh ago", s / 3600);
    else
        snprintf(out, cap, "%.0fd ago", s / 86400);
}

static int status_json(const struct cairn_cluster_status *s)
{
    struct cairn_buf b;
    cairn_buf_init(&b, 0);
    int rc = cairn__json_raw(&b, "{");
    rc = rc ? rc : cairn__json_key(&b, "workers", true);
    rc = rc ? rc : cairn__json_raw(&b, "[");
    for (size_t i = 0; rc == CAIRN_OK && i < s->nworkers; i++) {
        const struct cairn_worker_info *w = &s->workers[i];
        rc = cairn__json_raw(&b, i ? ",{" : "{");
        rc = rc ? rc : cairn__json_key(&b, "id", true);
        rc = rc ? rc : cairn__json_cstr(&b, w->id);
        rc = rc ? rc : cairn__json_key(&b, "addr", false);
        rc = rc ? rc : cairn__json_cstr(&b, w->addr);
        rc = rc ? rc : cairn__json_key(&b, "alive", false);
        rc = rc ? rc : cairn__json_raw(&b, w->alive ? "true" : "false");
        rc = rc ? rc : cairn__json_key(&b, "chunks", false);
        rc = rc ? rc : cairn__json_u64(&b, w->chunks);
        rc = rc ? rc : cairn__json_key(&b, "bytes", false);
        rc = rc ? rc : cairn__json_u64(&b, w->bytes);
        rc = rc ? rc : cairn__json_key(&b, "sandboxes", false);
        rc = rc ? rc : cairn__json_u64(&b, w->sandboxes);
        rc = rc ? rc : cairn__json_key(&b, "last_seen", false);
        rc = rc ? rc : cairn__json_i64(&b, w->last_seen_ns);
        if (w->fingerprint[0]) {
            rc = rc ? rc : cairn__json_key(&b, "fingerprint", false);
            rc = rc ? rc : cairn__json_cstr(&b, w->fingerprint);
        }
        rc = rc ? rc : cairn__json_key(&b, "capacity", false);
        rc = rc ? rc : cairn__json_u64(&b, w->capacity);
        rc = rc ? rc : cairn__json_raw(&b, "}");
    }
    rc = rc ? rc : cairn__json_raw(&b, "]");
    rc = rc ? rc : cairn__json_key(&b, "alive", false);
    rc = rc ? rc : cairn__json_u64(&b, cairn_cluster_status_alive(s));
    rc = rc ? rc : cairn__json_key(&b, "epoch", false);
    rc = rc ? rc : cairn__json_u64(&b, s->epoch);
    rc = rc ? rc : cairn__json_key(&b, "replicas", false);
    rc = rc ? rc : cairn__json_u64(&b, s->replicas);
    rc = rc ? rc : cairn__json_key(&b, "now", false);
    rc = rc ? rc : cairn__json_i64(&b, s->now_ns);
    rc = rc ? rc : cairn__json_raw(&b, "}");
    return emit_json(&b, rc);
}

static void status_table(const struct cairn_cluster_status *s)
{
    int wid = 2, waddr = 4;
    for (size_t i = 0; i < s->nworkers; i++) {
        wid = CAIRN_MAX(wid, (int)strlen(s->workers[i].id));
        waddr = CAIRN_MAX(waddr, (int)strlen(s->workers[i].addr));
    }
    int64_t now = s->now_ns;
    if (!now) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    }
    printf("%-*s  %-*s  %-5s  %10s  %10s  %9s  %s\n", wid, "ID", waddr, "ADDR", "ALIVE", "CHUNKS", "BYTES",
           "SANDBOXES", "LAST SEEN");
    for (size_t i = 0; i < s->nworkers; i++) {
        const struct cairn_worker_info *w = &s->workers[i];
        char bytes[32], ago[32];
        fmt_bytes(bytes, sizeof(bytes), w->bytes);
        fmt_ago(ago, sizeof(ago), now, w->last_seen_ns);
        printf("%-*s  %-*s  %-5s  %10" PRIu64 "  %10s  %9" PRIu64 "  %s\n", wid, w->id, waddr, w->addr,
               w->alive ? "yes" : "no", w->chunks, bytes, w->sandboxes, ago);
    }
    printf("%zu of %zu workers alive, epoch %" PRIu64 ", replicas %u\n", cairn_cluster_status_alive(s), s->nworkers,
           s->epoch, s->replicas);
}

static int cmd_cluster_status(struct cli *cl)
{
    int rc = check_cmd(cl, 0, 2, 2);
    if (rc)
        return rc;
    struct cairn_client *c = NULL;
    struct cairn_cluster_status *s = NULL;
    if ((rc = open_client(cl, &c)))
        return rc;
    rc = cairn_cluster_status(c, &s);
    if (rc != CAIRN_OK)
        rc = fail(cl, rc);
    else if (cl->json)
        rc = status_json(s);
    else
        status_table(s);
    cairn_cluster_status_free(&s);
    cairn_client_destroy(&c);
    return rc;
}

static int cmd_app_create(struct cli *cl)
{
    int rc = check_cmd(cl, O_TOKEN_OUT, 3, 3);
    if (rc)
        return rc;
    struct cairn_client *c = NULL;
    if ((rc = open_client(cl, &c)))
        return rc;
    const char *name = cl->words[2];
    uint8_t tok[CAIRN_TOKEN_MAX];
    size_t len = 0;
    char hex[2 * CAIRN_TOKEN_MAX + 2];
    rc = cairn_app_create(c, name, tok, &len);
    if (rc != CAIRN_OK) {
        rc = fail(cl, rc);
        goto out;
    }
    cairn_hex_encode(hex, tok, len);
    if (cl->token_out) {
        size_t n = strlen(hex);
        hex[n] = '\n';
        rc = cairn_file_replace_atomic(cl->token_out, hex, n + 1, 0600);
        hex[n] = '\0';
        if (rc != CAIRN_OK) {
            rc = failf(cl, rc, "app '%s' was created but its token could not be written to '%s' (%s); "
                               "the token is lost: create another app", name, cl->token_out, cairn_err_msg());
            goto out;
        }
    }
    if (!cl->json) {
        printf("%s\n", cl->token_out ? name : hex);
        goto out;
    }
    struct cairn_buf b;
    cairn_buf_init(&b, 0);
    rc = cairn__json_raw(&b, "{");
    rc = rc ? rc : cairn__json_key(&b, "id", true);
    rc = rc ? rc : cairn__json_cstr(&b, name);
    rc = rc ? rc : cairn__json_key(&b, "app", false);
    rc = rc ? rc : cairn__json_cstr(&b, name);
    if (cl->token_out) {
        rc = rc ? rc : cairn__json_key(&b, "token_file", false);
        rc = rc ? rc : cairn__json_cstr(&b, cl->token_out);
    } else {
        rc = rc ? rc : cairn__json_key(&b, "token", false);
        rc = rc ? rc : cairn__json_cstr(&b, hex);
    }
    rc = rc ? rc : cairn__json_raw(&b, "}");
    rc = emit_json(&b, rc);
out:
    explicit_bzero(tok, sizeof(tok));
    explicit_bzero(hex, sizeof(hex));
    cairn_client_destroy(&c);
    return rc;
}

/* Print a job (json or text) and return the exit status: a failed job exits with its code. */
static int print_job(const struct cli *cl, const struct cairn_job *j, bool result_only)
{
    if (!cl->json) {
        if (j->state == CAIRN_JOB_FAILED)
            return failf(cl, j->err_code, "job %s failed: %s", j->id, j->err_msg);
        if (result_only && j->state == CAIRN_JOB_SUCCEEDED) {
            printf("%s\n", j->result_json ? j->result_json : "{}");
            return CAIRN_OK;
        }
        if (result_only) {
            printf("%s\n", j->id);
            return CAIRN_OK;
        }
        printf("%s %s", j->id, j->state_name);
        if (j->worker[0])
            printf(" on %s", j->worker);
        if (j->total)
            printf(" (%" PRIu64 "/%" PRIu64 ")", j->done, j->total);
        printf("\n");
        if (j->state == CAIRN_JOB_SUCCEEDED)
            printf("%s\n", j->result_json ? j->result_json : "{}");
        return CAIRN_OK;
    }
    struct cairn_buf b;
    cairn_buf_init(&b, 0);
    int rc = cairn__json_raw(&b, "{");
    rc = rc ? rc : cairn__json_key(&b, "id", true);
    rc = rc ? rc : cairn__json_cstr(&b, j->id);
    if (j->kind[0]) {
        rc = rc ? rc : cairn__json_key(&b, "kind", false);
        rc = rc ? rc : cairn__json_cstr(&b, j->kind);
    }
    rc = rc ? rc : cairn__json_key(&b, "state", false);
    rc = rc ? rc : cairn__json_cstr(&b, j->state_name);
    if (j->worker[0]) {
        rc = rc ? rc : cairn__json_key(&b, "worker", false);
        rc = rc ? rc : cairn__json_cstr(&b, j->worker);
    }
    if (j->total || j->done) {
        rc = rc ? rc : cairn__json_key(&b, "done", false);
        rc = rc ? rc : cairn__json_u64(&b, j->done);
        rc = rc ? rc : cairn__json_key(&b, "total", false);
        rc = rc ? rc : cairn__json_u64(&b, j->total);
    }
    if (j->result_json) {
        rc = rc ? rc : cairn__json_key(&b, "result", false);
        rc = rc ? rc : cairn__json_raw(&b, j->result_json);
    }
    if (j->state == CAIRN_JOB_FAILED)
        rc = rc ? rc : json_error_member(&b, j->err_code, j->err_msg, false);
    rc = rc ? rc : cairn__json_raw(&b, "}");
    return emit_json_rc(&b, rc, j->state == CAIRN_JOB_FAILED ? j->err_code : CAIRN_OK);
}

static int parse_count(const struct cli *cl, const char *opt, const char *v, uint64_t max, size_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || !end || *end || v[0] == '-' || x < 1 || x > max)
        return failf(cl, CAIRN_EINVAL, "%s '%s' must be 1..%llu", opt, v, (unsigned long long)max);
    *out = (size_t)x;
    return CAIRN_OK;
}

/* job submit --count N: many jobs through cairn_job_submit_many, and the numbers. */
static int submit_count(struct cli *cl, struct cairn_client *c)
{
    size_t n = 0, window = 16;
    int rc = parse_count(cl, "--count", cl->count, 10000000, &n);
    if (!rc && cl->window)
        rc = parse_count(cl, "--window", cl->window, 4096, &window);
    if (rc)
        return rc;
    struct cairn_submit_stats st;
    int jrc = cairn_job_submit_many(c, cl->words[2], cl->params, n, window, &st);
    double secs = (double)st.elapsed_ns / 1e9;
    double rate = secs > 0 ? (double)(st.succeeded + st.failed) / secs : 0;
    if (jrc != CAIRN_OK && st.succeeded + st.failed == 0)
        return fail(cl, jrc);
    if (!cl->json) {
        printf("%" PRIu64 " of %zu jobs succeeded (%" PRIu64 " failed, %" PRIu64 " errors) in %.3f s: %.0f jobs/s, "
               "latency p50 %.2f ms, p99 %.2f ms, max %.2f ms (window %zu)\n",
               st.succeeded, n, st.failed, st.errors, secs, rate, (double)st.lat_p50_ns / 1e6,
               (double)st.lat_p99_ns / 1e6, (double)st.lat_max_ns / 1e6, window);
        return jrc == CAIRN_OK ? CAIRN_OK : fail(cl, jrc);
    }
    char msg[1100];
    snprintf(msg, sizeof(msg), "%s", cairn_err_msg());
    struct cairn_buf b;
    cairn_buf_init(&b, 0);
    rc = cairn__json_raw(&b, "{");
    rc = rc ? rc : cairn__json_key(&b, "jobs", true);
    rc = rc ? rc : cairn__json_u64(&b, n);
    rc = rc ? rc : cairn__json_key(&b, "window", false);
    rc = rc ? rc : cairn__json_u64(&b, window);
    rc = rc ? rc : cairn__json_key(&b, "succeeded", false);
    rc = rc ? rc : cairn__json_u64(&b, st.succeeded);
    rc = rc ? rc : cairn__json_key(&b, "failed", false);
    rc = rc ? rc : cairn__json_u64(&b, st.failed);
    rc = rc ? rc : cairn__json_key(&b, "errors", false);
    rc = rc ? rc : cairn__json_u64(&b, st.errors);
    rc = rc ? rc : cairn__json_key(&b, "elapsed_ns", false);
    rc = rc ? rc : cairn__json_u64(&b, st.elapsed_ns);
    rc = rc ? rc : cairn__json_key(&b, "jobs_per_s", false);
    rc = rc ? rc : cairn__json_u64(&b, (uint64_t)(rate + 0.5));
    rc = rc ? rc : cairn__json_key(&b, "p50_ns", false);
    rc = rc ? rc : cairn__json_u64(&b, st.lat_p50_ns);
    rc = rc ? rc : cairn__json_key(&b, "p99_ns", false);
    rc = rc ? rc : cairn__json_u64(&b, st.lat_p99_ns);
    rc = rc ? rc : cairn__json_key(&b, "max_ns", false);
    rc = rc ? rc : cairn__json_u64(&b, st.lat_max_ns);
    if (jrc != CAIRN_OK)
        rc = rc ? rc : json_error_member(&b, jrc, msg, false);
    rc = rc ? rc : cairn__json_raw(&b, "}");
    return emit_json_rc(&b, rc, jrc);
}

static int cmd_job_submit(struct cli *cl)
{
    int rc = check_cmd(cl, O_PARAM | O_WORKER | O_WAIT | O_REQ_ID | O_COUNT, 3, 3);
    if (rc)
        return rc;
    uint32_t wait = 0;
    if (cl->wait && (rc = parse_wait(cl, &wait)))
        return rc;
    if (cl->worker) {
        if (!cl->params && !(cl->params = cairn_params_new()))
            return fail(cl, CAIRN_ENOMEM);
        if ((rc = cairn_params_set_str(cl->params, "worker", cl->worker)))
            return fail(cl, rc);
    }
    if (cl->window && !cl->count)
        return failf(cl, CAIRN_EINVAL, "--window goes with --count");
    if (cl->count && (cl->req_id || cl->wait))
        return failf(cl, CAIRN_EINVAL, "--count takes no --req-id or --wait (every job gets its own id and is waited for)");
    struct cairn_client *c = NULL;
    struct cairn_job *j = NULL;
    if ((rc = open_client(cl, &c)))
        return rc;
    if (cl->count) {
        rc = submit_count(cl, c);
        cairn_client_destroy(&c);
        return rc;
    }
    rc = cairn_job_submit(c, cl->words[2], cl->params, cl->req_id, cl->wait ? wait : 0, &j);
    if (rc != CAIRN_OK)
        rc = fail(cl, rc);
    else
        rc = print_job(cl, j, true);
    cairn_job_free(&j);
    cairn_client_destroy(&c);
    return rc;
}

static int cmd_job_get(struct cli *cl)
{
    int rc = check_cmd(cl, O_WAIT, 3, 3);
    if (rc)
        return rc;
    uint32_t wait = 0;
    if (cl->wait && (rc = parse_wait(cl, &wait)))
        return rc;
    struct cairn_client *c = NULL;
    struct cairn_job *j = NULL;
    if ((rc = open_client(cl, &c)))
        return rc;
    rc = cairn_job_get(c, cl->words[2], cl->wait ? wait : 0, &j);
    if (rc != CAIRN_OK)
        rc = fail(cl, rc);
    else
        rc = print_job(cl, j, false);
    cairn_job_free(&j);
    cairn_client_destroy(&c);
    return rc;
}

static int cmd_clock_advance(struct cli *cl)
{
    int rc = check_cmd(cl, 0, 4, 4);
    if (rc)
        return rc;
    const char *dur = cl->words[3];
    uint64_t ms = 0;
    if (cairn_duration_parse(dur, &ms) != CAIRN_OK)
        return failf(cl, CAIRN_EINVAL, "'%s' is not a duration (e.g. 29d, 12h, 90s)", dur);
    if (ms < 1000 || ms % 1000)
        return failf(cl, CAIRN_EINVAL, "'%s': the clock moves by whole seconds, at least 1s", dur);
    struct cairn_client *c = NULL;
    if ((rc = open_client(cl, &c)))
        return rc;
    int64_t now = 0;
    rc = cairn_admin_clock_advance(c, ms / 1000, &now);
    cairn_client_destroy(&c);
    if (rc != CAIRN_OK)
        return fail(cl, rc);
    if (cl->json) {
        struct cairn_buf b;
        cairn_buf_init(&b, 0);
        rc = cairn__json_raw(&b, "{");
        rc = rc ? rc : cairn__json_key(&b, "advanced_s", true);
        rc = rc ? rc : cairn__json_u64(&b, ms / 1000);
        rc = rc ? rc : cairn__json_key(&b, "now", false);
        rc = rc ? rc : cairn__json_i64(&b, now);
        rc = rc ? rc : cairn__json_raw(&b, "}");
        return emit_json(&b, rc);
    }
    time_t t = (time_t)(now / 1000000000);
    struct tm tm;
    char when[64] = "?";
    if (gmtime_r(&t, &tm))
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    printf("coordinator clock advanced by %s, now %s\n", dur, when);
    return CAIRN_OK;
}

/* ---- JSON objects ---------------------------------------------------------------------------- */

/* A small writer for nested JSON objects: errors are sticky in rc, emitted once by jw_emit. */
struct jw {
    struct cairn_buf b;
    int rc;
    int depth;
    bool first[8];
};

static void jw_init(struct jw *w)
{
    memset(w, 0, sizeof(*w));
    cairn_buf_init(&w->b, 0);
    w->rc = cairn__json_raw(&w->b, "{");
    w->first[0] = true;
}

/* The key of the next member, or the comma before the next array element (k NULL). */
static void jw_key(struct jw *w, const char *k)
{
    bool first = w->first[w->depth];
    w->first[w->depth] = false;
    if (w->rc)
        return;
    if (k)
        w->rc = cairn__json_key(&w->b, k, first);
    else if (!first)
        w->rc = cairn__json_raw(&w->b, ",");
}

static void jw_raw(struct jw *w, const char *t)
{
    if (!w->rc)
        w->rc = cairn__json_raw(&w->b, t);
}

static void jw_str(struct jw *w, const char *k, const char *v)
{
    jw_key(w, k);
    if (!w->rc)
        w->rc = cairn__json_cstr(&w->b, v);
}

/* Only when not empty. */
static void jw_str_opt(struct jw *w, const char *k, const char *v)
{
    if (v && *v)
        jw_str(w, k, v);
}

static void jw_bytes(struct jw *w, const char *k, const uint8_t *p, size_t n)
{
    jw_key(w, k);
    if (!w->rc)
        w->rc = cairn__json_str(&w->b, (const char *)p, n);
}

static void jw_u64(struct jw *w, const char *k, uint64_t v)
{
    jw_key(w, k);
    if (!w->rc)
        w->rc = cairn__json_u64(&w->b, v);
}

static void jw_i64(struct jw *w, const char *k, int64_t v)
{
    jw_key(w, k);
    if (!w->rc)
        w->rc = cairn__json_i64(&w->b, v);
}

static void jw_bool(struct jw *w, const char *k, bool v)
{
    jw_key(w, k);
    jw_raw(w, v ? "true" : "false");
}

/* Open an object or array ('{' or '['), as member k or as the next array element (k NULL). */
static void jw_open(struct jw *w, const char *k, char kind)
{
    jw_key(w, k);
    jw_raw(w, kind == '[' ? "[" : "{");
    if (w->depth + 1 < (int)CAIRN_ARRAY_LEN(w->first))
        w->first[++w->depth] = true;
    else if (!w->rc)
        w->rc = CAIRN_EINTERNAL;
}

static void jw_close(struct jw *w, char kind)
{
    jw_raw(w, kind == '[' ? "]" : "}");
    if (w->depth > 0)
        w->depth--;
}

static int jw_emit(struct jw *w, int exit_rc)
{
    jw_raw(w, "}");
    return emit_json_rc(&w->b, w->rc, exit_rc);
}

/* ---- images and sandboxes: helpers ----------------------------------------------------------- */

/* "2026-05-07T10:11:12Z", or "-" for 0. */
static void fmt_time(char *out, size_t cap, int64_t ns)
{
    if (ns <= 0) {
        snprintf(out, cap, "-");
        return;
    }
    time_t t = (time_t)(ns / 1000000000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(out, cap, "?");
}

/* A duration option (30s, 2m, 1h, 7d; bare digits are seconds) into ms. */
static int parse_dur(const struct cli *cl, const char *opt, const char *v, uint64_t *ms)
{
    if (cairn_duration_parse(v, ms) != CAIRN_OK)
        return failf(cl, CAIRN_EINVAL, "%s '%s' is not a duration (e.g. 30s, 5m, 2h, 7d)", opt, v);
    return CAIRN_OK;
}

/* Import progress on a terminal: one line, rewritten at most 5 times a second. */
struct progress_line {
    uint64_t last_ns;
    bool shown;
    const char *stage;
};

static void progress_cb(void *arg, const char *stage, uint64_t done, uint64_t total)
{
    struct progress_line *p = arg;
    uint64_t now = cairn_now_mono_ns();
    bool stage_change = !p->stage || strcmp(p->stage, stage) != 0;
    if (!stage_change && now - p->last_ns < 200000000ull && !(total && done >= total))
        return;
    p->last_ns = now;
    p->stage = stage;
    char d[32], t[32];
    fmt_bytes(d, sizeof(d), done);
    if (!strcmp(stage, "upload")) {
        if (total) {
            fmt_bytes(t, sizeof(t), total);
            fprintf(stderr, "\r\033[Kuploading: %s of %s (%.0f%%)", d, t, 100.0 * (double)done / (double)total);
        } else {
            fprintf(stderr, "\r\033[Kuploading: %s", d);
        }
    } else if (total) {
        fprintf(stderr, "\r\033[Kimporting: %.0f%%", 100.0 * (double)done / (double)total);
    } else {
        fprintf(stderr, "\r\033[Kimporting...");
    }
    fflush(stderr);
    p->shown = true;
}

/* Job progress on a terminal (stderr) for the long sandbox calls: one line, rewritten each poll. */
struct job_progress {
    uint64_t t0_ns;
    bool shown;
};

static void job_progress_cb(void *arg, const char *stage, uint64_t done, uint64_t total)
{
    struct job_progress *p = arg;
    double secs = (double)(cairn_now_mono_ns() - p->t0_ns) / 1e9;
    char d[32], t[32];
    fmt_bytes(d, sizeof(d), done);
    fmt_bytes(t, sizeof(t), total);
    if (!strcmp(stage, "restore") && total) /* the group job counts clones */
        fprintf(stderr, "\r\033[K%s: %" PRIu64 " of %" PRIu64 " clones, %.0fs", stage, done, total, secs);
    else if (total)
        fprintf(stderr, "\r\033[K%s: %s of %s (%.0f%%), %.0fs", stage, d, t,
                100.0 * (double)CAIRN_MIN(done, total) / (double)total, secs);
    else if (done)
        fprintf(stderr, "\r\033[K%s: %s, %.0fs", stage, d, secs);
    else
        fprintf(stderr, "\r\033[K%s: running, %.0fs", stage, secs);
    fflush(stderr);
    p->shown = true;
}

/* Show progress of c's long calls when stderr is a terminal and --json is off. */
static void job_progress_start(const struct cli *cl, struct cairn_client *c, struct job_progress *p)
{
    memset(p, 0, sizeof(*p));
    p->t0_ns = cairn_now_mono_ns();
    if (!cl->json && isatty(2))
        cairn_client_progress_set(c, job_progress_cb, p);
}

static void job_progress_end(struct job_progress *p)
{
    if (p->shown)
        fputs("\r\033[K", stderr);
    p->shown = false;
}

/* ---- image commands -------------------------------------------------------------------------- */

static int cmd_image_import(struct cli *cl)
{
    int rc = check_cmd(cl, O_NAME | O_APP, 3, 3);
    if (rc)
        return rc;
    struct cairn_client *c = NULL;
    if ((rc = open_client(cl, &c)))
        return rc;
    struct progress_line pl;
    memset(&pl, 0, sizeof(pl));
    struct cairn_image_import_opts o = {.name = cl->name};
    if (!cl->json && isatty(2)) {
        o.progress = progress_cb;
        o.progress_arg = &pl;
    }
    struct cairn_image_import_result r;
    rc = cairn_image_import(c, cl->words[2], &o, &r);
    if (pl.shown)
        fputs("\r\033[K", stderr);
    if (rc != CAIRN_OK) {
        rc = fail(cl, rc);
        goto out;
    }
    if (!cl->json) {
        printf("%s\n", r.id);
        goto out;
    }
    struct jw w;
    jw_init(&w);
    jw_str(&w, "id", r.id);
    jw_str_opt(&w, "name", cl->name);
    jw_str(&w, "job", r.job);
    jw_u64(&w, "bytes", r.bytes);
    rc = jw_emit(&w, CAIRN_OK);
out:
    cairn_client_destroy(&c);
    return rc;
}

static void image_json(struct jw *w, const char *k, const struct cairn_image_info *im)
{
    jw_open(w, k, '{');
    jw_str(w, "id", im->id);
    jw_str(w, "kind", im->kind);
    jw_str_opt(w, "name", im->name);
    jw_str_opt(w, "parent", im->parent);
    jw_str_opt(w, "encryption", im->encryption);
    jw_i64(w, "created_at", im->created_at_ns);
    if (im->last_used_at_ns)
        jw_i64(w, "last_used_at", im->last_used_at_ns);
    if (im->expires_at_ns)
        jw_i64(w, "expires_at", im->expires_at_ns);
    jw_str_opt(w, "retention", im->retention);
    jw_u64(w, "size", im->size);
    jw_u64(w, "files", im->files);
    jw_u64(w, "stored", im->stored);
    jw_close(w, '}');
}

static int cmd_image_ls(struct cli *cl)
{
    int rc = check_cmd(cl, O_APP, 2, 2);
    if (rc)
        return rc;
    struct cairn_client *c = NULL;
    struct cairn_image_list *l = NULL;
    if ((rc = open_client(cl, &c)))
        return rc;
    rc = cairn_image_ls(c, NULL, &l);
    if (rc != CAIRN_OK) {
        rc = fail(cl, rc);
    } else if (cl->json) {
        struct jw w;
        jw_init(&w);
        jw_open(&w, "images", '[');
        for (size_t i = 0; i < l->n; i++)
            image_json(&w, NULL, &l->images[i]);
        jw_close(&w, '[');
        rc = jw_emit(&w, CAIRN_OK);
    } else {
        int wname = 4;
        for (size_t i = 0; i < l->n; i++)
            wname = CAIRN_MAX(wname, (int)strlen(l->images[i].name));
        printf("%-19s  %-4s  %-*s  %10s  %8s  %-20s  %-20s  %s\n", "ID", "KIND", wname, "NAME", "SIZE", "FILES",
               "CREATED", "EXPIRES", "PARENT");
        for (size_t i = 0; i < l->n; i++) {
            const struct cairn_image_info *im = &l->images[i];
            char size[32], created[32], expires[32];
            fmt_bytes(size, sizeof(size), im->size);
            fmt_time(created, sizeof(created), im->created_at_ns);
            if (im->expires_at_ns)
                fmt_time(expires, sizeof(expires), im->expires_at_ns);
            else
                snprintf(expires, sizeof(expires), "never");
            printf("%-19s  %-4s  %-*s  %10s  %8" PRIu64 "  %-20s  %-20s  %s\n", im->id, im->kind, wname,
                   im->name[0] ? im->name : "-", size, im->files, created, expires, im->parent[0] ? im->parent : "-");
        }
    }
    cairn_image_list_free(&l);
    cairn_client_destroy(&c);
    return rc;
}

static int cmd_image_show(struct cli *cl)
{
    int rc = check_cmd(cl, O_APP, 3, 3);
    if (rc)
        return rc;
    struct cairn_client *c = NULL;
    if ((rc = open_client(cl, &c)))
        return rc;
    char id[CAIRN_ID_MAX + 1];
    struct cairn_image_info im;
    rc = cairn_image_resolve(c, cl->words[2], id);
    if (rc == CAIRN_OK)
        rc = cairn_image_show(c, id, &im);
    if (rc != CAIRN_OK) {
        rc = fail(cl, rc);
    } else if (cl->json) {
        struct jw w;
        jw_init(&w);
        jw_str(&w, "id", im.id);
        jw_str(&w, "kind", im.kind);
        jw_str_opt(&w, "name", im.name);
        jw_str_opt(&w, "parent", im.parent);
        jw_str_opt(&w, "encryption", im.encryption);
        jw_i64(&w, "created_at", im.created_at_ns);
        if (im.last_used_at_ns)
            jw_i64(&w, "last_used_at", im.last_used_at_ns);
        if (im.expires_at_ns)
            jw_i64(&w, "expires_at", im.expires_at_ns);
        jw_str_opt(&w, "retention", im.retention);
        jw_u64(&w, "size", im.size);
        jw_u64(&w, "files", im.files);
        jw_u64(&w, "stored", im.stored);
        rc = jw_emit(&w, CAIRN_OK);
    } else {
        char t[40], size[32], stored[32];
        fmt_bytes(size, sizeof(size), im.size);
        fmt_bytes(stored, sizeof(stored), im.stored);
        printf("id:          %s\n", im.id);
        printf("kind:        %s\n", im.kind);
        printf("name:        %s\n", im.name[0] ? im.name : "-");
        printf("parent:      %s\n", im.parent[0] ? im.parent : "-");
        printf("encryption:  %s\n", im.encryption[0] ? im.encryption : "-");
        fmt_time(t, sizeof(t), im.created_at_ns);
        printf("created:     %s\n", t);
        fmt_time(t, sizeof(t), im.last_used_at_ns);
        printf("last used:   %s\n", t);
        if (im.expires_at_ns)
            fmt_time(t, sizeof(t), im.expires_at_ns);
        else
            snprintf(t, sizeof(t), "never");
        printf("expires:     %s\n", t);
        printf("retention:   %s\n", im.retention[0] ? im.retention : "-");
        printf("size:        %s (%" PRIu64 " bytes)\n", size, im.size);
        printf("files:       %" PRIu64 "\n", im.files);
        printf("stored:      %s\n", stored);
    }
    cairn_client_destroy(&c);
    return rc;
}

static int cmd_image_rm(struct cli *cl)
{
    int rc = check_cmd(cl, O_APP, 3, 3);
    if (rc)
        return rc;
    struct cairn_client *c = NULL;
    if ((rc = open_client(cl, &c)))
        return rc;
    rc = cairn_image_rm(c, cl->words[2]);
    cairn_client_destroy(&c);
    if (rc != CAIRN_OK)
        return fail(cl, rc);
    if (!cl->json) {
        printf("%s\n", cl->words[2]);
        return CAIRN_OK;
    }
    struct jw w;
    jw_init(&w);
    jw_str(&w, "id", cl->words[2]);
    jw_bool(&w, "removed", true);
    return jw_emit(&w, CAIRN_OK);
}

/* ---- sandbox commands ------------------------------------------------------------------------ */

static int cmd_sandbox_create(struct cli *cl)
{
    int rc = check_cmd(cl, O_IMAGE | O_ENABLE_SNAPSHOT | O_GPU | O_WORKER | O_ENV | O_WORKDIR | O_APP | O_REQ_ID, 2, 2);
    if (rc)
        return rc;
    struct cairn_sandbox_opts o = {
        .image = cl->image,
        .cmd = (const char *const *)cl->after_dd,
        .ncmd = cl->nafter_dd,
        .env = cl->env,
        .nenv = cl->nenv,
        .workdir = cl->workdir,
        .enable_snapshot = (cl->used & O_ENABLE_SNAPSHOT) != 0,
        .worker = cl->worker,
        .req_id = cl->req_id,
    };
    if (cl->dashdash && cl->nafter_dd == 0)
        return failf(cl, CAIRN_EINVAL, "sandbox create: no command after '--'");
    if (cl->gpu) {
        size_t g = 0;
        if (!strcmp(cl->gpu, "0"))
            g = 0;
        else if ((rc = parse_count(cl, "--gpu", cl->gpu, 16, &g)))
            return rc;
        o.gpu = (unsigned)g;
    }
    struct cairn_client *c = NULL;
    if ((rc = open_client(cl, &c)))
        return rc;
    struct cairn_sandbox_ref r;
    rc = cairn_sandbox_create(c, &o, &r);
    cairn_client_destroy(&c);
    if (rc != CAIRN_OK)
        return fail(cl, rc);
    if (!cl->json) {
        printf("%s\n", r.id);
        return CAIRN_OK;
    }
    struct jw w;
    jw_init(&w);
    jw_str(&w, "id", r.id);
    jw_str_opt(&w, "worker", r.worker);
    jw_str_opt(&w, "job", r.job);
    return jw_emit(&w, CAIRN_OK);
}

/* Write all of p to fd (the CLI's stdout or stderr), as produced. */
static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return cairn_err_set_errno(CAIRN_EIO, errno, "cannot write the command's %s",
                                       fd == 1 ? "stdout" : "stderr");
        p += w;
        n -= (size_t)w;
    }
    return CAIRN_OK;
}

static int exec_output(void *arg, int stream, const uint8_t *data, size_t len)
{
    (void)arg;
    return write_all(stream == 2 ? 2 : 1, data, len);
}

/* The CLI's stdin when it is not a terminal: at most CAIRN_EXEC_STDIN_MAX bytes. */
static int read_stdin(const struct cli *cl, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (isatty(0))
        return CAIRN_OK;
    size_t cap = CAIRN_EXEC_STDIN_MAX + 1;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return failf(cl, CAIRN_ENOMEM, "out of memory for stdin");
    size_t n = 0;
    while (n < cap) {
        ssize_t r = read(0, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EBADF) /* no stdin at all */
            break;
        if (r < 0) {
            int e = errno;
            free(buf);
            return failf(cl, CAIRN_EIO, "cannot read stdin: %s", strerror(e));
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n > CAIRN_EXEC_STDIN_MAX) {
        free(buf);
        return failf(cl, CAIRN_ETOOBIG,
                     "stdin holds more than %u bytes, the most an exec can pass (redirect it from a file or "
                     "/dev/null, or copy the data into the sandbox another way)",
                     CAIRN_EXEC_STDIN_MAX);
    }
    *out = buf;
    *len = n;
    return CAIRN_OK;
}

static int cmd_sandbox_exec(struct cli *cl)
{
    int rc = check_cmd(cl, O_ENV | O_WORKDIR | O_APP, 3, MAX_WORDS);
    if (rc)
        return rc;
    /* the command: after `--`, or (without it) the words after SB */
    const char *argv[MAX_WORDS + 256];
    size_t argc = 0;
    for (size_t i = 3; i < cl->nwords; i++)
        argv[argc++] = cl->words[i];
    if (argc && cl->dashdash)
        return failf(cl, CAIRN_EINVAL, "sandbox exec: unexpected '%s' before '--' (usage: cairn sandbox exec SB -- CMD "
                                       "[ARGS...])", cl->words[3]);
    for (size_t i = 0; i < cl->nafter_dd; i++) {
        if (argc >= 256)
            return failf(cl, CAIRN_EINVAL, "sandbox exec: at most 256 command words");
        argv[argc++] = cl->after_dd[i];
    }
    if (argc == 0)
        return failf(cl, CAIRN_EINVAL, "sandbox exec: no command (usage: cairn sandbox exec SB -- CMD [ARGS...])");
    struct cairn_exec_opts o = {.env = cl->env, .nenv = cl->nenv, .workdir = cl->workdir};
    if (cl->timeout && (rc = parse_dur(cl, "--timeout", cl->timeout, &o.timeout_ms)))
        return rc;
    uint8_t *in = NULL;
    if ((rc = read_stdin(cl, &in, &o.stdin_len)))
        return rc;
    o.stdin_data = in;
    struct cairn_client *c = NULL;
    if ((rc = open_client(cl, &c))) {
        free(in);
        return rc;
    }
    const char *sb = cl->words[2];
    if (cl->json) {
        struct cairn_exec_result *r = NULL;
        rc = cairn_sandbox_exec(c, sb, argv, argc, &o, &r);
        if (rc != CAIRN_OK) {
            rc = fail(cl, rc);
        } else {
            struct jw w;
            jw_init(&w);
            jw_i64(&w, "exit_code", r->exit_code);
            jw_bytes(&w, "stdout", r->out, r->out_len);
            jw_bytes(&w, "stderr", r->err, r->err_len);
            if (r->truncated)
                jw_bool(&w, "truncated", true);
            rc = jw_emit(&w, CAIRN_OK);
        }
        cairn_exec_result_free(&r);
    } else {
        int code = 0;
        rc = cairn_sandbox_exec_stream(c, sb, argv, argc, &o, exec_output, NULL, &code);
        if (rc != CAIRN_OK)
            rc = fail(cl, rc);
        else
            rc = code < 0 || code > 255 ? 255 : code;
    }
    free(in);
    cairn_client_destroy(&c);
    return rc;
}

static int cmd_sandbox_snapshot_fs(struct cli *cl)
{
    int rc = check_cmd(cl, O_TTL | O_APP | O_REQ_ID, 3, 3);
    if (rc)
        return rc;
    uint64_t ttl_ms = 0;
    if (cl->ttl && (rc = parse_dur(cl, "--ttl", cl->ttl, &ttl_ms)))
        return rc;
    if (cl->ttl && ttl_ms < 1000)
        return failf(cl, CAIRN_EINVAL, "--ttl '%s': at least 1s", cl->ttl);
    struct cairn_client *c = NULL;
    if ((rc = open_client(cl, &c)))
        return rc;
    struct job_progress jp;
    job_progress_start(cl, c, &jp);
    struct cairn_snapshot_fs_result r;
    rc = cairn_sandbox_snapshot_fs(c, cl->words[2], (ttl_ms + 999) / 1000, cl->req_id, &r);
    job_progress_end(&jp);
    cairn_client_destroy(&c);
    if (rc != CAIRN_OK)
        return fail(cl, rc);
    if (!cl->json) {
        fprintf(stderr, "pause: %" PRIu64 " ms\n", r.pause_ms);
        printf("%s\n", r.image);
        return CAIRN_OK;
    }
    struct jw w;
    jw_init(&w);
    jw_str(&w, "id", r.image);
    jw_str(&w, "sandbox", cl->words[2]);
    jw_u64(&w, "pause_ms", r.pause_ms);
    jw_str_opt(&w, "job", r.job);
    return jw_emit(&w, CAIRN_OK);
}

static int cmd_sandbox_ls(struct cli *cl)
{
    int rc = check_cmd(cl, O_ALL | O_APP, 2, 2);
    if (rc)
        return rc;
    struct cairn_client *c = NULL;
    struct cairn_sandbox_list *l = NULL;
    if ((rc = open_client(cl, &c)))
        return rc;
    rc = cairn_sandbox_ls(c, (cl->used & O_ALL) != 0, &l);
    if (rc != CAIRN_OK) {
        rc = fail(cl, rc);
    } else if (cl->json) {
        struct jw w;
        jw_init(&w);
        jw_open(&w, "sandboxes", '[');
        for (size_t i = 0; i < l->n; i++) {
            const struct cairn_sandbox_info *sb = &l->sandboxes[i];
            jw_open(&w, NULL, '{');
            jw_str(&w, "id", sb->id);
            jw_str(&w, "state", sb->state);
            jw_str_opt(&w, "worker", sb->worker);
            jw_str_opt(&w, "image", sb->image);
            jw_i64(&w, "created_at", sb->created_at_ns);
            jw_bool(&w, "enable_snapshot", sb->enable_snapshot);
            jw_u64(&w, "gpu", sb->gpu);
            jw_str_opt(&w, "restored_from", sb->restored_from);
            if (sb->nmounts) {
                jw_open(&w, "mounts", '[');
                for (size_t k = 0; k < sb->nmounts; k++) {
                    jw_open(&w, NULL, '{');
                    jw_str(&w, "path", sb->mounts[k].path);
                    jw_str_opt(&w, "image", sb->mounts[k].image);
                    jw_bool(&w, "csek", sb->mounts[k].csek);
                    jw_close(&w, '}');
                }
                jw_close(&w, '[');
            }
            jw_close(&w, '}');
        }
        jw_close(&w, '[');
        rc = jw_emit(&w, CAIRN_OK);
    } else {
        int wworker = 6;
        for (size_t i = 0; i < l->n; i++)
            wworker = CAIRN_MAX(wworker, (int)strlen(l->sandboxes[i].worker));
        printf("%-19s  %-10s  %-*s  %-19s  %s\n", "ID", "STATE", wworker, "WORKER", "IMAGE", "CREATED");
        for (size_t i = 0; i < l->n; i++) {
            const struct cairn_sandbox_info *sb = &l->sandboxes[i];
            char created[32];
            fmt_time(created, sizeof(created), sb->created_at_ns);
            printf("%-19s  %-10s  %-*s  %-19s  %s\n", sb->id, sb->state, wworker, sb->worker[0] ? sb->worker : "-",
                   sb->image[0] ? sb->image : "-", created);
        }
    }
    cairn_sandbox_list_free(&l);
    cairn_client_destroy(&c);
    return rc;
}

static int cmd_sandbox_terminate(struct cli *cl)
{
    int rc = check_cmd(cl, O_APP | O_REQ_ID, 3, 3);
    if (rc)
        return rc;
    struct cairn_client *c = NULL;
    if ((rc = open_client(cl, &c)))
        return rc;
    rc = cairn_sandbox_terminate(c, cl->words[2], cl->req_id);
    cairn_client_destroy(&c);
    if (rc != CAIRN_OK)
        return fail(cl, rc);
    if (!cl->json) {
        printf("%s\n", cl->words[2]);
        return CAIRN_OK;
    }
    struct jw w;
    jw_init(&w);
    jw_str(&w, "id", cl->words[2]);
    jw_str(&w, "state", "terminated");
    return jw_emit(&w, CAIRN_OK);
}

/* ---- mounts, directory and memory snapshots (issues 5, 6) ------------------------------------- */

/*
 * Keys must never reach a core file: the key is in guarded memory, but also
 * for a moment in the request's buffers (libcairn, ZeroMQ). No core at all
 * (RLIMIT_CORE 0 does not stop a core_pattern pipe; not dumpable does).
 */
static void no_core_dumps(void)
{
    struct rlimit rl = {0, 0};
    (void)setrlimit(RLIMIT_CORE, &rl);
    (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

/*
 * --key-file into *key (NULL without the option): raw bytes, at most
 * KEY_FILE_MAX read, checked with cairn_csek_validate (its message, EINVAL).
 * On error returns the exit status, the error printed (naming the file when
 * it cannot be read, never its content).
 */
static int read_key_file(const struct cli *cl, struct cairn_secret **key)
{
    *key = NULL;
    if (!cl->key_file)
        return CAIRN_OK;
    no_core_dumps();
    if (cairn_crypto_init() != CAIRN_OK)
        return fail(cl, CAIRN_EINTERNAL);
    int rc = cairn_secret_read_file(key, cl->key_file, 0, KEY_FILE_MAX);
    if (rc == CAIRN_EKEY) /* more than KEY_FILE_MAX bytes: the size rule, in cairn_csek_validate's words */
        return failf(cl, CAIRN_EINVAL, "encryption key is too long: more than %d bytes (at most %d)", KEY_FILE_MAX,
                     CAIRN_CSEK_MAX);
    if (rc == CAIRN_ENOTFOUND)
        return failf(cl, rc, "--key-file '%s' does not exist", cl->key_file);
    if (rc != CAIRN_OK)
        return failf(cl, rc, "--key-file: %s", cairn_err_msg());
    if (cairn_csek_validate((*key)->bytes, (*key)->len) != CAIRN_OK) {
        rc = failf(cl, CAIRN_EINVAL, "%s", cairn_err_msg());
        cairn_secret_destroy(key);
        return rc;
    }
    return CAIRN_OK;
}

/* A --ttl of at least 1 s into seconds (0 without the option); on error the exit status. */
static int parse_ttl(const struct cli *cl, uint64_t *ttl_s)
{
    *ttl_s = 0;
    if (!cl->ttl)
        return CAIRN_OK;
    uint64_t ms = 0;
    int rc = parse_dur(cl, "--ttl", cl->ttl, &ms);
    if (rc)
        return rc;
    if (ms < 1000)
        return failf(cl, CAIRN_EINVAL, "--ttl '%s': at least 1s", cl->ttl);
    *ttl_s = (ms + 999) / 1000;
    return CAIRN_OK;
}

static int cmd_sandbox_mount(struct cli *cl)
{
    int rc = check_cmd(cl, O_KEY_FILE | O_APP | O_REQ_ID, 4, 5);
    if (rc)
        return rc;
    const char *sb = cl->words[2], *path = cl->words[3], *image = cl->nwords > 4 ? cl->words[4] : NULL;
    struct cairn_secret *key = NULL;
    struct cairn_client *c = NULL;
    if ((rc = read_key_file(cl, &key)))
        return rc;
    if ((rc = open_client(cl, &c)))
        goto out;
    struct job_progress jp;
    job_progress_start(cl, c, &jp);
    rc = cairn_sandbox_mount(c, sb, path, image, key ? key->bytes : NULL, key ? key->len : 0, cl->req_id);
    job_progress_end(&jp);
    if (rc != CAIRN_OK) {
        rc = fail(cl, rc);
        goto out;
    }
    if (!cl->json) {
        printf("%s\n", path);
        goto out;
    }
    struct jw w;
    jw_init(&w);
    jw_str(&w, "sandbox", sb);
    jw_str(&w, "path", path);
    jw_str_opt(&w, "image", image);
    jw_bool(&w, "csek", key != NULL);
    jw_bool(&w, "mounted", true);
    rc = jw_emit(&w, CAIRN_OK);
out:
    cairn_secret_destroy(&key);
    cairn_client_destroy(&c);
    return rc;
}

static int cmd_sandbox_unmount(struct cli *cl)
{
    int rc = check_cmd(cl, O_APP | O_REQ_ID, 4, 4);
    if (rc)
        return rc;
    const char *sb = cl->words[2], *path = cl->words[3];
    struct cairn_client *c = NULL;
    if ((rc = open_client(cl, &c)))
        return rc;
    rc = cairn_sandbox_unmount(c, sb, path, cl->req_id);
    cairn_client_destroy(&c);
    if (rc != CAIRN_OK)
        return fail(cl, rc);
    if (!cl->json) {
        printf("%s\n", path);
        return CAIRN_OK;
    }
    struct jw w;
    jw_init(&w);
    jw_str(&w, "sandbox", sb);
    jw_str(&w, "path", path);
    jw_bool(&w, "unmounted", true);
    return jw_emit(&w, CAIRN_OK);
}

static int cmd_sandbox_snapshot_dir(struct cli *cl)
{
    int rc = check_cmd(cl, O_KEY_FILE | O_TTL | O_APP | O_REQ_ID, 4, 4);
    if (rc)
        return rc;
    const char *sb = cl->words[2], *path = cl->words[3];
    uint64_t ttl_s = 0;
    if ((rc = parse_ttl(cl, &ttl_s)))
        return rc;
    struct cairn_secret *key = NULL;
    struct cairn_client *c = NULL;
    if ((rc = read_key_file(cl, &key)))
        return rc;
    if ((rc = open_client(cl, &c)))
        goto out;
    struct job_progress jp;
    job_progress_start(cl, c, &jp);
    char id[CAIRN_ID_MAX + 1];
    rc = cairn_sandbox_snapshot_dir(c, sb, path, key ? key->bytes : NULL, key ? key->len : 0, ttl_s, cl->req_id, id);
    job_progress_end(&jp);
    if (rc != CAIRN_OK) {
        rc = fail(cl, rc);
        goto out;
    }
    if (!cl->json) {
        printf("%s\n", id);
        goto out;
    }
    struct jw w;
    jw_init(&w);
    jw_str(&w, "id", id);
    jw_str(&w, "sandbox", sb);
    jw_str(&w, "path", path);
    jw_str(&w, "encryption", key ? "csek" : "managed");
    if (ttl_s)
        jw_u64(&w, "ttl_s", ttl_s);
    rc = jw_emit(&w, CAIRN_OK);
out:
    cairn_secret_destroy(&key);
    cairn_client_destroy(&c);
    return rc;
}

static int cmd_sandbox_snapshot(struct cli *cl)
{
    int rc = check_cmd(cl, O_APP | O_REQ_ID, 3, 3);
    if (rc)
        return rc;
    const char *sb = cl->words[2];
    struct cairn_client *c = NULL;
    if ((rc = open_client(cl, &c)))
        return rc;
    struct job_progress jp;
    job_progress_start(cl, c, &jp);
    char id[CAIRN_ID_MAX + 1];
    rc = cairn_sandbox_snapshot(c, sb, cl->req_id, id);
    job_progress_end(&jp);
    cairn_client_destroy(&c);
    if (rc != CAIRN_OK)
        return fail(cl, rc);
    if (!cl->json) {
        printf("%s\n", id);
        return CAIRN_OK;
    }
    struct jw w;
    jw_init(&w);
    jw_str(&w, "id", id);
    jw_str(&w, "sandbox", sb);
    return jw_emit(&w, CAIRN_OK);
}

static int cmd_sandbox_restore(struct cli *cl)
{
    int rc = check_cmd(cl, O_COUNT | O_WORKER | O_APP | O_REQ_ID, 3, 3);
    if (rc)
        return rc;
    if (cl->window)
        return failf(cl, CAIRN_EINVAL, "'%s' takes no --window option; see cairn --help", cl->cmd);
    size_t count = 1;
    if (cl->count && (rc = parse_count(cl, "--count", cl->count, RESTORE_COUNT_MAX, &count)))
        return rc;
    struct cairn_client *c = NULL;
    struct cairn_restore_result *r = NULL;
    if ((rc = open_client(cl, &c)))
        return rc;
    struct job_progress jp;
    job_progress_start(cl, c, &jp);
    rc = cairn_sandbox_restore(c, cl->words[2], (unsigned)count, cl->worker, cl->req_id, &r);
    job_progress_end(&jp);
    cairn_client_destroy(&c);
    if (rc != CAIRN_OK)
        return fail(cl, rc);
    if (!cl->json) {
        for (size_t i = 0; i < r->n; i++)
            printf("%s\n", r->ids[i]);
        cairn_restore_result_free(&r);
        return CAIRN_OK;
    }
    struct jw w;
    jw_init(&w);
    jw_str(&w, "id", r->ids[0]);
    jw_open(&w, "ids", '[');
    for (size_t i = 0; i < r->n; i++)
        jw_str(&w, NULL, r->ids[i]);
    jw_close(&w, '[');
    jw_open(&w, "workers", '[');
    for (size_t i = 0; i < r->n; i++)
        jw_str(&w, NULL, r->workers[i]);
    jw_close(&w, '[');
    jw_str(&w, "snapshot", cl->words[2]);
    jw_str_opt(&w, "job", r->job);
    cairn_restore_result_free(&r);
    return jw_emit(&w, CAIRN_OK);
}

/* The members of a snapshot record (mounts as an array of paths). */
static void snapshot_fields(struct jw *w, const struct cairn_snapshot_info *s)
{
    jw_str(w, "id", s->id);
    jw_str(w, "sandbox", s->sandbox);
    jw_str_opt(w, "image", s->image);
    jw_str_opt(w, "parent", s->parent);
    jw_str(w, "fingerprint", s->fingerprint);
    jw_i64(w, "created_at", s->created_at_ns);
    jw_i64(w, "expires_at", s->expires_at_ns);
    jw_u64(w, "size", s->size);
    jw_u64(w, "stored", s->stored);
    jw_open(w, "mounts", '[');
    for (size_t i = 0; i < s->nmounts; i++)
        jw_str(w, NULL, s->mounts[i]);
    jw_close(w, '[');
}

static int cmd_snapshot_ls(struct cli *cl)
{
    int rc = check_cmd(cl, O_APP, 2, 2);
    if (rc)
        return rc;
    struct cairn_client *c = NULL;
    struct cairn_snapshot_list *l = NULL;
    if ((rc = open_client(cl, &c)))
        return rc;
    rc = cairn_snapshot_ls(c, &l);
    if (rc != CAIRN_OK) {
        rc = fail(cl, rc);
    } else if (cl->json) {
        struct jw w;
        jw_init(&w);
        jw_open(&w, "snapshots", '[');
        for (size_t i = 0; i < l->n; i++) {
            jw_open(&w, NULL, '{');
            snapshot_fields(&w, &l->snapshots[i]);
            jw_close(&w, '}');
        }
        jw_close(&w, '[');
        rc = jw_emit(&w, CAIRN_OK);
    } else {
        printf("%-19s  %-19s  %10s  %6s  %-20s  %-20s  %s\n", "ID", "SANDBOX", "SIZE", "MOUNTS", "CREATED", "EXPIRES",
               "PARENT");
        for (size_t i = 0; i < l->n; i++) {
            const struct cairn_snapshot_info *sn = &l->snapshots[i];
            char size[32], created[32], expires[32];
            fmt_bytes(size, sizeof(size), sn->size);
            fmt_time(created, sizeof(created), sn->created_at_ns);
            fmt_time(expires, sizeof(expires), sn->expires_at_ns);
            printf("%-19s  %-19s  %10s  %6zu  %-20s  %-20s  %s\n", sn->id, sn->sandbox, size, sn->nmounts, created,
                   expires, sn->parent[0] ? sn->parent : "-");
        }
    }
    cairn_snapshot_list_free(&l);
    cairn_client_destroy(&c);
    return rc;
}

static int cmd_snapshot_show(struct cli *cl)
{
    int rc = check_cmd(cl, O_APP, 3, 3);
    if (rc)
        return rc;
    struct cairn_client *c = NULL;
    struct cairn_snapshot_info *sn = NULL;
    if ((rc = open_client(cl, &c)))
        return rc;
    rc = cairn_snapshot_show(c, cl->words[2], &sn);
    if (rc != CAIRN_OK) {
        rc = fail(cl, rc);
    } else if (cl->json) {
        struct jw w;
        jw_init(&w);
        snapshot_fields(&w, sn);
        rc = jw_emit(&w, CAIRN_OK);
    } else {
        char t[40], size[32], stored[32];
        fmt_bytes(size, sizeof(size), sn->size);
        fmt_bytes(stored, sizeof(stored), sn->stored);
        printf("id:          %s\n", sn->id);
        printf("sandbox:     %s\n", sn->sandbox);
        printf("image:       %s\n", sn->image[0] ? sn->image : "-");
        printf("parent:      %s\n", sn->parent[0] ? sn->parent : "-");
        printf("fingerprint: %s\n", sn->fingerprint[0] ? sn->fingerprint : "-");
        fmt_time(t, sizeof(t), sn->created_at_ns);
        printf("created:     %s\n", t);
        fmt_time(t, sizeof(t), sn->expires_at_ns);
        printf("expires:     %s\n", t);
        printf("size:        %s (%" PRIu64 " bytes)\n", size, sn->size);
        printf("stored:      %s\n", stored);
        printf("mounts:      %s", sn->nmounts ? "" : "-");
        for (size_t i = 0; i < sn->nmounts; i++)
            printf("%s%s", i ? " " : "", sn->mounts[i]);
        printf("\n");
    }
    cairn_snapshot_info_free(&sn);
    cairn_client_destroy(&c);
    return rc;
}

static int cmd_snapshot_rm(struct cli *cl)
{
    int rc = check_cmd(cl, O_APP, 3, 3);
    if (rc)
        return rc;
    struct cairn_client *c = NULL;
    if ((rc = open_client(cl, &c)))
        return rc;
    rc = cairn_snapshot_rm(c, cl->words[2]);
    cairn_client_destroy(&c);
    if (rc != CAIRN_OK)
        return fail(cl, rc);
    if (!cl->json) {
        printf("%s\n", cl->words[2]);
        return CAIRN_OK;
    }
    struct jw w;
    jw_init(&w);
    jw_str(&w, "id", cl->words[2]);
    jw_bool(&w, "removed", true);
    return jw_emit(&w, CAIRN_OK);
}

/* ---- main ------------------------------------------------------------------------------------ */

struct command {
    const char *name; /* "image import" */
    int (*fn)(struct cli *cl);
    bool takes_cmd;   /* the words after `--` are a command (not more arguments) */
};

static const struct command commands[] = {
    {"cluster status", cmd_cluster_status, false},
    {"app create", cmd_app_create, false},
    {"job submit", cmd_job_submit, false},
    {"job get", cmd_job_get, false},
    {"image import", cmd_image_import, false},
    {"image ls", cmd_image_ls, false},
    {"image show", cmd_image_show, false},
    {"image rm", cmd_image_rm, false},
    {"sandbox create", cmd_sandbox_create, true},
    {"sandbox exec", cmd_sandbox_exec, true},
    {"sandbox snapshot-fs", cmd_sandbox_snapshot_fs, false},
    {"sandbox ls", cmd_sandbox_ls, false},
    {"sandbox terminate", cmd_sandbox_terminate, false},
    {"sandbox mount", cmd_sandbox_mount, false},
    {"sandbox unmount", cmd_sandbox_unmount, false},
    {"sandbox snapshot-dir", cmd_sandbox_snapshot_dir, false},
    {"sandbox snapshot", cmd_sandbox_snapshot, false},
    {"sandbox restore", cmd_sandbox_restore, false},
    {"snapshot ls", cmd_snapshot_ls, false},
    {"snapshot show", cmd_snapshot_show, false},
    {"snapshot rm", cmd_snapshot_rm, false},
};

/* Without a command that takes one, the words after `--` are plain arguments (values starting with '-'). */
static int words_after_dashdash(struct cli *cl)
{
    for (size_t i = 0; i < cl->nafter_dd; i++) {
        if (cl->nwords >= MAX_WORDS)
            return failf(cl, CAIRN_EINVAL, "too many arguments; see cairn --help");
        cl->words[cl->nwords++] = cl->after_dd[i];
    }
    cl->nafter_dd = 0;
    return CAIRN_OK;
}

int main(int argc, char **argv)
{
    struct cli cl;
    memset(&cl, 0, sizeof(cl));
    int rc = parse_args(&cl, argc, argv);
    if (rc != CAIRN_OK)
        goto out;
    if (cl.help || cl.nwords == 0 || !strcmp(cl.words[0], "help")) {
        fputs(usage_text, cl.nwords || cl.help ? stdout : stderr);
        rc = cl.nwords || cl.help ? CAIRN_OK : CAIRN_EINVAL;
        goto out;
    }
    snprintf(cl.cmd, sizeof(cl.cmd), "%s%s%s", cl.words[0], cl.nwords > 1 ? " " : "", cl.nwords > 1 ? cl.words[1] : "");
    const char *w0 = cl.words[0], *w1 = cl.nwords > 1 ? cl.words[1] : "";
    const struct command *cmd = NULL;
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(commands); i++)
        if (!strcmp(cl.cmd, commands[i].name))
            cmd = &commands[i];
    if (!(cmd && cmd->takes_cmd) && (rc = words_after_dashdash(&cl)) != CAIRN_OK)
        goto out;
    if (cmd && !strcmp(cmd->name, "sandbox exec"))
        cl.timeout_is_cmd = true;
    if (cmd) {
        rc = cmd->fn(&cl);
    } else if (!strcmp(w0, "keygen")) {
        snprintf(cl.cmd, sizeof(cl.cmd), "keygen");
        rc = cmd_keygen(&cl);
    } else if (!strcmp(w0, "ping")) {
        snprintf(cl.cmd, sizeof(cl.cmd), "ping");
        rc = cmd_ping(&cl);
    } else if (!strcmp(w0, "admin") && !strcmp(w1, "clock") && cl.nwords > 2 && !strcmp(cl.words[2], "advance")) {
        snprintf(cl.cmd, sizeof(cl.cmd), "admin clock advance");
        rc = cmd_clock_advance(&cl);
    } else {
        rc = failf(&cl, CAIRN_EINVAL, "unknown command '%s'; see cairn --help", cl.cmd);
    }
out:
    cairn_params_destroy(&cl.params);
    if (fflush(stdout) != 0 && rc == CAIRN_OK)
        rc = CAIRN_EIO;
    return rc;
}
