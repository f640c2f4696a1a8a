/*
 * client_json.c: the JSON writers of client_json.h.
 *
 * Why a file of its own: libcairn turns job results (msgpack maps) into JSON
 * text for its callers, and the CLI prints every --json object with the same
 * escaping, so the two can never disagree. Hand-written because the output
 * side of JSON is small and we want exact control over escaping of untrusted
 * bytes (no JSON library is a dependency of the project).
 *
 * UTF-8: well-formed sequences (RFC 3629: no overlongs, no surrogates, <=
 * U+10FFFF) are copied as they are; every other byte becomes \ufffd. Control
 * characters, '"' and '\\' are escaped; so are U+2028/U+2029, which some
 * JavaScript parsers reject inside strings.
 */
#include "client_json.h"

#include "cairn/err.h"
#include "cairn/proto.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>

int cairn__json_raw(struct cairn_buf *b, const char *s) { return cairn_buf_append(b, s, strlen(s)); }

/* Length of the well-formed UTF-8 sequence at p (1..4), or 0 when malformed. */
static size_t utf8_seq(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    if (c < 0x80)
        return 1;
    size_t len;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

int cairn__json_str(struct cairn_buf *b, const char *s, size_t len)
{
    const uint8_t *p = (const uint8_t *)s;
    CAIRN_FORWARD_IF_ERROR(cairn_buf_append_byte(b, '"'));
    size_t i = 0;
    while (i < len) {
        /* copy the longest run that needs no escaping in one append */
        size_t run = i;
        while (run < len && p[run] >= 0x20 && p[run] < 0x80 && p[run] != '"' && p[run] != '\\')
            run++;
        if (run > i) {
            CAIRN_FORWARD_IF_ERROR(cairn_buf_append(b, p + i, run - i));
            i = run;
            continue;
        }
        uint8_t c = p[i];
        char esc[8];
        const char *e = NULL;
        switch (c) {
        case '"': e = "\\\""; break;
        case '\\': e = "\\\\"; break;
        case '\n': e = "\\n"; break;
        case '\r': e = "\\r"; break;
        case '\t': e = "\\t"; break;
        case '\b': e = "\\b"; break;
        case '\f': e = "\\f"; break;
        default: break;
        }
        if (e) {
            CAIRN_FORWARD_IF_ERROR(cairn__json_raw(b, e));
            i++;
            continue;
        }
        if (c < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            CAIRN_FORWARD_IF_ERROR(cairn__json_raw(b, esc));
            i++;
            continue;
        }
        size_t n = utf8_seq(p + i, len - i);
        if (n == 0) {
            CAIRN_FORWARD_IF_ERROR(cairn__json_raw(b, "\\ufffd"));
            i++;
        } else if (n == 3 && c == 0xe2 && p[i + 1] == 0x80 && (p[i + 2] == 0xa8 || p[i + 2] == 0xa9)) {
            CAIRN_FORWARD_IF_ERROR(cairn__json_raw(b, p[i + 2] == 0xa8 ? "\\u2028" : "\\u2029"));
            i += 3;
        } else {
            CAIRN_FORWARD_IF_ERROR(cairn_buf_append(b, p + i, n));
            i += n;
        }
    }
    return cairn_buf_append_byte(b, '"');
}

int cairn__json_cstr(struct cairn_buf *b, const char *s)
{
    return s ? cairn__json_str(b, s, strlen(s)) : cairn__json_raw(b, "null");
}

int cairn__json_u64(struct cairn_buf *b, uint64_t v)
{
    char t[24];
    snprintf(t, sizeof(t), "%" PRIu64, v);
    return cairn__json_raw(b, t);
}

int cairn__json_i64(struct cairn_buf *b, int64_t v)
{
    char t[24];
    snprintf(t, sizeof(t), "%" PRId64, v);
    return cairn__json_raw(b, t);
}

int cairn__json_key(struct cairn_buf *b, const char *key, bool first)
{
    if (!first)
        CAIRN_FORWARD_IF_ERROR(cairn_buf_append_byte(b, ','));
    CAIRN_FORWARD_IF_ERROR(cairn__json_cstr(b, key));
    return cairn_buf_append_byte(b, ':');
}

int cairn__json_mval(struct cairn_buf *b, const struct cairn_mval *v)
{
    if (!v)
        return cairn__json_raw(b, "null");
    switch (cairn_mval_kind(v)) {
    case CAIRN_MV_NIL:
        return cairn__json_raw(b, "null");
    case CAIRN_MV_BOOL: {
        bool x = false;
        cairn_mval_bool(v, &x);
        return cairn__json_raw(b, x ? "true" : "false");
    }
    case CAIRN_MV_UINT: {
        uint64_t x = 0;
        cairn_mval_u64(v, &x);
        return cairn__json_u64(b, x);
    }
    case CAIRN_MV_INT: {
        int64_t x = 0;
        cairn_mval_i64(v, &x);
        return cairn__json_i64(b, x);
    }
    case CAIRN_MV_F32:
    case CAIRN_MV_F64: {
        double x = 0;
        cairn_mval_f64(v, &x);
        if (!isfinite(x))
            return cairn__json_raw(b, "null");
        char t[40];
        snprintf(t, sizeof(t), "%.17g", x);
        return cairn__json_raw(b, t);
    }
    case CAIRN_MV_STR: {
        const char *s = NULL;
        size_t n = 0;
        cairn_mval_str(v, &s, &n);
        return cairn__json_str(b, s, n);
    }
    case CAIRN_MV_BIN: {
        const uint8_t *p = NULL;
        size_t n = 0;
        cairn_mval_bin(v, &p, &n);
        CAIRN_FORWARD_IF_ERROR(cairn_buf_append_byte(b, '"'));
        CAIRN_FORWARD_IF_ERROR(cairn_buf_reserve(b, 2 * n + 1));
        cairn_hex_encode((char *)b->data + b->len, p, n);
        b->len += 2 * n;
        return cairn_buf_append_byte(b, '"');
    }
    case CAIRN_MV_ARRAY: {
        CAIRN_FORWARD_IF_ERROR(cairn_buf_append_byte(b, '['));
        size_t n = cairn_mval_len(v);
        for (size_t i = 0; i < n; i++) {
            if (i)
                CAIRN_FORWARD_IF_ERROR(cairn_buf_append_byte(b, ','));
            CAIRN_FORWARD_IF_ERROR(cairn__json_mval(b, cairn_mval_at(v, i)));
        }
        return cairn_buf_append_byte(b, ']');
    }
    case CAIRN_MV_MAP: {
        CAIRN_FORWARD_IF_ERROR(cairn_buf_append_byte(b, '{'));
        size_t n = cairn_mval_len(v);
        for (size_t i = 0; i < n; i++) {
            const char *k = NULL;
            const struct cairn_mval *x = NULL;
            CAIRN_FORWARD_IF_ERROR(cairn_mval_entry(v, i, &k, &x));
            CAIRN_FORWARD_IF_ERROR(cairn__json_key(b, k, i == 0));
            CAIRN_FORWARD_IF_ERROR(cairn__json_mval(b, x));
        }
        return cairn_buf_append_byte(b, '}');
    }
    }
    return cairn__json_raw(b, "null");
}

int cairn__json_finish(struct cairn_buf *b)
{
    CAIRN_FORWARD_IF_ERROR(cairn_buf_append_byte(b, '\0'));
    b->len--;
    return CAIRN_OK;
}
