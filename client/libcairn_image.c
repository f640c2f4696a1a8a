/*
 * libcairn_image.c: the image calls of libcairn (cairn/cairn.h "images"):
 * import (upload + job), ls, show, rm, and name resolution.
 *
 * Import (docs/internals/sandboxes.md "Records", "Jobs")
 *   - The upload is a byte stream cut into image.import pieces of one raw
 *     frame each. A piece goes at the offset the coordinator has received so
 *     far; the reply says how much it has now. A piece whose reply does not
 *     come back in time is sent again unchanged: the coordinator acknowledges
 *     a repeated piece, so a retry never duplicates bytes. Pieces go one at a
 *     time (8 MiB per round trip is enough to keep loopback and a LAN busy,
 *     and it keeps the retry rule trivial).
 *   - A regular file is sent as it is, with its size on the first piece.
 *   - A directory is turned into a tar on the fly: libarchive reads the tree
 *     (archive_read_disk: symlinks not followed, xattrs and sparse maps read,
 *     no ACLs or file flags, no user/group name lookup so only numeric owners
 *     go out) and writes pax (nanosecond mtimes, xattrs, sparse files as
 *     holes); hard links are found with libarchive's link resolver. The
 *     writer's output lands in a buffer; whenever it holds more than a piece,
 *     one piece goes out, so memory stays at about one piece whatever the
 *     tree's size, and the final piece (marked last) is whatever is left when
 *     the archive is closed. Its total size is not known in advance.
 *   - Then the import job is long-polled (job.get) to its end; its result
 *     carries the image id.
 */
#include "cairn/cairn.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "client_int.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define PIECE_MAX (16u << 20) /* CAIRN_PROTO_MAX_FRAME */
#define PIECE_RETRIES 5

/* ---- upload ---------------------------------------------------------------------------------- */

struct upload {
    struct cairn_client *c;
    char id[CAIRN_ID_MAX + 1];
    const char *name;
    const char *path; /* for messages */
    uint64_t offset;  /* bytes the coordinator has */
    uint64_t total;   /* 0: unknown */
    size_t piece;
    cairn_progress_fn progress;
    void *progress_arg;
    struct cairn_msg *last_reply; /* the reply to the last piece (carries the job) */
    struct cairn_buf buf;         /* tar bytes not sent yet (directories) */
    int rc;                       /* first error inside a libarchive callback */
    char err[1100];
};

/* Send one piece (retried on ETIMEDOUT/EAGAIN); on success the offset moves past it. */
static int piece_send(struct upload *u, const uint8_t *p, size_t n, bool last)
{
    int rc = CAIRN_OK;
    for (int attempt = 0;; attempt++) {
        struct cairn_msg *m = cairn__msg_new(CAIRN_MSG_IMAGE_IMPORT), *rep = NULL;
        if (!m)
            return CAIRN_ENOMEM;
        rc = cairn__auth_app(u->c, m, "image import");
        if (rc != CAIRN_OK) {
            cairn_msg_destroy(&m);
            return rc;
        }
        cairn_msg_set_str(m, "upload", u->id);
        cairn_msg_set_u64(m, "offset", u->offset);
        cairn_msg_set_bool(m, "last", last);
        if (u->offset == 0) {
            if (u->total)
                cairn_msg_set_u64(m, "size", u->total);
            if (u->name)
                cairn_msg_set_str(m, "name", u->name);
        }
        cairn_msg_add_frame(m, p, n);
        rc = cairn__call(u->c, &m, 0, &rep);
        if (rc == CAIRN_OK) {
            uint64_t received = 0;
            if (cairn_msg_get_u64(rep, "received", &received) != CAIRN_OK || received != u->offset + n) {
                rc = cairn_err_set(CAIRN_EPROTO,
                                   "image import of '%s': the coordinator has %" PRIu64 " bytes after the piece at "
                                   "offset %" PRIu64 " of %zu bytes",
                                   u->path, received, u->offset, n);
                cairn_msg_destroy(&rep);
                return rc;
            }
            u->offset = received;
            if (last)
                u->last_reply = rep;
            else
                cairn_msg_destroy(&rep);
            if (u->progress)
                u->progress(u->progress_arg, "upload", u->offset, u->total);
            return CAIRN_OK;
        }
        if ((rc != CAIRN_ETIMEDOUT && rc != CAIRN_EAGAIN) || attempt >= PIECE_RETRIES)
            break;
        if (rc == CAIRN_EAGAIN)
            usleep(200000u * (unsigned)(attempt + 1));
    }
    char d[1024];
    snprintf(d, sizeof(d), "%s", cairn_err_msg());
    return cairn_err_set(rc, "image import of '%s', piece at offset %" PRIu64 ": %s", u->path, u->offset, d);
}

