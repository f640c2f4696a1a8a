/*
 * cairn.h: libcairn, the C client API of a cairn cluster (DESIGN §7).
 *
 * A client talks to the coordinator's client endpoint over one CURVE-encrypted
 * ZeroMQ DEALER socket (docs/internals/cluster.md). Every call is synchronous
 * with a deadline (the client's timeout, default 10 s, plus any server-side wait
 * the call asks for): no answer in time is CAIRN_ETIMEDOUT with a message that
 * names the endpoint and suggests the usual causes. A coordinator that does not
 * know this client's public key never answers at all, so that is what an
 * allow-list problem looks like too.
 *
 * Conventions
 *   - Objects are opaque handles (struct cairn_client, struct cairn_params),
 *     made by _new and freed by _destroy (NULL-safe, nulls the caller's pointer).
 *     Result structs (struct cairn_cluster_status, struct cairn_job, the image,
 *     sandbox and snapshot lists, struct cairn_exec_result, struct
 *     cairn_restore_result, struct cairn_snapshot_info) are plain, owned by the
 *     caller, and freed by their _free function (same rules). Small results
 *     (ids, one image) are written into a caller's struct or buffer instead:
 *     nothing to free.
 *   - Every fallible function returns CAIRN_OK or a code of cairn/err.h; the
 *     detail is in cairn_err_msg() (this thread) and, for calls on a client, also
 *     in cairn_client_err_msg(client) until that client's next failing call.
 *     Errors the coordinator returns keep its code and message (e.g. CAIRN_EAUTH
 *     "invalid app token for app 'x'").
 *   - Arguments are borrowed: nothing keeps a pointer to them after the call.
 *   - Threads: a client is used by one thread at a time (it owns one socket).
 *     Separate clients are independent. Params objects are plain data.
 *   - Secrets: tokens, key files and encryption keys (CSEK) never appear in
 *     error messages; keys are borrowed and sent only in the request's `key`
 *     field (see "directory mounts and snapshots").
 */
#ifndef CAIRN_CAIRN_H
#define CAIRN_CAIRN_H

#include "cairn/err.h"

#define CAIRN_CLIENT_TIMEOUT_MS 10000u /* default per-call deadline */
#define CAIRN_TOKEN_MAX 64             /* bytes of an app or admin token */
#define CAIRN_ID_MAX 64                /* bytes of an id (job, worker, app); buffers hold +1 */
#define CAIRN_WAIT_FOREVER UINT32_MAX  /* wait_ms: until the job has finished */

struct cairn_client;
struct cairn_params;

/* ---- keys (no connection needed) ------------------------------------------------------------ */

/*
 * Make a fresh CURVE key pair and write it to `path` as a key pair file (mode
 * 0600, written atomically; cairn/transport.h format). Refuses CAIRN_EEXIST when
 * the file exists unless `overwrite`. public_z85 (41 bytes, may be NULL) gets the
 * public key.
 */
int cairn_keypair_generate(const char *path, bool overwrite, char public_z85[41]);
/*
 * Read the public key of a key pair file (or of a public key file) into
 * public_z85 and, when out_path is not NULL, write it as a public key file
 * (mode 0644).
 */
int cairn_key_public_export(const char *keypair_path, const char *out_path, char public_z85[41]);

/* ---- the client ----------------------------------------------------------------------------- */

struct cairn_client_opts {
    const char *endpoint;             /* required: the coordinator's client endpoint, "tcp://host:port" */
    const char *coordinator_key_file; /* the coordinator's public key file (or its key pair file) */
    const char *coordinator_key;      /* or the key itself (Z85), used when coordinator_key_file is NULL */
    const char *client_key_file;      /* required: this client's key pair file (mode 0600) */
    const char *app;                  /* app of app calls; NULL: only ping and admin calls work */
    const uint8_t *token;             /* the app's token (16..64 bytes; copied) */
    size_t token_len;
    const char *admin_token_file;     /* admin token file (64 hex), read by each admin call; may be NULL */
    unsigned timeout_ms;              /* per-call deadline; 0 = CAIRN_CLIENT_TIMEOUT_MS */
};

