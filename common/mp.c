/*
 * mp.c: the msgpack subset of mp.h (writer and hostile-input reader).
 *
 * Writer: always the smallest standard encoding of a value (positive fixint,
 * uint8..64, negative fixint, int8..64, fixstr/str8/16/32, bin8/16/32,
 * fixarray/array16/32, fixmap/map16/32), big-endian as the spec says. Errors
 * of the buffer (CAIRN_ENOMEM, or CAIRN_ETOOBIG at the buffer's max) are sticky
 * in w->err.
 *
 * Reader invariants:
 * - r->p <= r->end always; no byte is read before `need(r, n)` checked that n
 *   bytes are left, and a length or count is compared with the bytes left and
 *   the caller's limit before the caller can act on it.
 * - Errors are sticky: the first failure is kept in r->err, sets the detail
 *   message, and every later call returns it without touching the input.
 * - cairn_mp_skip() recurses at most MP_MAX_DEPTH levels, so a depth bomb costs
 *   bounded stack. It also steps over the standard types outside our subset
 *   (float, ext) so unknown fields written by a newer writer can be skipped.
 */
#include "cairn/mp.h"
#include "cairn/err.h"

#include <stdio.h>

#define MP_MAX_DEPTH 32

/* ---- writer ---- */

void cairn_mp_writer_init(struct cairn_mp_writer *w, struct cairn_buf *buf)
{
    w->buf = buf;
    w->err = CAIRN_OK;
}

static void put(struct cairn_mp_writer *w, const void *p, size_t n)
{
    if (w->err)
        return;
    w->err = cairn_buf_append(w->buf, p, n);
}