/* A regular file (or anything readable as a stream), sent as it is. */
static int upload_file(struct upload *u, int fd)
{
    uint8_t *buf = cairn_malloc(u->piece);
    if (!buf)
        return cairn_err_set(CAIRN_ENOMEM, "image import: out of memory for a piece of %zu bytes", u->piece);
    int rc = CAIRN_OK;
    size_t have = 0;
    bool eof = false;
    /* read ahead one byte past a full piece is not possible with read(); so a
     * full piece is only sent once the next read shows whether more follows */
    uint8_t next = 0;
    bool has_next = false;
    while (!eof) {
        have = 0;
        if (has_next) {
            buf[have++] = next;
            has_next = false;
        }
        while (have < u->piece) {
            ssize_t r = read(fd, buf + have, u->piece - have);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                rc = cairn_err_set_errno(CAIRN_EIO, errno, "image import: cannot read '%s'", u->path);
                goto out;
            }
            if (r == 0) {
                eof = true;
                break;
            }
            have += (size_t)r;
        }
        if (!eof) {
            ssize_t r;
            do
                r = read(fd, &next, 1);
            while (r < 0 && errno == EINTR);
            if (r < 0) {
                rc = cairn_err_set_errno(CAIRN_EIO, errno, "image import: cannot read '%s'", u->path);
                goto out;
            }
            if (r == 0)
                eof = true;
            else
                has_next = true;
        }
        rc = piece_send(u, buf, have, eof);
        if (rc != CAIRN_OK)
            goto out;
    }
out:
    cairn_free(buf);
    return rc;
}

/* libarchive write callback: buffer, and send every full piece but the last. */
static la_ssize_t tar_write_cb(struct archive *a, void *arg, const void *p, size_t n)
{
    (void)a;
    struct upload *u = arg;
    if (u->rc != CAIRN_OK)
        return -1;
    int rc = cairn_buf_append(&u->buf, p, n);
    while (rc == CAIRN_OK && u->buf.len > u->piece) {
        rc = piece_send(u, u->buf.data, u->piece, false);
        if (rc == CAIRN_OK) {
            memmove(u->buf.data, u->buf.data + u->piece, u->buf.len - u->piece);
            u->buf.len -= u->piece;
        }
    }
    if (rc != CAIRN_OK) {
        u->rc = rc;
        snprintf(u->err, sizeof(u->err), "%s", cairn_err_msg());
        return -1;
    }
    return (la_ssize_t)n;
}

/* The name of an entry inside the tar: relative to the root directory, "." for the root itself. */
static const char *rel_name(const char *full, const char *root, size_t rootlen)
{
    if (strncmp(full, root, rootlen) != 0)
        return NULL;
    const char *r = full + rootlen;
    if (*r == '\0')
        return ".";
    if (rootlen && root[rootlen - 1] == '/')
        return r;
    return *r == '/' ? r + 1 : NULL;
}

/* Copy a file's data from the disk reader to the writer; holes are written as zeros the pax writer skips. */
static int tar_copy_data(struct upload *u, struct archive *disk, struct archive *w, const char *name)
{
    static const uint8_t zeros[65536];
    int64_t done = 0;
    for (;;) {
        const void *buf = NULL;
        size_t len = 0;
        la_int64_t off = 0;
        int r = archive_read_data_block(disk, &buf, &len, &off);
        if (r == ARCHIVE_EOF)
            return CAIRN_OK;
        if (r < ARCHIVE_WARN)
            return cairn_err_set(CAIRN_EIO, "image import: cannot read '%s/%s': %s", u->path, name,
                                 archive_error_string(disk));
        while (off > done) {
            size_t z = (size_t)CAIRN_MIN((int64_t)sizeof(zeros), off - done);
            if (archive_write_data(w, zeros, z) < 0)
                goto werr;
            done += (int64_t)z;
        }
        if (len && archive_write_data(w, buf, len) < 0)
            goto werr;
        done += (int64_t)len;
    }
werr:
    if (u->rc != CAIRN_OK)
        return cairn_err_set(u->rc, "%s", u->err);
    return cairn_err_set(CAIRN_EIO, "image import: cannot write '%s' into the tar stream: %s", name,
                         archive_error_string(w));
}

