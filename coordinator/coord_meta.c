/*
 * coord_meta.c: encoding and decoding of the coordinator's metadata records
 * (coord_meta.h), and the few store helpers around cairn/kv.h.
 *
 * Design
 * - Every record is a msgpack map {"v": 1, field: value, ...} written with
 *   cairn/mp.h. Maps (not arrays) so that a later version can add fields that
 *   this one skips, and a reader can name the field that is wrong.
 * - Decoders never trust the bytes: every string is length-checked before it
 *   is copied into a fixed buffer, embedded NULs are refused, a field seen
 *   twice is refused (it would leak or silently override), required fields
 *   must be present, and trailing bytes after the map are refused. Nested
 *   params/result maps are only framed here (cairn_mp_skip bounds their depth);
 *   their contents are validated against the wire model when they are used
 *   (coord_value.c), since they go back onto the wire.
 * - Every failure is CAIRN_ECORRUPT "metadata record '<key>' is corrupt: ...".
 */
#include "coord_meta.h"

#include "cairn/alloc.h"
#include "cairn/err.h"
#include "cairn/mp.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>

#define REC_MAX_FIELDS 64
#define REC_FIELD_NAME_MAX 32
#define REC_TEXT_MAX 1024
#define REC_ENDPOINT_MAX 256

const char *coord_job_state_name(enum coord_job_state s)
{
    switch (s) {
    case COORD_JOB_QUEUED: return "queued";
    case COORD_JOB_RUNNING: return "running";
    case COORD_JOB_SUCCEEDED: return "succeeded";
    case COORD_JOB_FAILED: return "failed";
    }
    return "unknown";
}

void coord_worker_rec_release(struct coord_worker_rec *r)
{
    if (!r)
        return;
    CAIRN_FREE(r->peer);
    CAIRN_FREE(r->fingerprint);
    CAIRN_FREE(r->version);
}

const char *coord_sandbox_state_name(enum coord_sandbox_state s)
{
    switch (s) {
    case COORD_SBX_CREATING: return "creating";
    case COORD_SBX_RUNNING: return "running";
    case COORD_SBX_TERMINATED: return "terminated";
    case COORD_SBX_FAILED: return "failed";
    }
    return "unknown";
}

void coord_image_rec_release(struct coord_image_rec *r)
{
    if (!r)
        return;
    CAIRN_FREE(r->name);
    CAIRN_FREE(r->manifest);
    r->manifest_size = 0;
}

void coord_sandbox_rec_release(struct coord_sandbox_rec *r)
{
    if (!r)
        return;
    CAIRN_FREE(r->cmd);
    r->cmd_len = 0;
    CAIRN_FREE(r->err_msg);
    CAIRN_FREE(r->report);
    r->report_len = 0;
    for (size_t i = 0; i < r->nmounts; i++) /* issue 5 */
        cairn_free(r->mounts[i].path);
    CAIRN_FREE(r->mounts);
    r->nmounts = 0;
}

void coord_upload_rec_release(struct coord_upload_rec *r)
{
    if (!r)
        return;
    CAIRN_FREE(r->name);
}

/* dup of an optional buffer: NULL stays NULL */
static int dup_opt(void **dst, const void *src, size_t len)
{
    *dst = NULL;
    if (!src)
        return CAIRN_OK;
    *dst = cairn_memdup(src, len ? len : 1);
    return *dst ? CAIRN_OK : cairn_err_set(CAIRN_ENOMEM, "out of memory copying a record");
}

int coord_image_rec_copy(struct coord_image_rec *dst, const struct coord_image_rec *src)
{
    *dst = *src;
    dst->name = NULL;
    dst->manifest = NULL;
    int rc = dup_opt((void **)&dst->name, src->name, src->name ? strlen(src->name) + 1 : 0);
    if (rc == CAIRN_OK)
        rc = dup_opt((void **)&dst->manifest, src->manifest, src->manifest_size);
    if (rc != CAIRN_OK) {
        coord_image_rec_release(dst);
        memset(dst, 0, sizeof(*dst));
    }
    return rc;
}

int coord_sandbox_rec_copy(struct coord_sandbox_rec *dst, const struct coord_sandbox_rec *src)
{
    *dst = *src;
    dst->cmd = dst->report = NULL;
    dst->err_msg = NULL;
    dst->mounts = NULL;
    dst->nmounts = 0;
    int rc = dup_opt((void **)&dst->cmd, src->cmd, src->cmd_len);
    if (rc == CAIRN_OK && src->nmounts) { /* issue 5 */
        dst->mounts = cairn_calloc(src->nmounts, sizeof(*dst->mounts));
        if (!dst->mounts)
            rc = cairn_err_set(CAIRN_ENOMEM, "out of memory copying a record");
        for (size_t i = 0; rc == CAIRN_OK && i < src->nmounts; i++) {
            dst->mounts[i] = src->mounts[i];
            dst->mounts[i].path = NULL;
            dst->nmounts = i + 1;
            rc = dup_opt((void **)&dst->mounts[i].path, src->mounts[i].path, strlen(src->mounts[i].path) + 1);
        }
    }
    if (rc == CAIRN_OK)
        rc = dup_opt((void **)&dst->report, src->report, src->report_len);
    if (rc == CAIRN_OK)
        rc = dup_opt((void **)&dst->err_msg, src->err_msg, src->err_msg ? strlen(src->err_msg) + 1 : 0);
    if (rc != CAIRN_OK) {
        coord_sandbox_rec_release(dst);
        memset(dst, 0, sizeof(*dst));
    }
    return rc;
}

void coord_job_rec_release(struct coord_job_rec *r)
{
    if (!r)
        return;
    CAIRN_FREE(r->params);
    r->params_len = 0;
    CAIRN_FREE(r->err_msg);
    CAIRN_FREE(r->result);
    r->result_len = 0;
}

/* ---- names and keys ---------------------------------------------------------------------------- */

