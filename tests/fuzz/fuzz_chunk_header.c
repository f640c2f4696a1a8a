/*
 * fuzz_chunk_header.c: libFuzzer target for the stored-chunk decoder (codec.h).
 *
 * The input is a stored chunk value as read from disk or a peer. It goes through
 * cairn_codec_parse_header, cairn_codec_verify and cairn_codec_decode with a
 * fixed domain (key 00 01 .. 1f) and a fixed chunk id (FUZZ_ID below: the codec
 * uses the id only as nonce and AD, so any 32 bytes do). None may crash or read
 * out of bounds, and their answers must agree:
 *   - decode OK implies verify OK implies parse_header OK, with the same header;
 *   - a decoded chunk re-encodes and decodes back to the same plaintext.
 * Each input runs twice: as given, and with its trailer checksum recomputed, so
 * that mutations reach the header, AEAD and zstd checks behind the checksum.
 * Seeds in corpus/chunk_header/ are valid chunks made with FUZZ_ID and that
 * domain (one compressed, one raw) and a truncated one, so the fuzzer starts
 * past the checksum and AEAD.
 */
#include "cairn/codec.h"
#include "cairn/err.h"

#include <stdlib.h>

static const uint8_t FUZZ_KEY[CAIRN_KEY_BYTES] = {
    0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
    16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
static const uint8_t FUZZ_ID[CAIRN_CHUNK_ID_BYTES] = {
    'c', 'a', 'i', 'r', 'n', '-', 'f', 'u', 'z', 'z', '-', 'c', 'h', 'u', 'n', 'k',
    '-', 'i', 'd', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'a', 'b'};

static struct cairn_domain *domain;
static struct cairn_codec *codec;
static uint8_t *plain, *again, *reenc;
#define FIXED_MAX (2 * CAIRN_CODEC_MAX_PLAIN) /* larger inputs only run as given */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (cairn_crypto_init() != CAIRN_OK || cairn_domain_new(&domain, FUZZ_KEY) != CAIRN_OK ||
        cairn_codec_new(&codec, CAIRN_CODEC_DEFAULT_LEVEL) != CAIRN_OK)
        abort();
    plain = malloc(CAIRN_CODEC_MAX_PLAIN);
    again = malloc(CAIRN_CODEC_MAX_PLAIN);
    reenc = malloc(cairn_codec_bound(CAIRN_CODEC_MAX_PLAIN));
    if (!plain || !again || !reenc)
        abort();
    return 0;
}

static void check_one(const uint8_t *data, size_t size)
{
    struct cairn_chunk_header h, h2;
    int prc = cairn_codec_parse_header(data, size, &h);
    int vrc = cairn_codec_verify(data, size);
    size_t n = 0;
    int drc = cairn_codec_decode(codec, domain, FUZZ_ID, data, size, plain, CAIRN_CODEC_MAX_PLAIN, &n);

    if (vrc == CAIRN_OK && prc != CAIRN_OK)
        __builtin_trap();
    if (drc != CAIRN_OK) {
        if (n != 0)
            __builtin_trap();
        return;
    }
    if (vrc != CAIRN_OK || n != h.plain_len)
        __builtin_trap();

    size_t m = 0, k = 0;
    if (cairn_codec_encode(codec, domain, FUZZ_ID, plain, n, reenc,
                           cairn_codec_bound(CAIRN_CODEC_MAX_PLAIN), &m) != CAIRN_OK)
        __builtin_trap();
    if (cairn_codec_parse_header(reenc, m, &h2) != CAIRN_OK || h2.plain_len != h.plain_len ||
        memcmp(h2.domain_id, h.domain_id, sizeof(h.domain_id)) != 0)
        __builtin_trap();
    if (cairn_codec_decode(codec, domain, FUZZ_ID, reenc, m, again, CAIRN_CODEC_MAX_PLAIN, &k) !=
            CAIRN_OK ||
        k != n || memcmp(again, plain, n) != 0)
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_one(data, size);
    if (size >= CAIRN_CHECKSUM_BYTES && size <= FIXED_MAX) {
        /* exact-size copy: ASan still sees reads past the end */
        uint8_t *copy = malloc(size);
        if (!copy)
            return 0;
        memcpy(copy, data, size);
        cairn_checksum(copy, size - CAIRN_CHECKSUM_BYTES, copy + size - CAIRN_CHECKSUM_BYTES);
        check_one(copy, size);
        free(copy);
    }
    return 0;
}
