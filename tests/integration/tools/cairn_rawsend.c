/*
 * cairn_rawsend: send malformed frames to a cairn daemon and check that it survives them
 * (tests/integration/test_cluster_malformed.sh; PROTOCOL.md sections 3 and 4).
 *
 * It connects like any client (cairn/transport.h: a CURVE DEALER with a key pair that must be on the
 * server's allow-list, pinning the server's public key) and sends raw frames with cairn_sock_send_raw,
 * so nothing is validated on the way out: truncated envelopes, counts and lengths far beyond the bytes
 * present, wrong field types, unknown versions and types, too many frames, messages of the wrong
 * direction, then a few hundred seeded random and mutated frames. Then it sends one valid request
 * (ping to the coordinator, chunk.has to a worker's peer socket) and waits for its answer.
 *
 * What counts as correct, case by case:
 *   - every reply to a malformed message is an error reply (code != 0), or there is no reply at all
 *     (PROTOCOL.md: bytes that do not even yield a rid are dropped);
 *   - the cases the spec pins get exactly the pinned answer: another version -> EVERSION, an unknown
 *     type -> EPROTO, a wrong field type -> EPROTO, a count over a field's limit -> ETOOBIG, a
 *     chunk.put frame that fails its checksum -> status ECORRUPT and the chunk is not held afterwards;
 *   - every reply the daemon sends decodes;
 *   - the final valid request is answered with code 0.
 * Mutated and random frames may happen to stay valid (a ping with one rid byte flipped is still a
 * ping), so their replies are only counted.
 *
 * Output: one line per case that failed (and per case with --verbose), then a summary line of JSON
 * on stdout. Exit 0 when every check held, 1 when one failed, 2 on a usage or setup error.
 */
#include "cairn/prelude.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/crypto.h"
#include "cairn/err.h"
#include "cairn/transport.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define RID_BASE 0x5a000000u
#define RID_FINAL 0x5affffffu
#define RID_MUTATED 0x3c3c3c3c3c3c3c3cull
#define MAX_CASES 4096
#define NAME_MAX_LEN 64

enum target { T_CLIENT, T_PEER };

/* What a case expects of the daemon. */
enum expect {
    X_ERR_OR_DROP = 0, /* an error reply or nothing */
    X_MUST,            /* an error reply with code `code` */
    X_ANY,             /* anything (mutated / random frames that may still be valid) */
};

struct ccase {
    char name[NAME_MAX_LEN];
    uint64_t rid;   /* 0: no rid we can match */
    enum expect ex;
    int code;       /* X_MUST: the code */
    bool replied;
    int got;        /* code of the reply */
};

static struct ccase g_cases[MAX_CASES];
static size_t g_ncases;
static uint64_t g_next_rid = RID_BASE;
static bool g_verbose;
static unsigned g_replies, g_error_replies, g_bad_replies, g_unmatched, g_undecodable;

/* ---- a minimal msgpack writer: exactly the bytes we ask for, valid or not ---- */

struct w {
    struct cairn_buf b;
    int err;
};