/*
 * New client. Reads the key files and opens the socket (the connection itself
 * is made in the background: a coordinator that is down shows as ETIMEDOUT at
 * the first call). Caller destroys *out. Errors: CAIRN_EINVAL (a missing option,
 * named), key file errors of cairn/transport.h (ENOTFOUND, EPERM, ECORRUPT).
 */
int cairn_client_new(const struct cairn_client_opts *opts, struct cairn_client **out);
/*
 * New client from the environment (cluster.md "Client"):
 *   CAIRN_COORDINATOR       endpoint                      (required)
 *   CAIRN_COORDINATOR_KEY   coordinator public key file   (required)
 *   CAIRN_CLIENT_KEY        this client's key pair file   (required)
 *   CAIRN_APP               app for app calls
 *   CAIRN_TOKEN             the app token, hex            (wins over CAIRN_TOKEN_FILE)
 *   CAIRN_TOKEN_FILE        file holding the app token, hex
 *   CAIRN_ADMIN_TOKEN_FILE  admin token file, for admin calls
 *   CAIRN_TIMEOUT_MS        per-call deadline in ms (default 10000)
 * A missing required variable is CAIRN_EINVAL naming it. A missing app or token,
 * or a token that cannot be read, is reported (naming the variable) by the first
 * call that needs it, so ping and admin calls work without one.
 */
int cairn_client_new_from_env(struct cairn_client **out);
/* Close the socket and free everything. NULL-safe; sets *c = NULL. */
void cairn_client_destroy(struct cairn_client **c);
/* The endpoint (valid until destroy). */
const char *cairn_client_endpoint(const struct cairn_client *c);
/* The message of this client's last failed call ("" if none). Valid until its next call. */
const char *cairn_client_err_msg(const struct cairn_client *c);
/* Change the per-call deadline (0 = default). */
void cairn_client_timeout_set(struct cairn_client *c, unsigned timeout_ms);
/* cairn_client_progress_set is declared below, after cairn_progress_fn. */

/* ---- calls ---------------------------------------------------------------------------------- */

struct cairn_ping_info {
    char version[CAIRN_ID_MAX + 1]; /* coordinator software version */
    unsigned proto;                 /* highest protocol version it speaks */
    int64_t now_ns;                 /* its clock (0 if not sent) */
    uint64_t rtt_ns;                /* round trip measured here */
};
/* Liveness check; needs no app or token. */
int cairn_ping(struct cairn_client *c, struct cairn_ping_info *out);

struct cairn_worker_info {
    char id[CAIRN_ID_MAX + 1];
    char addr[257];        /* peer endpoint */
    bool alive;
    uint64_t chunks;
    uint64_t bytes;
    uint64_t sandboxes;
    int64_t last_seen_ns;  /* last heartbeat, ns since the Unix epoch (coordinator clock) */
    char fingerprint[257]; /* "" when not reported */
    uint64_t capacity;
};
struct cairn_cluster_status {
    uint64_t epoch;    /* membership epoch */
    unsigned replicas; /* replication factor R */
    int64_t now_ns;    /* coordinator clock (0 if not sent) */
    size_t nworkers;
    struct cairn_worker_info *workers; /* nworkers entries, in the coordinator's order */
};
/* Workers and their state (app call). Caller frees *out with cairn_cluster_status_free. */
int cairn_cluster_status(struct cairn_client *c, struct cairn_cluster_status **out);
void cairn_cluster_status_free(struct cairn_cluster_status **s);
/* Workers of s that are alive. */
size_t cairn_cluster_status_alive(const struct cairn_cluster_status *s);

/*
 * Admin: create app `name` ([a-z0-9._-], 1..64 bytes). token (CAIRN_TOKEN_MAX
 * bytes) gets the app's token, shown this once: the caller should wipe it when
 * done. CAIRN_EEXIST if the name is taken; CAIRN_EINVAL without an admin token file.
 */
int cairn_app_create(struct cairn_client *c, const char *name, uint8_t token[CAIRN_TOKEN_MAX], size_t *token_len);

/* Admin: advance the coordinator's test clock by `seconds` (>= 1). *now_ns (may be NULL) gets the new clock.
 * CAIRN_EPERM unless the coordinator runs with --test-clock. */
