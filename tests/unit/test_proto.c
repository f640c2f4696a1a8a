/*
 * test_proto.c: the wire codec against its model, its golden frames and hostile input.
 *
 * - The model is consistent (unique numbers and names, sane limits) and every
 *   message type, in both directions, round-trips with every field set, built
 *   from the model itself (sample_fill).
 * - For every field of every message: missing (if required), wrong type, over
 *   the limit and under the minimum are each refused with the documented code
 *   and a message naming the field.
 * - Golden frames in proto/golden/ decode and re-encode byte for byte and equal
 *   what the builder produces today. CAIRN_GOLDEN_REGEN=1 rewrites them, the
 *   fuzz seed corpus and the generated section of proto/PROTOCOL.md.
 * - Malformed input: truncation at every byte, huge counts, deep nesting,
 *   foreign versions, unknown types, not-a-map, ext types, trailing bytes,
 *   duplicate keys, NUL in strings, frame-count mismatches, 10k random frames
 *   and 10k mutated golden frames: always an error code, never a crash.
 */
#include "testutil.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"
#include "cairn/proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef CAIRN_PROTO_SRC_DIR
#error "CAIRN_PROTO_SRC_DIR must point at proto/ (set by proto/CMakeLists.txt)"
#endif

static bool regen(void)
{
    const char *e = getenv("CAIRN_GOLDEN_REGEN");
    return e && strcmp(e, "1") == 0;
}

/* ---- helpers ---------------------------------------------------------------------------------- */

static uint8_t *encode_ok(const struct cairn_msg *m, size_t *len)
{
    uint8_t *env = NULL;
    int rc = cairn_msg_encode(m, &env, len);
    if (rc != CAIRN_OK)
        fail_msg("encode %s: %s: %s", cairn_msg_type_name(cairn_msg_type(m)), cairn_err_name(rc), cairn_err_msg());
    return env;
}

/* Decode an envelope plus m's raw frames. */
static int decode_with_frames(const uint8_t *env, size_t len, const struct cairn_msg *frames_of, struct cairn_msg **out)
{
    size_t nraw = frames_of ? cairn_msg_frame_count(frames_of) : 0;
    const uint8_t **fr = calloc(nraw + 1, sizeof(*fr));
    size_t *lens = calloc(nraw + 1, sizeof(*lens));
    fr[0] = env;
    lens[0] = len;
    for (size_t i = 0; i < nraw; i++)
        cairn_msg_frame(frames_of, i, &fr[i + 1], &lens[i + 1]);
    int rc = cairn_msg_decode(fr, lens, nraw + 1, out);
    free(fr);
    free(lens);
    return rc;
}

/* Encode m without validation and decode it: the decoder's verdict on it. */
static int verdict(const struct cairn_msg *m)
{
    uint8_t *env = NULL;
    size_t len = 0;
    assert_int_equal(cairn__msg_encode_unchecked(m, &env, &len), CAIRN_OK);
    struct cairn_msg *d = NULL;
    int rc = decode_with_frames(env, len, m, &d);
    if (rc == CAIRN_OK)
        assert_non_null(d);
    else
        assert_null(d);
    cairn_msg_destroy(&d);
    cairn_free(env);
    return rc;
}

static void expect_verdict(const struct cairn_msg *m, int want, const char *needle)
{
    int rc = verdict(m);
    if (rc != want)
        fail_msg("%s: want %s, got %s (%s)", cairn_msg_type_name(cairn_msg_type(m)), cairn_err_name(want),
                 cairn_err_name(rc), cairn_err_msg());
    if (needle && !strstr(cairn_err_msg(), needle))
        fail_msg("error message '%s' does not mention '%s'", cairn_err_msg(), needle);
}

/* Decode raw envelope bytes, no raw frames. */
static int decode_bytes(const uint8_t *p, size_t len)
{
    struct cairn_msg *m = NULL;
    const uint8_t *fr[1] = {p};
    size_t lens[1] = {len};
    int rc = cairn_msg_decode(fr, lens, 1, &m);
    if (rc == CAIRN_OK) {
        /* whatever decodes must re-encode */
        uint8_t *env = NULL;
        size_t elen = 0;
        assert_int_equal(cairn_msg_encode(m, &env, &elen), CAIRN_OK);
        cairn_free(env);
    }
    cairn_msg_destroy(&m);
    return rc;
}

/* A tiny msgpack writer for hand-made envelopes (the codec under test must not write them). */
struct mp {
    uint8_t b[4096];
    size_t n;
};
static void mp_raw(struct mp *w, const void *p, size_t n)
{
    assert_true(w->n + n <= sizeof(w->b));
    memcpy(w->b + w->n, p, n);
    w->n += n;
}
static void mp_byte(struct mp *w, uint8_t v) { mp_raw(w, &v, 1); }
static void mp_map(struct mp *w, unsigned n) { assert_true(n < 16); mp_byte(w, (uint8_t)(0x80 | n)); }
static void mp_arr(struct mp *w, unsigned n) { assert_true(n < 16); mp_byte(w, (uint8_t)(0x90 | n)); }
static void mp_str(struct mp *w, const char *s)
{
    size_t n = strlen(s);
    assert_true(n < 32);
    mp_byte(w, (uint8_t)(0xa0 | n));
    mp_raw(w, s, n);
}
static void mp_strn(struct mp *w, const char *s, size_t n)
{
    assert_true(n < 32);
    mp_byte(w, (uint8_t)(0xa0 | n));
    mp_raw(w, s, n);
}
static void mp_uint(struct mp *w, uint64_t v)
{
    if (v < 128) {
        mp_byte(w, (uint8_t)v);
        return;
    }
    mp_byte(w, 0xcf);
    for (int i = 7; i >= 0; i--)
        mp_byte(w, (uint8_t)(v >> (8 * i)));
}
/* {"v": v, "t": t, "rid": 7, <extra keys>...}: the caller writes `extra` more key/value pairs */
static void mp_head(struct mp *w, uint64_t v, uint64_t t, unsigned extra)
{
    mp_map(w, 3 + extra);
    mp_str(w, "v");
    mp_uint(w, v);
    mp_str(w, "t");
    mp_uint(w, t);
    mp_str(w, "rid");
    mp_uint(w, 7);
}

/* ---- sample messages from the model -------------------------------------------------------------- */

static void sample_value(struct cairn_msg *m, struct cairn_mval *map, const struct cairn_proto_field *f);

static void sample_rec(struct cairn_msg *m, struct cairn_mval *map, const struct cairn_proto_rec *r)
{
    for (size_t i = 0; i < r->nfields; i++)
        sample_value(m, map, &r->fields[i]);
}

static size_t sample_len(uint64_t min, uint64_t max)
{
    size_t n = min ? (size_t)min : 1;
    return n > max ? (size_t)max : n;
}

static void sample_value(struct cairn_msg *m, struct cairn_mval *map, const struct cairn_proto_field *f)
{
    static const char xs[] = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    static const uint8_t zeros[64];
    switch (f->kind) {
    case CAIRN_PK_U64: cairn_mval_put_u64(m, map, f->name, f->min); break;
    case CAIRN_PK_I64: cairn_mval_put_i64(m, map, f->name, -1); break;
    case CAIRN_PK_BOOL: cairn_mval_put_bool(m, map, f->name, true); break;
    case CAIRN_PK_STR:
        assert_true(sample_len(f->min, f->max) <= 64);
        cairn_mval_put_strn(m, map, f->name, xs, sample_len(f->min, f->max));
        break;
    case CAIRN_PK_BIN:
        assert_true(sample_len(f->min, f->max) <= 64);
        cairn_mval_put_bin(m, map, f->name, zeros, sample_len(f->min, f->max));
        break;
    case CAIRN_PK_STRS: case CAIRN_PK_BINS: case CAIRN_PK_U64S: {
        struct cairn_mval *a = cairn_mval_put_array(m, map, f->name);
        size_t n = sample_len(f->min, f->max);
        for (size_t i = 0; i < n; i++) {
            if (f->kind == CAIRN_PK_STRS)
                cairn_mval_push_strn(m, a, xs, sample_len(f->emin, f->emax));
            else if (f->kind == CAIRN_PK_BINS)
                cairn_mval_push_bin(m, a, zeros, sample_len(f->emin, f->emax));
            else
                cairn_mval_push_u64(m, a, f->emin);
        }
        break;
    }
    case CAIRN_PK_MAP: {
        struct cairn_mval *mm = cairn_mval_put_map(m, map, f->name);
        cairn_mval_put_u64(m, mm, "a", 1);
        cairn_mval_put_str(m, mm, "b", "two");
        break;
    }
    case CAIRN_PK_REC:
        sample_rec(m, cairn_mval_put_map(m, map, f->name), f->rec);
        break;
    case CAIRN_PK_RECS: {
        struct cairn_mval *a = cairn_mval_put_array(m, map, f->name);
        for (size_t i = 0; i < sample_len(f->min, f->max); i++)
            sample_rec(m, cairn_mval_push_map(m, a), f->rec);
        break;
    }
    }
}

/* A message of type mi in direction dir with every field set to a valid value. */
static struct cairn_msg *sample_msg(const struct cairn_proto_msginfo *mi, int dir)
{
    struct cairn_msg *req = cairn_msg_new(mi->type);
    assert_non_null(req);
    cairn_msg_set_rid(req, 42);
    struct cairn_msg *m = req;
    if (dir == CAIRN_DIR_REPLY) {
        m = cairn_msg_reply(req, CAIRN_OK, NULL);
        cairn_msg_destroy(&req);
    } else {
        cairn_msg_set_app(m, "app");
        cairn_msg_set_token(m, "0123456789abcdef", 16);
    }
    const struct cairn_proto_dirinfo *di = &mi->dir[dir];
    struct cairn_mval *fields = (struct cairn_mval *)cairn_msg_fields(m);
    for (size_t i = 0; i < di->nfields; i++)
        sample_value(m, fields, &di->fields[i]);
    size_t frames = di->max_frames ? 1 : 0;
    if (di->frame_count) {
        const struct cairn_mval *v = cairn_msg_get(m, di->frame_count);
        uint64_t u = 0;
        frames = cairn_mval_kind(v) == CAIRN_MV_UINT ? (cairn_mval_u64(v, &u), (size_t)u) : cairn_mval_len(v);
    }
    for (size_t i = 0; i < frames; i++)
        cairn_msg_add_frame(m, "frame", 5);
    assert_int_equal(cairn_msg_build_error(m), CAIRN_OK);
    return m;
}

