/*
 * client_int.h: what the files of libcairn share (private to client/).
 *
 * libcairn.c owns the client (connection, request ids, synchronous calls, the
 * table of pipelined calls, jobs); libcairn_image.c and libcairn_sandbox.c add
 * the image and sandbox calls on top of the same primitives, and the streamed
 * exec needs the socket itself, hence the struct is here. Nothing in this
 * header is API: names carry the cairn__ prefix.
 */
#ifndef CAIRN_CLIENT_INT_H
#define CAIRN_CLIENT_INT_H

#include "cairn/cairn.h"
#include "cairn/proto.h"

struct cairn_net;
struct cairn_sock;

struct cairn__pending {
    uint64_t rid;
    enum cairn_msg_type type;
    uint64_t t0_ns;       /* when the job was first submitted (latency accounting) */
    uint64_t deadline_ns; /* monotonic */
    unsigned wait_ms;
};

struct cairn_client {
    struct cairn_net *net;
    struct cairn_sock *sock;
    char *endpoint;
    char *app;
    uint8_t token[CAIRN_TOKEN_MAX];
    size_t token_len;
    char *app_hint;         /* why app calls cannot be made (NULL when they can) */
    int app_hint_code;      /* the error app calls then fail with */
    char *admin_token_file; /* NULL: admin calls fail with admin_hint */
    const char *admin_hint;
    unsigned timeout_ms;
    bool reached; /* a reply has come back on this socket: the coordinator knows us */
    cairn_progress_fn progress; /* cairn_client_progress_set: long sandbox jobs report here */
    void *progress_arg;
    uint64_t next_rid;
    struct cairn__pending *pend;
    size_t npend, cappend;
    struct cairn_msg **stash; /* replies to calls in flight, arrival order */
    size_t nstash, capstash;
    char err[1100];
};

/* Copy the thread's error message into the client; returns rc. */
int cairn__keep_err(struct cairn_client *c, int rc);
/* ETIMEDOUT naming the endpoint and the usual causes. */
int cairn__timeout_err(const struct cairn_client *c, uint64_t ms);
/* Put the app and its token on an app request (or fail with why they are missing). */
int cairn__auth_app(struct cairn_client *c, struct cairn_msg *m, const char *what);
/* A new request of type t (NULL with ENOMEM set). */
struct cairn_msg *cairn__msg_new(enum cairn_msg_type t);
/* Send m with a fresh rid (returned). m stays the caller's. */
int cairn__send_req(struct cairn_client *c, struct cairn_msg *m, uint64_t *rid);
/* A reply nobody synchronous waits for: kept for a pipelined call that owns it, else dropped. Takes *m. */
void cairn__stash_or_drop(struct cairn_client *c, struct cairn_msg **m);
/* The error an error reply carries (CAIRN_OK for a success reply). */
int cairn__reply_err(const struct cairn_msg *m);
/* Ping once if nothing came back on this socket yet. */
int cairn__ensure_reached(struct cairn_client *c);
/*
 * One synchronous round trip (takes *req); the deadline is the client's
 * timeout + wait_ms. On CAIRN_OK *reply is a success reply of the same type.
 */
int cairn__call(struct cairn_client *c, struct cairn_msg **req, unsigned wait_ms, struct cairn_msg **reply);
/* A job status reply into a new struct cairn_job. */
int cairn__job_from_reply(const struct cairn_msg *m, struct cairn_job **out);
/*
 * Send a request that starts a job (its wait_ms field, if any, set by the
 * caller to req_wait_ms), then long-poll job.get until the job finished.
 * progress (may be NULL) sees the job's done/total as `stage` (a static
 * string: "import", "snapshot-dir", ...); with it the polls are short (1 s). On CAIRN_OK *job is the final state and *final
 * the last reply (read its "result" map); the caller frees both. A job that
 * failed is still CAIRN_OK here: look at (*job)->state.
 */
int cairn__job_run(struct cairn_client *c, struct cairn_msg **req, unsigned req_wait_ms, const char *stage,
                   cairn_progress_fn progress, void *progress_arg, struct cairn_job **job, struct cairn_msg **final);
/* A finished job's failure as the call's error (its code and message), else CAIRN_OK. */
int cairn__job_err(const struct cairn_job *j, const char *what);

/* ---- libcairn_sandbox.c: helpers of the sandbox calls ---- */
/* EINVAL unless id is 1..CAIRN_ID_MAX bytes (what names the call). */
int cairn__check_id(const char *what, const char *id);
/* EINVAL unless req_id is NULL or 1..64 bytes. */
int cairn__check_req_id(const char *req_id);
/* A new app request of type t with the app and token on it, or NULL with the error in *rc. */
struct cairn_msg *cairn__app_req(struct cairn_client *c, enum cairn_msg_type t, const char *what, int *rc);
/* A paged listing (image ls, sandbox ls, snapshot ls): requests of type t with "limit" = CAIRN__LS_PAGE,
   "after" and the filter (NULL: none; a str field when str_val != NULL, a bool field set when bool_val),
   until the coordinator's "next" ends; each page's array `field` goes to page(arg, arr, n), whose error
   stops the listing and is returned. */
#define CAIRN__LS_PAGE 1000
struct cairn__ls_filter {
    const char *str_key, *str_val;
    const char *bool_key;
    bool bool_val;
};
typedef int (*cairn__ls_page_fn)(void *arg, const struct cairn_mval *arr, size_t n);
int cairn__ls_pages(struct cairn_client *c, enum cairn_msg_type t, const char *what, const char *field,
                    const struct cairn__ls_filter *filter, cairn__ls_page_fn page, void *arg);
/* req_id, or a fresh "rq-" id when NULL. */
void cairn__set_req_id(struct cairn_msg *m, const char *req_id);
/* A string of a job's final reply's result map: key k1, else k2 (may be NULL); "" when neither. */
void cairn__result_str(const struct cairn_msg *rep, const char *k1, const char *k2, char *out, size_t cap);
/*
 * Run a job-starting request (takes *req) to its end, with wait_ms set and the
 * client's progress callback (stage = what without "sandbox "). A failed job
 * is the error (its code and message). *job and *final (may be NULL) are the
 * caller's on CAIRN_OK.
 */
int cairn__run_job(struct cairn_client *c, struct cairn_msg **req, const char *what, struct cairn_job **job,
                   struct cairn_msg **final);

/* Copy a str value into a fixed buffer ("" when absent or not a string). */
void cairn__copy_str(const struct cairn_mval *v, char *out, size_t cap);
uint64_t cairn__get_u64(const struct cairn_mval *v);
/* "x-" + 16 random hex digits into out (>= 20 bytes). */
void cairn__gen_id(char *out, const char *prefix);

#endif
