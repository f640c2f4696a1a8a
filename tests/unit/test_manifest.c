/* test_manifest.c: the manifest codec: path order and validation, a full round trip over every entry type,
 * and a decoder that refuses hostile manifests (bad paths, order, links, pieces, versions, truncation,
 * garbage) with ECORRUPT/EVERSION, a message naming the entry, and an empty manifest. */
#include "testutil.h"

#include "cairn/alloc.h"
#include "cairn/codec.h"
#include "cairn/err.h"
#include "cairn/manifest.h"
#include "cairn/mp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- paths ---- */

static void test_path_cmp(void **state)
{
    (void)state;
    assert_true(cairn_path_cmp("a/b", "a-c") < 0); /* '/' sorts below every other byte */
    assert_true(cairn_path_cmp("a-c", "a/b") > 0);
    assert_true(cairn_path_cmp("a", "a/b") < 0);   /* a directory right before its contents */
    assert_true(cairn_path_cmp("a/b", "a\x01") < 0);
    assert_true(cairn_path_cmp("a/z/z", "a\xff") < 0);
    assert_true(cairn_path_cmp("a/b/c", "a/b-") < 0);
    assert_true(cairn_path_cmp("ab", "a/b") > 0);
    assert_int_equal(cairn_path_cmp("x/y", "x/y"), 0);
    assert_int_equal(cairn_path_cmp(".", "."), 0);
    assert_true(cairn_path_cmp(".", "-") < 0);      /* "." first even though '-' < '.' */
    assert_true(cairn_path_cmp("-", ".") > 0);
    assert_true(cairn_path_cmp(".", "\x01") < 0);
    assert_true(cairn_path_cmp(".a", ".") > 0);
    assert_true(cairn_path_cmp("\x80", "\x7f") > 0); /* bytes compare unsigned */
}

static void test_path_validate(void **state)
{
    (void)state;
    static const char *good[] = {".", "a", "a/b", ".hidden", "a/..b", "...", "a b/c\nd", "x/.y/z", "\xff\xfe"};
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(good); i++)
        assert_int_equal(cairn_path_validate(good[i], strlen(good[i])), CAIRN_OK);
    static const char *bad[] = {"", "..", "a/../b", "/abs", "a//b", "a/", "./a", "a/.", "a/./b", "/", "../a", "a/.."};
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(bad); i++) {
        cairn_err_clear();
        assert_int_equal(cairn_path_validate(bad[i], strlen(bad[i])), CAIRN_ECORRUPT);
        assert_true(strlen(cairn_err_msg()) > 0);
    }
    assert_int_equal(cairn_path_validate("a\0b", 3), CAIRN_ECORRUPT);
    assert_non_null(strstr(cairn_err_msg(), "NUL"));
    char name[300];
    memset(name, 'n', sizeof(name));
    assert_int_equal(cairn_path_validate(name, 255), CAIRN_OK);
    assert_int_equal(cairn_path_validate(name, 256), CAIRN_ECORRUPT);
    assert_non_null(strstr(cairn_err_msg(), "255"));
    /* the message shows the path printable */
    assert_int_equal(cairn_path_validate("a/\n/..", 6), CAIRN_ECORRUPT);
    assert_non_null(strstr(cairn_err_msg(), "a/\\x0a/.."));
}

/* ---- building a manifest ---- */

static struct cairn_entry *add(struct cairn_manifest *m, const char *path, uint8_t type, uint32_t mode)
{
    struct cairn_entry *e = cairn_manifest_add(m);
    assert_non_null(e);
    e->path = cairn_strdup(path);
    e->type = type;
    e->mode = mode;
    e->uid = 1000;
    e->gid = 1000;
    e->mtime_ns = 1700000000123456789ll;
    return e;
}

static void add_xattr(struct cairn_entry *e, const char *name, const void *v, uint32_t len)
{
    e->xattrs = realloc(e->xattrs, (e->n_xattrs + 1) * sizeof(*e->xattrs));
    struct cairn_xattr *x = &e->xattrs[e->n_xattrs++];
    x->name = cairn_strdup(name);
    x->value = cairn_memdup(v, len);
    x->len = len;
}

