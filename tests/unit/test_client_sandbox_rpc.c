/*
 * test_client_sandbox_rpc.c: libcairn's image and sandbox calls, and the
 * `cairn` CLI's image and sandbox commands, against a scripted coordinator.
 *
 * The far end is a real CURVE ROUTER (real keys, allow-list, codec) run by a
 * thread of this test that answers the image.* and sandbox.* messages the way
 * docs/internals/sandboxes.md says the coordinator does, and misbehaves on
 * purpose where the client must cope: it swallows the reply to one upload
 * piece (the client must resend it; the repeat is acknowledged), sends stream
 * replies out of order and twice, pages its lists two entries at a time, and
 * answers jobs "queued" first so that the client has to poll. The real
 * daemons are exercised by tests/integration/test_sandbox_cli.sh.
 *
 * - image import of a directory: the upload is a pax tar (read back here with
 *   libarchive) with relative names, numeric owners only, file data intact
 *   over several pieces, symlinks, hard links as links, sparse files with
 *   their holes, xattrs; a fifo goes in, a socket is skipped; progress is
 *   reported. Of a tarball: the bytes as they are, the size on the first
 *   piece, the name; a lost reply is retried. Missing path: ENOTFOUND.
 * - image ls (all pages), show, rm, resolve by name (the newest), unknown.
 * - sandbox create: every option on the wire; a name resolved to an id; a
 *   failed job is the call's error with the job's code and message.
 * - exec: stdout/stderr/exit code/truncated, stdin; exec.stream: pieces in
 *   seq order, repeats dropped, the exit code; a callback that stops the call.
 * - snapshot-fs (ttl, pause_ms, the agreement's result names), ls, terminate.
 * - the CLI: ids alone on stdout, --json objects, exec's exit code, streams
 *   and stdin, snapshot-fs's pause on stderr, error exit codes.
 * - issues 5 and 6: mount (image name resolved, the key in the request's
 *   `key` field only, empty mounts), unmount, snapshot-dir (key, ttl_s, the
 *   agreement's result names), snapshot, restore (count, worker, ids and
 *   workers in order), snapshot ls (all pages) / show (mounts) / rm; keys of a
 *   bad size refused with cairn_csek_validate's message before anything is
 *   sent; refusals of the coordinator (EEXIST) and failed jobs (EKEY, EBUSY,
 *   ENOTFOUND "expired") with their code and message; progress reported with
 *   the operation as its stage; the CLI's outputs and --json shapes, --key-file
 *   never echoed.
 */
