/*
 * transport.c: cairn messages over ZeroMQ 4.3 with CURVE and a ZAP allow-list.
 *
 * Design
 * - One struct cairn_net per process owns the zmq context and a ZAP handler:
 *   a REP socket bound to inproc://zeromq.zap.01 and served by its own
 *   thread. libzmq asks that endpoint about every CURVE handshake of every
 *   server socket of the context. The handler is bound in cairn_net_new(),
 *   before any server socket can exist: with no handler bound, libzmq 4.3
 *   would let every client in.
 * - Allow-lists are per ZAP domain (a server socket's ZMQ_ZAP_DOMAIN), so one
 *   process can serve clients and workers with different lists. A list is a
 *   sorted array of 32-byte keys behind a mutex; reloads swap it whole.
 * - A key not on the list: the handler answers the ZAP request with status
 *   400. libzmq then fails the handshake; the client application sees neither
 *   a reply nor an error (its messages stay queued, reconnects back off up to
 *   ZMQ_RECONNECT_IVL_MAX). We answer the ZAP request rather than ignore it so
 *   that libzmq frees the half-open session at once instead of holding it until
 *   the handshake timeout. A client that trusts the wrong server key fails
 *   earlier, inside CURVE: the server cannot open its HELLO and never asks ZAP.
 * - On success the handler returns the client's Z85 public key as the ZAP
 *   User-Id; cairn_sock_recv() reads it back from the frame metadata, so the
 *   coordinator knows which key sent each message (cairn_msg_peer_key).
 * - Server = ROUTER: frames are [routing id, envelope, raw...]; the routing id
 *   becomes the message's route, and cairn_sock_send() on a ROUTER puts the
 *   route first. ZMQ_ROUTER_MANDATORY turns "peer gone" into an error
 *   (CAIRN_ENOTFOUND) instead of a silent drop, and ZMQ_ROUTER_HANDOVER lets a
 *   client that reconnects with a fixed routing id replace its stale pipe.
 *   Client = DEALER: frames are [envelope, raw...].
 * - Bounds: ZMQ_MAXMSGSIZE = CAIRN_PROTO_MAX_FRAME makes libzmq drop a peer
 *   that sends a larger frame before it is buffered; a message with more than
 *   CAIRN_PROTO_MAX_FRAMES raw frames is drained and reported as ETOOBIG.
 *   Raw frames are handed to the message without a copy (their zmq_msg_t is
 *   closed when the message is destroyed); the envelope frame is wiped after
 *   decoding, since it may hold a token or a key.
 * - Every socket has linger 0: closing never blocks on unsent messages.
 */
#include "cairn/transport.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define KEY_FILE_MAX 4096
#define ALLOW_FILE_MAX (4u << 20)
#define ALLOW_MAX_KEYS 100000u
#define DOMAIN_MAX 63

static const char z85_alphabet[] =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/* ---- keys --------------------------------------------------------------------------------------- */

static bool z85_decode32(const char *z85, uint8_t out[32])
{
    if (!z85 || strnlen(z85, CAIRN_CURVE_Z85_LEN + 1) != CAIRN_CURVE_Z85_LEN)
        return false;
    for (size_t i = 0; i < CAIRN_CURVE_Z85_LEN; i++)
        if (!z85[i] || !strchr(z85_alphabet, z85[i]))
            return false;
    return zmq_z85_decode(out, z85) != NULL;
}

bool cairn_curve_key_valid(const char *z85)
{
    uint8_t k[32];
    bool ok = z85_decode32(z85, k);
    explicit_bzero(k, sizeof(k));
    return ok;
}

int cairn_curve_keypair(struct cairn_curve_keys *out)
{
    memset(out, 0, sizeof(*out));
    if (!zmq_has("curve"))
        return cairn_err_set(CAIRN_EUNSUPPORTED, "libzmq was built without CURVE");
    if (zmq_curve_keypair(out->public_z85, out->secret_z85) != 0)
        return cairn_err_set_errno(CAIRN_EIO, errno, "generate a CURVE key pair");
    return CAIRN_OK;
}

void cairn_curve_keys_clear(struct cairn_curve_keys *k)
{
    if (k)
        explicit_bzero(k, sizeof(*k));
}

int cairn_curve_keys_write(const char *path, const struct cairn_curve_keys *k)
{
    char buf[256];
    if (!cairn_curve_key_valid(k->public_z85) || !cairn_curve_key_valid(k->secret_z85))
        return cairn_err_set(CAIRN_EINVAL, "invalid CURVE key pair for '%s'", path);
    int n = snprintf(buf, sizeof(buf),
                     "# cairn CURVE key pair: keep this file private (mode 0600)\n"
                     "public-key = %s\nsecret-key = %s\n",
                     k->public_z85, k->secret_z85);
    int rc = cairn_file_replace_atomic(path, buf, (size_t)n, 0600);
    explicit_bzero(buf, sizeof(buf));
    return rc;
}

