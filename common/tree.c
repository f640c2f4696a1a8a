/*
 * tree.c: the parts of tree.h shared by capture and materialize: storing and
 * loading a manifest as chunks, listing a tree's chunks, and the safe directory
 * primitives of tree_internal.h (directory chains, name lists, recursive
 * delete with *at calls). Capture is in tree_capture.c, materialize in
 * tree_materialize.c.
 *
 * A stored manifest is its msgpack encoding cut with the same FastCDC chunker
 * as file data (cairn_chunker_cut over the whole buffer) and stored as chunks of
 * the tree's domain, so two captures of similar trees share most manifest
 * chunks. The reference (struct cairn_tree_ref) is the chunk list and the total
 * length; loading checks the lengths add up before decoding the (hostile)
 * bytes.
 */
#include "cairn/tree.h"

#include "cairn/alloc.h"
#include "cairn/chunker.h"
#include "cairn/err.h"
#include "tree_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <unistd.h>

/* A manifest larger than this is refused when loading (about 5M entries). */
#define MANIFEST_MAX_BYTES (1ull << 30)

void cairn_tree_ref_release(struct cairn_tree_ref *ref)
{
    if (!ref)
        return;
    CAIRN_FREE(ref->chunks);
    ref->n_chunks = 0;
    ref->manifest_len = 0;
}

int cairn_manifest_store(struct cairn_store *s, struct cairn_codec *c, const struct cairn_domain *d,
                         const struct cairn_manifest *m, struct cairn_tree_ref *out,
                         struct cairn_tree_stats *st)
{
    int rc;
    struct cairn_buf b;
    struct cairn_piece *chunks = NULL;
    size_t n = 0, cap = 0;
    memset(out, 0, sizeof(*out));
    cairn_buf_init(&b, SIZE_MAX);
    rc = cairn_manifest_encode(m, &b);
    if (rc != CAIRN_OK)
        goto out;
    if (b.len > MANIFEST_MAX_BYTES) {
        rc = cairn_err_set(CAIRN_ETOOBIG, "manifest of %zu entries encodes to %zu bytes (at most %llu)", m->n,
                           b.len, MANIFEST_MAX_BYTES);
        goto out;
    }
    for (size_t off = 0; off < b.len;) {
        size_t len = cairn_chunker_cut(b.data + off, b.len - off, true);
        if (len == 0 || len > b.len - off) {
            rc = cairn_err_set(CAIRN_EINTERNAL, "chunker returned %zu at offset %zu of the manifest", len, off);
            goto out;
        }
        void *arr = chunks;
        rc = cairn_array_grow(&arr, &cap, n + 1, sizeof(*chunks));
        if (rc != CAIRN_OK)
            goto out;
        chunks = arr;
        struct cairn_piece *p = &chunks[n];
        memset(p, 0, sizeof(*p));
        struct cairn_put_result res = {0};
        rc = cairn_store_put_chunk(s, c, d, b.data + off, len, p->id, &res);
        if (rc != CAIRN_OK)
            goto out;
        p->len = (uint32_t)len;
        n++;
        off += len;
        if (st && res.was_new) {
            st->chunks_new++;
            st->stored_bytes += res.stored_len;
        }
    }
    out->chunks = chunks;
    out->n_chunks = (uint32_t)n;
    out->manifest_len = b.len;
    chunks = NULL;
out:
    cairn_free(chunks);
    cairn_buf_release(&b);
    return rc;
}