int cairn_admin_clock_advance(struct cairn_client *c, uint64_t seconds, int64_t *now_ns);

/* ---- job parameters ------------------------------------------------------------------------- */

/*
 * A small builder for a job's params map (<= 256 keys of <= 256 bytes). Setting
 * an existing key replaces its value. Setters copy their arguments and return
 * CAIRN_OK, CAIRN_ENOMEM, or CAIRN_EINVAL (empty or too long key, too many keys,
 * string over 65536 bytes).
 */
struct cairn_params *cairn_params_new(void); /* NULL on ENOMEM */
void cairn_params_destroy(struct cairn_params **p);
int cairn_params_set_str(struct cairn_params *p, const char *key, const char *value);
int cairn_params_set_u64(struct cairn_params *p, const char *key, uint64_t value);
int cairn_params_set_i64(struct cairn_params *p, const char *key, int64_t value);
int cairn_params_set_bool(struct cairn_params *p, const char *key, bool value);
/* Append a string to the array at key (made empty first when the key holds no array). */
int cairn_params_add_str(struct cairn_params *p, const char *key, const char *value);
/* Set key to an empty array (e.g. before add_str, to send [] rather than nothing). */
int cairn_params_set_array(struct cairn_params *p, const char *key);
/*
 * Parse "key=value" as the CLI's --param does: a decimal integer becomes u64
 * (a leading '-': i64), true/false a bool, "[a,b,c]" an array of strings ("[]"
 * empty), anything else a string. as_string: always a string.
 */
int cairn_params_parse_kv(struct cairn_params *p, const char *kv, bool as_string);
size_t cairn_params_count(const struct cairn_params *p);

/* ---- jobs ----------------------------------------------------------------------------------- */

enum cairn_job_state {
    CAIRN_JOB_UNKNOWN = 0, /* a state this client does not know (newer coordinator) */
    CAIRN_JOB_QUEUED,
    CAIRN_JOB_RUNNING,
    CAIRN_JOB_SUCCEEDED,
    CAIRN_JOB_FAILED,
};
/* "queued", "running", ...; static. */
const char *cairn_job_state_name(enum cairn_job_state s);

struct cairn_job {
    char id[CAIRN_ID_MAX + 1];     /* jb-... */
    char kind[CAIRN_ID_MAX + 1];   /* "" when not sent */
    enum cairn_job_state state;
    char state_name[CAIRN_ID_MAX + 1]; /* as sent */
    char worker[CAIRN_ID_MAX + 1]; /* "" when not placed yet */
    int err_code;                  /* when failed: the cairn error code */
    char *err_msg;                 /* when failed: the message ("" otherwise); owned */
    uint64_t done, total;          /* progress, when reported (0 otherwise) */
    char *result_json;             /* when succeeded with a result: the result map as JSON; else NULL; owned */
};
/* True for succeeded and failed. */
bool cairn_job_finished(const struct cairn_job *j);
void cairn_job_free(struct cairn_job **j);

/*
 * Submit a job of `kind` with params (NULL: none) and an idempotency id: the
 * same req_id for the same app returns the existing job; NULL generates a fresh
 * one ("rq-" + 16 hex). wait_ms: 0 returns at once (state queued or running);
 * otherwise the call returns when the job has finished or after wait_ms
 * (CAIRN_WAIT_FOREVER: when it has finished, however long that is; the client
 * long-polls in steps of at most 600 s). Returns CAIRN_OK whenever the
 * coordinator accepted the job, even if the job itself failed: look at
 * (*out)->state and err_code. Caller frees *out with cairn_job_free.
 */
int cairn_job_submit(struct cairn_client *c, const char *kind, const struct cairn_params *params,
                     const char *req_id, uint32_t wait_ms, struct cairn_job **out);
/* State of job `id`; wait_ms as for cairn_job_submit. CAIRN_ENOTFOUND for an unknown job. */
int cairn_job_get(struct cairn_client *c, const char *id, uint32_t wait_ms, struct cairn_job **out);

