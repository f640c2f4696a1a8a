/*
 * codec.c: the stored form of a chunk (see codec.h for the byte layout).
 *
 *   offset 0   version u8 | flags u8 | reserved u16 | plain_len u32 | domain_id[16]
 *   offset 24  body: AEAD(msg) incl. 16 B tag, msg = zstd frame or the plaintext
 *   len - 16   trailer: BLAKE2b-128(header || body)
 *
 * Encoding is deterministic (same domain, id and plaintext give the same bytes
 * with the same zstd version and level): the nonce is the chunk id, a keyed
 * hash of the plaintext, so it is unique per plaintext inside a domain. The
 * caller must pass the true id of the plaintext; a wrong id would reuse a nonce.
 *
 * Decoding treats every stored byte as hostile. The checks run cheapest and
 * keyless first, and each read is bounded by `len`:
 *   1. length >= header + tag + trailer
 *   2. trailer checksum (catches bit rot; no key needed, so any node can scrub)
 *   3. header: version (CAIRN_EVERSION), flags, reserved, plain_len bounds
 *   4. domain id equals the caller's domain, payload length fits the flags
 *   5. AEAD tag (authenticates header, chunk id and body); a buffer smaller
 *      than plain_len is reported (CAIRN_ETOOBIG) only after this, so a
 *      forged plain_len is corruption, not a caller error
 *   6. zstd frame content size == plain_len, then decompression into exactly
 *      plain_len bytes
 *   7. final length == plain_len
 * Version is checked after the checksum, so a flipped version byte is reported
 * as corruption (re-fetch from a replica), not as a format from the future.
 *
 * The scratch buffer (one per codec) holds the zstd output when encoding and the
 * decrypted zstd frame when decoding; it is sized for the largest chunk.
 */
#include "cairn/codec.h"
#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"

#include <sodium.h>
#include <zstd.h>

#define HDR CAIRN_CODEC_HEADER_BYTES
#define TAG CAIRN_CODEC_TAG_BYTES
#define SUM CAIRN_CHECKSUM_BYTES
#define OVERHEAD (HDR + TAG + SUM)
#define AD_BYTES (HDR + CAIRN_CHUNK_ID_BYTES)
#define KNOWN_FLAGS CAIRN_CODEC_FLAG_ZSTD
#define WINDOW_LOG_MAX 20 /* 1 MiB: no frame of a valid chunk needs more */

_Static_assert(TAG == crypto_aead_xchacha20poly1305_ietf_ABYTES, "aead tag size");
_Static_assert(CAIRN_CHUNK_ID_BYTES >= crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
               "nonce comes from the chunk id");
_Static_assert(HDR == 8 + CAIRN_DOMAIN_ID_BYTES, "header layout");
_Static_assert(CAIRN_CODEC_MAX_PLAIN <= (1u << WINDOW_LOG_MAX), "zstd window limit");
_Static_assert(ZSTD_COMPRESSBOUND(CAIRN_CODEC_MAX_PLAIN) >= CAIRN_CODEC_MAX_PLAIN, "scratch size");

struct cairn_codec {
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    int level;
    uint8_t *scratch; /* owned, scratch_cap bytes */
    size_t scratch_cap;
};

int cairn_codec_new(struct cairn_codec **out, int level)
{
    int rc = CAIRN_OK;
    struct cairn_codec *c = NULL;
    *out = NULL;

    if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())
        return cairn_err_set(CAIRN_EINVAL, "zstd level %d out of range %d..%d", level,
                             ZSTD_minCLevel(), ZSTD_maxCLevel());
    CAIRN_FORWARD_IF_ERROR(cairn_crypto_init());
    c = cairn_calloc(1, sizeof(*c));
    if (!c) {
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory for a chunk codec");
        goto fail;
    }
    c->level = level;
    c->scratch_cap = ZSTD_compressBound(CAIRN_CODEC_MAX_PLAIN);
    c->scratch = cairn_malloc(c->scratch_cap);
    c->cctx = ZSTD_createCCtx();
    c->dctx = ZSTD_createDCtx();
    if (!c->scratch || !c->cctx || !c->dctx) {
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory for chunk codec buffers");
        goto fail;
    }
    if (ZSTD_isError(ZSTD_DCtx_setParameter(c->dctx, ZSTD_d_windowLogMax, WINDOW_LOG_MAX))) {
        rc = cairn_err_set(CAIRN_EINTERNAL, "zstd refused a window limit of 2^%d", WINDOW_LOG_MAX);
        goto fail;
    }
    *out = c;
    return CAIRN_OK;

fail:
    cairn_codec_destroy(&c);
    return rc;
}

void cairn_codec_destroy(struct cairn_codec **c)
{
    if (!c || !*c)
        return;
    ZSTD_freeCCtx((*c)->cctx);
    ZSTD_freeDCtx((*c)->dctx);
    if ((*c)->scratch) {
        /* it held plaintext */
        sodium_memzero((*c)->scratch, (*c)->scratch_cap);
        cairn_free((*c)->scratch);
    }
    cairn_free(*c);
    *c = NULL;
}