int cairn_manifest_load(struct cairn_store *s, struct cairn_codec *c, const struct cairn_domain *d,
                        const struct cairn_tree_ref *ref, struct cairn_manifest *m)
{
    int rc = CAIRN_OK;
    uint8_t *data = NULL;
    cairn_manifest_init(m);
    if (ref->manifest_len == 0 || ref->manifest_len > MANIFEST_MAX_BYTES)
        return cairn_err_set(ref->manifest_len ? CAIRN_ETOOBIG : CAIRN_ECORRUPT,
                             "tree reference: manifest length %llu out of range (1..%llu)",
                             (unsigned long long)ref->manifest_len, MANIFEST_MAX_BYTES);
    if (ref->n_chunks == 0 || !ref->chunks)
        return cairn_err_set(CAIRN_ECORRUPT, "tree reference: no manifest chunks");
    uint64_t total = 0;
    for (uint32_t i = 0; i < ref->n_chunks; i++) {
        if (ref->chunks[i].hole || ref->chunks[i].len == 0 || ref->chunks[i].len > CAIRN_CODEC_MAX_PLAIN)
            return cairn_err_set(CAIRN_ECORRUPT, "tree reference: manifest chunk %u has a bad length %u", i,
                                 ref->chunks[i].len);
        total += ref->chunks[i].len;
    }
    if (total != ref->manifest_len)
        return cairn_err_set(CAIRN_ECORRUPT, "tree reference: manifest chunks add up to %llu bytes, expected %llu",
                             (unsigned long long)total, (unsigned long long)ref->manifest_len);
    data = cairn_malloc((size_t)total);
    if (!data)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for a manifest of %llu bytes", (unsigned long long)total);
    size_t off = 0;
    for (uint32_t i = 0; i < ref->n_chunks; i++) {
        size_t got = 0;
        rc = cairn_store_get_chunk(s, c, d, ref->chunks[i].id, data + off, (size_t)total - off, &got);
        if (rc != CAIRN_OK)
            goto out;
        if (got != ref->chunks[i].len) {
            char hex[2 * CAIRN_CHUNK_ID_BYTES + 1];
            cairn_hex_encode(hex, ref->chunks[i].id, CAIRN_CHUNK_ID_BYTES);
            rc = cairn_err_set(CAIRN_ECORRUPT, "manifest chunk %s has %zu bytes, the reference says %u", hex, got,
                               ref->chunks[i].len);
            goto out;
        }
        off += got;
    }
    rc = cairn_manifest_decode(data, (size_t)total, m);
out:
    cairn_free(data);
    return rc;
}

int cairn_tree_chunks(struct cairn_store *s, const struct cairn_domain *d, const struct cairn_tree_ref *ref,
                      int (*fn)(void *arg, const uint8_t id[CAIRN_CHUNK_ID_BYTES]), void *arg)
{
    struct cairn_codec *c = NULL;
    struct cairn_manifest m;
    cairn_manifest_init(&m);
    int rc = cairn_codec_new(&c, CAIRN_CODEC_DEFAULT_LEVEL);
    if (rc != CAIRN_OK)
        goto out;
    rc = cairn_manifest_load(s, c, d, ref, &m);
    if (rc != CAIRN_OK)
        goto out;
    for (uint32_t i = 0; i < ref->n_chunks; i++) {
        rc = fn(arg, ref->chunks[i].id);
        if (rc != CAIRN_OK)
            goto out;
    }
    for (size_t i = 0; i < m.n; i++) {
        const struct cairn_entry *e = &m.entries[i];
        if (e->type != CAIRN_ET_FILE)
            continue;
        for (uint32_t j = 0; j < e->n_pieces; j++) {
            if (e->pieces[j].hole)
                continue;
            rc = fn(arg, e->pieces[j].id);
            if (rc != CAIRN_OK)
                goto out;
        }
    }
out:
    cairn_manifest_release(&m);
    cairn_codec_destroy(&c);
    return rc;
}

/* ---- directory chains ---- */

static int chain_path_reserve(struct cairn__dirchain *c, size_t need)
{
    if (need + 1 <= c->path_cap)
        return 0;
    void *p = c->path;
    if (cairn_array_grow(&p, &c->path_cap, need + 1, 1) != CAIRN_OK)
        return ENOMEM;
    c->path = p;
    return 0;
}