int cairn_curve_public_write(const char *path, const char *public_z85)
{
    char buf[128];
    if (!cairn_curve_key_valid(public_z85))
        return cairn_err_set(CAIRN_EINVAL, "invalid CURVE public key for '%s'", path);
    int n = snprintf(buf, sizeof(buf), "# cairn CURVE public key\npublic-key = %s\n", public_z85);
    return cairn_file_replace_atomic(path, buf, (size_t)n, 0644);
}

/* Read a small key file; private files must not be accessible to group or others. */
static int key_file_read(const char *path, bool private_file, char *buf, size_t cap, size_t *len)
{
    int rc = CAIRN_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return cairn_err_set_errno(cairn_err_from_errno(errno), errno, "open key file '%s'", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "stat key file '%s'", path);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = cairn_err_set(CAIRN_EINVAL, "key file '%s' is not a regular file", path);
        goto out;
    }
    if (private_file && (st.st_mode & 077)) {
        rc = cairn_err_set(CAIRN_EPERM, "key file '%s' is accessible by group or others (mode %04o); chmod 600 it",
                           path, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    if ((size_t)st.st_size >= cap) {
        rc = cairn_err_set(CAIRN_ECORRUPT, "key file '%s' is too large (%lld bytes)", path, (long long)st.st_size);
        goto out;
    }
    size_t off = 0;
    while (off < cap - 1) {
        ssize_t r = read(fd, buf + off, cap - 1 - off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = cairn_err_set_errno(CAIRN_EIO, errno, "read key file '%s'", path);
            goto out;
        }
        if (r == 0)
            break;
        off += (size_t)r;
    }
    buf[off] = '\0';
    *len = off;
out:
    close(fd);
    return rc;
}

/* Parse "name = value" lines; pub/sec receive the values (either may be NULL). */
static int key_file_parse(const char *path, char *text, char *pub, char *sec)
{
    unsigned line = 0;
    for (char *p = text, *next; p && *p; p = next) {
        line++;
        next = strchr(p, '\n');
        if (next)
            *next++ = '\0';
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '#' || *p == '\0' || *p == '\r')
            continue;
        char *eq = strchr(p, '=');
        if (!eq)
            return cairn_err_set(CAIRN_ECORRUPT, "key file '%s' line %u: expected 'name = value'", path, line);
        char *name_end = eq;
        while (name_end > p && (name_end[-1] == ' ' || name_end[-1] == '\t'))
            name_end--;
        char *val = eq + 1;
        while (*val == ' ' || *val == '\t')
            val++;
        size_t vlen = strcspn(val, " \t\r");
        size_t nlen = (size_t)(name_end - p);
        char *dst = NULL;
        if (nlen == 10 && memcmp(p, "public-key", 10) == 0)
            dst = pub;
        else if (nlen == 10 && memcmp(p, "secret-key", 10) == 0)
            dst = sec;
        else
            continue; /* unknown names are ignored: room for later additions */
        if (!dst)
            continue;
        if (vlen != CAIRN_CURVE_Z85_LEN)
            return cairn_err_set(CAIRN_ECORRUPT, "key file '%s' line %u: not a 40-character Z85 key", path, line);
        memcpy(dst, val, CAIRN_CURVE_Z85_LEN);
        dst[CAIRN_CURVE_Z85_LEN] = '\0';
        if (!cairn_curve_key_valid(dst))
            return cairn_err_set(CAIRN_ECORRUPT, "key file '%s' line %u: not a Z85 key", path, line);
    }
    return CAIRN_OK;
}

int cairn_curve_keys_read(const char *path, struct cairn_curve_keys *out)
{
    char buf[KEY_FILE_MAX];
    char derived[CAIRN_CURVE_Z85_LEN + 1];
    size_t len = 0;
    memset(out, 0, sizeof(*out));
    int rc = key_file_read(path, true, buf, sizeof(buf), &len);
    if (rc != CAIRN_OK)
        goto out;
    rc = key_file_parse(path, buf, out->public_z85, out->secret_z85);
    if (rc != CAIRN_OK)
        goto out;
    if (!out->public_z85[0] || !out->secret_z85[0]) {
        rc = cairn_err_set(CAIRN_ECORRUPT, "key file '%s' lacks a %s", path,
                           out->public_z85[0] ? "secret-key" : "public-key");
        goto out;
    }
    if (zmq_curve_public(derived, out->secret_z85) != 0 || strcmp(derived, out->public_z85) != 0) {
        rc = cairn_err_set(CAIRN_ECORRUPT, "key file '%s': public-key does not belong to secret-key", path);
        goto out;
    }
out:
    explicit_bzero(buf, sizeof(buf));
    explicit_bzero(derived, sizeof(derived));
    if (rc != CAIRN_OK)
        cairn_curve_keys_clear(out);
    return rc;
}

