/*
 * chunker.c: FastCDC content-defined chunking (see chunker.h).
 *
 * Design
 * - Gear rolling hash: h = (h << 1) + GEAR[byte]. Bit k of h depends on the last
 *   k + 1 bytes, so the masks test the top bits: every cut decision looks at a
 *   window of 47..64 bytes.
 * - Normalized chunking, level 2 (Xia et al.): between MIN and AVG a cut needs
 *   the top 18 bits zero (log2(AVG) + 2, "harder"), after AVG the top 14 bits
 *   (log2(AVG) - 2, "easier"); a forced cut at MAX. This narrows the size
 *   distribution around AVG.
 * - The first MIN bytes of a chunk are never hashed: no cut can happen there,
 *   and the hash starts from 0 at offset MIN. A cut therefore depends only on the
 *   bytes of the chunk itself, never on how the input was split into reads.
 * - A cut at a hash match after byte i makes the chunk i + 1 bytes long.
 *
 * The gear table and the masks are part of the storage format: changing either
 * changes every chunk boundary (and so every chunk id) and breaks dedup against
 * existing stores. tests/unit/test_chunker.c pins the boundaries.
 *
 * Streaming (cairn_chunker_next): a 4 MiB buffer is refilled only when fewer
 * than MAX unconsumed bytes remain and input is left, so cairn_chunker_cut is
 * always called with either >= MAX bytes or the final bytes, and always finds a
 * cut. The unconsumed tail is moved to the front before refilling (at most
 * MAX - 1 bytes per 4 MiB read).
 */
#include "cairn/chunker.h"
#include "cairn/alloc.h"
#include "cairn/err.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <unistd.h>

/*
 * GEAR[i] = splitmix64 output number i + 1, state seeded with
 * 0x636169726e636463 ("cairncdc"). Frozen: see the note at the top.
 */