static void add_chunk(struct cairn_entry *e, uint8_t fill, uint32_t len)
{
    uint8_t id[CAIRN_CHUNK_ID_BYTES];
    memset(id, fill, sizeof(id));
    assert_int_equal(cairn_entry_add_piece(e, id, len, false), CAIRN_OK);
    e->size += len;
}

static void add_hole(struct cairn_entry *e, uint32_t len)
{
    assert_int_equal(cairn_entry_add_piece(e, NULL, len, true), CAIRN_OK);
    e->size += len;
}

/* A manifest with every type, xattrs, holes and odd names; added out of order, then sorted. */
static void build_rich(struct cairn_manifest *m)
{
    cairn_manifest_init(m);
    struct cairn_entry *e;
    e = add(m, "a/b", CAIRN_ET_FILE, 0644);
    add_chunk(e, 0x11, 65536);
    add_hole(e, 1u << 20);
    add_chunk(e, 0x22, 100);
    add_hole(e, UINT32_MAX);
    add_chunk(e, 0x33, CAIRN_CODEC_MAX_PLAIN);
    add_xattr(e, "user.note", "hello", 5);
    add_xattr(e, "security.capability", "\x00\x01\x00\x02\xff", 5);
    add_xattr(e, "user.empty", "", 0);
    add(m, "a", CAIRN_ET_DIR, 0755)->flags = CAIRN_EF_OPAQUE;
    add(m, ".", CAIRN_ET_DIR, 0755);
    e = add(m, "a/c", CAIRN_ET_HARDLINK, 0644);
    e->target = cairn_strdup("a/b");
    add(m, "a b", CAIRN_ET_FILE, 04755)->mtime_ns = -1;
    e = add(m, "a-c", CAIRN_ET_SYMLINK, 0777);
    e->target = cairn_strdup("../outside/\n\x01 odd \xff target");
    add(m, "dev", CAIRN_ET_DIR, 01777);
    add(m, "dev/null", CAIRN_ET_CHR, 0666)->rdev = (1u << 8) | 3;
    add(m, "dev/sda", CAIRN_ET_BLK, 0660)->rdev = UINT64_MAX;
    add(m, "fifo", CAIRN_ET_FIFO, 0600);
    add(m, "gone", CAIRN_ET_WHITEOUT, 0);
    e = add(m, "nl\nname", CAIRN_ET_FILE, 0600);
    e->uid = UINT32_MAX;
    e->gid = 0;
    e->mtime_ns = INT64_MIN;
    add_chunk(e, 0x44, 1);
    add(m, "\xff\xfe not utf-8", CAIRN_ET_FILE, 0)->mtime_ns = INT64_MAX;
    char name[256];
    memset(name, 'L', 255);
    name[255] = '\0';
    add(m, name, CAIRN_ET_FILE, 0400);
    cairn_manifest_sort(m);
}

static void assert_entries_equal(const struct cairn_entry *a, const struct cairn_entry *b)
{
    assert_string_equal(a->path, b->path);
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->flags, b->flags);
    assert_int_equal(a->mode, b->mode);
    assert_int_equal(a->uid, b->uid);
    assert_int_equal(a->gid, b->gid);
    assert_true(a->mtime_ns == b->mtime_ns);
    assert_true(a->size == b->size);
    assert_true(a->rdev == b->rdev);
    assert_true((a->target == NULL) == (b->target == NULL));
    if (a->target)
        assert_string_equal(a->target, b->target);
    assert_int_equal(a->n_xattrs, b->n_xattrs);
    for (uint32_t i = 0; i < a->n_xattrs; i++) {
        assert_string_equal(a->xattrs[i].name, b->xattrs[i].name);
        assert_int_equal(a->xattrs[i].len, b->xattrs[i].len);
        if (a->xattrs[i].len)
            assert_memory_equal(a->xattrs[i].value, b->xattrs[i].value, a->xattrs[i].len);
    }
    assert_int_equal(a->n_pieces, b->n_pieces);
    for (uint32_t i = 0; i < a->n_pieces; i++) {
        assert_int_equal(a->pieces[i].hole, b->pieces[i].hole);
        assert_int_equal(a->pieces[i].len, b->pieces[i].len);
        if (!a->pieces[i].hole)
            assert_memory_equal(a->pieces[i].id, b->pieces[i].id, CAIRN_CHUNK_ID_BYTES);
    }
}