int cairn_curve_public_read(const char *path, char out[CAIRN_CURVE_Z85_LEN + 1])
{
    char buf[KEY_FILE_MAX];
    size_t len = 0;
    out[0] = '\0';
    int rc = key_file_read(path, false, buf, sizeof(buf), &len);
    if (rc == CAIRN_OK)
        rc = key_file_parse(path, buf, out, NULL);
    if (rc == CAIRN_OK && !out[0])
        rc = cairn_err_set(CAIRN_ECORRUPT, "key file '%s' has no public-key", path);
    explicit_bzero(buf, sizeof(buf));
    return rc;
}

/* ---- the context and the ZAP handler ------------------------------------------------------------ */

struct allow_list {
    char domain[DOMAIN_MAX + 1];
    uint8_t (*keys)[32]; /* sorted */
    size_t n;
};

struct cairn_net {
    void *ctx;
    void *zap; /* REP; used only by the ZAP thread once it runs */
    pthread_t zap_thread;
    bool zap_running;
    pthread_mutex_t mu; /* guards lists */
    struct allow_list *lists;
    size_t nlists, cap;
    atomic_uint_fast64_t accepted, refused;
};

static int key_cmp(const void *a, const void *b) { return memcmp(a, b, 32); }

/* do_ prefix: the caller holds n->mu. */
static struct allow_list *do_list_find(struct cairn_net *n, const char *domain, size_t dlen)
{
    for (size_t i = 0; i < n->nlists; i++)
        if (strlen(n->lists[i].domain) == dlen && memcmp(n->lists[i].domain, domain, dlen) == 0)
            return &n->lists[i];
    return NULL;
}

static bool allowed(struct cairn_net *n, const uint8_t *domain, size_t dlen, const uint8_t key[32])
{
    bool ok = false;
    pthread_mutex_lock(&n->mu);
    struct allow_list *l = do_list_find(n, (const char *)domain, dlen);
    if (l && l->n)
        ok = bsearch(key, l->keys, l->n, 32, key_cmp) != NULL;
    pthread_mutex_unlock(&n->mu);
    return ok;
}

static void zap_reply(void *sock, zmq_msg_t *parts, const char *status, const char *text, const char *user)
{
    zmq_send(sock, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(sock, zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]), ZMQ_SNDMORE);
    zmq_send(sock, status, strlen(status), ZMQ_SNDMORE);
    zmq_send(sock, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(sock, user, strlen(user), ZMQ_SNDMORE);
    zmq_send(sock, "", 0, 0);
}

/*
 * ZAP request frames (RFC 27): version, request id, domain, address, routing
 * id, mechanism, credentials... We only accept CURVE with a listed key.
 */
static void *zap_main(void *arg)
{
    struct cairn_net *n = arg;
    enum { NPARTS = 7 };
    zmq_msg_t parts[NPARTS];
    for (;;) {
        size_t got = 0;
        bool term = false;
        for (int more = 1; more;) {
            zmq_msg_t scratch;
            zmq_msg_t *part = got < NPARTS ? &parts[got] : &scratch;
            zmq_msg_init(part);
            if (zmq_msg_recv(part, n->zap, 0) < 0) {
                zmq_msg_close(part);
                if (errno == EINTR)
                    continue;
                term = true; /* ETERM: the context is shutting down */
                break;
            }
            more = zmq_msg_more(part);
            if (part == &scratch)
                zmq_msg_close(&scratch);
            else
                got++;
        }
        if (term) {
            for (size_t i = 0; i < got; i++)
                zmq_msg_close(&parts[i]);
            break;
        }
        /* REP must answer every request, even one too short to be a ZAP request (libzmq sends none) */
        while (got < 2) {
            zmq_msg_init(&parts[got]);
            got++;
        }
        char user[CAIRN_CURVE_Z85_LEN + 1] = "";
        bool ok = got == NPARTS && zmq_msg_size(&parts[0]) == 3 && memcmp(zmq_msg_data(&parts[0]), "1.0", 3) == 0 &&
                  zmq_msg_size(&parts[5]) == 5 && memcmp(zmq_msg_data(&parts[5]), "CURVE", 5) == 0 &&
                  zmq_msg_size(&parts[6]) == 32 &&
                  allowed(n, zmq_msg_data(&parts[2]), zmq_msg_size(&parts[2]), zmq_msg_data(&parts[6]));
        if (ok && !zmq_z85_encode(user, zmq_msg_data(&parts[6]), 32))
            ok = false;
        atomic_fetch_add(ok ? &n->accepted : &n->refused, 1);
        zap_reply(n->zap, parts, ok ? "200" : "400", ok ? "OK" : "denied", ok ? user : "");
        for (size_t i = 0; i < got; i++)
            zmq_msg_close(&parts[i]);
    }
    zmq_close(n->zap);
    n->zap = NULL;
    return NULL;
}