/* ---- model ------------------------------------------------------------------------------------- */

static void check_fieldset(const struct cairn_proto_field *fs, size_t n, const char *owner)
{
    for (size_t i = 0; i < n; i++) {
        const struct cairn_proto_field *f = &fs[i];
        for (size_t j = 0; j < i; j++)
            if (strcmp(fs[j].name, f->name) == 0)
                fail_msg("%s: field '%s' defined twice", owner, f->name);
        if ((f->kind == CAIRN_PK_REC || f->kind == CAIRN_PK_RECS) != (f->rec != NULL))
            fail_msg("%s: field '%s': record kinds need a record, others none", owner, f->name);
        if (f->kind != CAIRN_PK_BOOL && f->kind != CAIRN_PK_I64 && f->kind != CAIRN_PK_REC && f->min > f->max)
            fail_msg("%s: field '%s': min > max", owner, f->name);
        if ((f->kind == CAIRN_PK_STR || f->kind == CAIRN_PK_BIN) && f->max > CAIRN_PROTO_MAX_ENVELOPE / 2)
            fail_msg("%s: field '%s': limit does not fit an envelope", owner, f->name);
        if (f->kind == CAIRN_PK_MAP && f->max > CAIRN_PROTO_MAX_KEYS)
            fail_msg("%s: field '%s': free map limit over CAIRN_PROTO_MAX_KEYS", owner, f->name);
        assert_non_null(f->doc);
        assert_true(strlen(f->name) > 0 && strlen(f->name) <= 32);
    }
}

static void test_model(void **state)
{
    (void)state;
    size_t n = 0;
    const struct cairn_proto_msginfo *msgs = cairn_proto_messages(&n);
    assert_true(n >= 30);
    for (size_t i = 0; i < n; i++) {
        const struct cairn_proto_msginfo *mi = &msgs[i];
        if (i)
            assert_true(msgs[i - 1].type < mi->type); /* sorted, unique */
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(msgs[j].name, mi->name);
        assert_ptr_equal(cairn_proto_msginfo(mi->type), mi);
        assert_int_equal(cairn_msg_type_from_name(mi->name), mi->type);
        assert_string_equal(cairn_msg_type_name(mi->type), mi->name);
        check_fieldset(mi->dir[0].fields, mi->dir[0].nfields, mi->name);
        check_fieldset(mi->dir[1].fields, mi->dir[1].nfields, mi->name);
        for (int d = 0; d < 2; d++)
            if (mi->dir[d].frame_count)
                assert_non_null(cairn_proto_msginfo(mi->type)); /* field existence checked by the samples */
        const struct cairn_proto_field *f = mi->dir[0].fields;
        for (size_t k = 0; k < mi->dir[0].nfields; k++)
            if (f[k].kind == CAIRN_PK_REC || f[k].kind == CAIRN_PK_RECS)
                check_fieldset(f[k].rec->fields, f[k].rec->nfields, f[k].rec->name);
    }
    /* numbers are pinned: they are on the wire */
    assert_int_equal(CAIRN_MSG_PING, 1);
    assert_int_equal(CAIRN_MSG_CLUSTER_STATUS, 2);
    assert_int_equal(CAIRN_MSG_SANDBOX_SNAPSHOT_DIR, 26);
    assert_int_equal(CAIRN_MSG_ADMIN_CLOCK_ADVANCE, 50);
    assert_int_equal(CAIRN_MSG_WORKER_REGISTER, 100);
    assert_int_equal(CAIRN_MSG_JOB_DISPATCH, 120);
    assert_int_equal(CAIRN_MSG_CHUNK_PUT, 142);
    assert_null(cairn_proto_msginfo(0));
    assert_null(cairn_proto_msginfo(9999));
    assert_int_equal(cairn_msg_type_from_name("no.such"), CAIRN_MSG_NONE_);
    assert_null(cairn_msg_new((enum cairn_msg_type)9999));
}

/* Every type, both directions, every field: encode, decode, re-encode identically. */
static void test_every_message_roundtrips(void **state)
{
    (void)state;
    size_t n = 0;
    const struct cairn_proto_msginfo *msgs = cairn_proto_messages(&n);
    for (size_t i = 0; i < n; i++) {
        for (int d = 0; d < 2; d++) {
            if (d == CAIRN_DIR_REPLY && msgs[i].shape == CAIRN_SHAPE_ONEWAY)
                continue;
            struct cairn_msg *m = sample_msg(&msgs[i], d);
            size_t len = 0;
            uint8_t *env = encode_ok(m, &len);
            struct cairn_msg *back = NULL;
            int rc = decode_with_frames(env, len, m, &back);
            if (rc != CAIRN_OK)
                fail_msg("%s: %s", cairn_err_name(rc), cairn_err_msg());
            assert_int_equal(cairn_msg_type(back), msgs[i].type);
            assert_int_equal(cairn_msg_rid(back), 42);
            assert_int_equal(cairn_msg_is_reply(back), d == CAIRN_DIR_REPLY);
            assert_int_equal(cairn_msg_frame_count(back), cairn_msg_frame_count(m));
            size_t len2 = 0;
            uint8_t *env2 = encode_ok(back, &len2);
            assert_int_equal(len2, len);
            assert_memory_equal(env2, env, len);
            cairn_free(env);
            cairn_free(env2);
            cairn_msg_destroy(&back);
            cairn_msg_destroy(&m);
            assert_null(m);
        }
    }
}

/* A value of the wrong kind for a field. */
static void put_wrong(struct cairn_msg *m, struct cairn_mval *map, const struct cairn_proto_field *f)
{
    switch (f->kind) {
    case CAIRN_PK_STR: case CAIRN_PK_STRS: case CAIRN_PK_MAP: case CAIRN_PK_REC:
        cairn_mval_put_u64(m, map, f->name, 5);
        break;
    case CAIRN_PK_U64:
        cairn_mval_put_i64(m, map, f->name, -5);
        break;
    default:
        cairn_mval_put_str(m, map, f->name, "wrong");
        break;
    }
}