bool coord_app_name_valid(const char *s, size_t len)
{
    if (len < 1 || len > COORD_ID_MAX || s[0] == '_' || s[0] == '.' || s[0] == '-')
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

bool coord_job_id_valid(const char *s, size_t len)
{
    if (len != COORD_JOB_ID_LEN || memcmp(s, "jb-", 3) != 0)
        return false;
    for (size_t i = 3; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

bool coord_hex_valid(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

bool coord_obj_id_valid(const char *s, size_t len, const char *prefix)
{
    return len == COORD_OBJ_ID_LEN && memcmp(s, prefix, 3) == 0 && coord_hex_valid(s + 3, len - 3);
}

static size_t key_fmt(char *out, const char *a, const char *b, const char *c)
{
    int n = snprintf(out, COORD_KEY_MAX, "%s%s%s", a, b, c ? c : "");
    return n < 0 || n >= COORD_KEY_MAX ? 0 : (size_t)n;
}

size_t coord_key_app(char *out, const char *app) { return key_fmt(out, "a/", app, NULL); }
size_t coord_key_worker(char *out, const char *id) { return key_fmt(out, "w/", id, NULL); }
size_t coord_key_job(char *out, const char *id) { return key_fmt(out, "j/", id, NULL); }

size_t coord_key_req(char *out, const char *app, const char *req_id)
{
    int n = snprintf(out, COORD_KEY_MAX, "r/%s/%s", app, req_id);
    return n < 0 || n >= COORD_KEY_MAX ? 0 : (size_t)n;
}

size_t coord_key_queue(char *out, uint64_t seq)
{
    int n = snprintf(out, COORD_KEY_MAX, "q/%016" PRIx64, seq);
    return n < 0 || n >= COORD_KEY_MAX ? 0 : (size_t)n;
}

size_t coord_key_image(char *out, const char *id) { return key_fmt(out, "i/", id, NULL); }
size_t coord_key_sandbox(char *out, const char *id) { return key_fmt(out, "s/", id, NULL); }

size_t coord_key_refs(char *out, const char *owner, uint32_t seq)
{
    int n = snprintf(out, COORD_KEY_MAX, "c/%s/%08" PRIx32, owner, seq);
    return n < 0 || n >= COORD_KEY_MAX ? 0 : (size_t)n;
}

size_t coord_key_name(char *out, const char *app, const char *name)
{
    int n = snprintf(out, COORD_KEY_MAX, "n/%s/%s", app, name);
    return n < 0 || n >= COORD_KEY_MAX ? 0 : (size_t)n;
}

size_t coord_key_upload(char *out, const char *app, const char *upload)
{
    int n = snprintf(out, COORD_KEY_MAX, "u/%s/%s", app, upload);
    return n < 0 || n >= COORD_KEY_MAX ? 0 : (size_t)n;
}

void coord_key_printable(char *out, size_t cap, const uint8_t *key, size_t klen)
{
    size_t o = 0;
    for (size_t i = 0; i < klen && o + 5 < cap; i++) {
        uint8_t c = key[i];
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
            out[o++] = (char)c;
        } else {
            snprintf(out + o, cap - o, "\\x%02x", c);
            o += 4;
        }
    }
    if (cap)
        out[o < cap ? o : cap - 1] = '\0';
}

/* ---- decoding helpers -------------------------------------------------------------------------- */

struct rdr {
    struct cairn_mp_reader r;
    const char *key;   /* record key, for messages */
    const char *field; /* field being read */
};

static int corrupt(const struct rdr *d, const char *why)
{
    return cairn_err_set(CAIRN_ECORRUPT, "metadata record '%s' is corrupt: %s%s%s%s", d->key,
                         d->field ? "field '" : "", d->field ? d->field : "", d->field ? "' " : "", why);
}

/* Open the top-level map and check "v" handling is left to the caller. */
static int rd_begin(struct rdr *d, const uint8_t *p, size_t len, const char *key, uint32_t *n)
{
    cairn_mp_reader_init(&d->r, p, len);
    d->key = key;
    d->field = NULL;
    if (cairn_mp_read_map(&d->r, n, REC_MAX_FIELDS) != CAIRN_OK)
        return corrupt(d, "is not a map of at most 64 fields");
    return CAIRN_OK;
}

static int rd_name(struct rdr *d, char name[REC_FIELD_NAME_MAX + 1])
{
    const uint8_t *s;
    uint32_t len;
    d->field = NULL;
    if (cairn_mp_read_str(&d->r, &s, &len, REC_FIELD_NAME_MAX) != CAIRN_OK)
        return corrupt(d, "has a field name that is not a string of at most 32 bytes");
    memcpy(name, s, len);
    name[len] = '\0';
    if (memchr(s, '\0', len))
        return corrupt(d, "has a field name with a NUL byte");
    return CAIRN_OK;
}

static int rd_end(struct rdr *d)
{
    d->field = NULL;
    if (d->r.err)
        return corrupt(d, "is malformed");
    if (cairn_mp_remaining(&d->r) != 0)
        return corrupt(d, "has trailing bytes");
    return CAIRN_OK;
}

/* Mark a field seen; refuse duplicates. */
static int rd_seen(struct rdr *d, uint64_t *seen, unsigned bit)
{
    if (*seen & (1ull << bit))
        return corrupt(d, "appears twice");
    *seen |= 1ull << bit;
    return CAIRN_OK;
}

static int rd_str_fixed(struct rdr *d, char *out, size_t min, size_t max)
{
    const uint8_t *s;
    uint32_t len;
    if (cairn_mp_read_str(&d->r, &s, &len, (uint32_t)max) != CAIRN_OK)
        return corrupt(d, "is not a string of the allowed length");
    if (len < min)
        return corrupt(d, "is too short");
    if (memchr(s, '\0', len))
        return corrupt(d, "contains a NUL byte");
    memcpy(out, s, len);
    out[len] = '\0';
    return CAIRN_OK;
}

static int rd_str_dup(struct rdr *d, char **out, size_t min, size_t max)
{
    const uint8_t *s;
    uint32_t len;
    if (cairn_mp_read_str(&d->r, &s, &len, (uint32_t)max) != CAIRN_OK)
        return corrupt(d, "is not a string of the allowed length");
    if (len < min)
        return corrupt(d, "is too short");
    if (memchr(s, '\0', len))
        return corrupt(d, "contains a NUL byte");
    cairn_free(*out);
    *out = cairn_strndup((const char *)s, len);
    if (!*out)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory reading metadata record '%s'", d->key);
    return CAIRN_OK;
}

static int rd_u64(struct rdr *d, uint64_t *v)
{
    if (cairn_mp_read_uint(&d->r, v) != CAIRN_OK)
        return corrupt(d, "is not an unsigned integer");
    return CAIRN_OK;
}

static int rd_i64(struct rdr *d, int64_t *v)
{
    if (cairn_mp_read_int(&d->r, v) != CAIRN_OK)
        return corrupt(d, "is not an integer");
    return CAIRN_OK;
}

static int rd_bool(struct rdr *d, bool *v)
{
    if (cairn_mp_read_bool(&d->r, v) != CAIRN_OK)
        return corrupt(d, "is not a boolean");
    return CAIRN_OK;
}

/* A nested msgpack map (or array), copied whole (contents validated when used). */
static int rd_raw(struct rdr *d, uint8_t **out, size_t *len, bool array)
{
    if (cairn_mp_remaining(&d->r) == 0)
        return corrupt(d, "is truncated");
    uint8_t tag = d->r.p[0];
    if (!array && !((tag >= 0x80 && tag <= 0x8f) || tag == 0xde || tag == 0xdf))
        return corrupt(d, "is not a map");
    if (array && !((tag >= 0x90 && tag <= 0x9f) || tag == 0xdc || tag == 0xdd))
        return corrupt(d, "is not an array");
    const uint8_t *start = d->r.p;
    if (cairn_mp_skip(&d->r) != CAIRN_OK)
        return corrupt(d, "is malformed");
    size_t n = (size_t)(d->r.p - start);
    cairn_free(*out);
    *out = cairn_memdup(start, n);
    if (!*out)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory reading metadata record '%s'", d->key);
    *len = n;
    return CAIRN_OK;
}

static int rd_map_raw(struct rdr *d, uint8_t **out, size_t *len) { return rd_raw(d, out, len, false); }

static int rd_bin_dup(struct rdr *d, uint8_t **out, size_t *len, uint32_t max)
{
    const uint8_t *b;
    uint32_t bl;
    if (cairn_mp_read_bin(&d->r, &b, &bl, max) != CAIRN_OK)
        return corrupt(d, "is not a binary of the allowed length");
    cairn_free(*out);
    *out = cairn_memdup(b, bl ? bl : 1);
    if (!*out)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory reading metadata record '%s'", d->key);
    *len = bl;
    return CAIRN_OK;
}

/* A string that must be one of names[] (NULL-terminated); *idx gets its index. */
static int rd_enum(struct rdr *d, const char *const *names, unsigned *idx)
{
    const uint8_t *s;
    uint32_t len;
    if (cairn_mp_read_str(&d->r, &s, &len, 32) != CAIRN_OK)
        return corrupt(d, "is not a short string");
    for (unsigned i = 0; names[i]; i++)
        if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0) {
            *idx = i;
            return CAIRN_OK;
        }
    return corrupt(d, "has an unknown value");
}

/* An object id: prefix + 16 hex, or "" when allow_empty. */
static int rd_obj_id(struct rdr *d, char *out, const char *prefix, bool allow_empty)
{
    CAIRN_FORWARD_IF_ERROR(rd_str_fixed(d, out, allow_empty ? 0 : COORD_OBJ_ID_LEN, COORD_OBJ_ID_LEN));
    size_t n = strlen(out);
    if ((n || !allow_empty) && !coord_obj_id_valid(out, n, prefix))
        return corrupt(d, "is not a valid id");
    return CAIRN_OK;
}

static int rd_job_id(struct rdr *d, char *out, bool allow_empty)
{
    CAIRN_FORWARD_IF_ERROR(rd_str_fixed(d, out, allow_empty ? 0 : COORD_JOB_ID_LEN, COORD_JOB_ID_LEN));
    size_t n = strlen(out);
    if ((n || !allow_empty) && !coord_job_id_valid(out, n))
        return corrupt(d, "is not a job id");
    return CAIRN_OK;
}

static int rd_version(struct rdr *d)
{
    uint64_t v;
    CAIRN_FORWARD_IF_ERROR(rd_u64(d, &v));
    if (v != 1)
        return cairn_err_set(CAIRN_EVERSION, "metadata record '%s' has version %" PRIu64 ", this coordinator reads 1",
                             d->key, v);
    return CAIRN_OK;
}

static int rd_missing(struct rdr *d, uint64_t seen, uint64_t required, const char *const *names)
{
    for (unsigned i = 0; names[i]; i++)
        if ((required & (1ull << i)) && !(seen & (1ull << i))) {
            d->field = names[i];
            return corrupt(d, "is missing");
        }
    return CAIRN_OK;
}

static int rd_field_index(const char *name, const char *const *names)
{
    for (int i = 0; names[i]; i++)
        if (!strcmp(name, names[i]))
            return i;
    return -1;
}

static void w_key(struct cairn_mp_writer *w, const char *k)
{
    cairn_mp_write_str(w, k, strlen(k));
}

static void w_str(struct cairn_mp_writer *w, const char *k, const char *v)
{
    w_key(w, k);
    cairn_mp_write_str(w, v, strlen(v));
}

static void w_u64(struct cairn_mp_writer *w, const char *k, uint64_t v)
{
    w_key(w, k);
    cairn_mp_write_uint(w, v);
}

static void w_i64(struct cairn_mp_writer *w, const char *k, int64_t v)
{
    w_key(w, k);
    cairn_mp_write_int(w, v);
}

/* Raw bytes of an already encoded msgpack value. */
static void w_raw(struct cairn_mp_writer *w, const char *k, const uint8_t *p, size_t len)
{
    w_key(w, k);
    if (!w->err)
        w->err = cairn_buf_append(w->buf, p, len);
}

static int w_done(struct cairn_mp_writer *w, const char *what)
{
    if (w->err)
        return cairn_err_set(w->err, "encode %s record: %s", what, cairn_strerror(w->err));
    return CAIRN_OK;
}

/* ---- app --------------------------------------------------------------------------------------- */

enum { APP_V, APP_NAME, APP_TOKEN_HASH, APP_CREATED };
static const char *const app_fields[] = {"v", "name", "token_hash", "created", NULL};

int coord_app_encode(const struct coord_app_rec *r, struct cairn_buf *out)
{
    struct cairn_mp_writer w;
    cairn_mp_writer_init(&w, out);
    cairn_mp_write_map(&w, 4);
    w_u64(&w, "v", 1);
    w_str(&w, "name", r->name);
    w_key(&w, "token_hash");
    cairn_mp_write_bin(&w, r->token_hash, sizeof(r->token_hash));
    w_i64(&w, "created", r->created_ns);
    return w_done(&w, "app");
}

int coord_app_decode(const uint8_t *p, size_t len, const char *key, struct coord_app_rec *r)
{
    memset(r, 0, sizeof(*r));
    struct rdr d;
    uint32_t n;
    uint64_t seen = 0;
    CAIRN_FORWARD_IF_ERROR(rd_begin(&d, p, len, key, &n));
    for (uint32_t i = 0; i < n; i++) {
        char name[REC_FIELD_NAME_MAX + 1];
        CAIRN_FORWARD_IF_ERROR(rd_name(&d, name));
        int f = rd_field_index(name, app_fields);
        d.field = f >= 0 ? app_fields[f] : NULL;
        if (f >= 0)
            CAIRN_FORWARD_IF_ERROR(rd_seen(&d, &seen, (unsigned)f));
        switch (f) {
        case APP_V: CAIRN_FORWARD_IF_ERROR(rd_version(&d)); break;
        case APP_NAME:
            CAIRN_FORWARD_IF_ERROR(rd_str_fixed(&d, r->name, 1, COORD_ID_MAX));
            if (!coord_app_name_valid(r->name, strlen(r->name)))
                return corrupt(&d, "is not a valid app name");
            break;
        case APP_TOKEN_HASH: {
            const uint8_t *b;
            uint32_t bl;
            if (cairn_mp_read_bin(&d.r, &b, &bl, CAIRN_TOKEN_HASH_BYTES) != CAIRN_OK || bl != CAIRN_TOKEN_HASH_BYTES)
                return corrupt(&d, "is not 32 bytes");
            memcpy(r->token_hash, b, bl);
            break;
        }
        case APP_CREATED: CAIRN_FORWARD_IF_ERROR(rd_i64(&d, &r->created_ns)); break;
        default:
            if (cairn_mp_skip(&d.r) != CAIRN_OK)
                return corrupt(&d, "has a malformed unknown field");
        }
    }
    CAIRN_FORWARD_IF_ERROR(rd_end(&d));
    return rd_missing(&d, seen, (1u << APP_V) | (1u << APP_NAME) | (1u << APP_TOKEN_HASH) | (1u << APP_CREATED),
                      app_fields);
}

/* ---- worker ------------------------------------------------------------------------------------ */

enum {
    WK_V, WK_ID, WK_KEY, WK_PEER, WK_FP, WK_VERSION, WK_CAPACITY, WK_CHUNKS, WK_BYTES, WK_SANDBOXES, WK_ALIVE,
    WK_LAST_SEEN, WK_REGISTERED
};
static const char *const worker_fields[] = {"v", "id", "public_key", "peer", "fingerprint", "version", "capacity",
                                            "chunks", "bytes", "sandboxes", "alive", "last_seen", "registered",
                                            NULL};

int coord_worker_encode(const struct coord_worker_rec *r, struct cairn_buf *out)
{
    struct cairn_mp_writer w;
    cairn_mp_writer_init(&w, out);
    cairn_mp_write_map(&w, 12 + (r->version != NULL));
    w_u64(&w, "v", 1);
    w_str(&w, "id", r->id);
    w_str(&w, "public_key", r->public_key);
    w_str(&w, "peer", r->peer ? r->peer : "");
    w_str(&w, "fingerprint", r->fingerprint ? r->fingerprint : "");
    if (r->version)
        w_str(&w, "version", r->version);
    w_u64(&w, "capacity", r->capacity);
    w_u64(&w, "chunks", r->chunks);
    w_u64(&w, "bytes", r->bytes);
    w_u64(&w, "sandboxes", r->sandboxes);
    w_key(&w, "alive");
    cairn_mp_write_bool(&w, r->alive);
    w_i64(&w, "last_seen", r->last_seen_ns);
    w_i64(&w, "registered", r->registered_ns);
    return w_done(&w, "worker");
}

int coord_worker_decode(const uint8_t *p, size_t len, const char *key, struct coord_worker_rec *r)
{
    memset(r, 0, sizeof(*r));
    struct rdr d;
    uint32_t n;
    uint64_t seen = 0;
    int rc = rd_begin(&d, p, len, key, &n);
    for (uint32_t i = 0; rc == CAIRN_OK && i < n; i++) {
        char name[REC_FIELD_NAME_MAX + 1];
        rc = rd_name(&d, name);
        if (rc != CAIRN_OK)
            break;
        int f = rd_field_index(name, worker_fields);
        d.field = f >= 0 ? worker_fields[f] : NULL;
        if (f >= 0 && (rc = rd_seen(&d, &seen, (unsigned)f)) != CAIRN_OK)
            break;
        switch (f) {
        case WK_V: rc = rd_version(&d); break;
        case WK_ID: rc = rd_str_fixed(&d, r->id, 1, COORD_ID_MAX); break;
        case WK_KEY: rc = rd_str_fixed(&d, r->public_key, 40, 40); break;
        case WK_PEER: rc = rd_str_dup(&d, &r->peer, 0, REC_ENDPOINT_MAX); break;
        case WK_FP: rc = rd_str_dup(&d, &r->fingerprint, 0, 256); break;
        case WK_VERSION: rc = rd_str_dup(&d, &r->version, 1, 64); break;
        case WK_CAPACITY: rc = rd_u64(&d, &r->capacity); break;
        case WK_CHUNKS: rc = rd_u64(&d, &r->chunks); break;
        case WK_BYTES: rc = rd_u64(&d, &r->bytes); break;
        case WK_SANDBOXES: rc = rd_u64(&d, &r->sandboxes); break;
        case WK_ALIVE: rc = rd_bool(&d, &r->alive); break;
        case WK_LAST_SEEN: rc = rd_i64(&d, &r->last_seen_ns); break;
        case WK_REGISTERED: rc = rd_i64(&d, &r->registered_ns); break;
        default:
            if (cairn_mp_skip(&d.r) != CAIRN_OK)
                rc = corrupt(&d, "has a malformed unknown field");
        }
    }
    if (rc == CAIRN_OK)
        rc = rd_end(&d);
    if (rc == CAIRN_OK)
        rc = rd_missing(&d, seen,
                        (1u << WK_V) | (1u << WK_ID) | (1u << WK_KEY) | (1u << WK_PEER) | (1u << WK_FP) |
                            (1u << WK_ALIVE) | (1u << WK_LAST_SEEN),
                        worker_fields);
    if (rc != CAIRN_OK)
        coord_worker_rec_release(r);
    return rc;
}

/* ---- job --------------------------------------------------------------------------------------- */

enum {
    JB_V, JB_ID, JB_APP, JB_KIND, JB_REQ, JB_STATE, JB_SEQ, JB_CREATED, JB_UPDATED, JB_WORKER, JB_PARAMS,
    JB_ERR_CODE, JB_ERR_MSG, JB_RESULT
};
static const char *const job_fields[] = {"v", "id", "app", "kind", "req_id", "state", "seq", "created", "updated",
                                         "worker", "params", "err_code", "err_msg", "result", NULL};

int coord_job_encode(const struct coord_job_rec *r, struct cairn_buf *out)
{
    bool failed = r->state == COORD_JOB_FAILED;
    bool has_result = r->result && r->result_len;
    struct cairn_mp_writer w;
    cairn_mp_writer_init(&w, out);
    cairn_mp_write_map(&w, (uint32_t)(10 + (r->worker[0] != 0) + (failed ? 1 + (r->err_msg != NULL) : 0) +
                                      has_result));
    w_u64(&w, "v", 1);
    w_str(&w, "id", r->id);
    w_str(&w, "app", r->app);
    w_str(&w, "kind", r->kind);
    w_str(&w, "req_id", r->req_id);
    w_u64(&w, "state", (uint64_t)r->state);
    w_u64(&w, "seq", r->seq);
    w_i64(&w, "created", r->created_ns);
    w_i64(&w, "updated", r->updated_ns);
    if (r->worker[0])
        w_str(&w, "worker", r->worker);
    if (r->params && r->params_len) {
        w_raw(&w, "params", r->params, r->params_len);
    } else {
        w_key(&w, "params");
        cairn_mp_write_map(&w, 0);
    }
    if (failed) {
        w_u64(&w, "err_code", r->err_code);
        if (r->err_msg)
            w_str(&w, "err_msg", r->err_msg);
    }
    if (has_result)
        w_raw(&w, "result", r->result, r->result_len);
    return w_done(&w, "job");
}

int coord_job_decode(const uint8_t *p, size_t len, const char *key, struct coord_job_rec *r)
{
    memset(r, 0, sizeof(*r));
    struct rdr d;
    uint32_t n;
    uint64_t seen = 0, u;
    int rc = rd_begin(&d, p, len, key, &n);
    for (uint32_t i = 0; rc == CAIRN_OK && i < n; i++) {
        char name[REC_FIELD_NAME_MAX + 1];
        rc = rd_name(&d, name);
        if (rc != CAIRN_OK)
            break;
        int f = rd_field_index(name, job_fields);
        d.field = f >= 0 ? job_fields[f] : NULL;
        if (f >= 0 && (rc = rd_seen(&d, &seen, (unsigned)f)) != CAIRN_OK)
            break;
        switch (f) {
        case JB_V: rc = rd_version(&d); break;
        case JB_ID:
            rc = rd_str_fixed(&d, r->id, COORD_JOB_ID_LEN, COORD_JOB_ID_LEN);
            if (rc == CAIRN_OK && !coord_job_id_valid(r->id, strlen(r->id)))
                rc = corrupt(&d, "is not a job id");
            break;
        case JB_APP: rc = rd_str_fixed(&d, r->app, 1, COORD_ID_MAX); break;
        case JB_KIND: rc = rd_str_fixed(&d, r->kind, 1, 32); break;
        case JB_REQ: rc = rd_str_fixed(&d, r->req_id, 1, COORD_ID_MAX); break;
        case JB_STATE:
            rc = rd_u64(&d, &u);
            if (rc == CAIRN_OK && u > COORD_JOB_FAILED)
                rc = corrupt(&d, "is not a job state (0..3)");
            r->state = (enum coord_job_state)u;
            break;
        case JB_SEQ: rc = rd_u64(&d, &r->seq); break;
        case JB_CREATED: rc = rd_i64(&d, &r->created_ns); break;
        case JB_UPDATED: rc = rd_i64(&d, &r->updated_ns); break;
        case JB_WORKER: rc = rd_str_fixed(&d, r->worker, 1, COORD_ID_MAX); break;
        case JB_PARAMS: rc = rd_map_raw(&d, &r->params, &r->params_len); break;
        case JB_ERR_CODE:
            rc = rd_u64(&d, &u);
            if (rc == CAIRN_OK && u > UINT32_MAX)
                rc = corrupt(&d, "is out of range");
            r->err_code = (uint32_t)u;
            break;
        case JB_ERR_MSG: rc = rd_str_dup(&d, &r->err_msg, 0, REC_TEXT_MAX); break;
        case JB_RESULT: rc = rd_map_raw(&d, &r->result, &r->result_len); break;
        default:
            if (cairn_mp_skip(&d.r) != CAIRN_OK)
                rc = corrupt(&d, "has a malformed unknown field");
        }
    }
    if (rc == CAIRN_OK)
        rc = rd_end(&d);
    if (rc == CAIRN_OK)
        rc = rd_missing(&d, seen,
                        (1u << JB_V) | (1u << JB_ID) | (1u << JB_APP) | (1u << JB_KIND) | (1u << JB_REQ) |
                            (1u << JB_STATE) | (1u << JB_SEQ) | (1u << JB_CREATED) | (1u << JB_PARAMS),
                        job_fields);
    /* issue 6: a restore group job runs on the coordinator itself, with no worker */
    if (rc == CAIRN_OK && r->state == COORD_JOB_RUNNING && !r->worker[0] && strcmp(r->kind, "restore") != 0) {
        d.field = "worker";
        rc = corrupt(&d, "is missing for a running job");
    }
    if (rc == CAIRN_OK && r->state == COORD_JOB_FAILED && !(seen & (1u << JB_ERR_CODE))) {
        d.field = "err_code";
        rc = corrupt(&d, "is missing for a failed job");
    }
    if (rc != CAIRN_OK)
        coord_job_rec_release(r);
    return rc;
}

/* ---- image ------------------------------------------------------------------------------------- */

#define MANIFEST_REC_MAX (1u << 20)

enum {
    IM_V, IM_ID, IM_APP, IM_KIND, IM_NAME, IM_PARENT, IM_ORIGIN, IM_DEPTH, IM_MLEN, IM_MANIFEST, IM_DOMAIN,
    IM_STATE, IM_CREATED, IM_LAST_USED, IM_EXPIRES, IM_RETENTION, IM_SIZE, IM_FILES, IM_STORED, IM_JOB,
    IM_ENCRYPTION, IM_WRAPPED_DEK, IM_COLLECTED /* issue 5 */
};
static const char *const image_fields[] = {"v", "id", "app", "kind", "name", "parent", "origin", "depth",
                                           "manifest_len", "manifest", "domain", "state", "created",
                                           "last_used", "expires", "retention", "size", "files", "stored",
                                           "job", "encryption", "wrapped_dek", "collected", NULL};
static const char *const image_kinds[] = {"base", "fs", "dir", NULL};
static const char *const image_states[] = {"pending", "ready", "expired", NULL};
static const char *const image_encryptions[] = {"managed", "csek", NULL};

int coord_image_encode(const struct coord_image_rec *r, struct cairn_buf *out)
{
    struct cairn_mp_writer w;
    cairn_mp_writer_init(&w, out);
    cairn_mp_write_map(&w, 21 + (r->name != NULL) + r->csek);
    w_u64(&w, "v", 1);
    w_str(&w, "id", r->id);
    w_str(&w, "app", r->app);
    w_str(&w, "kind", r->kind);
    if (r->name)
        w_str(&w, "name", r->name);
    w_str(&w, "parent", r->parent);
    w_str(&w, "origin", r->origin);
    w_u64(&w, "depth", r->depth);
    w_u64(&w, "manifest_len", r->manifest_len);
    w_key(&w, "manifest");
    cairn_mp_write_bin(&w, r->manifest ? r->manifest : (const uint8_t *)"", r->manifest ? r->manifest_size : 0);
    w_key(&w, "domain");
    cairn_mp_write_bin(&w, r->domain, sizeof(r->domain));
    w_str(&w, "state", image_states[r->state <= COORD_IMAGE_EXPIRED ? r->state : COORD_IMAGE_EXPIRED]);
    w_i64(&w, "created", r->created_ns);
    w_i64(&w, "last_used", r->last_used_ns);
    w_i64(&w, "expires", r->expires_ns);
    w_str(&w, "retention", r->retention[0] ? r->retention : "never");
    w_u64(&w, "size", r->size);
    w_u64(&w, "files", r->files);
    w_u64(&w, "stored", r->stored);
    w_str(&w, "job", r->job);
    w_str(&w, "encryption", image_encryptions[r->csek]);
    if (r->csek) {
        w_key(&w, "wrapped_dek");
        cairn_mp_write_bin(&w, r->wrapped_dek, sizeof(r->wrapped_dek));
    }
    w_key(&w, "collected");
    cairn_mp_write_bool(&w, r->collected);
    return w_done(&w, "image");
}

int coord_image_decode(const uint8_t *p, size_t len, const char *key, struct coord_image_rec *r)
{
    memset(r, 0, sizeof(*r));
    struct rdr d;
    uint32_t n;
    uint64_t seen = 0;
    unsigned e = 0;
    int rc = rd_begin(&d, p, len, key, &n);
    for (uint32_t i = 0; rc == CAIRN_OK && i < n; i++) {
        char name[REC_FIELD_NAME_MAX + 1];
        rc = rd_name(&d, name);
        if (rc != CAIRN_OK)
            break;
        int f = rd_field_index(name, image_fields);
        d.field = f >= 0 ? image_fields[f] : NULL;
        if (f >= 0 && (rc = rd_seen(&d, &seen, (unsigned)f)) != CAIRN_OK)
            break;
        switch (f) {
        case IM_V: rc = rd_version(&d); break;
        case IM_ID: rc = rd_obj_id(&d, r->id, "im-", false); break;
        case IM_APP:
            rc = rd_str_fixed(&d, r->app, 1, COORD_ID_MAX);
            if (rc == CAIRN_OK && !coord_app_name_valid(r->app, strlen(r->app)))
                rc = corrupt(&d, "is not a valid app name");
            break;
        case IM_KIND:
            rc = rd_enum(&d, image_kinds, &e);
            if (rc == CAIRN_OK)
                memcpy(r->kind, image_kinds[e], strlen(image_kinds[e]) + 1);
            break;
        case IM_NAME: rc = rd_str_dup(&d, &r->name, 1, COORD_NAME_MAX); break;
        case IM_PARENT: rc = rd_obj_id(&d, r->parent, "im-", true); break;
        case IM_ORIGIN: rc = rd_obj_id(&d, r->origin, "im-", true); break;
        case IM_DEPTH: rc = rd_u64(&d, &r->depth); break;
        case IM_MLEN: rc = rd_u64(&d, &r->manifest_len); break;
        case IM_MANIFEST:
            rc = rd_bin_dup(&d, &r->manifest, &r->manifest_size, MANIFEST_REC_MAX);
            if (rc == CAIRN_OK && r->manifest_size % 36 != 0)
                rc = corrupt(&d, "is not a list of 36-byte chunk references");
            break;
        case IM_DOMAIN: {
            const uint8_t *b;
            uint32_t bl;
            if (cairn_mp_read_bin(&d.r, &b, &bl, 16) != CAIRN_OK || bl != 16)
                rc = corrupt(&d, "is not 16 bytes");
            else
                memcpy(r->domain, b, 16);
            break;
        }
        case IM_STATE:
            rc = rd_enum(&d, image_states, &e);
            r->state = (enum coord_image_state)e;
            break;
        case IM_CREATED: rc = rd_i64(&d, &r->created_ns); break;
        case IM_LAST_USED: rc = rd_i64(&d, &r->last_used_ns); break;
        case IM_EXPIRES: rc = rd_i64(&d, &r->expires_ns); break;
        case IM_RETENTION: rc = rd_str_fixed(&d, r->retention, 1, sizeof(r->retention) - 1); break;
        case IM_SIZE: rc = rd_u64(&d, &r->size); break;
        case IM_FILES: rc = rd_u64(&d, &r->files); break;
        case IM_STORED: rc = rd_u64(&d, &r->stored); break;
        case IM_JOB: rc = rd_job_id(&d, r->job, true); break;
        case IM_ENCRYPTION:
            rc = rd_enum(&d, image_encryptions, &e);
            r->csek = e == 1;
            break;
        case IM_WRAPPED_DEK: {
            const uint8_t *b;
            uint32_t bl;
            if (cairn_mp_read_bin(&d.r, &b, &bl, COORD_WRAPPED_DEK_LEN) != CAIRN_OK || bl != COORD_WRAPPED_DEK_LEN)
                rc = corrupt(&d, "is not 72 bytes");
            else
                memcpy(r->wrapped_dek, b, COORD_WRAPPED_DEK_LEN);
            break;
        }
        case IM_COLLECTED: rc = rd_bool(&d, &r->collected); break;
        default:
            if (cairn_mp_skip(&d.r) != CAIRN_OK)
                rc = corrupt(&d, "has a malformed unknown field");
        }
    }
    if (rc == CAIRN_OK)
        rc = rd_end(&d);
    if (rc == CAIRN_OK)
        rc = rd_missing(&d, seen,
                        (1u << IM_V) | (1u << IM_ID) | (1u << IM_APP) | (1u << IM_KIND) | (1u << IM_DEPTH) |
                            (1u << IM_DOMAIN) | (1u << IM_STATE) | (1u << IM_CREATED),
                        image_fields);
    if (rc == CAIRN_OK && r->state == COORD_IMAGE_READY && r->manifest_size == 0) {
        d.field = "manifest";
        rc = corrupt(&d, "is missing for a ready image");
    }
    if (rc == CAIRN_OK && !r->retention[0])
        memcpy(r->retention, "never", 6);
    if (rc == CAIRN_OK && r->csek && !(seen & (1ull << IM_WRAPPED_DEK))) {
        d.field = "wrapped_dek";
        rc = corrupt(&d, "is missing for a csek image");
    }
    if (rc != CAIRN_OK)
        coord_image_rec_release(r);
    return rc;
}

/* ---- sandbox ----------------------------------------------------------------------------------- */

enum {
    SB_V, SB_ID, SB_APP, SB_WORKER, SB_IMAGE, SB_RUNTIME, SB_STATE, SB_CREATED, SB_UPDATED, SB_CMD, SB_SNAP,
    SB_NETWORK, SB_GPU, SB_JOB, SB_TERM_JOB, SB_ERR_CODE, SB_ERR_MSG, SB_REPORT,
    SB_MOUNTS /* issue 5 */, SB_RESTORED_FROM, SB_EXPIRES_HINT /* issue 6 */
};
static const char *const sandbox_fields[] = {"v", "id", "app", "worker", "image", "runtime_id", "state",
                                             "created", "updated", "cmd", "enable_snapshot", "network", "gpu",
                                             "job", "term_job", "err_code", "err_msg", "report",
                                             "mounts", "restored_from", "expires_hint", NULL};
static const char *const sandbox_states[] = {"creating", "running", "terminated", "failed", NULL};

/* issue 5: "mounts": [{path, image, csek}, ...] (at most COORD_MOUNTS_MAX) */
static int rd_mounts(struct rdr *d, struct coord_sandbox_rec *r)
{
    uint32_t n = 0;
    if (cairn_mp_read_array(&d->r, &n, COORD_MOUNTS_MAX) != CAIRN_OK)
        return corrupt(d, "is not an array of at most 64 mounts");
    if (n == 0)
        return CAIRN_OK;
    r->mounts = cairn_calloc(n, sizeof(*r->mounts));
    if (!r->mounts)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory reading metadata record '%s'", d->key);
    for (uint32_t i = 0; i < n; i++) {
        struct coord_mount *mt = &r->mounts[i];
        r->nmounts = i + 1;
        uint32_t nf = 0;
        if (cairn_mp_read_map(&d->r, &nf, 8) != CAIRN_OK)
            return corrupt(d, "has a mount that is not a map");
        bool has_path = false;
        for (uint32_t k = 0; k < nf; k++) {
            char name[REC_FIELD_NAME_MAX + 1];
            const char *saved = d->field;
            CAIRN_FORWARD_IF_ERROR(rd_name(d, name));
            d->field = saved;
            if (!strcmp(name, "path") && !has_path) {
                CAIRN_FORWARD_IF_ERROR(rd_str_dup(d, &mt->path, 1, 4096));
                if (mt->path[0] != '/')
                    return corrupt(d, "has a mount path that is not absolute");
                has_path = true;
            } else if (!strcmp(name, "image")) {
                CAIRN_FORWARD_IF_ERROR(rd_obj_id(d, mt->image, "im-", true));
            } else if (!strcmp(name, "csek")) {
                CAIRN_FORWARD_IF_ERROR(rd_bool(d, &mt->csek));
            } else if (cairn_mp_skip(&d->r) != CAIRN_OK) {
                return corrupt(d, "has a malformed mount");
            }
        }
        if (!has_path)
            return corrupt(d, "has a mount without a path");
    }
    return CAIRN_OK;
}

int coord_sandbox_encode(const struct coord_sandbox_rec *r, struct cairn_buf *out)
{
    bool has_cmd = r->cmd && r->cmd_len, has_report = r->report && r->report_len;
    bool failed = r->state == COORD_SBX_FAILED;
    struct cairn_mp_writer w;
    cairn_mp_writer_init(&w, out);
    cairn_mp_write_map(&w, (uint32_t)(14 + has_cmd + has_report + (failed ? 1 + (r->err_msg != NULL) : 0) +
                                      (r->nmounts > 0) + (r->restored_from[0] != '\0') + (r->expires_hint_ns != 0)));
    w_u64(&w, "v", 1);
    w_str(&w, "id", r->id);
    w_str(&w, "app", r->app);
    w_str(&w, "worker", r->worker);
    w_str(&w, "image", r->image);
    w_str(&w, "runtime_id", r->runtime_id);
    w_str(&w, "state", sandbox_states[r->state]);
    w_i64(&w, "created", r->created_ns);
    w_i64(&w, "updated", r->updated_ns);
    if (has_cmd)
        w_raw(&w, "cmd", r->cmd, r->cmd_len);
    w_key(&w, "enable_snapshot");
    cairn_mp_write_bool(&w, r->enable_snapshot);
    w_key(&w, "network");
    cairn_mp_write_bool(&w, r->network);
    w_u64(&w, "gpu", r->gpu);
    w_str(&w, "job", r->job);
    w_str(&w, "term_job", r->term_job);
    if (failed) {
        w_u64(&w, "err_code", r->err_code);
        if (r->err_msg)
            w_str(&w, "err_msg", r->err_msg);
    }
    if (has_report)
        w_raw(&w, "report", r->report, r->report_len);
    if (r->nmounts > 0) { /* issue 5 */
        w_key(&w, "mounts");
        cairn_mp_write_array(&w, (uint32_t)r->nmounts);
        for (size_t i = 0; i < r->nmounts; i++) {
            cairn_mp_write_map(&w, 3);
            w_str(&w, "path", r->mounts[i].path ? r->mounts[i].path : "");
            w_str(&w, "image", r->mounts[i].image);
            w_key(&w, "csek");
            cairn_mp_write_bool(&w, r->mounts[i].csek);
        }
    }
    if (r->restored_from[0]) /* issue 6 */
        w_str(&w, "restored_from", r->restored_from);
    if (r->expires_hint_ns != 0)
        w_i64(&w, "expires_hint", r->expires_hint_ns);
    return w_done(&w, "sandbox");
}

int coord_sandbox_decode(const uint8_t *p, size_t len, const char *key, struct coord_sandbox_rec *r)
{
    memset(r, 0, sizeof(*r));
    struct rdr d;
    uint32_t n;
    uint64_t seen = 0, u;
    unsigned e = 0;
    int rc = rd_begin(&d, p, len, key, &n);
    for (uint32_t i = 0; rc == CAIRN_OK && i < n; i++) {
        char name[REC_FIELD_NAME_MAX + 1];
        rc = rd_name(&d, name);
        if (rc != CAIRN_OK)
            break;
        int f = rd_field_index(name, sandbox_fields);
        d.field = f >= 0 ? sandbox_fields[f] : NULL;
        if (f >= 0 && (rc = rd_seen(&d, &seen, (unsigned)f)) != CAIRN_OK)
            break;
        switch (f) {
        case SB_V: rc = rd_version(&d); break;
        case SB_ID: rc = rd_obj_id(&d, r->id, "sb-", false); break;
        case SB_APP:
            rc = rd_str_fixed(&d, r->app, 1, COORD_ID_MAX);
            if (rc == CAIRN_OK && !coord_app_name_valid(r->app, strlen(r->app)))
                rc = corrupt(&d, "is not a valid app name");
            break;
        case SB_WORKER: rc = rd_str_fixed(&d, r->worker, 0, COORD_ID_MAX); break;
        case SB_IMAGE: rc = rd_obj_id(&d, r->image, "im-", false); break;
        case SB_RUNTIME:
            rc = rd_str_fixed(&d, r->runtime_id, COORD_RUNTIME_ID_LEN, COORD_RUNTIME_ID_LEN);
            if (rc == CAIRN_OK && !coord_hex_valid(r->runtime_id, COORD_RUNTIME_ID_LEN))
                rc = corrupt(&d, "is not 32 hex digits");
            break;
        case SB_STATE:
            rc = rd_enum(&d, sandbox_states, &e);
            r->state = (enum coord_sandbox_state)e;
            break;
        case SB_CREATED: rc = rd_i64(&d, &r->created_ns); break;
        case SB_UPDATED: rc = rd_i64(&d, &r->updated_ns); break;
        case SB_CMD: rc = rd_raw(&d, &r->cmd, &r->cmd_len, true); break;
        case SB_SNAP: rc = rd_bool(&d, &r->enable_snapshot); break;
        case SB_NETWORK: rc = rd_bool(&d, &r->network); break;
        case SB_GPU: rc = rd_u64(&d, &r->gpu); break;
        case SB_JOB: rc = rd_job_id(&d, r->job, false); break;
        case SB_TERM_JOB: rc = rd_job_id(&d, r->term_job, true); break;
        case SB_ERR_CODE:
            rc = rd_u64(&d, &u);
            if (rc == CAIRN_OK && u > UINT32_MAX)
                rc = corrupt(&d, "is out of range");
            r->err_code = (uint32_t)u;
            break;
        case SB_ERR_MSG: rc = rd_str_dup(&d, &r->err_msg, 0, REC_TEXT_MAX); break;
        case SB_REPORT: rc = rd_map_raw(&d, &r->report, &r->report_len); break;
        case SB_MOUNTS: rc = rd_mounts(&d, r); break;
        case SB_RESTORED_FROM: rc = rd_obj_id(&d, r->restored_from, "sn-", true); break; /* issue 6 */
        case SB_EXPIRES_HINT: rc = rd_i64(&d, &r->expires_hint_ns); break;
        default:
            if (cairn_mp_skip(&d.r) != CAIRN_OK)
                rc = corrupt(&d, "has a malformed unknown field");
        }
    }
    if (rc == CAIRN_OK)
        rc = rd_end(&d);
    if (rc == CAIRN_OK)
        rc = rd_missing(&d, seen,
                        (1u << SB_V) | (1u << SB_ID) | (1u << SB_APP) | (1u << SB_WORKER) | (1u << SB_IMAGE) |
                            (1u << SB_RUNTIME) | (1u << SB_STATE) | (1u << SB_CREATED) | (1u << SB_JOB),
                        sandbox_fields);
    if (rc == CAIRN_OK && r->state == COORD_SBX_RUNNING && !r->worker[0]) {
        d.field = "worker";
        rc = corrupt(&d, "is missing for a running sandbox");
    }
    if (rc != CAIRN_OK)
        coord_sandbox_rec_release(r);
    return rc;
}

/* ---- upload ------------------------------------------------------------------------------------ */

enum { UP_V, UP_APP, UP_UPLOAD, UP_JOB, UP_IMAGE, UP_NAME, UP_FORMAT, UP_SIZE, UP_CREATED, UP_UPDATED };
static const char *const upload_fields[] = {"v", "app", "upload", "job", "image", "name", "format", "size",
                                            "created", "updated", NULL};

int coord_upload_encode(const struct coord_upload_rec *r, struct cairn_buf *out)
{
    struct cairn_mp_writer w;
    cairn_mp_writer_init(&w, out);
    cairn_mp_write_map(&w, (uint32_t)(7 + (r->name != NULL) + (r->format[0] != 0) + r->has_size));
    w_u64(&w, "v", 1);
    w_str(&w, "app", r->app);
    w_str(&w, "upload", r->upload);
    w_str(&w, "job", r->job);
    w_str(&w, "image", r->image);
    if (r->name)
        w_str(&w, "name", r->name);
    if (r->format[0])
        w_str(&w, "format", r->format);
    if (r->has_size)
        w_u64(&w, "size", r->size);
    w_i64(&w, "created", r->created_ns);
    w_i64(&w, "updated", r->updated_ns);
    return w_done(&w, "upload");
}

int coord_upload_decode(const uint8_t *p, size_t len, const char *key, struct coord_upload_rec *r)
{
    memset(r, 0, sizeof(*r));
    struct rdr d;
    uint32_t n;
    uint64_t seen = 0;
    int rc = rd_begin(&d, p, len, key, &n);
    for (uint32_t i = 0; rc == CAIRN_OK && i < n; i++) {
        char name[REC_FIELD_NAME_MAX + 1];
        rc = rd_name(&d, name);
        if (rc != CAIRN_OK)
            break;
        int f = rd_field_index(name, upload_fields);
        d.field = f >= 0 ? upload_fields[f] : NULL;
        if (f >= 0 && (rc = rd_seen(&d, &seen, (unsigned)f)) != CAIRN_OK)
            break;
        switch (f) {
        case UP_V: rc = rd_version(&d); break;
        case UP_APP:
            rc = rd_str_fixed(&d, r->app, 1, COORD_ID_MAX);
            if (rc == CAIRN_OK && !coord_app_name_valid(r->app, strlen(r->app)))
                rc = corrupt(&d, "is not a valid app name");
            break;
        case UP_UPLOAD: rc = rd_str_fixed(&d, r->upload, 1, COORD_ID_MAX); break;
        case UP_JOB: rc = rd_job_id(&d, r->job, false); break;
        case UP_IMAGE: rc = rd_obj_id(&d, r->image, "im-", false); break;
        case UP_NAME: rc = rd_str_dup(&d, &r->name, 1, COORD_NAME_MAX); break;
        case UP_FORMAT: rc = rd_str_fixed(&d, r->format, 1, sizeof(r->format) - 1); break;
        case UP_SIZE:
            rc = rd_u64(&d, &r->size);
            r->has_size = true;
            break;
        case UP_CREATED: rc = rd_i64(&d, &r->created_ns); break;
        case UP_UPDATED: rc = rd_i64(&d, &r->updated_ns); break;
        default:
            if (cairn_mp_skip(&d.r) != CAIRN_OK)
                rc = corrupt(&d, "has a malformed unknown field");
        }
    }
    if (rc == CAIRN_OK)
        rc = rd_end(&d);
    if (rc == CAIRN_OK)
        rc = rd_missing(&d, seen,
                        (1u << UP_V) | (1u << UP_APP) | (1u << UP_UPLOAD) | (1u << UP_JOB) | (1u << UP_IMAGE) |
                            (1u << UP_CREATED),
                        upload_fields);
    if (rc != CAIRN_OK)
        coord_upload_rec_release(r);
    return rc;
}

/* ---- small values ------------------------------------------------------------------------------ */

int coord_str_encode(const char *s, struct cairn_buf *out)
{
    struct cairn_mp_writer w;
    cairn_mp_writer_init(&w, out);
    cairn_mp_write_str(&w, s, strlen(s));
    return w_done(&w, "string");
}

int coord_str_decode(const uint8_t *p, size_t len, const char *key, char *out, size_t max)
{
    struct rdr d = {.key = key, .field = NULL};
    cairn_mp_reader_init(&d.r, p, len);
    CAIRN_FORWARD_IF_ERROR(rd_str_fixed(&d, out, 1, max));
    return rd_end(&d);
}

int coord_u64_encode(uint64_t v, struct cairn_buf *out)
{
    struct cairn_mp_writer w;
    cairn_mp_writer_init(&w, out);
    cairn_mp_write_uint(&w, v);
    return w_done(&w, "integer");
}

int coord_u64_decode(const uint8_t *p, size_t len, const char *key, uint64_t *v)
{
    struct rdr d = {.key = key, .field = NULL};
    cairn_mp_reader_init(&d.r, p, len);
    CAIRN_FORWARD_IF_ERROR(rd_u64(&d, v));
    return rd_end(&d);
}

int coord_i64_encode(int64_t v, struct cairn_buf *out)
{
    struct cairn_mp_writer w;
    cairn_mp_writer_init(&w, out);
    cairn_mp_write_int(&w, v);
    return w_done(&w, "integer");
}

int coord_i64_decode(const uint8_t *p, size_t len, const char *key, int64_t *v)
{
    struct rdr d = {.key = key, .field = NULL};
    cairn_mp_reader_init(&d.r, p, len);
    CAIRN_FORWARD_IF_ERROR(rd_i64(&d, v));
    return rd_end(&d);
}

/* ---- store ------------------------------------------------------------------------------------- */

int coord_meta_open(struct cairn_kv **out, const char *data_dir)
{
    *out = NULL;
    char path[4096];
    struct cairn_kv *kv = NULL;
    if (mkdir(data_dir, 0700) != 0 && errno != EEXIST)
        return cairn_err_set_errno(cairn_err_from_errno(errno), errno, "create data dir '%s'", data_dir);
    int n = snprintf(path, sizeof(path), "%s/meta", data_dir);
    if (n < 0 || (size_t)n >= sizeof(path))
        return cairn_err_set(CAIRN_EINVAL, "data dir path '%s' is too long", data_dir);
    int rc = cairn_kv_open(&kv, path, true);
    if (rc != CAIRN_OK)
        return rc;
    uint64_t schema = 0;
    rc = coord_meta_get_u64(kv, COORD_KEY_SCHEMA, &schema);
    if (rc == CAIRN_ENOTFOUND)
        rc = coord_meta_put_u64(kv, COORD_KEY_SCHEMA, COORD_META_SCHEMA);
    else if (rc == CAIRN_OK && schema != COORD_META_SCHEMA)
        rc = cairn_err_set(CAIRN_EVERSION, "metadata store '%s' has layout %" PRIu64 ", this coordinator reads %d",
                           path, schema, COORD_META_SCHEMA);
    if (rc != CAIRN_OK) {
        cairn_kv_close(&kv);
        return rc;
    }
    *out = kv;
    return CAIRN_OK;
}

static int put_encoded(struct cairn_kv *kv, const char *key, size_t klen, struct cairn_buf *b)
{
    int rc = cairn_kv_put(kv, key, klen, b->data, b->len);
    cairn_buf_release(b);
    return rc;
}

int coord_meta_put_app(struct cairn_kv *kv, const struct coord_app_rec *r)
{
    char key[COORD_KEY_MAX];
    size_t klen = coord_key_app(key, r->name);
    struct cairn_buf b;
    cairn_buf_init(&b, COORD_RECORD_MAX);
    int rc = klen ? coord_app_encode(r, &b) : cairn_err_set(CAIRN_EINVAL, "app name too long");
    if (rc != CAIRN_OK) {
        cairn_buf_release(&b);
        return rc;
    }
    return put_encoded(kv, key, klen, &b);
}

int coord_meta_put_worker(struct cairn_kv *kv, const struct coord_worker_rec *r)
{
    char key[COORD_KEY_MAX];
    size_t klen = coord_key_worker(key, r->id);
    struct cairn_buf b;
    cairn_buf_init(&b, COORD_RECORD_MAX);
    int rc = klen ? coord_worker_encode(r, &b) : cairn_err_set(CAIRN_EINVAL, "worker id too long");
    if (rc != CAIRN_OK) {
        cairn_buf_release(&b);
        return rc;
    }
    return put_encoded(kv, key, klen, &b);
}

int coord_meta_batch_job(struct cairn_kv_batch *bt, const struct coord_job_rec *r)
{
    char key[COORD_KEY_MAX];
    size_t klen = coord_key_job(key, r->id);
    struct cairn_buf b;
    cairn_buf_init(&b, COORD_RECORD_MAX);
    int rc = coord_job_encode(r, &b);
    if (rc == CAIRN_OK)
        cairn_kv_batch_put(bt, key, klen, b.data, b.len);
    cairn_buf_release(&b);
    return rc;
}

typedef int (*encode_fn)(const void *r, struct cairn_buf *out);

static int batch_put_rec(struct cairn_kv_batch *bt, const char *key, size_t klen, const void *r, encode_fn enc,
                         const char *what)
{
    if (!klen)
        return cairn_err_set(CAIRN_EINVAL, "%s key too long", what);
    struct cairn_buf b;
    cairn_buf_init(&b, COORD_RECORD_MAX);
    int rc = enc(r, &b);
    if (rc == CAIRN_OK)
        cairn_kv_batch_put(bt, key, klen, b.data, b.len);
    cairn_buf_release(&b);
    return rc;
}

static int enc_image(const void *r, struct cairn_buf *out) { return coord_image_encode(r, out); }
static int enc_sandbox(const void *r, struct cairn_buf *out) { return coord_sandbox_encode(r, out); }
static int enc_upload(const void *r, struct cairn_buf *out) { return coord_upload_encode(r, out); }

int coord_meta_batch_image(struct cairn_kv_batch *bt, const struct coord_image_rec *r)
{
    char key[COORD_KEY_MAX];
    return batch_put_rec(bt, key, coord_key_image(key, r->id), r, enc_image, "image");
}

int coord_meta_batch_sandbox(struct cairn_kv_batch *bt, const struct coord_sandbox_rec *r)
{
    char key[COORD_KEY_MAX];
    return batch_put_rec(bt, key, coord_key_sandbox(key, r->id), r, enc_sandbox, "sandbox");
}

int coord_meta_batch_upload(struct cairn_kv_batch *bt, const struct coord_upload_rec *r)
{
    char key[COORD_KEY_MAX];
    return batch_put_rec(bt, key, coord_key_upload(key, r->app, r->upload), r, enc_upload, "upload");
}

int coord_meta_batch_str(struct cairn_kv_batch *bt, const char *key, size_t klen, const char *val)
{
    struct cairn_buf b;
    cairn_buf_init(&b, 4096);
    int rc = coord_str_encode(val, &b);
    if (rc == CAIRN_OK)
        cairn_kv_batch_put(bt, key, klen, b.data, b.len);
    cairn_buf_release(&b);
    return rc;
}

int coord_meta_put_u64(struct cairn_kv *kv, const char *key, uint64_t v)
{
    struct cairn_buf b;
    cairn_buf_init(&b, 16);
    int rc = coord_u64_encode(v, &b);
    if (rc != CAIRN_OK) {
        cairn_buf_release(&b);
        return rc;
    }
    return put_encoded(kv, key, strlen(key), &b);
}

int coord_meta_put_i64(struct cairn_kv *kv, const char *key, int64_t v)
{
    struct cairn_buf b;
    cairn_buf_init(&b, 16);
    int rc = coord_i64_encode(v, &b);
    if (rc != CAIRN_OK) {
        cairn_buf_release(&b);
        return rc;
    }
    return put_encoded(kv, key, strlen(key), &b);
}

int coord_meta_get_job(struct cairn_kv *kv, const char *id, struct coord_job_rec *r)
{
    char key[COORD_KEY_MAX];
    uint8_t *v = NULL;
    size_t vlen = 0;
    memset(r, 0, sizeof(*r));
    size_t klen = coord_key_job(key, id);
    if (!klen)
        return cairn_err_set(CAIRN_ENOTFOUND, "job '%s' not found", id);
    int rc = cairn_kv_get(kv, key, klen, &v, &vlen);
    if (rc == CAIRN_ENOTFOUND)
        return cairn_err_set(CAIRN_ENOTFOUND, "job '%s' not found", id);
    if (rc != CAIRN_OK)
        return rc;
    rc = coord_job_decode(v, vlen, key, r);
    cairn_kv_free(v);
    return rc;
}

int coord_meta_get_u64(struct cairn_kv *kv, const char *key, uint64_t *out)
{
    uint8_t *v = NULL;
    size_t vlen = 0;
    int rc = cairn_kv_get(kv, key, strlen(key), &v, &vlen);
    if (rc != CAIRN_OK)
        return rc;
    rc = coord_u64_decode(v, vlen, key, out);
    cairn_kv_free(v);
    return rc;
}

int coord_meta_get_i64(struct cairn_kv *kv, const char *key, int64_t *out)
{
    uint8_t *v = NULL;
    size_t vlen = 0;
    int rc = cairn_kv_get(kv, key, strlen(key), &v, &vlen);
    if (rc != CAIRN_OK)
        return rc;
    rc = coord_i64_decode(v, vlen, key, out);
    cairn_kv_free(v);
    return rc;
}

int coord_meta_get_req(struct cairn_kv *kv, const char *app, const char *req_id, char out[COORD_JOB_ID_LEN + 1])
{
    char key[COORD_KEY_MAX];
    uint8_t *v = NULL;
    size_t vlen = 0;
    size_t klen = coord_key_req(key, app, req_id);
    if (!klen)
        return cairn_err_set(CAIRN_EINVAL, "request id too long");
    int rc = cairn_kv_get(kv, key, klen, &v, &vlen);
    if (rc != CAIRN_OK)
        return rc;
    rc = coord_str_decode(v, vlen, key, out, COORD_JOB_ID_LEN);
    cairn_kv_free(v);
    if (rc == CAIRN_OK && !coord_job_id_valid(out, strlen(out)))
        rc = cairn_err_set(CAIRN_ECORRUPT, "metadata record '%s' is corrupt: not a job id", key);
    return rc;
}