static void w_bytes(struct w *w, const void *p, size_t n)
{
    if (!w->err)
        w->err = cairn_buf_append(&w->b, p, n);
}
static void w_u8(struct w *w, uint8_t v) { w_bytes(w, &v, 1); }
static void w_be(struct w *w, uint64_t v, int n)
{
    uint8_t t[8];
    for (int i = 0; i < n; i++)
        t[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    w_bytes(w, t, (size_t)n);
}
static void w_uint(struct w *w, uint64_t v)
{
    if (v < 128) {
        w_u8(w, (uint8_t)v);
    } else if (v <= 0xff) {
        w_u8(w, 0xcc);
        w_be(w, v, 1);
    } else if (v <= 0xffff) {
        w_u8(w, 0xcd);
        w_be(w, v, 2);
    } else if (v <= 0xffffffffu) {
        w_u8(w, 0xce);
        w_be(w, v, 4);
    } else {
        w_u8(w, 0xcf);
        w_be(w, v, 8);
    }
}
static void w_neg(struct w *w, int64_t v) /* v < 0 */
{
    w_u8(w, 0xd3);
    w_be(w, (uint64_t)v, 8);
}
static void w_strn(struct w *w, const char *s, size_t n)
{
    if (n < 32) {
        w_u8(w, (uint8_t)(0xa0 | n));
    } else if (n <= 0xff) {
        w_u8(w, 0xd9);
        w_be(w, n, 1);
    } else if (n <= 0xffff) {
        w_u8(w, 0xda);
        w_be(w, n, 2);
    } else {
        w_u8(w, 0xdb);
        w_be(w, n, 4);
    }
    w_bytes(w, s, n);
}
static void w_str(struct w *w, const char *s) { w_strn(w, s, strlen(s)); }
static void w_bin(struct w *w, const void *p, size_t n)
{
    if (n <= 0xff) {
        w_u8(w, 0xc4);
        w_be(w, n, 1);
    } else if (n <= 0xffff) {
        w_u8(w, 0xc5);
        w_be(w, n, 2);
    } else {
        w_u8(w, 0xc6);
        w_be(w, n, 4);
    }
    w_bytes(w, p, n);
}
static void w_map(struct w *w, uint32_t n)
{
    if (n < 16) {
        w_u8(w, (uint8_t)(0x80 | n));
    } else if (n <= 0xffff) {
        w_u8(w, 0xde);
        w_be(w, n, 2);
    } else {
        w_u8(w, 0xdf);
        w_be(w, n, 4);
    }
}
static void w_arr(struct w *w, uint32_t n)
{
    if (n < 16) {
        w_u8(w, (uint8_t)(0x90 | n));
    } else if (n <= 0xffff) {
        w_u8(w, 0xdc);
        w_be(w, n, 2);
    } else {
        w_u8(w, 0xdd);
        w_be(w, n, 4);
    }
}
static void w_nil(struct w *w) { w_u8(w, 0xc0); }

/* Envelope head "v, t, rid" of a map with `extra` more entries. */
static void w_head(struct w *w, uint64_t v, uint64_t t, uint64_t rid, uint32_t extra)
{
    w_map(w, 3 + extra);
    w_str(w, "v");
    w_uint(w, v);
    w_str(w, "t");
    w_uint(w, t);
    w_str(w, "rid");
    w_uint(w, rid);
}

/* ---- the connection ---- */

static struct cairn_sock *g_sock;

static struct ccase *case_by_rid(uint64_t rid)
{
    if (rid == 0)
        return NULL;
    for (size_t i = 0; i < g_ncases; i++)
        if (g_cases[i].rid == rid)
            return &g_cases[i];
    return NULL;
}

static bool g_final_seen;
static int g_final_code = -1;
static char g_final_text[256];

/* Receive and account for replies for up to timeout_ms (first wait), then whatever is already queued. */
static void drain(int timeout_ms)
{
    for (;;) {
        struct cairn_msg *m = NULL;
        int rc = cairn_sock_recv(g_sock, timeout_ms, &m);
        timeout_ms = 0;
        if (rc == CAIRN_ETIMEDOUT)
            return;
        if (rc != CAIRN_OK) {
            /* the daemon sent something that does not decode: a bug on its side */
            g_undecodable++;
            fprintf(stdout, "FAIL undecodable reply (rid %" PRIu64 "): %s: %s\n", m ? cairn_msg_rid(m) : 0,
                    cairn_err_name(rc), cairn_err_msg());
            cairn_msg_destroy(&m);
            if (rc == CAIRN_ECANCELED || rc == CAIRN_ENOMEM || rc == CAIRN_EIO)
                return;
            continue;
        }
        uint64_t rid = cairn_msg_rid(m);
        int code = cairn_msg_code(m);
        g_replies++;
        if (rid == RID_FINAL) {
            g_final_seen = true;
            g_final_code = code;
            snprintf(g_final_text, sizeof(g_final_text), "%s", cairn_msg_text(m) ? cairn_msg_text(m) : "");
            cairn_msg_destroy(&m);
            continue;
        }
        if (code != 0)
            g_error_replies++;
        struct ccase *c = case_by_rid(rid);
        if (!c) {
            g_unmatched++;
        } else if (c->replied) {
            g_bad_replies++;
            fprintf(stdout, "FAIL %s: a second reply (code %d)\n", c->name, code);
        } else {
            c->replied = true;
            c->got = code;
        }
        cairn_msg_destroy(&m);
    }
}

/* Send frames; on a full queue, read replies for a moment and retry (bounded). */
static int send_frames(const uint8_t *const *frames, const size_t *lens, size_t n)
{
    for (int tries = 0; tries < 2000; tries++) {
        int rc = cairn_sock_send_raw(g_sock, NULL, frames, lens, n);
        if (rc != CAIRN_EAGAIN)
            return rc;
        drain(10);
    }
    return cairn_err_set(CAIRN_ETIMEDOUT, "the daemon does not read: send queue full for 20 s");
}

static struct ccase *add_case(const char *name, uint64_t rid, enum expect ex, int code)
{
    if (g_ncases >= MAX_CASES)
        return NULL;
    struct ccase *c = &g_cases[g_ncases++];
    memset(c, 0, sizeof(*c));
    snprintf(c->name, sizeof(c->name), "%s", name);
    c->rid = rid;
    c->ex = ex;
    c->code = code;
    return c;
}

/* Send one frame (the writer's bytes) as a case. */
static int send_case_w(struct w *w, const char *name, uint64_t rid, enum expect ex, int code)
{
    if (w->err) {
        fprintf(stderr, "cairn_rawsend: building '%s': %s\n", name, cairn_err_msg());
        return w->err;
    }
    const uint8_t *f[1] = {w->b.data ? w->b.data : (const uint8_t *)""};
    size_t l[1] = {w->b.len};
    add_case(name, rid, ex, code);
    int rc = send_frames(f, l, 1);
    cairn_buf_release(&w->b);
    return rc;
}

static int send_case_raw(const uint8_t *p, size_t n, const char *name, uint64_t rid, enum expect ex, int code)
{
    const uint8_t *f[1] = {p};
    size_t l[1] = {n};
    add_case(name, rid, ex, code);
    return send_frames(f, l, 1);
}

static void w_init(struct w *w)
{
    cairn_buf_init(&w->b, 0);
    w->err = 0;
}

/* ---- seeded PRNG (xorshift64*) ---- */

static uint64_t g_rng;
static uint64_t rnd(void)
{
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 2685821657736338717ull;
}

/* ---- the cases ---- */

/* A valid request of the target, encoded canonically with rid: ping / chunk.has. */
static int valid_request(enum target tg, uint64_t rid, struct w *w)
{
    w_init(w);
    if (tg == T_CLIENT) {
        w_head(w, 1, CAIRN_MSG_PING, rid, 1);
        w_str(w, "f");
        w_map(w, 0);
    } else {
        uint8_t dom[16] = {0}, id[32] = {0};
        w_head(w, 1, CAIRN_MSG_CHUNK_HAS, rid, 1);
        w_str(w, "f");
        w_map(w, 2);
        w_str(w, "domain");
        w_bin(w, dom, sizeof(dom));
        w_str(w, "ids");
        w_arr(w, 1);
        w_bin(w, id, sizeof(id));
    }
    return w->err;
}

#define TRY(expr)                  \
    do {                           \
        int rc_ = (expr);          \
        if (rc_ != CAIRN_OK)       \
            return rc_;            \
    } while (0)

static int cases_common(enum target tg)
{
    struct w w;
    uint64_t rid;
    char name[NAME_MAX_LEN];

    /* empty envelope, and a message with no frame content at all */
    TRY(send_case_raw((const uint8_t *)"", 0, "empty envelope", 0, X_ERR_OR_DROP, 0));

    /* a valid request truncated at every length */
    TRY(valid_request(tg, g_next_rid, &w));
    size_t full = w.b.len;
    uint8_t *copy = cairn_memdup(w.b.data, full);
    cairn_buf_release(&w.b);
    if (!copy)
        return CAIRN_ENOMEM;
    for (size_t cut = 1; cut < full; cut++) {
        snprintf(name, sizeof(name), "truncated at %zu of %zu", cut, full);
        int rc = send_case_raw(copy, cut, name, 0, X_ERR_OR_DROP, 0);
        if (rc != CAIRN_OK) {
            cairn_free(copy);
            return rc;
        }
    }
    /* the same with one trailing byte: two values in one frame */
    uint8_t *longer = cairn_malloc(full + 1);
    if (!longer) {
        cairn_free(copy);
        return CAIRN_ENOMEM;
    }
    memcpy(longer, copy, full);
    longer[full] = 0xc0;
    int rc = send_case_raw(longer, full + 1, "trailing byte after the envelope", 0, X_ERR_OR_DROP, 0);
    cairn_free(longer);
    cairn_free(copy);
    TRY(rc);
    g_next_rid++;

    /* counts and lengths far beyond the bytes present (pre-scan) */
    static const uint8_t map32[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    TRY(send_case_raw(map32, sizeof(map32), "map32 with 2^32-1 entries", 0, X_ERR_OR_DROP, 0));
    static const uint8_t arr32[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0x01};
    TRY(send_case_raw(arr32, sizeof(arr32), "array32 with 2^32-1 items", 0, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_PING, rid, 1);
    w_str(&w, "f");
    w_u8(&w, 0xdd);
    w_be(&w, 0xffffffffu, 4);
    w_nil(&w);
    TRY(send_case_w(&w, "field map as array32 of 2^32-1", rid, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_PING, rid, 1);
    w_str(&w, "app");
    w_u8(&w, 0xdb);
    w_be(&w, 0xfffffff0u, 4);
    w_bytes(&w, "abc", 3);
    TRY(send_case_w(&w, "str32 length 2^32-16", rid, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_PING, rid, 1);
    w_str(&w, "tok");
    w_u8(&w, 0xc6);
    w_be(&w, 0x7fffffffu, 4);
    w_bytes(&w, "abc", 3);
    TRY(send_case_w(&w, "bin32 length 2^31-1", rid, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_PING, rid, 1);
    w_str(&w, "f");
    w_map(&w, 1);
    w_str(&w, "deep");
    for (int i = 0; i < 200; i++)
        w_arr(&w, 1);
    w_nil(&w);
    TRY(send_case_w(&w, "nesting 200 deep", rid, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_PING, rid, 300);
    for (int i = 0; i < 300; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%d", i);
        w_str(&w, k);
        w_nil(&w);
    }
    TRY(send_case_w(&w, "300 envelope keys", rid, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_PING, rid, 1);
    w_str(&w, "f");
    w_map(&w, 1);
    w_str(&w, "x");
    w_arr(&w, 300000);
    for (int i = 0; i < 300000; i++)
        w_nil(&w);
    TRY(send_case_w(&w, "300000 values", rid, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_PING, rid, 1);
    {
        char key[400];
        memset(key, 'k', sizeof(key) - 1);
        key[sizeof(key) - 1] = '\0';
        w_str(&w, key);
        w_nil(&w);
    }
    /* unknown envelope keys are ignored and dropped (PROTOCOL.md section 4), so only counted here */
    TRY(send_case_w(&w, "unknown envelope key of 399 bytes", rid, X_ANY, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_PING, rid, 1);
    w_str(&w, "f");
    w_map(&w, 1);
    {
        char key[400];
        memset(key, 'k', sizeof(key) - 1);
        key[sizeof(key) - 1] = '\0';
        w_str(&w, key);
    }
    w_nil(&w);
    TRY(send_case_w(&w, "field key of 399 bytes", rid, X_MUST, CAIRN_ETOOBIG));

    /* wrong types in the envelope */
    w_init(&w);
    rid = g_next_rid++;
    w_map(&w, 4);
    w_str(&w, "v");
    w_str(&w, "1");
    w_str(&w, "t");
    w_uint(&w, CAIRN_MSG_PING);
    w_str(&w, "rid");
    w_uint(&w, rid);
    w_str(&w, "f");
    w_map(&w, 0);
    TRY(send_case_w(&w, "v is a string", rid, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_map(&w, 4);
    w_str(&w, "v");
    w_uint(&w, 1);
    w_str(&w, "t");
    w_str(&w, "ping");
    w_str(&w, "rid");
    w_uint(&w, rid);
    w_str(&w, "f");
    w_map(&w, 0);
    TRY(send_case_w(&w, "t is a string", rid, X_ERR_OR_DROP, 0));
    w_init(&w);
    w_map(&w, 4);
    w_str(&w, "v");
    w_uint(&w, 1);
    w_str(&w, "t");
    w_uint(&w, CAIRN_MSG_PING);
    w_str(&w, "rid");
    w_neg(&w, -5);
    w_str(&w, "f");
    w_map(&w, 0);
    TRY(send_case_w(&w, "rid is negative", 0, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_PING, rid, 1);
    w_str(&w, "f");
    w_arr(&w, 0);
    TRY(send_case_w(&w, "f is an array", rid, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_PING, rid, 2);
    w_str(&w, "v");
    w_uint(&w, 1);
    w_str(&w, "f");
    w_map(&w, 0);
    TRY(send_case_w(&w, "duplicate envelope key v", rid, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_PING, rid, 1);
    w_uint(&w, 7);
    w_uint(&w, 7);
    TRY(send_case_w(&w, "integer map key", rid, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_PING, rid, 1);
    w_str(&w, "f");
    w_map(&w, 1);
    w_str(&w, "x");
    w_u8(&w, 0xd4); /* fixext 1 */
    w_u8(&w, 0x01);
    w_u8(&w, 0x00);
    TRY(send_case_w(&w, "ext type", rid, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_PING, rid, 1);
    w_str(&w, "f");
    w_map(&w, 1);
    w_str(&w, "x");
    w_u8(&w, 0xc1); /* reserved */
    TRY(send_case_w(&w, "reserved byte 0xc1", rid, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_PING, rid, 1);
    w_strn(&w, "a\0b", 3);
    w_nil(&w);
    TRY(send_case_w(&w, "NUL byte in an unknown envelope key", rid, X_ANY, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_PING, rid, 1);
    w_str(&w, "f");
    w_map(&w, 1);
    w_strn(&w, "a\0b", 3);
    w_nil(&w);
    TRY(send_case_w(&w, "NUL byte in a field key", rid, X_MUST, CAIRN_EPROTO));

    /* versions and types */
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 2, CAIRN_MSG_PING, rid, 1);
    w_str(&w, "f");
    w_map(&w, 0);
    TRY(send_case_w(&w, "protocol version 2", rid, X_MUST, CAIRN_EVERSION));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 999999, CAIRN_MSG_PING, rid, 0);
    TRY(send_case_w(&w, "protocol version 999999", rid, X_MUST, CAIRN_EVERSION));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 0, CAIRN_MSG_PING, rid, 0);
    TRY(send_case_w(&w, "protocol version 0", rid, X_MUST, CAIRN_EVERSION));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, 60000, rid, 1);
    w_str(&w, "f");
    w_map(&w, 0);
    TRY(send_case_w(&w, "unknown type 60000", rid, X_MUST, CAIRN_EPROTO));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, 0, rid, 0);
    TRY(send_case_w(&w, "type 0", rid, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, 1u << 20, rid, 0);
    TRY(send_case_w(&w, "type 2^20", rid, X_ERR_OR_DROP, 0));

    /* a reply sent as a request: a server must not answer it with success */
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, tg == T_CLIENT ? CAIRN_MSG_PING : CAIRN_MSG_CHUNK_HAS, rid, 2);
    w_str(&w, "code");
    w_uint(&w, 0);
    w_str(&w, "f");
    w_map(&w, 0);
    TRY(send_case_w(&w, "a reply sent to the server", rid, X_ERR_OR_DROP, 0));

    /* raw frames: on a type that declares none, and far too many */
    TRY(valid_request(tg, rid = g_next_rid++, &w));
    {
        static const uint8_t junk[] = "raw frame nobody asked for";
        const uint8_t *f[2] = {w.b.data, junk};
        size_t l[2] = {w.b.len, sizeof(junk)};
        if (tg == T_CLIENT) {
            add_case("ping with a raw frame", rid, X_ERR_OR_DROP, 0);
            rc = send_frames(f, l, 2);
        } else {
            add_case("chunk.has with a raw frame", rid, X_ERR_OR_DROP, 0);
            rc = send_frames(f, l, 2);
        }
        cairn_buf_release(&w.b);
        TRY(rc);
    }
    TRY(valid_request(tg, rid = g_next_rid++, &w));
    {
        enum { NF = 1500 };
        const uint8_t **f = cairn_calloc(NF, sizeof(*f));
        size_t *l = cairn_calloc(NF, sizeof(*l));
        if (!f || !l) {
            cairn_free(f);
            cairn_free(l);
            cairn_buf_release(&w.b);
            return CAIRN_ENOMEM;
        }
        f[0] = w.b.data;
        l[0] = w.b.len;
        for (size_t i = 1; i < NF; i++) {
            f[i] = (const uint8_t *)"";
            l[i] = 0;
        }
        add_case("1500 frames", rid, X_ERR_OR_DROP, 0);
        rc = send_frames(f, l, NF);
        cairn_free(f);
        cairn_free(l);
        cairn_buf_release(&w.b);
        TRY(rc);
    }
    return CAIRN_OK;
}

static int cases_client(void)
{
    struct w w;
    uint64_t rid;
    uint8_t tok[32];
    memset(tok, 0x41, sizeof(tok));

    /* model fields of the wrong type: rid and type are readable, so the answer is EPROTO */
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_JOB_GET, rid, 3);
    w_str(&w, "app");
    w_str(&w, "default");
    w_str(&w, "tok");
    w_bin(&w, tok, sizeof(tok));
    w_str(&w, "f");
    w_map(&w, 1);
    w_str(&w, "job");
    w_uint(&w, 42);
    TRY(send_case_w(&w, "job.get job is an integer", rid, X_MUST, CAIRN_EPROTO));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_JOB_SUBMIT, rid, 3);
    w_str(&w, "app");
    w_str(&w, "default");
    w_str(&w, "tok");
    w_bin(&w, tok, sizeof(tok));
    w_str(&w, "f");
    w_map(&w, 1);
    w_str(&w, "kind");
    w_arr(&w, 0);
    TRY(send_case_w(&w, "job.submit kind is an array", rid, X_MUST, CAIRN_EPROTO));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_JOB_GET, rid, 3);
    w_str(&w, "app");
    w_str(&w, "default");
    w_str(&w, "tok");
    w_bin(&w, tok, sizeof(tok));
    w_str(&w, "f");
    w_map(&w, 1);
    w_str(&w, "job");
    w_strn(&w, "jb-\0x", 5);
    TRY(send_case_w(&w, "job.get job has a NUL byte", rid, X_MUST, CAIRN_EPROTO));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_JOB_GET, rid, 3);
    w_str(&w, "app");
    w_str(&w, "default");
    w_str(&w, "tok");
    w_bin(&w, tok, sizeof(tok));
    w_str(&w, "f");
    w_map(&w, 0);
    TRY(send_case_w(&w, "job.get without its required field", rid, X_MUST, CAIRN_EPROTO));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_CLUSTER_STATUS, rid, 3);
    w_str(&w, "app");
    w_uint(&w, 5);
    w_str(&w, "tok");
    w_bin(&w, tok, sizeof(tok));
    w_str(&w, "f");
    w_map(&w, 0);
    TRY(send_case_w(&w, "app is an integer", rid, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_CLUSTER_STATUS, rid, 3);
    w_str(&w, "app");
    w_str(&w, "default");
    w_str(&w, "tok");
    w_str(&w, "not-a-bin-token");
    w_str(&w, "f");
    w_map(&w, 0);
    TRY(send_case_w(&w, "tok is a string", rid, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_CLUSTER_STATUS, rid, 3);
    w_str(&w, "app");
    {
        char app[100];
        memset(app, 'a', sizeof(app) - 1);
        app[sizeof(app) - 1] = '\0';
        w_str(&w, app);
    }
    w_str(&w, "tok");
    w_bin(&w, tok, sizeof(tok));
    w_str(&w, "f");
    w_map(&w, 0);
    TRY(send_case_w(&w, "app of 99 bytes", rid, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_JOB_GET, rid, 3);
    w_str(&w, "app");
    w_str(&w, "default");
    w_str(&w, "tok");
    w_bin(&w, tok, sizeof(tok));
    w_str(&w, "f");
    w_map(&w, 2);
    w_str(&w, "job");
    {
        char big[200];
        memset(big, 'j', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        w_str(&w, big);
    }
    w_str(&w, "wait_ms");
    w_uint(&w, 1);
    TRY(send_case_w(&w, "job.get job of 199 bytes", rid, X_MUST, CAIRN_ETOOBIG));

    /* authentication: no token, and an admin call with no token */
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_CLUSTER_STATUS, rid, 2);
    w_str(&w, "app");
    w_str(&w, "default");
    w_str(&w, "f");
    w_map(&w, 0);
    TRY(send_case_w(&w, "cluster.status without a token", rid, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_ADMIN_CLOCK_ADVANCE, rid, 2);
    w_str(&w, "app");
    w_str(&w, "_admin");
    w_str(&w, "f");
    w_map(&w, 1);
    w_str(&w, "seconds");
    w_uint(&w, 100);
    TRY(send_case_w(&w, "admin.clock.advance without a token", rid, X_ERR_OR_DROP, 0));

    /* messages of another direction on the client socket */
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_WORKER_REGISTER, rid, 1);
    w_str(&w, "f");
    w_map(&w, 5);
    w_str(&w, "id");
    w_str(&w, "intruder");
    w_str(&w, "peer");
    w_str(&w, "tcp://127.0.0.1:1");
    w_str(&w, "public_key");
    w_str(&w, "0000000000000000000000000000000000000000");
    w_str(&w, "capacity");
    w_uint(&w, 1);
    w_str(&w, "fingerprint");
    w_str(&w, "runsc-none");
    TRY(send_case_w(&w, "worker.register on the client socket", rid, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_JOB_RESULT, rid, 1);
    w_str(&w, "f");
    w_map(&w, 2);
    w_str(&w, "job");
    w_str(&w, "jb-0000000000000000");
    w_str(&w, "err_code");
    w_uint(&w, 0);
    TRY(send_case_w(&w, "job.result on the client socket", rid, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_JOB_PROGRESS, rid, 1);
    w_str(&w, "f");
    w_map(&w, 2);
    w_str(&w, "job");
    w_str(&w, "jb-0000000000000000");
    w_str(&w, "done");
    w_uint(&w, 1);
    TRY(send_case_w(&w, "job.progress on the client socket", rid, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_CHUNK_GET, rid, 1);
    w_str(&w, "f");
    w_map(&w, 2);
    w_str(&w, "domain");
    w_bin(&w, tok, 16);
    w_str(&w, "ids");
    w_arr(&w, 1);
    w_bin(&w, tok, 32);
    TRY(send_case_w(&w, "chunk.get on the client socket", rid, X_ERR_OR_DROP, 0));
    return CAIRN_OK;
}

static int cases_peer(void)
{
    struct w w;
    uint64_t rid;
    uint8_t dom[16], id[32];
    cairn_random_bytes(dom, sizeof(dom));
    cairn_random_bytes(id, sizeof(id));

    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_CHUNK_HAS, rid, 1);
    w_str(&w, "f");
    w_map(&w, 2);
    w_str(&w, "domain");
    w_str(&w, "not-a-bin-domain");
    w_str(&w, "ids");
    w_arr(&w, 1);
    w_bin(&w, id, sizeof(id));
    TRY(send_case_w(&w, "chunk.has domain is a string", rid, X_MUST, CAIRN_EPROTO));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_CHUNK_HAS, rid, 1);
    w_str(&w, "f");
    w_map(&w, 2);
    w_str(&w, "domain");
    w_bin(&w, dom, 15);
    w_str(&w, "ids");
    w_arr(&w, 1);
    w_bin(&w, id, sizeof(id));
    TRY(send_case_w(&w, "chunk.has domain of 15 bytes", rid, X_MUST, CAIRN_EPROTO));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_CHUNK_HAS, rid, 1);
    w_str(&w, "f");
    w_map(&w, 2);
    w_str(&w, "domain");
    w_bin(&w, dom, sizeof(dom));
    w_str(&w, "ids");
    w_arr(&w, 2);
    w_uint(&w, 1);
    w_uint(&w, 2);
    TRY(send_case_w(&w, "chunk.has ids are integers", rid, X_MUST, CAIRN_EPROTO));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_CHUNK_HAS, rid, 1);
    w_str(&w, "f");
    w_map(&w, 2);
    w_str(&w, "domain");
    w_bin(&w, dom, sizeof(dom));
    w_str(&w, "ids");
    w_arr(&w, 2000);
    for (int i = 0; i < 2000; i++)
        w_bin(&w, id, sizeof(id));
    TRY(send_case_w(&w, "chunk.has with 2000 ids", rid, X_MUST, CAIRN_ETOOBIG));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_CHUNK_GET, rid, 1);
    w_str(&w, "f");
    w_map(&w, 2);
    w_str(&w, "domain");
    w_bin(&w, dom, sizeof(dom));
    w_str(&w, "ids");
    w_arr(&w, 300);
    for (int i = 0; i < 300; i++)
        w_bin(&w, id, sizeof(id));
    TRY(send_case_w(&w, "chunk.get with 300 ids", rid, X_MUST, CAIRN_ETOOBIG));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_CHUNK_GET, rid, 1);
    w_str(&w, "f");
    w_map(&w, 2);
    w_str(&w, "domain");
    w_bin(&w, dom, sizeof(dom));
    w_str(&w, "ids");
    w_arr(&w, 0);
    TRY(send_case_w(&w, "chunk.get with no ids", rid, X_MUST, CAIRN_EPROTO));

    /* chunk.put: frame count mismatch, then a frame that fails its checksum */
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_CHUNK_PUT, rid, 1);
    w_str(&w, "f");
    w_map(&w, 2);
    w_str(&w, "domain");
    w_bin(&w, dom, sizeof(dom));
    w_str(&w, "ids");
    w_arr(&w, 2);
    w_bin(&w, id, sizeof(id));
    w_bin(&w, id, sizeof(id));
    {
        static const uint8_t junk[64] = {1};
        const uint8_t *f[2] = {w.b.data, junk};
        size_t l[2] = {w.b.len, sizeof(junk)};
        add_case("chunk.put with 2 ids and 1 frame", rid, X_MUST, CAIRN_EPROTO);
        int rc = send_frames(f, l, 2);
        cairn_buf_release(&w.b);
        TRY(rc);
    }
    /* the other peer-side messages are worker -> coordinator or client -> coordinator */
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_PING, rid, 1);
    w_str(&w, "f");
    w_map(&w, 0);
    TRY(send_case_w(&w, "ping on the peer socket", rid, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_MEMBERSHIP, rid, 1);
    w_str(&w, "f");
    w_map(&w, 2);
    w_str(&w, "epoch");
    w_uint(&w, 1u << 30);
    w_str(&w, "workers");
    w_arr(&w, 0);
    TRY(send_case_w(&w, "membership on the peer socket", rid, X_ERR_OR_DROP, 0));
    w_init(&w);
    rid = g_next_rid++;
    w_head(&w, 1, CAIRN_MSG_JOB_DISPATCH, rid, 1);
    w_str(&w, "f");
    w_map(&w, 3);
    w_str(&w, "job");
    w_str(&w, "jb-00000000000000ff");
    w_str(&w, "kind");
    w_str(&w, "noop");
    w_str(&w, "params");
    w_map(&w, 0);
    TRY(send_case_w(&w, "job.dispatch on the peer socket", rid, X_ERR_OR_DROP, 0));
    return CAIRN_OK;
}

/*
 * chunk.put of a frame whose checksum is wrong: the reply is code 0 with status [ECORRUPT], and a
 * chunk.has afterwards must not report the chunk. Run synchronously (before the flood).
 */
static int check_corrupt_put(bool *ok)
{
    uint8_t dom[16], id[32], val[200];
    cairn_random_bytes(dom, sizeof(dom));
    cairn_random_bytes(id, sizeof(id));
    cairn_random_bytes(val, sizeof(val));
    val[0] = 1; /* version 1, plausible header, garbage checksum */
    val[1] = 0;
    val[2] = val[3] = 0;
    memcpy(val + 8, dom, 16);
    *ok = false;
    int rc = CAIRN_OK;
    struct cairn_msg *m = cairn_msg_new(CAIRN_MSG_CHUNK_PUT), *r = NULL;
    if (!m)
        return CAIRN_ENOMEM;
    cairn_msg_set_rid(m, RID_BASE - 1);
    cairn_msg_set_bin(m, "domain", dom, sizeof(dom));
    struct cairn_mval *ids = cairn_msg_set_array(m, "ids");
    cairn_mval_push_bin(m, ids, id, sizeof(id));
    cairn_msg_add_frame(m, val, sizeof(val));
    rc = cairn_sock_send(g_sock, m);
    cairn_msg_destroy(&m);
    if (rc != CAIRN_OK)
        goto out;
    rc = cairn_sock_recv(g_sock, 10000, &r);
    if (rc != CAIRN_OK) {
        printf("FAIL chunk.put of a corrupt frame: no reply (%s: %s)\n", cairn_err_name(rc), cairn_err_msg());
        rc = CAIRN_OK;
        goto out;
    }
    const struct cairn_mval *st = NULL;
    size_t n = 0;
    uint64_t s0 = 0;
    if (cairn_msg_code(r) != 0 || cairn_msg_get_array(r, "status", &st, &n) != CAIRN_OK || n != 1 ||
        cairn_mval_u64(cairn_mval_at(st, 0), &s0) != CAIRN_OK || s0 != CAIRN_ECORRUPT) {
        printf("FAIL chunk.put of a corrupt frame: expected code 0 and status [%d], got code %d (%s) status[0]=%" PRIu64
               "\n", CAIRN_ECORRUPT, cairn_msg_code(r), cairn_msg_text(r) ? cairn_msg_text(r) : "", s0);
        goto out;
    }
    cairn_msg_destroy(&r);
    /* is it held? */
    m = cairn_msg_new(CAIRN_MSG_CHUNK_HAS);
    if (!m) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    cairn_msg_set_rid(m, RID_BASE - 2);
    cairn_msg_set_bin(m, "domain", dom, sizeof(dom));
    ids = cairn_msg_set_array(m, "ids");
    cairn_mval_push_bin(m, ids, id, sizeof(id));
    rc = cairn_sock_send(g_sock, m);
    cairn_msg_destroy(&m);
    if (rc != CAIRN_OK)
        goto out;
    rc = cairn_sock_recv(g_sock, 10000, &r);
    if (rc != CAIRN_OK) {
        printf("FAIL chunk.has after a corrupt put: no reply (%s)\n", cairn_err_name(rc));
        rc = CAIRN_OK;
        goto out;
    }
    const uint8_t *bm = NULL;
    size_t bl = 0;
    if (cairn_msg_code(r) != 0 || cairn_msg_get_bin(r, "bitmap", &bm, &bl) != CAIRN_OK || bl < 1 || (bm[0] & 1)) {
        printf("FAIL chunk.has after a corrupt put: expected not held, got code %d bitmap[0]=%d\n", cairn_msg_code(r),
               bl ? bm[0] : -1);
        goto out;
    }
    *ok = true;
    if (g_verbose)
        printf("ok chunk.put of a corrupt frame: status ECORRUPT, not held\n");
out:
    cairn_msg_destroy(&m);
    cairn_msg_destroy(&r);
    return rc;
}

/* Seeded random frames, and valid requests with random bytes changed. */
static int cases_random(enum target tg, unsigned count)
{
    struct w base;
    /* a rid far from the cases' (a changed byte must not land on one of theirs) */
    TRY(valid_request(tg, RID_MUTATED, &base));
    size_t blen = base.b.len;
    uint8_t buf[1024];
    char name[NAME_MAX_LEN];
    for (unsigned i = 0; i < count; i++) {
        size_t len;
        int rc;
        if (i % 2 == 0) {
            /* random bytes; half of them start like a map to get past the first byte */
            len = (size_t)(rnd() % 512);
            for (size_t k = 0; k < len; k++)
                buf[k] = (uint8_t)rnd();
            if (len && (i % 4 == 0))
                buf[0] = (uint8_t)(0x80 | (rnd() % 9));
            snprintf(name, sizeof(name), "random #%u (%zu bytes)", i, len);
        } else {
            /* a valid request with 1..4 bytes changed, maybe cut or extended */
            len = blen;
            memcpy(buf, base.b.data, blen);
            unsigned flips = 1 + (unsigned)(rnd() % 4);
            for (unsigned k = 0; k < flips; k++)
                buf[rnd() % blen] = (uint8_t)rnd();
            if (rnd() % 4 == 0)
                len = 1 + (size_t)(rnd() % blen);
            snprintf(name, sizeof(name), "mutated #%u", i);
        }
        size_t nextra = (size_t)(rnd() % 4 == 0 ? 1 + rnd() % 3 : 0);
        const uint8_t *f[4] = {buf, buf, buf, buf};
        size_t l[4] = {len, (size_t)(rnd() % 64), 0, 5};
        add_case(name, 0, X_ANY, 0);
        rc = send_frames(f, l, 1 + nextra);
        if (rc != CAIRN_OK) {
            cairn_buf_release(&base.b);
            return rc;
        }
        if (i % 32 == 31)
            drain(0);
    }
    cairn_buf_release(&base.b);
    return CAIRN_OK;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: cairn_rawsend --endpoint E --keys KEYPAIR --server-key PUBFILE [--target client|peer]\n"
            "                     [--seed N] [--random N] [--timeout-ms N] [--verbose]\n"
            "  Sends malformed frames to a coordinator client socket (client) or a worker peer socket (peer),\n"
            "  then a valid request, and checks every answer (see the comment at the top of the source).\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || !end || *end || !*s || s[0] == '-')
        return CAIRN_EINVAL;
    *out = v;
    return CAIRN_OK;
}

int main(int argc, char **argv)
{
    const char *endpoint = NULL, *keys_path = NULL, *server_key_path = NULL, *target = "client";
    uint64_t seed = 1, nrandom = 300, timeout_ms = 15000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "--verbose")) {
            g_verbose = true;
            continue;
        }
        if (!v) {
            usage();
            return 2;
        }
        if (!strcmp(a, "--endpoint"))
            endpoint = v;
        else if (!strcmp(a, "--keys"))
            keys_path = v;
        else if (!strcmp(a, "--server-key"))
            server_key_path = v;
        else if (!strcmp(a, "--target"))
            target = v;
        else if (!strcmp(a, "--seed"))
            bad = parse_u64(v, &seed);
        else if (!strcmp(a, "--random"))
            bad = parse_u64(v, &nrandom);
        else if (!strcmp(a, "--timeout-ms"))
            bad = parse_u64(v, &timeout_ms);
        else
            bad = 1;
        if (bad) {
            usage();
            return 2;
        }
        i++;
    }
    enum target tg = !strcmp(target, "peer") ? T_PEER : T_CLIENT;
    if (!endpoint || !keys_path || !server_key_path || (strcmp(target, "peer") && strcmp(target, "client")) ||
        nrandom > 2000 || timeout_ms > 600000) {
        usage();
        return 2;
    }
    g_rng = seed * 0x9e3779b97f4a7c15ull + 1;

    int status = 2, rc;
    struct cairn_curve_keys keys;
    char server_key[CAIRN_CURVE_Z85_LEN + 1];
    struct cairn_net *net = NULL;
    memset(&keys, 0, sizeof(keys));
    if ((rc = cairn_crypto_init()) != CAIRN_OK || (rc = cairn_curve_keys_read(keys_path, &keys)) != CAIRN_OK ||
        (rc = cairn_curve_public_read(server_key_path, server_key)) != CAIRN_OK ||
        (rc = cairn_net_new(&net)) != CAIRN_OK) {
        fprintf(stderr, "cairn_rawsend: %s: %s\n", cairn_err_name(rc), cairn_err_msg());
        goto out;
    }
    struct cairn_sock_opts so = {.hwm = 4000};
    if ((rc = cairn_sock_client(net, endpoint, &keys, server_key, &so, &g_sock)) != CAIRN_OK) {
        fprintf(stderr, "cairn_rawsend: connect %s: %s: %s\n", endpoint, cairn_err_name(rc), cairn_err_msg());
        goto out;
    }

    /* First a valid request: the connection works and the key is allowed, or nothing below means anything. */
    {
        struct w w;
        if ((rc = valid_request(tg, RID_FINAL, &w)) != CAIRN_OK)
            goto out;
        const uint8_t *f[1] = {w.b.data};
        size_t l[1] = {w.b.len};
        rc = send_frames(f, l, 1);
        cairn_buf_release(&w.b);
        uint64_t t0 = (uint64_t)time(NULL);
        while (rc == CAIRN_OK && !g_final_seen && (uint64_t)time(NULL) - t0 <= timeout_ms / 1000)
            drain(200);
        if (!g_final_seen || g_final_code != 0) {
            fprintf(stderr, "cairn_rawsend: no valid answer to the first %s from %s (%s): is the key allowed?\n",
                    tg == T_CLIENT ? "ping" : "chunk.has", endpoint,
                    g_final_seen ? cairn_err_name(g_final_code) : "no reply");
            goto out;
        }
        g_final_seen = false;
        g_final_code = -1;
    }

    bool corrupt_ok = true;
    if (tg == T_PEER && (rc = check_corrupt_put(&corrupt_ok)) != CAIRN_OK)
        goto io_err;
    if ((rc = cases_common(tg)) != CAIRN_OK)
        goto io_err;
    if ((rc = (tg == T_CLIENT ? cases_client() : cases_peer())) != CAIRN_OK)
        goto io_err;
    if ((rc = cases_random(tg, (unsigned)nrandom)) != CAIRN_OK)
        goto io_err;

    /* the final valid request: answered in order after everything above */
    {
        struct w w;
        if ((rc = valid_request(tg, RID_FINAL, &w)) != CAIRN_OK)
            goto io_err;
        const uint8_t *f[1] = {w.b.data};
        size_t l[1] = {w.b.len};
        rc = send_frames(f, l, 1);
        cairn_buf_release(&w.b);
        if (rc != CAIRN_OK)
            goto io_err;
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (;;) {
            drain(100);
            clock_gettime(CLOCK_MONOTONIC, &b);
            uint64_t ms = (uint64_t)(b.tv_sec - a.tv_sec) * 1000 + (uint64_t)((b.tv_nsec - a.tv_nsec) / 1000000);
            if (g_final_seen || ms > timeout_ms)
                break;
        }
        drain(300); /* stragglers */
    }

    unsigned failures = g_undecodable + g_bad_replies + (corrupt_ok ? 0 : 1);
    unsigned must = 0, must_ok = 0, dropped = 0;
    for (size_t i = 0; i < g_ncases; i++) {
        struct ccase *c = &g_cases[i];
        bool ok = true;
        const char *why = "";
        if (c->ex == X_MUST) {
            must++;
            ok = c->replied && c->got == c->code;
            why = c->replied ? "wrong code" : "no reply";
            must_ok += ok;
        } else if (c->ex == X_ERR_OR_DROP) {
            ok = !c->replied || c->got != 0;
            why = "answered with success";
        }
        if (c->rid && !c->replied)
            dropped++;
        if (!ok) {
            failures++;
            if (c->ex == X_MUST)
                printf("FAIL %s: expected an error reply %s (%d), got %s%s%s\n", c->name, cairn_err_name(c->code),
                       c->code, c->replied ? cairn_err_name(c->got) : "no reply", c->replied ? " " : "",
                       c->replied ? why : "");
            else
                printf("FAIL %s: %s\n", c->name, why);
        } else if (g_verbose && c->rid) {
            printf("ok %s: %s\n", c->name, c->replied ? cairn_err_name(c->got) : "dropped");
        }
    }
    bool final_ok = g_final_seen && g_final_code == 0;
    if (!final_ok) {
        failures++;
        printf("FAIL final valid %s: %s %s\n", tg == T_CLIENT ? "ping" : "chunk.has",
               g_final_seen ? cairn_err_name(g_final_code) : "no reply", g_final_text);
    }
    printf("{\"target\": \"%s\", \"cases\": %zu, \"replies\": %u, \"error_replies\": %u, \"dropped_with_rid\": %u, "
           "\"pinned\": %u, \"pinned_ok\": %u, \"undecodable_replies\": %u, \"unmatched_replies\": %u, "
           "\"corrupt_put_ok\": %s, \"final_ok\": %s, \"failures\": %u}\n",
           target, g_ncases, g_replies, g_error_replies, dropped, must, must_ok, g_undecodable, g_unmatched,
           corrupt_ok ? "true" : "false", final_ok ? "true" : "false", failures);
    status = failures ? 1 : 0;
    goto out;
io_err:
    fprintf(stderr, "cairn_rawsend: %s: %s\n", cairn_err_name(rc), cairn_err_msg());
    status = 2;
out:
    cairn_sock_destroy(&g_sock);
    cairn_net_destroy(&net);
    cairn_curve_keys_clear(&keys);
    return status;
}