static const uint64_t GEAR[256] = {
    0x6403f467f085d64bull, 0xf40e077fcba7fe61ull, 0xdea32663d1d192f3ull, 0x99b86e7f9105fbd5ull,
    0xe5d56ac6e80297a6ull, 0x8d6cba76ad0e3848ull, 0xf0ba7a1d73522a4eull, 0x470422c7e16bee0aull,
    0x01c082d75434c2c4ull, 0xe8ba2e23c9006319ull, 0x4437ec5e66e6f00bull, 0xd4c424fda9c3d9f2ull,
    0x33def9a6db19cac1ull, 0x0786c5bb83119009ull, 0x8e82acbb0f7a033bull, 0x364319a9cacdd84dull,
    0x5bdc0fd80df32cc8ull, 0x02ab804369cc67e6ull, 0xe0223d18ef1cdb4eull, 0x50227e41c2c89de0ull,
    0x46ec999ad93c7dddull, 0x6fab732e3d9b5574ull, 0xa072eef422ea5fefull, 0x2fd04165bb2ff5a8ull,
    0x35379a3187aca913ull, 0xb7d63e01bae43157ull, 0x88881d73019b0e98ull, 0xa8ee512f1777b279ull,
    0x6419d77f0c3d8f6bull, 0x4589f46f2aa66c15ull, 0xfe5d851427c63599ull, 0xad27ae75485a5a09ull,
    0xdf08bc27ddddf759ull, 0x029d0de48bff673full, 0x8a6a465db8e06a11ull, 0x27c8799da4ccc68aull,
    0xdf1533083066bcc6ull, 0x18de4c5e4540721dull, 0x64bf43bfaf2c9392ull, 0x02a6e65926f804e9ull,
    0xe8fe05415b6f64bcull, 0xb3ed5412546f48f2ull, 0x19842b0afa481fcbull, 0xa9642ba089dba7f0ull,
    0x617dce068c24fbc6ull, 0x8a80699df567a112ull, 0x655fd65552a2f942ull, 0xb7c193664af25d97ull,
    0x79be3672469f0d1full, 0xea4bddff23a357c0ull, 0x26c31eaa90f1e673ull, 0x7e36da17516ddec5ull,
    0xbf7a331abfc794ccull, 0x5bd8edf47cd44b8full, 0xb79065f325e2f8e3ull, 0x868b3c2064f33513ull,
    0x48e2b256de8826f6ull, 0xb31173db1b4594d7ull, 0xb7cbd78f1aa185dcull, 0xb68d59fd40c7f4d5ull,
    0x18c1cc8a1f83e1f1ull, 0xdb4f409874f21c0cull, 0x4ded2fb3003977e9ull, 0x5496d178ea8f5410ull,
    0xf64656955b644b71ull, 0xa2d434111bd5d804ull, 0x049575fbb602b766ull, 0x12a0bbf454a7f138ull,
    0xd70ca911380bef5eull, 0x6db5e2d155786b38ull, 0x0110da17bca72abcull, 0x9539eff3309f84a5ull,
    0x4ced31e049064720ull, 0xc7ea1fd4e839def8ull, 0x53f0550b6234af84ull, 0x52d4768dc8b46e78ull,
    0x73075628c48e746bull, 0x4224525635f8b9dbull, 0x8e466af25e98fcb4ull, 0xef85241610e34059ull,
    0x03b7b4c7856f4775ull, 0xbd02a87d7ceca51bull, 0x2a8e48de344d2f36ull, 0x6007e2c39135808aull,
    0x28c83761cd52f4faull, 0xbee5258b900da6a9ull, 0xcaf93644e3bee2aeull, 0x6c58d1f0c12b2891ull,
    0x09c7a9ed2e748c10ull, 0x461d0ae52263006bull, 0xc7da6755c767e9e8ull, 0x7f7eac3c1f3183faull,
    0xda401ec2fd0e95f6ull, 0x9ea6f051b1fa2c28ull, 0xd4d553e3f03ef7aeull, 0xdb906ed895e3e589ull,
    0x55d61c4fd1cd588cull, 0x51b251d74bd7fc3dull, 0xc870d3eaf6085c97ull, 0x09daa2071fbeaaedull,
    0x7b4dae595a356403ull, 0x05aa93b038f1cdf2ull, 0xc2aaaae19e8af41bull, 0x66dea661d871f029ull,
    0xa14b815888da058cull, 0x78ea9e1fab89db0eull, 0x8cf40eacd2172b82ull, 0x38fe958fe30bb2feull,
    0xd4981b1074f8af5cull, 0x31c987ca0a7dbb84ull, 0x16ed92cabaeab284ull, 0xea525bd1bbaef3f8ull,
    0x2edd8632281f22beull, 0xdf27e15a22eda555ull, 0x855efe755a9fb478ull, 0x9bb67aaf846bf085ull,
    0xd911c2bb922e80beull, 0xa228b4ea04147cebull, 0x6e1e0697e99870dbull, 0xe262f42db66e6373ull,
    0x00ea3853514646fcull, 0xaea0f8ff1daf552dull, 0x0742a3d4d405e052ull, 0x8443828d9d88a3aaull,
    0x87ff385d61999975ull, 0x5b6cf5c61e763015ull, 0x31e960f566f8f33aull, 0x61667a759e170bcfull,
    0xea66936effa82c5cull, 0x122a3cf111b82689ull, 0x209098354e6670abull, 0xa7359e9379f10434ull,
    0xd3de6b028eeb5494ull, 0xccd7c0b88dd6d489ull, 0x428da788abf145ceull, 0x4e6e30c214fafcc1ull,
    0xc570d1fa4a3eb546ull, 0x5845a2dce2219900ull, 0x688e0083e2f6258dull, 0xed57b4c90dcdee0bull,
    0x807cb130d82214dcull, 0xecbbb1672fe222f6ull, 0xc6d31f6ac44edf17ull, 0x702e7fe8f0db3476ull,
    0x8afd5792388767e6ull, 0x707aa5ff46f6c05eull, 0xad31d65e6a6abf1bull, 0xf2c55a4061c5fbbdull,
    0x1b22719739a836d2ull, 0xbe581699949ac647ull, 0x10f0182c14f24024ull, 0xff8cbed83a987643ull,
    0x8df4e18d244db72cull, 0xa8dfab84d7621a37ull, 0x2a4d92ca4e0fc580ull, 0x70deb4c59f7d27d6ull,
    0x1bb4a86593af26ceull, 0x41f8bb5d5f73d2f7ull, 0x35f124d936d51005ull, 0x380e2624c8db86bbull,
    0x3aace29d8d4d195eull, 0xf624c49b534b6d4dull, 0x23f6b8eafe4f6e7aull, 0x04749c505df04bb4ull,
    0xdd7864e9edffcd1eull, 0xc36d9537b751d03dull, 0x3863d53af8206802ull, 0x5f649482eba64b47ull,
    0x4ce49913603ce289ull, 0x0c63631992e6795bull, 0x333ba035109d6da5ull, 0x794adc6f5973f734ull,
    0x47bb5c1426159388ull, 0x4604261ae22338ceull, 0xb48cc363851518b6ull, 0xb9e5dcf91e7d12a1ull,
    0xc58b4633fef7cbb9ull, 0x9634b42c12ed4e4dull, 0x8a53fca48bfb9888ull, 0xb257ab01c50dc5b5ull,
    0x84a38699f7669c24ull, 0x6895e1b354725c8full, 0xecf1f78c9bfe7e40ull, 0x4fd1756e4c5d2d35ull,
    0xef7de6b717f45645ull, 0x3df21c9ccc7ad475ull, 0xc34e4215c6f43f38ull, 0x2a12f0c3ec933b70ull,
    0x0998a0765a61f4adull, 0xea22e372cb363e52ull, 0x1a301e30eecb9d30ull, 0xacd405ee7a5dff7bull,
    0xcd1e9ac71fa4fee5ull, 0xeafa4e327e6263c0ull, 0xa6a76bdedf1f07a5ull, 0x5f5ddf64bd85c33eull,
    0x1a571e9ed2069ad0ull, 0xfb2e0b8984ee3173ull, 0x2b76bc2861ebdd1full, 0xdcef7da495c770f5ull,
    0x76e43b01c882dfc6ull, 0xe23f58c6419d077dull, 0xcd9b9b297cde4d6bull, 0x341ca32e9c798336ull,
    0x7ec4aed510a91ceeull, 0xe20a78dc1a815920ull, 0xf28d75df16793cfbull, 0xf33eb3afc5999f3aull,
    0xc10516c9b666b011ull, 0xf28ad949e282946full, 0xece168a67ea0d4f7ull, 0x438833e59fd863efull,
    0x01e2caee7341ceb9ull, 0x46f1a8996f71570bull, 0xe4e69aa24cf3ac31ull, 0x53721691b81b0107ull,
    0x6dd045573f061a20ull, 0xfc085ec2979242d8ull, 0xff3a2669e2c6610full, 0x3eafa7a1ea65502cull,
    0x08ec6d82eab223c6ull, 0x31b842e6a5343562ull, 0x60009c49d0fece71ull, 0x458f043b4f2318a4ull,
    0x1771cfae3f9d181cull, 0xe03cb76b3391a6a7ull, 0x0190de9fc5e2e897ull, 0xc9d48de1c96c6779ull,
    0xa3a257a74f99ad80ull, 0xf72bd6ca43a109adull, 0xda5c6e9135d8887full, 0x9b26c81f9b132499ull,
    0x497a0d10257b1181ull, 0x55a3b50cc1532839ull, 0x9927390e6a2d11efull, 0x065635a58c3b83a0ull,
    0xb0c6c7b577d87099ull, 0x18c2b07be9e99e3bull, 0x709e4e8a984fa786ull, 0xc48d07fd58ddc66full,
    0x3a6392083c88b565ull, 0xf29779b48ee625d2ull, 0xf0bb7ecda9a4b4e0ull, 0x4d055411dbd0bde8ull,
    0x6df4627ff86b5366ull, 0xc317434df984d94cull, 0xe2f75d8af83967d7ull, 0xcc45aa84d6f18bfdull,
    0xf2c081da38e8accdull, 0xde8c9a1da67d4449ull, 0xf52b3334515932b7ull, 0x54d4343d0bf2fbb5ull,
    0xe1d4ec2bebda445cull, 0xa2e4264e7584a66cull, 0x859b53f782bc4e9eull, 0x910b65dfe564fdf7ull,
};

