/*
 * proto.c: the message codec of the cairn wire protocol (PROTOCOL.md).
 *
 * Design
 * - The model (cairn/proto_messages.def) is expanded here into flat tables;
 *   model_init() (once, pthread_once) groups them into per-message,
 *   per-direction and per-record slices. Validation, the introspection API and
 *   the generated reference section of PROTOCOL.md all read these slices, so
 *   the spec, the checks and the docs cannot drift apart.
 * - A message owns one msgpack_zone (msgpack-c's arena). Every value node,
 *   string and bin of the message lives in it and is freed in one call. Values
 *   are our own tree (struct cairn_mval), not msgpack_object: containers hold
 *   pointers to nodes, so a node's address never changes when its container
 *   grows (builders keep handles to nested containers), and the builder can
 *   grow arrays and maps.
 * - Decoding an envelope, in this order:
 *     1. size: empty -> EPROTO, > CAIRN_PROTO_MAX_ENVELOPE -> ETOOBIG;
 *     2. prescan(): one pass over the raw bytes, no allocation. Every str/bin
 *        length must fit in the bytes left, every array/map count N must
 *        satisfy N (2N for maps) <= bytes left (each element takes >= 1 byte),
 *        nesting <= CAIRN_PROTO_MAX_DEPTH, values <= CAIRN_PROTO_MAX_NODES,
 *        no ext types, no reserved byte, nothing after the one top-level value.
 *        This is the guard that lets us hand the bytes to msgpack-c: its
 *        unpacker allocates an array of N objects as soon as it reads a count
 *        N, so a 10-byte frame claiming 2^32 elements would otherwise ask for
 *        ~100 GB. After prescan, msgpack-c allocates at most 24 bytes per value
 *        and at most CAIRN_PROTO_MAX_NODES values;
 *     3. msgpack_unpack_next() into a temporary zone;
 *     4. convert the envelope into our tree (copying strings with a NUL);
 *     5. validate against the model (validate_msg), the same function encode
 *        runs, so what decodes is exactly what could have been encoded.
 *   Every failure is a return code with a message naming the message type,
 *   direction and field path ("cluster.status reply: field 'workers[3].addr':
 *   ..."); nothing on this path asserts.
 * - Encoding writes the envelope keys in a fixed order (v, t, rid, app, tok,
 *   code, msg, f), fields in insertion (or wire) order, and every integer,
 *   string and container header in its shortest form (msgpack-c's packers do
 *   this). Hence decode(encode(m)) re-encodes byte for byte, which the golden
 *   frames pin.
 * - SECRET fields (model flag) and the token are wiped with explicit_bzero
 *   when the message is destroyed or when the builder replaces them.
 *
 * Every map key, anywhere in the envelope (even in fields this side does not
 * know), is a string without NUL, so C callers can look every key up.
 *
 * Error codes: EVERSION for a foreign protocol version; ETOOBIG for anything
 * over a limit (frame, count, length, value, depth); EPROTO for everything
 * else malformed; ENOMEM.
 */
#include "cairn/proto.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"

#include <inttypes.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

/* ---- the model --------------------------------------------------------------------------------- */

#define MUST CAIRN_PF_REQUIRED
#define MAY 0u
#define SECRET CAIRN_PF_SECRET

enum rec_id {
    REC_NONE = 0,
#define CAIRN_REC(rec, name, doc) REC_##rec,
#include "cairn/proto_messages.def"
    REC__COUNT
};

struct raw_field {
    unsigned owner; /* message number, or record id */
    int dir;        /* CAIRN_DIR_*; -1 for record fields */
    const char *name;
    enum cairn_proto_kind kind;
    unsigned flags;
    uint64_t min, max, emin, emax;
    enum rec_id rec;
    const char *doc;
};

