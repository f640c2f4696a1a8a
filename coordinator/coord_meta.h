/*
 * coord_meta.h: the coordinator's metadata records and their keys in
 * RocksDB (DATA_DIR/meta, docs/internals/cluster.md "Coordinator").
 *
 * Keys (ASCII):
 *   a/<app>               app record              (struct coord_app_rec)
 *   w/<worker id>         worker record           (struct coord_worker_rec)
 *   j/<job id>            job record              (struct coord_job_rec)
 *   r/<app>/<req_id>      idempotency index       value: msgpack str, the job id
 *   q/<seq, 16 hex>       unfinished jobs (queued or running) in submission
 *                         order                   value: msgpack str, the job id
 *   i/<image id>          image record            (struct coord_image_rec)
 *   n/<app>/<name>        name index              value: msgpack str, the newest ready image
 *                         with that name in that app
 *   s/<sandbox id>        sandbox record          (struct coord_sandbox_rec)
 *   c/<owner>/<seq 8 hex> chunk refs of an image or memory snapshot (issue 5)
 *                         value: domain id (16) || n x chunk id (32)
 *   u/<app>/<upload>      image.import upload in progress (struct coord_upload_rec); its bytes
 *                         are DATA_DIR/uploads/<job id>.tar
 *   m/epoch               membership epoch        msgpack uint
 *   m/clock               test clock offset (ns)  msgpack int
 *   m/schema              layout version          msgpack uint (COORD_META_SCHEMA)
 *
 * Values are msgpack maps with string keys and a "v" version; decoders skip
 * keys they do not know (forward compatible) and treat every byte as hostile:
 * any malformed, truncated, over-long or missing field is CAIRN_ECORRUPT with
 * a message naming the record's key and the field.
 *
 * Ownership: *_rec structs are caller-embedded; decode fills them with owned
 * strings/buffers (cairn_malloc) that *_rec_release frees. Encoders append to
 * a caller's cairn_buf.
 */
#ifndef CAIRN_COORD_META_H
#define CAIRN_COORD_META_H

#include "cairn/bytes.h"
#include "cairn/crypto.h"
#include "cairn/kv.h"

#define COORD_META_SCHEMA 1
#define COORD_ID_MAX 64           /* app names, worker ids, job ids, req ids: 1..64 bytes */
#define COORD_JOB_ID_LEN 19       /* "jb-" + 16 hex */
#define COORD_OBJ_ID_LEN 19       /* "im-" / "sb-" + 16 hex */
#define COORD_RUNTIME_ID_LEN 32   /* sandbox runtime id: 32 hex */
#define COORD_NAME_MAX 128        /* image names */
#define COORD_KEY_MAX 256         /* "n/" + app + "/" + name with room to spare */
#define COORD_RECORD_MAX (4u << 20) /* a job record holds params and result (each <= ~1 MiB by the model) */

enum coord_job_state {
    COORD_JOB_QUEUED = 0,
    COORD_JOB_RUNNING = 1,
    COORD_JOB_SUCCEEDED = 2,
    COORD_JOB_FAILED = 3,
};
const char *coord_job_state_name(enum coord_job_state s);
static inline bool coord_job_state_final(enum coord_job_state s)
{
    return s == COORD_JOB_SUCCEEDED || s == COORD_JOB_FAILED;
}

struct coord_app_rec {
    char name[COORD_ID_MAX + 1];
    uint8_t token_hash[CAIRN_TOKEN_HASH_BYTES];
    int64_t created_ns;
};

struct coord_worker_rec {
    char id[COORD_ID_MAX + 1];
    char public_key[41];       /* Z85 CURVE key the id is bound to */
    char *peer;                /* owned: peer endpoint */
    char *fingerprint;         /* owned */
    char *version;             /* owned, may be NULL */
    uint64_t capacity, chunks, bytes, sandboxes;
    bool alive;
    int64_t last_seen_ns;      /* coordinator clock */
    int64_t registered_ns;
};

struct coord_job_rec {
    char id[COORD_JOB_ID_LEN + 1];
    char app[COORD_ID_MAX + 1];
    char kind[33];
    char req_id[COORD_ID_MAX + 1];
    enum coord_job_state state;
    uint64_t seq;              /* its q/ entry while unfinished */
    int64_t created_ns, updated_ns;
    char worker[COORD_ID_MAX + 1]; /* "" when never dispatched */
    uint8_t *params;           /* owned msgpack map */
    size_t params_len;
    uint32_t err_code;         /* when failed */
    char *err_msg;             /* owned, may be NULL */
    uint8_t *result;           /* owned msgpack map, may be NULL */
    size_t result_len;
};

enum coord_image_state {
    COORD_IMAGE_PENDING = 0, /* its import or snapshot job has not succeeded yet: invisible */
    COORD_IMAGE_READY = 1,
    COORD_IMAGE_EXPIRED = 2, /* issue 5: expired, removed or dropped: a tombstone (uses say "expired") */
};
#define COORD_WRAPPED_DEK_LEN 72  /* issue 5: CAIRN_WRAPPED_DEK_BYTES */