int cairn__dirchain_init(struct cairn__dirchain *c, int rootfd, bool own_root)
{
    memset(c, 0, sizeof(*c));
    struct stat st;
    if (fstat(rootfd, &st) != 0)
        return errno;
    void *arr = NULL;
    if (cairn_array_grow(&arr, &c->cap, 16, sizeof(*c->lv)) != CAIRN_OK || chain_path_reserve(c, 255)) {
        cairn_free(arr);
        cairn_free(c->path);
        memset(c, 0, sizeof(*c));
        return ENOMEM;
    }
    c->lv = arr;
    c->lv[0] = (struct cairn__dirlevel){.fd = rootfd, .dev = st.st_dev, .ino = st.st_ino, .path_len = 0};
    c->path[0] = '\0';
    c->own_root = own_root;
    return 0;
}

void cairn__dirchain_release(struct cairn__dirchain *c)
{
    if (!c || !c->lv)
        return;
    for (size_t i = 1; i <= c->depth; i++)
        if (c->lv[i].fd >= 0)
            close(c->lv[i].fd);
    if (c->own_root && c->lv[0].fd >= 0)
        close(c->lv[0].fd);
    cairn_free(c->lv);
    cairn_free(c->path);
    memset(c, 0, sizeof(*c));
}

int cairn__dirchain_push_fd(struct cairn__dirchain *c, const char *name, size_t len, int fd, const struct stat *st)
{
    size_t sep = c->depth > 0 ? 1 : 0;
    void *arr = c->lv;
    if (cairn_array_grow(&arr, &c->cap, c->depth + 2, sizeof(*c->lv)) != CAIRN_OK ||
        chain_path_reserve(c, c->path_len + sep + len)) {
        close(fd);
        return ENOMEM;
    }
    c->lv = arr;
    if (sep)
        c->path[c->path_len++] = '/';
    memcpy(c->path + c->path_len, name, len);
    c->path_len += len;
    c->path[c->path_len] = '\0';
    c->depth++;
    c->lv[c->depth] = (struct cairn__dirlevel){.fd = fd, .dev = st->st_dev, .ino = st->st_ino,
                                               .path_len = c->path_len};
    if (c->depth > CAIRN__DIRCHAIN_WINDOW) {
        struct cairn__dirlevel *old = &c->lv[c->depth - CAIRN__DIRCHAIN_WINDOW];
        if (old->fd >= 0) {
            close(old->fd);
            old->fd = -1;
        }
    }
    return 0;
}

int cairn__dirchain_push(struct cairn__dirchain *c, const char *name, size_t len)
{
    char comp[256];
    if (len == 0 || len > 255)
        return ENAMETOOLONG;
    memcpy(comp, name, len);
    comp[len] = '\0';
    int fd = openat(cairn__dirchain_fd(c), comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return e;
    }
    if (!S_ISDIR(st.st_mode)) {
        close(fd);
        return ENOTDIR;
    }
    return cairn__dirchain_push_fd(c, comp, len, fd, &st);
}