/*
 * Pipelined calls (the dispatch benchmark keeps many jobs in flight on one
 * socket): _send starts a call and returns a ticket (> 0) at once; cairn_job_recv
 * waits up to timeout_ms (< 0: until the next reply or deadline) for the reply
 * of any call in flight. wait_ms is capped at 600000 here (no automatic
 * re-polling).
 *   CAIRN_OK: *ticket is the call, *out its job (caller frees).
 *   another code with *ticket != 0: that call failed (its reply was an error, or
 *     its deadline passed: ETIMEDOUT); *out = NULL. The call is over.
 *   CAIRN_ETIMEDOUT with *ticket == 0: nothing arrived within timeout_ms.
 *   CAIRN_EINVAL with *ticket == 0: no call in flight.
 * Synchronous calls may be mixed in: replies to tickets that arrive meanwhile are kept.
 */
int cairn_job_submit_send(struct cairn_client *c, const char *kind, const struct cairn_params *params,
                          const char *req_id, uint32_t wait_ms, uint64_t *ticket);
int cairn_job_get_send(struct cairn_client *c, const char *id, uint32_t wait_ms, uint64_t *ticket);
int cairn_job_recv(struct cairn_client *c, int timeout_ms, uint64_t *ticket, struct cairn_job **out);
/* Calls in flight (sent, reply not yet returned by cairn_job_recv). */
size_t cairn_client_in_flight(const struct cairn_client *c);

struct cairn_submit_stats {
    uint64_t submitted;    /* jobs accepted by the coordinator */
    uint64_t succeeded;
    uint64_t failed;       /* jobs that ran and failed */
    uint64_t errors;       /* calls refused or timed out */
    int first_err;         /* code of the first failure or error (CAIRN_OK if none) */
    uint64_t elapsed_ns;   /* first send to last reply */
    uint64_t lat_p50_ns, lat_p99_ns, lat_max_ns; /* submit -> finished, per job */
};
/*
 * Submit n jobs of `kind` (same params, fresh req_ids) keeping at most `window`
 * calls in flight, and wait until each has finished. stats (required) is filled
 * in either way. CAIRN_OK when every job succeeded; else the first failure's
 * code, with a message counting the failures.
 */
int cairn_job_submit_many(struct cairn_client *c, const char *kind, const struct cairn_params *params, size_t n,
                          size_t window, struct cairn_submit_stats *stats);

/* ---- progress ------------------------------------------------------------------------------- */

/*
 * Progress of a long call (image import): stage is "upload" (done/total are
 * bytes sent / bytes to send, total 0 when unknown: a directory streamed as a
 * tar) or "import" (the job's own progress as the worker reports it; total 0
 * when not known yet). Called on the calling thread; stage is static.
 */
typedef void (*cairn_progress_fn)(void *arg, const char *stage, uint64_t done, uint64_t total);
/*
 * Progress of the long sandbox calls of this client (create, snapshot-fs,
 * mount, snapshot-dir, snapshot, restore): fn (NULL: none) is called about
 * once a second while the job is queued or running, with stage = the
 * operation ("create", "snapshot-fs", "mount", "snapshot-dir", "snapshot",
 * "restore") and the job's done/total as the worker reports them (bytes unless
 * the job says otherwise; 0/0 when nothing is known yet). With a callback the
 * client polls once a second instead of long-polling. arg is borrowed.
 */
void cairn_client_progress_set(struct cairn_client *c, cairn_progress_fn fn, void *arg);

/* ---- images (issue 4; docs/internals/sandboxes.md) ------------------------------------------ */

#define CAIRN_IMPORT_PIECE (8u << 20) /* bytes per image.import piece */

struct cairn_image_import_opts {
    const char *name;         /* image name in the app (<= 128 bytes); NULL: unnamed */
    const char *upload_id;    /* idempotency id of the upload (<= 64 bytes); NULL: a fresh "up-" + 16 hex */
    size_t piece_size;        /* 0: CAIRN_IMPORT_PIECE; at most 16 MiB */
    cairn_progress_fn progress; /* may be NULL */
    void *progress_arg;
};

