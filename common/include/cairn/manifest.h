/*
 * manifest.h: the tree manifest (DESIGN §3): every entry of a directory tree or
 * overlay diff, sorted by path, with metadata and the chunk list of file data.
 *
 * Paths are relative, '/'-separated byte strings (any byte but NUL; not valid
 * UTF-8 necessarily). A valid path is non-empty, has no leading or trailing '/',
 * no empty, "." or ".." components, components of at most 255 bytes, and is at
 * most CAIRN_PATH_MAX bytes. The root directory itself is the entry with path "."
 * (optional; carries the root's metadata).
 *
 * Order: entries are strictly increasing under cairn_path_cmp, which compares
 * component by component (byte-wise; equivalently '/' sorts before every other
 * byte), so a directory comes right before its contents and duplicates are
 * impossible. "." sorts first.
 *
 * Encoding (msgpack, see mp.h):
 *   map { "v": 1, "entries": [ entry... ] }
 *   entry = array [ path(bin), type(uint), flags(uint), mode(uint), uid(uint), gid(uint),
 *                   mtime_ns(int), size(uint), rdev(uint), target(bin|nil),
 *                   xattrs: array [ [name(bin), value(bin)]... ],
 *                   pieces: array [ [chunk_id(bin 32) | nil for a hole, len(uint)]... ] ]
 * Unknown top-level map keys are skipped (forward compatibility); a version other
 * than 1 is CAIRN_EVERSION.
 *
 * The decoder is for hostile input: it validates every path (and hardlink target),
 * the order, types, bounds and that the pieces of a file add up to its size, and
 * returns CAIRN_ECORRUPT with a message naming the entry index and what was wrong.
 */
#ifndef CAIRN_MANIFEST_H
#define CAIRN_MANIFEST_H

#include "cairn/bytes.h"
#include "cairn/crypto.h"

#define CAIRN_PATH_MAX (64u * 1024u)
#define CAIRN_NAME_MAX 255u
#define CAIRN_XATTR_NAME_MAX 255u
#define CAIRN_XATTR_VALUE_MAX (64u * 1024u)
#define CAIRN_XATTRS_MAX 1024u
#define CAIRN_MANIFEST_VERSION 1

enum cairn_entry_type {
    CAIRN_ET_FILE = 1,
    CAIRN_ET_DIR = 2,
    CAIRN_ET_SYMLINK = 3,
    CAIRN_ET_HARDLINK = 4, /* target = path of an earlier CAIRN_ET_FILE entry */
    CAIRN_ET_CHR = 5,
    CAIRN_ET_BLK = 6,
    CAIRN_ET_FIFO = 7,
    CAIRN_ET_WHITEOUT = 8, /* overlay deletion marker */
};

enum cairn_entry_flags {
    CAIRN_EF_OPAQUE = 1 << 0, /* dir: overlay opaque (hides the lower dir's contents) */
};

struct cairn_xattr {
    char *name;     /* owned, NUL-terminated */
    uint8_t *value; /* owned */
    uint32_t len;
};

struct cairn_piece {
    uint8_t id[CAIRN_CHUNK_ID_BYTES];
    uint32_t len;
    bool hole; /* a sparse hole of len bytes: no chunk, id unused */
};

struct cairn_entry {
    char *path;      /* owned, NUL-terminated */
    uint8_t type;    /* enum cairn_entry_type */
    uint8_t flags;   /* enum cairn_entry_flags */
    uint32_t mode;   /* permission bits incl. suid/sgid/sticky (07777) */
    uint32_t uid, gid;
    int64_t mtime_ns;
    uint64_t size;   /* file size in bytes (files); 0 otherwise */
    uint64_t rdev;   /* devices */
    char *target;    /* owned; symlink target (any bytes) or hardlink target path; NULL otherwise */
    struct cairn_xattr *xattrs; /* owned */
    uint32_t n_xattrs;
    struct cairn_piece *pieces; /* owned; files only; lens add up to size */
    uint32_t n_pieces;
    uint32_t cap_pieces;
};

struct cairn_manifest {
    struct cairn_entry *entries; /* owned */
    size_t n, cap;
};

void cairn_manifest_init(struct cairn_manifest *m);
void cairn_manifest_release(struct cairn_manifest *m); /* frees everything; NULL-safe fields */
void cairn_entry_release(struct cairn_entry *e);
/* Append a zeroed entry; returns a pointer valid until the next append. NULL on ENOMEM. */
struct cairn_entry *cairn_manifest_add(struct cairn_manifest *m);
/* Append a piece to a file entry. */
int cairn_entry_add_piece(struct cairn_entry *e, const uint8_t *id, uint32_t len, bool hole);
/* Sort entries by cairn_path_cmp (capture produces them in walk order). */
void cairn_manifest_sort(struct cairn_manifest *m);

/* <0, 0, >0 comparing component-wise, byte-wise. */
int cairn_path_cmp(const char *a, const char *b);
/* CAIRN_OK or CAIRN_ECORRUPT with a message saying why. "." is valid (the root). */
int cairn_path_validate(const char *path, size_t len);

/* Encode (entries must be sorted). CAIRN_ENOMEM. */
int cairn_manifest_encode(const struct cairn_manifest *m, struct cairn_buf *out);
/* Decode and validate; on failure m is left empty. */
int cairn_manifest_decode(const uint8_t *data, size_t len, struct cairn_manifest *m);

#endif