int cairn_net_new(struct cairn_net **out)
{
    *out = NULL;
    int rc;
    struct cairn_net *n = cairn_calloc(1, sizeof(*n));
    if (!n)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory creating the network context");
    pthread_mutex_init(&n->mu, NULL);
    atomic_init(&n->accepted, 0);
    atomic_init(&n->refused, 0);
    n->ctx = zmq_ctx_new();
    if (!n->ctx) {
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "create the ZeroMQ context");
        goto fail;
    }
    if (!zmq_has("curve")) {
        rc = cairn_err_set(CAIRN_EUNSUPPORTED, "libzmq was built without CURVE");
        goto fail;
    }
    n->zap = zmq_socket(n->ctx, ZMQ_REP);
    if (!n->zap) {
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "create the ZAP socket");
        goto fail;
    }
    int linger = 0;
    zmq_setsockopt(n->zap, ZMQ_LINGER, &linger, sizeof(linger));
    if (zmq_bind(n->zap, ZAP_ENDPOINT) != 0) {
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "bind the ZAP handler to '%s'", ZAP_ENDPOINT);
        goto fail;
    }
    /* pthread_create is a full barrier: the thread may use the socket from now on */
    int err = pthread_create(&n->zap_thread, NULL, zap_main, n);
    if (err != 0) {
        rc = cairn_err_set_errno(CAIRN_EIO, err, "start the ZAP thread");
        goto fail;
    }
    n->zap_running = true;
    *out = n;
    return CAIRN_OK;
fail:
    cairn_net_destroy(&n);
    return rc;
}

void cairn_net_destroy(struct cairn_net **np)
{
    if (!np || !*np)
        return;
    struct cairn_net *n = *np;
    if (n->ctx)
        zmq_ctx_shutdown(n->ctx); /* wakes the ZAP thread with ETERM */
    if (n->zap_running)
        pthread_join(n->zap_thread, NULL);
    else if (n->zap)
        zmq_close(n->zap);
    if (n->ctx)
        zmq_ctx_term(n->ctx);
    for (size_t i = 0; i < n->nlists; i++)
        cairn_free(n->lists[i].keys);
    cairn_free(n->lists);
    pthread_mutex_destroy(&n->mu);
    cairn_free(n);
    *np = NULL;
}

/* Install a sorted copy of keys as domain's list; takes ownership of keys. */
static int list_install(struct cairn_net *n, const char *domain, uint8_t (*keys)[32], size_t count)
{
    size_t dlen = strlen(domain);
    if (dlen == 0 || dlen > DOMAIN_MAX) {
        cairn_free(keys);
        return cairn_err_set(CAIRN_EINVAL, "ZAP domain '%.64s' must be 1..%d bytes", domain, DOMAIN_MAX);
    }
    if (count)
        qsort(keys, count, 32, key_cmp);
    int rc = CAIRN_OK;
    pthread_mutex_lock(&n->mu);
    struct allow_list *l = do_list_find(n, domain, dlen);
    if (!l) {
        rc = cairn_array_grow((void **)&n->lists, &n->cap, n->nlists + 1, sizeof(*n->lists));
        if (rc == CAIRN_OK) {
            l = &n->lists[n->nlists++];
            memset(l, 0, sizeof(*l));
            memcpy(l->domain, domain, dlen + 1);
        }
    }
    if (l) {
        cairn_free(l->keys);
        l->keys = keys;
        l->n = count;
        keys = NULL;
    }
    pthread_mutex_unlock(&n->mu);
    cairn_free(keys);
    return rc;
}

int cairn_net_allow_set(struct cairn_net *n, const char *domain, const char *const *keys_z85, size_t count)
{
    if (count > ALLOW_MAX_KEYS)
        return cairn_err_set(CAIRN_ETOOBIG, "allow-list of %zu keys, limit %u", count, ALLOW_MAX_KEYS);
    uint8_t (*keys)[32] = cairn_calloc(count ? count : 1, 32);
    if (!keys)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for an allow-list");
    for (size_t i = 0; i < count; i++)
        if (!z85_decode32(keys_z85[i], keys[i])) {
            cairn_free(keys);
            return cairn_err_set(CAIRN_EINVAL, "allow-list key %zu is not a Z85 CURVE public key", i);
        }
    return list_install(n, domain, keys, count);
}

