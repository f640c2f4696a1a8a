/*
 * proto.h: cairn wire messages: build, encode, decode, validate (proto/PROTOCOL.md).
 *
 * A message is one envelope frame (a msgpack map: v, t, rid, app, tok, code,
 * msg, f) and 0..CAIRN_PROTO_MAX_FRAMES raw binary frames. The message types
 * and their fields are the model in cairn/proto_messages.def; every decoded
 * message has been validated against it, and every encode validates too, so a
 * message that does not match the model is never sent.
 *
 * Objects
 *   struct cairn_msg   opaque; cairn_msg_new / cairn_msg_reply / cairn_msg_decode*
 *                      create one, cairn_msg_destroy frees it (NULL-safe, nulls
 *                      the caller's pointer) and wipes its SECRET fields.
 *   struct cairn_mval  opaque; a value inside a message (the field map, an
 *                      array, a record...). Borrowed: valid until the message
 *                      is destroyed. Never freed by the caller.
 *
 * Reading: every decoded field of the model has the type the model says, so
 * cairn_msg_get_* fail only for absent fields (CAIRN_ENOTFOUND) or for a
 * wrong-kind getter (CAIRN_EPROTO: a caller bug, or a field not in the model).
 * Strings returned are NUL-terminated, have no embedded NUL (for fields of the
 * model) and stay valid until the message is destroyed.
 *
 * Building: setters copy their arguments. They never fail individually: an
 * error (ENOMEM, a too-large value, a NULL container after an earlier error)
 * is recorded in the message and returned by the next encode, so a builder can
 * chain calls and check once. Setting an existing key replaces its value.
 *
 * Threads: a message may be read from several threads at once; building or
 * destroying it needs exclusive access. Error details go to cairn_err_msg().
 */
#ifndef CAIRN_PROTO_H
#define CAIRN_PROTO_H

#include "cairn/prelude.h"

#define CAIRN_PROTO_VERSION 1
#define CAIRN_PROTO_MAX_ENVELOPE (16u << 20)  /* bytes of the envelope frame */
#define CAIRN_PROTO_MAX_FRAME (16u << 20)     /* bytes of one raw frame */
#define CAIRN_PROTO_MAX_FRAMES 1024u          /* raw frames per message */
#define CAIRN_PROTO_MAX_PAYLOAD (64u << 20)   /* bytes of all raw frames of a message */
#define CAIRN_PROTO_MAX_DEPTH 16u             /* msgpack nesting of the envelope */
#define CAIRN_PROTO_MAX_NODES (1u << 18)      /* msgpack values in one envelope */
#define CAIRN_PROTO_MAX_KEYS 256u             /* entries of the envelope, "f" and record maps */
#define CAIRN_PROTO_MAP_DEPTH 4u              /* nesting of a free-form MAP field */
#define CAIRN_PROTO_MAX_KEY 256u              /* bytes of a map key */
#define CAIRN_PROTO_MAX_APP 64u
#define CAIRN_PROTO_MAX_TOKEN 64u
#define CAIRN_PROTO_MAX_TEXT 1024u            /* "msg" of a reply */
#define CAIRN_PROTO_CHUNK_WINDOW 8u           /* default W: peer batches in flight (PROTOCOL.md) */

/* Message types: CAIRN_MSG_PING = 1, ... (numbers are stable, see the .def). */
enum cairn_msg_type {
    CAIRN_MSG_NONE_ = 0, /* not a type: decode shells of unparseable frames */
#define CAIRN_MSG(id, num, name, route, shape, issue, doc) CAIRN_MSG_##id = num,
#include "cairn/proto_messages.def"
};

/* ---- the model, for introspection (generic printers, docs, tests) ------------------------------ */