struct cairn_image_import_result {
    char id[CAIRN_ID_MAX + 1];  /* im-... */
    char job[CAIRN_ID_MAX + 1]; /* the image-import job, jb-... */
    uint64_t bytes;             /* bytes uploaded (the tar stream or the file) */
};

/*
 * Import a base image from `path`, into the client's app:
 *   - a directory is streamed as a tar made on the fly (libarchive: pax format,
 *     numeric owners only, xattrs, sparse files as holes, hard links as links,
 *     no ACLs or file flags; symlinks are not followed; sockets are skipped);
 *   - a regular file is sent as it is (a tar, plain or compressed: the worker
 *     detects gzip, zstd, xz, ...).
 * The bytes go as image.import pieces of opts->piece_size, each at the offset
 * the coordinator has received so far; a piece whose reply does not come in
 * time is sent again (the coordinator acknowledges a repeated piece). Then the
 * call waits for the import job. out (required) gets the image id once the job
 * succeeded. Errors: CAIRN_ENOTFOUND / CAIRN_EPERM / CAIRN_EINVAL for the path,
 * CAIRN_EIO reading it, the job's own code when the import failed (e.g.
 * CAIRN_ECORRUPT for a bad tarball), or the coordinator's. opts may be NULL.
 */
int cairn_image_import(struct cairn_client *c, const char *path, const struct cairn_image_import_opts *opts,
                       struct cairn_image_import_result *out);

struct cairn_image_info {
    char id[CAIRN_ID_MAX + 1];     /* im-... */
    char kind[17];                 /* base | fs | dir */
    char parent[CAIRN_ID_MAX + 1]; /* image this one is layered on; "" for a base or flattened image */
    char name[129];                /* "" when unnamed */
    char encryption[17];           /* managed | csek */
    char retention[65];            /* never | ttl:<s> | sliding:<s>; "" when not sent */
    int64_t created_at_ns;
    int64_t last_used_at_ns;       /* 0 when not sent */
    int64_t expires_at_ns;         /* 0: never expires */
    uint64_t size, files, stored;  /* 0 when not sent */
};
struct cairn_image_list {
    size_t n;
    struct cairn_image_info *images; /* n entries, by id */
};
/*
 * Every image of the app (ready ones: pending imports are not listed), all
 * pages. kind: NULL for all, or "base" | "fs" | "dir". Caller frees *out with
 * cairn_image_list_free.
 */
int cairn_image_ls(struct cairn_client *c, const char *kind, struct cairn_image_list **out);
void cairn_image_list_free(struct cairn_image_list **l);
/* One image into *out (caller's struct). CAIRN_ENOTFOUND for an unknown id or one of another app. */
int cairn_image_show(struct cairn_client *c, const char *id, struct cairn_image_info *out);
/* Delete an image (its chunks are collected later). CAIRN_ENOTFOUND as for show. */
int cairn_image_rm(struct cairn_client *c, const char *id);
/*
 * An image id ("im-" + 16 hex, returned as it is) or the name of an image of
 * the app (the newest ready image with that name) into id_out.
 * CAIRN_ENOTFOUND "no image named 'x' in app 'y'".
 */
int cairn_image_resolve(struct cairn_client *c, const char *id_or_name, char id_out[CAIRN_ID_MAX + 1]);

/* ---- sandboxes ------------------------------------------------------------------------------ */

struct cairn_sandbox_opts {
    const char *image;           /* image id or name; NULL: the app's image named "default" */
    const char *const *cmd;      /* main process and arguments (<= 256); ncmd 0: sleep forever */
    size_t ncmd;
    const char *const *env;      /* NAME=value (<= 256) */
    size_t nenv;
    const char *workdir;         /* NULL: the image's default (/) */
    bool enable_snapshot;        /* allow memory snapshots (not with gpu) */
    unsigned gpu;                /* GPUs (0..16) */
    const char *worker;          /* pin to this worker; NULL: the scheduler chooses */
    const char *req_id;          /* idempotency id; NULL: fresh */
};
struct cairn_sandbox_ref {
    char id[CAIRN_ID_MAX + 1];     /* sb-... */
    char worker[CAIRN_ID_MAX + 1]; /* where it runs */
    char job[CAIRN_ID_MAX + 1];    /* the create job */
};
/*
 * Create a sandbox and wait until it runs (however long the create job waits
 * in the queue for a worker with free capacity). opts may be NULL (all
 * defaults). Errors: the coordinator's or the job's code, e.g. CAIRN_ENOTFOUND
 * for an unknown image (or no image named "default"), an image of another app
 * or an unknown worker, CAIRN_EUNAVAILABLE for a dead worker, CAIRN_EBUSY for a
 * full one, CAIRN_EUNSUPPORTED for gpu > 0 on a cluster without GPUs.
 */