static void encode(const struct cairn_manifest *m, struct cairn_buf *b)
{
    cairn_buf_init(b, 0);
    assert_int_equal(cairn_manifest_encode(m, b), CAIRN_OK);
}

static void test_round_trip(void **state)
{
    (void)state;
    struct cairn_manifest m, d;
    build_rich(&m);
    assert_string_equal(m.entries[0].path, ".");
    for (size_t i = 1; i < m.n; i++)
        assert_true(cairn_path_cmp(m.entries[i - 1].path, m.entries[i].path) < 0);
    struct cairn_buf b;
    encode(&m, &b);
    assert_int_equal(cairn_manifest_decode(b.data, b.len, &d), CAIRN_OK);
    assert_int_equal(d.n, m.n);
    for (size_t i = 0; i < m.n; i++)
        assert_entries_equal(&m.entries[i], &d.entries[i]);
    /* re-encoding gives the same bytes */
    struct cairn_buf b2;
    encode(&d, &b2);
    assert_int_equal(b2.len, b.len);
    assert_memory_equal(b2.data, b.data, b.len);
    cairn_buf_release(&b2);
    cairn_manifest_release(&d);
    cairn_manifest_release(&m);
    cairn_manifest_release(&m); /* twice: still fine */
    cairn_buf_release(&b);

    /* an empty manifest is valid */
    cairn_manifest_init(&m);
    encode(&m, &b);
    assert_int_equal(cairn_manifest_decode(b.data, b.len, &d), CAIRN_OK);
    assert_int_equal(d.n, 0);
    cairn_manifest_release(&d);
    cairn_buf_release(&b);
}

/* ---- hostile manifests ---- */

/* Decode must fail with `code`, leave the manifest empty, and say `needle` in its message. */
static void expect_refused(const uint8_t *data, size_t len, int code, const char *needle)
{
    struct cairn_manifest d;
    memset(&d, 0xa5, sizeof(d)); /* garbage in: decode must not trust it */
    cairn_err_clear();
    int rc = cairn_manifest_decode(data, len, &d);
    if (rc != code)
        fail_msg("decode returned %s, expected %s (%s)", cairn_err_name(rc), cairn_err_name(code), cairn_err_msg());
    assert_int_equal(d.n, 0);
    assert_null(d.entries);
    assert_true(strlen(cairn_err_msg()) > 0);
    if (needle && !strstr(cairn_err_msg(), needle))
        fail_msg("message '%s' lacks '%s'", cairn_err_msg(), needle);
    cairn_manifest_release(&d);
}

static void expect_manifest_refused(const struct cairn_manifest *m, const char *needle)
{
    struct cairn_buf b;
    encode(m, &b);
    expect_refused(b.data, b.len, CAIRN_ECORRUPT, needle);
    cairn_buf_release(&b);
}

/* A manifest of "d" (dir) then one entry at `path`, refused. */
static void expect_path_refused(const char *path, size_t plen, const char *needle)
{
    struct cairn_manifest m;
    cairn_manifest_init(&m);
    add(&m, "d", CAIRN_ET_DIR, 0755);
    struct cairn_entry *e = add(&m, "x", CAIRN_ET_FILE, 0644);
    cairn_free(e->path);
    e->path = cairn_malloc(plen + 1);
    memcpy(e->path, path, plen);
    e->path[plen] = '\0';
    expect_manifest_refused(&m, needle);
    cairn_manifest_release(&m);
}