/* A value over the field's limit, or false when the limit cannot be exceeded within an envelope. */
static bool put_oversized(struct cairn_msg *m, struct cairn_mval *map, const struct cairn_proto_field *f)
{
    switch (f->kind) {
    case CAIRN_PK_U64:
        if (f->max == UINT64_MAX)
            return false;
        cairn_mval_put_u64(m, map, f->name, f->max + 1);
        return true;
    case CAIRN_PK_STR: case CAIRN_PK_BIN: {
        size_t n = (size_t)f->max + 1;
        char *buf = calloc(1, n);
        memset(buf, 'x', n);
        if (f->kind == CAIRN_PK_STR)
            cairn_mval_put_strn(m, map, f->name, buf, n);
        else
            cairn_mval_put_bin(m, map, f->name, buf, n);
        free(buf);
        return true;
    }
    case CAIRN_PK_STRS: case CAIRN_PK_BINS: case CAIRN_PK_U64S: case CAIRN_PK_RECS: {
        struct cairn_mval *a = cairn_mval_put_array(m, map, f->name);
        for (uint64_t i = 0; i <= f->max; i++) {
            if (f->kind == CAIRN_PK_STRS)
                cairn_mval_push_strn(m, a, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", sample_len(f->emin, f->emax));
            else if (f->kind == CAIRN_PK_BINS)
                cairn_mval_push_bin(m, a, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", sample_len(f->emin, f->emax));
            else if (f->kind == CAIRN_PK_U64S)
                cairn_mval_push_u64(m, a, 0);
            else
                sample_rec(m, cairn_mval_push_map(m, a), f->rec);
        }
        return true;
    }
    case CAIRN_PK_MAP: {
        struct cairn_mval *mm = cairn_mval_put_map(m, map, f->name);
        char key[32];
        for (uint64_t i = 0; i <= f->max; i++) {
            snprintf(key, sizeof(key), "k%llu", (unsigned long long)i);
            cairn_mval_put_u64(m, mm, key, i);
        }
        return true;
    }
    default:
        return false;
    }
}

static void mutate_fields(const struct cairn_proto_msginfo *mi, int d)
{
    const struct cairn_proto_dirinfo *di = &mi->dir[d];
    for (size_t k = 0; k < di->nfields; k++) {
        const struct cairn_proto_field *f = &di->fields[k];
        char quoted[64];
        snprintf(quoted, sizeof(quoted), "'%s'", f->name);
        struct cairn_msg *m;
        struct cairn_mval *fields;
        if (f->flags & CAIRN_PF_REQUIRED) {
            m = sample_msg(mi, d);
            cairn_msg_unset(m, f->name);
            if (!(di->frame_count && strcmp(di->frame_count, f->name) == 0))
                expect_verdict(m, CAIRN_EPROTO, quoted);
            cairn_msg_destroy(&m);
        }
        m = sample_msg(mi, d);
        fields = (struct cairn_mval *)cairn_msg_fields(m);
        put_wrong(m, fields, f);
        expect_verdict(m, CAIRN_EPROTO, quoted);
        cairn_msg_destroy(&m);

        m = sample_msg(mi, d);
        fields = (struct cairn_mval *)cairn_msg_fields(m);
        if (!(di->frame_count && strcmp(di->frame_count, f->name) == 0) && put_oversized(m, fields, f))
            expect_verdict(m, CAIRN_ETOOBIG, quoted);
        cairn_msg_destroy(&m);

        if ((f->kind == CAIRN_PK_STR || f->kind == CAIRN_PK_BIN) && f->min > 0) {
            m = sample_msg(mi, d);
            fields = (struct cairn_mval *)cairn_msg_fields(m);
            if (f->kind == CAIRN_PK_STR)
                cairn_mval_put_strn(m, fields, f->name, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", (size_t)f->min - 1);
            else
                cairn_mval_put_bin(m, fields, f->name, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", (size_t)f->min - 1);
            expect_verdict(m, CAIRN_EPROTO, quoted);
            cairn_msg_destroy(&m);
        }
        if (f->kind == CAIRN_PK_STR) {
            m = sample_msg(mi, d);
            fields = (struct cairn_mval *)cairn_msg_fields(m);
            char s[64] = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
            size_t n = sample_len(f->min, f->max);
            if (n >= 1) {
                s[0] = '\0';
                cairn_mval_put_strn(m, fields, f->name, s, n);
                expect_verdict(m, CAIRN_EPROTO, "NUL");
            }
            cairn_msg_destroy(&m);
        }
        if (f->kind == CAIRN_PK_RECS || f->kind == CAIRN_PK_REC) {
            /* a required record field missing inside the first element */
            const struct cairn_proto_rec *r = f->rec;
            for (size_t j = 0; j < r->nfields; j++) {
                if (!(r->fields[j].flags & CAIRN_PF_REQUIRED))
                    continue;
                m = sample_msg(mi, d);
                fields = (struct cairn_mval *)cairn_msg_fields(m);
                struct cairn_mval *el;
                if (f->kind == CAIRN_PK_REC) {
                    el = cairn_mval_put_map(m, fields, f->name);
                } else {
                    struct cairn_mval *a = cairn_mval_put_array(m, fields, f->name);
                    el = cairn_mval_push_map(m, a);
                }
                for (size_t q = 0; q < r->nfields; q++)
                    if (q != j)
                        sample_value(m, el, &r->fields[q]);
                char path[96];
                snprintf(path, sizeof(path), "%s%s.%s'", f->name, f->kind == CAIRN_PK_RECS ? "[0]" : "",
                         r->fields[j].name);
                expect_verdict(m, CAIRN_EPROTO, path);
                cairn_msg_destroy(&m);
            }
        }
    }
}

/* Each field of each message: missing, wrong type, too big, too small, NUL in a string. */
static void test_every_field_is_checked(void **state)
{
    (void)state;
    size_t n = 0;
    const struct cairn_proto_msginfo *msgs = cairn_proto_messages(&n);
    for (size_t i = 0; i < n; i++)
        for (int d = 0; d < 2; d++)
            if (!(d == CAIRN_DIR_REPLY && msgs[i].shape == CAIRN_SHAPE_ONEWAY))
                mutate_fields(&msgs[i], d);
}

/* ---- builder and accessors --------------------------------------------------------------------- */

static void test_builder_and_accessors(void **state)
{
    (void)state;
    struct cairn_msg *m = cairn_msg_new(CAIRN_MSG_JOB_SUBMIT);
    cairn_msg_set_rid(m, UINT64_MAX);
    cairn_msg_set_app(m, "demo");
    cairn_msg_set_token(m, "tok-tok-tok-tok!", 16);
    cairn_msg_set_str(m, "kind", "snapshot-fs");
    cairn_msg_set_str(m, "req_id", "r1");
    struct cairn_mval *params = cairn_msg_set_map(m, "params");
    /* later growth of the field map must not invalidate `params` */
    for (int i = 0; i < 40; i++) {
        char k[16];
        snprintf(k, sizeof(k), "extra%d", i);
        cairn_msg_set_u64(m, k, (uint64_t)i);
    }
    cairn_mval_put_str(m, params, "sandbox", "sb-1");
    cairn_mval_put_i64(m, params, "neg", -12345678901LL);
    cairn_mval_put_i64(m, params, "pos", 17);
    cairn_mval_put_bool(m, params, "flag", false);
    cairn_mval_put_bin(m, params, "blob", "\0\1\2", 3);
    struct cairn_mval *tags = cairn_mval_put_array(m, params, "tags");
    cairn_mval_push_str(m, tags, "a");
    cairn_mval_push_str(m, tags, "b");
    struct cairn_mval *inner = cairn_mval_push_map(m, tags);
    cairn_mval_put_u64(m, inner, "deep", 1);
    cairn_mval_put_str(m, params, "sandbox", "sb-2"); /* replaces */
    cairn_msg_set_u64(m, "wait_ms", 1000);
    cairn_msg_set_u64(m, "wait_ms", 2000); /* replaces */
    cairn_msg_unset(m, "extra39");
    cairn_msg_unset(m, "nonexistent");

    size_t len = 0;
    uint8_t *env = encode_ok(m, &len);
    struct cairn_msg *d = NULL;
    assert_int_equal(decode_with_frames(env, len, NULL, &d), CAIRN_OK);
    assert_int_equal(cairn_msg_type(d), CAIRN_MSG_JOB_SUBMIT);
    assert_true(cairn_msg_rid(d) == UINT64_MAX);
    assert_false(cairn_msg_is_reply(d));
    assert_string_equal(cairn_msg_app(d), "demo");
    const uint8_t *tok;
    size_t tlen;
    cairn_msg_token(d, &tok, &tlen);
    assert_int_equal(tlen, 16);
    assert_memory_equal(tok, "tok-tok-tok-tok!", 16);
    assert_null(cairn_msg_text(d));
    assert_string_equal(cairn_msg_peer_key(d), "");

    const char *s;
    size_t sl;
    uint64_t u;
    int64_t i64;
    bool b;
    assert_int_equal(cairn_msg_get_str(d, "kind", &s, &sl), CAIRN_OK);
    assert_string_equal(s, "snapshot-fs");
    assert_int_equal(sl, 11);
    assert_int_equal(cairn_msg_get_u64(d, "wait_ms", &u), CAIRN_OK);
    assert_int_equal(u, 2000);
    assert_int_equal(cairn_msg_get_u64(d, "extra38", &u), CAIRN_OK);
    assert_int_equal(u, 38);
    assert_null(cairn_msg_get(d, "extra39"));
    /* absent and wrong-kind lookups */
    assert_int_equal(cairn_msg_get_u64(d, "nope", &u), CAIRN_ENOTFOUND);
    assert_non_null(strstr(cairn_err_msg(), "'nope'"));
    assert_int_equal(cairn_msg_get_u64(d, "kind", &u), CAIRN_EPROTO);
    assert_non_null(strstr(cairn_err_msg(), "'kind'"));
    assert_int_equal(cairn_msg_get_bool(d, "kind", &b), CAIRN_EPROTO);
    assert_int_equal(cairn_msg_opt_u64(d, "nope", 9, &u), CAIRN_OK);
    assert_int_equal(u, 9);
    assert_int_equal(cairn_msg_opt_bool(d, "nope", true, &b), CAIRN_OK);
    assert_true(b);

    const struct cairn_mval *p;
    size_t pn;
    assert_int_equal(cairn_msg_get_map(d, "params", &p, &pn), CAIRN_OK);
    assert_int_equal(pn, 6);
    assert_int_equal(cairn_mval_str(cairn_mval_get(p, "sandbox"), &s, &sl), CAIRN_OK);
    assert_string_equal(s, "sb-2");
    assert_int_equal(cairn_mval_i64(cairn_mval_get(p, "neg"), &i64), CAIRN_OK);
    assert_true(i64 == -12345678901LL);
    assert_int_equal(cairn_mval_kind(cairn_mval_get(p, "neg")), CAIRN_MV_INT);
    assert_int_equal(cairn_mval_kind(cairn_mval_get(p, "pos")), CAIRN_MV_UINT);
    assert_int_equal(cairn_mval_i64(cairn_mval_get(p, "pos"), &i64), CAIRN_OK);
    assert_int_equal(i64, 17);
    assert_int_equal(cairn_mval_u64(cairn_mval_get(p, "neg"), &u), CAIRN_EPROTO);
    assert_int_equal(cairn_mval_bool(cairn_mval_get(p, "flag"), &b), CAIRN_OK);
    assert_false(b);
    const uint8_t *bin;
    size_t bl;
    assert_int_equal(cairn_mval_bin(cairn_mval_get(p, "blob"), &bin, &bl), CAIRN_OK);
    assert_int_equal(bl, 3);
    assert_memory_equal(bin, "\0\1\2", 3);
    const struct cairn_mval *t = cairn_mval_get(p, "tags");
    assert_int_equal(cairn_mval_kind(t), CAIRN_MV_ARRAY);
    assert_int_equal(cairn_mval_len(t), 3);
    assert_int_equal(cairn_mval_str(cairn_mval_at(t, 1), &s, NULL), CAIRN_OK);
    assert_string_equal(s, "b");
    assert_null(cairn_mval_at(t, 3));
    assert_int_equal(cairn_mval_u64(cairn_mval_get(cairn_mval_at(t, 2), "deep"), &u), CAIRN_OK);
    const char *key;
    const struct cairn_mval *val;
    assert_int_equal(cairn_mval_entry(p, 0, &key, &val), CAIRN_OK);
    assert_string_equal(key, "sandbox");
    assert_int_equal(cairn_mval_entry(p, 6, &key, &val), CAIRN_EINVAL);
    assert_null(cairn_mval_get(t, "x"));

    /* copy a decoded value into a new message (the coordinator forwarding params) */
    struct cairn_msg *fwd = cairn_msg_new(CAIRN_MSG_JOB_DISPATCH);
    cairn_msg_set_str(fwd, "job", "jb-1");
    cairn_msg_set_str(fwd, "kind", "snapshot-fs");
    cairn_msg_set_value(fwd, "params", p);
    cairn_msg_destroy(&d); /* the copy must not depend on the source */
    size_t flen = 0;
    uint8_t *fenv = encode_ok(fwd, &flen);
    assert_int_equal(decode_with_frames(fenv, flen, NULL, &d), CAIRN_OK);
    assert_int_equal(cairn_msg_get_map(d, "params", &p, &pn), CAIRN_OK);
    assert_int_equal(pn, 6);
    cairn_free(fenv);
    cairn_msg_destroy(&fwd);
    cairn_msg_destroy(&d);

    /* replies */
    struct cairn_msg *r = cairn_msg_reply(m, CAIRN_ENOTFOUND, "job 'jb-9' not found");
    assert_true(cairn_msg_is_reply(r));
    assert_true(cairn_msg_rid(r) == UINT64_MAX);
    assert_int_equal(cairn_msg_code(r), CAIRN_ENOTFOUND);
    uint8_t *renv = encode_ok(r, &len);
    assert_int_equal(decode_with_frames(renv, len, NULL, &d), CAIRN_OK);
    assert_int_equal(cairn_msg_code(d), CAIRN_ENOTFOUND);
    assert_string_equal(cairn_msg_text(d), "job 'jb-9' not found");
    assert_null(cairn_msg_app(d));
    cairn_msg_destroy(&d);
    cairn_free(renv);
    cairn_msg_destroy(&r);

    cairn_free(env);
    cairn_msg_destroy(&m);
    cairn_msg_destroy(&m); /* NULL-safe */
    cairn_msg_destroy(NULL);
}

static void test_builder_errors_are_sticky(void **state)
{
    (void)state;
    uint8_t *env = NULL;
    size_t len = 0;
    struct cairn_msg *m = cairn_msg_new(CAIRN_MSG_PING);
    char big[CAIRN_PROTO_MAX_APP + 2];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    cairn_msg_set_app(m, big);
    cairn_msg_set_bin(m, "echo", "x", 1); /* later calls do not clear the error */
    assert_int_equal(cairn_msg_build_error(m), CAIRN_ETOOBIG);
    assert_int_equal(cairn_msg_encode(m, &env, &len), CAIRN_ETOOBIG);
    assert_null(env);
    assert_non_null(strstr(cairn_err_msg(), "app"));
    cairn_msg_destroy(&m);

    m = cairn_msg_new(CAIRN_MSG_PING);
    struct cairn_mval *notmap = cairn_msg_set_array(m, "echo");
    cairn_mval_put_u64(m, notmap, "k", 1); /* put into an array */
    assert_int_equal(cairn_msg_build_error(m), CAIRN_EINVAL);
    cairn_msg_destroy(&m);

    /* NULL containers after an error are no-ops */
    m = cairn_msg_new(CAIRN_MSG_PING);
    cairn_mval_put_u64(m, NULL, "k", 1);
    cairn_mval_push_u64(m, NULL, 1);
    assert_null(cairn_mval_put_map(m, NULL, "k"));
    assert_int_equal(cairn_msg_build_error(m), CAIRN_OK);
    cairn_msg_set_token(m, "t", CAIRN_PROTO_MAX_TOKEN + 1);
    assert_int_equal(cairn_msg_build_error(m), CAIRN_ETOOBIG);
    cairn_msg_destroy(&m);

    /* envelope rules enforced at encode */
    m = cairn_msg_new(CAIRN_MSG_CLUSTER_STATUS);
    assert_int_equal(cairn_msg_encode(m, &env, &len), CAIRN_EPROTO); /* no app */
    assert_non_null(strstr(cairn_err_msg(), "'app'"));
    cairn_msg_set_app(m, "demo");
    assert_int_equal(cairn_msg_encode(m, &env, &len), CAIRN_EPROTO); /* no token */
    assert_non_null(strstr(cairn_err_msg(), "'tok'"));
    cairn_msg_set_token(m, "t", 1);
    assert_int_equal(cairn_msg_encode(m, &env, &len), CAIRN_OK);
    cairn_free(env);
    /* a reply to a one-way message does not exist */
    struct cairn_msg *p = cairn_msg_new(CAIRN_MSG_JOB_PROGRESS);
    struct cairn_msg *r = cairn_msg_reply(p, 0, NULL);
    assert_int_equal(cairn_msg_encode(r, &env, &len), CAIRN_EPROTO);
    cairn_msg_destroy(&r);
    cairn_msg_destroy(&p);
    /* frames: too many, or a count that disagrees with the field */
    cairn_msg_add_frame(m, "x", 1);
    assert_int_equal(cairn_msg_encode(m, &env, &len), CAIRN_ETOOBIG);
    cairn_msg_destroy(&m);
    m = cairn_msg_new(CAIRN_MSG_CHUNK_PUT);
    uint8_t dom[16] = {0}, id[32] = {0};
    cairn_msg_set_bin(m, "domain", dom, sizeof(dom));
    struct cairn_mval *ids = cairn_msg_set_array(m, "ids");
    cairn_mval_push_bin(m, ids, id, sizeof(id));
    cairn_mval_push_bin(m, ids, id, sizeof(id));
    cairn_msg_add_frame(m, "chunk", 5);
    assert_int_equal(cairn_msg_encode(m, &env, &len), CAIRN_EPROTO);
    assert_non_null(strstr(cairn_err_msg(), "'ids'"));
    assert_int_equal(verdict(m), CAIRN_EPROTO);
    cairn_msg_add_frame(m, "", 0);
    assert_int_equal(cairn_msg_encode(m, &env, &len), CAIRN_OK);
    cairn_free(env);
    /* error replies carry no frames */
    r = cairn_msg_reply(m, CAIRN_EBUSY, "busy");
    cairn_msg_add_frame(r, "x", 1);
    assert_int_equal(cairn_msg_encode(r, &env, &len), CAIRN_EPROTO);
    cairn_msg_destroy(&r);
    cairn_msg_destroy(&m);

    /* a raw frame over the limit */
    m = cairn_msg_new(CAIRN_MSG_IMAGE_IMPORT);
    uint8_t *huge = malloc((size_t)CAIRN_PROTO_MAX_FRAME + 1);
    cairn_msg_add_frame(m, huge, (size_t)CAIRN_PROTO_MAX_FRAME + 1);
    free(huge);
    assert_int_equal(cairn_msg_build_error(m), CAIRN_ETOOBIG);
    cairn_msg_destroy(&m);
}

/* ---- golden frames ----------------------------------------------------------------------------- */

static const uint8_t TOKEN[32] = "golden-app-token-0123456789abcde";

static struct cairn_msg *req(enum cairn_msg_type t, uint64_t rid, bool client)
{
    struct cairn_msg *m = cairn_msg_new(t);
    cairn_msg_set_rid(m, rid);
    if (client) {
        cairn_msg_set_app(m, "demo");
        cairn_msg_set_token(m, TOKEN, sizeof(TOKEN));
    }
    return m;
}

static struct cairn_msg *rep(enum cairn_msg_type t, uint64_t rid, int code, const char *text)
{
    struct cairn_msg *q = cairn_msg_new(t);
    cairn_msg_set_rid(q, rid);
    struct cairn_msg *m = cairn_msg_reply(q, code, text);
    cairn_msg_destroy(&q);
    return m;
}

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed + i * 7);
}

static struct cairn_msg *g_ping_req(void)
{
    struct cairn_msg *m = req(CAIRN_MSG_PING, 1, false);
    cairn_msg_set_bin(m, "echo", "hello", 5);
    return m;
}

static struct cairn_msg *g_ping_rep(void)
{
    struct cairn_msg *m = rep(CAIRN_MSG_PING, 1, 0, NULL);
    cairn_msg_set_str(m, "version", "cairn 0.1.0");
    cairn_msg_set_u64(m, "proto", 1);
    cairn_msg_set_u64(m, "now", 1764151200000000000ull);
    cairn_msg_set_bin(m, "echo", "hello", 5);
    return m;
}

static struct cairn_msg *g_cluster_status_rep(void)
{
    struct cairn_msg *m = rep(CAIRN_MSG_CLUSTER_STATUS, 2, 0, NULL);
    struct cairn_mval *ws = cairn_msg_set_array(m, "workers");
    for (int i = 0; i < 2; i++) {
        struct cairn_mval *w = cairn_mval_push_map(m, ws);
        char id[16], addr[64];
        snprintf(id, sizeof(id), "w%d", i + 1);
        snprintf(addr, sizeof(addr), "tcp://10.0.0.%d:7301", i + 2);
        cairn_mval_put_str(m, w, "id", id);
        cairn_mval_put_str(m, w, "addr", addr);
        cairn_mval_put_bool(m, w, "alive", i == 0);
        cairn_mval_put_u64(m, w, "chunks", 123456u + (unsigned)i);
        cairn_mval_put_u64(m, w, "bytes", 8000000000ull);
        cairn_mval_put_u64(m, w, "sandboxes", 3u * (unsigned)i);
        cairn_mval_put_u64(m, w, "last_seen", 1764151199000000000ull);
        cairn_mval_put_str(m, w, "fingerprint", "runsc-20230417/5f3a9c");
    }
    cairn_msg_set_u64(m, "epoch", 7);
    cairn_msg_set_u64(m, "replicas", 2);
    return m;
}

static struct cairn_msg *g_app_create_rep(void)
{
    struct cairn_msg *m = rep(CAIRN_MSG_APP_CREATE, 3, 0, NULL);
    cairn_msg_set_str(m, "app", "demo");
    cairn_msg_set_bin(m, "token", TOKEN, sizeof(TOKEN));
    return m;
}

static struct cairn_msg *g_job_submit_req(void)
{
    struct cairn_msg *m = req(CAIRN_MSG_JOB_SUBMIT, 4, true);
    cairn_msg_set_str(m, "kind", "snapshot-fs");
    struct cairn_mval *p = cairn_msg_set_map(m, "params");
    cairn_mval_put_str(m, p, "sandbox", "sb-0f3c");
    cairn_mval_put_u64(m, p, "ttl_s", 86400);
    cairn_mval_put_i64(m, p, "nice", -5);
    struct cairn_mval *tags = cairn_mval_put_array(m, p, "tags");
    cairn_mval_push_str(m, tags, "nightly");
    cairn_mval_push_bool(m, tags, true);
    cairn_msg_set_str(m, "req_id", "6f1e0c2a-req");
    cairn_msg_set_u64(m, "wait_ms", 30000);
    return m;
}

static struct cairn_msg *g_job_get_rep(void)
{
    struct cairn_msg *m = rep(CAIRN_MSG_JOB_GET, 5, 0, NULL);
    cairn_msg_set_str(m, "job", "jb-000017");
    cairn_msg_set_str(m, "kind", "restore");
    cairn_msg_set_str(m, "state", "succeeded");
    cairn_msg_set_u64(m, "done", 1u << 30);
    cairn_msg_set_u64(m, "total", 1u << 30);
    cairn_msg_set_str(m, "worker", "w2");
    struct cairn_mval *r = cairn_msg_set_map(m, "result");
    struct cairn_mval *ids = cairn_mval_put_array(m, r, "ids");
    cairn_mval_push_str(m, ids, "sb-a1");
    cairn_mval_push_str(m, ids, "sb-a2");
    return m;
}

static struct cairn_msg *g_image_ls_rep(void)
{
    struct cairn_msg *m = rep(CAIRN_MSG_IMAGE_LS, 6, 0, NULL);
    struct cairn_mval *a = cairn_msg_set_array(m, "images");
    struct cairn_mval *i1 = cairn_mval_push_map(m, a);
    cairn_mval_put_str(m, i1, "id", "im-base");
    cairn_mval_put_str(m, i1, "kind", "base");
    cairn_mval_put_str(m, i1, "encryption", "managed");
    cairn_mval_put_u64(m, i1, "created_at", 1764000000000000000ull);
    cairn_mval_put_str(m, i1, "retention", "never");
    struct cairn_mval *i2 = cairn_mval_push_map(m, a);
    cairn_mval_put_str(m, i2, "id", "im-dir1");
    cairn_mval_put_str(m, i2, "kind", "dir");
    cairn_mval_put_str(m, i2, "parent", "im-base");
    cairn_mval_put_str(m, i2, "encryption", "csek");
    cairn_mval_put_u64(m, i2, "created_at", 1764100000000000000ull);
    cairn_mval_put_u64(m, i2, "expires_at", 1766692000000000000ull);
    cairn_mval_put_str(m, i2, "retention", "sliding:2592000");
    cairn_mval_put_u64(m, i2, "size", 4096);
    cairn_msg_set_str(m, "next", "im-dir1");
    return m;
}

static struct cairn_msg *g_sandbox_ls_rep(void)
{
    struct cairn_msg *m = rep(CAIRN_MSG_SANDBOX_LS, 7, 0, NULL);
    struct cairn_mval *a = cairn_msg_set_array(m, "sandboxes");
    struct cairn_mval *s = cairn_mval_push_map(m, a);
    cairn_mval_put_str(m, s, "id", "sb-0f3c");
    cairn_mval_put_str(m, s, "state", "running");
    cairn_mval_put_str(m, s, "worker", "w1");
    cairn_mval_put_u64(m, s, "created_at", 1764151000000000000ull);
    cairn_mval_put_bool(m, s, "enable_snapshot", true);
    struct cairn_mval *mounts = cairn_mval_put_array(m, s, "mounts");
    struct cairn_mval *mt = cairn_mval_push_map(m, mounts);
    cairn_mval_put_str(m, mt, "path", "/project");
    cairn_mval_put_str(m, mt, "image", "im-dir1");
    cairn_mval_put_bool(m, mt, "csek", true);
    mt = cairn_mval_push_map(m, mounts);
    cairn_mval_put_str(m, mt, "path", "/scratch");
    return m;
}

static struct cairn_msg *g_sandbox_mount_req(void)
{
    struct cairn_msg *m = req(CAIRN_MSG_SANDBOX_MOUNT, 8, true);
    uint8_t key[32];
    fill(key, sizeof(key), 0x40);
    cairn_msg_set_str(m, "sandbox", "sb-0f3c");
    cairn_msg_set_str(m, "path", "/project");
    cairn_msg_set_str(m, "image", "im-dir1");
    cairn_msg_set_bin(m, "key", key, sizeof(key));
    cairn_msg_set_u64(m, "wait_ms", 10000);
    return m;
}

static struct cairn_msg *g_exec_stream_rep(void)
{
    struct cairn_msg *m = rep(CAIRN_MSG_SANDBOX_EXEC_STREAM, 9, 0, NULL);
    cairn_msg_set_u64(m, "seq", 3);
    cairn_msg_set_u64(m, "stream", 1);
    cairn_msg_set_bin(m, "data", "private data\n", 13);
    return m;
}

static struct cairn_msg *g_snapshot_err(void)
{
    return rep(CAIRN_MSG_SANDBOX_SNAPSHOT, 10, CAIRN_EBUSY, "sandbox 'sb-0f3c' has a running exec");
}

static struct cairn_msg *g_worker_register_req(void)
{
    struct cairn_msg *m = req(CAIRN_MSG_WORKER_REGISTER, 100, false);
    cairn_msg_set_str(m, "id", "w1");
    cairn_msg_set_str(m, "peer", "tcp://10.0.0.2:7301");
    cairn_msg_set_str(m, "public_key", "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7");
    cairn_msg_set_u64(m, "capacity", 64);
    cairn_msg_set_str(m, "fingerprint", "runsc-20230417/5f3a9c");
    cairn_msg_set_str(m, "version", "cairn 0.1.0");
    struct cairn_mval *sb = cairn_msg_set_array(m, "sandboxes");
    cairn_mval_push_str(m, sb, "sb-0f3c");
    return m;
}

static struct cairn_msg *g_worker_heartbeat_req(void)
{
    struct cairn_msg *m = req(CAIRN_MSG_WORKER_HEARTBEAT, 101, false);
    cairn_msg_set_str(m, "id", "w1");
    cairn_msg_set_u64(m, "chunks", 123456);
    cairn_msg_set_u64(m, "bytes", 8000000000ull);
    cairn_msg_set_u64(m, "sandboxes", 3);
    struct cairn_mval *j = cairn_msg_set_array(m, "jobs");
    cairn_mval_push_str(m, j, "jb-000017");
    cairn_mval_push_str(m, j, "jb-000018");
    return m;
}

static struct cairn_msg *g_job_dispatch_req(void)
{
    struct cairn_msg *m = req(CAIRN_MSG_JOB_DISPATCH, 120, false);
    uint8_t dom[16], dek[32];
    fill(dom, sizeof(dom), 1);
    fill(dek, sizeof(dek), 0x99);
    cairn_msg_set_str(m, "job", "jb-000019");
    cairn_msg_set_str(m, "kind", "snapshot-dir");
    cairn_msg_set_str(m, "app", "demo");
    struct cairn_mval *p = cairn_msg_set_map(m, "params");
    cairn_mval_put_str(m, p, "sandbox", "sb-0f3c");
    cairn_mval_put_str(m, p, "path", "/project");
    cairn_mval_put_str(m, p, "image", "im-dir2");
    cairn_msg_set_bin(m, "domain", dom, sizeof(dom));
    cairn_msg_set_bin(m, "dek", dek, sizeof(dek));
    return m;
}

static struct cairn_msg *g_membership_req(void)
{
    struct cairn_msg *m = req(CAIRN_MSG_MEMBERSHIP, 121, false);
    cairn_msg_set_u64(m, "epoch", 8);
    struct cairn_mval *ws = cairn_msg_set_array(m, "workers");
    struct cairn_mval *w = cairn_mval_push_map(m, ws);
    cairn_mval_put_str(m, w, "id", "w1");
    cairn_mval_put_str(m, w, "endpoint", "tcp://10.0.0.2:7301");
    cairn_mval_put_str(m, w, "public_key", "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7");
    cairn_mval_put_bool(m, w, "alive", true);
    cairn_msg_set_u64(m, "replicas", 2);
    return m;
}

static struct cairn_msg *g_chunk_has_req(void)
{
    struct cairn_msg *m = req(CAIRN_MSG_CHUNK_HAS, 140, false);
    uint8_t dom[16], id[32];
    fill(dom, sizeof(dom), 1);
    cairn_msg_set_bin(m, "domain", dom, sizeof(dom));
    struct cairn_mval *ids = cairn_msg_set_array(m, "ids");
    for (uint8_t i = 0; i < 3; i++) {
        fill(id, sizeof(id), (uint8_t)(i * 31));
        cairn_mval_push_bin(m, ids, id, sizeof(id));
    }
    return m;
}

static struct cairn_msg *g_chunk_has_rep(void)
{
    struct cairn_msg *m = rep(CAIRN_MSG_CHUNK_HAS, 140, 0, NULL);
    cairn_msg_set_bin(m, "bitmap", "\x05", 1);
    return m;
}

static struct cairn_msg *g_chunk_get_rep(void)
{
    struct cairn_msg *m = rep(CAIRN_MSG_CHUNK_GET, 141, 0, NULL);
    uint8_t c[300];
    fill(c, sizeof(c), 3);
    cairn_msg_set_u64(m, "count", 3);
    cairn_msg_add_frame(m, c, sizeof(c));
    cairn_msg_add_frame(m, "", 0); /* missing */
    cairn_msg_add_frame(m, c, 17);
    return m;
}

static struct cairn_msg *g_chunk_put_req(void)
{
    struct cairn_msg *m = req(CAIRN_MSG_CHUNK_PUT, 142, false);
    uint8_t dom[16], id[32], c[100];
    fill(dom, sizeof(dom), 1);
    cairn_msg_set_bin(m, "domain", dom, sizeof(dom));
    struct cairn_mval *ids = cairn_msg_set_array(m, "ids");
    for (uint8_t i = 0; i < 2; i++) {
        fill(id, sizeof(id), (uint8_t)(i + 50));
        cairn_mval_push_bin(m, ids, id, sizeof(id));
        fill(c, sizeof(c), (uint8_t)(i + 9));
        cairn_msg_add_frame(m, c, sizeof(c));
    }
    return m;
}

static struct cairn_msg *g_chunk_put_rep(void)
{
    struct cairn_msg *m = rep(CAIRN_MSG_CHUNK_PUT, 142, 0, NULL);
    struct cairn_mval *st = cairn_msg_set_array(m, "status");
    cairn_mval_push_u64(m, st, 0);
    cairn_mval_push_u64(m, st, CAIRN_ECORRUPT);
    return m;
}

static const struct golden {
    const char *file;
    struct cairn_msg *(*build)(void);
} goldens[] = {
    {"ping.req.bin", g_ping_req},
    {"ping.rep.bin", g_ping_rep},
    {"cluster.status.rep.bin", g_cluster_status_rep},
    {"app.create.rep.bin", g_app_create_rep},
    {"job.submit.req.bin", g_job_submit_req},
    {"job.get.rep.bin", g_job_get_rep},
    {"image.ls.rep.bin", g_image_ls_rep},
    {"sandbox.ls.rep.bin", g_sandbox_ls_rep},
    {"sandbox.mount.req.bin", g_sandbox_mount_req},
    {"sandbox.exec.stream.rep.bin", g_exec_stream_rep},
    {"sandbox.snapshot.err.bin", g_snapshot_err},
    {"worker.register.req.bin", g_worker_register_req},
    {"worker.heartbeat.req.bin", g_worker_heartbeat_req},
    {"job.dispatch.req.bin", g_job_dispatch_req},
    {"membership.req.bin", g_membership_req},
    {"chunk.has.req.bin", g_chunk_has_req},
    {"chunk.has.rep.bin", g_chunk_has_rep},
    {"chunk.get.rep.bin", g_chunk_get_rep},
    {"chunk.put.req.bin", g_chunk_put_req},
    {"chunk.put.rep.bin", g_chunk_put_rep},
};

static void test_golden_frames(void **state)
{
    (void)state;
    mkdir(CAIRN_PROTO_SRC_DIR "/golden", 0755);
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(goldens); i++) {
        const char *path = tu_path("%s/golden/%s", CAIRN_PROTO_SRC_DIR, goldens[i].file);
        struct cairn_msg *m = goldens[i].build();
        uint8_t *built = NULL;
        size_t blen = 0;
        int rc = cairn_msg_encode_container(m, &built, &blen);
        if (rc != CAIRN_OK)
            fail_msg("%s: %s", goldens[i].file, cairn_err_msg());
        if (regen()) {
            assert_int_equal(cairn_file_replace_atomic(path, built, blen, 0644), CAIRN_OK);
#ifdef CAIRN_FUZZ_CORPUS_DIR
            tu_sh("mkdir -p '%s'", CAIRN_FUZZ_CORPUS_DIR);
            assert_int_equal(cairn_file_replace_atomic(tu_path("%s/golden-%s", CAIRN_FUZZ_CORPUS_DIR, goldens[i].file),
                                                       built, blen, 0644),
                             CAIRN_OK);
#endif
        }
        size_t flen = 0;
        uint8_t *file = tu_read_file(path, &flen);
        if (!file)
            fail_msg("missing golden frame %s (run with CAIRN_GOLDEN_REGEN=1)", path);
        /* what the builder makes today is what was committed */
        if (flen != blen || memcmp(file, built, blen) != 0)
            fail_msg("%s differs from the builder's output: the encoding changed", goldens[i].file);
        /* the committed bytes decode and re-encode byte for byte */
        struct cairn_msg *d = NULL;
        rc = cairn_msg_decode_container(file, flen, &d);
        if (rc != CAIRN_OK)
            fail_msg("%s: %s", goldens[i].file, cairn_err_msg());
        uint8_t *again = NULL;
        size_t alen = 0;
        assert_int_equal(cairn_msg_encode_container(d, &again, &alen), CAIRN_OK);
        assert_int_equal(alen, flen);
        assert_memory_equal(again, file, flen);
        assert_int_equal(cairn_msg_type(d), cairn_msg_type(m));
        assert_int_equal(cairn_msg_frame_count(d), cairn_msg_frame_count(m));
        cairn_free(again);
        cairn_msg_destroy(&d);
        free(file);
        cairn_free(built);
        cairn_msg_destroy(&m);
    }
}

/* Spot checks of decoded golden content (what a reader of PROTOCOL.md expects). */
static struct cairn_msg *load_golden(const char *name)
{
    size_t n = 0;
    uint8_t *file = tu_read_file(tu_path("%s/golden/%s", CAIRN_PROTO_SRC_DIR, name), &n);
    assert_non_null(file);
    struct cairn_msg *m = NULL;
    assert_int_equal(cairn_msg_decode_container(file, n, &m), CAIRN_OK);
    free(file);
    return m;
}

static void test_golden_content(void **state)
{
    (void)state;
    struct cairn_msg *m = load_golden("chunk.get.rep.bin");
    assert_true(cairn_msg_is_reply(m));
    assert_int_equal(cairn_msg_frame_count(m), 3);
    const uint8_t *p;
    size_t len;
    assert_int_equal(cairn_msg_frame(m, 0, &p, &len), CAIRN_OK);
    assert_int_equal(len, 300);
    assert_int_equal(cairn_msg_frame(m, 1, &p, &len), CAIRN_OK);
    assert_int_equal(len, 0);
    assert_int_equal(cairn_msg_frame(m, 3, &p, &len), CAIRN_EINVAL);
    cairn_msg_destroy(&m);

    m = load_golden("sandbox.snapshot.err.bin");
    assert_int_equal(cairn_msg_code(m), CAIRN_EBUSY);
    assert_string_equal(cairn_msg_text(m), "sandbox 'sb-0f3c' has a running exec");
    cairn_msg_destroy(&m);

    m = load_golden("sandbox.ls.rep.bin");
    const struct cairn_mval *a;
    size_t n;
    assert_int_equal(cairn_msg_get_array(m, "sandboxes", &a, &n), CAIRN_OK);
    assert_int_equal(n, 1);
    const struct cairn_mval *mounts = cairn_mval_get(cairn_mval_at(a, 0), "mounts");
    assert_int_equal(cairn_mval_len(mounts), 2);
    const char *s;
    assert_int_equal(cairn_mval_str(cairn_mval_get(cairn_mval_at(mounts, 1), "path"), &s, NULL), CAIRN_OK);
    assert_string_equal(s, "/scratch");
    assert_null(cairn_mval_get(cairn_mval_at(mounts, 1), "image"));
    cairn_msg_destroy(&m);
}

/* The generated reference section of PROTOCOL.md matches the model. */
static void test_protocol_md_is_current(void **state)
{
    (void)state;
    static const char begin[] = "<!-- BEGIN GENERATED REFERENCE: CAIRN_GOLDEN_REGEN=1 build/tests/test_proto -->\n";
    static const char end[] = "<!-- END GENERATED REFERENCE -->";
    char *ref = NULL;
    size_t rlen = 0;
    assert_int_equal(cairn_proto_reference_md(&ref, &rlen), CAIRN_OK);
    assert_int_equal(strlen(ref), rlen);
    const char *path = CAIRN_PROTO_SRC_DIR "/PROTOCOL.md";
    size_t dlen = 0;
    char *doc = (char *)tu_read_file(path, &dlen);
    assert_non_null(doc);
    doc = realloc(doc, dlen + 1);
    doc[dlen] = '\0';
    char *b = strstr(doc, begin);
    char *e = b ? strstr(b, end) : NULL;
    if (!b || !e)
        fail_msg("PROTOCOL.md lacks the generated-reference markers");
    b += strlen(begin);
    if (regen()) {
        struct cairn_buf out;
        cairn_buf_init(&out, 16u << 20);
        assert_int_equal(cairn_buf_append(&out, doc, (size_t)(b - doc)), CAIRN_OK);
        assert_int_equal(cairn_buf_append(&out, ref, rlen), CAIRN_OK);
        assert_int_equal(cairn_buf_append(&out, e, dlen - (size_t)(e - doc)), CAIRN_OK);
        assert_int_equal(cairn_file_replace_atomic(path, out.data, out.len, 0644), CAIRN_OK);
        cairn_buf_release(&out);
    } else if ((size_t)(e - b) != rlen || memcmp(b, ref, rlen) != 0) {
        fail_msg("PROTOCOL.md's message reference is stale: run CAIRN_GOLDEN_REGEN=1 test_proto");
    }
    /* every message is documented with its number */
    size_t n = 0;
    const struct cairn_proto_msginfo *msgs = cairn_proto_messages(&n);
    for (size_t i = 0; i < n; i++) {
        char h[96];
        snprintf(h, sizeof(h), "### %u `%s`", (unsigned)msgs[i].type, msgs[i].name);
        assert_non_null(strstr(ref, h));
    }
    free(doc);
    cairn_free(ref);
}

/* ---- malformed input --------------------------------------------------------------------------- */

static void test_truncated_at_every_byte(void **state)
{
    (void)state;
    for (size_t g = 0; g < CAIRN_ARRAY_LEN(goldens); g++) {
        struct cairn_msg *m = goldens[g].build();
        size_t len = 0;
        uint8_t *env = encode_ok(m, &len);
        for (size_t cut = 0; cut < len; cut++) {
            int rc = decode_bytes(env, cut);
            assert_int_equal(rc, CAIRN_EPROTO);
        }
        /* the container, cut anywhere */
        uint8_t *c = NULL;
        size_t clen = 0;
        assert_int_equal(cairn_msg_encode_container(m, &c, &clen), CAIRN_OK);
        for (size_t cut = 0; cut < clen; cut++) {
            struct cairn_msg *d = NULL;
            assert_int_not_equal(cairn_msg_decode_container(c, cut, &d), CAIRN_OK);
            assert_null(d);
        }
        cairn_free(c);
        cairn_free(env);
        cairn_msg_destroy(&m);
    }
}

static void test_oversized_counts(void **state)
{
    (void)state;
    /* containers that claim more elements than bytes: refused before any allocation */
    static const uint8_t arr32[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00};
    static const uint8_t map32[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00};
    static const uint8_t arr16[] = {0xdc, 0xff, 0xff, 0x00};
    static const uint8_t str32[] = {0xdb, 0xff, 0xff, 0xff, 0xff, 'a'};
    static const uint8_t bin32[] = {0xc6, 0x7f, 0xff, 0xff, 0xff, 'a'};
    static const uint8_t fixmap_short[] = {0x8f, 0xa1, 'v'};
    assert_int_equal(decode_bytes(arr32, sizeof(arr32)), CAIRN_EPROTO);
    assert_int_equal(decode_bytes(map32, sizeof(map32)), CAIRN_EPROTO);
    assert_int_equal(decode_bytes(arr16, sizeof(arr16)), CAIRN_EPROTO);
    assert_int_equal(decode_bytes(str32, sizeof(str32)), CAIRN_EPROTO);
    assert_int_equal(decode_bytes(bin32, sizeof(bin32)), CAIRN_EPROTO);
    assert_int_equal(decode_bytes(fixmap_short, sizeof(fixmap_short)), CAIRN_EPROTO);

    /* the same inside a valid envelope: {"v":1,"t":1,"rid":7,"f":{"x":[<huge>]}} */
    struct mp w = {.n = 0};
    mp_head(&w, 1, CAIRN_MSG_PING, 1);
    mp_str(&w, "f");
    mp_map(&w, 1);
    mp_str(&w, "x");
    mp_raw(&w, arr32, 5);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_EPROTO);

    /* many values, each legal: over CAIRN_PROTO_MAX_NODES */
    size_t n = CAIRN_PROTO_MAX_NODES + 10;
    uint8_t *big = calloc(1, n + 64);
    w.n = 0;
    mp_head(&w, 1, CAIRN_MSG_PING, 1);
    mp_str(&w, "f");
    mp_map(&w, 1);
    mp_str(&w, "x");
    memcpy(big, w.b, w.n);
    size_t off = w.n;
    big[off++] = 0xdd;
    big[off++] = (uint8_t)(n >> 24);
    big[off++] = (uint8_t)(n >> 16);
    big[off++] = (uint8_t)(n >> 8);
    big[off++] = (uint8_t)n;
    memset(big + off, 0xc0, n); /* nil */
    assert_int_equal(decode_bytes(big, off + n), CAIRN_ETOOBIG);
    free(big);

    /* an envelope over 16 MiB */
    size_t hl = (size_t)CAIRN_PROTO_MAX_ENVELOPE + 1;
    uint8_t *huge = calloc(1, hl);
    assert_int_equal(decode_bytes(huge, hl), CAIRN_ETOOBIG);
    free(huge);

    /* a field value over its limit in a well-formed envelope (cluster.status workers <= 4096) */
    struct cairn_msg *m = rep(CAIRN_MSG_CLUSTER_STATUS, 1, 0, NULL);
    cairn_msg_set_u64(m, "epoch", 1);
    cairn_msg_set_u64(m, "replicas", 2);
    struct cairn_mval *ws = cairn_msg_set_array(m, "workers");
    for (int i = 0; i < 4097; i++)
        cairn_mval_push_map(m, ws);
    expect_verdict(m, CAIRN_ETOOBIG, "'workers'");
    cairn_msg_destroy(&m);
}