/* An image (sandboxes.md "Records"). */
struct coord_image_rec {
    char id[COORD_OBJ_ID_LEN + 1];
    char app[COORD_ID_MAX + 1];
    char kind[8];                       /* base | fs | dir */
    char *name;                         /* owned; NULL when unnamed */
    char parent[COORD_OBJ_ID_LEN + 1];  /* image this layer sits on; "" for a base or a flattened image */
    char origin[COORD_OBJ_ID_LEN + 1];  /* image it was taken from (even when flattened); "" for a base */
    uint64_t depth;                     /* layers in the chain, 1 for a base */
    uint64_t manifest_len;              /* the layer: manifest bytes ... */
    uint8_t *manifest;                  /* owned: ... and its chunks, 36 bytes each (id + le32 length) */
    size_t manifest_size;
    uint8_t domain[16];                 /* the app's managed domain id */
    enum coord_image_state state;
    int64_t created_ns, last_used_ns;
    int64_t expires_ns;                 /* 0 = never */
    char retention[32];                 /* never | ttl:<s> */
    uint64_t size, files, stored;
    char job[COORD_JOB_ID_LEN + 1];     /* the import / snapshot job that made it */
    /* issue 5 */
    bool csek;                          /* encryption: csek (domain = its CSEK domain id) | managed */
    uint8_t wrapped_dek[COORD_WRAPPED_DEK_LEN]; /* CSEK only: the DEK wrapped under the key, for this id */
    bool collected;                     /* its refs were garbage-collected */
};

enum coord_sandbox_state {
    COORD_SBX_CREATING = 0,
    COORD_SBX_RUNNING = 1,
    COORD_SBX_TERMINATED = 2,
    COORD_SBX_FAILED = 3,
};
const char *coord_sandbox_state_name(enum coord_sandbox_state s);

/* A mount of a sandbox (issue 5): path, image ("" = empty), csek. */
struct coord_mount {
    char *path;                          /* owned */
    char image[COORD_OBJ_ID_LEN + 1];
    bool csek;
};
#define COORD_MOUNTS_MAX 64

/* A sandbox (sandboxes.md "Records"). */
struct coord_sandbox_rec {
    char id[COORD_OBJ_ID_LEN + 1];
    char app[COORD_ID_MAX + 1];
    char worker[COORD_ID_MAX + 1];      /* "" until its create job succeeded on a worker */
    char image[COORD_OBJ_ID_LEN + 1];
    char runtime_id[COORD_RUNTIME_ID_LEN + 1];
    enum coord_sandbox_state state;
    int64_t created_ns, updated_ns;
    uint8_t *cmd;                       /* owned msgpack array of str; NULL: the default */
    size_t cmd_len;
    bool enable_snapshot, network;
    uint64_t gpu;
    char job[COORD_JOB_ID_LEN + 1];      /* its sandbox-create job */
    char term_job[COORD_JOB_ID_LEN + 1]; /* its sandbox-terminate job, "" until asked */
    uint32_t err_code;                   /* when failed */
    char *err_msg;                       /* owned, may be NULL */
    uint8_t *report;                     /* owned msgpack map: the worker's last report; may be NULL */
    size_t report_len;
    struct coord_mount *mounts;          /* issue 5: owned, in mount order */
    size_t nmounts;
    char restored_from[COORD_OBJ_ID_LEN + 1]; /* issue 6: sn-... it is a clone of, or "" */
    int64_t expires_hint_ns;             /* issue 6: expiry a snapshot of it inherits (0 = none) */
};

/* An image.import upload between its first and its last piece. */
struct coord_upload_rec {
    char app[COORD_ID_MAX + 1];
    char upload[COORD_ID_MAX + 1];       /* client-chosen; the import job's req_id */
    char job[COORD_JOB_ID_LEN + 1];      /* id the import job will get (names the file) */
    char image[COORD_OBJ_ID_LEN + 1];    /* id the image will get */
    char *name;                          /* owned; NULL when unnamed */
    char format[17];                     /* "" = tar (default) */
    bool has_size;
    uint64_t size;                       /* total bytes announced by the first piece */
    int64_t created_ns, updated_ns;
};

void coord_worker_rec_release(struct coord_worker_rec *r);
void coord_job_rec_release(struct coord_job_rec *r);
void coord_image_rec_release(struct coord_image_rec *r);
void coord_sandbox_rec_release(struct coord_sandbox_rec *r);
void coord_upload_rec_release(struct coord_upload_rec *r);
/* Deep copies (dst is overwritten, not released). CAIRN_ENOMEM leaves dst empty. */
int coord_image_rec_copy(struct coord_image_rec *dst, const struct coord_image_rec *src);
int coord_sandbox_rec_copy(struct coord_sandbox_rec *dst, const struct coord_sandbox_rec *src);

