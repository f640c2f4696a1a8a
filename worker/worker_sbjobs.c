/*
 * worker_sbjobs.c: the sandbox lifecycle jobs sandbox-create, sandbox-terminate and snapshot-fs
 * (docs/internals/sandboxes.md "Jobs"). sandbox-exec is worker_exec.c.
 *
 * Sandboxes are named by the coordinator's runtime id (32 hex, never reused), which is the runsc id: an
 * unknown one is ENOTFOUND naming it. The sandbox runtime (sandbox.h) does the work; these functions turn
 * params into its calls and its outcome into results.
 *
 * sandbox-create: the layers (top first) come from the layer cache (worker_image.c), built here when
 *   missing; then cairn_sandbox_create with the runtime id. A dispatch for a runtime id that already runs
 *   here (resent after a lost result) succeeds without a second sandbox. A worker at capacity refuses
 *   with EBUSY (the coordinator places by capacity too; this is the backstop). create_ms is the job's
 *   whole time on the worker (layers and start).
 * snapshot-fs: pause, capture the root overlay's upper dir with CAIRN_TREE_OVERLAY (or, with flatten, the
 *   merged root as a plain tree), resume (on every path), then send the tree's refs (job.refs) and
 *   replicate its chunks. Mount points made by sandbox.mount are left out of the capture. pause_ms covers pause,
 *   capture and resume.
 * sandbox-terminate also removes the sandbox's private CSEK layer dirs (DATA_DIR/private/<runtime id>).
 */
#include "worker_jobs_int.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"
#include "cairn/log.h"

#include <stdio.h>

#define LAYERS_MAX 32u
#define ARGS_MAX 256u

static int runtime_of(struct jt *t, const struct job *jb, struct cairn_runtime **rt)
{
    *rt = cairn_wk__env(t)->rt;
    if (!*rt)
        return cairn_err_set(CAIRN_EUNAVAILABLE, "%s: worker '%s' runs no sandbox runtime", jb->kind,
                             cairn_wk__env(t)->worker_id);
    return CAIRN_OK;
}

int cairn_wk__sandbox_of(struct jt *t, const struct job *jb, struct cairn_sandbox **sb, const char **rid)
{
    *sb = NULL;
    struct cairn_runtime *rt;
    CAIRN_FORWARD_IF_ERROR(runtime_of(t, jb, &rt));
    CAIRN_FORWARD_IF_ERROR(cairn_wk__param_str(jb, "runtime_id", true, rid));
    if (cairn_runtime_sandbox_get(rt, *rid, sb) != CAIRN_OK)
        return cairn_err_set(CAIRN_ENOTFOUND, "sandbox '%.64s' does not run on worker '%s'", *rid,
                             cairn_wk__env(t)->worker_id);
    return CAIRN_OK;
}

/* ---- string vectors from params ---- */

void cairn_wk__strv_release(struct wk_strv *s)
{
    for (size_t i = 0; i < s->nown; i++)
        cairn_free(s->own[i]);
    CAIRN_FREE(s->own);
    CAIRN_FREE(s->v);
    s->n = s->nown = 0;
}

int cairn_wk__strv_array(const struct job *jb, const char *key, struct wk_strv *s)
{
    memset(s, 0, sizeof(*s));
    const struct cairn_mval *v = cairn_wk__param(jb, key);
    if (!v)
        return CAIRN_OK;
    size_t n = cairn_mval_len(v);
    if (cairn_mval_kind(v) != CAIRN_MV_ARRAY || n > ARGS_MAX)
        return cairn_err_set(CAIRN_EINVAL, "%s: params.%s must be an array of at most %u strings", jb->kind, key,
                             ARGS_MAX);
    if (!(s->v = cairn_calloc(n + 1, sizeof(*s->v))))
        return cairn_err_set(CAIRN_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        if (cairn_mval_str(cairn_mval_at(v, i), &s->v[i], &len) != CAIRN_OK) {
            cairn_wk__strv_release(s);
            return cairn_err_set(CAIRN_EINVAL, "%s: params.%s[%zu] is not a string", jb->kind, key, i);
        }
    }
    s->n = n;
    return CAIRN_OK;
}