static void test_wrong_envelopes(void **state)
{
    (void)state;
    struct mp w;
    /* not a map */
    static const uint8_t arr[] = {0x93, 0x01, 0x01, 0x07};
    static const uint8_t num[] = {0x2a};
    static const uint8_t str[] = {0xa3, 'a', 'b', 'c'};
    assert_int_equal(decode_bytes(arr, sizeof(arr)), CAIRN_EPROTO);
    assert_int_equal(decode_bytes(num, sizeof(num)), CAIRN_EPROTO);
    assert_int_equal(decode_bytes(str, sizeof(str)), CAIRN_EPROTO);
    assert_int_equal(decode_bytes(NULL, 0), CAIRN_EPROTO);

    /* minimal valid ping */
    w.n = 0;
    mp_head(&w, 1, CAIRN_MSG_PING, 0);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_OK);
    /* unknown version, even a lower one */
    w.n = 0;
    mp_head(&w, 2, CAIRN_MSG_PING, 0);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_EVERSION);
    w.n = 0;
    mp_head(&w, 0, CAIRN_MSG_PING, 0);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_EVERSION);
    /* version missing or not a uint */
    w.n = 0;
    mp_map(&w, 2);
    mp_str(&w, "t");
    mp_uint(&w, 1);
    mp_str(&w, "rid");
    mp_uint(&w, 1);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_EPROTO);
    w.n = 0;
    mp_map(&w, 3);
    mp_str(&w, "v");
    mp_str(&w, "1");
    mp_str(&w, "t");
    mp_uint(&w, 1);
    mp_str(&w, "rid");
    mp_uint(&w, 1);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_EPROTO);
    /* unknown type; and type 0 */
    w.n = 0;
    mp_head(&w, 1, 999, 0);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_EPROTO);
    assert_non_null(strstr(cairn_err_msg(), "999"));
    w.n = 0;
    mp_head(&w, 1, 0, 0);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_EPROTO);
    /* ...but an error reply to an unknown type decodes (answering a newer peer) */
    w.n = 0;
    mp_head(&w, 1, 999, 1);
    mp_str(&w, "code");
    mp_uint(&w, CAIRN_EPROTO);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_OK);
    /* rid missing */
    w.n = 0;
    mp_map(&w, 2);
    mp_str(&w, "v");
    mp_uint(&w, 1);
    mp_str(&w, "t");
    mp_uint(&w, 1);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_EPROTO);
    /* duplicate envelope key */
    w.n = 0;
    mp_head(&w, 1, CAIRN_MSG_PING, 1);
    mp_str(&w, "rid");
    mp_uint(&w, 8);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_EPROTO);
    /* duplicate field key */
    w.n = 0;
    mp_head(&w, 1, CAIRN_MSG_PING, 1);
    mp_str(&w, "f");
    mp_map(&w, 2);
    mp_str(&w, "echo");
    mp_byte(&w, 0xc4);
    mp_byte(&w, 0);
    mp_str(&w, "echo");
    mp_byte(&w, 0xc4);
    mp_byte(&w, 0);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_EPROTO);
    assert_non_null(strstr(cairn_err_msg(), "duplicate"));
    /* "f" not a map; non-string map key */
    w.n = 0;
    mp_head(&w, 1, CAIRN_MSG_PING, 1);
    mp_str(&w, "f");
    mp_arr(&w, 0);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_EPROTO);
    w.n = 0;
    mp_head(&w, 1, CAIRN_MSG_PING, 1);
    mp_str(&w, "f");
    mp_map(&w, 1);
    mp_uint(&w, 5);
    mp_uint(&w, 5);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_EPROTO);
    /* app: not a string, too long, NUL inside */
    w.n = 0;
    mp_head(&w, 1, CAIRN_MSG_PING, 1);
    mp_str(&w, "app");
    mp_uint(&w, 5);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_EPROTO);
    w.n = 0;
    mp_head(&w, 1, CAIRN_MSG_PING, 1);
    mp_str(&w, "app");
    mp_byte(&w, 0xd9);
    mp_byte(&w, 65);
    for (int i = 0; i < 65; i++)
        mp_byte(&w, 'a');
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_ETOOBIG);
    w.n = 0;
    mp_head(&w, 1, CAIRN_MSG_PING, 1);
    mp_str(&w, "app");
    mp_strn(&w, "a\0b", 3);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_EPROTO);
    /* tok: not bin; too long */
    w.n = 0;
    mp_head(&w, 1, CAIRN_MSG_PING, 1);
    mp_str(&w, "tok");
    mp_str(&w, "secret");
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_EPROTO);
    w.n = 0;
    mp_head(&w, 1, CAIRN_MSG_PING, 1);
    mp_str(&w, "tok");
    mp_byte(&w, 0xc4);
    mp_byte(&w, 65);
    for (int i = 0; i < 65; i++)
        mp_byte(&w, 1);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_ETOOBIG);
    /* code: negative / over 32 bits */
    w.n = 0;
    mp_head(&w, 1, CAIRN_MSG_PING, 1);
    mp_str(&w, "code");
    mp_byte(&w, 0xff); /* -1 */
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_EPROTO);
    w.n = 0;
    mp_head(&w, 1, CAIRN_MSG_PING, 1);
    mp_str(&w, "code");
    mp_uint(&w, 1ull << 33);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_EPROTO);
    /* unknown envelope keys and unknown fields are ignored (forward compatibility) */
    w.n = 0;
    mp_head(&w, 1, CAIRN_MSG_PING, 2);
    mp_str(&w, "future");
    mp_arr(&w, 2);
    mp_uint(&w, 1);
    mp_byte(&w, 0xcb); /* float64 */
    mp_raw(&w, "\x3f\xf0\0\0\0\0\0\0", 8);
    mp_str(&w, "f");
    mp_map(&w, 1);
    mp_str(&w, "later");
    mp_map(&w, 1);
    mp_str(&w, "x");
    mp_byte(&w, 0xc0);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_OK);
    /* a NUL in a map key, even deep inside fields nobody validates (an error reply) */
    w.n = 0;
    mp_head(&w, 1, CAIRN_MSG_PING, 2);
    mp_str(&w, "code");
    mp_uint(&w, CAIRN_EIO);
    mp_str(&w, "f");
    mp_map(&w, 1);
    mp_str(&w, "x");
    mp_map(&w, 1);
    mp_strn(&w, "a\0b", 3);
    mp_uint(&w, 1);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_EPROTO);
    assert_non_null(strstr(cairn_err_msg(), "NUL"));
    /* ext types, the reserved byte, bytes after the value */
    w.n = 0;
    mp_head(&w, 1, CAIRN_MSG_PING, 1);
    mp_str(&w, "x");
    mp_raw(&w, "\xd4\x01\x02", 3);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_EPROTO);
    w.n = 0;
    mp_head(&w, 1, CAIRN_MSG_PING, 1);
    mp_str(&w, "x");
    mp_byte(&w, 0xc1);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_EPROTO);
    w.n = 0;
    mp_head(&w, 1, CAIRN_MSG_PING, 0);
    mp_byte(&w, 0xc0);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_EPROTO);
    /* a client request without app/token */
    w.n = 0;
    mp_head(&w, 1, CAIRN_MSG_CLUSTER_STATUS, 0);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_EPROTO);
    assert_non_null(strstr(cairn_err_msg(), "'app'"));
    /* a reply to a one-way message */
    w.n = 0;
    mp_head(&w, 1, CAIRN_MSG_JOB_PROGRESS, 1);
    mp_str(&w, "code");
    mp_uint(&w, 0);
    assert_int_equal(decode_bytes(w.b, w.n), CAIRN_EPROTO);
}