enum cairn_proto_kind {
    CAIRN_PK_U64 = 1, CAIRN_PK_I64, CAIRN_PK_BOOL, CAIRN_PK_STR, CAIRN_PK_BIN,
    CAIRN_PK_STRS, CAIRN_PK_BINS, CAIRN_PK_U64S, CAIRN_PK_MAP, CAIRN_PK_REC, CAIRN_PK_RECS,
};
enum cairn_proto_field_flags {
    CAIRN_PF_REQUIRED = 1 << 0,
    CAIRN_PF_SECRET = 1 << 1,
};
enum cairn_proto_route {
    CAIRN_ROUTE_CLIENT_ANY = 1, CAIRN_ROUTE_CLIENT_APP, CAIRN_ROUTE_CLIENT_ADMIN,
    CAIRN_ROUTE_WORKER, CAIRN_ROUTE_COORD, CAIRN_ROUTE_PEER,
};
enum cairn_proto_shape { CAIRN_SHAPE_RPC = 1, CAIRN_SHAPE_ONEWAY, CAIRN_SHAPE_STREAM };
enum cairn_proto_dir { CAIRN_DIR_REQUEST = 0, CAIRN_DIR_REPLY = 1 };

struct cairn_proto_rec;

struct cairn_proto_field {
    const char *name;
    enum cairn_proto_kind kind;
    unsigned flags;                    /* enum cairn_proto_field_flags */
    uint64_t min, max;                 /* value, length or count bounds (see the .def) */
    uint64_t emin, emax;               /* element bounds */
    const struct cairn_proto_rec *rec; /* REC/RECS: the record; else NULL */
    const char *doc;
};

struct cairn_proto_rec {
    const char *name;
    const char *doc;
    const struct cairn_proto_field *fields;
    size_t nfields;
};

struct cairn_proto_dirinfo {
    const struct cairn_proto_field *fields;
    size_t nfields;
    uint32_t max_frames;     /* raw frames allowed */
    const char *frame_count; /* field whose value (U64) or length (array) the frame count must equal, or NULL */
    const char *frame_doc;
};

struct cairn_proto_msginfo {
    enum cairn_msg_type type;
    const char *name; /* wire name, e.g. "chunk.get" */
    enum cairn_proto_route route;
    enum cairn_proto_shape shape;
    const char *issue; /* which issue implements it */
    const char *doc;
    struct cairn_proto_dirinfo dir[2]; /* [CAIRN_DIR_REQUEST], [CAIRN_DIR_REPLY] */
};

/* Static model entry of a type; NULL for an unknown number. */
const struct cairn_proto_msginfo *cairn_proto_msginfo(unsigned type);
/* Every type, in number order; *n is set to the count. Static. */
const struct cairn_proto_msginfo *cairn_proto_messages(size_t *n);
/* Wire name of a type ("ping"), or "unknown". Static string. */
const char *cairn_msg_type_name(unsigned type);
/* Type of a wire name; CAIRN_MSG_NONE_ when unknown. */
enum cairn_msg_type cairn_msg_type_from_name(const char *name);
/*
 * The generated reference section of PROTOCOL.md (message table, every message's
 * fields, records) as markdown. Caller frees *out with cairn_free.
 */
int cairn_proto_reference_md(char **out, size_t *len);

/* ---- messages -------------------------------------------------------------------------------- */

struct cairn_msg;
struct cairn_mval;

/* ROUTER routing id of the peer a message came from / goes to. Plain value, copyable. */
struct cairn_route {
    uint8_t len; /* 0 = none */
    uint8_t id[255];
};

/* New empty request of `type` (rid 0). NULL (with cairn_err_set) on ENOMEM or unknown type. */
struct cairn_msg *cairn_msg_new(enum cairn_msg_type type);
/*
 * New reply to `req`: same type, rid and route; code (CAIRN_OK or an error
 * code) and an optional text (NULL for none; truncated to CAIRN_PROTO_MAX_TEXT).
 * Error replies (code != 0) need no fields. NULL on ENOMEM.
 */