int cairn_wk__strv_env(const struct job *jb, struct wk_strv *s)
{
    memset(s, 0, sizeof(*s));
    const struct cairn_mval *v = cairn_wk__param(jb, "env");
    if (!v || cairn_mval_kind(v) == CAIRN_MV_NIL)
        return CAIRN_OK;
    if (cairn_mval_kind(v) == CAIRN_MV_ARRAY) {
        CAIRN_FORWARD_IF_ERROR(cairn_wk__strv_array(jb, "env", s));
    } else if (cairn_mval_kind(v) == CAIRN_MV_MAP) {
        size_t n = cairn_mval_len(v);
        if (n > ARGS_MAX)
            return cairn_err_set(CAIRN_EINVAL, "%s: params.env has more than %u entries", jb->kind, ARGS_MAX);
        s->v = cairn_calloc(n + 1, sizeof(*s->v));
        s->own = cairn_calloc(n ? n : 1, sizeof(*s->own));
        if (!s->v || !s->own) {
            cairn_wk__strv_release(s);
            return cairn_err_set(CAIRN_ENOMEM, "out of memory");
        }
        for (size_t i = 0; i < n; i++) {
            const char *k = NULL, *val = NULL;
            const struct cairn_mval *vv = NULL;
            size_t vl = 0;
            if (cairn_mval_entry(v, i, &k, &vv) != CAIRN_OK || cairn_mval_str(vv, &val, &vl) != CAIRN_OK) {
                cairn_wk__strv_release(s);
                return cairn_err_set(CAIRN_EINVAL, "%s: params.env values must be strings", jb->kind);
            }
            size_t kl = strlen(k);
            char *kv = cairn_malloc(kl + vl + 2);
            if (!kv) {
                cairn_wk__strv_release(s);
                return cairn_err_set(CAIRN_ENOMEM, "out of memory");
            }
            memcpy(kv, k, kl);
            kv[kl] = '=';
            memcpy(kv + kl + 1, val, vl + 1);
            s->own[s->nown++] = kv;
            s->v[s->n++] = kv;
        }
    } else {
        return cairn_err_set(CAIRN_EINVAL, "%s: params.env must be an array of \"K=V\" or a map", jb->kind);
    }
    for (size_t i = 0; i < s->n; i++) {
        if (!strchr(s->v[i], '=') || s->v[i][0] == '=') {
            int rc = cairn_err_set(CAIRN_EINVAL, "%s: params.env entry %zu is not K=V", jb->kind, i);
            cairn_wk__strv_release(s);
            return rc;
        }
    }
    return CAIRN_OK;
}

/* ---- sandbox-create ---- */