int cairn__dirchain_pop(struct cairn__dirchain *c)
{
    if (c->depth == 0)
        return EINVAL;
    struct cairn__dirlevel *top = &c->lv[c->depth], *parent = &c->lv[c->depth - 1];
    int rc = 0;
    if (parent->fd < 0) {
        int fd = openat(top->fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        struct stat st;
        if (fd < 0) {
            rc = errno;
        } else if (fstat(fd, &st) != 0) {
            rc = errno;
            close(fd);
        } else if (st.st_dev != parent->dev || st.st_ino != parent->ino) {
            rc = ESTALE; /* the directory moved while we were below it */
            close(fd);
        } else {
            parent->fd = fd;
        }
    }
    if (rc != 0)
        return rc;
    close(top->fd);
    top->fd = -1;
    c->depth--;
    c->path_len = parent->path_len;
    c->path[c->path_len] = '\0';
    return 0;
}

/* Number of leading components a[0..alen) and b[0..blen) have in common. */
static size_t common_components(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n = 0, i = 0;
    for (;;) {
        bool aend = i == alen || a[i] == '/', bend = i == blen || b[i] == '/';
        if (aend || bend) {
            if (!(aend && bend) || i == 0)
                return n;
            n++;
            if (i == alen || i == blen)
                return n;
            i++;
            a += i;
            b += i;
            alen -= i;
            blen -= i;
            i = 0;
            continue;
        }
        if (a[i] != b[i])
            return n;
        i++;
    }
}

int cairn__dirchain_goto(struct cairn__dirchain *c, const char *dir, size_t len)
{
    size_t keep = common_components(c->path, c->path_len, dir, len);
    while (c->depth > keep) {
        int rc = cairn__dirchain_pop(c);
        if (rc)
            return rc;
    }
    /* skip the kept components of dir */
    size_t i = 0;
    for (size_t k = 0; k < keep; k++) {
        while (i < len && dir[i] != '/')
            i++;
        if (i < len)
            i++;
    }
    while (i < len) {
        size_t j = i;
        while (j < len && dir[j] != '/')
            j++;
        int rc = cairn__dirchain_push(c, dir + i, j - i);
        if (rc)
            return rc;
        i = j < len ? j + 1 : j;
    }
    return 0;
}

/* ---- name lists ---- */

void cairn__names_release(struct cairn__names *n)
{
    if (!n)
        return;
    cairn_free(n->buf);
    cairn_free(n->off);
    memset(n, 0, sizeof(*n));
}

int cairn__names_read(int dirfd, struct cairn__names *out)
{
    out->len = 0;
    out->n = 0;
    /* a new open file description: the caller's fd offset stays untouched */
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    DIR *dir = fdopendir(fd);
    if (!dir) {
        int e = errno;
        close(fd);
        return e;
    }
    int rc = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(dir);
        if (!de) {
            rc = errno;
            break;
        }
        const char *nm = de->d_name;
        if (nm[0] == '.' && (nm[1] == '\0' || (nm[1] == '.' && nm[2] == '\0')))
            continue;
        size_t l = strlen(nm) + 1;
        void *b = out->buf, *o = out->off;
        if (cairn_array_grow(&b, &out->cap, out->len + l, 1) != CAIRN_OK) {
            rc = ENOMEM;
            break;
        }
        out->buf = b;
        if (cairn_array_grow(&o, &out->off_cap, out->n + 1, sizeof(size_t)) != CAIRN_OK) {
            rc = ENOMEM;
            break;
        }
        out->off = o;
        memcpy(out->buf + out->len, nm, l);
        out->off[out->n++] = out->len;
        out->len += l;
    }
    closedir(dir);
    return rc;
}

/* ---- recursive delete ---- */