static void test_deep_nesting(void **state)
{
    (void)state;
    /* {"v":1,"t":1,"rid":7,"f":{"x": [[[[...1...]]]]}} with depth d */
    for (unsigned depth = 1; depth <= 40; depth++) {
        struct mp w = {.n = 0};
        mp_head(&w, 1, CAIRN_MSG_PING, 1);
        mp_str(&w, "f");
        mp_map(&w, 1);
        mp_str(&w, "x");
        for (unsigned i = 0; i < depth; i++)
            mp_arr(&w, 1);
        mp_uint(&w, 1);
        int rc = decode_bytes(w.b, w.n);
        /* envelope (1) + f (2) + depth arrays */
        if (2 + depth <= CAIRN_PROTO_MAX_DEPTH)
            assert_int_equal(rc, CAIRN_OK); /* an unknown field: ignored */
        else
            assert_int_equal(rc, CAIRN_ETOOBIG);
    }
    /* inside a free-form map field the limit is CAIRN_PROTO_MAP_DEPTH */
    struct cairn_msg *m = req(CAIRN_MSG_JOB_SUBMIT, 1, true);
    cairn_msg_set_str(m, "kind", "k");
    cairn_msg_set_str(m, "req_id", "r");
    struct cairn_mval *v = cairn_msg_set_map(m, "params");
    for (unsigned i = 0; i < CAIRN_PROTO_MAP_DEPTH; i++)
        v = cairn_mval_put_map(m, v, "d");
    expect_verdict(m, CAIRN_OK, NULL);
    cairn_mval_put_map(m, v, "d");
    expect_verdict(m, CAIRN_ETOOBIG, "'params.d.d.d.d.d'");
    cairn_msg_destroy(&m);
}

