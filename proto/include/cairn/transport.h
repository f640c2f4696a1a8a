/*
 * transport.h: cairn messages over ZeroMQ, with CURVE on every socket and a
 * ZAP allow-list of client public keys (PROTOCOL.md "Transport", "Security").
 *
 * Objects (opaque; callers never see ZeroMQ types)
 *   struct cairn_net   one per process: the ZeroMQ context and the ZAP handler
 *                      thread. Thread-safe. Destroy it after every socket.
 *   struct cairn_sock  one socket: a server (ROUTER, binds, CURVE server,
 *                      checks client keys against an allow-list domain) or a
 *                      client (DEALER, connects, knows the server's public
 *                      key). Not thread-safe: one thread at a time.
 *
 * Key material: struct cairn_curve_keys holds a Z85 key pair; the secret half
 * never goes to a log or an error message. Clear it with cairn_curve_keys_clear
 * when done. Key files are text (PROTOCOL.md "Key files"):
 *     # comment
 *     public-key = <40 Z85 chars>
 *     secret-key = <40 Z85 chars>     (key pair files only; mode 0600)
 * Allow-list files: one Z85 public key per line; anything after the key (a
 * label, a comment) is ignored; lines whose first non-blank character is '#'
 * and blank lines are ignored. ('#' is itself a Z85 character, so a comment
 * never starts inside a key.)
 *
 * Errors are cairn codes with cairn_err_msg() set; nothing here asserts on
 * input from the network or from files.
 */
#ifndef CAIRN_TRANSPORT_H
#define CAIRN_TRANSPORT_H

#include "cairn/proto.h"

#define CAIRN_CURVE_Z85_LEN 40

struct cairn_curve_keys {
    char public_z85[CAIRN_CURVE_Z85_LEN + 1];
    char secret_z85[CAIRN_CURVE_Z85_LEN + 1];
};

/* A fresh CURVE key pair. CAIRN_EUNSUPPORTED if libzmq was built without CURVE. */
int cairn_curve_keypair(struct cairn_curve_keys *out);
/* Wipe a key pair (explicit_bzero). NULL-safe. */
void cairn_curve_keys_clear(struct cairn_curve_keys *k);
/* True when z85 is 40 Z85 characters encoding a 32-byte key. */
bool cairn_curve_key_valid(const char *z85);
/* Write a key pair file atomically, mode 0600 (cairn_file_replace_atomic). */
int cairn_curve_keys_write(const char *path, const struct cairn_curve_keys *k);
/*
 * Read a key pair file. CAIRN_EPERM if it is readable or writable by group or
 * others, CAIRN_ECORRUPT if malformed or if the public key does not match the
 * secret key, CAIRN_ENOTFOUND if missing. On error *out is wiped.
 */
int cairn_curve_keys_read(const char *path, struct cairn_curve_keys *out);
/* Write a public key file (mode 0644). */
int cairn_curve_public_write(const char *path, const char *public_z85);
/* Read the public key of a public key file or of a key pair file; out holds 41 bytes. */
int cairn_curve_public_read(const char *path, char out[CAIRN_CURVE_Z85_LEN + 1]);

/* ---- the network context and its ZAP handler ---------------------------------------------------- */

struct cairn_net;

/* New context with its ZAP handler running. Every allow-list domain starts empty (deny all). */
int cairn_net_new(struct cairn_net **out);
/* Stops the ZAP handler and terminates the context. Every cairn_sock of it must be destroyed first. */
void cairn_net_destroy(struct cairn_net **n);
/*
 * Replace the allow-list of a domain (e.g. "clients", "workers", "peers") with
 * these Z85 public keys. All or nothing: CAIRN_EINVAL names the first invalid
 * key (by index) and leaves the list unchanged. Applies to handshakes from now
 * on; established connections are not dropped.
 */