static int upload_dir(struct upload *u)
{
    int rc = CAIRN_OK;
    struct archive *disk = archive_read_disk_new();
    struct archive *w = archive_write_new();
    struct archive_entry *e = archive_entry_new();
    struct archive_entry_linkresolver *links = archive_entry_linkresolver_new();
    char *root = cairn_strdup(u->path);
    if (!disk || !w || !e || !links || !root) {
        rc = cairn_err_set(CAIRN_ENOMEM, "image import: out of memory");
        goto out;
    }
    size_t rootlen = strlen(root);
    while (rootlen > 1 && root[rootlen - 1] == '/')
        root[--rootlen] = '\0';
    archive_entry_linkresolver_set_strategy(links, ARCHIVE_FORMAT_TAR_PAX_INTERCHANGE);
    if (archive_read_disk_set_symlink_physical(disk) != ARCHIVE_OK ||
        archive_read_disk_set_behavior(disk, ARCHIVE_READDISK_NO_ACL | ARCHIVE_READDISK_NO_FFLAGS) != ARCHIVE_OK ||
        archive_write_set_format_pax(w) != ARCHIVE_OK || archive_write_add_filter_none(w) != ARCHIVE_OK ||
        archive_write_set_bytes_in_last_block(w, 1) != ARCHIVE_OK) {
        rc = cairn_err_set(CAIRN_EINTERNAL, "image import: libarchive setup: %s",
                           archive_error_string(disk) ? archive_error_string(disk) : archive_error_string(w));
        goto out;
    }
    if (archive_write_open2(w, u, NULL, tar_write_cb, NULL, NULL) != ARCHIVE_OK) {
        rc = cairn_err_set(CAIRN_EINTERNAL, "image import: cannot start the tar stream: %s", archive_error_string(w));
        goto out;
    }
    if (archive_read_disk_open(disk, root) != ARCHIVE_OK) {
        rc = cairn_err_set(CAIRN_EIO, "image import: cannot open directory '%s': %s", u->path,
                           archive_error_string(disk));
        goto out;
    }
    for (;;) {
        archive_entry_clear(e);
        int r = archive_read_next_header2(disk, e);
        if (r == ARCHIVE_EOF)
            break;
        if (r < ARCHIVE_WARN) {
            rc = cairn_err_set(CAIRN_EIO, "image import: cannot read below '%s': %s", u->path,
                               archive_error_string(disk));
            goto out;
        }
        /* unreadable xattrs and the like are warnings: the entry still goes in */
        if (archive_entry_filetype(e) == AE_IFDIR)
            archive_read_disk_descend(disk);
        const char *full = archive_entry_pathname(e);
        const char *rel = full ? rel_name(full, root, rootlen) : NULL;
        if (!rel) {
            rc = cairn_err_set(CAIRN_EINTERNAL, "image import: entry '%.200s' is not below '%s'", full ? full : "?",
                               u->path);
            goto out;
        }
        char *name = cairn_strdup(rel);
        if (!name) {
            rc = cairn_err_set(CAIRN_ENOMEM, "image import: out of memory");
            goto out;
        }
        archive_entry_copy_pathname(e, name);
        archive_entry_set_uname(e, NULL);
        archive_entry_set_gname(e, NULL);
        archive_entry_unset_atime(e);
        archive_entry_unset_ctime(e);
        archive_entry_unset_birthtime(e);
        if (archive_entry_filetype(e) == AE_IFSOCK) { /* tar has no sockets */
            cairn_free(name);
            continue;
        }
        struct archive_entry *out_e = e, *spare = NULL;
        archive_entry_linkify(links, &out_e, &spare);
        bool has_data = out_e && archive_entry_filetype(out_e) == AE_IFREG && !archive_entry_hardlink(out_e) &&
                        archive_entry_size(out_e) > 0;
        if (out_e) {
            r = archive_write_header(w, out_e);
            if (r < ARCHIVE_WARN) {
                if (u->rc != CAIRN_OK)
                    rc = cairn_err_set(u->rc, "%s", u->err);
                else
                    rc = cairn_err_set(CAIRN_EIO, "image import: cannot add '%s': %s", name, archive_error_string(w));
                cairn_free(name);
                goto out;
            }
            if (has_data)
                rc = tar_copy_data(u, disk, w, name);
        }
        cairn_free(name);
        if (rc != CAIRN_OK)
            goto out;
    }
    if (archive_write_close(w) != ARCHIVE_OK) {
        if (u->rc != CAIRN_OK)
            rc = cairn_err_set(u->rc, "%s", u->err);
        else
            rc = cairn_err_set(CAIRN_EIO, "image import: cannot finish the tar stream: %s", archive_error_string(w));
        goto out;
    }
    rc = piece_send(u, u->buf.data ? u->buf.data : (const uint8_t *)"", u->buf.len, true);
out:
    if (links)
        archive_entry_linkresolver_free(links);
    if (e)
        archive_entry_free(e);
    if (disk)
        archive_read_free(disk);
    if (w)
        archive_write_free(w);
    cairn_free(root);
    return rc;
}