int cairn_sandbox_create(struct cairn_client *c, const struct cairn_sandbox_opts *opts, struct cairn_sandbox_ref *out);

#define CAIRN_EXEC_STDIN_MAX 65536u /* bytes of stdin an exec may carry */

struct cairn_exec_opts {
    const char *const *env;      /* extra NAME=value (<= 256) */
    size_t nenv;
    const char *workdir;         /* absolute; NULL: / */
    const uint8_t *stdin_data;   /* written to the command's stdin, then closed (<= CAIRN_EXEC_STDIN_MAX) */
    size_t stdin_len;
    uint64_t timeout_ms;         /* kill the command after this long (exit code 137); 0: no limit */
};
struct cairn_exec_result {
    int exit_code;    /* 128+N when killed by signal N */
    uint8_t *out;     /* stdout (NUL-terminated for convenience, may contain NULs); owned */
    size_t out_len;
    uint8_t *err;     /* stderr, same */
    size_t err_len;
    bool truncated;   /* a stream was cut at 4 MiB */
};
/*
 * Run argv (argc >= 1, argv[0] looked up in PATH) in sandbox sb and return its
 * exit code and output (each stream cut at 4 MiB by the coordinator). The
 * call waits as long as the command runs (timeout_ms + the client's timeout,
 * or without limit when timeout_ms is 0). opts may be NULL. A non-zero exit
 * code is not an error. Caller frees *out with cairn_exec_result_free.
 * Errors: CAIRN_ENOTFOUND (unknown sandbox, of another app, or terminated),
 * CAIRN_EUNAVAILABLE (its worker is dead), CAIRN_ETOOBIG (stdin too long).
 */
int cairn_sandbox_exec(struct cairn_client *c, const char *sb, const char *const *argv, size_t argc,
                       const struct cairn_exec_opts *opts, struct cairn_exec_result **out);
void cairn_exec_result_free(struct cairn_exec_result **r);

/*
 * Output callback of a streamed exec: stream 1 = stdout, 2 = stderr; data is
 * borrowed for the call. Return CAIRN_OK to go on; any other code stops the
 * call, which returns that code (the coordinator kills the command when it can
 * no longer deliver its output).
 */
typedef int (*cairn_output_fn)(void *arg, int stream, const uint8_t *data, size_t len);
/*
 * Run argv in sandbox sb, streaming its output while it is produced: fn is
 * called once per output piece, in order (replies are put back in sequence
 * order if they arrive out of it), with nothing lost or cut. On CAIRN_OK
 * *exit_code is the command's exit code. Without timeout_ms the call waits as
 * long as the command runs, checking every 30 s of silence that the
 * coordinator still answers (ETIMEDOUT when it does not).
 */
int cairn_sandbox_exec_stream(struct cairn_client *c, const char *sb, const char *const *argv, size_t argc,
                              const struct cairn_exec_opts *opts, cairn_output_fn fn, void *arg, int *exit_code);

struct cairn_snapshot_fs_result {
    char image[CAIRN_ID_MAX + 1]; /* im-...: the new image (its parent is the sandbox's image) */
    char job[CAIRN_ID_MAX + 1];
    uint64_t pause_ms;            /* how long the sandbox was paused (0 when not reported) */
};
/*
 * Filesystem snapshot of a running sandbox (it keeps running). ttl_s: hard TTL
 * in seconds (0: never expires). req_id: idempotency id (NULL: fresh). Waits
 * for the job.
 */
