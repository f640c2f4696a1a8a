/*
 * coord_value.c: see coord_value.h.
 *
 * Packing walks the decoded value with the cairn_mval getters and writes it
 * with cairn/mp.h; mp.h has no floats, so float 64 is written by hand (tag
 * 0xcb, big-endian IEEE 754), which every msgpack reader accepts.
 *
 * Unpacking builds the envelope {"v":1,"t":job.result,"rid":0,"f":{"job":
 * "jb-0000000000000000","err_code":0,"result":<stored bytes>}} and lets
 * cairn_msg_decode parse and validate it: proto/ is the only place that knows
 * the MAP limits (entries, depth, string sizes), so we reuse it instead of a
 * second, drifting copy of those rules.
 */
#include "coord_value.h"

#include "cairn/alloc.h"
#include "cairn/err.h"
#include "cairn/mp.h"

#include <stdio.h>

#define PACK_MAX_DEPTH 16

static void pack_f64(struct cairn_mp_writer *w, double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    uint8_t b[9];
    b[0] = 0xcb;
    for (int i = 0; i < 8; i++)
        b[1 + i] = (uint8_t)(u >> (56 - 8 * i));
    if (!w->err)
        w->err = cairn_buf_append(w->buf, b, sizeof(b));
}

static int pack(struct cairn_mp_writer *w, const struct cairn_mval *v, unsigned depth)
{
    if (depth > PACK_MAX_DEPTH)
        return cairn_err_set(CAIRN_ETOOBIG, "value nested more than %d deep", PACK_MAX_DEPTH);
    switch (cairn_mval_kind(v)) {
    case CAIRN_MV_NIL: cairn_mp_write_nil(w); break;
    case CAIRN_MV_BOOL: {
        bool b = false;
        cairn_mval_bool(v, &b);
        cairn_mp_write_bool(w, b);
        break;
    }
    case CAIRN_MV_UINT: {
        uint64_t u = 0;
        cairn_mval_u64(v, &u);
        cairn_mp_write_uint(w, u);
        break;
    }
    case CAIRN_MV_INT: {
        int64_t i = 0;
        cairn_mval_i64(v, &i);
        cairn_mp_write_int(w, i);
        break;
    }
    case CAIRN_MV_F32:
    case CAIRN_MV_F64: {
        double d = 0;
        cairn_mval_f64(v, &d);
        pack_f64(w, d);
        break;
    }
    case CAIRN_MV_STR: {
        const char *s = "";
        size_t len = 0;
        cairn_mval_str(v, &s, &len);
        cairn_mp_write_str(w, s, len);
        break;
    }
    case CAIRN_MV_BIN: {
        const uint8_t *p = NULL;
        size_t len = 0;
        cairn_mval_bin(v, &p, &len);
        cairn_mp_write_bin(w, p, len);
        break;
    }
    case CAIRN_MV_ARRAY: {
        size_t n = cairn_mval_len(v);
        cairn_mp_write_array(w, (uint32_t)n);
        for (size_t i = 0; i < n; i++)
            CAIRN_FORWARD_IF_ERROR(pack(w, cairn_mval_at(v, i), depth + 1));
        break;
    }
    case CAIRN_MV_MAP: {
        size_t n = cairn_mval_len(v);
        cairn_mp_write_map(w, (uint32_t)n);
        for (size_t i = 0; i < n; i++) {
            const char *k = NULL;
            const struct cairn_mval *val = NULL;
            if (cairn_mval_entry(v, i, &k, &val) != CAIRN_OK)
                return cairn_err_set(CAIRN_EINTERNAL, "map entry %zu unreadable", i);
            cairn_mp_write_str(w, k, strlen(k));
            CAIRN_FORWARD_IF_ERROR(pack(w, val, depth + 1));
        }
        break;
    }
    default:
        return cairn_err_set(CAIRN_EINTERNAL, "value of unknown kind");
    }
    if (w->err)
        return cairn_err_set(w->err, "encode a value: %s", cairn_strerror(w->err));
    return CAIRN_OK;
}

int coord_value_pack(const struct cairn_mval *v, struct cairn_buf *out)
{
    struct cairn_mp_writer w;
    cairn_mp_writer_init(&w, out);
    return pack(&w, v, 0);
}

int coord_value_unpack(const uint8_t *p, size_t len, const char *what, struct cairn_msg **holder,
                       const struct cairn_mval **v)
{
    *holder = NULL;
    *v = NULL;
    struct cairn_buf b;
    cairn_buf_init(&b, CAIRN_PROTO_MAX_ENVELOPE);
    struct cairn_mp_writer w;
    cairn_mp_writer_init(&w, &b);
    cairn_mp_write_map(&w, 4);
    cairn_mp_write_str(&w, "v", 1);
    cairn_mp_write_uint(&w, CAIRN_PROTO_VERSION);
    cairn_mp_write_str(&w, "t", 1);
    cairn_mp_write_uint(&w, CAIRN_MSG_JOB_RESULT);
    cairn_mp_write_str(&w, "rid", 3);
    cairn_mp_write_uint(&w, 0);
    cairn_mp_write_str(&w, "f", 1);
    cairn_mp_write_map(&w, 3);
    cairn_mp_write_str(&w, "job", 3);
    cairn_mp_write_str(&w, "jb-0000000000000000", 19);
    cairn_mp_write_str(&w, "err_code", 8);
    cairn_mp_write_uint(&w, 0);
    cairn_mp_write_str(&w, "result", 6);
    if (!w.err)
        w.err = cairn_buf_append(&b, p, len);
    int rc = w.err;
    if (rc != CAIRN_OK) {
        cairn_buf_release(&b);
        if (rc == CAIRN_ETOOBIG)
            return cairn_err_set(CAIRN_ECORRUPT, "%s: stored value of %zu bytes is too large", what, len);
        return cairn_err_set(rc, "%s: %s", what, cairn_strerror(rc));
    }
    const uint8_t *frames[1] = {b.data};
    size_t lens[1] = {b.len};
    struct cairn_msg *m = NULL;
    rc = cairn_msg_decode(frames, lens, 1, &m);
    cairn_buf_release(&b);
    if (rc == CAIRN_ENOMEM)
        return rc;
    if (rc != CAIRN_OK) {
        char why[256];
        snprintf(why, sizeof(why), "%s", cairn_err_msg());
        return cairn_err_set(CAIRN_ECORRUPT, "%s is corrupt: %s", what, why);
    }
    const struct cairn_mval *r = cairn_msg_get(m, "result");
    if (!r || cairn_mval_kind(r) != CAIRN_MV_MAP) {
        cairn_msg_destroy(&m);
        return cairn_err_set(CAIRN_ECORRUPT, "%s is corrupt: not a map", what);
    }
    *holder = m;
    *v = r;
    return CAIRN_OK;
}

int coord_value_set(struct cairn_msg *m, const char *field, const uint8_t *p, size_t len, const char *what)
{
    struct cairn_msg *holder = NULL;
    const struct cairn_mval *v = NULL;
    CAIRN_FORWARD_IF_ERROR(coord_value_unpack(p, len, what, &holder, &v));
    cairn_msg_set_value(m, field, v);
    cairn_msg_destroy(&holder);
    return cairn_msg_build_error(m);
}