struct cairn_msg *cairn_msg_reply(const struct cairn_msg *req, int code, const char *text);
/* Frees the message and wipes SECRET fields and the token. NULL-safe; sets *m = NULL. */
void cairn_msg_destroy(struct cairn_msg **m);

/*
 * Envelope. app/text return NULL when absent; token sets *p = NULL, *len = 0 when absent.
 * The type of an error reply may be a number this build does not know (a newer
 * peer's type echoed back); every other decoded message has a known type.
 */
enum cairn_msg_type cairn_msg_type(const struct cairn_msg *m);
uint64_t cairn_msg_rid(const struct cairn_msg *m);
bool cairn_msg_is_reply(const struct cairn_msg *m);
int cairn_msg_code(const struct cairn_msg *m); /* 0 for requests */
const char *cairn_msg_text(const struct cairn_msg *m);
const char *cairn_msg_app(const struct cairn_msg *m);
void cairn_msg_token(const struct cairn_msg *m, const uint8_t **p, size_t *len);
/* Authenticated CURVE public key (Z85) of the sender, set by cairn_sock_recv; "" when unknown. */
const char *cairn_msg_peer_key(const struct cairn_msg *m);
struct cairn_route cairn_msg_route(const struct cairn_msg *m);

void cairn_msg_set_rid(struct cairn_msg *m, uint64_t rid);
void cairn_msg_set_app(struct cairn_msg *m, const char *app);                  /* NULL removes */
void cairn_msg_set_token(struct cairn_msg *m, const void *tok, size_t len);    /* NULL removes */
void cairn_msg_set_route(struct cairn_msg *m, const struct cairn_route *route);/* NULL clears */

/* ---- fields: reading ---- */

/* The field map ("f"); never NULL. */
const struct cairn_mval *cairn_msg_fields(const struct cairn_msg *m);
/* A field, or NULL when absent. */
const struct cairn_mval *cairn_msg_get(const struct cairn_msg *m, const char *field);
/* CAIRN_OK, CAIRN_ENOTFOUND (absent) or CAIRN_EPROTO (other type); *out untouched on error. */
int cairn_msg_get_u64(const struct cairn_msg *m, const char *field, uint64_t *out);
int cairn_msg_get_i64(const struct cairn_msg *m, const char *field, int64_t *out);
int cairn_msg_get_bool(const struct cairn_msg *m, const char *field, bool *out);
int cairn_msg_get_str(const struct cairn_msg *m, const char *field, const char **out, size_t *len);
int cairn_msg_get_bin(const struct cairn_msg *m, const char *field, const uint8_t **out, size_t *len);
/* Arrays and maps: the container and its element count. */
int cairn_msg_get_array(const struct cairn_msg *m, const char *field, const struct cairn_mval **out, size_t *n);
int cairn_msg_get_map(const struct cairn_msg *m, const char *field, const struct cairn_mval **out, size_t *n);
/* A field that is optional: like the getters above but absent returns CAIRN_OK with *out = dflt. */
int cairn_msg_opt_u64(const struct cairn_msg *m, const char *field, uint64_t dflt, uint64_t *out);
int cairn_msg_opt_bool(const struct cairn_msg *m, const char *field, bool dflt, bool *out);