static int image_import(struct cairn_client *c, const char *path, const struct cairn_image_import_opts *o,
                        struct cairn_image_import_result *out)
{
    struct upload u;
    memset(&u, 0, sizeof(u));
    u.c = c;
    u.path = path;
    u.name = o && o->name ? o->name : NULL;
    u.piece = o && o->piece_size ? o->piece_size : CAIRN_IMPORT_PIECE;
    u.progress = o ? o->progress : NULL;
    u.progress_arg = o ? o->progress_arg : NULL;
    cairn_buf_init(&u.buf, 0);
    struct cairn_job *j = NULL;
    struct cairn_msg *final = NULL;
    int fd = -1;
    int rc = CAIRN_OK;

    if (!path || !*path)
        return cairn_err_set(CAIRN_EINVAL, "image import: no path given");
    if (u.piece > PIECE_MAX)
        return cairn_err_set(CAIRN_EINVAL, "image import: pieces are at most %u bytes (asked %zu)", PIECE_MAX, u.piece);
    if (u.name && strlen(u.name) > 128)
        return cairn_err_set(CAIRN_EINVAL, "image import: a name is at most 128 bytes");
    if (o && o->upload_id) {
        if (!*o->upload_id || strlen(o->upload_id) > CAIRN_ID_MAX)
            return cairn_err_set(CAIRN_EINVAL, "image import: an upload id is 1..%d bytes", CAIRN_ID_MAX);
        snprintf(u.id, sizeof(u.id), "%s", o->upload_id);
    } else {
        cairn__gen_id(u.id, "up-");
    }
    struct stat st;
    if (stat(path, &st) != 0)
        return cairn_err_set_errno(errno == ENOENT || errno == ENOTDIR ? CAIRN_ENOTFOUND
                                   : errno == EACCES                    ? CAIRN_EPERM
                                                                        : CAIRN_EIO,
                                   errno, "image import: '%s'", path);
    if (S_ISDIR(st.st_mode)) {
        rc = upload_dir(&u);
    } else if (S_ISREG(st.st_mode)) {
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            rc = cairn_err_set_errno(errno == EACCES ? CAIRN_EPERM : CAIRN_EIO, errno, "image import: cannot open '%s'",
                                     path);
            goto out;
        }
        u.total = (uint64_t)st.st_size;
        rc = upload_file(&u, fd);
    } else {
        rc = cairn_err_set(CAIRN_EINVAL, "image import: '%s' is neither a directory nor a regular file (a tarball)",
                           path);
    }
    if (rc != CAIRN_OK)
        goto out;
    if (!u.last_reply) {
        rc = cairn_err_set(CAIRN_EPROTO, "image import of '%s': no reply to the last piece", path);
        goto out;
    }
    rc = cairn__job_from_reply(u.last_reply, &j);
    if (rc != CAIRN_OK) {
        char d[1024];
        snprintf(d, sizeof(d), "%s", cairn_err_msg());
        rc = cairn_err_set(rc, "image import of '%s': the reply to the last piece carries no job: %s", path, d);
        goto out;
    }
    if (!cairn_job_finished(j)) {
        /* wait for the import job with job.get polls */
        struct cairn_msg *get = cairn__msg_new(CAIRN_MSG_JOB_GET);
        if (!get) {
            rc = CAIRN_ENOMEM;
            goto out;
        }
        rc = cairn__auth_app(c, get, "image import");
        if (rc != CAIRN_OK) {
            cairn_msg_destroy(&get);
            goto out;
        }
        cairn_msg_set_str(get, "job", j->id);
        cairn_msg_set_u64(get, "wait_ms", u.progress ? 1000 : 600000);
        cairn_job_free(&j);
        rc = cairn__job_run(c, &get, u.progress ? 1000 : 600000, "import", u.progress, u.progress_arg, &j, &final);
        if (rc != CAIRN_OK)
            goto out;
    }
    const struct cairn_msg *res_msg = final ? final : u.last_reply;
    rc = cairn__job_err(j, "image import");
    if (rc != CAIRN_OK)
        goto out;
    const struct cairn_mval *res = cairn_msg_get(res_msg, "result");
    cairn__copy_str(res ? cairn_mval_get(res, "id") : NULL, out->id, sizeof(out->id));
    if (!out->id[0])
        cairn__copy_str(res ? cairn_mval_get(res, "image") : NULL, out->id, sizeof(out->id));
    if (!out->id[0]) {
        rc = cairn_err_set(CAIRN_EPROTO, "image import: job %s succeeded without an image id in its result", j->id);
        goto out;
    }
    snprintf(out->job, sizeof(out->job), "%s", j->id);
    out->bytes = u.offset;