int cairn_sandbox_snapshot_fs(struct cairn_client *c, const char *sb, uint64_t ttl_s, const char *req_id,
                              struct cairn_snapshot_fs_result *out);

struct cairn_mount_info;
struct cairn_sandbox_info {
    char id[CAIRN_ID_MAX + 1];     /* sb-... */
    char state[17];                /* creating | running | terminated | failed */
    char worker[CAIRN_ID_MAX + 1]; /* "" when not placed */
    char image[CAIRN_ID_MAX + 1];  /* root image */
    int64_t created_at_ns;
    bool enable_snapshot;
    unsigned gpu;
    char restored_from[CAIRN_ID_MAX + 1]; /* sn-... or "" */
    size_t nmounts;                       /* its mounts (cairn_sandbox_mount), in mount order */
    struct cairn_mount_info *mounts;      /* owned by the list */
};
struct cairn_mount_info {
    char *path;                    /* absolute path in the sandbox; owned */
    char image[CAIRN_ID_MAX + 1];  /* mounted image; "" for an empty writable mount */
    bool csek;                     /* the image is CSEK-encrypted */
};
struct cairn_sandbox_list {
    size_t n;
    struct cairn_sandbox_info *sandboxes; /* n entries, by id */
};
/* Sandboxes of the app, all pages; `all` includes terminated ones. Caller frees *out. */
int cairn_sandbox_ls(struct cairn_client *c, bool all, struct cairn_sandbox_list **out);
void cairn_sandbox_list_free(struct cairn_sandbox_list **l);
/* Stop a sandbox and discard its writable state; waits for the job. req_id as above. */
int cairn_sandbox_terminate(struct cairn_client *c, const char *sb, const char *req_id);

/* ---- directory mounts and snapshots, CSEK (issue 5; docs/internals/snapshots.md) ------------- */

/*
 * Customer-supplied encryption keys (CSEK). A key is raw bytes, 16..512 long
 * (CAIRN_CSEK_MIN..CAIRN_CSEK_MAX of cairn/crypto.h). Calls that take one
 * (key, key_len) treat key == NULL as "no key" (key_len must then be 0);
 * any other key, an empty one included, is checked with cairn_csek_validate
 * before anything is sent and refused with CAIRN_EINVAL and that function's
 * message ("encryption key is empty", "encryption key is too short: 15 bytes
 * (at least 16)", "encryption key is too long: 513 bytes (at most 512)").
 * The key is borrowed: libcairn copies it only into the request's `key` field
 * (a SECRET field of the protocol, wiped when the request is destroyed, right
 * after it was sent over CURVE) and never into a message, log or file. The
 * caller keeps and wipes its own copy (cairn_secret_read_file of
 * cairn/crypto.h reads a key file into guarded memory).
 *
 * Paths are absolute paths inside the sandbox, other than "/" (the
 * coordinator refuses `.`/`..`/`//` parts and /proc, /dev, /sys).
 * req_id: idempotency id (NULL: a fresh one, so a retry with the same id is
 * safe). Every call waits for its job (and reports progress, see
 * cairn_client_progress_set); a failed job is the call's error, with the
 * job's code and message, e.g. CAIRN_EKEY "wrong encryption key for image
 * im-x", CAIRN_ENOTFOUND "image im-x expired on 2026-...Z".
 */

/*
 * Mount image (an id or a name of the app; NULL: an empty writable
 * directory) at path in running sandbox sb: visible at once and writable (an
 * overlay with its own upper); the path is made if missing. A CSEK image
 * needs its key. Errors: CAIRN_EINVAL (path, key size, a key for a managed
 * image), CAIRN_EEXIST (a mount at path), CAIRN_ENOTFOUND (image unknown or
 * expired), CAIRN_EKEY (missing or wrong key).
 */
int cairn_sandbox_mount(struct cairn_client *c, const char *sb, const char *path, const char *image,
                        const uint8_t *key, size_t key_len, const char *req_id);