/* ---- keys: each writes a NUL-terminated key into out[COORD_KEY_MAX] and returns its length (0: too long) */
size_t coord_key_app(char *out, const char *app);
size_t coord_key_worker(char *out, const char *id);
size_t coord_key_job(char *out, const char *id);
size_t coord_key_req(char *out, const char *app, const char *req_id);
size_t coord_key_queue(char *out, uint64_t seq);
size_t coord_key_image(char *out, const char *id);
size_t coord_key_sandbox(char *out, const char *id);
size_t coord_key_name(char *out, const char *app, const char *name);
size_t coord_key_upload(char *out, const char *app, const char *upload);
/* issue 5: c/<owner>/<seq, 8 hex> (refs of an owner) */
size_t coord_key_refs(char *out, const char *owner, uint32_t seq);
#define COORD_KEY_EPOCH "m/epoch"
#define COORD_KEY_CLOCK "m/clock"
#define COORD_KEY_SCHEMA "m/schema"

/* A printable rendering of a key from disk for messages (non-printables as \xNN), NUL-terminated. */
void coord_key_printable(char *out, size_t cap, const uint8_t *key, size_t klen);

/* ---- codecs ---------------------------------------------------------------------------------- */

int coord_app_encode(const struct coord_app_rec *r, struct cairn_buf *out);
int coord_app_decode(const uint8_t *p, size_t len, const char *key, struct coord_app_rec *r);
int coord_worker_encode(const struct coord_worker_rec *r, struct cairn_buf *out);
int coord_worker_decode(const uint8_t *p, size_t len, const char *key, struct coord_worker_rec *r);
int coord_job_encode(const struct coord_job_rec *r, struct cairn_buf *out);
int coord_job_decode(const uint8_t *p, size_t len, const char *key, struct coord_job_rec *r);
int coord_image_encode(const struct coord_image_rec *r, struct cairn_buf *out);
int coord_image_decode(const uint8_t *p, size_t len, const char *key, struct coord_image_rec *r);
int coord_sandbox_encode(const struct coord_sandbox_rec *r, struct cairn_buf *out);
int coord_sandbox_decode(const uint8_t *p, size_t len, const char *key, struct coord_sandbox_rec *r);
int coord_upload_encode(const struct coord_upload_rec *r, struct cairn_buf *out);
int coord_upload_decode(const uint8_t *p, size_t len, const char *key, struct coord_upload_rec *r);
/* Small values: a msgpack str of 1..max bytes (r/ and q/ values), uint, int. */
int coord_str_encode(const char *s, struct cairn_buf *out);
int coord_str_decode(const uint8_t *p, size_t len, const char *key, char *out, size_t max);
int coord_u64_encode(uint64_t v, struct cairn_buf *out);
int coord_u64_decode(const uint8_t *p, size_t len, const char *key, uint64_t *v);
int coord_i64_encode(int64_t v, struct cairn_buf *out);
int coord_i64_decode(const uint8_t *p, size_t len, const char *key, int64_t *v);

/* ---- store helpers --------------------------------------------------------------------------- */

/* Open (create) DATA_DIR/meta, creating DATA_DIR (0700) if needed; checks/sets m/schema. */
int coord_meta_open(struct cairn_kv **out, const char *data_dir);
/* Put an encoded record (kv put, or into a batch when b != NULL). */
int coord_meta_put_app(struct cairn_kv *kv, const struct coord_app_rec *r);
int coord_meta_put_worker(struct cairn_kv *kv, const struct coord_worker_rec *r);
int coord_meta_batch_job(struct cairn_kv_batch *b, const struct coord_job_rec *r);
int coord_meta_batch_image(struct cairn_kv_batch *b, const struct coord_image_rec *r);
int coord_meta_batch_sandbox(struct cairn_kv_batch *b, const struct coord_sandbox_rec *r);
int coord_meta_batch_upload(struct cairn_kv_batch *b, const struct coord_upload_rec *r);
/* A msgpack str value (the name index, r/ and q/ entries). */
int coord_meta_batch_str(struct cairn_kv_batch *b, const char *key, size_t klen, const char *val);
int coord_meta_put_u64(struct cairn_kv *kv, const char *key, uint64_t v);
int coord_meta_put_i64(struct cairn_kv *kv, const char *key, int64_t v);
/* Get + decode. CAIRN_ENOTFOUND when absent, CAIRN_ECORRUPT naming the key. */
int coord_meta_get_job(struct cairn_kv *kv, const char *id, struct coord_job_rec *r);
int coord_meta_get_u64(struct cairn_kv *kv, const char *key, uint64_t *v);
int coord_meta_get_i64(struct cairn_kv *kv, const char *key, int64_t *v);
/* Look up the idempotency index: job id of (app, req_id). CAIRN_ENOTFOUND when absent. */
int coord_meta_get_req(struct cairn_kv *kv, const char *app, const char *req_id, char out[COORD_JOB_ID_LEN + 1]);

/* Validation of names used in keys. */
bool coord_app_name_valid(const char *s, size_t len);   /* [a-z0-9._-], 1..64, not "_"/"." first */
bool coord_job_id_valid(const char *s, size_t len);     /* jb- + 16 lower hex */
/* prefix ("im-", "sb-") + 16 lower hex */
bool coord_obj_id_valid(const char *s, size_t len, const char *prefix);
bool coord_hex_valid(const char *s, size_t len);         /* lower hex digits only */

#endif