static void put_tag_be(struct cairn_mp_writer *w, uint8_t tag, uint64_t v, int bytes)
{
    uint8_t b[9];
    b[0] = tag;
    for (int i = 0; i < bytes; i++)
        b[1 + i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
    put(w, b, (size_t)bytes + 1);
}

void cairn_mp_write_nil(struct cairn_mp_writer *w)
{
    uint8_t b = 0xc0;
    put(w, &b, 1);
}

void cairn_mp_write_bool(struct cairn_mp_writer *w, bool v)
{
    uint8_t b = v ? 0xc3 : 0xc2;
    put(w, &b, 1);
}

void cairn_mp_write_uint(struct cairn_mp_writer *w, uint64_t v)
{
    if (v <= 0x7f) {
        uint8_t b = (uint8_t)v;
        put(w, &b, 1);
    } else if (v <= UINT8_MAX) {
        put_tag_be(w, 0xcc, v, 1);
    } else if (v <= UINT16_MAX) {
        put_tag_be(w, 0xcd, v, 2);
    } else if (v <= UINT32_MAX) {
        put_tag_be(w, 0xce, v, 4);
    } else {
        put_tag_be(w, 0xcf, v, 8);
    }
}

void cairn_mp_write_int(struct cairn_mp_writer *w, int64_t v)
{
    if (v >= 0) {
        cairn_mp_write_uint(w, (uint64_t)v);
    } else if (v >= -32) {
        uint8_t b = (uint8_t)(0xe0 | (uint8_t)(v + 32));
        put(w, &b, 1);
    } else if (v >= INT8_MIN) {
        put_tag_be(w, 0xd0, (uint64_t)v, 1);
    } else if (v >= INT16_MIN) {
        put_tag_be(w, 0xd1, (uint64_t)v, 2);
    } else if (v >= INT32_MIN) {
        put_tag_be(w, 0xd2, (uint64_t)v, 4);
    } else {
        put_tag_be(w, 0xd3, (uint64_t)v, 8);
    }
}

static bool len_fits(struct cairn_mp_writer *w, size_t len, const char *what)
{
    if (w->err)
        return false;
    if (len > UINT32_MAX) {
        w->err = cairn_err_set(CAIRN_ETOOBIG, "msgpack: %s of %zu bytes is over the format's 4 GiB limit", what, len);
        return false;
    }
    return true;
}

void cairn_mp_write_str(struct cairn_mp_writer *w, const char *s, size_t len)
{
    if (!len_fits(w, len, "string"))
        return;
    if (len <= 31) {
        uint8_t b = (uint8_t)(0xa0 | len);
        put(w, &b, 1);
    } else if (len <= UINT8_MAX) {
        put_tag_be(w, 0xd9, len, 1);
    } else if (len <= UINT16_MAX) {
        put_tag_be(w, 0xda, len, 2);
    } else {
        put_tag_be(w, 0xdb, len, 4);
    }
    put(w, s, len);
}

void cairn_mp_write_bin(struct cairn_mp_writer *w, const void *p, size_t len)
{
    if (!len_fits(w, len, "byte string"))
        return;
    if (len <= UINT8_MAX)
        put_tag_be(w, 0xc4, len, 1);
    else if (len <= UINT16_MAX)
        put_tag_be(w, 0xc5, len, 2);
    else
        put_tag_be(w, 0xc6, len, 4);
    put(w, p, len);
}

void cairn_mp_write_array(struct cairn_mp_writer *w, uint32_t n)
{
    if (n <= 15) {
        uint8_t b = (uint8_t)(0x90 | n);
        put(w, &b, 1);
    } else if (n <= UINT16_MAX) {
        put_tag_be(w, 0xdc, n, 2);
    } else {
        put_tag_be(w, 0xdd, n, 4);
    }
}

void cairn_mp_write_map(struct cairn_mp_writer *w, uint32_t n)
{
    if (n <= 15) {
        uint8_t b = (uint8_t)(0x80 | n);
        put(w, &b, 1);
    } else if (n <= UINT16_MAX) {
        put_tag_be(w, 0xde, n, 2);
    } else {
        put_tag_be(w, 0xdf, n, 4);
    }
}

/* ---- reader ---- */

void cairn_mp_reader_init(struct cairn_mp_reader *r, const uint8_t *data, size_t len)
{
    r->p = data;
    r->end = data ? data + len : data;
    r->err = CAIRN_OK;
}

size_t cairn_mp_remaining(const struct cairn_mp_reader *r)
{
    return (size_t)(r->end - r->p);
}

static int fail(struct cairn_mp_reader *r, int code, const char *what)
{
    if (!r->err)
        r->err = cairn_err_set(code, "msgpack: %s", what);
    return r->err;
}

static bool need(struct cairn_mp_reader *r, size_t n)
{
    if (r->err)
        return false;
    if (n > cairn_mp_remaining(r)) {
        fail(r, CAIRN_ECORRUPT, "truncated input");
        return false;
    }
    return true;
}

static uint64_t load_be(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | p[i];
    return v;
}

/* Read a big-endian unsigned of `bytes` bytes; 0 with r->err set on truncation. */
static uint64_t take_be(struct cairn_mp_reader *r, int bytes)
{
    if (!need(r, (size_t)bytes))
        return 0;
    uint64_t v = load_be(r->p, bytes);
    r->p += bytes;
    return v;
}

bool cairn_mp_peek_nil(const struct cairn_mp_reader *r)
{
    return !r->err && r->p < r->end && *r->p == 0xc0;
}

int cairn_mp_read_nil(struct cairn_mp_reader *r)
{
    if (!need(r, 1))
        return r->err;
    if (*r->p != 0xc0)
        return fail(r, CAIRN_ECORRUPT, "expected nil");
    r->p++;
    return CAIRN_OK;
}

int cairn_mp_read_bool(struct cairn_mp_reader *r, bool *v)
{
    *v = false;
    if (!need(r, 1))
        return r->err;
    if (*r->p != 0xc2 && *r->p != 0xc3)
        return fail(r, CAIRN_ECORRUPT, "expected a boolean");
    *v = *r->p == 0xc3;
    r->p++;
    return CAIRN_OK;
}

/*
 * Any integer: *neg tells whether it is negative; *u is the value (unsigned) or
 * the two's complement bits of the negative value.
 */
static int read_integer(struct cairn_mp_reader *r, uint64_t *u, bool *neg)
{
    *u = 0;
    *neg = false;
    if (!need(r, 1))
        return r->err;
    uint8_t t = *r->p;
    if (t <= 0x7f) {
        r->p++;
        *u = t;
        return CAIRN_OK;
    }
    if (t >= 0xe0) {
        r->p++;
        *u = (uint64_t)(int64_t)((int)t - 256);
        *neg = true;
        return CAIRN_OK;
    }
    int bytes;
    bool is_signed;
    switch (t) {
    case 0xcc: bytes = 1; is_signed = false; break;
    case 0xcd: bytes = 2; is_signed = false; break;
    case 0xce: bytes = 4; is_signed = false; break;
    case 0xcf: bytes = 8; is_signed = false; break;
    case 0xd0: bytes = 1; is_signed = true; break;
    case 0xd1: bytes = 2; is_signed = true; break;
    case 0xd2: bytes = 4; is_signed = true; break;
    case 0xd3: bytes = 8; is_signed = true; break;
    default: return fail(r, CAIRN_ECORRUPT, "expected an integer");
    }
    if (!need(r, 1 + (size_t)bytes))
        return r->err;
    uint64_t v = load_be(r->p + 1, bytes);
    r->p += 1 + bytes;
    if (is_signed && bytes < 8 && (v >> (8 * bytes - 1)) & 1)
        v |= ~(uint64_t)0 << (8 * bytes); /* sign-extend */
    *u = v;
    *neg = is_signed && (v >> 63) & 1;
    return CAIRN_OK;
}

int cairn_mp_read_uint(struct cairn_mp_reader *r, uint64_t *v)
{
    *v = 0;
    uint64_t u;
    bool neg;
    const uint8_t *save = r->p;
    if (read_integer(r, &u, &neg))
        return r->err;
    if (neg) {
        r->p = save;
        return fail(r, CAIRN_ECORRUPT, "expected a non-negative integer");
    }
    *v = u;
    return CAIRN_OK;
}

int cairn_mp_read_int(struct cairn_mp_reader *r, int64_t *v)
{
    *v = 0;
    uint64_t u;
    bool neg;
    const uint8_t *save = r->p;
    if (read_integer(r, &u, &neg))
        return r->err;
    if (!neg && u > (uint64_t)INT64_MAX) {
        r->p = save;
        return fail(r, CAIRN_ECORRUPT, "integer does not fit a signed 64-bit value");
    }
    /* two's complement bits back to a signed value without implementation-defined conversion */
    *v = neg ? -(int64_t)(~u) - 1 : (int64_t)u;
    return CAIRN_OK;
}

/* A length-prefixed byte payload (str or bin): check it against the bytes left and max. */
static int read_payload(struct cairn_mp_reader *r, uint32_t len, const uint8_t **p, uint32_t *lenp,
                        uint32_t max, const char *what)
{
    if (r->err)
        return r->err;
    if (len > cairn_mp_remaining(r)) {
        char m[96];
        snprintf(m, sizeof(m), "%s of %u bytes runs past the end of the input", what, len);
        return fail(r, CAIRN_ECORRUPT, m);
    }
    if (len > max) {
        char m[96];
        snprintf(m, sizeof(m), "%s of %u bytes is over the limit of %u", what, len, max);
        return fail(r, CAIRN_ETOOBIG, m);
    }
    *p = r->p;
    *lenp = len;
    r->p += len;
    return CAIRN_OK;
}

int cairn_mp_read_str(struct cairn_mp_reader *r, const uint8_t **p, uint32_t *len, uint32_t max)
{
    *p = NULL;
    *len = 0;
    if (!need(r, 1))
        return r->err;
    uint8_t t = *r->p++;
    uint32_t n;
    if ((t & 0xe0) == 0xa0)
        n = t & 0x1f;
    else if (t == 0xd9)
        n = (uint32_t)take_be(r, 1);
    else if (t == 0xda)
        n = (uint32_t)take_be(r, 2);
    else if (t == 0xdb)
        n = (uint32_t)take_be(r, 4);
    else {
        r->p--;
        return fail(r, CAIRN_ECORRUPT, "expected a string");
    }
    return read_payload(r, n, p, len, max, "string");
}

int cairn_mp_read_bin(struct cairn_mp_reader *r, const uint8_t **p, uint32_t *len, uint32_t max)
{
    *p = NULL;
    *len = 0;
    if (!need(r, 1))
        return r->err;
    uint8_t t = *r->p++;
    uint32_t n;
    if (t == 0xc4)
        n = (uint32_t)take_be(r, 1);
    else if (t == 0xc5)
        n = (uint32_t)take_be(r, 2);
    else if (t == 0xc6)
        n = (uint32_t)take_be(r, 4);
    else {
        r->p--;
        return fail(r, CAIRN_ECORRUPT, "expected a byte string");
    }
    return read_payload(r, n, p, len, max, "byte string");
}

/* Check a container count: elements_per_item values of >= 1 byte each must fit in what is left. */
static int check_count(struct cairn_mp_reader *r, uint32_t n, uint32_t max, unsigned per_item, const char *what)
{
    if (r->err)
        return r->err;
    if ((uint64_t)n * per_item > cairn_mp_remaining(r)) {
        char m[96];
        snprintf(m, sizeof(m), "%s of %u elements is longer than the input left", what, n);
        return fail(r, CAIRN_ECORRUPT, m);
    }
    if (n > max) {
        char m[96];
        snprintf(m, sizeof(m), "%s of %u elements is over the limit of %u", what, n, max);
        return fail(r, CAIRN_ETOOBIG, m);
    }
    return CAIRN_OK;
}

int cairn_mp_read_array(struct cairn_mp_reader *r, uint32_t *n, uint32_t max)
{
    *n = 0;
    if (!need(r, 1))
        return r->err;
    uint8_t t = *r->p++;
    uint32_t c;
    if ((t & 0xf0) == 0x90)
        c = t & 0x0f;
    else if (t == 0xdc)
        c = (uint32_t)take_be(r, 2);
    else if (t == 0xdd)
        c = (uint32_t)take_be(r, 4);
    else {
        r->p--;
        return fail(r, CAIRN_ECORRUPT, "expected an array");
    }
    if (check_count(r, c, max, 1, "array"))
        return r->err;
    *n = c;
    return CAIRN_OK;
}

int cairn_mp_read_map(struct cairn_mp_reader *r, uint32_t *n, uint32_t max)
{
    *n = 0;
    if (!need(r, 1))
        return r->err;
    uint8_t t = *r->p++;
    uint32_t c;
    if ((t & 0xf0) == 0x80)
        c = t & 0x0f;
    else if (t == 0xde)
        c = (uint32_t)take_be(r, 2);
    else if (t == 0xdf)
        c = (uint32_t)take_be(r, 4);
    else {
        r->p--;
        return fail(r, CAIRN_ECORRUPT, "expected a map");
    }
    if (check_count(r, c, max, 2, "map"))
        return r->err;
    *n = c;
    return CAIRN_OK;
}

/* Advance over n payload bytes. */
static int skip_bytes(struct cairn_mp_reader *r, uint64_t n)
{
    if (r->err)
        return r->err;
    if (n > cairn_mp_remaining(r))
        return fail(r, CAIRN_ECORRUPT, "truncated input");
    r->p += n;
    return CAIRN_OK;
}

/* depth: containers enclosing this value */
static int skip_value(struct cairn_mp_reader *r, int depth)
{
    if (!need(r, 1))
        return r->err;
    uint8_t t = *r->p++;
    uint64_t items = 0; /* values inside a container */
    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3)
        return CAIRN_OK;
    if ((t & 0xe0) == 0xa0)
        return skip_bytes(r, t & 0x1f);
    if ((t & 0xf0) == 0x90) {
        items = t & 0x0f;
    } else if ((t & 0xf0) == 0x80) {
        items = 2u * (t & 0x0f);
    } else {
        switch (t) {
        case 0xcc: case 0xd0: return skip_bytes(r, 1);
        case 0xcd: case 0xd1: return skip_bytes(r, 2);
        case 0xce: case 0xd2: case 0xca: return skip_bytes(r, 4);
        case 0xcf: case 0xd3: case 0xcb: return skip_bytes(r, 8);
        case 0xd4: return skip_bytes(r, 1 + 1); /* fixext: type byte + data */
        case 0xd5: return skip_bytes(r, 1 + 2);
        case 0xd6: return skip_bytes(r, 1 + 4);
        case 0xd7: return skip_bytes(r, 1 + 8);
        case 0xd8: return skip_bytes(r, 1 + 16);
        case 0xc4: case 0xd9: return skip_bytes(r, take_be(r, 1));
        case 0xc5: case 0xda: return skip_bytes(r, take_be(r, 2));
        case 0xc6: case 0xdb: return skip_bytes(r, take_be(r, 4));
        case 0xc7: return skip_bytes(r, take_be(r, 1) + 1);
        case 0xc8: return skip_bytes(r, take_be(r, 2) + 1);
        case 0xc9: return skip_bytes(r, take_be(r, 4) + 1);
        case 0xdc: items = take_be(r, 2); break;
        case 0xdd: items = take_be(r, 4); break;
        case 0xde: items = 2 * take_be(r, 2); break;
        case 0xdf: items = 2 * take_be(r, 4); break;
        default: return fail(r, CAIRN_ECORRUPT, "unknown type byte");
        }
        if (r->err)
            return r->err;
    }
    if (depth + 1 > MP_MAX_DEPTH)
        return fail(r, CAIRN_ECORRUPT, "containers nested more than 32 deep");
    if (items > cairn_mp_remaining(r))
        return fail(r, CAIRN_ECORRUPT, "container longer than the input left");
    for (uint64_t i = 0; i < items; i++) {
        if (skip_value(r, depth + 1))
            return r->err;
    }
    return CAIRN_OK;
}

int cairn_mp_skip(struct cairn_mp_reader *r)
{
    if (r->err)
        return r->err;
    return skip_value(r, 0);
}