enum cairn_mval_kind {
    CAIRN_MV_NIL = 1, CAIRN_MV_BOOL, CAIRN_MV_UINT, CAIRN_MV_INT, /* INT: negative only */
    CAIRN_MV_F32, CAIRN_MV_F64, CAIRN_MV_STR, CAIRN_MV_BIN, CAIRN_MV_ARRAY, CAIRN_MV_MAP,
};
enum cairn_mval_kind cairn_mval_kind(const struct cairn_mval *v);
/* Element count of an array or map; byte length of a str or bin; 0 otherwise. */
size_t cairn_mval_len(const struct cairn_mval *v);
int cairn_mval_u64(const struct cairn_mval *v, uint64_t *out);
int cairn_mval_i64(const struct cairn_mval *v, int64_t *out); /* any integer that fits */
int cairn_mval_bool(const struct cairn_mval *v, bool *out);
int cairn_mval_f64(const struct cairn_mval *v, double *out);  /* F32 or F64 */
int cairn_mval_str(const struct cairn_mval *v, const char **out, size_t *len);
int cairn_mval_bin(const struct cairn_mval *v, const uint8_t **out, size_t *len);
/* Array element i, or NULL (not an array / out of range). */
const struct cairn_mval *cairn_mval_at(const struct cairn_mval *v, size_t i);
/* Map value for key, or NULL. */
const struct cairn_mval *cairn_mval_get(const struct cairn_mval *v, const char *key);
/* Map entry i (insertion / wire order): key (NUL-terminated) and value. CAIRN_EINVAL out of range. */
int cairn_mval_entry(const struct cairn_mval *v, size_t i, const char **key, const struct cairn_mval **val);

/* ---- fields: building ---- */

void cairn_msg_set_u64(struct cairn_msg *m, const char *field, uint64_t v);
void cairn_msg_set_i64(struct cairn_msg *m, const char *field, int64_t v);
void cairn_msg_set_bool(struct cairn_msg *m, const char *field, bool v);
void cairn_msg_set_str(struct cairn_msg *m, const char *field, const char *s);    /* NUL-terminated */
void cairn_msg_set_strn(struct cairn_msg *m, const char *field, const char *s, size_t len);
void cairn_msg_set_bin(struct cairn_msg *m, const char *field, const void *p, size_t len);
/* New empty array / map at a field; returned container is borrowed (NULL after an error). */
struct cairn_mval *cairn_msg_set_array(struct cairn_msg *m, const char *field);
struct cairn_mval *cairn_msg_set_map(struct cairn_msg *m, const char *field);
/* Deep copy of a value (e.g. a decoded params map) into a field. */
void cairn_msg_set_value(struct cairn_msg *m, const char *field, const struct cairn_mval *v);
/* Remove a field (no-op when absent). */
void cairn_msg_unset(struct cairn_msg *m, const char *field);

/* map[key] = v. `map` must be a map of this message (NULL: no-op, the earlier error stays). */
void cairn_mval_put_u64(struct cairn_msg *m, struct cairn_mval *map, const char *key, uint64_t v);
void cairn_mval_put_i64(struct cairn_msg *m, struct cairn_mval *map, const char *key, int64_t v);
void cairn_mval_put_bool(struct cairn_msg *m, struct cairn_mval *map, const char *key, bool v);
void cairn_mval_put_str(struct cairn_msg *m, struct cairn_mval *map, const char *key, const char *s);
void cairn_mval_put_strn(struct cairn_msg *m, struct cairn_mval *map, const char *key, const char *s, size_t len);
void cairn_mval_put_bin(struct cairn_msg *m, struct cairn_mval *map, const char *key, const void *p, size_t len);
void cairn_mval_put_value(struct cairn_msg *m, struct cairn_mval *map, const char *key, const struct cairn_mval *v);
struct cairn_mval *cairn_mval_put_array(struct cairn_msg *m, struct cairn_mval *map, const char *key);
struct cairn_mval *cairn_mval_put_map(struct cairn_msg *m, struct cairn_mval *map, const char *key);
/* Append to an array of this message. */
void cairn_mval_push_u64(struct cairn_msg *m, struct cairn_mval *arr, uint64_t v);
void cairn_mval_push_i64(struct cairn_msg *m, struct cairn_mval *arr, int64_t v);
void cairn_mval_push_bool(struct cairn_msg *m, struct cairn_mval *arr, bool v);
void cairn_mval_push_str(struct cairn_msg *m, struct cairn_mval *arr, const char *s);
void cairn_mval_push_strn(struct cairn_msg *m, struct cairn_mval *arr, const char *s, size_t len);
void cairn_mval_push_bin(struct cairn_msg *m, struct cairn_mval *arr, const void *p, size_t len);
struct cairn_mval *cairn_mval_push_array(struct cairn_msg *m, struct cairn_mval *arr);
struct cairn_mval *cairn_mval_push_map(struct cairn_msg *m, struct cairn_mval *arr);