#define MASK_HARD (~0ull << (64 - 18)) /* before AVG: 2^-18 per byte */
#define MASK_EASY (~0ull << (64 - 14)) /* after AVG: 2^-14 per byte */

_Static_assert(CAIRN_CHUNK_MIN < CAIRN_CHUNK_AVG && CAIRN_CHUNK_AVG < CAIRN_CHUNK_MAX,
               "chunk sizes must be ordered");
_Static_assert(CAIRN_CHUNKER_BUF >= 2 * CAIRN_CHUNK_MAX, "chunker buffer too small");

size_t cairn_chunker_cut(const uint8_t *data, size_t len, bool final)
{
    if (len <= CAIRN_CHUNK_MIN)
        return final ? len : 0;
    size_t end = len < CAIRN_CHUNK_MAX ? len : CAIRN_CHUNK_MAX;
    size_t normal = end < CAIRN_CHUNK_AVG ? end : CAIRN_CHUNK_AVG;
    uint64_t h = 0;
    size_t i = CAIRN_CHUNK_MIN;
    for (; i < normal; i++) {
        h = (h << 1) + GEAR[data[i]];
        if (!(h & MASK_HARD))
            return i + 1;
    }
    for (; i < end; i++) {
        h = (h << 1) + GEAR[data[i]];
        if (!(h & MASK_EASY))
            return i + 1;
    }
    if (end == CAIRN_CHUNK_MAX)
        return CAIRN_CHUNK_MAX;
    return final ? len : 0;
}