#include "testutil.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/cairn.h"
#include "cairn/err.h"
#include "cairn/proto.h"
#include "cairn/transport.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#define APP "default"
static const uint8_t app_token[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                      17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

struct fx {
    char *dir;
    struct cairn_net *net;
    struct cairn_curve_keys server;
    struct cairn_sock *srv;
    char endpoint[128];
    pthread_t thread;
    atomic_bool stop;
    atomic_bool drop_one_piece; /* swallow the reply to the next piece at offset > 0 */
    atomic_int repeats;         /* repeated pieces acknowledged */
    atomic_int pieces;
    atomic_int bad;
    pthread_mutex_t mu;
    /* the current upload (one at a time in this test) */
    char upload[80];
    uint8_t *up;
    size_t uplen, upcap;
    uint64_t up_size; /* "size" of the first piece, 0 if absent */
    char up_name[160];
    int njobs;
    char last[1024]; /* the last sandbox.create / exec / snapshot-fs / mount / ... request, as text */
    char last_req_id[80]; /* and its req_id (issue 5/6 requests) */
};

static void bad(struct fx *f, const char *why)
{
    fprintf(stderr, "server: %s\n", why);
    atomic_fetch_add(&f->bad, 1);
}

static void send_reply(struct fx *f, struct cairn_msg **rep)
{
    if (cairn_sock_send(f->srv, *rep) != CAIRN_OK)
        bad(f, cairn_err_msg());
    cairn_msg_destroy(rep);
}

static bool token_ok(const struct cairn_msg *m)
{
    const uint8_t *p = NULL;
    size_t len = 0;
    cairn_msg_token(m, &p, &len);
    const char *a = cairn_msg_app(m);
    return a && !strcmp(a, APP) && len == sizeof(app_token) && !memcmp(p, app_token, len);
}

static void str_field(const struct cairn_msg *m, const char *k, char *out, size_t cap)
{
    const char *s = NULL;
    size_t n = 0;
    out[0] = '\0';
    if (cairn_msg_get_str(m, k, &s, &n) == CAIRN_OK)
        snprintf(out, cap, "%.*s", (int)n, s);
}

/* Append "k=v;" for the request's fields (strings, numbers, bools, string arrays joined by ','). */
static void describe(const struct cairn_msg *m, char *out, size_t cap)
{
    const struct cairn_mval *fs = cairn_msg_fields(m);
    size_t off = 0;
    out[0] = '\0';
    for (size_t i = 0; fs && i < cairn_mval_len(fs); i++) {
        const char *k = NULL;
        const struct cairn_mval *v = NULL;
        cairn_mval_entry(fs, i, &k, &v);
        if (!strcmp(k, "req_id") || !strcmp(k, "wait_ms"))
            continue;
        char val[400] = "";
        const char *s = NULL;
        size_t n = 0;
        uint64_t u = 0;
        bool b = false;
        switch (cairn_mval_kind(v)) {
        case CAIRN_MV_STR: cairn_mval_str(v, &s, &n); snprintf(val, sizeof(val), "%.*s", (int)n, s); break;
        case CAIRN_MV_BIN: cairn_mval_bin(v, (const uint8_t **)&s, &n); snprintf(val, sizeof(val), "%.*s", (int)n, s); break;
        case CAIRN_MV_UINT: cairn_mval_u64(v, &u); snprintf(val, sizeof(val), "%llu", (unsigned long long)u); break;
        case CAIRN_MV_BOOL: cairn_mval_bool(v, &b); snprintf(val, sizeof(val), "%s", b ? "true" : "false"); break;
        case CAIRN_MV_ARRAY: {
            size_t vo = 0;
            for (size_t j = 0; j < cairn_mval_len(v); j++) {
                cairn_mval_str(cairn_mval_at(v, j), &s, &n);
                int w = snprintf(val + vo, sizeof(val) - vo, "%s%.*s", j ? "," : "", (int)n, s);
                if (w > 0 && (size_t)w < sizeof(val) - vo)
                    vo += (size_t)w;
            }
            break;
        }
        default: snprintf(val, sizeof(val), "?"); break;
        }
        int w = snprintf(out + off, cap - off, "%s=%s;", k, val);
        if (w > 0 && (size_t)w < cap - off)
            off += (size_t)w;
    }
}

static struct cairn_msg *job_reply(const struct cairn_msg *req, const char *id, const char *state)
{
    struct cairn_msg *rep = cairn_msg_reply(req, CAIRN_OK, NULL);
    cairn_msg_set_str(rep, "job", id);
    cairn_msg_set_str(rep, "state", state);
    return rep;
}

/* The final state of a job, by the kind in its id (jb-<kind>-<n>[-fail]). */
static struct cairn_msg *job_done(const struct cairn_msg *req, const char *id)
{
    static const struct {
        const char *suffix;
        int code;
        const char *msg;
    } fails[] = {
        {"-fkey", CAIRN_EKEY, "wrong encryption key for image im-00000000000000e1"},
        {"-fbusy", CAIRN_EBUSY, "an exec is still running in sb-busy (job jb-x): wait for it to end"},
        {"-fexp", CAIRN_ENOTFOUND, "snapshot sn-expired expired on 2026-01-01T00:00:00Z"},
    };
    for (size_t i = 0; i < sizeof(fails) / sizeof(fails[0]); i++) {
        if (strstr(id, fails[i].suffix)) {
            struct cairn_msg *rep = job_reply(req, id, "failed");
            cairn_msg_set_u64(rep, "err_code", (uint64_t)fails[i].code);
            cairn_msg_set_str(rep, "err_msg", fails[i].msg);
            return rep;
        }
    }
    if (strstr(id, "-fail")) {
        struct cairn_msg *rep = job_reply(req, id, "failed");
        cairn_msg_set_u64(rep, "err_code", CAIRN_ENOTFOUND);
        cairn_msg_set_str(rep, "err_msg", "image 'im-ffffffffffffffff' not found in app 'default'");
        return rep;
    }
    struct cairn_msg *rep = job_reply(req, id, "succeeded");
    cairn_msg_set_str(rep, "worker", "w2");
    struct cairn_mval *res = cairn_msg_set_map(rep, "result");
    if (!strncmp(id, "jb-imp-", 7)) {
        cairn_mval_put_str(rep, res, "id", "im-00000000000000aa");
    } else if (!strncmp(id, "jb-create-", 10)) {
        cairn_mval_put_str(rep, res, "id", "sb-00000000000000bb");
        cairn_mval_put_str(rep, res, "worker", "w2");
        cairn_mval_put_u64(rep, res, "create_ms", 120);
    } else if (!strncmp(id, "jb-snap-", 8)) {
        /* the agreement's names (sandboxes.md), not "id": the client takes both */
        cairn_mval_put_str(rep, res, "image", "im-00000000000000cc");
        cairn_mval_put_u64(rep, res, "pause_ms", 12);
    } else if (!strncmp(id, "jb-sdir-", 8)) {
        cairn_mval_put_str(rep, res, strstr(id, "-alt") ? "image" : "id", "im-00000000000000dd");
        cairn_mval_put_u64(rep, res, "files", 3);
    } else if (!strncmp(id, "jb-msnap-", 9)) {
        cairn_mval_put_str(rep, res, "id", "sn-00000000000000ee");
    } else if (!strncmp(id, "jb-restore-", 11)) {
        /* jb-restore-<n>-c<count>: ids sb-...01, 02, ... on w1, w2, w3, w1, ... */
        const char *cp = strstr(id, "-c");
        int count = cp ? (int)strtol(cp + 2, NULL, 10) : 1;
        struct cairn_mval *ids = cairn_mval_put_array(rep, res, "ids");
        struct cairn_mval *ws = cairn_mval_put_array(rep, res, "workers");
        for (int i = 0; i < count; i++) {
            char sid[32], w[8];
            snprintf(sid, sizeof(sid), "sb-%016x", 0x100 + i + 1);
            snprintf(w, sizeof(w), "w%d", i % 3 + 1);
            cairn_mval_push_str(rep, ids, sid);
            cairn_mval_push_str(rep, ws, w);
        }
        cairn_mval_put_str(rep, res, "id", "sb-0000000000000101");
    }
    return rep;
}

static void put_image(struct cairn_msg *rep, struct cairn_mval *arr, int i)
{
    static const char *const names[] = {"default", "default", "other", ""};
    struct cairn_mval *im = cairn_mval_push_map(rep, arr);
    char id[32];
    snprintf(id, sizeof(id), "im-%016x", i + 1);
    cairn_mval_put_str(rep, im, "id", id);
    cairn_mval_put_str(rep, im, "kind", i == 3 ? "fs" : "base");
    if (names[i][0])
        cairn_mval_put_str(rep, im, "name", names[i]);
    if (i == 3)
        cairn_mval_put_str(rep, im, "parent", "im-0000000000000002");
    cairn_mval_put_str(rep, im, "encryption", "managed");
    cairn_mval_put_u64(rep, im, "created_at", 1000000000ull * (uint64_t)(i == 1 ? 50 : i + 1));
    cairn_mval_put_u64(rep, im, "size", 1000u * (uint64_t)(i + 1));
    cairn_mval_put_u64(rep, im, "files", 10u + (uint64_t)i);
    cairn_mval_put_u64(rep, im, "stored", 500);
    if (i == 3) {
        cairn_mval_put_u64(rep, im, "expires_at", 4000000000000000000ull);
        cairn_mval_put_str(rep, im, "retention", "ttl:3600");
    }
}

static void put_snapshot(struct cairn_msg *rep, struct cairn_mval *sn, int i)
{
    char id[32];
    snprintf(id, sizeof(id), "sn-%016x", i + 1);
    cairn_mval_put_str(rep, sn, "id", id);
    cairn_mval_put_str(rep, sn, "sandbox", "sb-0000000000000001");
    cairn_mval_put_u64(rep, sn, "created_at", 1000000000ull * (uint64_t)(i + 1));
    cairn_mval_put_u64(rep, sn, "expires_at", 1000000000ull * (uint64_t)(i + 1) + 604800000000000ull);
    cairn_mval_put_str(rep, sn, "fingerprint", "runsc-1+cpu-abc");
    cairn_mval_put_str(rep, sn, "image", "im-0000000000000002");
    if (i == 1) {
        struct cairn_mval *mounts = cairn_mval_put_array(rep, sn, "mounts");
        cairn_mval_push_str(rep, mounts, "/data");
        cairn_mval_push_str(rep, mounts, "/cache");
        cairn_mval_put_str(rep, sn, "parent", "sn-0000000000000001");
    }
    cairn_mval_put_u64(rep, sn, "size", 200u << 20);
    cairn_mval_put_u64(rep, sn, "stored", 1000u * (uint64_t)(i + 1));
}

/* exec: the scripted commands. */
static void exec_run(const struct cairn_msg *m, int *code, char *out, size_t *outlen, char *err, size_t *errlen,
                     bool *truncated)
{
    const struct cairn_mval *argv = cairn_msg_get(m, "argv");
    const char *a0 = NULL;
    size_t n0 = 0;
    cairn_mval_str(cairn_mval_at(argv, 0), &a0, &n0);
    *code = 0;
    *outlen = *errlen = 0;
    *truncated = false;
    if (!strncmp(a0, "echo", n0)) {
        for (size_t i = 1; i < cairn_mval_len(argv); i++) {
            const char *s = NULL;
            size_t n = 0;
            cairn_mval_str(cairn_mval_at(argv, i), &s, &n);
            *outlen += (size_t)snprintf(out + *outlen, 4096 - *outlen, "%s%.*s", i > 1 ? " " : "", (int)n, s);
        }
        out[(*outlen)++] = '\n';
    } else if (!strncmp(a0, "cat", n0)) {
        const uint8_t *p = NULL;
        size_t n = 0;
        if (cairn_msg_get_bin(m, "stdin", &p, &n) == CAIRN_OK) {
            memcpy(out, p, n);
            *outlen = n;
        }
    } else if (!strncmp(a0, "fail", n0)) {
        *code = 3;
        memcpy(err, "boom\n", 5);
        *errlen = 5;
        *truncated = true;
    } else if (!strncmp(a0, "bin", n0)) {
        memcpy(out, "\xff\x00" "a\n", 4);
        *outlen = 4;
    } else if (!strncmp(a0, "env", n0)) {
        char d[1024];
        describe(m, d, sizeof(d));
        *outlen = (size_t)snprintf(out, 4096, "%s", d);
    } else {
        *code = 127;
        *errlen = (size_t)snprintf(err, 4096, "%.*s: not found\n", (int)n0, a0);
    }
}

/*
 * exec.stream "count N": N pieces "line i\n" (odd ones on stderr), sent in
 * swapped pairs with piece 0 repeated, then done with exit code 7. Any other
 * command: its collected output as one piece per stream, then done.
 */
static void exec_stream(struct fx *f, const struct cairn_msg *m)
{
    const struct cairn_mval *argv = cairn_msg_get(m, "argv");
    const char *a0 = NULL, *a1 = NULL;
    size_t n0 = 0, n1 = 0;
    cairn_mval_str(cairn_mval_at(argv, 0), &a0, &n0);
    char sb[80];
    str_field(m, "sandbox", sb, sizeof(sb));
    if (!strcmp(sb, "sb-missing")) {
        struct cairn_msg *rep = cairn_msg_reply(m, CAIRN_ENOTFOUND, "sandbox 'sb-missing' not found in app 'default'");
        send_reply(f, &rep);
        return;
    }
    if (!strncmp(a0, "count", n0) && cairn_mval_len(argv) > 1) {
        cairn_mval_str(cairn_mval_at(argv, 1), &a1, &n1);
        int n = (int)strtol(a1, NULL, 10);
        for (int base = 0; base < n; base += 2) {
            int order[2] = {base + 1, base};
            for (int k = 0; k < 2; k++) {
                int i = order[k];
                if (i >= n)
                    continue;
                for (int rep_i = 0; rep_i < (i == 0 ? 2 : 1); rep_i++) {
                    struct cairn_msg *rep = cairn_msg_reply(m, CAIRN_OK, NULL);
                    char line[32];
                    int len = snprintf(line, sizeof(line), "line %d\n", i);
                    cairn_msg_set_u64(rep, "seq", (uint64_t)i);
                    cairn_msg_set_u64(rep, "stream", (i % 2) ? 2 : 1);
                    cairn_msg_set_bin(rep, "data", line, (size_t)len);
                    send_reply(f, &rep);
                }
            }
        }
        struct cairn_msg *rep = cairn_msg_reply(m, CAIRN_OK, NULL);
        cairn_msg_set_u64(rep, "seq", (uint64_t)n);
        cairn_msg_set_bool(rep, "done", true);
        cairn_msg_set_i64(rep, "exit_code", 7);
        send_reply(f, &rep);
        return;
    }
    if (!strncmp(a0, "big", n0)) { /* 24 pieces of 1 MiB on stdout */
        static uint8_t mib[1 << 20];
        for (size_t i = 0; i < sizeof(mib); i++)
            mib[i] = (uint8_t)('a' + i % 26);
        for (int i = 0; i < 24; i++) {
            struct cairn_msg *rep = cairn_msg_reply(m, CAIRN_OK, NULL);
            cairn_msg_set_u64(rep, "seq", (uint64_t)i);
            cairn_msg_set_u64(rep, "stream", 1);
            cairn_msg_set_bin(rep, "data", mib, sizeof(mib));
            send_reply(f, &rep);
        }
        struct cairn_msg *rep = cairn_msg_reply(m, CAIRN_OK, NULL);
        cairn_msg_set_u64(rep, "seq", 24);
        cairn_msg_set_bool(rep, "done", true);
        cairn_msg_set_i64(rep, "exit_code", 0);
        send_reply(f, &rep);
        return;
    }
    static char out[65536], err[4096];
    int code = 0;
    size_t outlen = 0, errlen = 0;
    bool trunc = false;
    exec_run(m, &code, out, &outlen, err, &errlen, &trunc);
    uint64_t seq = 0;
    if (outlen) {
        struct cairn_msg *rep = cairn_msg_reply(m, CAIRN_OK, NULL);
        cairn_msg_set_u64(rep, "seq", seq++);
        cairn_msg_set_u64(rep, "stream", 1);
        cairn_msg_set_bin(rep, "data", out, outlen);
        send_reply(f, &rep);
    }
    if (errlen) {
        struct cairn_msg *rep = cairn_msg_reply(m, CAIRN_OK, NULL);
        cairn_msg_set_u64(rep, "seq", seq++);
        cairn_msg_set_u64(rep, "stream", 2);
        cairn_msg_set_bin(rep, "data", err, errlen);
        send_reply(f, &rep);
    }
    struct cairn_msg *rep = cairn_msg_reply(m, CAIRN_OK, NULL);
    cairn_msg_set_u64(rep, "seq", seq);
    cairn_msg_set_bool(rep, "done", true);
    cairn_msg_set_i64(rep, "exit_code", code);
    send_reply(f, &rep);
}

static struct cairn_msg *on_import(struct fx *f, const struct cairn_msg *m)
{
    char up[80];
    str_field(m, "upload", up, sizeof(up));
    uint64_t off = 0, size = 0;
    bool last = false;
    cairn_msg_get_u64(m, "offset", &off);
    cairn_msg_get_bool(m, "last", &last);
    const uint8_t *p = NULL;
    size_t n = 0;
    if (cairn_msg_frame_count(m) != 1 || cairn_msg_frame(m, 0, &p, &n) != CAIRN_OK)
        return cairn_msg_reply(m, CAIRN_EPROTO, "image.import needs one raw frame");
    atomic_fetch_add(&f->pieces, 1);
    pthread_mutex_lock(&f->mu);
    if (off == 0 && strcmp(up, f->upload) != 0) { /* a new upload */
        snprintf(f->upload, sizeof(f->upload), "%s", up);
        f->uplen = 0;
        f->up_size = cairn_msg_opt_u64(m, "size", 0, &size) == CAIRN_OK ? size : 0;
        str_field(m, "name", f->up_name, sizeof(f->up_name));
    }
    struct cairn_msg *rep = NULL;
    if (strcmp(up, f->upload) != 0) {
        rep = cairn_msg_reply(m, CAIRN_ENOTFOUND, "unknown upload");
    } else if (off != f->uplen && off + n <= f->uplen) { /* a repeated piece: acknowledged */
        atomic_fetch_add(&f->repeats, 1);
        rep = cairn_msg_reply(m, CAIRN_OK, NULL);
    } else if (off != f->uplen) {
        char msg[128];
        snprintf(msg, sizeof(msg), "upload '%s': piece at offset %llu, expected %zu", up, (unsigned long long)off,
                 f->uplen);
        rep = cairn_msg_reply(m, CAIRN_EINVAL, msg);
    } else {
        if (f->uplen + n > f->upcap) {
            f->upcap = (f->uplen + n) * 2;
            f->up = realloc(f->up, f->upcap);
        }
        memcpy(f->up + f->uplen, p, n);
        f->uplen += n;
        if (off > 0 && atomic_exchange(&f->drop_one_piece, false)) {
            pthread_mutex_unlock(&f->mu);
            return NULL; /* the reply is "lost": the client must resend this piece */
        }
        rep = cairn_msg_reply(m, CAIRN_OK, NULL);
    }
    if (cairn_msg_code(rep) == CAIRN_OK) {
        cairn_msg_set_u64(rep, "received", f->uplen);
        if (last) {
            char id[40];
            snprintf(id, sizeof(id), "jb-imp-%d", f->njobs++);
            cairn_msg_set_str(rep, "job", id);
            cairn_msg_set_str(rep, "state", "queued");
            tu_write_file(tu_path("%s/upload.bin", f->dir), f->up, f->uplen);
        }
    }
    pthread_mutex_unlock(&f->mu);
    return rep;
}

static void *server_main(void *arg)
{
    struct fx *f = arg;
    while (!atomic_load(&f->stop)) {
        struct cairn_msg *m = NULL;
        int rc = cairn_sock_recv(f->srv, 50, &m);
        if (rc == CAIRN_ETIMEDOUT)
            continue;
        if (rc != CAIRN_OK) {
            bad(f, cairn_err_msg());
            cairn_msg_destroy(&m);
            continue;
        }
        struct cairn_msg *rep = NULL;
        enum cairn_msg_type t = cairn_msg_type(m);
        if (t != CAIRN_MSG_PING && !token_ok(m)) {
            rep = cairn_msg_reply(m, CAIRN_EAUTH, "invalid app token for app 'default'");
            send_reply(f, &rep);
            cairn_msg_destroy(&m);
            continue;
        }
        char id[80], after[80];
        switch (t) {
        case CAIRN_MSG_PING:
            rep = cairn_msg_reply(m, CAIRN_OK, NULL);
            cairn_msg_set_str(rep, "version", "test-1");
            cairn_msg_set_u64(rep, "proto", 1);
            break;
        case CAIRN_MSG_IMAGE_IMPORT:
            rep = on_import(f, m);
            break;
        case CAIRN_MSG_JOB_GET:
            str_field(m, "job", id, sizeof(id));
            rep = job_done(m, id);
            if (!strncmp(id, "jb-imp-", 7)) {
                cairn_msg_set_u64(rep, "done", 100);
                cairn_msg_set_u64(rep, "total", 100);
            }
            break;
        case CAIRN_MSG_IMAGE_LS: {
            /* pages of two, by id */
            str_field(m, "after", after, sizeof(after));
            int start = after[0] ? (int)strtol(after + 3, NULL, 16) : 0;
            rep = cairn_msg_reply(m, CAIRN_OK, NULL);
            struct cairn_mval *arr = cairn_msg_set_array(rep, "images");
            for (int i = start; i < start + 2 && i < 4; i++)
                put_image(rep, arr, i);
            if (start + 2 < 4) {
                snprintf(id, sizeof(id), "im-%016x", start + 2);
                cairn_msg_set_str(rep, "next", id);
            }
            break;
        }
        case CAIRN_MSG_IMAGE_SHOW:
        case CAIRN_MSG_IMAGE_RM:
            str_field(m, "image", id, sizeof(id));
            if (!strcmp(id, "im-0000000000000004")) {
                rep = cairn_msg_reply(m, CAIRN_OK, NULL);
                if (t == CAIRN_MSG_IMAGE_SHOW) {
                    struct cairn_msg *tmp = cairn_msg_reply(m, CAIRN_OK, NULL);
                    struct cairn_mval *arr = cairn_msg_set_array(tmp, "x");
                    put_image(tmp, arr, 3);
                    cairn_msg_set_value(rep, "image", cairn_mval_at(arr, 0));
                    cairn_msg_destroy(&tmp);
                }
            } else {
                char msg[160];
                snprintf(msg, sizeof(msg), "image '%s' not found in app 'default'", id);
                rep = cairn_msg_reply(m, CAIRN_ENOTFOUND, msg);
            }
            break;
        case CAIRN_MSG_SANDBOX_CREATE:
        case CAIRN_MSG_SANDBOX_SNAPSHOT_FS:
        case CAIRN_MSG_SANDBOX_TERMINATE: {
            char rq[80];
            str_field(m, "req_id", rq, sizeof(rq));
            uint64_t wait = 0;
            cairn_msg_opt_u64(m, "wait_ms", 0, &wait);
            if (!rq[0] || wait == 0)
                bad(f, "a job-starting request without req_id or wait_ms");
            pthread_mutex_lock(&f->mu);
            describe(m, f->last, sizeof(f->last));
            str_field(m, "image", after, sizeof(after));
            snprintf(id, sizeof(id), "jb-%s-%d%s",
                     t == CAIRN_MSG_SANDBOX_CREATE ? "create" : t == CAIRN_MSG_SANDBOX_TERMINATE ? "term" : "snap",
                     f->njobs++, !strcmp(after, "im-ffffffffffffffff") ? "-fail" : "");
            pthread_mutex_unlock(&f->mu);
            rep = job_reply(m, id, "queued"); /* the client has to poll */
            break;
        }
        case CAIRN_MSG_SANDBOX_EXEC: {
            str_field(m, "sandbox", id, sizeof(id));
            if (!strcmp(id, "sb-missing")) {
                rep = cairn_msg_reply(m, CAIRN_ENOTFOUND, "sandbox 'sb-missing' not found in app 'default'");
                break;
            }
            pthread_mutex_lock(&f->mu);
            describe(m, f->last, sizeof(f->last));
            pthread_mutex_unlock(&f->mu);
            static char out[65536], err[4096];
            int code = 0;
            size_t outlen = 0, errlen = 0;
            bool trunc = false;
            exec_run(m, &code, out, &outlen, err, &errlen, &trunc);
            rep = cairn_msg_reply(m, CAIRN_OK, NULL);
            cairn_msg_set_i64(rep, "exit_code", code);
            cairn_msg_set_bin(rep, "stdout", out, outlen);
            cairn_msg_set_bin(rep, "stderr", err, errlen);
            if (trunc)
                cairn_msg_set_bool(rep, "truncated", true);
            break;
        }
        case CAIRN_MSG_SANDBOX_EXEC_STREAM:
            pthread_mutex_lock(&f->mu);
            describe(m, f->last, sizeof(f->last));
            pthread_mutex_unlock(&f->mu);
            exec_stream(f, m);
            break;
        case CAIRN_MSG_SANDBOX_LS: {
            bool all = false;
            cairn_msg_opt_bool(m, "all", false, &all);
            str_field(m, "after", after, sizeof(after));
            rep = cairn_msg_reply(m, CAIRN_OK, NULL);
            struct cairn_mval *arr = cairn_msg_set_array(rep, "sandboxes");
            int n = all ? 3 : 2, start = after[0] ? (int)strtol(after + 3, NULL, 16) : 0;
            for (int i = start; i < start + 2 && i < n; i++) {
                struct cairn_mval *sb = cairn_mval_push_map(rep, arr);
                snprintf(id, sizeof(id), "sb-%016x", i + 1);
                cairn_mval_put_str(rep, sb, "id", id);
                cairn_mval_put_str(rep, sb, "state", i == 2 ? "terminated" : "running");
                cairn_mval_put_str(rep, sb, "worker", i ? "w1" : "w2");
                cairn_mval_put_str(rep, sb, "image", "im-0000000000000002");
                cairn_mval_put_u64(rep, sb, "created_at", 1000000000ull);
                if (i == 1) {
                    cairn_mval_put_bool(rep, sb, "enable_snapshot", true);
                    struct cairn_mval *mounts = cairn_mval_put_array(rep, sb, "mounts");
                    struct cairn_mval *mt = cairn_mval_push_map(rep, mounts);
                    cairn_mval_put_str(rep, mt, "path", "/data");
                    cairn_mval_put_str(rep, mt, "image", "im-00000000000000e1");
                    cairn_mval_put_bool(rep, mt, "csek", true);
                    mt = cairn_mval_push_map(rep, mounts);
                    cairn_mval_put_str(rep, mt, "path", "/scratch");
                }
            }
            if (start + 2 < n) {
                snprintf(id, sizeof(id), "sb-%016x", start + 2);
                cairn_msg_set_str(rep, "next", id);
            }
            break;
        }
        case CAIRN_MSG_SANDBOX_MOUNT:
        case CAIRN_MSG_SANDBOX_UNMOUNT:
        case CAIRN_MSG_SANDBOX_SNAPSHOT_DIR:
        case CAIRN_MSG_SANDBOX_SNAPSHOT:
        case CAIRN_MSG_SANDBOX_RESTORE: {
            char rq[80], path[80], target[80];
            str_field(m, "req_id", rq, sizeof(rq));
            uint64_t wait = 0, count = 1;
            cairn_msg_opt_u64(m, "wait_ms", 0, &wait);
            cairn_msg_opt_u64(m, "count", 1, &count);
            if (!rq[0] || wait == 0)
                bad(f, "a job-starting request without req_id or wait_ms");
            str_field(m, "path", path, sizeof(path));
            str_field(m, t == CAIRN_MSG_SANDBOX_RESTORE ? "snapshot" : "sandbox", target, sizeof(target));
            str_field(m, "image", after, sizeof(after));
            pthread_mutex_lock(&f->mu);
            describe(m, f->last, sizeof(f->last));
            snprintf(f->last_req_id, sizeof(f->last_req_id), "%s", rq);
            if (t == CAIRN_MSG_SANDBOX_MOUNT && !strcmp(path, "/exists")) {
                pthread_mutex_unlock(&f->mu);
                rep = cairn_msg_reply(m, CAIRN_EEXIST, "a mount already exists at /exists in sb-1");
                break;
            }
            const char *kind = t == CAIRN_MSG_SANDBOX_MOUNT      ? "mount"
                               : t == CAIRN_MSG_SANDBOX_UNMOUNT  ? "umount"
                               : t == CAIRN_MSG_SANDBOX_SNAPSHOT ? "msnap"
                               : t == CAIRN_MSG_SANDBOX_RESTORE  ? "restore"
                                                                 : "sdir";
            const char *suffix = !strcmp(after, "im-00000000000000e1") ? "-fkey"
                                 : !strcmp(target, "sb-busy")          ? "-fbusy"
                                 : !strcmp(target, "sn-expired")       ? "-fexp"
                                 : !strcmp(path, "/alt")               ? "-alt"
                                                                       : "";
            snprintf(id, sizeof(id), "jb-%s-%d%s-c%llu", kind, f->njobs++, suffix, (unsigned long long)count);
            pthread_mutex_unlock(&f->mu);
            rep = job_reply(m, id, "queued"); /* the client has to poll */
            break;
        }
        case CAIRN_MSG_SNAPSHOT_LS: {
            str_field(m, "after", after, sizeof(after));
            int start = after[0] ? (int)strtol(after + 3, NULL, 16) : 0;
            rep = cairn_msg_reply(m, CAIRN_OK, NULL);
            struct cairn_mval *arr = cairn_msg_set_array(rep, "snapshots");
            for (int i = start; i < start + 2 && i < 3; i++)
                put_snapshot(rep, cairn_mval_push_map(rep, arr), i);
            if (start + 2 < 3) {
                snprintf(id, sizeof(id), "sn-%016x", start + 2);
                cairn_msg_set_str(rep, "next", id);
            }
            break;
        }
        case CAIRN_MSG_SNAPSHOT_SHOW:
        case CAIRN_MSG_SNAPSHOT_RM:
            str_field(m, "snapshot", id, sizeof(id));
            if (!strcmp(id, "sn-0000000000000002")) {
                rep = cairn_msg_reply(m, CAIRN_OK, NULL);
                if (t == CAIRN_MSG_SNAPSHOT_SHOW)
                    put_snapshot(rep, cairn_msg_set_map(rep, "snapshot"), 1);
            } else if (!strcmp(id, "sn-expired")) {
                rep = cairn_msg_reply(m, CAIRN_ENOTFOUND, "snapshot sn-expired expired on 2026-01-01T00:00:00Z");
            } else {
                char msg[160];
                snprintf(msg, sizeof(msg), "snapshot '%s' not found in app 'default'", id);
                rep = cairn_msg_reply(m, CAIRN_ENOTFOUND, msg);
            }
            break;
        default:
            rep = cairn_msg_reply(m, CAIRN_EUNSUPPORTED, "not in this test");
            break;
        }
        if (rep)
            send_reply(f, &rep);
        cairn_msg_destroy(&m);
    }
    return NULL;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    pthread_mutex_init(&f->mu, NULL);
    f->dir = tu_tempdir("client-sandbox-rpc");
    char pub[41];
    assert_int_equal(cairn_keypair_generate(tu_path("%s/client.key", f->dir), false, pub), CAIRN_OK);
    assert_int_equal(cairn_curve_keypair(&f->server), CAIRN_OK);
    assert_int_equal(cairn_curve_public_write(tu_path("%s/coordinator.pub", f->dir), f->server.public_z85), CAIRN_OK);
    assert_int_equal(cairn_net_new(&f->net), CAIRN_OK);
    const char *keys[1] = {pub};
    assert_int_equal(cairn_net_allow_set(f->net, "clients", keys, 1), CAIRN_OK);
    struct cairn_sock_opts so = {.hwm = 100000};
    assert_int_equal(cairn_sock_server(f->net, "tcp://127.0.0.1:*", &f->server, "clients", &so, &f->srv), CAIRN_OK);
    snprintf(f->endpoint, sizeof(f->endpoint), "%s", cairn_sock_endpoint(f->srv));
    assert_int_equal(pthread_create(&f->thread, NULL, server_main, f), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    atomic_store(&f->stop, true);
    pthread_join(f->thread, NULL);
    cairn_sock_destroy(&f->srv);
    cairn_net_destroy(&f->net);
    cairn_curve_keys_clear(&f->server);
    tu_rmrf(f->dir);
    free(f->dir);
    free(f->up);
    pthread_mutex_destroy(&f->mu);
    free(f);
    return 0;
}

static struct cairn_client *client(struct fx *f, unsigned timeout_ms)
{
    struct cairn_client_opts o = {
        .endpoint = f->endpoint,
        .coordinator_key_file = tu_path("%s/coordinator.pub", f->dir),
        .client_key_file = tu_path("%s/client.key", f->dir),
        .app = APP,
        .token = app_token,
        .token_len = sizeof(app_token),
        .timeout_ms = timeout_ms,
    };
    struct cairn_client *c = NULL;
    if (cairn_client_new(&o, &c) != CAIRN_OK)
        fail_msg("client_new: %s", cairn_err_msg());
    return c;
}

/* ---- import ---------------------------------------------------------------------------------- */

struct prog {
    int upload_calls, import_calls;
    uint64_t last_done;
};

static void on_progress(void *arg, const char *stage, uint64_t done, uint64_t total)
{
    struct prog *p = arg;
    (void)total;
    if (!strcmp(stage, "upload")) {
        p->upload_calls++;
        assert_true(done >= p->last_done);
        p->last_done = done;
    } else {
        assert_string_equal(stage, "import");
        p->import_calls++;
    }
}

/* Find an entry in the uploaded tar; returns its data (malloc) in *data when wanted. */
struct tar_entry {
    bool found;
    mode_t type, perm;
    int64_t uid, gid, size;
    bool uname, gname;
    char link[256], hardlink[256];
    bool sparse;
    char xattr[64];
    uint8_t *data;
    size_t len;
};

static struct tar_entry tar_find(const char *tar, const char *name)
{
    struct tar_entry t;
    memset(&t, 0, sizeof(t));
    struct archive *a = archive_read_new();
    archive_read_support_format_tar(a);
    assert_int_equal(archive_read_open_filename(a, tar, 65536), ARCHIVE_OK);
    struct archive_entry *e = NULL;
    while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
        char path[4096];
        snprintf(path, sizeof(path), "%s", archive_entry_pathname(e));
        size_t pl = strlen(path);
        if (pl > 1 && path[pl - 1] == '/') /* directories may carry a slash */
            path[pl - 1] = '\0';
        if (strcmp(path, name) != 0)
            continue;
        t.found = true;
        t.type = archive_entry_filetype(e);
        t.perm = archive_entry_perm(e);
        t.uid = archive_entry_uid(e);
        t.gid = archive_entry_gid(e);
        t.size = archive_entry_size(e);
        t.uname = archive_entry_uname(e) && *archive_entry_uname(e);
        t.gname = archive_entry_gname(e) && *archive_entry_gname(e);
        if (archive_entry_symlink(e))
            snprintf(t.link, sizeof(t.link), "%s", archive_entry_symlink(e));
        if (archive_entry_hardlink(e))
            snprintf(t.hardlink, sizeof(t.hardlink), "%s", archive_entry_hardlink(e));
        t.sparse = archive_entry_sparse_count(e) > 0;
        archive_entry_xattr_reset(e);
        const char *xn = NULL;
        const void *xv = NULL;
        size_t xl = 0;
        while (archive_entry_xattr_next(e, &xn, &xv, &xl) == ARCHIVE_OK)
            if (!strcmp(xn, "user.cairn"))
                snprintf(t.xattr, sizeof(t.xattr), "%.*s", (int)xl, (const char *)xv);
        if (t.type == AE_IFREG && t.size > 0) {
            t.data = calloc(1, (size_t)t.size);
            const void *buf = NULL;
            size_t len = 0;
            la_int64_t off = 0;
            while (archive_read_data_block(a, &buf, &len, &off) == ARCHIVE_OK) {
                assert_true(off + (int64_t)len <= t.size);
                memcpy(t.data + off, buf, len);
            }
            t.len = (size_t)t.size;
        }
        break;
    }
    archive_read_free(a);
    return t;
}

static void test_import_dir(void **state)
{
    struct fx *f = *state;
    char *src = tu_tempdir("import-src");
    uint64_t seed = 42;
    size_t big_len = 5u * 1024 * 1024 + 123;
    uint8_t *big = malloc(big_len);
    tu_fill_random(&seed, big, big_len);
    tu_write_file(tu_path("%s/big.bin", src), big, big_len);
    tu_write_file(tu_path("%s/empty", src), "", 0);
    assert_int_equal(mkdir(tu_path("%s/sub", src), 0750), 0);
    assert_int_equal(mkdir(tu_path("%s/sub/deeper", src), 0700), 0);
    tu_write_file(tu_path("%s/sub/deeper/hello.txt", src), "hello\n", 6);
    assert_int_equal(chmod(tu_path("%s/sub/deeper/hello.txt", src), 0640), 0);
    assert_int_equal(symlink("../big.bin", tu_path("%s/sub/link", src)), 0);
    assert_int_equal(link(tu_path("%s/sub/deeper/hello.txt", src), tu_path("%s/hard", src)), 0);
    assert_int_equal(mkfifo(tu_path("%s/fifo", src), 0600), 0);
    /* a sparse file: 64 MiB with 4 KiB of data in the middle */
    int fd = open(tu_path("%s/sparse", src), O_WRONLY | O_CREAT, 0644);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "middle", 6, 32u << 20), 6);
    assert_int_equal(ftruncate(fd, 64u << 20), 0);
    close(fd);
    tu_write_file(tu_path("%s/caf\xc3\xa9", src), "utf8\n", 5);   /* UTF-8 and raw bytes in names */
    tu_write_file(tu_path("%s/raw\xff\x01", src), "raw\n", 4);
    bool have_xattr = setxattr(tu_path("%s/empty", src), "user.cairn", "yes", 3, 0) == 0;
    /* a socket: tar cannot hold it, it is skipped */
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/sock", src);
    bool have_sock = strlen(src) + 6 < sizeof(sa.sun_path) && bind(s, (struct sockaddr *)&sa, sizeof(sa)) == 0;

    struct cairn_client *c = client(f, 5000);
    struct prog p;
    memset(&p, 0, sizeof(p));
    struct cairn_image_import_opts o = {.name = "mine", .piece_size = 1u << 20, .progress = on_progress,
                                        .progress_arg = &p};
    struct cairn_image_import_result r;
    int rc = cairn_image_import(c, src, &o, &r);
    if (rc != CAIRN_OK)
        fail_msg("import: %s", cairn_err_msg());
    assert_string_equal(r.id, "im-00000000000000aa");
    assert_string_equal(r.job, "jb-imp-0");
    assert_int_equal(r.bytes, f->uplen);
    assert_true(p.upload_calls >= 6); /* > 5 MiB in 1 MiB pieces */
    assert_int_equal(p.last_done, f->uplen);
    assert_true(p.import_calls >= 1);
    assert_int_equal(f->up_size, 0); /* a directory's tar has no size up front */
    assert_string_equal(f->up_name, "mine");
    assert_int_equal(strncmp(f->upload, "up-", 3), 0);
    assert_true(f->uplen < (8u << 20)); /* the sparse file's holes are not in the stream */

    const char *tar = tu_path("%s/upload.bin", f->dir);
    struct tar_entry t = tar_find(tar, "big.bin");
    assert_true(t.found);
    assert_int_equal(t.size, (int64_t)big_len);
    assert_memory_equal(t.data, big, big_len);
    assert_false(t.uname || t.gname); /* numeric owners only */
    assert_int_equal(t.uid, (int64_t)getuid());
    free(t.data);
    t = tar_find(tar, ".");
    assert_true(t.found);
    assert_int_equal(t.type, AE_IFDIR);
    /* hello.txt and hard are one file: whichever name comes first carries the data, the other links to it */
    t = tar_find(tar, "sub/deeper/hello.txt");
    struct tar_entry h = tar_find(tar, "hard");
    assert_true(t.found && h.found);
    assert_int_equal(t.perm, 0640);
    struct tar_entry *first = t.hardlink[0] ? &h : &t, *second = t.hardlink[0] ? &t : &h;
    assert_string_equal(second->hardlink, first == &t ? "sub/deeper/hello.txt" : "hard");
    assert_string_equal(first->hardlink, "");
    assert_non_null(first->data);
    assert_memory_equal(first->data, "hello\n", 6);
    assert_null(second->data);
    free(t.data);
    free(h.data);
    t = tar_find(tar, "sub/link");
    assert_int_equal(t.type, AE_IFLNK);
    assert_string_equal(t.link, "../big.bin");
    t = tar_find(tar, "sub/deeper");
    assert_int_equal(t.type, AE_IFDIR);
    assert_int_equal(t.perm, 0700);
    t = tar_find(tar, "fifo");
    assert_int_equal(t.type, AE_IFIFO);
    t = tar_find(tar, "sparse");
    assert_true(t.found);
    assert_int_equal(t.size, 64 << 20);
    assert_true(t.sparse);
    assert_memory_equal(t.data + (32u << 20), "middle", 6);
    assert_int_equal(t.data[0], 0);
    free(t.data);
    t = tar_find(tar, "caf\xc3\xa9");
    assert_true(t.found);
    assert_memory_equal(t.data, "utf8\n", 5);
    free(t.data);
    t = tar_find(tar, "raw\xff\x01");
    assert_true(t.found);
    assert_memory_equal(t.data, "raw\n", 4);
    free(t.data);
    if (have_xattr) {
        t = tar_find(tar, "empty");
        assert_string_equal(t.xattr, "yes");
    }
    if (have_sock)
        assert_false(tar_find(tar, "sock").found);
    assert_false(tar_find(tar, tu_path("%s", src + 1)).found); /* no absolute or host paths */

    /* a path that does not exist, and a fifo (neither a directory nor a file) */
    assert_int_equal(cairn_image_import(c, tu_path("%s/nope", src), NULL, &r), CAIRN_ENOTFOUND);
    assert_non_null(strstr(cairn_client_err_msg(c), "/nope"));
    assert_int_equal(cairn_image_import(c, tu_path("%s/fifo", src), NULL, &r), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_err_msg(), "neither a directory nor a regular file"));
    cairn_client_destroy(&c);
    close(s);
    free(big);
    tu_rmrf(src);
    free(src);
    assert_int_equal(atomic_load(&f->bad), 0);
}

