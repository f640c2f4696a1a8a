/*
 * fuzz_frame.c: libFuzzer target for the wire message decoder (proto/proto.c).
 *
 * Input: a message container ("CRNM", u32le count, (u32le len, bytes)*; the
 * golden frames in proto/golden/ are the seeds in tests/fuzz/corpus/frame/),
 * or, when it does not start with the container magic, one envelope frame.
 * Properties:
 *   - decoding never crashes, leaks or reads out of bounds (ASan/UBSan);
 *   - a decode error is one of EPROTO, ETOOBIG, EVERSION (or ENOMEM);
 *   - what decodes re-encodes, and the re-encoding is a fixed point:
 *     encode(decode(encode(decode(x)))) == encode(decode(x));
 *   - every value of a decoded message can be read through the accessors.
 *
 * Build (clang): proto/proto.c and common/ sources, -I common/include -I proto/include,
 * -fsanitize=fuzzer,address,undefined, linked with -lmsgpackc (no ZeroMQ needed).
 */
#include "cairn/prelude.h"

#include "cairn/alloc.h"
#include "cairn/err.h"
#include "cairn/proto.h"

#include <stdlib.h>

static void walk(const struct cairn_mval *v, unsigned depth)
{
    if (!v || depth > 64)
        abort();
    uint64_t u;
    int64_t i;
    bool b;
    double d;
    const char *s;
    const uint8_t *p;
    size_t n;
    switch (cairn_mval_kind(v)) {
    case CAIRN_MV_NIL: break;
    case CAIRN_MV_BOOL: if (cairn_mval_bool(v, &b)) abort(); break;
    case CAIRN_MV_UINT: if (cairn_mval_u64(v, &u)) abort(); break;
    case CAIRN_MV_INT: if (cairn_mval_i64(v, &i) || i >= 0) abort(); break;
    case CAIRN_MV_F32: case CAIRN_MV_F64: if (cairn_mval_f64(v, &d)) abort(); break;
    case CAIRN_MV_STR:
        if (cairn_mval_str(v, &s, &n) || s[n] != '\0')
            abort();
        break;
    case CAIRN_MV_BIN: if (cairn_mval_bin(v, &p, &n)) abort(); break;
    case CAIRN_MV_ARRAY:
        for (size_t k = 0; k < cairn_mval_len(v); k++)
            walk(cairn_mval_at(v, k), depth + 1);
        break;
    case CAIRN_MV_MAP:
        for (size_t k = 0; k < cairn_mval_len(v); k++) {
            const char *key;
            const struct cairn_mval *val;
            if (cairn_mval_entry(v, k, &key, &val))
                abort();
            if (cairn_mval_get(v, key) == NULL)
                abort();
            walk(val, depth + 1);
        }
        break;
    default: abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cairn_msg *m = NULL, *again = NULL;
    uint8_t *enc = NULL, *enc2 = NULL;
    size_t elen = 0, elen2 = 0;
    int rc;
    if (size >= 4 && memcmp(data, "CRNM", 4) == 0) {
        rc = cairn_msg_decode_container(data, size, &m);
    } else {
        const uint8_t *frames[1] = {data};
        size_t lens[1] = {size};
        rc = cairn_msg_decode(frames, lens, 1, &m);
    }
    if (rc != CAIRN_OK) {
        if (m || (rc != CAIRN_EPROTO && rc != CAIRN_ETOOBIG && rc != CAIRN_EVERSION && rc != CAIRN_ENOMEM))
            abort();
        return 0;
    }
    walk(cairn_msg_fields(m), 0);
    for (size_t k = 0; k < cairn_msg_frame_count(m); k++) {
        const uint8_t *p;
        size_t n;
        if (cairn_msg_frame(m, k, &p, &n))
            abort();
    }
    if (cairn_msg_encode_container(m, &enc, &elen) != CAIRN_OK)
        abort();
    if (cairn_msg_decode_container(enc, elen, &again) != CAIRN_OK)
        abort();
    if (cairn_msg_encode_container(again, &enc2, &elen2) != CAIRN_OK)
        abort();
    if (elen != elen2 || memcmp(enc, enc2, elen) != 0)
        abort();
    if (cairn_msg_type(again) != cairn_msg_type(m) || cairn_msg_rid(again) != cairn_msg_rid(m) ||
        cairn_msg_code(again) != cairn_msg_code(m) || cairn_msg_frame_count(again) != cairn_msg_frame_count(m))
        abort();
    cairn_free(enc);
    cairn_free(enc2);
    cairn_msg_destroy(&again);
    cairn_msg_destroy(&m);
    return 0;
}
