/*
 * mp.h: a small MessagePack (msgpack.org spec) writer and bounds-checked reader
 * for the on-disk formats of common/ (manifests, snapshot records).
 *
 * Why our own: DESIGN §2 keeps msgpack-c (and ZeroMQ) inside proto/, while
 * DESIGN §3 wants the manifest in msgpack inside common/. This subset (nil,
 * bool, int, uint, str, bin, array, map) writes the standard encoding, so any
 * msgpack library reads it; the reader is written for hostile input: every
 * length and count is checked against the bytes left and against a caller's
 * limit before anything is allocated or read.
 *
 * Errors are sticky: after the first failure every call is a no-op and
 * returns the same code (CAIRN_ECORRUPT for malformed or truncated input,
 * CAIRN_ETOOBIG for a count over the caller's limit, CAIRN_ENOMEM on write).
 */
#ifndef CAIRN_MP_H
#define CAIRN_MP_H

#include "cairn/bytes.h"

struct cairn_mp_writer {
    struct cairn_buf *buf; /* borrowed */
    int err;
};

void cairn_mp_writer_init(struct cairn_mp_writer *w, struct cairn_buf *buf);
void cairn_mp_write_nil(struct cairn_mp_writer *w);
void cairn_mp_write_bool(struct cairn_mp_writer *w, bool v);
void cairn_mp_write_uint(struct cairn_mp_writer *w, uint64_t v);
void cairn_mp_write_int(struct cairn_mp_writer *w, int64_t v);
void cairn_mp_write_str(struct cairn_mp_writer *w, const char *s, size_t len);
void cairn_mp_write_bin(struct cairn_mp_writer *w, const void *p, size_t len);
void cairn_mp_write_array(struct cairn_mp_writer *w, uint32_t n);
void cairn_mp_write_map(struct cairn_mp_writer *w, uint32_t n);

struct cairn_mp_reader {
    const uint8_t *p;   /* next byte */
    const uint8_t *end; /* one past the last byte */
    int err;
};

void cairn_mp_reader_init(struct cairn_mp_reader *r, const uint8_t *data, size_t len);
/* Type tests without consuming. */
bool cairn_mp_peek_nil(const struct cairn_mp_reader *r);
int cairn_mp_read_nil(struct cairn_mp_reader *r);
int cairn_mp_read_bool(struct cairn_mp_reader *r, bool *v);
/* Any non-negative integer encoding. */
int cairn_mp_read_uint(struct cairn_mp_reader *r, uint64_t *v);
/* Any integer encoding that fits int64. */
int cairn_mp_read_int(struct cairn_mp_reader *r, int64_t *v);
/* *p points into the input (not NUL-terminated); len <= max else CAIRN_ETOOBIG. */
int cairn_mp_read_str(struct cairn_mp_reader *r, const uint8_t **p, uint32_t *len, uint32_t max);
int cairn_mp_read_bin(struct cairn_mp_reader *r, const uint8_t **p, uint32_t *len, uint32_t max);
/* Counts are also checked against the bytes left (each element takes >= 1 byte). */
int cairn_mp_read_array(struct cairn_mp_reader *r, uint32_t *n, uint32_t max);
int cairn_mp_read_map(struct cairn_mp_reader *r, uint32_t *n, uint32_t max);
/* Skip one value of any supported type, nesting at most 32 deep. */
int cairn_mp_skip(struct cairn_mp_reader *r);
/* Bytes not yet consumed. */
size_t cairn_mp_remaining(const struct cairn_mp_reader *r);

#endif