int cairn_net_allow_load(struct cairn_net *n, const char *domain, const char *path)
{
    uint8_t *text = NULL;
    size_t len = 0, count = 0, cap = 0;
    uint8_t (*keys)[32] = NULL;
    int rc = cairn_file_read_all(path, ALLOW_FILE_MAX, &text, &len);
    if (rc != CAIRN_OK)
        return rc;
    unsigned line = 0;
    for (size_t off = 0; off < len;) {
        line++;
        const char *p = (const char *)text + off;
        const char *nl = memchr(p, '\n', len - off);
        size_t llen = nl ? (size_t)(nl - p) : len - off;
        off += llen + (nl ? 1 : 0);
        /* '#' is a Z85 character: it starts a comment only where a key cannot be */
        size_t i = 0;
        while (i < llen && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r'))
            i++;
        if (i == llen || p[i] == '#')
            continue;
        size_t tok = i;
        while (i < llen && p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
            i++;
        char z85[CAIRN_CURVE_Z85_LEN + 1] = "";
        if (i - tok == CAIRN_CURVE_Z85_LEN)
            memcpy(z85, p + tok, CAIRN_CURVE_Z85_LEN);
        if (count >= ALLOW_MAX_KEYS) {
            rc = cairn_err_set(CAIRN_ETOOBIG, "allow-list '%s' has more than %u keys", path, ALLOW_MAX_KEYS);
            goto out;
        }
        rc = cairn_array_grow((void **)&keys, &cap, count + 1, 32);
        if (rc != CAIRN_OK)
            goto out;
        if (!z85_decode32(z85, keys[count])) {
            rc = cairn_err_set(CAIRN_ECORRUPT, "allow-list '%s' line %u: not a Z85 CURVE public key", path, line);
            goto out;
        }
        count++;
    }
    if (!keys) {
        keys = cairn_calloc(1, 32);
        if (!keys) {
            rc = cairn_err_set(CAIRN_ENOMEM, "out of memory for an allow-list");
            goto out;
        }
    }
    rc = list_install(n, domain, keys, count);
    keys = NULL;
out:
    cairn_free(keys);
    cairn_free(text);
    return rc;
}

size_t cairn_net_allow_count(struct cairn_net *n, const char *domain)
{
    pthread_mutex_lock(&n->mu);
    struct allow_list *l = do_list_find(n, domain, strlen(domain));
    size_t c = l ? l->n : 0;
    pthread_mutex_unlock(&n->mu);
    return c;
}

void cairn_net_zap_stats(struct cairn_net *n, uint64_t *accepted, uint64_t *refused)
{
    if (accepted)
        *accepted = atomic_load(&n->accepted);
    if (refused)
        *refused = atomic_load(&n->refused);
}

/* ---- sockets ------------------------------------------------------------------------------------ */

struct cairn_sock {
    void *z;
    bool server;
    char endpoint[256];
};

static int zmq_to_cairn(int e)
{
    switch (e) {
    case EAGAIN: return CAIRN_EAGAIN;
    case EHOSTUNREACH: return CAIRN_ENOTFOUND;
    case ETERM: return CAIRN_ECANCELED;
    case ENOMEM: return CAIRN_ENOMEM;
    case EADDRINUSE: return CAIRN_EBUSY;
    case EINVAL: case EPROTONOSUPPORT: case ENOCOMPATPROTO: case EADDRNOTAVAIL: case ENODEV: return CAIRN_EINVAL;
    case EMSGSIZE: return CAIRN_ETOOBIG;
    case EINTR: return CAIRN_EAGAIN;
    default: return CAIRN_EIO;
    }
}

static int setopt_int(struct cairn_sock *s, int opt, int v, const char *name)
{
    if (zmq_setsockopt(s->z, opt, &v, sizeof(v)) != 0)
        return cairn_err_set_errno(zmq_to_cairn(errno), errno, "set socket option %s", name);
    return CAIRN_OK;
}

static int sock_common(struct cairn_net *n, int type, const struct cairn_sock_opts *opts, struct cairn_sock **out)
{
    struct cairn_sock_opts o = opts ? *opts : (struct cairn_sock_opts){0};
    int hwm = o.hwm > 0 ? o.hwm : 1000;
    int hs = o.handshake_ms > 0 ? o.handshake_ms : 5000;
    int hb = o.heartbeat_ms > 0 ? o.heartbeat_ms : o.heartbeat_ms < 0 ? 0 : 2000;
    int64_t maxmsg = (int64_t)CAIRN_PROTO_MAX_FRAME;
    struct cairn_sock *s = cairn_calloc(1, sizeof(*s));
    if (!s)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory creating a socket");
    s->z = zmq_socket(n->ctx, type);
    if (!s->z) {
        int rc = cairn_err_set_errno(zmq_to_cairn(errno), errno, "create a ZeroMQ socket");
        cairn_free(s);
        return rc;
    }
    int rc = setopt_int(s, ZMQ_LINGER, 0, "linger");
    rc = rc ? rc : setopt_int(s, ZMQ_SNDHWM, hwm, "sndhwm");
    rc = rc ? rc : setopt_int(s, ZMQ_RCVHWM, hwm, "rcvhwm");
    rc = rc ? rc : setopt_int(s, ZMQ_HANDSHAKE_IVL, hs, "handshake_ivl");
    if (!rc && zmq_setsockopt(s->z, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg)) != 0)
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "set socket option maxmsgsize");
    if (hb) {
        rc = rc ? rc : setopt_int(s, ZMQ_HEARTBEAT_IVL, hb, "heartbeat_ivl");
        rc = rc ? rc : setopt_int(s, ZMQ_HEARTBEAT_TIMEOUT, 3 * hb, "heartbeat_timeout");
    }
    if (rc != CAIRN_OK) {
        zmq_close(s->z);
        cairn_free(s);
        return rc;
    }
    *out = s;
    return CAIRN_OK;
}