static const struct raw_field raw_fields[] = {
#define CAIRN_FIELD(id, dir, name, kind, flags, min, max, emin, emax, rec, doc) \
    {CAIRN_MSG_##id, CAIRN_DIR_##dir, name, CAIRN_PK_##kind, (flags), (min), (max), (emin), (emax), REC_##rec, doc},
#include "cairn/proto_messages.def"
};

static const struct raw_field raw_rfields[] = {
#define CAIRN_RFIELD(rec, name, kind, flags, min, max, emin, emax, sub, doc) \
    {REC_##rec, -1, name, CAIRN_PK_##kind, (flags), (min), (max), (emin), (emax), REC_##sub, doc},
#include "cairn/proto_messages.def"
};

static const struct {
    unsigned type;
    int dir;
    uint32_t max;
    const char *field;
    const char *doc;
} raw_frames[] = {
#define CAIRN_FRAMES(id, dir, max, field, doc) {CAIRN_MSG_##id, CAIRN_DIR_##dir, (max), field, doc},
#include "cairn/proto_messages.def"
};

static const struct {
    const char *name;
    const char *doc;
} raw_recs[REC__COUNT] = {
    [REC_NONE] = {"none", ""},
#define CAIRN_REC(rec, name, doc) [REC_##rec] = {name, doc},
#include "cairn/proto_messages.def"
};

#define ROUTE_CLIENT_ANY CAIRN_ROUTE_CLIENT_ANY
#define ROUTE_CLIENT_APP CAIRN_ROUTE_CLIENT_APP
#define ROUTE_CLIENT_ADMIN CAIRN_ROUTE_CLIENT_ADMIN
#define ROUTE_WORKER CAIRN_ROUTE_WORKER
#define ROUTE_COORD CAIRN_ROUTE_COORD
#define ROUTE_PEER CAIRN_ROUTE_PEER
#define SHAPE_RPC CAIRN_SHAPE_RPC
#define SHAPE_ONEWAY CAIRN_SHAPE_ONEWAY
#define SHAPE_STREAM CAIRN_SHAPE_STREAM

static struct cairn_proto_msginfo g_msgs[] = {
#define CAIRN_MSG(id_, num_, name_, route_, shape_, issue_, doc_) \
    {.type = CAIRN_MSG_##id_, .name = name_, .route = ROUTE_##route_, .shape = SHAPE_##shape_, .issue = issue_, .doc = doc_},
#include "cairn/proto_messages.def"
};

#undef MUST
#undef MAY
#undef SECRET

#define N_FIELDS CAIRN_ARRAY_LEN(raw_fields)
#define N_RFIELDS CAIRN_ARRAY_LEN(raw_rfields)
#define N_MSGS CAIRN_ARRAY_LEN(g_msgs)

static struct cairn_proto_field g_fields[N_FIELDS];
static struct cairn_proto_field g_rfields[N_RFIELDS];
static struct cairn_proto_rec g_recs[REC__COUNT];
static pthread_once_t g_model_once = PTHREAD_ONCE_INIT;

static struct cairn_proto_field field_of(const struct raw_field *r)
{
    return (struct cairn_proto_field){
        .name = r->name, .kind = r->kind, .flags = r->flags, .min = r->min, .max = r->max,
        .emin = r->emin, .emax = r->emax, .rec = r->rec == REC_NONE ? NULL : &g_recs[r->rec], .doc = r->doc,
    };
}

/* Group the flat rows into slices; rows of one owner need not be contiguous in the .def. */
static void model_init(void)
{
    size_t k = 0;
    for (int r = 1; r < REC__COUNT; r++) {
        g_recs[r].name = raw_recs[r].name;
        g_recs[r].doc = raw_recs[r].doc;
        g_recs[r].fields = &g_rfields[k];
        for (size_t i = 0; i < N_RFIELDS; i++)
            if (raw_rfields[i].owner == (unsigned)r)
                g_rfields[k++] = field_of(&raw_rfields[i]);
        g_recs[r].nfields = (size_t)(&g_rfields[k] - g_recs[r].fields);
    }
    /* messages in number order (insertion sort: a few dozen entries) */
    for (size_t i = 1; i < N_MSGS; i++)
        for (size_t j = i; j > 0 && g_msgs[j - 1].type > g_msgs[j].type; j--) {
            struct cairn_proto_msginfo t = g_msgs[j];
            g_msgs[j] = g_msgs[j - 1];
            g_msgs[j - 1] = t;
        }
    k = 0;
    for (size_t i = 0; i < N_MSGS; i++) {
        for (int d = 0; d < 2; d++) {
            struct cairn_proto_dirinfo *di = &g_msgs[i].dir[d];
            di->fields = &g_fields[k];
            for (size_t f = 0; f < N_FIELDS; f++)
                if (raw_fields[f].owner == (unsigned)g_msgs[i].type && raw_fields[f].dir == d)
                    g_fields[k++] = field_of(&raw_fields[f]);
            di->nfields = (size_t)(&g_fields[k] - di->fields);
            for (size_t f = 0; f < CAIRN_ARRAY_LEN(raw_frames); f++)
                if (raw_frames[f].type == (unsigned)g_msgs[i].type && raw_frames[f].dir == d) {
                    di->max_frames = raw_frames[f].max;
                    di->frame_count = raw_frames[f].field;
                    di->frame_doc = raw_frames[f].doc;
                }
        }
    }
}

static void model(void) { pthread_once(&g_model_once, model_init); }

const struct cairn_proto_msginfo *cairn_proto_msginfo(unsigned type)
{
    model();
    size_t lo = 0, hi = N_MSGS;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (g_msgs[mid].type == type)
            return &g_msgs[mid];
        if (g_msgs[mid].type < type)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const struct cairn_proto_msginfo *cairn_proto_messages(size_t *n)
{
    model();
    *n = N_MSGS;
    return g_msgs;
}

const char *cairn_msg_type_name(unsigned type)
{
    const struct cairn_proto_msginfo *mi = cairn_proto_msginfo(type);
    return mi ? mi->name : "unknown";
}

enum cairn_msg_type cairn_msg_type_from_name(const char *name)
{
    model();
    for (size_t i = 0; name && i < N_MSGS; i++)
        if (strcmp(g_msgs[i].name, name) == 0)
            return g_msgs[i].type;
    return CAIRN_MSG_NONE_;
}

static const struct cairn_proto_field *find_field(const struct cairn_proto_field *fs, size_t n, const char *name,
                                                  size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(fs[i].name) == len && memcmp(fs[i].name, name, len) == 0)
            return &fs[i];
    return NULL;
}

/* ---- values and messages ----------------------------------------------------------------------- */

struct mkv {
    const char *key; /* NUL-terminated */
    uint32_t klen;
    struct cairn_mval *val;
};

struct cairn_mval {
    uint8_t kind;  /* enum cairn_mval_kind */
    uint32_t len;  /* str/bin: bytes; array/map: entries */
    uint32_t cap;  /* array/map: allocated entries */
    union {
        bool b;
        uint64_t u;
        int64_t i; /* INT: always negative */
        double f;
        uint8_t *bytes; /* STR: NUL-terminated */
        struct cairn_mval **items;
        struct mkv *kvs;
    } v;
};

struct frame {
    const uint8_t *p;
    size_t len;
    void (*release)(void *ctx); /* NULL: p is ours (cairn_malloc) */
    void *ctx;
};

struct cairn_msg {
    msgpack_zone *zone;
    unsigned type;
    uint64_t rid;
    bool reply;
    uint32_t code;
    char *app;     /* zone; NULL = absent */
    uint8_t *tok;  /* zone; NULL = absent */
    uint32_t tok_len;
    char *text;    /* zone; NULL = absent */
    struct cairn_mval *fields;
    struct frame *frames;
    size_t nframes, fcap;
    size_t payload; /* bytes of all frames */
    struct cairn_route route;
    char peer_key[41];
    int err;           /* sticky builder error */
    char errmsg[192];  /* its message */
};

static const char *dir_name(int dir) { return dir == CAIRN_DIR_REPLY ? "reply" : "request"; }

/* Record the first builder error; later calls keep it. */
CAIRN_PRINTF(3, 4) static void build_fail(struct cairn_msg *m, int code, const char *fmt, ...)
{
    if (m->err)
        return;
    m->err = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->errmsg, sizeof(m->errmsg), fmt, ap);
    va_end(ap);
    cairn_err_set(code, "%s", m->errmsg);
}

/* Re-set the thread's error with a prefix (copying the message first: err_set writes the same buffer). */
static int err_wrap(int code, const char *a, const char *b)
{
    char saved[1100];
    snprintf(saved, sizeof(saved), "%s", cairn_err_msg());
    return cairn_err_set(code, "%s%s%s: %s", a, b[0] ? " " : "", b, saved);
}

static void *zalloc(msgpack_zone *z, size_t n) { return msgpack_zone_malloc(z, n ? n : 1); }

static struct cairn_msg *msg_alloc(unsigned type)
{
    struct cairn_msg *m = cairn_calloc(1, sizeof(*m));
    if (!m)
        goto fail;
    m->type = type;
    m->zone = msgpack_zone_new(4096);
    if (!m->zone)
        goto fail;
    m->fields = zalloc(m->zone, sizeof(*m->fields));
    if (!m->fields)
        goto fail;
    memset(m->fields, 0, sizeof(*m->fields));
    m->fields->kind = CAIRN_MV_MAP;
    return m;
fail:
    if (m && m->zone)
        msgpack_zone_free(m->zone);
    cairn_free(m);
    cairn_err_set(CAIRN_ENOMEM, "out of memory allocating a message");
    return NULL;
}

static void wipe_value(struct cairn_mval *v)
{
    if (v && (v->kind == CAIRN_MV_STR || v->kind == CAIRN_MV_BIN) && v->v.bytes)
        explicit_bzero(v->v.bytes, v->len);
}

static void release_frames(struct cairn_msg *m)
{
    for (size_t i = 0; i < m->nframes; i++) {
        struct frame *f = &m->frames[i];
        if (f->release)
            f->release(f->ctx);
        else
            cairn_free((void *)f->p);
    }
    CAIRN_FREE(m->frames);
    m->nframes = m->fcap = 0;
    m->payload = 0;
}

/* Wipe the token and every SECRET field of the model (values are replaced-and-wiped by the builder). */
static void wipe_secrets(struct cairn_msg *m)
{
    if (m->tok)
        explicit_bzero(m->tok, m->tok_len);
    const struct cairn_proto_msginfo *mi = cairn_proto_msginfo(m->type);
    if (!mi)
        return;
    const struct cairn_proto_dirinfo *di = &mi->dir[m->reply ? 1 : 0];
    for (uint32_t i = 0; i < m->fields->len; i++) {
        const struct mkv *kv = &m->fields->v.kvs[i];
        const struct cairn_proto_field *fd = find_field(di->fields, di->nfields, kv->key, kv->klen);
        if (fd && (fd->flags & CAIRN_PF_SECRET))
            wipe_value(kv->val);
    }
}

void cairn_msg_destroy(struct cairn_msg **mp)
{
    if (!mp || !*mp)
        return;
    struct cairn_msg *m = *mp;
    wipe_secrets(m);
    release_frames(m);
    msgpack_zone_free(m->zone);
    cairn_free(m);
    *mp = NULL;
}

struct cairn_msg *cairn_msg_new(enum cairn_msg_type type)
{
    if (!cairn_proto_msginfo((unsigned)type)) {
        cairn_err_set(CAIRN_EINVAL, "unknown message type %u", (unsigned)type);
        return NULL;
    }
    return msg_alloc((unsigned)type);
}

static char *zstrndup(msgpack_zone *z, const char *s, size_t len)
{
    char *p = zalloc(z, len + 1);
    if (p) {
        if (len)
            memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

struct cairn_msg *cairn_msg_reply(const struct cairn_msg *req, int code, const char *text)
{
    struct cairn_msg *m = msg_alloc(req->type);
    if (!m)
        return NULL;
    m->rid = req->rid;
    m->reply = true;
    m->code = code < 0 ? (uint32_t)CAIRN_EINTERNAL : (uint32_t)code;
    m->route = req->route;
    memcpy(m->peer_key, req->peer_key, sizeof(m->peer_key));
    if (text && *text) {
        size_t len = strnlen(text, CAIRN_PROTO_MAX_TEXT);
        m->text = zstrndup(m->zone, text, len);
        if (!m->text) {
            cairn_msg_destroy(&m);
            cairn_err_set(CAIRN_ENOMEM, "out of memory building a reply");
        }
    }
    return m;
}

enum cairn_msg_type cairn_msg_type(const struct cairn_msg *m) { return (enum cairn_msg_type)m->type; }
uint64_t cairn_msg_rid(const struct cairn_msg *m) { return m->rid; }
bool cairn_msg_is_reply(const struct cairn_msg *m) { return m->reply; }
int cairn_msg_code(const struct cairn_msg *m) { return m->code > INT32_MAX ? INT32_MAX : (int)m->code; }
const char *cairn_msg_text(const struct cairn_msg *m) { return m->text; }
const char *cairn_msg_app(const struct cairn_msg *m) { return m->app; }
const char *cairn_msg_peer_key(const struct cairn_msg *m) { return m->peer_key; }
struct cairn_route cairn_msg_route(const struct cairn_msg *m) { return m->route; }

void cairn_msg_token(const struct cairn_msg *m, const uint8_t **p, size_t *len)
{
    *p = m->tok;
    *len = m->tok ? m->tok_len : 0;
}

void cairn_msg_set_rid(struct cairn_msg *m, uint64_t rid) { m->rid = rid; }

void cairn_msg_set_app(struct cairn_msg *m, const char *app)
{
    if (!app) {
        m->app = NULL;
        return;
    }
    size_t len = strlen(app);
    if (len > CAIRN_PROTO_MAX_APP)
        return build_fail(m, CAIRN_ETOOBIG, "app name is %zu bytes, limit %u", len, CAIRN_PROTO_MAX_APP);
    m->app = zstrndup(m->zone, app, len);
    if (!m->app)
        build_fail(m, CAIRN_ENOMEM, "out of memory setting the app");
}

void cairn_msg_set_token(struct cairn_msg *m, const void *tok, size_t len)
{
    if (m->tok)
        explicit_bzero(m->tok, m->tok_len);
    m->tok = NULL;
    m->tok_len = 0;
    if (!tok)
        return;
    if (len > CAIRN_PROTO_MAX_TOKEN)
        return build_fail(m, CAIRN_ETOOBIG, "token is %zu bytes, limit %u", len, CAIRN_PROTO_MAX_TOKEN);
    m->tok = zalloc(m->zone, len);
    if (!m->tok)
        return build_fail(m, CAIRN_ENOMEM, "out of memory setting the token");
    if (len)
        memcpy(m->tok, tok, len);
    m->tok_len = (uint32_t)len;
}

void cairn_msg_set_route(struct cairn_msg *m, const struct cairn_route *route)
{
    if (route)
        m->route = *route;
    else
        memset(&m->route, 0, sizeof(m->route));
}

void cairn__msg_set_peer_key(struct cairn_msg *m, const char *z85)
{
    size_t n = z85 ? strnlen(z85, sizeof(m->peer_key) - 1) : 0;
    if (n)
        memcpy(m->peer_key, z85, n);
    m->peer_key[n] = '\0';
}

/* ---- reading values ---------------------------------------------------------------------------- */

enum cairn_mval_kind cairn_mval_kind(const struct cairn_mval *v) { return (enum cairn_mval_kind)v->kind; }

size_t cairn_mval_len(const struct cairn_mval *v)
{
    switch (v->kind) {
    case CAIRN_MV_STR: case CAIRN_MV_BIN: case CAIRN_MV_ARRAY: case CAIRN_MV_MAP:
        return v->len;
    default:
        return 0;
    }
}

static int kind_err(const struct cairn_mval *v, const char *want)
{
    return cairn_err_set(v ? CAIRN_EPROTO : CAIRN_ENOTFOUND, v ? "value is not %s" : "value is absent", want);
}

int cairn_mval_u64(const struct cairn_mval *v, uint64_t *out)
{
    if (!v || v->kind != CAIRN_MV_UINT)
        return kind_err(v, "an unsigned integer");
    *out = v->v.u;
    return CAIRN_OK;
}

int cairn_mval_i64(const struct cairn_mval *v, int64_t *out)
{
    if (v && v->kind == CAIRN_MV_INT) {
        *out = v->v.i;
        return CAIRN_OK;
    }
    if (v && v->kind == CAIRN_MV_UINT && v->v.u <= (uint64_t)INT64_MAX) {
        *out = (int64_t)v->v.u;
        return CAIRN_OK;
    }
    return kind_err(v, "an integer that fits int64");
}

int cairn_mval_bool(const struct cairn_mval *v, bool *out)
{
    if (!v || v->kind != CAIRN_MV_BOOL)
        return kind_err(v, "a bool");
    *out = v->v.b;
    return CAIRN_OK;
}

int cairn_mval_f64(const struct cairn_mval *v, double *out)
{
    if (!v || (v->kind != CAIRN_MV_F32 && v->kind != CAIRN_MV_F64))
        return kind_err(v, "a float");
    *out = v->v.f;
    return CAIRN_OK;
}

int cairn_mval_str(const struct cairn_mval *v, const char **out, size_t *len)
{
    if (!v || v->kind != CAIRN_MV_STR)
        return kind_err(v, "a string");
    *out = (const char *)v->v.bytes;
    if (len)
        *len = v->len;
    return CAIRN_OK;
}

int cairn_mval_bin(const struct cairn_mval *v, const uint8_t **out, size_t *len)
{
    if (!v || v->kind != CAIRN_MV_BIN)
        return kind_err(v, "bytes");
    *out = v->v.bytes;
    *len = v->len;
    return CAIRN_OK;
}

const struct cairn_mval *cairn_mval_at(const struct cairn_mval *v, size_t i)
{
    if (!v || v->kind != CAIRN_MV_ARRAY || i >= v->len)
        return NULL;
    return v->v.items[i];
}

static struct mkv *map_find(const struct cairn_mval *map, const char *key, size_t klen)
{
    for (uint32_t i = 0; i < map->len; i++)
        if (map->v.kvs[i].klen == klen && memcmp(map->v.kvs[i].key, key, klen) == 0)
            return &map->v.kvs[i];
    return NULL;
}

const struct cairn_mval *cairn_mval_get(const struct cairn_mval *v, const char *key)
{
    if (!v || v->kind != CAIRN_MV_MAP || !key)
        return NULL;
    struct mkv *kv = map_find(v, key, strlen(key));
    return kv ? kv->val : NULL;
}

int cairn_mval_entry(const struct cairn_mval *v, size_t i, const char **key, const struct cairn_mval **val)
{
    if (!v || v->kind != CAIRN_MV_MAP || i >= v->len)
        return cairn_err_set(CAIRN_EINVAL, "map entry %zu out of range", i);
    *key = v->v.kvs[i].key;
    *val = v->v.kvs[i].val;
    return CAIRN_OK;
}

const struct cairn_mval *cairn_msg_fields(const struct cairn_msg *m) { return m->fields; }
const struct cairn_mval *cairn_msg_get(const struct cairn_msg *m, const char *field)
{
    return cairn_mval_get(m->fields, field);
}

/* Look a field up for a typed getter: ENOTFOUND / EPROTO name the message and field. */
static int field_lookup(const struct cairn_msg *m, const char *field, uint8_t kind, const char *want,
                        const struct cairn_mval **out)
{
    const struct cairn_mval *v = cairn_msg_get(m, field);
    if (!v)
        return cairn_err_set(CAIRN_ENOTFOUND, "%s %s: field '%s' is absent", cairn_msg_type_name(m->type),
                             dir_name(m->reply), field);
    bool ok = v->kind == kind || (kind == CAIRN_MV_INT && v->kind == CAIRN_MV_UINT && v->v.u <= (uint64_t)INT64_MAX) ||
              (kind == CAIRN_MV_F64 && v->kind == CAIRN_MV_F32);
    if (!ok)
        return cairn_err_set(CAIRN_EPROTO, "%s %s: field '%s' is not %s", cairn_msg_type_name(m->type),
                             dir_name(m->reply), field, want);
    *out = v;
    return CAIRN_OK;
}

int cairn_msg_get_u64(const struct cairn_msg *m, const char *field, uint64_t *out)
{
    const struct cairn_mval *v;
    CAIRN_FORWARD_IF_ERROR(field_lookup(m, field, CAIRN_MV_UINT, "an unsigned integer", &v));
    *out = v->v.u;
    return CAIRN_OK;
}

int cairn_msg_get_i64(const struct cairn_msg *m, const char *field, int64_t *out)
{
    const struct cairn_mval *v;
    CAIRN_FORWARD_IF_ERROR(field_lookup(m, field, CAIRN_MV_INT, "an integer", &v));
    return cairn_mval_i64(v, out);
}

int cairn_msg_get_bool(const struct cairn_msg *m, const char *field, bool *out)
{
    const struct cairn_mval *v;
    CAIRN_FORWARD_IF_ERROR(field_lookup(m, field, CAIRN_MV_BOOL, "a bool", &v));
    *out = v->v.b;
    return CAIRN_OK;
}

int cairn_msg_get_str(const struct cairn_msg *m, const char *field, const char **out, size_t *len)
{
    const struct cairn_mval *v;
    CAIRN_FORWARD_IF_ERROR(field_lookup(m, field, CAIRN_MV_STR, "a string", &v));
    return cairn_mval_str(v, out, len);
}

int cairn_msg_get_bin(const struct cairn_msg *m, const char *field, const uint8_t **out, size_t *len)
{
    const struct cairn_mval *v;
    CAIRN_FORWARD_IF_ERROR(field_lookup(m, field, CAIRN_MV_BIN, "bytes", &v));
    return cairn_mval_bin(v, out, len);
}

int cairn_msg_get_array(const struct cairn_msg *m, const char *field, const struct cairn_mval **out, size_t *n)
{
    CAIRN_FORWARD_IF_ERROR(field_lookup(m, field, CAIRN_MV_ARRAY, "an array", out));
    *n = (*out)->len;
    return CAIRN_OK;
}

int cairn_msg_get_map(const struct cairn_msg *m, const char *field, const struct cairn_mval **out, size_t *n)
{
    CAIRN_FORWARD_IF_ERROR(field_lookup(m, field, CAIRN_MV_MAP, "a map", out));
    *n = (*out)->len;
    return CAIRN_OK;
}

int cairn_msg_opt_u64(const struct cairn_msg *m, const char *field, uint64_t dflt, uint64_t *out)
{
    if (!cairn_msg_get(m, field)) {
        *out = dflt;
        return CAIRN_OK;
    }
    return cairn_msg_get_u64(m, field, out);
}

int cairn_msg_opt_bool(const struct cairn_msg *m, const char *field, bool dflt, bool *out)
{
    if (!cairn_msg_get(m, field)) {
        *out = dflt;
        return CAIRN_OK;
    }
    return cairn_msg_get_bool(m, field, out);
}

/* ---- building values --------------------------------------------------------------------------- */

static struct cairn_mval *node_new(struct cairn_msg *m, uint8_t kind)
{
    struct cairn_mval *v = zalloc(m->zone, sizeof(*v));
    if (!v) {
        build_fail(m, CAIRN_ENOMEM, "out of memory building a message");
        return NULL;
    }
    memset(v, 0, sizeof(*v));
    v->kind = kind;
    return v;
}

static struct cairn_mval *node_bytes(struct cairn_msg *m, uint8_t kind, const void *p, size_t len)
{
    if (len > CAIRN_PROTO_MAX_ENVELOPE) {
        build_fail(m, CAIRN_ETOOBIG, "value of %zu bytes exceeds the envelope limit", len);
        return NULL;
    }
    struct cairn_mval *v = node_new(m, kind);
    if (!v)
        return NULL;
    v->v.bytes = zalloc(m->zone, len + 1);
    if (!v->v.bytes) {
        build_fail(m, CAIRN_ENOMEM, "out of memory building a message");
        return NULL;
    }
    if (len)
        memcpy(v->v.bytes, p, len);
    v->v.bytes[len] = '\0';
    v->len = (uint32_t)len;
    return v;
}

static struct cairn_mval *node_uint(struct cairn_msg *m, uint64_t u)
{
    struct cairn_mval *v = node_new(m, CAIRN_MV_UINT);
    if (v)
        v->v.u = u;
    return v;
}

/* Non-negative values are stored as UINT: the encoding msgpack uses for them either way. */
static struct cairn_mval *node_int(struct cairn_msg *m, int64_t i)
{
    if (i >= 0)
        return node_uint(m, (uint64_t)i);
    struct cairn_mval *v = node_new(m, CAIRN_MV_INT);
    if (v)
        v->v.i = i;
    return v;
}

static struct cairn_mval *node_bool(struct cairn_msg *m, bool b)
{
    struct cairn_mval *v = node_new(m, CAIRN_MV_BOOL);
    if (v)
        v->v.b = b;
    return v;
}

/* Grow a container's entry array (zone memory: the old array is abandoned, bounded by doubling). */
static int grow(struct cairn_msg *m, struct cairn_mval *c, size_t elem)
{
    if (c->len < c->cap)
        return CAIRN_OK;
    uint32_t ncap = c->cap ? c->cap * 2 : 4;
    if (c->cap >= CAIRN_PROTO_MAX_NODES) {
        build_fail(m, CAIRN_ETOOBIG, "container over %u entries", CAIRN_PROTO_MAX_NODES);
        return CAIRN_ETOOBIG;
    }
    void *p = zalloc(m->zone, (size_t)ncap * elem);
    if (!p) {
        build_fail(m, CAIRN_ENOMEM, "out of memory building a message");
        return CAIRN_ENOMEM;
    }
    void *old = c->kind == CAIRN_MV_MAP ? (void *)c->v.kvs : (void *)c->v.items;
    if (c->len)
        memcpy(p, old, (size_t)c->len * elem);
    if (c->kind == CAIRN_MV_MAP)
        c->v.kvs = p;
    else
        c->v.items = p;
    c->cap = ncap;
    return CAIRN_OK;
}

/* map[key] = val (replacing and wiping an old value). NULL val: an earlier error, already recorded. */
static struct cairn_mval *map_put(struct cairn_msg *m, struct cairn_mval *map, const char *key,
                                  struct cairn_mval *val)
{
    if (!map || !val || !key)
        return NULL;
    if (map->kind != CAIRN_MV_MAP) {
        build_fail(m, CAIRN_EINVAL, "put '%s' into a value that is not a map", key);
        return NULL;
    }
    size_t klen = strlen(key);
    if (klen > CAIRN_PROTO_MAX_KEY) {
        build_fail(m, CAIRN_ETOOBIG, "map key of %zu bytes, limit %u", klen, CAIRN_PROTO_MAX_KEY);
        return NULL;
    }
    struct mkv *kv = map_find(map, key, klen);
    if (kv) {
        wipe_value(kv->val);
        kv->val = val;
        return val;
    }
    if (grow(m, map, sizeof(struct mkv)) != CAIRN_OK)
        return NULL;
    char *k = zstrndup(m->zone, key, klen);
    if (!k) {
        build_fail(m, CAIRN_ENOMEM, "out of memory building a message");
        return NULL;
    }
    map->v.kvs[map->len++] = (struct mkv){.key = k, .klen = (uint32_t)klen, .val = val};
    return val;
}

static struct cairn_mval *arr_push(struct cairn_msg *m, struct cairn_mval *arr, struct cairn_mval *val)
{
    if (!arr || !val)
        return NULL;
    if (arr->kind != CAIRN_MV_ARRAY) {
        build_fail(m, CAIRN_EINVAL, "push into a value that is not an array");
        return NULL;
    }
    if (grow(m, arr, sizeof(struct cairn_mval *)) != CAIRN_OK)
        return NULL;
    arr->v.items[arr->len++] = val;
    return val;
}

/* Deep copy of a value into m (src may belong to another message). */
static struct cairn_mval *node_copy(struct cairn_msg *m, const struct cairn_mval *src, unsigned depth)
{
    if (!src)
        return NULL;
    if (depth > CAIRN_PROTO_MAX_DEPTH) {
        build_fail(m, CAIRN_ETOOBIG, "value nested deeper than %u", CAIRN_PROTO_MAX_DEPTH);
        return NULL;
    }
    switch (src->kind) {
    case CAIRN_MV_STR: case CAIRN_MV_BIN:
        return node_bytes(m, src->kind, src->v.bytes, src->len);
    case CAIRN_MV_ARRAY: {
        struct cairn_mval *a = node_new(m, CAIRN_MV_ARRAY);
        for (uint32_t i = 0; a && i < src->len; i++)
            if (!arr_push(m, a, node_copy(m, src->v.items[i], depth + 1)))
                return NULL;
        return a;
    }
    case CAIRN_MV_MAP: {
        struct cairn_mval *mm = node_new(m, CAIRN_MV_MAP);
        for (uint32_t i = 0; mm && i < src->len; i++)
            if (!map_put(m, mm, src->v.kvs[i].key, node_copy(m, src->v.kvs[i].val, depth + 1)))
                return NULL;
        return mm;
    }
    default: {
        struct cairn_mval *v = node_new(m, src->kind);
        if (v)
            v->v = src->v;
        return v;
    }
    }
}

void cairn_mval_put_u64(struct cairn_msg *m, struct cairn_mval *map, const char *key, uint64_t v)
{
    if (map)
        map_put(m, map, key, node_uint(m, v));
}
void cairn_mval_put_i64(struct cairn_msg *m, struct cairn_mval *map, const char *key, int64_t v)
{
    if (map)
        map_put(m, map, key, node_int(m, v));
}
void cairn_mval_put_bool(struct cairn_msg *m, struct cairn_mval *map, const char *key, bool v)
{
    if (map)
        map_put(m, map, key, node_bool(m, v));
}
void cairn_mval_put_strn(struct cairn_msg *m, struct cairn_mval *map, const char *key, const char *s, size_t len)
{
    if (map)
        map_put(m, map, key, node_bytes(m, CAIRN_MV_STR, s, len));
}
void cairn_mval_put_str(struct cairn_msg *m, struct cairn_mval *map, const char *key, const char *s)
{
    cairn_mval_put_strn(m, map, key, s, s ? strlen(s) : 0);
}
void cairn_mval_put_bin(struct cairn_msg *m, struct cairn_mval *map, const char *key, const void *p, size_t len)
{
    if (map)
        map_put(m, map, key, node_bytes(m, CAIRN_MV_BIN, p, len));
}
void cairn_mval_put_value(struct cairn_msg *m, struct cairn_mval *map, const char *key, const struct cairn_mval *v)
{
    if (map)
        map_put(m, map, key, node_copy(m, v, 0));
}
struct cairn_mval *cairn_mval_put_array(struct cairn_msg *m, struct cairn_mval *map, const char *key)
{
    return map ? map_put(m, map, key, node_new(m, CAIRN_MV_ARRAY)) : NULL;
}
struct cairn_mval *cairn_mval_put_map(struct cairn_msg *m, struct cairn_mval *map, const char *key)
{
    return map ? map_put(m, map, key, node_new(m, CAIRN_MV_MAP)) : NULL;
}

void cairn_mval_push_u64(struct cairn_msg *m, struct cairn_mval *arr, uint64_t v)
{
    if (arr)
        arr_push(m, arr, node_uint(m, v));
}
void cairn_mval_push_i64(struct cairn_msg *m, struct cairn_mval *arr, int64_t v)
{
    if (arr)
        arr_push(m, arr, node_int(m, v));
}
void cairn_mval_push_bool(struct cairn_msg *m, struct cairn_mval *arr, bool v)
{
    if (arr)
        arr_push(m, arr, node_bool(m, v));
}
void cairn_mval_push_strn(struct cairn_msg *m, struct cairn_mval *arr, const char *s, size_t len)
{
    if (arr)
        arr_push(m, arr, node_bytes(m, CAIRN_MV_STR, s, len));
}
void cairn_mval_push_str(struct cairn_msg *m, struct cairn_mval *arr, const char *s)
{
    cairn_mval_push_strn(m, arr, s, s ? strlen(s) : 0);
}
void cairn_mval_push_bin(struct cairn_msg *m, struct cairn_mval *arr, const void *p, size_t len)
{
    if (arr)
        arr_push(m, arr, node_bytes(m, CAIRN_MV_BIN, p, len));
}
struct cairn_mval *cairn_mval_push_array(struct cairn_msg *m, struct cairn_mval *arr)
{
    return arr ? arr_push(m, arr, node_new(m, CAIRN_MV_ARRAY)) : NULL;
}
struct cairn_mval *cairn_mval_push_map(struct cairn_msg *m, struct cairn_mval *arr)
{
    return arr ? arr_push(m, arr, node_new(m, CAIRN_MV_MAP)) : NULL;
}

void cairn_msg_set_u64(struct cairn_msg *m, const char *field, uint64_t v) { cairn_mval_put_u64(m, m->fields, field, v); }
void cairn_msg_set_i64(struct cairn_msg *m, const char *field, int64_t v) { cairn_mval_put_i64(m, m->fields, field, v); }
void cairn_msg_set_bool(struct cairn_msg *m, const char *field, bool v) { cairn_mval_put_bool(m, m->fields, field, v); }
void cairn_msg_set_str(struct cairn_msg *m, const char *field, const char *s) { cairn_mval_put_str(m, m->fields, field, s); }
void cairn_msg_set_strn(struct cairn_msg *m, const char *field, const char *s, size_t len)
{
    cairn_mval_put_strn(m, m->fields, field, s, len);
}
void cairn_msg_set_bin(struct cairn_msg *m, const char *field, const void *p, size_t len)
{
    cairn_mval_put_bin(m, m->fields, field, p, len);
}
struct cairn_mval *cairn_msg_set_array(struct cairn_msg *m, const char *field)
{
    return cairn_mval_put_array(m, m->fields, field);
}
struct cairn_mval *cairn_msg_set_map(struct cairn_msg *m, const char *field)
{
    return cairn_mval_put_map(m, m->fields, field);
}
void cairn_msg_set_value(struct cairn_msg *m, const char *field, const struct cairn_mval *v)
{
    cairn_mval_put_value(m, m->fields, field, v);
}

void cairn_msg_unset(struct cairn_msg *m, const char *field)
{
    struct mkv *kv = map_find(m->fields, field, strlen(field));
    if (!kv)
        return;
    wipe_value(kv->val);
    size_t i = (size_t)(kv - m->fields->v.kvs);
    memmove(kv, kv + 1, (m->fields->len - i - 1) * sizeof(*kv));
    m->fields->len--;
}

/* ---- raw frames -------------------------------------------------------------------------------- */

size_t cairn_msg_frame_count(const struct cairn_msg *m) { return m->nframes; }

int cairn_msg_frame(const struct cairn_msg *m, size_t i, const uint8_t **p, size_t *len)
{
    if (i >= m->nframes)
        return cairn_err_set(CAIRN_EINVAL, "frame %zu out of range (%zu frames)", i, m->nframes);
    *p = m->frames[i].p;
    *len = m->frames[i].len;
    return CAIRN_OK;
}

/* Append a frame; on failure the frame is released and the error recorded. */
static int frame_append(struct cairn_msg *m, const uint8_t *p, size_t len, void (*release)(void *), void *ctx)
{
    int rc = CAIRN_OK;
    if (m->nframes >= CAIRN_PROTO_MAX_FRAMES) {
        rc = cairn_err_set(CAIRN_ETOOBIG, "more than %u raw frames", CAIRN_PROTO_MAX_FRAMES);
        goto fail;
    }
    if (len > CAIRN_PROTO_MAX_FRAME) {
        rc = cairn_err_set(CAIRN_ETOOBIG, "raw frame %zu is %zu bytes, limit %u", m->nframes, len,
                           CAIRN_PROTO_MAX_FRAME);
        goto fail;
    }
    if (m->payload + len > CAIRN_PROTO_MAX_PAYLOAD) {
        rc = cairn_err_set(CAIRN_ETOOBIG, "raw frames exceed %u bytes in total", CAIRN_PROTO_MAX_PAYLOAD);
        goto fail;
    }
    if (!release) {
        uint8_t *copy = cairn_malloc(len ? len : 1);
        if (!copy) {
            rc = cairn_err_set(CAIRN_ENOMEM, "out of memory copying a %zu-byte frame", len);
            goto fail;
        }
        if (len)
            memcpy(copy, p, len);
        p = copy;
    }
    rc = cairn_array_grow((void **)&m->frames, &m->fcap, m->nframes + 1, sizeof(*m->frames));
    if (rc != CAIRN_OK) {
        if (!release)
            cairn_free((void *)p);
        goto fail;
    }
    m->frames[m->nframes++] = (struct frame){.p = p, .len = len, .release = release, .ctx = ctx};
    m->payload += len;
    return CAIRN_OK;
fail:
    if (release)
        release(ctx);
    return rc;
}

void cairn_msg_add_frame(struct cairn_msg *m, const void *p, size_t len)
{
    int rc = frame_append(m, p, len, NULL, NULL);
    if (rc != CAIRN_OK)
        build_fail(m, rc, "%s", cairn_err_msg());
}

int cairn_msg_build_error(const struct cairn_msg *m) { return m->err; }

/* ---- validation -------------------------------------------------------------------------------- */

struct vctx {
    const struct cairn_msg *m;
    const char *what; /* "ping request" */
    char path[256];
    size_t plen;
};

CAIRN_PRINTF(3, 4) static int vfail(struct vctx *c, int code, const char *fmt, ...)
{
    char detail[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    if (c->plen)
        return cairn_err_set(code, "%s: field '%s': %s", c->what, c->path, detail);
    return cairn_err_set(code, "%s: %s", c->what, detail);
}

/* Path helpers: push a component, returning the old length to restore. */
static size_t path_push_key(struct vctx *c, const char *key, size_t klen)
{
    size_t old = c->plen;
    int n = snprintf(c->path + c->plen, sizeof(c->path) - c->plen, "%s%.*s", c->plen ? "." : "",
                     (int)CAIRN_MIN(klen, 64u), key);
    if (n > 0)
        c->plen = CAIRN_MIN(c->plen + (size_t)n, sizeof(c->path) - 1);
    return old;
}

static size_t path_push_index(struct vctx *c, size_t i)
{
    size_t old = c->plen;
    int n = snprintf(c->path + c->plen, sizeof(c->path) - c->plen, "[%zu]", i);
    if (n > 0)
        c->plen = CAIRN_MIN(c->plen + (size_t)n, sizeof(c->path) - 1);
    return old;
}

static void path_pop(struct vctx *c, size_t old)
{
    c->plen = old;
    c->path[old] = '\0';
}

static const char *kind_name(uint8_t kind)
{
    static const char *const names[] = {"?", "nil", "bool", "uint", "negative int", "float32",
                                        "float64", "str", "bin", "array", "map"};
    return kind < CAIRN_ARRAY_LEN(names) ? names[kind] : "?";
}

/* Lengths: over max -> ETOOBIG, under min -> EPROTO. */
static int check_len(struct vctx *c, uint64_t len, uint64_t min, uint64_t max, const char *unit)
{
    if (len > max)
        return vfail(c, CAIRN_ETOOBIG, "%" PRIu64 " %s, limit %" PRIu64, len, unit, max);
    if (len < min)
        return vfail(c, CAIRN_EPROTO, "%" PRIu64 " %s, minimum %" PRIu64, len, unit, min);
    return CAIRN_OK;
}

static int check_str(struct vctx *c, const struct cairn_mval *v, uint64_t min, uint64_t max)
{
    if (v->kind != CAIRN_MV_STR)
        return vfail(c, CAIRN_EPROTO, "expected str, got %s", kind_name(v->kind));
    CAIRN_FORWARD_IF_ERROR(check_len(c, v->len, min, max, "bytes"));
    if (memchr(v->v.bytes, '\0', v->len))
        return vfail(c, CAIRN_EPROTO, "string contains a NUL byte");
    return CAIRN_OK;
}

static int check_bin(struct vctx *c, const struct cairn_mval *v, uint64_t min, uint64_t max)
{
    if (v->kind != CAIRN_MV_BIN)
        return vfail(c, CAIRN_EPROTO, "expected bin, got %s", kind_name(v->kind));
    return check_len(c, v->len, min, max, "bytes");
}

static int check_uint(struct vctx *c, const struct cairn_mval *v, uint64_t min, uint64_t max)
{
    if (v->kind != CAIRN_MV_UINT)
        return vfail(c, CAIRN_EPROTO, "expected uint, got %s", kind_name(v->kind));
    if (v->v.u > max)
        return vfail(c, CAIRN_ETOOBIG, "value %" PRIu64 " over the maximum %" PRIu64, v->v.u, max);
    if (v->v.u < min)
        return vfail(c, CAIRN_EPROTO, "value %" PRIu64 " under the minimum %" PRIu64, v->v.u, min);
    return CAIRN_OK;
}

/* A map checked against a model: bounded entry count, no duplicate keys. */
static int check_map_keys(struct vctx *c, const struct cairn_mval *v, uint64_t max)
{
    if (v->len > max)
        return vfail(c, CAIRN_ETOOBIG, "map of %u entries, limit %" PRIu64, v->len, max);
    for (uint32_t i = 0; i < v->len; i++) {
        const struct mkv *a = &v->v.kvs[i];
        if (memchr(a->key, '\0', a->klen))
            return vfail(c, CAIRN_EPROTO, "map key contains a NUL byte");
        for (uint32_t j = 0; j < i; j++)
            if (v->v.kvs[j].klen == a->klen && memcmp(v->v.kvs[j].key, a->key, a->klen) == 0)
                return vfail(c, CAIRN_EPROTO, "duplicate key '%.*s'", (int)CAIRN_MIN(a->klen, 64u), a->key);
    }
    return CAIRN_OK;
}

static int check_free(struct vctx *c, const struct cairn_mval *v, const struct cairn_proto_field *fd, unsigned depth)
{
    if (depth > CAIRN_PROTO_MAP_DEPTH)
        return vfail(c, CAIRN_ETOOBIG, "nested deeper than %u", CAIRN_PROTO_MAP_DEPTH);
    switch (v->kind) {
    case CAIRN_MV_STR:
        return check_str(c, v, 0, fd->emax);
    case CAIRN_MV_BIN:
        return check_bin(c, v, 0, fd->emax);
    case CAIRN_MV_ARRAY:
        if (v->len > fd->max)
            return vfail(c, CAIRN_ETOOBIG, "array of %u items, limit %" PRIu64, v->len, fd->max);
        for (uint32_t i = 0; i < v->len; i++) {
            size_t old = path_push_index(c, i);
            CAIRN_FORWARD_IF_ERROR(check_free(c, v->v.items[i], fd, depth + 1));
            path_pop(c, old);
        }
        return CAIRN_OK;
    case CAIRN_MV_MAP:
        CAIRN_FORWARD_IF_ERROR(check_map_keys(c, v, fd->max));
        for (uint32_t i = 0; i < v->len; i++) {
            size_t old = path_push_key(c, v->v.kvs[i].key, v->v.kvs[i].klen);
            CAIRN_FORWARD_IF_ERROR(check_free(c, v->v.kvs[i].val, fd, depth + 1));
            path_pop(c, old);
        }
        return CAIRN_OK;
    default:
        return CAIRN_OK; /* nil, bool, integers, floats */
    }
}

static int check_fields(struct vctx *c, const struct cairn_mval *map, const struct cairn_proto_field *fs, size_t n);

static int check_value(struct vctx *c, const struct cairn_mval *v, const struct cairn_proto_field *fd)
{
    switch (fd->kind) {
    case CAIRN_PK_U64:
        return check_uint(c, v, fd->min, fd->max);
    case CAIRN_PK_I64:
        if (v->kind == CAIRN_MV_INT || (v->kind == CAIRN_MV_UINT && v->v.u <= (uint64_t)INT64_MAX))
            return CAIRN_OK;
        return vfail(c, v->kind == CAIRN_MV_UINT ? CAIRN_ETOOBIG : CAIRN_EPROTO, "expected int, got %s",
                     kind_name(v->kind));
    case CAIRN_PK_BOOL:
        if (v->kind != CAIRN_MV_BOOL)
            return vfail(c, CAIRN_EPROTO, "expected bool, got %s", kind_name(v->kind));
        return CAIRN_OK;
    case CAIRN_PK_STR:
        return check_str(c, v, fd->min, fd->max);
    case CAIRN_PK_BIN:
        return check_bin(c, v, fd->min, fd->max);
    case CAIRN_PK_MAP:
        if (v->kind != CAIRN_MV_MAP)
            return vfail(c, CAIRN_EPROTO, "expected map, got %s", kind_name(v->kind));
        return check_free(c, v, fd, 0);
    case CAIRN_PK_REC:
        if (v->kind != CAIRN_MV_MAP)
            return vfail(c, CAIRN_EPROTO, "expected map (%s record), got %s", fd->rec->name, kind_name(v->kind));
        return check_fields(c, v, fd->rec->fields, fd->rec->nfields);
    case CAIRN_PK_STRS: case CAIRN_PK_BINS: case CAIRN_PK_U64S: case CAIRN_PK_RECS:
        break;
    }
    if (v->kind != CAIRN_MV_ARRAY)
        return vfail(c, CAIRN_EPROTO, "expected array, got %s", kind_name(v->kind));
    CAIRN_FORWARD_IF_ERROR(check_len(c, v->len, fd->min, fd->max, "items"));
    for (uint32_t i = 0; i < v->len; i++) {
        const struct cairn_mval *e = v->v.items[i];
        size_t old = path_push_index(c, i);
        int rc;
        switch (fd->kind) {
        case CAIRN_PK_STRS: rc = check_str(c, e, fd->emin, fd->emax); break;
        case CAIRN_PK_BINS: rc = check_bin(c, e, fd->emin, fd->emax); break;
        case CAIRN_PK_U64S: rc = check_uint(c, e, fd->emin, fd->emax); break;
        default:
            rc = e->kind == CAIRN_MV_MAP
                     ? check_fields(c, e, fd->rec->fields, fd->rec->nfields)
                     : vfail(c, CAIRN_EPROTO, "expected map (%s record), got %s", fd->rec->name, kind_name(e->kind));
            break;
        }
        if (rc != CAIRN_OK)
            return rc;
        path_pop(c, old);
    }
    return CAIRN_OK;
}

/* Check a map against a field list; fields not in the list are ignored (forward compatibility). */
static int check_fields(struct vctx *c, const struct cairn_mval *map, const struct cairn_proto_field *fs, size_t n)
{
    CAIRN_FORWARD_IF_ERROR(check_map_keys(c, map, CAIRN_PROTO_MAX_KEYS));
    for (size_t i = 0; i < n; i++) {
        const struct cairn_proto_field *fd = &fs[i];
        size_t old = path_push_key(c, fd->name, strlen(fd->name));
        const struct mkv *kv = map_find(map, fd->name, strlen(fd->name));
        if (!kv) {
            if (fd->flags & CAIRN_PF_REQUIRED)
                return vfail(c, CAIRN_EPROTO, "required field is missing");
        } else {
            CAIRN_FORWARD_IF_ERROR(check_value(c, kv->val, fd));
        }
        path_pop(c, old);
    }
    return CAIRN_OK;
}

/* The whole message against the model: envelope rules, fields, raw frames. */
static int validate_msg(const struct cairn_msg *m)
{
    char what[96];
    int dir = m->reply ? CAIRN_DIR_REPLY : CAIRN_DIR_REQUEST;
    const struct cairn_proto_msginfo *mi = cairn_proto_msginfo(m->type);
    snprintf(what, sizeof(what), "%s %s", mi ? mi->name : "message", dir_name(dir));
    struct vctx c = {.m = m, .what = what};
    bool error_reply = m->reply && m->code != 0;

    if (!mi && !error_reply)
        return cairn_err_set(CAIRN_EPROTO, "unknown message type %u", m->type);
    if (m->type == 0 || m->type > 65535)
        return cairn_err_set(CAIRN_EPROTO, "message type %u out of range", m->type);
    if (mi && m->reply && mi->shape == CAIRN_SHAPE_ONEWAY)
        return vfail(&c, CAIRN_EPROTO, "message has no reply");
    if (mi && !m->reply) {
        if (mi->route == CAIRN_ROUTE_CLIENT_APP && !m->app)
            return vfail(&c, CAIRN_EPROTO, "envelope key 'app' is missing");
        if ((mi->route == CAIRN_ROUTE_CLIENT_APP || mi->route == CAIRN_ROUTE_CLIENT_ADMIN) && !m->tok)
            return vfail(&c, CAIRN_EPROTO, "envelope key 'tok' is missing");
    }
    if (error_reply) {
        if (m->nframes)
            return vfail(&c, CAIRN_EPROTO, "an error reply carries no raw frames");
        return check_map_keys(&c, m->fields, CAIRN_PROTO_MAX_KEYS);
    }
    const struct cairn_proto_dirinfo *di = &mi->dir[dir];
    CAIRN_FORWARD_IF_ERROR(check_fields(&c, m->fields, di->fields, di->nfields));
    if (m->nframes > di->max_frames)
        return vfail(&c, CAIRN_ETOOBIG, "%zu raw frames, limit %u", m->nframes, di->max_frames);
    if (di->frame_count) {
        const struct cairn_mval *v = cairn_mval_get(m->fields, di->frame_count);
        uint64_t want = !v ? 0 : v->kind == CAIRN_MV_UINT ? v->v.u : v->len;
        if (want != m->nframes)
            return vfail(&c, CAIRN_EPROTO, "%zu raw frames, but '%s' says %" PRIu64, m->nframes, di->frame_count,
                         want);
    }
    return CAIRN_OK;
}

/* ---- encoding ---------------------------------------------------------------------------------- */

struct sink {
    struct cairn_buf buf;
    int err;
};

static int sink_write(void *data, const char *p, size_t n)
{
    struct sink *s = data;
    if (s->err)
        return -1;
    int rc = cairn_buf_append(&s->buf, p, n);
    if (rc != CAIRN_OK) {
        s->err = rc;
        return -1;
    }
    return 0;
}

static int pack_str(msgpack_packer *pk, const char *s, size_t len)
{
    return msgpack_pack_str(pk, len) || msgpack_pack_str_body(pk, s, len) ? -1 : 0;
}

static int pack_value(msgpack_packer *pk, const struct cairn_mval *v)
{
    switch (v->kind) {
    case CAIRN_MV_NIL: return msgpack_pack_nil(pk);
    case CAIRN_MV_BOOL: return v->v.b ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    case CAIRN_MV_UINT: return msgpack_pack_uint64(pk, v->v.u);
    case CAIRN_MV_INT: return msgpack_pack_int64(pk, v->v.i);
    case CAIRN_MV_F32: return msgpack_pack_float(pk, (float)v->v.f);
    case CAIRN_MV_F64: return msgpack_pack_double(pk, v->v.f);
    case CAIRN_MV_STR: return pack_str(pk, (const char *)v->v.bytes, v->len);
    case CAIRN_MV_BIN:
        return msgpack_pack_bin(pk, v->len) || msgpack_pack_bin_body(pk, v->v.bytes, v->len) ? -1 : 0;
    case CAIRN_MV_ARRAY:
        if (msgpack_pack_array(pk, v->len))
            return -1;
        for (uint32_t i = 0; i < v->len; i++)
            if (pack_value(pk, v->v.items[i]))
                return -1;
        return 0;
    case CAIRN_MV_MAP:
        if (msgpack_pack_map(pk, v->len))
            return -1;
        for (uint32_t i = 0; i < v->len; i++)
            if (pack_str(pk, v->v.kvs[i].key, v->v.kvs[i].klen) || pack_value(pk, v->v.kvs[i].val))
                return -1;
        return 0;
    default:
        return -1;
    }
}

int cairn_msg_encode(const struct cairn_msg *m, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (m->err)
        return cairn_err_set(m->err, "%s", m->errmsg);
    CAIRN_FORWARD_IF_ERROR(validate_msg(m));
    return cairn__msg_encode_unchecked(m, out, len);
}

int cairn__msg_encode_unchecked(const struct cairn_msg *m, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    struct sink s = {.err = 0};
    cairn_buf_init(&s.buf, CAIRN_PROTO_MAX_ENVELOPE);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &s, sink_write);
    uint32_t nkeys = 4 + (m->app != NULL) + (m->tok != NULL) + (m->reply ? 1 + (m->text != NULL) : 0);
    int bad = msgpack_pack_map(&pk, nkeys);
    bad = bad || pack_str(&pk, "v", 1) || msgpack_pack_uint64(&pk, CAIRN_PROTO_VERSION);
    bad = bad || pack_str(&pk, "t", 1) || msgpack_pack_uint64(&pk, m->type);
    bad = bad || pack_str(&pk, "rid", 3) || msgpack_pack_uint64(&pk, m->rid);
    if (m->app)
        bad = bad || pack_str(&pk, "app", 3) || pack_str(&pk, m->app, strlen(m->app));
    if (m->tok)
        bad = bad || pack_str(&pk, "tok", 3) || msgpack_pack_bin(&pk, m->tok_len) ||
              msgpack_pack_bin_body(&pk, m->tok, m->tok_len);
    if (m->reply) {
        bad = bad || pack_str(&pk, "code", 4) || msgpack_pack_uint64(&pk, m->code);
        if (m->text)
            bad = bad || pack_str(&pk, "msg", 3) || pack_str(&pk, m->text, strlen(m->text));
    }
    bad = bad || pack_str(&pk, "f", 1) || pack_value(&pk, m->fields);
    if (bad) {
        int code = s.err ? s.err : CAIRN_EINTERNAL;
        if (s.buf.data)
            explicit_bzero(s.buf.data, s.buf.len);
        cairn_buf_release(&s.buf);
        if (code == CAIRN_ETOOBIG)
            return cairn_err_set(code, "%s: envelope over %u bytes", cairn_msg_type_name(m->type),
                                 CAIRN_PROTO_MAX_ENVELOPE);
        return cairn_err_set(code, "%s: cannot encode the envelope", cairn_msg_type_name(m->type));
    }
    *out = cairn_buf_detach(&s.buf, len);
    return CAIRN_OK;
}

/* ---- decoding ---------------------------------------------------------------------------------- */

static uint64_t load_be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/*
 * One pass over the raw msgpack bytes, allocating nothing, before msgpack-c
 * sees them (the allocation guard described at the top of this file).
 */
static int prescan(const uint8_t *p, size_t len)
{
    const uint8_t *start = p, *end = p + len;
    uint32_t left[CAIRN_PROTO_MAX_DEPTH + 1];
    int d = 0;
    size_t nodes = 0;
    left[0] = 1;
    while (d >= 0) {
        if (left[d] == 0) {
            d--;
            continue;
        }
        left[d]--;
        if (p >= end)
            return cairn_err_set(CAIRN_EPROTO, "envelope truncated at byte %zu", (size_t)(p - start));
        size_t off = (size_t)(p - start);
        uint8_t b = *p++;
        if (++nodes > CAIRN_PROTO_MAX_NODES)
            return cairn_err_set(CAIRN_ETOOBIG, "envelope holds more than %u values", CAIRN_PROTO_MAX_NODES);
        uint64_t skip = 0, count = 0;
        unsigned hdr = 0; /* bytes of a length/count that follow the type byte */
        int container = 0;  /* 1 array, 2 map */
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            /* fixint, nil, bool */
        } else if (b <= 0x8f) {
            count = b & 0x0f;
            container = 2;
        } else if (b <= 0x9f) {
            count = b & 0x0f;
            container = 1;
        } else if (b <= 0xbf) {
            skip = b & 0x1f;
        } else {
            switch (b) {
            case 0xc4: case 0xd9: hdr = 1; break;                 /* bin8, str8 */
            case 0xc5: case 0xda: hdr = 2; break;                 /* bin16, str16 */
            case 0xc6: case 0xdb: hdr = 4; break;                 /* bin32, str32 */
            case 0xca: skip = 4; break;                           /* float32 */
            case 0xcb: skip = 8; break;                           /* float64 */
            case 0xcc: case 0xd0: skip = 1; break;
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xce: case 0xd2: skip = 4; break;
            case 0xcf: case 0xd3: skip = 8; break;
            case 0xdc: hdr = 2; container = 1; break;
            case 0xdd: hdr = 4; container = 1; break;
            case 0xde: hdr = 2; container = 2; break;
            case 0xdf: hdr = 4; container = 2; break;
            case 0xc1:
                return cairn_err_set(CAIRN_EPROTO, "envelope byte %zu: reserved msgpack type 0xc1", off);
            default: /* 0xc7-0xc9, 0xd4-0xd8 */
                return cairn_err_set(CAIRN_EPROTO, "envelope byte %zu: msgpack ext types are not used", off);
            }
            if (hdr) {
                if ((size_t)(end - p) < hdr)
                    return cairn_err_set(CAIRN_EPROTO, "envelope truncated in the header at byte %zu", off);
                uint64_t n = load_be(p, hdr);
                p += hdr;
                if (container)
                    count = n;
                else
                    skip = n;
            }
        }
        if (skip > (uint64_t)(end - p))
            return cairn_err_set(CAIRN_EPROTO, "envelope byte %zu: value of %" PRIu64 " bytes, only %zu left", off,
                                 skip, (size_t)(end - p));
        p += skip;
        if (container) {
            uint64_t items = container == 2 ? count * 2 : count;
            if (items > (uint64_t)(end - p))
                return cairn_err_set(CAIRN_EPROTO, "envelope byte %zu: %s of %" PRIu64 " entries, only %zu bytes left",
                                     off, container == 2 ? "map" : "array", count, (size_t)(end - p));
            if (items) {
                if (d + 1 > (int)CAIRN_PROTO_MAX_DEPTH)
                    return cairn_err_set(CAIRN_ETOOBIG, "envelope nested deeper than %u", CAIRN_PROTO_MAX_DEPTH);
                left[++d] = (uint32_t)items;
            }
        }
    }
    if (p != end)
        return cairn_err_set(CAIRN_EPROTO, "envelope has %zu bytes after its value", (size_t)(end - p));
    return CAIRN_OK;
}

/* msgpack_object -> our tree. Depth and sizes were bounded by prescan(). */
static int convert(msgpack_zone *z, const msgpack_object *o, struct cairn_mval **out)
{
    struct cairn_mval *v = zalloc(z, sizeof(*v));
    if (!v)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory decoding a message");
    memset(v, 0, sizeof(*v));
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: v->kind = CAIRN_MV_NIL; break;
    case MSGPACK_OBJECT_BOOLEAN: v->kind = CAIRN_MV_BOOL; v->v.b = o->via.boolean; break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: v->kind = CAIRN_MV_UINT; v->v.u = o->via.u64; break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        v->kind = o->via.i64 < 0 ? CAIRN_MV_INT : CAIRN_MV_UINT;
        v->v.i = o->via.i64;
        break;
    case MSGPACK_OBJECT_FLOAT32: v->kind = CAIRN_MV_F32; v->v.f = o->via.f64; break;
    case MSGPACK_OBJECT_FLOAT64: v->kind = CAIRN_MV_F64; v->v.f = o->via.f64; break;
    case MSGPACK_OBJECT_STR: case MSGPACK_OBJECT_BIN: {
        const char *p = o->type == MSGPACK_OBJECT_STR ? o->via.str.ptr : o->via.bin.ptr;
        uint32_t n = o->type == MSGPACK_OBJECT_STR ? o->via.str.size : o->via.bin.size;
        v->kind = o->type == MSGPACK_OBJECT_STR ? CAIRN_MV_STR : CAIRN_MV_BIN;
        v->v.bytes = zalloc(z, (size_t)n + 1);
        if (!v->v.bytes)
            return cairn_err_set(CAIRN_ENOMEM, "out of memory decoding a message");
        if (n)
            memcpy(v->v.bytes, p, n);
        v->v.bytes[n] = '\0';
        v->len = n;
        break;
    }
    case MSGPACK_OBJECT_ARRAY: {
        v->kind = CAIRN_MV_ARRAY;
        uint32_t n = o->via.array.size;
        v->v.items = zalloc(z, (size_t)n * sizeof(*v->v.items));
        if (!v->v.items)
            return cairn_err_set(CAIRN_ENOMEM, "out of memory decoding a message");
        for (uint32_t i = 0; i < n; i++)
            CAIRN_FORWARD_IF_ERROR(convert(z, &o->via.array.ptr[i], &v->v.items[i]));
        v->len = v->cap = n;
        break;
    }
    case MSGPACK_OBJECT_MAP: {
        v->kind = CAIRN_MV_MAP;
        uint32_t n = o->via.map.size;
        v->v.kvs = zalloc(z, (size_t)n * sizeof(*v->v.kvs));
        if (!v->v.kvs)
            return cairn_err_set(CAIRN_ENOMEM, "out of memory decoding a message");
        for (uint32_t i = 0; i < n; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            if (k->type != MSGPACK_OBJECT_STR)
                return cairn_err_set(CAIRN_EPROTO, "map key is a %s, not a string",
                                     k->type == MSGPACK_OBJECT_BIN ? "bin" : "non-string value");
            if (k->via.str.size > CAIRN_PROTO_MAX_KEY)
                return cairn_err_set(CAIRN_ETOOBIG, "map key of %u bytes, limit %u", k->via.str.size,
                                     CAIRN_PROTO_MAX_KEY);
            if (memchr(k->via.str.ptr, '\0', k->via.str.size))
                return cairn_err_set(CAIRN_EPROTO, "map key contains a NUL byte");
            char *key = zstrndup(z, k->via.str.ptr, k->via.str.size);
            if (!key)
                return cairn_err_set(CAIRN_ENOMEM, "out of memory decoding a message");
            v->v.kvs[i].key = key;
            v->v.kvs[i].klen = k->via.str.size;
            CAIRN_FORWARD_IF_ERROR(convert(z, &o->via.map.ptr[i].val, &v->v.kvs[i].val));
        }
        v->len = v->cap = n;
        break;
    }
    default:
        return cairn_err_set(CAIRN_EPROTO, "unsupported msgpack type %d", (int)o->type);
    }
    *out = v;
    return CAIRN_OK;
}

static bool key_is(const msgpack_object *k, const char *name)
{
    size_t n = strlen(name);
    return k->via.str.size == n && memcmp(k->via.str.ptr, name, n) == 0;
}

/* Envelope keys we know, each found at most once. */
enum { EK_V, EK_T, EK_RID, EK_APP, EK_TOK, EK_CODE, EK_MSG, EK_F, EK__COUNT };
static const char *const ek_names[EK__COUNT] = {"v", "t", "rid", "app", "tok", "code", "msg", "f"};

static int decode_envelope(struct cairn_msg *m, const uint8_t *env, size_t len)
{
    int rc;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (len == 0) {
        rc = cairn_err_set(CAIRN_EPROTO, "empty envelope frame");
        goto out;
    }
    if (len > CAIRN_PROTO_MAX_ENVELOPE) {
        rc = cairn_err_set(CAIRN_ETOOBIG, "envelope of %zu bytes, limit %u", len, CAIRN_PROTO_MAX_ENVELOPE);
        goto out;
    }
    rc = prescan(env, len);
    if (rc != CAIRN_OK)
        goto out;
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(&u, (const char *)env, len, &off);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR) {
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory unpacking a %zu-byte envelope", len);
        goto out;
    }
    if (ur != MSGPACK_UNPACK_SUCCESS || off != len) {
        rc = cairn_err_set(CAIRN_EPROTO, "envelope is not one msgpack value");
        goto out;
    }
    const msgpack_object *root = &u.data;
    if (root->type != MSGPACK_OBJECT_MAP) {
        rc = cairn_err_set(CAIRN_EPROTO, "envelope is not a map");
        goto out;
    }
    if (root->via.map.size > CAIRN_PROTO_MAX_KEYS) {
        rc = cairn_err_set(CAIRN_ETOOBIG, "envelope has %u keys, limit %u", root->via.map.size, CAIRN_PROTO_MAX_KEYS);
        goto out;
    }
    const msgpack_object *ek[EK__COUNT] = {NULL};
    for (uint32_t i = 0; i < root->via.map.size; i++) {
        const msgpack_object *k = &root->via.map.ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR) {
            rc = cairn_err_set(CAIRN_EPROTO, "envelope key %u is not a string", i);
            goto out;
        }
        for (int e = 0; e < EK__COUNT; e++) {
            if (!key_is(k, ek_names[e]))
                continue;
            if (ek[e]) {
                rc = cairn_err_set(CAIRN_EPROTO, "envelope key '%s' appears twice", ek_names[e]);
                goto out;
            }
            ek[e] = &root->via.map.ptr[i].val;
        }
    }
    /* type and rid first, best effort, so that even a failed decode can be answered */
    if (ek[EK_T] && ek[EK_T]->type == MSGPACK_OBJECT_POSITIVE_INTEGER && ek[EK_T]->via.u64 <= 65535)
        m->type = (unsigned)ek[EK_T]->via.u64;
    if (ek[EK_RID] && ek[EK_RID]->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        m->rid = ek[EK_RID]->via.u64;

    if (!ek[EK_V] || ek[EK_V]->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        rc = cairn_err_set(CAIRN_EPROTO, "envelope key 'v' is %s", ek[EK_V] ? "not an unsigned integer" : "missing");
        goto out;
    }
    if (ek[EK_V]->via.u64 != CAIRN_PROTO_VERSION) {
        rc = cairn_err_set(CAIRN_EVERSION, "protocol version %" PRIu64 " is not supported (this side speaks %u)",
                           ek[EK_V]->via.u64, CAIRN_PROTO_VERSION);
        goto out;
    }
    for (int e = EK_T; e <= EK_RID; e++)
        if (!ek[e] || ek[e]->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
            rc = cairn_err_set(CAIRN_EPROTO, "envelope key '%s' is %s", ek_names[e],
                               ek[e] ? "not an unsigned integer" : "missing");
            goto out;
        }
    if (ek[EK_T]->via.u64 == 0 || ek[EK_T]->via.u64 > 65535) {
        rc = cairn_err_set(CAIRN_EPROTO, "message type %" PRIu64 " out of range", ek[EK_T]->via.u64);
        goto out;
    }
    if (ek[EK_CODE]) {
        if (ek[EK_CODE]->type != MSGPACK_OBJECT_POSITIVE_INTEGER || ek[EK_CODE]->via.u64 > UINT32_MAX) {
            rc = cairn_err_set(CAIRN_EPROTO, "envelope key 'code' is not a 32-bit unsigned integer");
            goto out;
        }
        m->reply = true;
        m->code = (uint32_t)ek[EK_CODE]->via.u64;
    }
    if (!cairn_proto_msginfo(m->type) && !(m->reply && m->code != 0)) {
        rc = cairn_err_set(CAIRN_EPROTO, "unknown message type %u", m->type);
        goto out;
    }
    static const struct {
        int key;
        uint32_t max;
    } strs[] = {{EK_APP, CAIRN_PROTO_MAX_APP}, {EK_MSG, CAIRN_PROTO_MAX_TEXT}};
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(strs); i++) {
        const msgpack_object *o = ek[strs[i].key];
        if (!o)
            continue;
        const char *name = ek_names[strs[i].key];
        if (o->type != MSGPACK_OBJECT_STR) {
            rc = cairn_err_set(CAIRN_EPROTO, "envelope key '%s' is not a string", name);
            goto out;
        }
        if (o->via.str.size > strs[i].max) {
            rc = cairn_err_set(CAIRN_ETOOBIG, "envelope key '%s' is %u bytes, limit %u", name, o->via.str.size,
                               strs[i].max);
            goto out;
        }
        if (memchr(o->via.str.ptr, '\0', o->via.str.size)) {
            rc = cairn_err_set(CAIRN_EPROTO, "envelope key '%s' contains a NUL byte", name);
            goto out;
        }
        char *s = zstrndup(m->zone, o->via.str.ptr, o->via.str.size);
        if (!s) {
            rc = cairn_err_set(CAIRN_ENOMEM, "out of memory decoding a message");
            goto out;
        }
        if (strs[i].key == EK_APP)
            m->app = s;
        else if (m->reply && o->via.str.size) /* "msg" in a request is ignored */
            m->text = s;
    }
    if (ek[EK_TOK]) {
        const msgpack_object *o = ek[EK_TOK];
        if (o->type != MSGPACK_OBJECT_BIN) {
            rc = cairn_err_set(CAIRN_EPROTO, "envelope key 'tok' is not bin");
            goto out;
        }
        if (o->via.bin.size > CAIRN_PROTO_MAX_TOKEN) {
            rc = cairn_err_set(CAIRN_ETOOBIG, "envelope key 'tok' is %u bytes, limit %u", o->via.bin.size,
                               CAIRN_PROTO_MAX_TOKEN);
            goto out;
        }
        m->tok = zalloc(m->zone, o->via.bin.size);
        if (!m->tok) {
            rc = cairn_err_set(CAIRN_ENOMEM, "out of memory decoding a message");
            goto out;
        }
        if (o->via.bin.size)
            memcpy(m->tok, o->via.bin.ptr, o->via.bin.size);
        m->tok_len = o->via.bin.size;
    }
    if (ek[EK_F]) {
        if (ek[EK_F]->type != MSGPACK_OBJECT_MAP) {
            rc = cairn_err_set(CAIRN_EPROTO, "%s: envelope key 'f' is not a map", cairn_msg_type_name(m->type));
            goto out;
        }
        rc = convert(m->zone, ek[EK_F], &m->fields);
        if (rc != CAIRN_OK) {
            if (rc != CAIRN_ENOMEM)
                err_wrap(rc, cairn_msg_type_name(m->type), dir_name(m->reply));
            goto out;
        }
    }
    rc = CAIRN_OK;
out:
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* Turn a half-decoded message into an answerable shell: keep type, rid, route; drop the rest. */
static void make_shell(struct cairn_msg *m, struct cairn_mval *empty)
{
    wipe_secrets(m);
    release_frames(m);
    m->fields = empty;
    m->app = NULL;
    m->tok = NULL;
    m->tok_len = 0;
    m->text = NULL;
    m->reply = false;
    m->code = 0;
    m->fields->kind = CAIRN_MV_MAP;
    m->fields->len = 0;
}

int cairn__msg_decode_frames(const uint8_t *env, size_t env_len, struct cairn__frame *raw, size_t nraw,
                             struct cairn_msg **out, struct cairn_msg **shell)
{
    *out = NULL;
    if (shell)
        *shell = NULL;
    size_t taken = 0;
    int rc;
    struct cairn_mval *empty = NULL;
    struct cairn_msg *m = msg_alloc(0);
    if (!m) {
        rc = CAIRN_ENOMEM;
        goto fail;
    }
    empty = m->fields;
    rc = decode_envelope(m, env, env_len);
    if (rc != CAIRN_OK)
        goto fail;
    if (nraw > CAIRN_PROTO_MAX_FRAMES) {
        rc = cairn_err_set(CAIRN_ETOOBIG, "%s: %zu raw frames, limit %u", cairn_msg_type_name(m->type), nraw,
                           CAIRN_PROTO_MAX_FRAMES);
        goto fail;
    }
    for (; taken < nraw; taken++) {
        rc = frame_append(m, raw[taken].p, raw[taken].len, raw[taken].release, raw[taken].ctx);
        if (rc != CAIRN_OK) {
            err_wrap(rc, cairn_msg_type_name(m->type), "");
            taken++; /* frame_append released it */
            goto fail;
        }
    }
    rc = validate_msg(m);
    if (rc != CAIRN_OK)
        goto fail;
    *out = m;
    return CAIRN_OK;
fail:
    for (size_t i = taken; i < nraw; i++)
        if (raw[i].release)
            raw[i].release(raw[i].ctx);
    if (m && shell && rc != CAIRN_ENOMEM) {
        char saved[1100];
        snprintf(saved, sizeof(saved), "%s", cairn_err_msg());
        make_shell(m, empty);
        *shell = m;
        cairn_err_set(rc, "%s", saved);
    } else {
        cairn_msg_destroy(&m);
    }
    return rc;
}

int cairn_msg_decode(const uint8_t *const *frames, const size_t *lens, size_t n, struct cairn_msg **out)
{
    *out = NULL;
    if (n == 0)
        return cairn_err_set(CAIRN_EPROTO, "message has no frames");
    if (n - 1 > CAIRN_PROTO_MAX_FRAMES)
        return cairn_err_set(CAIRN_ETOOBIG, "message has %zu raw frames, limit %u", n - 1, CAIRN_PROTO_MAX_FRAMES);
    struct cairn__frame raw[CAIRN_PROTO_MAX_FRAMES];
    for (size_t i = 1; i < n; i++)
        raw[i - 1] = (struct cairn__frame){.p = frames[i], .len = lens[i]};
    return cairn__msg_decode_frames(frames[0], lens[0], raw, n - 1, out, NULL);
}

/* ---- container --------------------------------------------------------------------------------- */

static const uint8_t container_magic[4] = {'C', 'R', 'N', 'M'};

int cairn_msg_encode_container(const struct cairn_msg *m, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    uint8_t *env = NULL;
    size_t env_len = 0;
    struct cairn_buf b;
    cairn_buf_init(&b, (size_t)CAIRN_PROTO_MAX_ENVELOPE + CAIRN_PROTO_MAX_PAYLOAD + 8 + 4 * (1 + CAIRN_PROTO_MAX_FRAMES));
    int rc = cairn_msg_encode(m, &env, &env_len);
    if (rc != CAIRN_OK)
        goto out;
    uint8_t u32[4];
    rc = cairn_buf_append(&b, container_magic, 4);
    cairn_store_le32(u32, (uint32_t)(1 + m->nframes));
    rc = rc ? rc : cairn_buf_append(&b, u32, 4);
    cairn_store_le32(u32, (uint32_t)env_len);
    rc = rc ? rc : cairn_buf_append(&b, u32, 4);
    rc = rc ? rc : cairn_buf_append(&b, env, env_len);
    for (size_t i = 0; rc == CAIRN_OK && i < m->nframes; i++) {
        cairn_store_le32(u32, (uint32_t)m->frames[i].len);
        rc = cairn_buf_append(&b, u32, 4);
        rc = rc ? rc : cairn_buf_append(&b, m->frames[i].p, m->frames[i].len);
    }
    if (rc != CAIRN_OK) {
        cairn_err_set(rc, "cannot build a message container");
        goto out;
    }
    *out = cairn_buf_detach(&b, len);
out:
    if (env)
        explicit_bzero(env, env_len);
    cairn_free(env);
    cairn_buf_release(&b);
    return rc;
}

int cairn_msg_decode_container(const uint8_t *data, size_t len, struct cairn_msg **out)
{
    *out = NULL;
    if (len < 8 || memcmp(data, container_magic, 4) != 0)
        return cairn_err_set(CAIRN_EPROTO, "not a message container (magic)");
    uint32_t n = cairn_load_le32(data + 4);
    if (n == 0)
        return cairn_err_set(CAIRN_EPROTO, "message container with no frames");
    if (n - 1 > CAIRN_PROTO_MAX_FRAMES)
        return cairn_err_set(CAIRN_ETOOBIG, "message container with %u frames, limit %u", n,
                             CAIRN_PROTO_MAX_FRAMES + 1);
    const uint8_t *frames[CAIRN_PROTO_MAX_FRAMES + 1];
    size_t lens[CAIRN_PROTO_MAX_FRAMES + 1];
    size_t off = 8;
    for (uint32_t i = 0; i < n; i++) {
        if (len - off < 4)
            return cairn_err_set(CAIRN_EPROTO, "message container truncated at frame %u", i);
        uint32_t fl = cairn_load_le32(data + off);
        off += 4;
        if (fl > len - off)
            return cairn_err_set(CAIRN_EPROTO, "message container frame %u of %u bytes, only %zu left", i, fl,
                                 len - off);
        frames[i] = data + off;
        lens[i] = fl;
        off += fl;
    }
    if (off != len)
        return cairn_err_set(CAIRN_EPROTO, "message container has %zu bytes after its frames", len - off);
    return cairn_msg_decode(frames, lens, n, out);
}

/* ---- generated reference (PROTOCOL.md) -------------------------------------------------------- */

CAIRN_PRINTF(2, 3) static void md(struct sink *s, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    sink_write(s, line, CAIRN_MIN((size_t)n, sizeof(line) - 1));
}

/* Table cells: a '|' inside a description would end the cell. */
static void md_cell(struct sink *s, const char *text)
{
    for (const char *p = text; *p; p++) {
        if (*p == '|')
            sink_write(s, "\\|", 2);
        else
            sink_write(s, p, 1);
    }
}

static const char *route_text(enum cairn_proto_route r)
{
    switch (r) {
    case CAIRN_ROUTE_CLIENT_ANY: return "client -> coordinator (no token)";
    case CAIRN_ROUTE_CLIENT_APP: return "client -> coordinator (app + app token)";
    case CAIRN_ROUTE_CLIENT_ADMIN: return "client -> coordinator (admin token)";
    case CAIRN_ROUTE_WORKER: return "worker -> coordinator";
    case CAIRN_ROUTE_COORD: return "coordinator -> worker";
    case CAIRN_ROUTE_PEER: return "worker -> worker (peer)";
    }
    return "?";
}

static const char *shape_text(enum cairn_proto_shape s)
{
    switch (s) {
    case CAIRN_SHAPE_RPC: return "one reply";
    case CAIRN_SHAPE_ONEWAY: return "no reply";
    case CAIRN_SHAPE_STREAM: return "stream of replies";
    }
    return "?";
}

static void range_text(char *out, size_t n, uint64_t min, uint64_t max, const char *unit)
{
    if (min == 0 && max == UINT64_MAX)
        snprintf(out, n, "%s", "");
    else if (min == max)
        snprintf(out, n, "exactly %" PRIu64 "%s", max, unit);
    else if (min == 0)
        snprintf(out, n, "<= %" PRIu64 "%s", max, unit);
    else if (max == UINT64_MAX)
        snprintf(out, n, ">= %" PRIu64 "%s", min, unit);
    else
        snprintf(out, n, "%" PRIu64 "..%" PRIu64 "%s", min, max, unit);
}

static void field_rows(struct sink *s, const struct cairn_proto_field *fs, size_t n)
{
    md(s, "| field | type | required | limits | description |\n|---|---|---|---|---|\n");
    for (size_t i = 0; i < n; i++) {
        const struct cairn_proto_field *f = &fs[i];
        char type[64], lim[160], el[96];
        lim[0] = el[0] = '\0';
        switch (f->kind) {
        case CAIRN_PK_U64: snprintf(type, sizeof(type), "uint"); range_text(lim, sizeof(lim), f->min, f->max, ""); break;
        case CAIRN_PK_I64: snprintf(type, sizeof(type), "int"); break;
        case CAIRN_PK_BOOL: snprintf(type, sizeof(type), "bool"); break;
        case CAIRN_PK_STR: snprintf(type, sizeof(type), "str"); range_text(lim, sizeof(lim), f->min, f->max, " bytes"); break;
        case CAIRN_PK_BIN: snprintf(type, sizeof(type), "bin"); range_text(lim, sizeof(lim), f->min, f->max, " bytes"); break;
        case CAIRN_PK_MAP:
            snprintf(type, sizeof(type), "map");
            snprintf(lim, sizeof(lim), "<= %" PRIu64 " entries per container, str/bin <= %" PRIu64 " bytes, depth <= %u",
                     f->max, f->emax, CAIRN_PROTO_MAP_DEPTH);
            break;
        case CAIRN_PK_REC: snprintf(type, sizeof(type), "[%s](#record-%s)", f->rec->name, f->rec->name); break;
        case CAIRN_PK_STRS: case CAIRN_PK_BINS: case CAIRN_PK_U64S: case CAIRN_PK_RECS: {
            char cnt[64];
            range_text(cnt, sizeof(cnt), f->min, f->max, " items");
            if (f->kind == CAIRN_PK_RECS) {
                snprintf(type, sizeof(type), "array of [%s](#record-%s)", f->rec->name, f->rec->name);
            } else if (f->kind == CAIRN_PK_U64S) {
                snprintf(type, sizeof(type), "array of uint");
                range_text(el, sizeof(el), f->emin, f->emax, "");
            } else {
                snprintf(type, sizeof(type), "array of %s", f->kind == CAIRN_PK_STRS ? "str" : "bin");
                range_text(el, sizeof(el), f->emin, f->emax, " bytes");
            }
            snprintf(lim, sizeof(lim), "%s%s%s", cnt, el[0] ? "; each " : "", el);
            break;
        }
        }
        md(s, "| `%s` | %s | %s | %s | ", f->name, type, (f->flags & CAIRN_PF_REQUIRED) ? "yes" : "no", lim);
        md_cell(s, f->doc);
        md(s, "%s |\n", (f->flags & CAIRN_PF_SECRET) ? "; **secret**" : "");
    }
}

int cairn_proto_reference_md(char **out, size_t *len)
{
    model();
    struct sink s = {.err = 0};
    cairn_buf_init(&s.buf, 1u << 20);
    md(&s, "| t | name | direction | replies | issue |\n|---|---|---|---|---|\n");
    for (size_t i = 0; i < N_MSGS; i++)
        md(&s, "| %u | [`%s`](#msg-%s) | %s | %s | %s |\n", (unsigned)g_msgs[i].type, g_msgs[i].name,
           g_msgs[i].name, route_text(g_msgs[i].route), shape_text(g_msgs[i].shape), g_msgs[i].issue);
    for (size_t i = 0; i < N_MSGS; i++) {
        const struct cairn_proto_msginfo *mi = &g_msgs[i];
        md(&s, "\n<a id=\"msg-%s\"></a>\n### %u `%s`\n\n%s; %s; issue %s.\n\n%s\n", mi->name, (unsigned)mi->type,
           mi->name, route_text(mi->route), shape_text(mi->shape), mi->issue, mi->doc);
        for (int d = 0; d < 2; d++) {
            const struct cairn_proto_dirinfo *di = &mi->dir[d];
            if (d == CAIRN_DIR_REPLY && mi->shape == CAIRN_SHAPE_ONEWAY)
                continue;
            if (di->nfields)
                md(&s, "\n%s fields:\n\n", d ? "Reply" : "Request");
            else
                md(&s, "\n%s fields: none.\n", d ? "Reply" : "Request");
            if (di->nfields)
                field_rows(&s, di->fields, di->nfields);
            if (di->max_frames)
                md(&s, "\n%s raw frames: up to %u%s%s%s: %s.\n", d ? "Reply" : "Request", di->max_frames,
                   di->frame_count ? ", exactly as many as `" : "", di->frame_count ? di->frame_count : "",
                   di->frame_count ? "` says" : "", di->frame_doc);
        }
    }
    md(&s, "\n### Records\n");
    for (int r = 1; r < REC__COUNT; r++) {
        md(&s, "\n<a id=\"record-%s\"></a>\n#### record `%s`\n\n%s.\n\n", g_recs[r].name, g_recs[r].name,
           g_recs[r].doc);
        field_rows(&s, g_recs[r].fields, g_recs[r].nfields);
    }
    if (s.err) {
        cairn_buf_release(&s.buf);
        return cairn_err_set(s.err, "cannot generate the protocol reference");
    }
    if (cairn_buf_append_byte(&s.buf, 0) != CAIRN_OK) {
        cairn_buf_release(&s.buf);
        return cairn_err_set(CAIRN_ENOMEM, "cannot generate the protocol reference");
    }
    *out = (char *)cairn_buf_detach(&s.buf, len);
    (*len)--;
    return CAIRN_OK;
}