static void test_bad_paths(void **state)
{
    (void)state;
    expect_path_refused("..", 2, "manifest entry 1 ('..'): '..' component");
    expect_path_refused("d/../b", 6, "manifest entry 1 ('d/../b'): '..' component");
    expect_path_refused("/abs", 4, "absolute");
    expect_path_refused("d//b", 4, "empty component");
    expect_path_refused("d/", 2, "trailing");
    expect_path_refused("", 0, "empty path");
    expect_path_refused("./a", 3, "'.' component");
    expect_path_refused("d/.", 3, "'.' component");
    char name[300] = "d/";
    memset(name + 2, 'c', 256);
    expect_path_refused(name, 258, "longer than 255");
    memset(name + 2, 'c', 255);
    name[257] = '\0';
    /* 255 is fine */
    struct cairn_manifest m, d;
    cairn_manifest_init(&m);
    add(&m, "d", CAIRN_ET_DIR, 0755);
    add(&m, name, CAIRN_ET_FILE, 0644);
    struct cairn_buf b;
    encode(&m, &b);
    assert_int_equal(cairn_manifest_decode(b.data, b.len, &d), CAIRN_OK);
    cairn_manifest_release(&d);
    cairn_manifest_release(&m);
    cairn_buf_release(&b);
    /* the message escapes unprintable bytes of the path */
    expect_path_refused("d/\n\xff/..", 8, "('d/\\x0a\\xff/..')");

    /* "." only as the first entry, and only as a directory */
    cairn_manifest_init(&m);
    add(&m, ".", CAIRN_ET_FILE, 0644);
    expect_manifest_refused(&m, "root");
    cairn_manifest_release(&m);
    cairn_manifest_init(&m);
    add(&m, "a", CAIRN_ET_DIR, 0755);
    add(&m, ".", CAIRN_ET_DIR, 0755);
    expect_manifest_refused(&m, "out of order");
    cairn_manifest_release(&m);
}

static void test_order(void **state)
{
    (void)state;
    struct cairn_manifest m;
    cairn_manifest_init(&m);
    add(&m, "a", CAIRN_ET_DIR, 0755);
    add(&m, "a-c", CAIRN_ET_FILE, 0644);
    add(&m, "a/b", CAIRN_ET_FILE, 0644); /* belongs before "a-c" */
    expect_manifest_refused(&m, "manifest entry 2 ('a/b'): out of order or duplicate path");
    cairn_manifest_release(&m);

    cairn_manifest_init(&m);
    add(&m, "a", CAIRN_ET_FILE, 0644);
    add(&m, "b", CAIRN_ET_FILE, 0644);
    add(&m, "b", CAIRN_ET_FILE, 0644);
    expect_manifest_refused(&m, "entry 2 ('b'): out of order or duplicate");
    cairn_manifest_release(&m);
}

