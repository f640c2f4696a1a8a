/*
 * manifest.c: the tree manifest codec (manifest.h), msgpack via mp.h.
 *
 * A manifest comes back from chunks of a snapshot that may have been damaged on
 * disk or forged by whoever could write the store, and it drives file creation
 * on a worker (tree materialisation). So the decoder trusts nothing:
 * - every count is checked against the bytes left before anything is allocated
 *   (an entry takes at least ENTRY_MIN_BYTES, a piece PIECE_MIN_BYTES, an xattr
 *   XATTR_MIN_BYTES), so memory use is a small multiple of the input size;
 * - every path and hardlink target goes through path_why() (no "..", ".", empty
 *   components, absolute paths, NUL bytes; components <= 255 bytes);
 * - entries must be strictly increasing under cairn_path_cmp, which also rules
 *   out duplicates; a hardlink must name an earlier FILE entry (binary search
 *   over the entries decoded so far, which are sorted), and an entry whose
 *   parent directory is in the manifest must have a DIR there (never a symlink:
 *   materialising would write through it; "." is a DIR too);
 * - per type, only the fields that make sense may be set (size and pieces for
 *   files, a target for symlinks and hardlinks, rdev for devices, the opaque
 *   flag for directories), and the pieces of a file add up to its size;
 * - the first failure stops decoding, frees everything, and leaves the caller's
 *   manifest empty; the message names the entry index, its path (printable,
 *   escaped) and what was wrong. Malformed msgpack inside a manifest is reported
 *   as CAIRN_ECORRUPT whatever the reader said (a limit crossed is corruption
 *   here); an unknown version is CAIRN_EVERSION.
 *
 * Version lookup: "v" is written first, but map order is not part of msgpack's
 * contract, so when "entries" comes before "v" the decoder looks ahead for "v"
 * on a copy of the reader before decoding entries by version 1's rules.
 *
 * Hole pieces: struct cairn_piece.len is 32 bits, so a hole piece covers at most
 * 4 GiB - 1; larger holes are written as several hole pieces.
 */
#include "cairn/manifest.h"
#include "cairn/alloc.h"
#include "cairn/codec.h"
#include "cairn/err.h"
#include "cairn/mp.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define ENTRY_FIELDS 12
#define ENTRY_MIN_BYTES 15 /* fixarray, bin8 of 1 byte, 9 fixints, nil, 2 empty fixarrays */
#define PIECE_MIN_BYTES 3  /* fixarray, nil, fixint */
#define XATTR_MIN_BYTES 6  /* fixarray, bin8 of 1 byte, bin8 of 0 bytes */
#define SYMLINK_TARGET_MAX 4096u
#define TOP_KEYS_MAX 64u
#define TOP_KEY_MAX 64u
#define ESCAPED_MAX 200

/* ---- building ---- */

void cairn_manifest_init(struct cairn_manifest *m)
{
    m->entries = NULL;
    m->n = m->cap = 0;
}

void cairn_entry_release(struct cairn_entry *e)
{
    if (!e)
        return;
    cairn_free(e->path);
    cairn_free(e->target);
    for (uint32_t i = 0; e->xattrs && i < e->n_xattrs; i++) {
        cairn_free(e->xattrs[i].name);
        cairn_free(e->xattrs[i].value);
    }
    cairn_free(e->xattrs);
    cairn_free(e->pieces);
    memset(e, 0, sizeof(*e));
}

void cairn_manifest_release(struct cairn_manifest *m)
{
    if (!m)
        return;
    for (size_t i = 0; m->entries && i < m->n; i++)
        cairn_entry_release(&m->entries[i]);
    cairn_free(m->entries);
    cairn_manifest_init(m);
}

struct cairn_entry *cairn_manifest_add(struct cairn_manifest *m)
{
    void *arr = m->entries;
    if (cairn_array_grow(&arr, &m->cap, m->n + 1, sizeof(struct cairn_entry)) != CAIRN_OK)
        return NULL;
    m->entries = arr;
    struct cairn_entry *e = &m->entries[m->n++];
    memset(e, 0, sizeof(*e));
    return e;
}