int cairn_sock_server(struct cairn_net *n, const char *endpoint, const struct cairn_curve_keys *keys,
                      const char *domain, const struct cairn_sock_opts *opts, struct cairn_sock **out)
{
    *out = NULL;
    struct cairn_sock *s = NULL;
    if (!cairn_curve_key_valid(keys->secret_z85))
        return cairn_err_set(CAIRN_EINVAL, "server for '%s': invalid CURVE secret key", endpoint);
    if (!domain || !*domain || strlen(domain) > DOMAIN_MAX)
        return cairn_err_set(CAIRN_EINVAL, "server for '%s': a ZAP domain of 1..%d bytes is required", endpoint,
                             DOMAIN_MAX);
    int rc = sock_common(n, ZMQ_ROUTER, opts, &s);
    if (rc != CAIRN_OK)
        return rc;
    s->server = true;
    rc = setopt_int(s, ZMQ_ROUTER_MANDATORY, 1, "router_mandatory");
    rc = rc ? rc : setopt_int(s, ZMQ_ROUTER_HANDOVER, 1, "router_handover");
    rc = rc ? rc : setopt_int(s, ZMQ_CURVE_SERVER, 1, "curve_server");
    if (!rc && zmq_setsockopt(s->z, ZMQ_CURVE_SECRETKEY, keys->secret_z85, CAIRN_CURVE_Z85_LEN) != 0)
        rc = cairn_err_set_errno(CAIRN_EINVAL, errno, "server for '%s': set the CURVE secret key", endpoint);
    if (!rc && zmq_setsockopt(s->z, ZMQ_ZAP_DOMAIN, domain, strlen(domain)) != 0)
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "server for '%s': set the ZAP domain", endpoint);
    if (!rc && zmq_bind(s->z, endpoint) != 0)
        rc = cairn_err_set_errno(zmq_to_cairn(errno), errno, "bind '%s'", endpoint);
    size_t elen = sizeof(s->endpoint);
    if (!rc && zmq_getsockopt(s->z, ZMQ_LAST_ENDPOINT, s->endpoint, &elen) != 0)
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "read the endpoint bound for '%s'", endpoint);
    if (rc != CAIRN_OK) {
        cairn_sock_destroy(&s);
        return rc;
    }
    *out = s;
    return CAIRN_OK;
}

int cairn_sock_client(struct cairn_net *n, const char *endpoint, const struct cairn_curve_keys *keys,
                      const char *server_public_z85, const struct cairn_sock_opts *opts, struct cairn_sock **out)
{
    *out = NULL;
    struct cairn_sock *s = NULL;
    if (!cairn_curve_key_valid(keys->public_z85) || !cairn_curve_key_valid(keys->secret_z85))
        return cairn_err_set(CAIRN_EINVAL, "client for '%s': invalid CURVE key pair", endpoint);
    if (!cairn_curve_key_valid(server_public_z85))
        return cairn_err_set(CAIRN_EINVAL, "client for '%s': invalid server public key", endpoint);
    if (opts && opts->routing_id && (opts->routing_id[0] == '\0' || strlen(opts->routing_id) > 255))
        return cairn_err_set(CAIRN_EINVAL, "client for '%s': routing id must be 1..255 bytes", endpoint);
    int rc = sock_common(n, ZMQ_DEALER, opts, &s);
    if (rc != CAIRN_OK)
        return rc;
    rc = setopt_int(s, ZMQ_RECONNECT_IVL, 100, "reconnect_ivl");
    rc = rc ? rc : setopt_int(s, ZMQ_RECONNECT_IVL_MAX, 5000, "reconnect_ivl_max");
    if (!rc && zmq_setsockopt(s->z, ZMQ_CURVE_SERVERKEY, server_public_z85, CAIRN_CURVE_Z85_LEN) != 0)
        rc = cairn_err_set_errno(CAIRN_EINVAL, errno, "client for '%s': set the server key", endpoint);
    if (!rc && zmq_setsockopt(s->z, ZMQ_CURVE_PUBLICKEY, keys->public_z85, CAIRN_CURVE_Z85_LEN) != 0)
        rc = cairn_err_set_errno(CAIRN_EINVAL, errno, "client for '%s': set the public key", endpoint);
    if (!rc && zmq_setsockopt(s->z, ZMQ_CURVE_SECRETKEY, keys->secret_z85, CAIRN_CURVE_Z85_LEN) != 0)
        rc = cairn_err_set_errno(CAIRN_EINVAL, errno, "client for '%s': set the secret key", endpoint);
    if (!rc && opts && opts->routing_id &&
        zmq_setsockopt(s->z, ZMQ_ROUTING_ID, opts->routing_id, strlen(opts->routing_id)) != 0)
        rc = cairn_err_set_errno(CAIRN_EINVAL, errno, "client for '%s': set the routing id", endpoint);
    if (!rc && zmq_connect(s->z, endpoint) != 0)
        rc = cairn_err_set_errno(zmq_to_cairn(errno), errno, "connect to '%s'", endpoint);
    if (rc != CAIRN_OK) {
        cairn_sock_destroy(&s);
        return rc;
    }
    snprintf(s->endpoint, sizeof(s->endpoint), "%s", endpoint);
    *out = s;
    return CAIRN_OK;
}

