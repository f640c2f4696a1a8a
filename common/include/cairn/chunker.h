/*
 * chunker.h: FastCDC content-defined chunking (gear hash, normalized chunking,
 * Xia et al., ATC'16 / TPDS'20) with min 16 KiB, average 64 KiB, max 256 KiB.
 *
 * Deterministic: a cut depends only on the bytes since the previous cut, never on
 * how the input was split into reads. The gear table is a fixed constant: changing
 * it (or the masks) changes every chunk id and breaks dedup with existing stores,
 * so golden vectors in tests/unit/test_chunker.c pin the boundaries.
 *
 * Thread-safety: everything here is reentrant; a struct cairn_chunker belongs to
 * one thread.
 */
#ifndef CAIRN_CHUNKER_H
#define CAIRN_CHUNKER_H

#include "cairn/prelude.h"

#define CAIRN_CHUNK_MIN (16u * 1024u)
#define CAIRN_CHUNK_AVG (64u * 1024u)
#define CAIRN_CHUNK_MAX (256u * 1024u)

/*
 * Length of the first chunk of data[0..len).
 * - If a cut point is found, returns it (CAIRN_CHUNK_MIN <= r <= CAIRN_CHUNK_MAX, r <= len).
 * - If len >= CAIRN_CHUNK_MAX, always returns a value (the max at the latest).
 * - Otherwise no cut was found in the available bytes: returns len when `final`
 *   (end of input: the rest is the last chunk), else 0 ("give me more data").
 * - len == 0 returns 0.
 */
size_t cairn_chunker_cut(const uint8_t *data, size_t len, bool final);

/*
 * Streaming chunker over a file descriptor: reads with a buffer of
 * CAIRN_CHUNKER_BUF bytes and hands out chunks that point into that buffer.
 */
#define CAIRN_CHUNKER_BUF (4u * 1024u * 1024u)

struct cairn_chunker {
    int fd;            /* borrowed */
    uint64_t remaining; /* bytes still to read from fd (reads stop there) */
    uint8_t *buf;      /* owned, CAIRN_CHUNKER_BUF bytes */
    size_t start, end; /* unconsumed window buf[start..end) */
    bool eof;
};

/* Prepare to chunk `length` bytes read from fd at its current offset. CAIRN_ENOMEM. */
int cairn_chunker_init(struct cairn_chunker *c, int fd, uint64_t length);
/*
 * Next chunk: *data points into the chunker's buffer and stays valid until the
 * next call. Returns CAIRN_OK with *len > 0 for a chunk, CAIRN_OK with *len == 0
 * at the end, CAIRN_EIO on a read error (message names errno), or CAIRN_ECORRUPT
 * if the file ended before `length` bytes (it shrank while being read).
 */
int cairn_chunker_next(struct cairn_chunker *c, const uint8_t **data, size_t *len);
void cairn_chunker_release(struct cairn_chunker *c);

#endif