/* ---- raw frames ---- */

size_t cairn_msg_frame_count(const struct cairn_msg *m);
/* Frame i (borrowed, valid until destroy); CAIRN_EINVAL out of range. */
int cairn_msg_frame(const struct cairn_msg *m, size_t i, const uint8_t **p, size_t *len);
/* Append a copy of len bytes (len 0 allowed: an empty frame). Errors are sticky like setters. */
void cairn_msg_add_frame(struct cairn_msg *m, const void *p, size_t len);

/* ---- encode / decode ---- */

/* First builder error recorded in m (CAIRN_OK when none); the detail message was set then. */
int cairn_msg_build_error(const struct cairn_msg *m);
/*
 * Validate m against the model and encode its envelope. *out is allocated
 * (free with cairn_free; it holds the token and SECRET fields in clear, wipe
 * it before freeing if that matters). Errors: the builder's sticky error,
 * CAIRN_EPROTO / CAIRN_ETOOBIG naming the field, CAIRN_ENOMEM.
 */
int cairn_msg_encode(const struct cairn_msg *m, uint8_t **out, size_t *len);
/*
 * Decode frames[0] (envelope) and frames[1..n-1] (raw frames); the input is
 * borrowed and copied. On success *out is a new message; on error *out = NULL and:
 *   CAIRN_EVERSION  "v" is not CAIRN_PROTO_VERSION
 *   CAIRN_ETOOBIG   a frame, count, length or value over its limit (message names it)
 *   CAIRN_EPROTO    anything else malformed (message names the field)
 *   CAIRN_ENOMEM
 * Never asserts, never allocates more than a small multiple of the input size.
 */
int cairn_msg_decode(const uint8_t *const *frames, const size_t *lens, size_t n, struct cairn_msg **out);
/*
 * Container format for golden files and fuzzing (PROTOCOL.md "Container"):
 * "CRNM" | u32le frame count | (u32le length | bytes) per frame.
 * Encode: caller frees *out with cairn_free. Decode: errors as cairn_msg_decode,
 * a malformed container is CAIRN_EPROTO.
 */
int cairn_msg_encode_container(const struct cairn_msg *m, uint8_t **out, size_t *len);
int cairn_msg_decode_container(const uint8_t *data, size_t len, struct cairn_msg **out);

/*
 * Internal to proto/ (transport.c, the tests); not API.
 *
 * struct cairn__frame: a raw frame handed to the decoder. release == NULL: the
 * bytes are borrowed and copied. Otherwise the message takes the frame without
 * copying and calls release(ctx) when destroyed; on a decode error release is
 * called before returning. Either way the caller must not release it itself.
 *
 * cairn__msg_decode_frames: cairn_msg_decode with the envelope and raw frames
 * apart. On a decode error, when shell != NULL, *shell is an empty message
 * carrying the type number and rid if they could be read (type 0 / rid 0 if
 * not), so that a server can still answer with an error reply.
 */
struct cairn__frame {
    const uint8_t *p;
    size_t len;
    void (*release)(void *ctx);
    void *ctx;
};
int cairn__msg_decode_frames(const uint8_t *env, size_t env_len, struct cairn__frame *raw, size_t nraw,
                             struct cairn_msg **out, struct cairn_msg **shell);
void cairn__msg_set_peer_key(struct cairn_msg *m, const char *z85);
/* Encode without validating against the model (tests: crafting invalid messages). */
int cairn__msg_encode_unchecked(const struct cairn_msg *m, uint8_t **out, size_t *len);

#endif