void cairn_sock_destroy(struct cairn_sock **sp)
{
    if (!sp || !*sp)
        return;
    if ((*sp)->z)
        zmq_close((*sp)->z);
    cairn_free(*sp);
    *sp = NULL;
}

const char *cairn_sock_endpoint(const struct cairn_sock *s) { return s->endpoint; }

/* Send frames; the first with DONTWAIT so a full queue or a gone peer is an error, not a block. */
static int send_frames(struct cairn_sock *s, const struct cairn_route *route, const uint8_t *const *frames,
                       const size_t *lens, size_t n)
{
    if (s->server && (!route || route->len == 0))
        return cairn_err_set(CAIRN_EINVAL, "send on a server socket needs the peer's route");
    if (!s->server && route && route->len)
        return cairn_err_set(CAIRN_EINVAL, "a client socket has no routes");
    size_t total = n + (s->server ? 1 : 0);
    for (size_t i = 0; i < total; i++) {
        const void *p = s->server ? (i == 0 ? route->id : frames[i - 1]) : frames[i];
        size_t len = s->server ? (i == 0 ? route->len : lens[i - 1]) : lens[i];
        int flags = (i + 1 < total ? ZMQ_SNDMORE : 0) | (i == 0 ? ZMQ_DONTWAIT : 0);
        int r;
        do
            r = zmq_send(s->z, p, len, flags);
        while (r < 0 && errno == EINTR && i > 0);
        if (r < 0) {
            int e = errno;
            if (i == 0 && e == EHOSTUNREACH)
                return cairn_err_set(CAIRN_ENOTFOUND, "peer is not connected to '%s'", s->endpoint);
            if (i == 0 && e == EAGAIN)
                return cairn_err_set(CAIRN_EAGAIN, "send queue to '%s' is full", s->endpoint);
            return cairn_err_set_errno(zmq_to_cairn(e), e, "send to '%s'", s->endpoint);
        }
    }
    return CAIRN_OK;
}

int cairn_sock_send_raw(struct cairn_sock *s, const struct cairn_route *route, const uint8_t *const *frames,
                        const size_t *lens, size_t n)
{
    if (n == 0)
        return cairn_err_set(CAIRN_EINVAL, "send of zero frames");
    return send_frames(s, route, frames, lens, n);
}

int cairn_sock_send(struct cairn_sock *s, const struct cairn_msg *m)
{
    uint8_t *env = NULL;
    size_t env_len = 0;
    const uint8_t **frames = NULL;
    size_t *lens = NULL;
    size_t nraw = cairn_msg_frame_count(m);
    int rc = cairn_msg_encode(m, &env, &env_len);
    if (rc != CAIRN_OK)
        goto out;
    frames = cairn_calloc(nraw + 1, sizeof(*frames));
    lens = cairn_calloc(nraw + 1, sizeof(*lens));
    if (!frames || !lens) {
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory sending a message");
        goto out;
    }
    frames[0] = env;
    lens[0] = env_len;
    for (size_t i = 0; i < nraw; i++)
        cairn_msg_frame(m, i, &frames[i + 1], &lens[i + 1]);
    struct cairn_route route = cairn_msg_route(m);
    rc = send_frames(s, s->server ? &route : NULL, frames, lens, nraw + 1);
out:
    if (env)
        explicit_bzero(env, env_len);
    cairn_free(env);
    cairn_free(frames);
    cairn_free(lens);
    return rc;
}

static void frame_release(void *ctx)
{
    zmq_msg_t *f = ctx;
    zmq_msg_close(f);
    cairn_free(f);
}