static void test_links_and_parents(void **state)
{
    (void)state;
    struct cairn_manifest m;
    /* hardlink to a later entry */
    cairn_manifest_init(&m);
    add(&m, "a", CAIRN_ET_HARDLINK, 0644)->target = cairn_strdup("b");
    add(&m, "b", CAIRN_ET_FILE, 0644);
    expect_manifest_refused(&m, "not an earlier entry");
    cairn_manifest_release(&m);
    /* to itself */
    cairn_manifest_init(&m);
    add(&m, "a", CAIRN_ET_HARDLINK, 0644)->target = cairn_strdup("a");
    expect_manifest_refused(&m, "not an earlier entry");
    cairn_manifest_release(&m);
    /* to a missing entry */
    cairn_manifest_init(&m);
    add(&m, "a", CAIRN_ET_FILE, 0644);
    add(&m, "c", CAIRN_ET_HARDLINK, 0644)->target = cairn_strdup("b");
    expect_manifest_refused(&m, "not in the manifest");
    cairn_manifest_release(&m);
    /* to a directory, to a symlink */
    cairn_manifest_init(&m);
    add(&m, "a", CAIRN_ET_DIR, 0755);
    add(&m, "c", CAIRN_ET_HARDLINK, 0644)->target = cairn_strdup("a");
    expect_manifest_refused(&m, "not a file");
    cairn_manifest_release(&m);
    cairn_manifest_init(&m);
    add(&m, "a", CAIRN_ET_SYMLINK, 0777)->target = cairn_strdup("/etc/passwd");
    add(&m, "c", CAIRN_ET_HARDLINK, 0644)->target = cairn_strdup("a");
    expect_manifest_refused(&m, "not a file");
    cairn_manifest_release(&m);
    /* with a bad path as target */
    cairn_manifest_init(&m);
    add(&m, "a", CAIRN_ET_FILE, 0644);
    add(&m, "c", CAIRN_ET_HARDLINK, 0644)->target = cairn_strdup("../a");
    expect_manifest_refused(&m, "hardlink target: '..' component");
    cairn_manifest_release(&m);
    /* without a target */
    cairn_manifest_init(&m);
    add(&m, "c", CAIRN_ET_HARDLINK, 0644);
    expect_manifest_refused(&m, "without a target");
    cairn_manifest_release(&m);
    /* symlink targets: empty, too long; a target on a file */
    cairn_manifest_init(&m);
    add(&m, "s", CAIRN_ET_SYMLINK, 0777)->target = cairn_strdup("");
    expect_manifest_refused(&m, "symlink target");
    cairn_manifest_release(&m);
    cairn_manifest_init(&m);
    char *longt = cairn_malloc(4098);
    memset(longt, 't', 4097);
    longt[4097] = '\0';
    add(&m, "s", CAIRN_ET_SYMLINK, 0777)->target = longt;
    expect_manifest_refused(&m, "symlink target");
    longt[4096] = '\0'; /* 4096 is the most */
    struct cairn_buf b;
    struct cairn_manifest d;
    encode(&m, &b);
    assert_int_equal(cairn_manifest_decode(b.data, b.len, &d), CAIRN_OK);
    cairn_manifest_release(&d);
    cairn_buf_release(&b);
    cairn_manifest_release(&m);
    cairn_manifest_init(&m);
    add(&m, "f", CAIRN_ET_FILE, 0644)->target = cairn_strdup("x");
    expect_manifest_refused(&m, "target on a file");
    cairn_manifest_release(&m);
    /* an entry below a symlink (materialising would write through it), or below a file */
    cairn_manifest_init(&m);
    add(&m, "etc", CAIRN_ET_SYMLINK, 0777)->target = cairn_strdup("/etc");
    add(&m, "etc/passwd", CAIRN_ET_FILE, 0644);
    expect_manifest_refused(&m, "entry 1 ('etc/passwd'): its parent is a symlink");
    cairn_manifest_release(&m);
    cairn_manifest_init(&m);
    add(&m, "f", CAIRN_ET_FILE, 0644);
    add(&m, "f/g", CAIRN_ET_FILE, 0644);
    expect_manifest_refused(&m, "parent is a file");
    cairn_manifest_release(&m);
    /* a parent left out (overlay diff: unchanged dir) is fine */
    cairn_manifest_init(&m);
    add(&m, "x/y/z", CAIRN_ET_FILE, 0644);
    encode(&m, &b);
    assert_int_equal(cairn_manifest_decode(b.data, b.len, &d), CAIRN_OK);
    cairn_manifest_release(&d);
    cairn_buf_release(&b);
    cairn_manifest_release(&m);
}

static void test_fields(void **state)
{
    (void)state;
    struct cairn_manifest m;
    struct cairn_entry *e;
#define ONE(setup, needle)                                \
    do {                                                  \
        cairn_manifest_init(&m);                          \
        e = add(&m, "e", CAIRN_ET_FILE, 0644);            \
        setup;                                            \
        expect_manifest_refused(&m, needle);              \
        cairn_manifest_release(&m);                       \
    } while (0)
    ONE(e->type = 0, "unknown type 0");
    ONE(e->type = 9, "type 9 out of range");
    ONE(e->mode = 010000, "mode");
    ONE(e->flags = CAIRN_EF_OPAQUE, "flags");
    ONE((e->type = CAIRN_ET_DIR, e->flags = 2), "flags");
    ONE((e->type = CAIRN_ET_DIR, e->size = 1), "size 1 on a dir");
    ONE((e->type = CAIRN_ET_FIFO, e->rdev = 5), "rdev");
    ONE(e->size = 10, "pieces add up to 0 bytes, the size is 10");
    ONE((add_chunk(e, 1, 100), e->size = 99), "pieces add up to 100 bytes, the size is 99");
    ONE((add_chunk(e, 1, 100), add_hole(e, 5), e->size += 1), "pieces add up");
    ONE((add_chunk(e, 1, 100), e->type = CAIRN_ET_DIR, e->size = 0), "pieces on a dir");
    ONE((add_chunk(e, 1, CAIRN_CODEC_MAX_PLAIN), e->pieces[0].len++, e->size++), "length");
    ONE((add_chunk(e, 1, 0)), "length 0");
    ONE((add_hole(e, 0)), "length 0");
    ONE(add_xattr(e, "", "v", 1), "name");
    char bigname[300];
    memset(bigname, 'x', 256);
    bigname[256] = '\0';
    ONE(add_xattr(e, bigname, "v", 1), "xattr name");
    uint8_t *bigval = calloc(1, CAIRN_XATTR_VALUE_MAX + 1);
    ONE(add_xattr(e, "user.big", bigval, CAIRN_XATTR_VALUE_MAX + 1), "xattr value");
    free(bigval);
#undef ONE
}