int cairn_net_allow_set(struct cairn_net *n, const char *domain, const char *const *keys_z85, size_t count);
/* (Re)load a domain's allow-list from a file. All or nothing, like cairn_net_allow_set. */
int cairn_net_allow_load(struct cairn_net *n, const char *domain, const char *path);
/* Keys in a domain's list. */
size_t cairn_net_allow_count(struct cairn_net *n, const char *domain);
/* Handshakes the ZAP handler accepted / refused since cairn_net_new. */
void cairn_net_zap_stats(struct cairn_net *n, uint64_t *accepted, uint64_t *refused);

/* ---- sockets ------------------------------------------------------------------------------------- */

struct cairn_sock;

/* Options; zero fields take the default. NULL = all defaults. */
struct cairn_sock_opts {
    int hwm;              /* send and receive high-water marks, in messages (1000) */
    int handshake_ms;     /* CURVE handshake timeout (5000) */
    int heartbeat_ms;     /* ZMTP heartbeat interval, timeout 3x (2000); < 0 disables */
    const char *routing_id; /* client: fixed routing id seen by the server (default: server-assigned) */
};

/*
 * Server socket: ROUTER bound to endpoint (e.g. "tcp://0.0.0.0:7300", or
 * "tcp://127.0.0.1:*" for a free port: see cairn_sock_endpoint), CURVE server
 * with keys, accepting only clients whose public key is in `domain`'s
 * allow-list. CAIRN_EBUSY if the address is in use.
 */
int cairn_sock_server(struct cairn_net *n, const char *endpoint, const struct cairn_curve_keys *keys,
                      const char *domain, const struct cairn_sock_opts *opts, struct cairn_sock **out);
/*
 * Client socket: DEALER connecting (in the background, with reconnects) to
 * endpoint, authenticating with keys, trusting only server_public_z85.
 * Messages sent before the connection is up are queued.
 */
int cairn_sock_client(struct cairn_net *n, const char *endpoint, const struct cairn_curve_keys *keys,
                      const char *server_public_z85, const struct cairn_sock_opts *opts, struct cairn_sock **out);
/* Close (linger 0: unsent messages are dropped). NULL-safe; sets *s = NULL. */
void cairn_sock_destroy(struct cairn_sock **s);
/* Resolved endpoint ("tcp://127.0.0.1:41234" for a server bound to port *). Valid until destroy. */
const char *cairn_sock_endpoint(const struct cairn_sock *s);

/*
 * Send m: validated and encoded (cairn_msg_encode), then its raw frames. On a
 * server socket m's route picks the peer (cairn_msg_reply copies it from the
 * request). Never blocks: CAIRN_EAGAIN when the peer's queue is full,
 * CAIRN_ENOTFOUND when a server's peer is not connected (any more).
 */
int cairn_sock_send(struct cairn_sock *s, const struct cairn_msg *m);
/*
 * Wait up to timeout_ms (< 0: forever, 0: poll) for one message.
 *   CAIRN_OK: *out is the message (route and peer key set on a server socket).
 *   CAIRN_ETIMEDOUT: nothing arrived; *out = NULL.
 *   A decode error (CAIRN_EPROTO, CAIRN_ETOOBIG, CAIRN_EVERSION): the bad
 *     message was consumed and *out is a shell carrying its route, type and rid
 *     when they could be read (answer it with cairn_msg_reply(*out, rc, ...)),
 *     or NULL. The socket stays usable.
 *   Other errors (CAIRN_ENOMEM, CAIRN_ECANCELED when the context is shutting
 *     down, CAIRN_EIO): *out = NULL.
 * Whenever *out is not NULL the caller destroys it.
 */
int cairn_sock_recv(struct cairn_sock *s, int timeout_ms, struct cairn_msg **out);
/*
 * Send frames verbatim (tests, tools): on a server socket route selects the
 * peer (required), on a client it must be NULL. Nothing is validated.
 */
int cairn_sock_send_raw(struct cairn_sock *s, const struct cairn_route *route, const uint8_t *const *frames,
                        const size_t *lens, size_t n);
/*
 * Wait up to timeout_ms for any of n (<= 64) sockets to be readable; bit i of
 * *ready is set when socks[i] is. CAIRN_ETIMEDOUT when none.
 */
int cairn_sock_poll(struct cairn_sock *const *socks, size_t n, int timeout_ms, uint64_t *ready);

#endif