int cairn_entry_add_piece(struct cairn_entry *e, const uint8_t *id, uint32_t len, bool hole)
{
    if (e->n_pieces == UINT32_MAX)
        return cairn_err_set(CAIRN_ETOOBIG, "entry '%s' has too many pieces", e->path ? e->path : "");
    size_t cap = e->cap_pieces;
    void *arr = e->pieces;
    CAIRN_FORWARD_IF_ERROR(cairn_array_grow(&arr, &cap, (size_t)e->n_pieces + 1, sizeof(struct cairn_piece)));
    e->pieces = arr;
    e->cap_pieces = cap > UINT32_MAX ? UINT32_MAX : (uint32_t)cap;
    struct cairn_piece *p = &e->pieces[e->n_pieces++];
    memset(p, 0, sizeof(*p));
    if (!hole && id)
        memcpy(p->id, id, CAIRN_CHUNK_ID_BYTES);
    p->len = len;
    p->hole = hole;
    return CAIRN_OK;
}

static int entry_cmp(const void *a, const void *b)
{
    const struct cairn_entry *x = a, *y = b;
    return cairn_path_cmp(x->path, y->path);
}

void cairn_manifest_sort(struct cairn_manifest *m)
{
    if (m->n > 1)
        qsort(m->entries, m->n, sizeof(struct cairn_entry), entry_cmp);
}

/* ---- paths ---- */

static bool is_root(const char *p)
{
    return p[0] == '.' && p[1] == '\0';
}

int cairn_path_cmp(const char *a, const char *b)
{
    bool ra = is_root(a), rb = is_root(b);
    if (ra || rb)
        return ra == rb ? 0 : (ra ? -1 : 1);
    for (;; a++, b++) {
        unsigned char ca = (unsigned char)*a, cb = (unsigned char)*b;
        if (ca == cb) {
            if (!ca)
                return 0;
            continue;
        }
        /* end of string < '/' < every other byte: the component-wise order */
        int wa = ca == 0 ? -1 : ca == '/' ? 0 : (int)ca + 1;
        int wb = cb == 0 ? -1 : cb == '/' ? 0 : (int)cb + 1;
        return wa < wb ? -1 : 1;
    }
}

/* NULL when valid, else why not (static string). */
static const char *path_why(const uint8_t *p, size_t len)
{
    if (len == 0)
        return "empty path";
    if (len > CAIRN_PATH_MAX)
        return "path longer than 65536 bytes";
    if (len == 1 && p[0] == '.')
        return NULL;
    if (p[0] == '/')
        return "absolute path";
    if (p[len - 1] == '/')
        return "trailing '/'";
    if (memchr(p, '\0', len))
        return "NUL byte in path";
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && p[i] != '/')
            continue;
        size_t clen = i - start;
        const uint8_t *c = p + start;
        if (clen == 0)
            return "empty component ('//')";
        if (clen == 1 && c[0] == '.')
            return "'.' component";
        if (clen == 2 && c[0] == '.' && c[1] == '.')
            return "'..' component";
        if (clen > CAIRN_NAME_MAX)
            return "component longer than 255 bytes";
        start = i + 1;
    }
    return NULL;
}

/* Printable form for messages: \xNN for anything else, \\ and \' escaped, cut at ESCAPED_MAX. */
static void escape(char *out, size_t outsz, const uint8_t *p, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (o + 8 >= outsz || o >= ESCAPED_MAX) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        uint8_t c = p[i];
        if (c == '\\' || c == '\'') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c >= 0x20 && c < 0x7f) {
            out[o++] = (char)c;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
}

int cairn_path_validate(const char *path, size_t len)
{
    if (!path)
        return cairn_err_set(CAIRN_ECORRUPT, "path is missing");
    const char *why = path_why((const uint8_t *)path, len);
    if (why) {
        char esc[ESCAPED_MAX + 16];
        escape(esc, sizeof(esc), (const uint8_t *)path, len);
        return cairn_err_set(CAIRN_ECORRUPT, "invalid path '%s': %s", esc, why);
    }
    return CAIRN_OK;
}