static void test_import_tarball_retry(void **state)
{
    struct fx *f = *state;
    char *src = tu_tempdir("import-tgz");
    uint64_t seed = 7;
    size_t len = 3u * 1024 * 1024 + 5;
    uint8_t *data = malloc(len);
    tu_fill_random(&seed, data, len);
    tu_write_file(tu_path("%s/img.tar.zst", src), data, len);
    struct cairn_client *c = client(f, 400); /* a lost reply shows within 0.4 s */
    atomic_store(&f->drop_one_piece, true);
    atomic_store(&f->repeats, 0);
    struct cairn_image_import_opts o = {.piece_size = 1u << 20, .upload_id = "up-fixed-1"};
    struct cairn_image_import_result r;
    int rc = cairn_image_import(c, tu_path("%s/img.tar.zst", src), &o, &r);
    if (rc != CAIRN_OK)
        fail_msg("import: %s", cairn_err_msg());
    assert_string_equal(r.id, "im-00000000000000aa");
    assert_int_equal(r.bytes, len);
    assert_false(atomic_load(&f->drop_one_piece)); /* one reply was lost ... */
    assert_int_equal(atomic_load(&f->repeats), 1); /* ... and the piece acknowledged as a repeat */
    assert_string_equal(f->upload, "up-fixed-1");
    assert_int_equal(f->up_size, len);
    assert_string_equal(f->up_name, "");
    size_t n = 0;
    uint8_t *got = tu_read_file(tu_path("%s/upload.bin", f->dir), &n);
    assert_int_equal(n, len);
    assert_memory_equal(got, data, len);
    free(got);

    /* an exact multiple of the piece size, and an empty file: the last piece is marked */
    tu_write_file(tu_path("%s/two.tar", src), data, 2u << 20);
    o.upload_id = "up-fixed-2";
    assert_int_equal(cairn_image_import(c, tu_path("%s/two.tar", src), &o, &r), CAIRN_OK);
    assert_int_equal(r.bytes, 2u << 20);
    tu_write_file(tu_path("%s/empty.tar", src), "", 0);
    o.upload_id = "up-fixed-3";
    assert_int_equal(cairn_image_import(c, tu_path("%s/empty.tar", src), &o, &r), CAIRN_OK);
    assert_int_equal(r.bytes, 0);
    o.piece_size = 32u << 20;
    assert_int_equal(cairn_image_import(c, tu_path("%s/empty.tar", src), &o, &r), CAIRN_EINVAL);
    cairn_client_destroy(&c);
    free(data);
    tu_rmrf(src);
    free(src);
    assert_int_equal(atomic_load(&f->bad), 0);
}

