/*
 * codec.h: the stored form of a chunk (DESIGN §3).
 *
 * Layout of a stored value (all integers little-endian):
 *   header (24 B): version u8 (=1) | flags u8 (bit 0: zstd) | reserved u16 (=0)
 *                  | plain_len u32 | domain_id[16]
 *   body:          XChaCha20-Poly1305(key = K_d.enc, nonce = chunk_id[0..24],
 *                  ad = header || chunk_id, msg = zstd(plain) or plain) incl. 16 B tag
 *   trailer (16 B): BLAKE2b-128(header || body), the keyless checksum any node can
 *                  verify to scrub and repair without keys.
 * Compression is skipped when it does not shrink the chunk. The nonce is the
 * chunk id, which is unique per plaintext within a domain (convergent encryption
 * inside a domain only: domains never share keys).
 *
 * Errors: CAIRN_ECORRUPT for a bad checksum, a malformed header, an AEAD failure
 * or a decompressed length that does not match (messages name the chunk id in
 * hex when the caller passed it); CAIRN_EVERSION for an unknown version;
 * CAIRN_ETOOBIG for plaintext over CAIRN_CODEC_MAX_PLAIN.
 *
 * Thread-safety: a struct cairn_codec holds zstd contexts and scratch buffers
 * and belongs to one thread at a time.
 */
#ifndef CAIRN_CODEC_H
#define CAIRN_CODEC_H

#include "cairn/crypto.h"

#define CAIRN_CODEC_VERSION 1
#define CAIRN_CODEC_HEADER_BYTES 24
#define CAIRN_CODEC_TAG_BYTES 16
#define CAIRN_CODEC_FLAG_ZSTD 0x01
/* Largest plaintext a chunk may carry: 4x the chunker maximum, room for other producers (raw frames). */
#define CAIRN_CODEC_MAX_PLAIN (1u << 20)
#define CAIRN_CODEC_DEFAULT_LEVEL 1 /* level 3 stores ~2 % less for ~30 % more capture CPU (docs/BENCHMARKS.md) */

struct cairn_chunk_header {
    uint8_t version;
    uint8_t flags;
    uint32_t plain_len;
    uint8_t domain_id[CAIRN_DOMAIN_ID_BYTES];
};

struct cairn_codec;

/* level: zstd level (negative = fast levels). CAIRN_ENOMEM. */
int cairn_codec_new(struct cairn_codec **out, int level);
void cairn_codec_destroy(struct cairn_codec **c);

/* Upper bound of a stored value for plain_len bytes of plaintext. */
size_t cairn_codec_bound(size_t plain_len);

/*
 * Encode plaintext whose id (cairn_chunk_id) is `id` into out[0..out_cap).
 * out_cap must be >= cairn_codec_bound(len).
 */
int cairn_codec_encode(struct cairn_codec *c, const struct cairn_domain *d,
                       const uint8_t id[CAIRN_CHUNK_ID_BYTES], const uint8_t *plain, size_t len,
                       uint8_t *out, size_t out_cap, size_t *out_len);

/* Parse the header of a stored value (no checksum check). Bounds-checked; never reads past len. */
int cairn_codec_parse_header(const uint8_t *stored, size_t len, struct cairn_chunk_header *h);

/* Keyless check: header parses and the trailer checksum matches. */
int cairn_codec_verify(const uint8_t *stored, size_t len);

/*
 * Verify, decrypt and decompress into out[0..out_cap) (out_cap >= plain_len of
 * the header, at most CAIRN_CODEC_MAX_PLAIN). The domain id in the header must
 * match d's (CAIRN_ECORRUPT otherwise).
 */
int cairn_codec_decode(struct cairn_codec *c, const struct cairn_domain *d,
                       const uint8_t id[CAIRN_CHUNK_ID_BYTES], const uint8_t *stored, size_t len,
                       uint8_t *out, size_t out_cap, size_t *plain_len);

#endif