int cairn_sock_recv(struct cairn_sock *s, int timeout_ms, struct cairn_msg **out)
{
    *out = NULL;
    zmq_pollitem_t it = {.socket = s->z, .events = ZMQ_POLLIN};
    int pr = zmq_poll(&it, 1, timeout_ms < 0 ? -1 : (long)timeout_ms);
    if (pr < 0)
        return cairn_err_set_errno(zmq_to_cairn(errno), errno, "poll '%s'", s->endpoint);
    if (pr == 0 || !(it.revents & ZMQ_POLLIN))
        return cairn_err_set(CAIRN_ETIMEDOUT, "no message on '%s' within %d ms", s->endpoint, timeout_ms);

    /* parts[0..]: [route] envelope raw... ; at most the limit is kept, the rest drained */
    size_t keep = (s->server ? 1 : 0) + 1 + CAIRN_PROTO_MAX_FRAMES;
    zmq_msg_t **parts = cairn_calloc(keep, sizeof(*parts));
    size_t got = 0, seen = 0;
    int rc = parts ? CAIRN_OK : cairn_err_set(CAIRN_ENOMEM, "out of memory receiving a message");
    struct cairn__frame *raw = NULL;
    struct cairn_msg *shell = NULL;
    for (int more = 1; more;) {
        zmq_msg_t *f = cairn_malloc(sizeof(*f));
        if (!f) {
            zmq_msg_t sink;
            zmq_msg_init(&sink);
            if (zmq_msg_recv(&sink, s->z, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&sink);
                if (errno == EINTR)
                    continue;
                break;
            }
            more = zmq_msg_more(&sink);
            zmq_msg_close(&sink);
            rc = cairn_err_set(CAIRN_ENOMEM, "out of memory receiving a message");
            continue;
        }
        zmq_msg_init(f);
        if (zmq_msg_recv(f, s->z, ZMQ_DONTWAIT) < 0) {
            int e = errno;
            zmq_msg_close(f);
            cairn_free(f);
            if (e == EINTR)
                continue;
            if (rc == CAIRN_OK)
                rc = cairn_err_set_errno(zmq_to_cairn(e), e, "receive from '%s'", s->endpoint);
            break;
        }
        more = zmq_msg_more(f);
        seen++;
        if (parts && got < keep) {
            parts[got++] = f;
        } else {
            zmq_msg_close(f);
            cairn_free(f);
        }
    }
    struct cairn_route route = {0};
    size_t first = 0;
    if (s->server && got >= 1) {
        size_t rl = zmq_msg_size(parts[0]);
        route.len = (uint8_t)CAIRN_MIN(rl, sizeof(route.id));
        memcpy(route.id, zmq_msg_data(parts[0]), route.len);
        first = 1;
    }
    if (rc != CAIRN_OK)
        goto out;
    /* neither case can be answered: no envelope, or one we refuse to look at */
    if (seen > got) {
        rc = cairn_err_set(CAIRN_ETOOBIG, "message of %zu frames on '%s', limit %u raw frames", seen, s->endpoint,
                           CAIRN_PROTO_MAX_FRAMES);
        goto out;
    }
    if (got <= first) {
        rc = cairn_err_set(CAIRN_EPROTO, "message without an envelope frame on '%s'", s->endpoint);
        goto out;
    }
    size_t nraw = got - first - 1;
    raw = cairn_calloc(nraw ? nraw : 1, sizeof(*raw));
    if (!raw) {
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory receiving a message");
        goto out;
    }
    for (size_t i = 0; i < nraw; i++) {
        zmq_msg_t *f = parts[first + 1 + i];
        raw[i] = (struct cairn__frame){.p = zmq_msg_data(f), .len = zmq_msg_size(f), .release = frame_release, .ctx = f};
        parts[first + 1 + i] = NULL; /* owned by the decoder from here */
    }
    zmq_msg_t *env = parts[first];
    const char *user = zmq_msg_gets(env, "User-Id");
    rc = cairn__msg_decode_frames(zmq_msg_data(env), zmq_msg_size(env), raw, nraw, out, &shell);
    if (zmq_msg_size(env))
        explicit_bzero(zmq_msg_data(env), zmq_msg_size(env)); /* may have held a token or a key */
    struct cairn_msg *m = rc == CAIRN_OK ? *out : shell;
    if (m) {
        cairn_msg_set_route(m, s->server ? &route : NULL);
        if (user && cairn_curve_key_valid(user))
            cairn__msg_set_peer_key(m, user);
    }
    *out = m;
out:
    for (size_t i = 0; i < got; i++)
        if (parts[i])
            frame_release(parts[i]);
    cairn_free(parts);
    cairn_free(raw);
    return rc;
}

int cairn_sock_poll(struct cairn_sock *const *socks, size_t n, int timeout_ms, uint64_t *ready)
{
    *ready = 0;
    if (n == 0 || n > 64)
        return cairn_err_set(CAIRN_EINVAL, "poll of %zu sockets (1..64)", n);
    zmq_pollitem_t items[64];
    for (size_t i = 0; i < n; i++)
        items[i] = (zmq_pollitem_t){.socket = socks[i]->z, .events = ZMQ_POLLIN};
    int r = zmq_poll(items, (int)n, timeout_ms < 0 ? -1 : (long)timeout_ms);
    if (r < 0)
        return cairn_err_set_errno(zmq_to_cairn(errno), errno, "poll");
    for (size_t i = 0; i < n; i++)
        if (items[i].revents & ZMQ_POLLIN)
            *ready |= (uint64_t)1 << i;
    return *ready ? CAIRN_OK : cairn_err_set(CAIRN_ETIMEDOUT, "no socket readable within %d ms", timeout_ms);
}