/* Unmount path (a mount made by cairn_sandbox_mount): what was below shows again. CAIRN_ENOTFOUND when none. */
int cairn_sandbox_unmount(struct cairn_client *c, const char *sb, const char *path, const char *req_id);
/*
 * Directory snapshot of path, which must have been mounted with
 * cairn_sandbox_mount (else CAIRN_EINVAL), into a new image (kind "dir");
 * the sandbox keeps running. With a key: a CSEK image tied to that key;
 * without: managed encryption. ttl_s: a fixed lifetime in seconds from now
 * (0: the coordinator's sliding retention, 30 days after the last use).
 * id_out gets the image id (im-...).
 */
int cairn_sandbox_snapshot_dir(struct cairn_client *c, const char *sb, const char *path, const uint8_t *key,
                               size_t key_len, uint64_t ttl_s, const char *req_id, char id_out[CAIRN_ID_MAX + 1]);

/* ---- memory snapshots (issue 6) ------------------------------------------------------------- */

/*
 * Memory snapshot of sandbox sb (processes, memory, root filesystem, mounts)
 * into a new SandboxSnapshot; taking it terminates the sandbox. id_out gets
 * its id (sn-...). Refused, sandbox untouched: CAIRN_EUNSUPPORTED (not
 * created with enable_snapshot, a GPU, a CSEK mount), CAIRN_EBUSY (an exec is
 * running in it).
 */
int cairn_sandbox_snapshot(struct cairn_client *c, const char *sb, const char *req_id, char id_out[CAIRN_ID_MAX + 1]);

struct cairn_restore_result {
    size_t n;                          /* clones made (= the count asked) */
    char (*ids)[CAIRN_ID_MAX + 1];     /* n sandbox ids (sb-...), in order */
    char (*workers)[CAIRN_ID_MAX + 1]; /* n workers they run on ("" when not reported) */
    char job[CAIRN_ID_MAX + 1];        /* the restore job */
};
/*
 * Restore memory snapshot sn into count (1..256 per call; 0 means 1) new sandboxes,
 * each an exact clone, on workers whose runtime fingerprint matches (worker:
 * all on that one; NULL: spread). All or nothing: if a clone fails, those made
 * are terminated and the call fails with the first error. Caller frees *out
 * with cairn_restore_result_free. Errors: CAIRN_ENOTFOUND (unknown or
 * expired snapshot), CAIRN_EUNAVAILABLE (no live worker matches).
 */
int cairn_sandbox_restore(struct cairn_client *c, const char *sn, unsigned count, const char *worker,
                          const char *req_id, struct cairn_restore_result **out);
void cairn_restore_result_free(struct cairn_restore_result **r);

struct cairn_snapshot_info {
    char id[CAIRN_ID_MAX + 1];      /* sn-... */
    char sandbox[CAIRN_ID_MAX + 1]; /* the sandbox it was taken from */
    char image[CAIRN_ID_MAX + 1];   /* that sandbox's root image ("" when not sent) */
    char parent[CAIRN_ID_MAX + 1];  /* snapshot that sandbox was restored from, or "" */
    char fingerprint[257];          /* runtime fingerprint a restoring worker must match */
    int64_t created_at_ns;
    int64_t expires_at_ns;
    uint64_t size, stored;          /* 0 when not sent */
    size_t nmounts;
    char **mounts;                  /* nmounts paths mounted at snapshot time; owned */
};
struct cairn_snapshot_list {
    size_t n;
    struct cairn_snapshot_info *snapshots; /* n entries, by id */
};
/* Every memory snapshot of the app, all pages. Caller frees *out with cairn_snapshot_list_free. */
int cairn_snapshot_ls(struct cairn_client *c, struct cairn_snapshot_list **out);
void cairn_snapshot_list_free(struct cairn_snapshot_list **l);
/*
 * One snapshot into a new *out (caller frees with cairn_snapshot_info_free).
 * CAIRN_ENOTFOUND for an unknown id, one of another app, or an expired one
 * (the message says it expired).
 */
int cairn_snapshot_show(struct cairn_client *c, const char *id, struct cairn_snapshot_info **out);
void cairn_snapshot_info_free(struct cairn_snapshot_info **s);
/* Delete a snapshot: it can no longer be restored, its chunks are collected. CAIRN_ENOTFOUND as for show. */
int cairn_snapshot_rm(struct cairn_client *c, const char *id);

#endif