/* Hand-written msgpack for what the encoder cannot express. */
static void raw_head(struct cairn_mp_writer *w, uint64_t version, uint32_t n_entries)
{
    cairn_mp_write_map(w, 2);
    cairn_mp_write_str(w, "v", 1);
    cairn_mp_write_uint(w, version);
    cairn_mp_write_str(w, "entries", 7);
    cairn_mp_write_array(w, n_entries);
}

/*
 * A file entry of one 10-byte chunk whose id has idlen bytes, with an array header of `fields`
 * elements: the 12 of the format in order, cut short or padded with nils.
 */
static void raw_file(struct cairn_mp_writer *w, const char *path, size_t plen, size_t idlen, uint32_t fields)
{
    uint8_t id[40] = {0};
    cairn_mp_write_array(w, fields);
    for (uint32_t i = 0; i < fields; i++) {
        switch (i) {
        case 0: cairn_mp_write_bin(w, path, plen); break;
        case 1: cairn_mp_write_uint(w, CAIRN_ET_FILE); break;
        case 3: cairn_mp_write_uint(w, 0644); break;
        case 6: cairn_mp_write_int(w, 0); break;
        case 7: cairn_mp_write_uint(w, 10); break;
        case 9: cairn_mp_write_nil(w); break;
        case 10: cairn_mp_write_array(w, 0); break;
        case 11:
            cairn_mp_write_array(w, 1);
            cairn_mp_write_array(w, 2);
            cairn_mp_write_bin(w, id, idlen);
            cairn_mp_write_uint(w, 10);
            break;
        case 2: case 4: case 5: case 8: cairn_mp_write_uint(w, 0); break;
        default: cairn_mp_write_nil(w); break;
        }
    }
}