static void test_frames_and_container(void **state)
{
    (void)state;
    /* frame count vs the field that announces it */
    struct cairn_msg *m = g_chunk_get_rep();
    cairn_msg_add_frame(m, "x", 1);
    expect_verdict(m, CAIRN_EPROTO, "'count'");
    cairn_msg_destroy(&m);
    /* raw frames on a message that takes none */
    m = g_ping_req();
    cairn_msg_add_frame(m, "x", 1);
    expect_verdict(m, CAIRN_ETOOBIG, "raw frames");
    cairn_msg_destroy(&m);
    /* decode: too many raw frames, a raw frame too large */
    m = g_ping_req();
    size_t len = 0;
    uint8_t *env = encode_ok(m, &len);
    size_t n = CAIRN_PROTO_MAX_FRAMES + 2;
    const uint8_t **fr = calloc(n, sizeof(*fr));
    size_t *lens = calloc(n, sizeof(*lens));
    fr[0] = env;
    lens[0] = len;
    for (size_t i = 1; i < n; i++)
        fr[i] = env;
    struct cairn_msg *d = NULL;
    assert_int_equal(cairn_msg_decode(fr, lens, n, &d), CAIRN_ETOOBIG);
    lens[1] = (size_t)CAIRN_PROTO_MAX_FRAME + 1;
    uint8_t *huge = calloc(1, lens[1]);
    fr[1] = huge;
    assert_int_equal(cairn_msg_decode(fr, lens, 2, &d), CAIRN_ETOOBIG);
    assert_null(d);
    assert_int_equal(cairn_msg_decode(fr, lens, 0, &d), CAIRN_EPROTO);
    free(huge);
    free(fr);
    free(lens);
    cairn_free(env);
    cairn_msg_destroy(&m);

    /* container framing */
    static const uint8_t bad_magic[] = {'X', 'R', 'N', 'M', 1, 0, 0, 0, 0, 0, 0, 0};
    static const uint8_t zero[] = {'C', 'R', 'N', 'M', 0, 0, 0, 0};
    static const uint8_t many[] = {'C', 'R', 'N', 'M', 0xff, 0xff, 0xff, 0xff};
    static const uint8_t longf[] = {'C', 'R', 'N', 'M', 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x80};
    assert_int_equal(cairn_msg_decode_container(bad_magic, sizeof(bad_magic), &d), CAIRN_EPROTO);
    assert_int_equal(cairn_msg_decode_container(zero, sizeof(zero), &d), CAIRN_EPROTO);
    assert_int_equal(cairn_msg_decode_container(many, sizeof(many), &d), CAIRN_ETOOBIG);
    assert_int_equal(cairn_msg_decode_container(longf, sizeof(longf), &d), CAIRN_EPROTO);
    m = g_ping_req();
    uint8_t *c = NULL;
    size_t clen = 0;
    assert_int_equal(cairn_msg_encode_container(m, &c, &clen), CAIRN_OK);
    c = cairn_realloc(c, clen + 1);
    c[clen] = 0;
    assert_int_equal(cairn_msg_decode_container(c, clen + 1, &d), CAIRN_EPROTO); /* trailing byte */
    cairn_free(c);
    cairn_msg_destroy(&m);
}