/* ---- images ---------------------------------------------------------------------------------- */

static void test_images(void **state)
{
    struct fx *f = *state;
    struct cairn_client *c = client(f, 5000);
    struct cairn_image_list *l = NULL;
    assert_int_equal(cairn_image_ls(c, NULL, &l), CAIRN_OK);
    assert_int_equal(l->n, 4); /* two pages */
    assert_string_equal(l->images[0].id, "im-0000000000000001");
    assert_string_equal(l->images[0].name, "default");
    assert_string_equal(l->images[3].kind, "fs");
    assert_string_equal(l->images[3].parent, "im-0000000000000002");
    assert_string_equal(l->images[3].retention, "ttl:3600");
    assert_int_equal(l->images[2].files, 12);
    assert_int_equal(l->images[1].created_at_ns, 50000000000ll);
    cairn_image_list_free(&l);
    assert_null(l);

    struct cairn_image_info im;
    assert_int_equal(cairn_image_show(c, "im-0000000000000004", &im), CAIRN_OK);
    assert_string_equal(im.id, "im-0000000000000004");
    assert_int_equal(im.size, 4000);
    assert_int_equal(im.expires_at_ns, 4000000000000000000ll);
    assert_int_equal(cairn_image_show(c, "im-0000000000000009", &im), CAIRN_ENOTFOUND);
    assert_string_equal(cairn_client_err_msg(c), "image 'im-0000000000000009' not found in app 'default'");
    assert_int_equal(cairn_image_rm(c, "im-0000000000000004"), CAIRN_OK);
    assert_int_equal(cairn_image_rm(c, ""), CAIRN_EINVAL);

    char id[CAIRN_ID_MAX + 1];
    assert_int_equal(cairn_image_resolve(c, "default", id), CAIRN_OK);
    assert_string_equal(id, "im-0000000000000002"); /* the newest of that name */
    assert_int_equal(cairn_image_resolve(c, "other", id), CAIRN_OK);
    assert_string_equal(id, "im-0000000000000003");
    assert_int_equal(cairn_image_resolve(c, "im-00000000000000ff", id), CAIRN_OK);
    assert_string_equal(id, "im-00000000000000ff"); /* an id goes as it is */
    assert_int_equal(cairn_image_resolve(c, "nosuch", id), CAIRN_ENOTFOUND);
    assert_non_null(strstr(cairn_err_msg(), "no image named 'nosuch' in app 'default'"));
    cairn_client_destroy(&c);
    assert_int_equal(atomic_load(&f->bad), 0);
}