static void test_raw_encodings(void **state)
{
    (void)state;
    struct cairn_buf b;
    struct cairn_mp_writer w;
    struct cairn_manifest d;

    /* the valid baseline */
    cairn_buf_init(&b, 0);
    cairn_mp_writer_init(&w, &b);
    raw_head(&w, 1, 1);
    raw_file(&w, "f", 1, 32, 12);
    assert_int_equal(cairn_manifest_decode(b.data, b.len, &d), CAIRN_OK);
    assert_int_equal(d.n, 1);
    cairn_manifest_release(&d);
    /* trailing bytes */
    cairn_mp_write_nil(&w);
    expect_refused(b.data, b.len, CAIRN_ECORRUPT, "trailing");
    cairn_buf_release(&b);

    /* chunk ids of 31 and 33 bytes */
    for (size_t idlen = 31; idlen <= 33; idlen += 2) {
        cairn_buf_init(&b, 0);
        cairn_mp_writer_init(&w, &b);
        raw_head(&w, 1, 1);
        raw_file(&w, "f", 1, idlen, 12);
        expect_refused(b.data, b.len, CAIRN_ECORRUPT, "manifest entry 0 ('f'): piece");
        cairn_buf_release(&b);
    }
    /* 11 and 13 fields */
    for (uint32_t fields = 11; fields <= 13; fields += 2) {
        cairn_buf_init(&b, 0);
        cairn_mp_writer_init(&w, &b);
        raw_head(&w, 1, 1);
        raw_file(&w, "f", 1, 32, fields);
        expect_refused(b.data, b.len, CAIRN_ECORRUPT, fields == 11 ? "11 elements, expected 12" : "13 elements, expected 12");
        cairn_buf_release(&b);
    }
    /* versions */
    cairn_buf_init(&b, 0);
    cairn_mp_writer_init(&w, &b);
    raw_head(&w, 2, 1);
    raw_file(&w, "f", 1, 32, 12);
    expect_refused(b.data, b.len, CAIRN_EVERSION, "version 2");
    cairn_buf_release(&b);
    cairn_buf_init(&b, 0);
    cairn_mp_writer_init(&w, &b);
    raw_head(&w, 0, 0);
    expect_refused(b.data, b.len, CAIRN_EVERSION, "version 0");
    cairn_buf_release(&b);
    /* entries before "v", and an unknown key: skipped; version still enforced */
    for (uint64_t v = 1; v <= 3; v++) {
        cairn_buf_init(&b, 0);
        cairn_mp_writer_init(&w, &b);
        cairn_mp_write_map(&w, 3);
        cairn_mp_write_str(&w, "entries", 7);
        cairn_mp_write_array(&w, 1);
        raw_file(&w, "f", 1, 32, 12);
        cairn_mp_write_str(&w, "future", 6);
        cairn_mp_write_map(&w, 1);
        cairn_mp_write_str(&w, "x", 1);
        cairn_mp_write_array(&w, 2);
        cairn_mp_write_nil(&w);
        cairn_mp_write_bool(&w, true);
        cairn_mp_write_str(&w, "v", 1);
        cairn_mp_write_uint(&w, v);
        if (v == 1) {
            assert_int_equal(cairn_manifest_decode(b.data, b.len, &d), CAIRN_OK);
            assert_int_equal(d.n, 1);
            assert_string_equal(d.entries[0].path, "f");
            cairn_manifest_release(&d);
        } else {
            expect_refused(b.data, b.len, CAIRN_EVERSION, "not supported");
        }
        cairn_buf_release(&b);
    }
    /* no version, no entries, duplicate keys, not a map */
    cairn_buf_init(&b, 0);
    cairn_mp_writer_init(&w, &b);
    cairn_mp_write_map(&w, 1);
    cairn_mp_write_str(&w, "entries", 7);
    cairn_mp_write_array(&w, 0);
    expect_refused(b.data, b.len, CAIRN_ECORRUPT, "no version");
    cairn_buf_release(&b);
    cairn_buf_init(&b, 0);
    cairn_mp_writer_init(&w, &b);
    cairn_mp_write_map(&w, 1);
    cairn_mp_write_str(&w, "v", 1);
    cairn_mp_write_uint(&w, 1);
    expect_refused(b.data, b.len, CAIRN_ECORRUPT, "no entries");
    cairn_buf_release(&b);
    cairn_buf_init(&b, 0);
    cairn_mp_writer_init(&w, &b);
    cairn_mp_write_map(&w, 3);
    cairn_mp_write_str(&w, "v", 1);
    cairn_mp_write_uint(&w, 1);
    cairn_mp_write_str(&w, "entries", 7);
    cairn_mp_write_array(&w, 0);
    cairn_mp_write_str(&w, "v", 1);
    cairn_mp_write_uint(&w, 1);
    expect_refused(b.data, b.len, CAIRN_ECORRUPT, "duplicate");
    cairn_buf_release(&b);
    expect_refused((const uint8_t *)"\x90", 1, CAIRN_ECORRUPT, "manifest");
    expect_refused(NULL, 0, CAIRN_ECORRUPT, "manifest");

    /* a count far larger than the input: refused before allocating */
    cairn_buf_init(&b, 0);
    cairn_mp_writer_init(&w, &b);
    raw_head(&w, 1, UINT32_MAX);
    raw_file(&w, "f", 1, 32, 12);
    expect_refused(b.data, b.len, CAIRN_ECORRUPT, "longer than the input");
    cairn_buf_release(&b);
    /* symlink target with a NUL byte */
    cairn_buf_init(&b, 0);
    cairn_mp_writer_init(&w, &b);
    raw_head(&w, 1, 1);
    cairn_mp_write_array(&w, 12);
    cairn_mp_write_bin(&w, "s", 1);
    cairn_mp_write_uint(&w, CAIRN_ET_SYMLINK);
    for (int i = 0; i < 4; i++)
        cairn_mp_write_uint(&w, 0);
    cairn_mp_write_int(&w, 0);
    cairn_mp_write_uint(&w, 0);
    cairn_mp_write_uint(&w, 0);
    cairn_mp_write_bin(&w, "a\0b", 3);
    cairn_mp_write_array(&w, 0);
    cairn_mp_write_array(&w, 0);
    expect_refused(b.data, b.len, CAIRN_ECORRUPT, "NUL");
    cairn_buf_release(&b);
    /* a path with a NUL byte */
    cairn_buf_init(&b, 0);
    cairn_mp_writer_init(&w, &b);
    raw_head(&w, 1, 1);
    raw_file(&w, "a\0b", 3, 32, 12);
    expect_refused(b.data, b.len, CAIRN_ECORRUPT, "NUL");
    cairn_buf_release(&b);
}

