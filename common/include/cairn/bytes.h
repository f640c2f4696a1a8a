/*
 * bytes.h: byte buffers with a hard maximum, hex, and little-endian helpers.
 *
 * struct cairn_buf is caller-embedded: cairn_buf_init() then cairn_buf_release().
 * A buffer never grows past `max` (curl's dynbuf "toobig"): appends beyond it
 * fail with CAIRN_ETOOBIG, leaving the buffer unchanged.
 */
#ifndef CAIRN_BYTES_H
#define CAIRN_BYTES_H

#include "cairn/prelude.h"

struct cairn_buf {
    uint8_t *data; /* owned; NULL until the first append */
    size_t len;
    size_t cap;
    size_t max;
};

void cairn_buf_init(struct cairn_buf *b, size_t max);
void cairn_buf_release(struct cairn_buf *b);  /* frees data, keeps max, len = 0 */
int cairn_buf_reserve(struct cairn_buf *b, size_t extra);
int cairn_buf_append(struct cairn_buf *b, const void *p, size_t n);
int cairn_buf_append_byte(struct cairn_buf *b, uint8_t v);
/* Take ownership of the data (free with cairn_free); the buffer is left empty. */
uint8_t *cairn_buf_detach(struct cairn_buf *b, size_t *len);

/* Lower-case hex; out must hold 2*n+1 bytes; always NUL-terminated. */
void cairn_hex_encode(char *out, const uint8_t *in, size_t n);
/* Exactly 2*n hex digits into n bytes; CAIRN_EINVAL otherwise. */
int cairn_hex_decode(uint8_t *out, size_t n, const char *hex);

static inline void cairn_store_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline uint32_t cairn_load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void cairn_store_le64(uint8_t *p, uint64_t v)
{
    cairn_store_le32(p, (uint32_t)v);
    cairn_store_le32(p + 4, (uint32_t)(v >> 32));
}
static inline uint64_t cairn_load_le64(const uint8_t *p)
{
    return (uint64_t)cairn_load_le32(p) | (uint64_t)cairn_load_le32(p + 4) << 32;
}

/* Monotonic and wall clocks in nanoseconds. */
uint64_t cairn_now_mono_ns(void);
int64_t cairn_now_real_ns(void);

/*
 * Write a whole file atomically and durably: temp file in the same dir, write,
 * fsync, rename, fsync dir. mode is the final file mode (e.g. 0600 for keys).
 */
int cairn_file_replace_atomic(const char *path, const void *data, size_t len, unsigned mode);
/* Read a whole regular file of at most max bytes (CAIRN_ETOOBIG beyond). Caller frees *out. */
int cairn_file_read_all(const char *path, size_t max, uint8_t **out, size_t *len);

#endif