/* ---- sandboxes ------------------------------------------------------------------------------- */

struct collected {
    char out[256], err[256];
    size_t nout, nerr, calls;
    int stop_after; /* > 0: return EIO at that call */
};

static int collect(void *arg, int stream, const uint8_t *data, size_t len)
{
    struct collected *k = arg;
    k->calls++;
    if (k->stop_after && (int)k->calls == k->stop_after)
        return cairn_err_set(CAIRN_EIO, "stdout is gone");
    char *b = stream == 2 ? k->err : k->out;
    size_t *n = stream == 2 ? &k->nerr : &k->nout;
    assert_true(*n + len < sizeof(k->out));
    memcpy(b + *n, data, len);
    *n += len;
    return CAIRN_OK;
}

static void test_sandbox_calls(void **state)
{
    struct fx *f = *state;
    struct cairn_client *c = client(f, 5000);
    const char *cmd[] = {"sleep", "100"};
    const char *env[] = {"A=1", "B=two words"};
    struct cairn_sandbox_opts o = {.image = "other", .cmd = cmd, .ncmd = 2, .env = env, .nenv = 2, .workdir = "/w",
                                   .enable_snapshot = true, .gpu = 0, .worker = "w2", .req_id = "rq-create-1"};
    struct cairn_sandbox_ref sb;
    int rc = cairn_sandbox_create(c, &o, &sb);
    if (rc != CAIRN_OK)
        fail_msg("create: %s", cairn_err_msg());
    assert_string_equal(sb.id, "sb-00000000000000bb");
    assert_string_equal(sb.worker, "w2");
    assert_int_equal(strncmp(sb.job, "jb-create-", 10), 0);
    char sbid[CAIRN_ID_MAX + 1];
    snprintf(sbid, sizeof(sbid), "%s", sb.id);
    assert_string_equal(f->last, "image=im-0000000000000003;cmd=sleep,100;env=A=1,B=two words;workdir=/w;"
                                 "enable_snapshot=true;worker=w2;");
    /* defaults: nothing but the req_id (the coordinator picks the app's "default") */
    assert_int_equal(cairn_sandbox_create(c, NULL, &sb), CAIRN_OK);
    assert_string_equal(f->last, "");
    /* a failed job: its code and message */
    o = (struct cairn_sandbox_opts){.image = "im-ffffffffffffffff"};
    assert_int_equal(cairn_sandbox_create(c, &o, &sb), CAIRN_ENOTFOUND);
    assert_string_equal(cairn_client_err_msg(c), "image 'im-ffffffffffffffff' not found in app 'default'");
    o = (struct cairn_sandbox_opts){.image = "nosuchname"};
    assert_int_equal(cairn_sandbox_create(c, &o, &sb), CAIRN_ENOTFOUND);
    o = (struct cairn_sandbox_opts){.gpu = 17};
    assert_int_equal(cairn_sandbox_create(c, &o, &sb), CAIRN_EINVAL);
    o = (struct cairn_sandbox_opts){.workdir = "relative"};
    assert_int_equal(cairn_sandbox_create(c, &o, &sb), CAIRN_EINVAL);

    /* exec, collected */
    const char *echo[] = {"echo", "hi", "there"};
    struct cairn_exec_result *r = NULL;
    assert_int_equal(cairn_sandbox_exec(c, sbid, echo, 3, NULL, &r), CAIRN_OK);
    assert_int_equal(r->exit_code, 0);
    assert_string_equal((char *)r->out, "hi there\n");
    assert_int_equal(r->err_len, 0);
    assert_false(r->truncated);
    cairn_exec_result_free(&r);
    assert_null(r);
    const char *failing[] = {"fail"};
    assert_int_equal(cairn_sandbox_exec(c, sbid, failing, 1, NULL, &r), CAIRN_OK);
    assert_int_equal(r->exit_code, 3);
    assert_string_equal((char *)r->err, "boom\n");
    assert_true(r->truncated);
    cairn_exec_result_free(&r);
    const char *cat[] = {"cat"};
    const char *xenv[] = {"X=1"};
    struct cairn_exec_opts eo = {.stdin_data = (const uint8_t *)"from stdin", .stdin_len = 10, .env = xenv, .nenv = 1,
                                 .workdir = "/tmp", .timeout_ms = 3000};
    assert_int_equal(cairn_sandbox_exec(c, sbid, cat, 1, &eo, &r), CAIRN_OK);
    assert_int_equal(r->out_len, 10);
    assert_memory_equal(r->out, "from stdin", 10);
    cairn_exec_result_free(&r);
    assert_string_equal(f->last, "sandbox=sb-00000000000000bb;argv=cat;env=X=1;workdir=/tmp;stdin=from stdin;"
                                 "timeout_ms=3000;");
    assert_int_equal(cairn_sandbox_exec(c, "sb-missing", echo, 1, NULL, &r), CAIRN_ENOTFOUND);
    assert_null(r);
    assert_int_equal(cairn_sandbox_exec(c, sbid, echo, 0, NULL, &r), CAIRN_EINVAL);
    static uint8_t big_in[CAIRN_EXEC_STDIN_MAX + 1];
    eo = (struct cairn_exec_opts){.stdin_data = big_in, .stdin_len = sizeof(big_in)};
    assert_int_equal(cairn_sandbox_exec(c, sbid, cat, 1, &eo, &r), CAIRN_ETOOBIG);

    /* exec, streamed: in order although the server swaps pairs and repeats one */
    const char *count[] = {"count", "9"};
    struct collected k;
    memset(&k, 0, sizeof(k));
    int code = -1;
    rc = cairn_sandbox_exec_stream(c, sbid, count, 2, NULL, collect, &k, &code);
    if (rc != CAIRN_OK)
        fail_msg("stream: %s", cairn_err_msg());
    assert_int_equal(code, 7);
    assert_int_equal(k.calls, 9);
    assert_string_equal(k.out, "line 0\nline 2\nline 4\nline 6\nline 8\n");
    assert_string_equal(k.err, "line 1\nline 3\nline 5\nline 7\n");
    memset(&k, 0, sizeof(k));
    k.stop_after = 3;
    assert_int_equal(cairn_sandbox_exec_stream(c, sbid, count, 2, NULL, collect, &k, &code), CAIRN_EIO);
    assert_string_equal(cairn_client_err_msg(c), "stdout is gone");
    /* the client stays usable: the rest of that stream is dropped */
    memset(&k, 0, sizeof(k));
    assert_int_equal(cairn_sandbox_exec_stream(c, sbid, echo, 2, NULL, collect, &k, &code), CAIRN_OK);
    assert_int_equal(code, 0);
    assert_string_equal(k.out, "hi\n");
    assert_int_equal(cairn_sandbox_exec_stream(c, "sb-missing", echo, 2, NULL, collect, &k, &code), CAIRN_ENOTFOUND);
    assert_non_null(strstr(cairn_err_msg(), "sb-missing"));

    /* snapshot-fs, ls, terminate */
    struct cairn_snapshot_fs_result snap;
    assert_int_equal(cairn_sandbox_snapshot_fs(c, sbid, 3600, NULL, &snap), CAIRN_OK);
    assert_string_equal(snap.image, "im-00000000000000cc");
    assert_int_equal(snap.pause_ms, 12);
    assert_string_equal(f->last, "sandbox=sb-00000000000000bb;ttl_s=3600;");
    struct cairn_sandbox_list *l = NULL;
    assert_int_equal(cairn_sandbox_ls(c, false, &l), CAIRN_OK);
    assert_int_equal(l->n, 2);
    assert_string_equal(l->sandboxes[1].worker, "w1");
    assert_true(l->sandboxes[1].enable_snapshot);
    assert_int_equal(l->sandboxes[0].nmounts, 0);
    assert_int_equal(l->sandboxes[1].nmounts, 2);
    assert_string_equal(l->sandboxes[1].mounts[0].path, "/data");
    assert_string_equal(l->sandboxes[1].mounts[0].image, "im-00000000000000e1");
    assert_true(l->sandboxes[1].mounts[0].csek);
    assert_string_equal(l->sandboxes[1].mounts[1].path, "/scratch");
    assert_string_equal(l->sandboxes[1].mounts[1].image, "");
    assert_false(l->sandboxes[1].mounts[1].csek);
    cairn_sandbox_list_free(&l);
    assert_int_equal(cairn_sandbox_ls(c, true, &l), CAIRN_OK);
    assert_int_equal(l->n, 3);
    assert_string_equal(l->sandboxes[2].state, "terminated");
    cairn_sandbox_list_free(&l);
    assert_int_equal(cairn_sandbox_terminate(c, sbid, "rq-term-1"), CAIRN_OK);
    assert_string_equal(f->last, "sandbox=sb-00000000000000bb;");
    assert_int_equal(cairn_sandbox_terminate(c, "", NULL), CAIRN_EINVAL);
    cairn_client_destroy(&c);
    assert_int_equal(atomic_load(&f->bad), 0);
}