/* A bigger manifest for truncation and mutation. */
static void build_many(struct cairn_manifest *m)
{
    build_rich(m);
    char p[64];
    for (int i = 0; i < 200; i++) {
        snprintf(p, sizeof(p), "many/f%04d", i);
        struct cairn_entry *e = add(m, p, CAIRN_ET_FILE, 0644);
        add_chunk(e, (uint8_t)i, 1000 + (uint32_t)i);
        if (i % 7 == 0)
            add_xattr(e, "user.i", p, (uint32_t)strlen(p));
    }
    add(m, "many", CAIRN_ET_DIR, 0755);
    cairn_manifest_sort(m);
}

static void test_truncated(void **state)
{
    (void)state;
    struct cairn_manifest m;
    build_many(&m);
    struct cairn_buf b;
    encode(&m, &b);
    for (size_t cut = 0; cut < b.len; cut += (cut < 300 ? 1 : 97)) {
        uint8_t *t = malloc(cut ? cut : 1);
        memcpy(t, b.data, cut);
        expect_refused(t, cut, CAIRN_ECORRUPT, "manifest");
        free(t);
    }
    cairn_buf_release(&b);
    cairn_manifest_release(&m);
}

/* Random garbage and random mutations of a valid manifest: refused cleanly, or accepted and stable. */
static void test_garbage_and_mutations(void **state)
{
    (void)state;
    uint64_t seed = 2024;
    uint8_t junk[512];
    for (int i = 0; i < 5000; i++) {
        size_t n = tu_rand(&seed) % sizeof(junk);
        tu_fill_random(&seed, junk, n);
        if (i % 2 && n > 12)
            memcpy(junk, "\x82\xa1v\x01\xa7" "entries", 12); /* get past the header half of the time */
        uint8_t *t = malloc(n ? n : 1);
        memcpy(t, junk, n);
        struct cairn_manifest d;
        int rc = cairn_manifest_decode(t, n, &d);
        assert_true(rc == CAIRN_ECORRUPT || rc == CAIRN_EVERSION);
        assert_int_equal(d.n, 0);
        free(t);
    }

    struct cairn_manifest m;
    build_many(&m);
    struct cairn_buf b;
    encode(&m, &b);
    cairn_manifest_release(&m);
    int accepted = 0;
    for (int i = 0; i < 3000; i++) {
        uint8_t *t = malloc(b.len);
        memcpy(t, b.data, b.len);
        int flips = 1 + (int)(tu_rand(&seed) % 3);
        for (int f = 0; f < flips; f++)
            t[tu_rand(&seed) % b.len] ^= (uint8_t)(1u << (tu_rand(&seed) % 8));
        struct cairn_manifest d;
        int rc = cairn_manifest_decode(t, b.len, &d);
        if (rc == CAIRN_OK) {
            /* e.g. a flipped mode bit: still a valid manifest, and it must round-trip */
            accepted++;
            struct cairn_buf b2;
            struct cairn_manifest d2;
            encode(&d, &b2);
            assert_int_equal(cairn_manifest_decode(b2.data, b2.len, &d2), CAIRN_OK);
            assert_int_equal(d2.n, d.n);
            for (size_t k = 0; k < d.n; k++)
                assert_entries_equal(&d.entries[k], &d2.entries[k]);
            cairn_manifest_release(&d2);
            cairn_buf_release(&b2);
        } else {
            assert_true(rc == CAIRN_ECORRUPT || rc == CAIRN_EVERSION);
            assert_int_equal(d.n, 0);
            assert_true(strlen(cairn_err_msg()) > 0);
        }
        cairn_manifest_release(&d);
        free(t);
    }
    cairn_buf_release(&b);
    print_message("mutations accepted as valid manifests: %d of 3000\n", accepted);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_cmp),
        cmocka_unit_test(test_path_validate),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_bad_paths),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_links_and_parents),
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_raw_encodings),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_garbage_and_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