int cairn_wk__run_sandbox_create(struct jt *t, const struct job *jb, struct cairn_msg *res)
{
    const struct cairn_wk_jobs_env *e = cairn_wk__env(t);
    uint64_t t0 = cairn_now_mono_ns();
    struct cairn_runtime *rt;
    const char *rid = NULL, *app = NULL, *workdir = NULL, *hostname = NULL, *name = NULL;
    const struct cairn_domain *d = NULL;
    CAIRN_FORWARD_IF_ERROR(runtime_of(t, jb, &rt));
    CAIRN_FORWARD_IF_ERROR(cairn_wk__param_str(jb, "runtime_id", true, &rid));
    CAIRN_FORWARD_IF_ERROR(cairn_wk__param_str(jb, "sandbox", false, &name));
    CAIRN_FORWARD_IF_ERROR(cairn_wk__param_str(jb, "workdir", false, &workdir));
    CAIRN_FORWARD_IF_ERROR(cairn_wk__param_str(jb, "hostname", false, &hostname));
    bool snap = false;
    const struct cairn_mval *sv = cairn_wk__param(jb, "enable_snapshot");
    if (sv && cairn_mval_bool(sv, &snap) != CAIRN_OK)
        return cairn_err_set(CAIRN_EINVAL, "sandbox-create: params.enable_snapshot must be a bool");
    if (strlen(rid) != CAIRN_SANDBOX_ID_LEN)
        return cairn_err_set(CAIRN_EINVAL, "sandbox-create: params.runtime_id must be %d hex characters",
                             CAIRN_SANDBOX_ID_LEN);
    const struct cairn_mval *lv = cairn_wk__param(jb, "layers");
    size_t nl = lv ? cairn_mval_len(lv) : 0;
    if (lv && (cairn_mval_kind(lv) != CAIRN_MV_ARRAY || nl > LAYERS_MAX))
        return cairn_err_set(CAIRN_EINVAL, "sandbox-create: params.layers must be an array of at most %u layer "
                             "references (the coordinator flattens deeper chains)", LAYERS_MAX);
    struct cairn_sandbox *sb = NULL;
    if (cairn_runtime_sandbox_get(rt, rid, &sb) == CAIRN_OK) {
        cairn_info("sandbox %s (%s) already runs here: created before", rid, name ? name : "?");
        cairn_sandbox_release(&sb);
        struct cairn_mval *r = cairn_msg_set_map(res, "result");
        cairn_mval_put_u64(res, r, "create_ms", 0);
        cairn_mval_put_u64(res, r, "fetched_chunks", 0);
        cairn_mval_put_u64(res, r, "fetched_bytes", 0);
        cairn_mval_put_str(res, r, "worker", e->worker_id);
        return CAIRN_OK;
    }
    cairn_err_clear();
    size_t count = cairn_runtime_count(rt);
    if (count >= e->capacity)
        return cairn_err_set(CAIRN_EBUSY, "worker '%s' is full: %zu sandboxes, capacity %llu", e->worker_id, count,
                             (unsigned long long)e->capacity);
    CAIRN_FORWARD_IF_ERROR(cairn_wk__job_app(jb, &app));
    CAIRN_FORWARD_IF_ERROR(cairn_wk__domain_of(t->j, app, &d));

    struct wk_strv argv = {0}, env = {0};
    char *paths[LAYERS_MAX] = {0};
    uint64_t fchunks = 0, fbytes = 0;
    int rc = cairn_wk__strv_array(jb, "cmd", &argv);
    if (rc == CAIRN_OK && argv.v && argv.n == 0)
        cairn_wk__strv_release(&argv); /* [] = the default main process */
    if (rc == CAIRN_OK)
        rc = cairn_wk__strv_env(jb, &env);
    for (size_t i = 0; i < nl && rc == CAIRN_OK; i++) {
        char what[48];
        snprintf(what, sizeof(what), "params.layers[%zu]", i);
        struct wk_layer_ref lr;
        rc = cairn_wk__layer_ref_parse(cairn_mval_at(lv, i), what, &lr);
        if (rc == CAIRN_OK) {
            rc = cairn_wk__layer_get(t, jb, d, &lr, &paths[i], &fchunks, &fbytes);
            cairn_tree_ref_release(&lr.ref);
        }
    }
    if (rc != CAIRN_OK)
        goto out;
    struct cairn_sandbox_spec spec = {
        .lowers = (const char *const *)paths,
        .n_lowers = nl,
        .argv = argv.v,
        .env = env.v,
        .hostname = hostname,
        .cwd = workdir && *workdir ? workdir : NULL,
        .enable_snapshot = snap,
    };
    snprintf(spec.id, sizeof(spec.id), "%s", rid);
    rc = cairn_wk__job_check(t, jb);
    if (rc == CAIRN_OK)
        rc = cairn_sandbox_create(rt, &spec, &sb);
    if (rc != CAIRN_OK)
        goto out;
    cairn_sandbox_release(&sb);
    uint64_t ms = (cairn_now_mono_ns() - t0) / 1000000u;
    cairn_info("sandbox %s (%s) created in %llu ms from %zu layers (%llu chunks fetched)", rid, name ? name : "?",
               (unsigned long long)ms, nl, (unsigned long long)fchunks);
    struct cairn_mval *r = cairn_msg_set_map(res, "result");
    cairn_mval_put_u64(res, r, "create_ms", ms);
    cairn_mval_put_u64(res, r, "fetched_chunks", fchunks);
    cairn_mval_put_u64(res, r, "fetched_bytes", fbytes);
    cairn_mval_put_str(res, r, "worker", e->worker_id);
out:
    for (size_t i = 0; i < nl && i < LAYERS_MAX; i++)
        cairn_free(paths[i]);
    cairn_wk__strv_release(&argv);
    cairn_wk__strv_release(&env);
    return rc;
}

/* ---- sandbox-terminate ---- */

int cairn_wk__run_sandbox_terminate(struct jt *t, const struct job *jb, struct cairn_msg *res)
{
    struct cairn_sandbox *sb = NULL;
    const char *rid = NULL;
    CAIRN_FORWARD_IF_ERROR(cairn_wk__sandbox_of(t, jb, &sb, &rid));
    int rc = cairn_sandbox_terminate(sb);
    cairn_sandbox_release(&sb);
    if (rc != CAIRN_OK)
        return rc;
    char dd[4096];
    if (cairn_wk__data_dir(t, dd, sizeof(dd)) == CAIRN_OK)
        cairn_wk__private_cleanup(dd, rid, NULL, 0);
    cairn_msg_set_map(res, "result");
    return CAIRN_OK;
}

/* ---- snapshot-fs ---- */