out:
    if (fd >= 0)
        close(fd);
    cairn_buf_release(&u.buf);
    cairn_msg_destroy(&u.last_reply);
    cairn_msg_destroy(&final);
    cairn_job_free(&j);
    return rc;
}

int cairn_image_import(struct cairn_client *c, const char *path, const struct cairn_image_import_opts *opts,
                       struct cairn_image_import_result *out)
{
    memset(out, 0, sizeof(*out));
    return cairn__keep_err(c, image_import(c, path, opts, out));
}

/* ---- ls, show, rm, resolve ------------------------------------------------------------------- */

static void image_from_rec(const struct cairn_mval *r, struct cairn_image_info *im)
{
    memset(im, 0, sizeof(*im));
    cairn__copy_str(cairn_mval_get(r, "id"), im->id, sizeof(im->id));
    cairn__copy_str(cairn_mval_get(r, "kind"), im->kind, sizeof(im->kind));
    cairn__copy_str(cairn_mval_get(r, "parent"), im->parent, sizeof(im->parent));
    cairn__copy_str(cairn_mval_get(r, "name"), im->name, sizeof(im->name));
    cairn__copy_str(cairn_mval_get(r, "encryption"), im->encryption, sizeof(im->encryption));
    cairn__copy_str(cairn_mval_get(r, "retention"), im->retention, sizeof(im->retention));
    im->created_at_ns = (int64_t)cairn__get_u64(cairn_mval_get(r, "created_at"));
    im->last_used_at_ns = (int64_t)cairn__get_u64(cairn_mval_get(r, "last_used_at"));
    im->expires_at_ns = (int64_t)cairn__get_u64(cairn_mval_get(r, "expires_at"));
    im->size = cairn__get_u64(cairn_mval_get(r, "size"));
    im->files = cairn__get_u64(cairn_mval_get(r, "files"));
    im->stored = cairn__get_u64(cairn_mval_get(r, "stored"));
}

static int check_id(const char *what, const char *id)
{
    if (!id || !*id || strlen(id) > CAIRN_ID_MAX)
        return cairn_err_set(CAIRN_EINVAL, "%s: an id is 1..%d bytes (got '%.80s')", what, CAIRN_ID_MAX, id ? id : "");
    return CAIRN_OK;
}

void cairn_image_list_free(struct cairn_image_list **l)
{
    if (!l || !*l)
        return;
    cairn_free((*l)->images);
    cairn_free(*l);
    *l = NULL;
}

struct image_pages {
    struct cairn_image_list *l;
    size_t cap;
};