static void count_release(void *ctx) { (*(int *)ctx)++; }

/* Decode errors still yield type and rid for an error reply (what the transport relies on). */
static void test_decode_shell(void **state)
{
    (void)state;
    struct mp w = {.n = 0};
    mp_head(&w, 2, CAIRN_MSG_SANDBOX_LS, 0);
    struct cairn_msg *out = NULL, *shell = NULL;
    assert_int_equal(cairn__msg_decode_frames(w.b, w.n, NULL, 0, &out, &shell), CAIRN_EVERSION);
    assert_null(out);
    assert_non_null(shell);
    assert_int_equal(cairn_msg_type(shell), CAIRN_MSG_SANDBOX_LS);
    assert_int_equal(cairn_msg_rid(shell), 7);
    struct cairn_msg *r = cairn_msg_reply(shell, CAIRN_EVERSION, "protocol version 2 is not supported");
    size_t len = 0;
    uint8_t *env = encode_ok(r, &len);
    cairn_free(env);
    cairn_msg_destroy(&r);
    cairn_msg_destroy(&shell);

    /* unknown type: the error reply keeps the number */
    w.n = 0;
    mp_head(&w, 1, 777, 0);
    assert_int_equal(cairn__msg_decode_frames(w.b, w.n, NULL, 0, &out, &shell), CAIRN_EPROTO);
    assert_int_equal((unsigned)cairn_msg_type(shell), 777);
    r = cairn_msg_reply(shell, CAIRN_EPROTO, "unknown message type 777");
    env = encode_ok(r, &len);
    assert_int_equal(decode_bytes(env, len), CAIRN_OK);
    cairn_free(env);
    cairn_msg_destroy(&r);
    cairn_msg_destroy(&shell);

    /* a frame handed over with a release function is released exactly once, also on failure */
    int released = 0;
    struct cairn__frame raw = {.p = (const uint8_t *)"x", .len = 1, .release = count_release, .ctx = &released};
    assert_int_equal(cairn__msg_decode_frames(w.b, w.n, &raw, 1, &out, NULL), CAIRN_EPROTO);
    assert_int_equal(released, 1);
    w.n = 0;
    mp_head(&w, 1, CAIRN_MSG_IMAGE_IMPORT, 0);
    released = 0;
    assert_int_equal(cairn__msg_decode_frames(w.b, w.n, &raw, 1, &out, &shell), CAIRN_EPROTO); /* no fields */
    assert_int_equal(released, 1);
    assert_int_equal(cairn_msg_frame_count(shell), 0);
    cairn_msg_destroy(&shell);
}