size_t cairn_codec_bound(size_t plain_len)
{
    if (plain_len > SIZE_MAX - OVERHEAD)
        return SIZE_MAX;
    return plain_len + OVERHEAD;
}

static void write_header(uint8_t *p, uint8_t flags, uint32_t plain_len, const uint8_t *domain_id)
{
    p[0] = CAIRN_CODEC_VERSION;
    p[1] = flags;
    p[2] = p[3] = 0;
    cairn_store_le32(p + 4, plain_len);
    memcpy(p + 8, domain_id, CAIRN_DOMAIN_ID_BYTES);
}

static void make_ad(uint8_t ad[AD_BYTES], const uint8_t *header, const uint8_t *id)
{
    memcpy(ad, header, HDR);
    memcpy(ad + HDR, id, CAIRN_CHUNK_ID_BYTES);
}

int cairn_codec_encode(struct cairn_codec *c, const struct cairn_domain *d,
                       const uint8_t id[CAIRN_CHUNK_ID_BYTES], const uint8_t *plain, size_t len,
                       uint8_t *out, size_t out_cap, size_t *out_len)
{
    static const uint8_t empty[1];
    char hex[2 * CAIRN_CHUNK_ID_BYTES + 1];
    *out_len = 0;
    if (len > CAIRN_CODEC_MAX_PLAIN) {
        cairn_hex_encode(hex, id, CAIRN_CHUNK_ID_BYTES);
        return cairn_err_set(CAIRN_ETOOBIG, "chunk %s: %zu bytes of plaintext (at most %u)", hex,
                             len, CAIRN_CODEC_MAX_PLAIN);
    }
    if (out_cap < cairn_codec_bound(len)) {
        cairn_hex_encode(hex, id, CAIRN_CHUNK_ID_BYTES);
        return cairn_err_set(CAIRN_EINVAL, "chunk %s: output buffer of %zu bytes, need %zu", hex,
                             out_cap, cairn_codec_bound(len));
    }
    if (!plain)
        plain = empty;

    const uint8_t *msg = plain;
    size_t msg_len = len;
    uint8_t flags = 0;
    if (len > 0) {
        size_t z = ZSTD_compressCCtx(c->cctx, c->scratch, c->scratch_cap, plain, len, c->level);
        /* a compression error is not fatal: the chunk is stored uncompressed */
        if (!ZSTD_isError(z) && z < len) {
            msg = c->scratch;
            msg_len = z;
            flags |= CAIRN_CODEC_FLAG_ZSTD;
        }
    }

    write_header(out, flags, (uint32_t)len, cairn_domain_id(d));
    uint8_t ad[AD_BYTES];
    make_ad(ad, out, id);
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(out + HDR, &clen, msg, msg_len, ad, sizeof(ad), NULL,
                                               id, cairn__domain_enc_key(d));
    size_t body_end = HDR + (size_t)clen;
    cairn_checksum(out, body_end, out + body_end);
    *out_len = body_end + SUM;
    return CAIRN_OK;
}

/* Header checks shared by parse_header and decode; `who` names the chunk in messages. */
static int parse_header(const uint8_t *stored, size_t len, struct cairn_chunk_header *h,
                        const char *who)
{
    if (len < HDR)
        return cairn_err_set(CAIRN_ECORRUPT, "%s: %zu bytes, shorter than the %d byte header", who,
                             len, HDR);
    if (stored[0] != CAIRN_CODEC_VERSION)
        return cairn_err_set(CAIRN_EVERSION, "%s: format version %u (this build reads %d)", who,
                             stored[0], CAIRN_CODEC_VERSION);
    if (stored[1] & ~KNOWN_FLAGS)
        return cairn_err_set(CAIRN_ECORRUPT, "%s: unknown flags 0x%02x", who, stored[1]);
    if (stored[2] || stored[3])
        return cairn_err_set(CAIRN_ECORRUPT, "%s: reserved header bytes are not zero", who);
    uint32_t plain_len = cairn_load_le32(stored + 4);
    if (plain_len > CAIRN_CODEC_MAX_PLAIN)
        return cairn_err_set(CAIRN_ECORRUPT, "%s: plaintext length %u over the limit of %u", who,
                             plain_len, CAIRN_CODEC_MAX_PLAIN);
    h->version = stored[0];
    h->flags = stored[1];
    h->plain_len = plain_len;
    memcpy(h->domain_id, stored + 8, CAIRN_DOMAIN_ID_BYTES);
    return CAIRN_OK;
}

int cairn_codec_parse_header(const uint8_t *stored, size_t len, struct cairn_chunk_header *h)
{
    return parse_header(stored, len, h, "chunk value");
}