static int image_page(void *arg, const struct cairn_mval *arr, size_t n)
{
    struct image_pages *p = arg;
    struct cairn_image_list *l = p->l;
    if (n && cairn_array_grow((void **)&l->images, &p->cap, l->n + n, sizeof(*l->images)) != CAIRN_OK)
        return cairn_err_set(CAIRN_ENOMEM, "image ls: out of memory for %zu images", l->n + n);
    for (size_t i = 0; i < n; i++)
        image_from_rec(cairn_mval_at(arr, i), &l->images[l->n++]);
    return CAIRN_OK;
}

static int image_ls(struct cairn_client *c, const char *kind, struct cairn_image_list **out)
{
    struct image_pages p = {.l = cairn_calloc(1, sizeof(*p.l))};
    if (!p.l)
        return cairn_err_set(CAIRN_ENOMEM, "image ls: out of memory");
    const struct cairn__ls_filter filter = {.str_key = "kind", .str_val = kind};
    int rc = cairn__ls_pages(c, CAIRN_MSG_IMAGE_LS, "image ls", "images", &filter, image_page, &p);
    if (rc != CAIRN_OK) {
        cairn_image_list_free(&p.l);
        return rc;
    }
    *out = p.l;
    return CAIRN_OK;
}

int cairn_image_ls(struct cairn_client *c, const char *kind, struct cairn_image_list **out)
{
    *out = NULL;
    return cairn__keep_err(c, image_ls(c, kind, out));
}

static int image_by_id(struct cairn_client *c, enum cairn_msg_type t, const char *what, const char *id,
                       struct cairn_msg **rep)
{
    *rep = NULL;
    CAIRN_FORWARD_IF_ERROR(check_id(what, id));
    struct cairn_msg *m = cairn__msg_new(t);
    if (!m)
        return CAIRN_ENOMEM;
    int rc = cairn__auth_app(c, m, what);
    if (rc != CAIRN_OK) {
        cairn_msg_destroy(&m);
        return rc;
    }
    cairn_msg_set_str(m, "image", id);
    return cairn__call(c, &m, 0, rep);
}

int cairn_image_show(struct cairn_client *c, const char *id, struct cairn_image_info *out)
{
    memset(out, 0, sizeof(*out));
    struct cairn_msg *rep = NULL;
    int rc = image_by_id(c, CAIRN_MSG_IMAGE_SHOW, "image show", id, &rep);
    if (rc == CAIRN_OK) {
        const struct cairn_mval *r = cairn_msg_get(rep, "image");
        if (r)
            image_from_rec(r, out);
        else
            rc = cairn_err_set(CAIRN_EPROTO, "image.show reply without an image");
    }
    cairn_msg_destroy(&rep);
    return cairn__keep_err(c, rc);
}

int cairn_image_rm(struct cairn_client *c, const char *id)
{
    struct cairn_msg *rep = NULL;
    int rc = image_by_id(c, CAIRN_MSG_IMAGE_RM, "image rm", id, &rep);
    cairn_msg_destroy(&rep);
    return cairn__keep_err(c, rc);
}

static bool looks_like_id(const char *s)
{
    return strlen(s) == 19 && !strncmp(s, "im-", 3) && strspn(s + 3, "0123456789abcdef") == 16;
}

int cairn_image_resolve(struct cairn_client *c, const char *id_or_name, char id_out[CAIRN_ID_MAX + 1])
{
    id_out[0] = '\0';
    int rc = check_id("image", id_or_name);
    if (rc != CAIRN_OK)
        return cairn__keep_err(c, rc);
    if (looks_like_id(id_or_name)) {
        snprintf(id_out, CAIRN_ID_MAX + 1, "%s", id_or_name);
        return CAIRN_OK;
    }
    struct cairn_image_list *l = NULL;
    rc = image_ls(c, NULL, &l);
    if (rc != CAIRN_OK)
        return cairn__keep_err(c, rc);
    const struct cairn_image_info *best = NULL;
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->images[i].name, id_or_name) &&
            (!best || l->images[i].created_at_ns > best->created_at_ns ||
             (l->images[i].created_at_ns == best->created_at_ns && strcmp(l->images[i].id, best->id) > 0)))
            best = &l->images[i];
    if (best)
        snprintf(id_out, CAIRN_ID_MAX + 1, "%s", best->id);
    else
        rc = cairn_err_set(CAIRN_ENOTFOUND, "no image named '%s' in app '%s' (nor an image with that id)", id_or_name,
                           c->app ? c->app : "?");
    cairn_image_list_free(&l);
    return cairn__keep_err(c, rc);
}