static void test_random_and_mutated_frames(void **state)
{
    (void)state;
    uint64_t rng = 0xC0FFEE;
    uint8_t buf[512];
    int ok = 0;
    for (int i = 0; i < 10000; i++) {
        size_t n = (size_t)(tu_rand(&rng) % sizeof(buf));
        tu_fill_random(&rng, buf, n);
        if (i % 4 == 0 && n > 0)
            buf[0] = (uint8_t)(0x80 | (buf[0] & 0x0f)); /* often start with a map */
        int rc = decode_bytes(buf, n);
        assert_true(rc == CAIRN_OK || rc == CAIRN_EPROTO || rc == CAIRN_ETOOBIG || rc == CAIRN_EVERSION);
        ok += rc == CAIRN_OK;
        struct cairn_msg *d = NULL;
        rc = cairn_msg_decode_container(buf, n, &d);
        assert_true(rc != CAIRN_ENOMEM && rc != CAIRN_EINTERNAL);
        cairn_msg_destroy(&d);
    }
    (void)ok;
    /* mutate golden envelopes: flip, insert and delete bytes */
    for (int i = 0; i < 10000; i++) {
        const struct golden *g = &goldens[tu_rand(&rng) % CAIRN_ARRAY_LEN(goldens)];
        struct cairn_msg *m = g->build();
        size_t len = 0;
        uint8_t *env = encode_ok(m, &len);
        uint8_t *mut = malloc(len + 8);
        memcpy(mut, env, len);
        size_t mlen = len;
        int edits = 1 + (int)(tu_rand(&rng) % 4);
        for (int e = 0; e < edits && mlen > 0; e++) {
            size_t at = (size_t)(tu_rand(&rng) % mlen);
            switch (tu_rand(&rng) % 3) {
            case 0: mut[at] ^= (uint8_t)(1u << (tu_rand(&rng) % 8)); break;
            case 1: mut[at] = (uint8_t)tu_rand(&rng); break;
            default: memmove(mut + at, mut + at + 1, mlen - at - 1); mlen--; break;
            }
        }
        int rc = decode_bytes(mut, mlen);
        assert_true(rc == CAIRN_OK || rc == CAIRN_EPROTO || rc == CAIRN_ETOOBIG || rc == CAIRN_EVERSION);
        free(mut);
        cairn_free(env);
        cairn_msg_destroy(&m);
    }
}

/* Secret fields are wiped when replaced (and on destroy: not observable without UB). */
static void test_secret_replaced_is_wiped(void **state)
{
    (void)state;
    struct cairn_msg *m = g_sandbox_mount_req();
    const uint8_t *k1;
    size_t l1;
    assert_int_equal(cairn_msg_get_bin(m, "key", &k1, &l1), CAIRN_OK);
    uint8_t zeros[32] = {0};
    cairn_msg_set_bin(m, "key", "another-key-0123456789", 22);
    assert_memory_equal(k1, zeros, l1); /* old bytes live in the message's arena until destroy */
    cairn_msg_unset(m, "key");
    assert_null(cairn_msg_get(m, "key"));
    cairn_msg_destroy(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model),
        cmocka_unit_test(test_every_message_roundtrips),
        cmocka_unit_test(test_every_field_is_checked),
        cmocka_unit_test(test_builder_and_accessors),
        cmocka_unit_test(test_builder_errors_are_sticky),
        cmocka_unit_test(test_golden_frames),
        cmocka_unit_test(test_golden_content),
        cmocka_unit_test(test_protocol_md_is_current),
        cmocka_unit_test(test_truncated_at_every_byte),
        cmocka_unit_test(test_oversized_counts),
        cmocka_unit_test(test_wrong_envelopes),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_frames_and_container),
        cmocka_unit_test(test_decode_shell),
        cmocka_unit_test(test_random_and_mutated_frames),
        cmocka_unit_test(test_secret_replaced_is_wiped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