/* ---- mounts, directory and memory snapshots (issues 5, 6) ------------------------------------ */

struct stages {
    char seen[256];
    int calls;
};

static void on_stage(void *arg, const char *stage, uint64_t done, uint64_t total)
{
    struct stages *st = arg;
    (void)done;
    (void)total;
    st->calls++;
    char item[64];
    snprintf(item, sizeof(item), ";%s;", stage);
    char all[300];
    snprintf(all, sizeof(all), ";%s", st->seen); /* each stage once, in order of first report */
    if (!strstr(all, item)) {
        size_t n = strlen(st->seen);
        snprintf(st->seen + n, sizeof(st->seen) - n, "%s;", stage);
    }
}

static void test_snapshot_calls(void **state)
{
    struct fx *f = *state;
    struct cairn_client *c = client(f, 5000);
    static const uint8_t key[20] = "0123456789abcdefKEY!";
    struct stages st;
    memset(&st, 0, sizeof(st));
    cairn_client_progress_set(c, on_stage, &st);

    /* mount: an image by name (resolved to its id), the key in `key` only, a req_id always */
    int rc = cairn_sandbox_mount(c, "sb-1", "/data", "other", key, sizeof(key), "rq-mount-1");
    if (rc != CAIRN_OK)
        fail_msg("mount: %s", cairn_err_msg());
    assert_string_equal(f->last, "sandbox=sb-1;path=/data;image=im-0000000000000003;key=0123456789abcdefKEY!;");
    assert_string_equal(f->last_req_id, "rq-mount-1");
    /* an empty mount, a fresh req_id */
    assert_int_equal(cairn_sandbox_mount(c, "sb-1", "/scratch", NULL, NULL, 0, NULL), CAIRN_OK);
    assert_string_equal(f->last, "sandbox=sb-1;path=/scratch;");
    assert_int_equal(strncmp(f->last_req_id, "rq-", 3), 0);
    assert_string_equal(st.seen, "mount;"); /* progress names the operation */
    /* the coordinator's refusal and a failed job keep their code and message */
    assert_int_equal(cairn_sandbox_mount(c, "sb-1", "/exists", NULL, NULL, 0, NULL), CAIRN_EEXIST);
    assert_string_equal(cairn_client_err_msg(c), "a mount already exists at /exists in sb-1");
    assert_int_equal(cairn_sandbox_mount(c, "sb-1", "/d", "im-00000000000000e1", key, 16, NULL), CAIRN_EKEY);
    assert_string_equal(cairn_client_err_msg(c), "wrong encryption key for image im-00000000000000e1");

    /* keys of a bad size, bad paths: refused before anything is sent, with cairn_csek_validate's words */
    snprintf(f->last, sizeof(f->last), "untouched");
    static const uint8_t big[600];
    static const struct {
        const uint8_t *key;
        size_t len;
        const char *path, *msg;
    } refused[] = {
        {key, 0, "/d", "encryption key is empty"},
        {key, 15, "/d", "encryption key is too short: 15 bytes (at least 16)"},
        {big, 513, "/d", "encryption key is too long: 513 bytes (at most 512)"},
        {NULL, 5, "/d", "a key length without a key"},
        {NULL, 0, "relative/d", "is not absolute"},
        {NULL, 0, "/", "cannot be '/'"},
        {NULL, 0, "", "no path given"},
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        rc = cairn_sandbox_mount(c, "sb-1", refused[i].path, NULL, refused[i].key, refused[i].len, NULL);
        if (rc != CAIRN_EINVAL || !strstr(cairn_client_err_msg(c), refused[i].msg))
            fail_msg("mount case %zu: %d '%s'", i, rc, cairn_client_err_msg(c));
        char id[CAIRN_ID_MAX + 1] = "x";
        rc = cairn_sandbox_snapshot_dir(c, "sb-1", refused[i].path, refused[i].key, refused[i].len, 0, NULL, id);
        if (rc != CAIRN_EINVAL || !strstr(cairn_client_err_msg(c), refused[i].msg) || id[0])
            fail_msg("snapshot-dir case %zu: %d '%s'", i, rc, cairn_client_err_msg(c));
    }
    assert_string_equal(cairn_client_err_msg(c), "sandbox snapshot-dir: no path given");
    rc = cairn_sandbox_mount(c, "sb-1", "/d", NULL, key, 15, NULL);
    assert_string_equal(cairn_client_err_msg(c), "encryption key is too short: 15 bytes (at least 16)");
    assert_string_equal(f->last, "untouched"); /* nothing reached the coordinator */

    /* unmount */
    assert_int_equal(cairn_sandbox_unmount(c, "sb-1", "/data", "rq-um-1"), CAIRN_OK);
    assert_string_equal(f->last, "sandbox=sb-1;path=/data;");
    assert_string_equal(f->last_req_id, "rq-um-1");
    assert_int_equal(cairn_sandbox_unmount(c, "sb-1", "data", NULL), CAIRN_EINVAL);

    /* snapshot-dir: key and ttl on the wire; "id" or the agreement's "image" */
    char id[CAIRN_ID_MAX + 1];
    assert_int_equal(cairn_sandbox_snapshot_dir(c, "sb-1", "/data", key, 16, 3600, "rq-sd-1", id), CAIRN_OK);
    assert_string_equal(id, "im-00000000000000dd");
    assert_string_equal(f->last, "sandbox=sb-1;path=/data;key=0123456789abcdef;ttl_s=3600;");
    assert_int_equal(cairn_sandbox_snapshot_dir(c, "sb-1", "/alt", NULL, 0, 0, NULL, id), CAIRN_OK);
    assert_string_equal(id, "im-00000000000000dd");
    assert_string_equal(f->last, "sandbox=sb-1;path=/alt;");
    assert_int_equal(cairn_sandbox_snapshot_dir(c, "sb-1", "/d", NULL, 0, 3153600001ull, NULL, id), CAIRN_EINVAL);

    /* memory snapshot */
    assert_int_equal(cairn_sandbox_snapshot(c, "sb-1", "rq-ms-1", id), CAIRN_OK);
    assert_string_equal(id, "sn-00000000000000ee");
    assert_string_equal(f->last, "sandbox=sb-1;");
    assert_string_equal(f->last_req_id, "rq-ms-1");
    assert_int_equal(cairn_sandbox_snapshot(c, "sb-busy", NULL, id), CAIRN_EBUSY);
    assert_string_equal(id, "");
    assert_non_null(strstr(cairn_client_err_msg(c), "an exec is still running in sb-busy"));
    assert_int_equal(cairn_sandbox_snapshot(c, "", NULL, id), CAIRN_EINVAL);

    /* restore: one, then four pinned to a worker */
    struct cairn_restore_result *r = NULL;
    assert_int_equal(cairn_sandbox_restore(c, "sn-00000000000000ee", 0, NULL, "rq-rs-1", &r), CAIRN_OK);
    assert_int_equal(r->n, 1);
    assert_string_equal(r->ids[0], "sb-0000000000000101");
    assert_string_equal(r->workers[0], "w1");
    assert_int_equal(strncmp(r->job, "jb-restore-", 11), 0);
    assert_string_equal(f->last, "snapshot=sn-00000000000000ee;");
    cairn_restore_result_free(&r);
    assert_null(r);
    assert_int_equal(cairn_sandbox_restore(c, "sn-00000000000000ee", 4, "w2", NULL, &r), CAIRN_OK);
    assert_int_equal(r->n, 4);
    assert_string_equal(r->ids[3], "sb-0000000000000104");
    assert_string_equal(r->workers[2], "w3");
    assert_string_equal(f->last, "snapshot=sn-00000000000000ee;count=4;worker=w2;");
    cairn_restore_result_free(&r);
    assert_int_equal(cairn_sandbox_restore(c, "sn-expired", 1, NULL, NULL, &r), CAIRN_ENOTFOUND);
    assert_null(r);
    assert_string_equal(cairn_client_err_msg(c), "snapshot sn-expired expired on 2026-01-01T00:00:00Z");
    assert_int_equal(cairn_sandbox_restore(c, "sn-1", 257, NULL, NULL, &r), CAIRN_EINVAL);
    cairn_restore_result_free(&r); /* NULL-safe */
    assert_string_equal(st.seen, "mount;unmount;snapshot-dir;snapshot;restore;");

    /* snapshot ls (two pages), show (mounts), rm */
    struct cairn_snapshot_list *l = NULL;
    assert_int_equal(cairn_snapshot_ls(c, &l), CAIRN_OK);
    assert_int_equal(l->n, 3);
    assert_string_equal(l->snapshots[2].id, "sn-0000000000000003");
    assert_string_equal(l->snapshots[1].mounts[1], "/cache");
    assert_int_equal(l->snapshots[1].nmounts, 2);
    assert_int_equal(l->snapshots[0].nmounts, 0);
    assert_string_equal(l->snapshots[0].fingerprint, "runsc-1+cpu-abc");
    cairn_snapshot_list_free(&l);
    assert_null(l);
    struct cairn_snapshot_info *sn = NULL;
    assert_int_equal(cairn_snapshot_show(c, "sn-0000000000000002", &sn), CAIRN_OK);
    assert_string_equal(sn->parent, "sn-0000000000000001");
    assert_string_equal(sn->image, "im-0000000000000002");
    assert_int_equal(sn->size, 200u << 20);
    assert_int_equal(sn->expires_at_ns, 2000000000ll + 604800000000000ll);
    assert_int_equal(sn->nmounts, 2);
    assert_string_equal(sn->mounts[0], "/data");
    cairn_snapshot_info_free(&sn);
    assert_null(sn);
    assert_int_equal(cairn_snapshot_show(c, "sn-expired", &sn), CAIRN_ENOTFOUND);
    assert_null(sn);
    assert_non_null(strstr(cairn_client_err_msg(c), "expired on"));
    assert_int_equal(cairn_snapshot_rm(c, "sn-0000000000000002"), CAIRN_OK);
    assert_int_equal(cairn_snapshot_rm(c, "sn-0000000000000009"), CAIRN_ENOTFOUND);
    assert_int_equal(cairn_snapshot_rm(c, NULL), CAIRN_EINVAL);

    /* sandbox create: snapshots and GPUs exclude each other (said before any round trip) */
    struct cairn_sandbox_opts o = {.enable_snapshot = true, .gpu = 1};
    struct cairn_sandbox_ref sb;
    snprintf(f->last, sizeof(f->last), "untouched");
    assert_int_equal(cairn_sandbox_create(c, &o, &sb), CAIRN_EINVAL);
    assert_string_equal(cairn_client_err_msg(c), "sandboxes with snapshots enabled cannot have GPUs");
    assert_string_equal(f->last, "untouched");
    /* no key bytes in any message the client kept */
    assert_null(strstr(cairn_client_err_msg(c), "KEY!"));
    cairn_client_destroy(&c);
    assert_int_equal(atomic_load(&f->bad), 0);
}