/* ---- encoding ---- */

static void write_cstr_bin(struct cairn_mp_writer *w, const char *s)
{
    cairn_mp_write_bin(w, s, strlen(s));
}

int cairn_manifest_encode(const struct cairn_manifest *m, struct cairn_buf *out)
{
    if (m->n > UINT32_MAX)
        return cairn_err_set(CAIRN_ETOOBIG, "manifest of %zu entries is too large", m->n);
    struct cairn_mp_writer w;
    cairn_mp_writer_init(&w, out);
    cairn_mp_write_map(&w, 2);
    cairn_mp_write_str(&w, "v", 1);
    cairn_mp_write_uint(&w, CAIRN_MANIFEST_VERSION);
    cairn_mp_write_str(&w, "entries", 7);
    cairn_mp_write_array(&w, (uint32_t)m->n);
    for (size_t i = 0; i < m->n && !w.err; i++) {
        const struct cairn_entry *e = &m->entries[i];
        cairn_mp_write_array(&w, ENTRY_FIELDS);
        write_cstr_bin(&w, e->path ? e->path : "");
        cairn_mp_write_uint(&w, e->type);
        cairn_mp_write_uint(&w, e->flags);
        cairn_mp_write_uint(&w, e->mode);
        cairn_mp_write_uint(&w, e->uid);
        cairn_mp_write_uint(&w, e->gid);
        cairn_mp_write_int(&w, e->mtime_ns);
        cairn_mp_write_uint(&w, e->size);
        cairn_mp_write_uint(&w, e->rdev);
        if (e->target)
            write_cstr_bin(&w, e->target);
        else
            cairn_mp_write_nil(&w);
        cairn_mp_write_array(&w, e->xattrs ? e->n_xattrs : 0);
        for (uint32_t j = 0; e->xattrs && j < e->n_xattrs; j++) {
            cairn_mp_write_array(&w, 2);
            write_cstr_bin(&w, e->xattrs[j].name ? e->xattrs[j].name : "");
            cairn_mp_write_bin(&w, e->xattrs[j].value, e->xattrs[j].len);
        }
        cairn_mp_write_array(&w, e->pieces ? e->n_pieces : 0);
        for (uint32_t j = 0; e->pieces && j < e->n_pieces; j++) {
            cairn_mp_write_array(&w, 2);
            if (e->pieces[j].hole)
                cairn_mp_write_nil(&w);
            else
                cairn_mp_write_bin(&w, e->pieces[j].id, CAIRN_CHUNK_ID_BYTES);
            cairn_mp_write_uint(&w, e->pieces[j].len);
        }
    }
    return w.err;
}

/* ---- decoding ---- */

struct dec {
    struct cairn_mp_reader r;
    struct cairn_manifest m;
    size_t idx;            /* entry being decoded */
    bool in_entry;
    const uint8_t *path;   /* its raw path once read (for messages) */
    size_t plen;
};

static int top_fail(int code, const char *fmt, ...) CAIRN_PRINTF(2, 3);
static int top_fail(int code, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return cairn_err_set(code, "manifest: %s", what);
}

static int entry_fail(struct dec *d, const char *fmt, ...) CAIRN_PRINTF(2, 3);
static int entry_fail(struct dec *d, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (!d->path)
        return cairn_err_set(CAIRN_ECORRUPT, "manifest entry %zu: %s", d->idx, what);
    char esc[ESCAPED_MAX + 16];
    escape(esc, sizeof(esc), d->path, d->plen);
    return cairn_err_set(CAIRN_ECORRUPT, "manifest entry %zu ('%s'): %s", d->idx, esc, what);
}

/* The reader failed: wrap its message with the entry and field. */
static int mp_fail(struct dec *d, const char *field)
{
    char inner[256];
    snprintf(inner, sizeof(inner), "%s", cairn_err_msg());
    if (!d->in_entry)
        return top_fail(CAIRN_ECORRUPT, "%s: %s", field, inner);
    return entry_fail(d, "%s: %s", field, inner);
}