int cairn__dir_empty(int dirfd)
{
    struct cairn__dirchain c;
    struct cairn__names *lv = NULL; /* one name list per chain level */
    size_t *next = NULL;
    size_t lv_cap = 0, next_cap = 0;
    int rc = cairn__dirchain_init(&c, dirfd, false);
    if (rc)
        return rc;
    void *a = NULL, *b = NULL;
    if (cairn_array_grow(&a, &lv_cap, 1, sizeof(*lv)) != CAIRN_OK ||
        cairn_array_grow(&b, &next_cap, 1, sizeof(*next)) != CAIRN_OK) {
        cairn_free(a);
        cairn_free(b);
        cairn__dirchain_release(&c);
        return ENOMEM;
    }
    lv = a;
    next = b;
    memset(&lv[0], 0, sizeof(lv[0]));
    next[0] = 0;
    rc = cairn__names_read(cairn__dirchain_fd(&c), &lv[0]);
    while (rc == 0) {
        size_t d = c.depth;
        if (next[d] < lv[d].n) {
            const char *name = cairn__names_at(&lv[d], next[d]++);
            int fd = cairn__dirchain_fd(&c);
            if (unlinkat(fd, name, 0) == 0 || errno == ENOENT)
                continue;
            if (errno != EISDIR) {
                rc = errno;
                break;
            }
            rc = cairn__dirchain_push(&c, name, strlen(name));
            if (rc)
                break;
            a = lv;
            b = next;
            size_t la = lv_cap, nb = next_cap;
            if (cairn_array_grow(&a, &la, c.depth + 1, sizeof(*lv)) != CAIRN_OK ||
                cairn_array_grow(&b, &nb, c.depth + 1, sizeof(*next)) != CAIRN_OK) {
                lv = a;
                lv_cap = la;
                next = b;
                next_cap = nb;
                rc = ENOMEM;
                break;
            }
            lv = a;
            lv_cap = la;
            next = b;
            next_cap = nb;
            /* grown arrays are uninitialised beyond the old size */
            memset(&lv[c.depth], 0, sizeof(lv[0]));
            next[c.depth] = 0;
            rc = cairn__names_read(cairn__dirchain_fd(&c), &lv[c.depth]);
            continue;
        }
        /* level d is empty now */
        cairn__names_release(&lv[d]);
        if (d == 0)
            break;
        char name[256];
        size_t start = c.lv[d - 1].path_len + (d > 1 ? 1 : 0);
        size_t nlen = c.path_len - start;
        memcpy(name, c.path + start, nlen);
        name[nlen] = '\0';
        rc = cairn__dirchain_pop(&c);
        if (rc)
            break;
        if (unlinkat(cairn__dirchain_fd(&c), name, AT_REMOVEDIR) != 0 && errno != ENOENT)
            rc = errno;
    }
    for (size_t i = 0; i <= c.depth && i < lv_cap; i++)
        cairn__names_release(&lv[i]);
    cairn_free(lv);
    cairn_free(next);
    cairn__dirchain_release(&c);
    return rc;
}

int cairn__remove_at(int dirfd, const char *name)
{
    if (unlinkat(dirfd, name, 0) == 0)
        return 0;
    if (errno != EISDIR)
        return errno;
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno;
    int rc = cairn__dir_empty(fd);
    close(fd);
    if (rc)
        return rc;
    if (unlinkat(dirfd, name, AT_REMOVEDIR) != 0)
        return errno;
    return 0;
}

/* ---- exclude lists ---- */

int cairn__excl_init(struct cairn__excl *x, const struct cairn_tree_opts *o, const char *who)
{
    x->v = NULL;
    x->n = 0;
    if (!o || !o->exclude || o->n_exclude == 0)
        return CAIRN_OK;
    x->v = cairn_calloc(o->n_exclude, sizeof(char *));
    if (!x->v)
        return cairn_err_set(CAIRN_ENOMEM, "%s: out of memory for excludes", who);
    for (size_t i = 0; i < o->n_exclude; i++) {
        const char *e = o->exclude[i];
        if (!e)
            continue;
        while (e[0] == '.' && e[1] == '/')
            e += 2;
        while (*e == '/')
            e++;
        size_t l = strlen(e);
        while (l > 0 && e[l - 1] == '/')
            l--;
        if (l == 0)
            continue;
        x->v[x->n] = cairn_strndup(e, l);
        if (!x->v[x->n])
            return cairn_err_set(CAIRN_ENOMEM, "%s: out of memory for excludes", who);
        x->n++;
    }
    return CAIRN_OK;
}

bool cairn__excl_match(const struct cairn__excl *x, const char *p, size_t len)
{
    for (size_t i = 0; i < x->n; i++) {
        size_t xl = strlen(x->v[i]);
        if (xl <= len && memcmp(x->v[i], p, xl) == 0 && (xl == len || p[xl] == '/'))
            return true;
    }
    return false;
}

void cairn__excl_release(struct cairn__excl *x)
{
    for (size_t i = 0; i < x->n; i++)
        cairn_free(x->v[i]);
    CAIRN_FREE(x->v);
    x->n = 0;
}