/* ---- the CLI --------------------------------------------------------------------------------- */

struct run {
    int status;
    char *out, *err;
};

static char *slurp(const char *path)
{
    size_t n = 0;
    uint8_t *d = tu_read_file(path, &n);
    char *s = calloc(1, n + 1);
    if (d)
        memcpy(s, d, n);
    free(d);
    return s;
}

/* `cairn ARGS` with the fake coordinator's environment; STDIN is a shell redirection or pipe source. */
static struct run cli(struct fx *f, const char *pre, const char *args)
{
    char tok[65];
    cairn_hex_encode(tok, app_token, sizeof(app_token));
    struct run r;
    r.status = tu_sh("cd '%s' && %s env -u CAIRN_TOKEN_FILE CAIRN_COORDINATOR='%s' CAIRN_COORDINATOR_KEY=coordinator.pub "
                     "CAIRN_CLIENT_KEY=client.key CAIRN_APP=default CAIRN_TOKEN=%s CAIRN_TIMEOUT_MS=5000 "
                     "'%s' %s >out.txt 2>err.txt",
                     f->dir, pre, f->endpoint, tok, CAIRN_CLI_PATH, args);
    r.out = slurp(tu_path("%s/out.txt", f->dir));
    r.err = slurp(tu_path("%s/err.txt", f->dir));
    return r;
}

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
}

static void expect(struct run *r, int status, const char *out, const char *err_needle)
{
    if (r->status != status || (out && strcmp(r->out, out) != 0) || (err_needle && !strstr(r->err, err_needle)))
        fail_msg("status %d (wanted %d), stdout '%s' (wanted '%s'), stderr '%s' (wanted '%s')", r->status, status,
                 r->out, out ? out : "*", r->err, err_needle ? err_needle : "*");
    run_free(r);
}

static void test_cli(void **state)
{
    struct fx *f = *state;
    char *src = tu_tempdir("cli-src");
    tu_write_file(tu_path("%s/a", src), "a\n", 2);
    char args[512];
    snprintf(args, sizeof(args), "image import '%s' --name base1 </dev/null", src);
    struct run r = cli(f, "", args);
    expect(&r, 0, "im-00000000000000aa\n", NULL);
    assert_string_equal(f->up_name, "base1");
    snprintf(args, sizeof(args), "--json image import '%s'", src);
    r = cli(f, "", args);
    assert_non_null(strstr(r.out, "{\"id\":\"im-00000000000000aa\",\"job\":\"jb-imp-"));
    expect(&r, 0, NULL, NULL);
    r = cli(f, "", "image import /nonexistent/x.tar");
    expect(&r, 5, "", "cairn: ENOTFOUND: image import: '/nonexistent/x.tar'");

    r = cli(f, "", "image ls");
    assert_non_null(strstr(r.out, "im-0000000000000003  base  other"));
    expect(&r, 0, NULL, NULL);
    r = cli(f, "", "image ls --json");
    const char *want = "{\"images\":[{\"id\":\"im-0000000000000001\",\"kind\":\"base\",\"name\":\"default\",";
    assert_int_equal(strncmp(r.out, want, strlen(want)), 0);
    assert_non_null(strstr(r.out, "\"parent\":\"im-0000000000000002\""));
    expect(&r, 0, NULL, NULL);
    r = cli(f, "", "--json image show im-0000000000000004");
    assert_non_null(strstr(r.out, "\"retention\":\"ttl:3600\",\"size\":4000,\"files\":13,\"stored\":500}\n"));
    expect(&r, 0, NULL, NULL);
    r = cli(f, "", "image show im-0000000000000009");
    expect(&r, 5, "", "cairn: ENOTFOUND: image 'im-0000000000000009' not found in app 'default'");
    r = cli(f, "", "image rm im-0000000000000004");
    expect(&r, 0, "im-0000000000000004\n", NULL);

    r = cli(f, "", "sandbox create --image other --env A=1 --env B=2 --workdir /w --worker w2 --enable-snapshot "
                   "-- sh -c 'sleep 1000' --not-ours");
    expect(&r, 0, "sb-00000000000000bb\n", NULL);
    assert_string_equal(f->last, "image=im-0000000000000003;cmd=sh,-c,sleep 1000,--not-ours;env=A=1,B=2;workdir=/w;"
                                 "enable_snapshot=true;worker=w2;");
    r = cli(f, "", "--json sandbox create --gpu 2");
    assert_non_null(strstr(r.out, "{\"id\":\"sb-00000000000000bb\",\"worker\":\"w2\",\"job\":\"jb-create-"));
    expect(&r, 0, NULL, NULL);
    r = cli(f, "", "sandbox create --json --gpu 2");
    assert_non_null(strstr(r.out, "\"worker\":\"w2\""));
    run_free(&r);
    assert_string_equal(f->last, "gpu=2;");
    r = cli(f, "", "sandbox create --image im-ffffffffffffffff");
    expect(&r, 5, "", "cairn: ENOTFOUND: image 'im-ffffffffffffffff' not found in app 'default'\n");

    /* exec: streams to our stdout/stderr, our exit code is the command's */
    r = cli(f, "", "sandbox exec sb-1 -- echo hello world </dev/null");
    expect(&r, 0, "hello world\n", NULL);
    r = cli(f, "", "sandbox exec sb-1 -- fail </dev/null");
    expect(&r, 3, "", "boom\n");
    r = cli(f, "", "sandbox exec sb-1 -- nosuchcmd </dev/null");
    expect(&r, 127, "", "nosuchcmd: not found");
    r = cli(f, "printf 'piped input' |", "sandbox exec sb-1 -- cat");
    expect(&r, 0, "piped input", NULL);
    r = cli(f, "", "sandbox exec sb-1 -- count 6 </dev/null");
    expect(&r, 7, "line 0\nline 2\nline 4\n", NULL);
    r = cli(f, "", "sandbox exec sb-1 -- big </dev/null");
    assert_int_equal(r.status, 0);
    assert_int_equal(strlen(r.out), 24 << 20);
    assert_memory_equal(r.out + (5 << 20), "abcdef", 6);
    run_free(&r);
    r = cli(f, "", "sandbox exec sb-1 --timeout 90s --env K=V --workdir /srv -- env </dev/null");
    expect(&r, 0, "sandbox=sb-1;argv=env;env=K=V;workdir=/srv;stdin=;timeout_ms=90000;", NULL);
    r = cli(f, "", "sandbox exec sb-missing -- echo x </dev/null");
    expect(&r, 5, "", "cairn: ENOTFOUND: sandbox 'sb-missing' not found in app 'default'");
    /* --json: the collected call, exit 0 whatever the command's code; non-UTF-8 bytes escaped */
    r = cli(f, "", "--json sandbox exec sb-1 -- fail </dev/null");
    expect(&r, 0, "{\"exit_code\":3,\"stdout\":\"\",\"stderr\":\"boom\\n\",\"truncated\":true}\n", NULL);
    r = cli(f, "", "sandbox exec sb-1 --json -- bin </dev/null");
    expect(&r, 0, "{\"exit_code\":0,\"stdout\":\"\\ufffd\\u0000a\\n\",\"stderr\":\"\"}\n", NULL);
    r = cli(f, "", "sandbox exec sb-1 -- --json </dev/null"); /* after `--`, even --json is the command's */
    expect(&r, 127, "", "--json: not found");

    r = cli(f, "", "sandbox snapshot-fs sb-1 --ttl 2h");
    expect(&r, 0, "im-00000000000000cc\n", "pause: 12 ms\n");
    assert_string_equal(f->last, "sandbox=sb-1;ttl_s=7200;");
    r = cli(f, "", "--json sandbox snapshot-fs sb-1");
    expect(&r, 0, NULL, NULL);
    assert_string_equal(f->last, "sandbox=sb-1;");
    r = cli(f, "", "sandbox ls");
    assert_non_null(strstr(r.out, "sb-0000000000000002  running     w1"));
    assert_null(strstr(r.out, "terminated"));
    expect(&r, 0, NULL, NULL);
    r = cli(f, "", "sandbox ls --all --json");
    assert_non_null(strstr(r.out, "{\"id\":\"sb-0000000000000003\",\"state\":\"terminated\""));
    assert_non_null(strstr(r.out, "\"mounts\":[{\"path\":\"/data\",\"image\":\"im-00000000000000e1\",\"csek\":true},"
                                  "{\"path\":\"/scratch\",\"csek\":false}]}"));
    expect(&r, 0, NULL, NULL);
    r = cli(f, "", "sandbox terminate sb-1");
    expect(&r, 0, "sb-1\n", NULL);
    r = cli(f, "", "--json sandbox terminate sb-1");
    expect(&r, 0, "{\"id\":\"sb-1\",\"state\":\"terminated\"}\n", NULL);
    tu_rmrf(src);
    free(src);
    assert_int_equal(atomic_load(&f->bad), 0);
}