int cairn_wk__run_snapshot_fs(struct jt *t, const struct job *jb, struct cairn_msg *res)
{
    const struct cairn_wk_jobs_env *e = cairn_wk__env(t);
    const char *rid = NULL, *image = NULL, *app = NULL;
    const struct cairn_domain *d = NULL;
    bool flatten = false;
    CAIRN_FORWARD_IF_ERROR(cairn_wk__param_str(jb, "image", true, &image));
    if (!cairn_wk_layer_id_valid(image))
        return cairn_err_set(CAIRN_EINVAL, "snapshot-fs: params.image '%.80s' is not an image id", image);
    const struct cairn_mval *fv = cairn_wk__param(jb, "flatten");
    if (fv && cairn_mval_bool(fv, &flatten) != CAIRN_OK)
        return cairn_err_set(CAIRN_EINVAL, "snapshot-fs: params.flatten must be a bool");
    CAIRN_FORWARD_IF_ERROR(cairn_wk__job_app(jb, &app));
    CAIRN_FORWARD_IF_ERROR(cairn_wk__domain_of(t->j, app, &d));
    struct cairn_sandbox *sb = NULL;
    CAIRN_FORWARD_IF_ERROR(cairn_wk__sandbox_of(t, jb, &sb, &rid));

    char **mounts = NULL;
    size_t nmounts = 0;
    struct cairn_tree_ref ref = {0};
    struct cairn_tree_stats st = {0};
    int rc = cairn_sandbox_mounts(sb, &mounts, &nmounts);
    if (rc != CAIRN_OK)
        goto out;
    struct cairn_tree_opts o = {
        .flags = flatten ? 0u : (unsigned)CAIRN_TREE_OVERLAY,
        .exclude = (const char *const *)mounts,
        .n_exclude = nmounts,
    };
    const char *src = flatten ? cairn_sandbox_merged_dir(sb) : cairn_sandbox_upper_dir(sb);
    uint64_t t0 = cairn_now_mono_ns();
    rc = cairn_sandbox_pause(sb);
    if (rc != CAIRN_OK) {
        char pmsg[1024];
        snprintf(pmsg, sizeof(pmsg), "%s", cairn_err_msg());
        if (cairn_sandbox_resume(sb) != CAIRN_OK) /* in case it stopped half-way */
            cairn_warn("sandbox %s: resume after a failed pause: %s", rid, cairn_err_msg());
        rc = cairn_err_set(rc, "snapshot-fs of sandbox %s: pause: %s", rid, pmsg);
        goto out;
    }
    rc = cairn_tree_capture(e->store, d, src, &o, &ref, &st);
    char msg[1024] = "";
    if (rc != CAIRN_OK)
        snprintf(msg, sizeof(msg), "%s", cairn_err_msg());
    int rr = cairn_sandbox_resume(sb);
    uint64_t pause_ms = (cairn_now_mono_ns() - t0) / 1000000u;
    if (rc != CAIRN_OK) {
        if (rr != CAIRN_OK)
            cairn_error("sandbox %s: resume after a failed capture: %s", rid, cairn_err_msg());
        rc = cairn_err_set(rc, "snapshot-fs of sandbox %s: %s", rid, msg);
        goto out;
    }
    if (rr != CAIRN_OK) {
        rc = cairn_err_set(rr, "snapshot-fs of sandbox %s: captured, but the resume failed: %s", rid,
                           cairn_err_msg());
        goto out;
    }
    cairn_info("sandbox %s: %s snapshot '%s' paused %llu ms: %llu entries (%llu whiteouts), %llu bytes, %llu new "
               "chunks", rid, flatten ? "flattened" : "filesystem", image, (unsigned long long)pause_ms,
               (unsigned long long)st.entries, (unsigned long long)st.whiteouts, (unsigned long long)st.bytes,
               (unsigned long long)st.chunks_new);
    rc = cairn_wk__send_refs(t, jb, d, &ref); /* first: replication may drop local copies */
    if (rc == CAIRN_OK)
        rc = cairn_wk__replicate_tree(t, jb, d, &ref, "replicate");
    if (rc != CAIRN_OK)
        goto out;
    struct cairn_mval *r = cairn_msg_set_map(res, "result");
    cairn_mval_put_str(res, r, "image", image);
    rc = cairn_wk__layer_ref_put(res, r, &ref);
    cairn_mval_put_u64(res, r, "pause_ms", pause_ms);
    cairn_mval_put_u64(res, r, "files", st.files);
    cairn_mval_put_u64(res, r, "size", st.bytes);
    cairn_mval_put_u64(res, r, "stored", st.stored_bytes);
    cairn_mval_put_bool(res, r, "flatten", flatten);
out:
    for (size_t i = 0; i < nmounts; i++)
        cairn_free(mounts[i]);
    cairn_free(mounts);
    cairn_tree_ref_release(&ref);
    cairn_sandbox_release(&sb);
    return rc;
}