/* The file behind fd, for error messages only (the chunker is handed a bare fd). */
static const char *fd_name(int fd, char *buf, size_t cap)
{
    char link[64];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, buf, cap - 1);
    if (n <= 0) {
        snprintf(buf, cap, "fd %d", fd);
        return buf;
    }
    buf[n] = '\0';
    return buf;
}

int cairn_chunker_init(struct cairn_chunker *c, int fd, uint64_t length)
{
    c->fd = fd;
    c->remaining = length;
    c->start = c->end = 0;
    c->eof = length == 0;
    c->buf = cairn_malloc(CAIRN_CHUNKER_BUF);
    if (!c->buf)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for a %u byte chunker buffer",
                             CAIRN_CHUNKER_BUF);
    return CAIRN_OK;
}

/* Move the unconsumed tail to the front, then read until the buffer is full or the input ends. */
static int chunker_fill(struct cairn_chunker *c)
{
    size_t avail = c->end - c->start;
    if (c->start > 0) {
        memmove(c->buf, c->buf + c->start, avail);
        c->start = 0;
        c->end = avail;
    }
    while (c->end < CAIRN_CHUNKER_BUF && c->remaining > 0) {
        size_t want = CAIRN_CHUNKER_BUF - c->end;
        if (want > c->remaining)
            want = (size_t)c->remaining;
        ssize_t n = read(c->fd, c->buf + c->end, want);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            char name[512];
            return cairn_err_set_errno(CAIRN_EIO, e, "read %s", fd_name(c->fd, name, sizeof(name)));
        }
        if (n == 0) {
            char name[512];
            return cairn_err_set(CAIRN_ECORRUPT,
                                 "%s ended %llu bytes early: the file shrank while being read",
                                 fd_name(c->fd, name, sizeof(name)),
                                 (unsigned long long)c->remaining);
        }
        c->end += (size_t)n;
        c->remaining -= (uint64_t)n;
    }
    if (c->remaining == 0)
        c->eof = true;
    return CAIRN_OK;
}

int cairn_chunker_next(struct cairn_chunker *c, const uint8_t **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    if (!c->buf)
        return cairn_err_set(CAIRN_EINVAL, "chunker used after release");
    if (!c->eof && c->end - c->start < CAIRN_CHUNK_MAX)
        CAIRN_FORWARD_IF_ERROR(chunker_fill(c));
    size_t avail = c->end - c->start;
    if (avail == 0)
        return CAIRN_OK;
    size_t n = cairn_chunker_cut(c->buf + c->start, avail, c->eof);
    if (n == 0) /* cannot happen: avail >= MAX or eof; never hand out an empty chunk */
        return cairn_err_set(CAIRN_EINTERNAL, "chunker found no cut in %zu bytes", avail);
    *data = c->buf + c->start;
    *len = n;
    c->start += n;
    return CAIRN_OK;
}

void cairn_chunker_release(struct cairn_chunker *c)
{
    if (!c)
        return;
    CAIRN_FREE(c->buf);
    c->start = c->end = 0;
    c->remaining = 0;
    c->eof = true;
}