static void test_cli_snapshots(void **state)
{
    struct fx *f = *state;
    static const char keytext[] = "cli-key-0123456789-SECRET";
    tu_write_file(tu_path("%s/good.key", f->dir), keytext, strlen(keytext));
    tu_write_file(tu_path("%s/short.key", f->dir), keytext, 15);

    struct run r = cli(f, "", "sandbox mount sb-1 /data other --key-file good.key");
    expect(&r, 0, "/data\n", NULL);
    assert_string_equal(f->last, "sandbox=sb-1;path=/data;image=im-0000000000000003;key=cli-key-0123456789-SECRET;");
    r = cli(f, "", "--json sandbox mount sb-1 /empty");
    expect(&r, 0, "{\"sandbox\":\"sb-1\",\"path\":\"/empty\",\"csek\":false,\"mounted\":true}\n", NULL);
    assert_string_equal(f->last, "sandbox=sb-1;path=/empty;");
    r = cli(f, "", "sandbox mount sb-1 /data im-00000000000000e1 --key-file good.key --json");
    expect(&r, 8, "{\"error\":{\"code\":8,\"name\":\"EKEY\",\"message\":\"wrong encryption key for image "
                  "im-00000000000000e1\"}}\n", NULL);
    r = cli(f, "", "sandbox mount sb-1 /exists");
    expect(&r, 6, "", "cairn: EEXIST: a mount already exists at /exists in sb-1\n");
    snprintf(f->last, sizeof(f->last), "untouched");
    r = cli(f, "", "sandbox mount sb-1 /data other --key-file short.key");
    expect(&r, 1, "", "cairn: EINVAL: encryption key is too short: 15 bytes (at least 16)\n");
    r = cli(f, "", "sandbox mount sb-1 relative");
    expect(&r, 1, "", "is not absolute");
    assert_string_equal(f->last, "untouched");

    r = cli(f, "", "sandbox unmount sb-1 /data");
    expect(&r, 0, "/data\n", NULL);
    r = cli(f, "", "--json sandbox unmount sb-1 /data");
    expect(&r, 0, "{\"sandbox\":\"sb-1\",\"path\":\"/data\",\"unmounted\":true}\n", NULL);

    r = cli(f, "", "sandbox snapshot-dir sb-1 /data --key-file good.key --ttl 2h");
    expect(&r, 0, "im-00000000000000dd\n", NULL);
    assert_string_equal(f->last, "sandbox=sb-1;path=/data;key=cli-key-0123456789-SECRET;ttl_s=7200;");
    r = cli(f, "", "--json sandbox snapshot-dir sb-1 /data --key-file good.key");
    expect(&r, 0, "{\"id\":\"im-00000000000000dd\",\"sandbox\":\"sb-1\",\"path\":\"/data\",\"encryption\":\"csek\"}\n",
           NULL);
    r = cli(f, "", "--json sandbox snapshot-dir sb-1 /data --ttl 1d");
    expect(&r, 0, "{\"id\":\"im-00000000000000dd\",\"sandbox\":\"sb-1\",\"path\":\"/data\",\"encryption\":\"managed\","
                  "\"ttl_s\":86400}\n", NULL);

    r = cli(f, "", "sandbox snapshot sb-1");
    expect(&r, 0, "sn-00000000000000ee\n", NULL);
    r = cli(f, "", "--json sandbox snapshot sb-1");
    expect(&r, 0, "{\"id\":\"sn-00000000000000ee\",\"sandbox\":\"sb-1\"}\n", NULL);
    r = cli(f, "", "sandbox snapshot sb-busy");
    expect(&r, 19, "", "cairn: EBUSY: an exec is still running in sb-busy");

    r = cli(f, "", "sandbox restore sn-00000000000000ee --count 3");
    expect(&r, 0, "sb-0000000000000101\nsb-0000000000000102\nsb-0000000000000103\n", NULL);
    assert_string_equal(f->last, "snapshot=sn-00000000000000ee;count=3;");
    r = cli(f, "", "--json sandbox restore sn-00000000000000ee --count 2 --worker w2");
    assert_non_null(strstr(r.out, "{\"id\":\"sb-0000000000000101\",\"ids\":[\"sb-0000000000000101\","
                                  "\"sb-0000000000000102\"],\"workers\":[\"w1\",\"w2\"],"
                                  "\"snapshot\":\"sn-00000000000000ee\",\"job\":\"jb-restore-"));
    expect(&r, 0, NULL, NULL);
    assert_string_equal(f->last, "snapshot=sn-00000000000000ee;count=2;worker=w2;");
    r = cli(f, "", "sandbox restore sn-00000000000000ee");
    expect(&r, 0, "sb-0000000000000101\n", NULL);
    r = cli(f, "", "sandbox restore sn-expired --json");
    expect(&r, 5, "{\"error\":{\"code\":5,\"name\":\"ENOTFOUND\",\"message\":\"snapshot sn-expired expired on "
                  "2026-01-01T00:00:00Z\"}}\n", NULL);

    r = cli(f, "", "snapshot ls");
    assert_non_null(strstr(r.out, "sn-0000000000000002  sb-0000000000000001   200.0 MiB       2"));
    assert_non_null(strstr(r.out, "sn-0000000000000003"));
    expect(&r, 0, NULL, NULL);
    r = cli(f, "", "snapshot ls --json");
    const char *want = "{\"snapshots\":[{\"id\":\"sn-0000000000000001\",\"sandbox\":\"sb-0000000000000001\","
                       "\"image\":\"im-0000000000000002\",\"fingerprint\":\"runsc-1+cpu-abc\",\"created_at\":1000000000,"
                       "\"expires_at\":604801000000000,\"size\":209715200,\"stored\":1000,\"mounts\":[]},";
    assert_int_equal(strncmp(r.out, want, strlen(want)), 0);
    assert_non_null(strstr(r.out, "\"mounts\":[\"/data\",\"/cache\"]"));
    expect(&r, 0, NULL, NULL);
    r = cli(f, "", "--json snapshot show sn-0000000000000002");
    expect(&r, 0, "{\"id\":\"sn-0000000000000002\",\"sandbox\":\"sb-0000000000000001\",\"image\":\"im-0000000000000002\","
                  "\"parent\":\"sn-0000000000000001\",\"fingerprint\":\"runsc-1+cpu-abc\",\"created_at\":2000000000,"
                  "\"expires_at\":604802000000000,\"size\":209715200,\"stored\":2000,\"mounts\":[\"/data\",\"/cache\"]}\n",
           NULL);
    r = cli(f, "", "snapshot show sn-0000000000000002");
    assert_non_null(strstr(r.out, "mounts:      /data /cache\n"));
    assert_non_null(strstr(r.out, "parent:      sn-0000000000000001\n"));
    expect(&r, 0, NULL, NULL);
    r = cli(f, "", "snapshot show sn-expired");
    expect(&r, 5, "", "cairn: ENOTFOUND: snapshot sn-expired expired on 2026-01-01T00:00:00Z\n");
    r = cli(f, "", "snapshot rm sn-0000000000000002");
    expect(&r, 0, "sn-0000000000000002\n", NULL);
    r = cli(f, "", "--json snapshot rm sn-0000000000000002");
    expect(&r, 0, "{\"id\":\"sn-0000000000000002\",\"removed\":true}\n", NULL);
    r = cli(f, "", "sandbox create --enable-snapshot --gpu 1");
    expect(&r, 1, "", "cairn: EINVAL: sandboxes with snapshots enabled cannot have GPUs\n");
    assert_int_equal(atomic_load(&f->bad), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_import_dir),
        cmocka_unit_test(test_import_tarball_retry),
        cmocka_unit_test(test_images),
        cmocka_unit_test(test_sandbox_calls),
        cmocka_unit_test(test_cli),
        cmocka_unit_test(test_snapshot_calls),
        cmocka_unit_test(test_cli_snapshots),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