/* Steps 1-3 of the decode order: length, checksum, header. */
static int verify(const uint8_t *stored, size_t len, struct cairn_chunk_header *h, const char *who)
{
    if (!stored || len < OVERHEAD)
        return cairn_err_set(CAIRN_ECORRUPT, "%s: %zu bytes, shorter than the minimum of %d", who,
                             len, OVERHEAD);
    uint8_t sum[SUM];
    cairn_checksum(stored, len - SUM, sum);
    if (memcmp(sum, stored + len - SUM, SUM) != 0)
        return cairn_err_set(CAIRN_ECORRUPT, "%s: checksum mismatch", who);
    return parse_header(stored, len, h, who);
}

int cairn_codec_verify(const uint8_t *stored, size_t len)
{
    struct cairn_chunk_header h;
    return verify(stored, len, &h, "chunk value");
}

int cairn_codec_decode(struct cairn_codec *c, const struct cairn_domain *d,
                       const uint8_t id[CAIRN_CHUNK_ID_BYTES], const uint8_t *stored, size_t len,
                       uint8_t *out, size_t out_cap, size_t *plain_len)
{
    char who[2 * CAIRN_CHUNK_ID_BYTES + 8];
    memcpy(who, "chunk ", 6);
    cairn_hex_encode(who + 6, id, CAIRN_CHUNK_ID_BYTES);
    *plain_len = 0;

    struct cairn_chunk_header h;
    CAIRN_FORWARD_IF_ERROR(verify(stored, len, &h, who));
    if (memcmp(h.domain_id, cairn_domain_id(d), CAIRN_DOMAIN_ID_BYTES) != 0) {
        char got[2 * CAIRN_DOMAIN_ID_BYTES + 1], want[2 * CAIRN_DOMAIN_ID_BYTES + 1];
        cairn_hex_encode(got, h.domain_id, CAIRN_DOMAIN_ID_BYTES);
        cairn_hex_encode(want, cairn_domain_id(d), CAIRN_DOMAIN_ID_BYTES);
        return cairn_err_set(CAIRN_ECORRUPT, "%s: stored in domain %s, expected domain %s", who, got,
                             want);
    }
    bool zstd = h.flags & CAIRN_CODEC_FLAG_ZSTD;
    size_t body_len = len - HDR - SUM; /* >= TAG by the length check */
    size_t msg_len = body_len - TAG;
    if (!zstd && msg_len != h.plain_len)
        return cairn_err_set(CAIRN_ECORRUPT, "%s: %zu bytes of uncompressed payload for %u bytes", who,
                             msg_len, h.plain_len);
    if (zstd && (msg_len > c->scratch_cap || h.plain_len == 0))
        return cairn_err_set(CAIRN_ECORRUPT, "%s: compressed payload of %zu bytes for %u bytes", who,
                             msg_len, h.plain_len);
    /* scratch_cap >= MAX_PLAIN >= msg_len here, so scratch can take any payload */
    bool small_out = h.plain_len > out_cap;

    uint8_t ad[AD_BYTES];
    make_ad(ad, stored, id);
    /* raw chunks decrypt straight into out; an empty one into scratch (out may be NULL) */
    uint8_t *dst = zstd || h.plain_len == 0 || small_out ? c->scratch : out;
    unsigned long long mlen = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(dst, &mlen, NULL, stored + HDR, body_len, ad,
                                                   sizeof(ad), id, cairn__domain_enc_key(d)) != 0)
        return cairn_err_set(CAIRN_ECORRUPT, "%s: authentication failed (wrong key or tampered bytes)",
                             who);
    if (mlen != msg_len)
        return cairn_err_set(CAIRN_ECORRUPT, "%s: decrypted %llu bytes, expected %zu", who, mlen,
                             msg_len);
    /* only now, with the header authenticated, is a too small buffer the caller's fault */
    if (small_out)
        return cairn_err_set(CAIRN_ETOOBIG, "%s: %u bytes of plaintext, the buffer holds %zu", who,
                             h.plain_len, out_cap);

    size_t n = msg_len;
    if (zstd) {
        unsigned long long fcs = ZSTD_getFrameContentSize(c->scratch, msg_len);
        if (fcs == ZSTD_CONTENTSIZE_ERROR || fcs == ZSTD_CONTENTSIZE_UNKNOWN || fcs != h.plain_len)
            return cairn_err_set(CAIRN_ECORRUPT, "%s: zstd frame does not declare %u bytes", who,
                                 h.plain_len);
        n = ZSTD_decompressDCtx(c->dctx, out, h.plain_len, c->scratch, msg_len);
        if (ZSTD_isError(n))
            return cairn_err_set(CAIRN_ECORRUPT, "%s: zstd: %s", who, ZSTD_getErrorName(n));
    }
    if (n != h.plain_len)
        return cairn_err_set(CAIRN_ECORRUPT, "%s: decoded %zu bytes, header says %u", who, n,
                             h.plain_len);
    *plain_len = n;
    return CAIRN_OK;
}