static int rd_uint(struct dec *d, const char *field, uint64_t max, uint64_t *v)
{
    if (cairn_mp_read_uint(&d->r, v))
        return mp_fail(d, field);
    if (*v > max)
        return entry_fail(d, "%s %llu out of range (at most %llu)", field, (unsigned long long)*v,
                          (unsigned long long)max);
    return CAIRN_OK;
}

static int rd_array_exact(struct dec *d, const char *field, uint32_t want)
{
    uint32_t n;
    if (cairn_mp_read_array(&d->r, &n, 64))
        return mp_fail(d, field);
    if (n != want)
        return entry_fail(d, "%s has %u elements, expected %u", field, n, want);
    return CAIRN_OK;
}

static char *dup_bytes(const uint8_t *p, size_t n)
{
    char *s = cairn_malloc(n + 1);
    if (s) {
        if (n)
            memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

static int nomem(struct dec *d)
{
    cairn_err_set(CAIRN_ENOMEM, "out of memory decoding manifest entry %zu", d->idx);
    return CAIRN_ENOMEM;
}

static const char *type_name(unsigned t)
{
    static const char *names[] = {"?", "file", "dir", "symlink", "hardlink", "char device",
                                  "block device", "fifo", "whiteout"};
    return t < CAIRN_ARRAY_LEN(names) ? names[t] : "?";
}

/* The decoded entry [0, idx) with this path, or NULL: they are sorted and distinct, so a binary search. */
static const struct cairn_entry *find_earlier(const struct dec *d, const char *path)
{
    size_t lo = 0, hi = d->idx;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cairn_path_cmp(d->m.entries[mid].path, path);
        if (c == 0)
            return &d->m.entries[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/*
 * When the parent directory of e is in the manifest it must be a directory: an
 * entry below a symlink would make materialisation write through the link.
 * (An overlay diff may leave the parent out: it is unchanged in a lower layer.)
 */
static int check_parent(struct dec *d, struct cairn_entry *e)
{
    char *slash = strrchr(e->path, '/');
    if (!slash)
        return CAIRN_OK;
    *slash = '\0';
    const struct cairn_entry *parent = find_earlier(d, e->path);
    *slash = '/';
    if (parent && parent->type != CAIRN_ET_DIR)
        return entry_fail(d, "its parent is a %s, not a directory", type_name(parent->type));
    return CAIRN_OK;
}

static int decode_target(struct dec *d, struct cairn_entry *e)
{
    const uint8_t *t;
    uint32_t tlen;
    bool wants = e->type == CAIRN_ET_SYMLINK || e->type == CAIRN_ET_HARDLINK;
    if (cairn_mp_peek_nil(&d->r)) {
        cairn_mp_read_nil(&d->r);
        if (wants)
            return entry_fail(d, "%s without a target", type_name(e->type));
        return CAIRN_OK;
    }
    if (cairn_mp_read_bin(&d->r, &t, &tlen, CAIRN_PATH_MAX))
        return mp_fail(d, "target");
    if (!wants)
        return entry_fail(d, "target on a %s entry", type_name(e->type));
    if (e->type == CAIRN_ET_SYMLINK) {
        if (tlen == 0 || tlen > SYMLINK_TARGET_MAX)
            return entry_fail(d, "symlink target of %u bytes (1..%u allowed)", tlen, SYMLINK_TARGET_MAX);
        if (memchr(t, '\0', tlen))
            return entry_fail(d, "NUL byte in symlink target");
    } else {
        const char *why = path_why(t, tlen);
        if (why)
            return entry_fail(d, "hardlink target: %s", why);
    }
    e->target = dup_bytes(t, tlen);
    if (!e->target)
        return nomem(d);
    if (e->type == CAIRN_ET_HARDLINK) {
        if (cairn_path_cmp(e->target, e->path) >= 0)
            return entry_fail(d, "hardlink target is not an earlier entry");
        const struct cairn_entry *hit = find_earlier(d, e->target);
        if (!hit)
            return entry_fail(d, "hardlink target is not in the manifest");
        if (hit->type != CAIRN_ET_FILE)
            return entry_fail(d, "hardlink target is a %s, not a file", type_name(hit->type));
    }
    return CAIRN_OK;
}

static int decode_xattrs(struct dec *d, struct cairn_entry *e)
{
    uint32_t n;
    if (cairn_mp_read_array(&d->r, &n, CAIRN_XATTRS_MAX))
        return mp_fail(d, "xattrs");
    if ((uint64_t)n * XATTR_MIN_BYTES > cairn_mp_remaining(&d->r))
        return entry_fail(d, "xattrs: %u xattrs cannot fit in the bytes left", n);
    if (n == 0)
        return CAIRN_OK;
    e->xattrs = cairn_calloc(n, sizeof(struct cairn_xattr));
    if (!e->xattrs)
        return nomem(d);
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *name, *val;
        uint32_t nlen, vlen;
        CAIRN_FORWARD_IF_ERROR(rd_array_exact(d, "xattr", 2));
        if (cairn_mp_read_bin(&d->r, &name, &nlen, CAIRN_XATTR_NAME_MAX))
            return mp_fail(d, "xattr name");
        if (nlen == 0 || memchr(name, '\0', nlen))
            return entry_fail(d, "xattr %u: empty name or NUL byte in name", i);
        if (cairn_mp_read_bin(&d->r, &val, &vlen, CAIRN_XATTR_VALUE_MAX))
            return mp_fail(d, "xattr value");
        struct cairn_xattr *x = &e->xattrs[i];
        x->name = dup_bytes(name, nlen);
        x->value = cairn_memdup(val, vlen);
        x->len = vlen;
        e->n_xattrs = i + 1; /* owned from here on, for release on failure */
        if (!x->name || !x->value)
            return nomem(d);
    }
    return CAIRN_OK;
}

static int decode_pieces(struct dec *d, struct cairn_entry *e)
{
    uint32_t n;
    if (cairn_mp_read_array(&d->r, &n, UINT32_MAX))
        return mp_fail(d, "pieces");
    if (n && e->type != CAIRN_ET_FILE)
        return entry_fail(d, "pieces on a %s entry", type_name(e->type));
    if ((uint64_t)n * PIECE_MIN_BYTES > cairn_mp_remaining(&d->r))
        return entry_fail(d, "pieces: %u pieces cannot fit in the bytes left", n);
    uint64_t sum = 0;
    if (n) {
        e->pieces = cairn_calloc(n, sizeof(struct cairn_piece));
        if (!e->pieces)
            return nomem(d);
        e->cap_pieces = n;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct cairn_piece *p = &e->pieces[i];
        uint64_t len;
        CAIRN_FORWARD_IF_ERROR(rd_array_exact(d, "piece", 2));
        if (cairn_mp_peek_nil(&d->r)) {
            cairn_mp_read_nil(&d->r);
            p->hole = true;
        } else {
            const uint8_t *id;
            uint32_t idlen;
            if (cairn_mp_read_bin(&d->r, &id, &idlen, CAIRN_CHUNK_ID_BYTES))
                return mp_fail(d, "piece chunk id");
            if (idlen != CAIRN_CHUNK_ID_BYTES)
                return entry_fail(d, "piece %u: chunk id of %u bytes, expected %u", i, idlen, CAIRN_CHUNK_ID_BYTES);
            memcpy(p->id, id, CAIRN_CHUNK_ID_BYTES);
        }
        if (cairn_mp_read_uint(&d->r, &len))
            return mp_fail(d, "piece length");
        uint64_t max = p->hole ? UINT32_MAX : CAIRN_CODEC_MAX_PLAIN;
        if (len == 0 || len > max)
            return entry_fail(d, "piece %u: length %llu out of range (1..%llu for a %s)", i,
                              (unsigned long long)len, (unsigned long long)max, p->hole ? "hole" : "chunk");
        p->len = (uint32_t)len;
        e->n_pieces = i + 1;
        sum += len; /* < 2^32 pieces of < 2^32 bytes: cannot overflow */
    }
    if (sum != e->size)
        return entry_fail(d, "pieces add up to %llu bytes, the size is %llu", (unsigned long long)sum,
                          (unsigned long long)e->size);
    return CAIRN_OK;
}

static int decode_entry(struct dec *d, struct cairn_entry *e)
{
    uint64_t v;
    d->path = NULL;
    d->plen = 0;
    CAIRN_FORWARD_IF_ERROR(rd_array_exact(d, "entry", ENTRY_FIELDS));

    const uint8_t *p;
    uint32_t plen;
    if (cairn_mp_read_bin(&d->r, &p, &plen, CAIRN_PATH_MAX))
        return mp_fail(d, "path");
    d->path = p;
    d->plen = plen;
    const char *why = path_why(p, plen);
    if (why)
        return entry_fail(d, "%s", why);
    e->path = dup_bytes(p, plen);
    if (!e->path)
        return nomem(d);
    if (d->idx > 0 && cairn_path_cmp(d->m.entries[d->idx - 1].path, e->path) >= 0)
        return entry_fail(d, "out of order or duplicate path");

    CAIRN_FORWARD_IF_ERROR(rd_uint(d, "type", CAIRN_ET_WHITEOUT, &v));
    if (v < CAIRN_ET_FILE)
        return entry_fail(d, "unknown type %llu", (unsigned long long)v);
    e->type = (uint8_t)v;
    if (is_root(e->path) && e->type != CAIRN_ET_DIR)
        return entry_fail(d, "the root entry is a %s, not a directory", type_name(e->type));
    CAIRN_FORWARD_IF_ERROR(check_parent(d, e));
    CAIRN_FORWARD_IF_ERROR(rd_uint(d, "flags", UINT8_MAX, &v));
    uint64_t allowed = e->type == CAIRN_ET_DIR ? CAIRN_EF_OPAQUE : 0;
    if (v & ~allowed)
        return entry_fail(d, "flags 0x%llx not valid on a %s entry", (unsigned long long)v, type_name(e->type));
    e->flags = (uint8_t)v;
    CAIRN_FORWARD_IF_ERROR(rd_uint(d, "mode", 07777, &v));
    e->mode = (uint32_t)v;
    CAIRN_FORWARD_IF_ERROR(rd_uint(d, "uid", UINT32_MAX, &v));
    e->uid = (uint32_t)v;
    CAIRN_FORWARD_IF_ERROR(rd_uint(d, "gid", UINT32_MAX, &v));
    e->gid = (uint32_t)v;
    if (cairn_mp_read_int(&d->r, &e->mtime_ns))
        return mp_fail(d, "mtime");
    CAIRN_FORWARD_IF_ERROR(rd_uint(d, "size", UINT64_MAX, &e->size));
    if (e->size && e->type != CAIRN_ET_FILE)
        return entry_fail(d, "size %llu on a %s entry", (unsigned long long)e->size, type_name(e->type));
    CAIRN_FORWARD_IF_ERROR(rd_uint(d, "rdev", UINT64_MAX, &e->rdev));
    if (e->rdev && e->type != CAIRN_ET_CHR && e->type != CAIRN_ET_BLK)
        return entry_fail(d, "rdev on a %s entry", type_name(e->type));
    CAIRN_FORWARD_IF_ERROR(decode_target(d, e));
    CAIRN_FORWARD_IF_ERROR(decode_xattrs(d, e));
    CAIRN_FORWARD_IF_ERROR(decode_pieces(d, e));
    return CAIRN_OK;
}

static int decode_entries(struct dec *d)
{
    uint32_t n;
    if (cairn_mp_read_array(&d->r, &n, UINT32_MAX))
        return mp_fail(d, "entries");
    if ((uint64_t)n * ENTRY_MIN_BYTES > cairn_mp_remaining(&d->r))
        return top_fail(CAIRN_ECORRUPT, "%u entries cannot fit in the %zu bytes left", n, cairn_mp_remaining(&d->r));
    if (n) {
        d->m.entries = cairn_calloc(n, sizeof(struct cairn_entry));
        if (!d->m.entries)
            return cairn_err_set(CAIRN_ENOMEM, "out of memory decoding a manifest of %u entries", n);
        d->m.cap = n;
    }
    d->in_entry = true;
    for (uint32_t i = 0; i < n; i++) {
        d->idx = i;
        d->m.n = i + 1; /* the entry is owned by the manifest from here on */
        CAIRN_FORWARD_IF_ERROR(decode_entry(d, &d->m.entries[i]));
    }
    d->in_entry = false;
    return CAIRN_OK;
}

static bool key_is(const uint8_t *k, uint32_t klen, const char *name)
{
    return klen == strlen(name) && memcmp(k, name, klen) == 0;
}

static int check_version(struct cairn_mp_reader *r)
{
    uint64_t v;
    if (cairn_mp_read_uint(r, &v))
        return top_fail(CAIRN_ECORRUPT, "version is not an unsigned integer");
    if (v != CAIRN_MANIFEST_VERSION)
        return top_fail(CAIRN_EVERSION, "version %llu is not supported (this build reads version %d)",
                        (unsigned long long)v, CAIRN_MANIFEST_VERSION);
    return CAIRN_OK;
}

/* "entries" came before "v": find "v" among the keys after it, on a copy of the reader. */
static int look_ahead_version(const struct cairn_mp_reader *r, uint32_t keys_left)
{
    struct cairn_mp_reader la = *r;
    if (cairn_mp_skip(&la))
        return top_fail(CAIRN_ECORRUPT, "malformed entries list");
    for (uint32_t i = 0; i < keys_left; i++) {
        const uint8_t *k;
        uint32_t klen;
        if (cairn_mp_read_str(&la, &k, &klen, TOP_KEY_MAX))
            return top_fail(CAIRN_ECORRUPT, "malformed key");
        if (key_is(k, klen, "v"))
            return check_version(&la);
        if (cairn_mp_skip(&la))
            return top_fail(CAIRN_ECORRUPT, "malformed value");
    }
    return top_fail(CAIRN_ECORRUPT, "no version");
}

static int decode_top(struct dec *d)
{
    uint32_t nkeys;
    if (cairn_mp_read_map(&d->r, &nkeys, TOP_KEYS_MAX))
        return mp_fail(d, "top level");
    bool seen_v = false, seen_entries = false;
    for (uint32_t i = 0; i < nkeys; i++) {
        const uint8_t *k;
        uint32_t klen;
        if (cairn_mp_read_str(&d->r, &k, &klen, TOP_KEY_MAX))
            return mp_fail(d, "key");
        if (key_is(k, klen, "v")) {
            if (seen_v)
                return top_fail(CAIRN_ECORRUPT, "duplicate key 'v'");
            seen_v = true;
            CAIRN_FORWARD_IF_ERROR(check_version(&d->r));
        } else if (key_is(k, klen, "entries")) {
            if (seen_entries)
                return top_fail(CAIRN_ECORRUPT, "duplicate key 'entries'");
            seen_entries = true;
            if (!seen_v)
                CAIRN_FORWARD_IF_ERROR(look_ahead_version(&d->r, nkeys - i - 1));
            CAIRN_FORWARD_IF_ERROR(decode_entries(d));
        } else if (cairn_mp_skip(&d->r)) {
            return mp_fail(d, "unknown key's value");
        }
    }
    if (!seen_v)
        return top_fail(CAIRN_ECORRUPT, "no version");
    if (!seen_entries)
        return top_fail(CAIRN_ECORRUPT, "no entries list");
    if (cairn_mp_remaining(&d->r))
        return top_fail(CAIRN_ECORRUPT, "%zu trailing bytes", cairn_mp_remaining(&d->r));
    return CAIRN_OK;
}

int cairn_manifest_decode(const uint8_t *data, size_t len, struct cairn_manifest *m)
{
    /* m is overwritten, not released: callers pass a fresh (possibly uninitialised) manifest */
    cairn_manifest_init(m);
    struct dec d;
    memset(&d, 0, sizeof(d));
    cairn_mp_reader_init(&d.r, data, len);
    cairn_manifest_init(&d.m);
    int rc = decode_top(&d);
    if (rc != CAIRN_OK) {
        cairn_manifest_release(&d.m);
        return rc;
    }
    *m = d.m;
    return CAIRN_OK;
}
