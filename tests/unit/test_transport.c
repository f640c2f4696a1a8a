/*
 * test_transport.c: real CURVE sockets on 127.0.0.1 (ports picked by the kernel).
 *
 * - An allowed client's request reaches the server with its authenticated key
 *   and the reply comes back, raw frames included.
 * - A client whose key is not on the allow-list, or that trusts the wrong
 *   server key, gets nothing: the server sees no message within 1 s.
 * - Malformed frames sent raw are reported by cairn_sock_recv as decode
 *   errors (with a shell to answer), and the server keeps serving.
 * - Allow-lists reload from files (all or nothing); key files round-trip and
 *   secret key files must be private.
 */
#include "testutil.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"
#include "cairn/proto.h"
#include "cairn/transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define DOMAIN "clients"

struct fx {
    char *dir;
    struct cairn_net *net;
    struct cairn_curve_keys server, client, stranger;
    struct cairn_sock *srv;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->dir = tu_tempdir("transport");
    assert_int_equal(cairn_net_new(&f->net), CAIRN_OK);
    assert_int_equal(cairn_curve_keypair(&f->server), CAIRN_OK);
    assert_int_equal(cairn_curve_keypair(&f->client), CAIRN_OK);
    assert_int_equal(cairn_curve_keypair(&f->stranger), CAIRN_OK);
    const char *allow[] = {f->client.public_z85};
    assert_int_equal(cairn_net_allow_set(f->net, DOMAIN, allow, 1), CAIRN_OK);
    assert_int_equal(cairn_sock_server(f->net, "tcp://127.0.0.1:*", &f->server, DOMAIN, NULL, &f->srv), CAIRN_OK);
    assert_non_null(strstr(cairn_sock_endpoint(f->srv), "tcp://127.0.0.1:"));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    cairn_sock_destroy(&f->srv);
    cairn_net_destroy(&f->net);
    assert_null(f->net);
    cairn_curve_keys_clear(&f->server);
    cairn_curve_keys_clear(&f->client);
    cairn_curve_keys_clear(&f->stranger);
    tu_rmrf(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static struct cairn_sock *connect_as(struct fx *f, const struct cairn_curve_keys *k, const char *server_pub,
                                     const struct cairn_sock_opts *o)
{
    struct cairn_sock *c = NULL;
    int rc = cairn_sock_client(f->net, cairn_sock_endpoint(f->srv), k, server_pub, o, &c);
    if (rc != CAIRN_OK)
        fail_msg("client: %s", cairn_err_msg());
    return c;
}

static struct cairn_msg *ping(uint64_t rid)
{
    struct cairn_msg *m = cairn_msg_new(CAIRN_MSG_PING);
    cairn_msg_set_rid(m, rid);
    cairn_msg_set_bin(m, "echo", "hi", 2);
    return m;
}

static void send_ok(struct cairn_sock *s, struct cairn_msg **m)
{
    int rc = cairn_sock_send(s, *m);
    if (rc != CAIRN_OK)
        fail_msg("send: %s", cairn_err_msg());
    cairn_msg_destroy(m);
}

static struct cairn_msg *recv_ok(struct cairn_sock *s, int ms)
{
    struct cairn_msg *m = NULL;
    int rc = cairn_sock_recv(s, ms, &m);
    if (rc != CAIRN_OK)
        fail_msg("recv: %s: %s", cairn_err_name(rc), cairn_err_msg());
    return m;
}

/* Serve one ping: reply with version and the echo. */
static void serve_ping(struct fx *f, const char *want_key)
{
    struct cairn_msg *q = recv_ok(f->srv, 3000);
    assert_int_equal(cairn_msg_type(q), CAIRN_MSG_PING);
    if (want_key)
        assert_string_equal(cairn_msg_peer_key(q), want_key);
    assert_true(cairn_msg_route(q).len > 0);
    struct cairn_msg *r = cairn_msg_reply(q, CAIRN_OK, NULL);
    cairn_msg_set_str(r, "version", "test");
    cairn_msg_set_u64(r, "proto", CAIRN_PROTO_VERSION);
    const uint8_t *e;
    size_t el;
    if (cairn_msg_get_bin(q, "echo", &e, &el) == CAIRN_OK)
        cairn_msg_set_bin(r, "echo", e, el);
    send_ok(f->srv, &r);
    cairn_msg_destroy(&q);
}

static void test_allowed_roundtrip(void **state)
{
    struct fx *f = *state;
    struct cairn_sock *c = connect_as(f, &f->client, f->server.public_z85, NULL);
    struct cairn_msg *m = ping(5);
    send_ok(c, &m);
    serve_ping(f, f->client.public_z85);
    struct cairn_msg *r = recv_ok(c, 3000);
    assert_true(cairn_msg_is_reply(r));
    assert_int_equal(cairn_msg_rid(r), 5);
    assert_int_equal(cairn_msg_code(r), CAIRN_OK);
    const char *v;
    assert_int_equal(cairn_msg_get_str(r, "version", &v, NULL), CAIRN_OK);
    assert_string_equal(v, "test");
    assert_string_equal(cairn_msg_peer_key(r), ""); /* clients do not authenticate through ZAP */
    cairn_msg_destroy(&r);

    /* a request with raw frames and an app token, and a reply with frames */
    struct cairn_msg *put = cairn_msg_new(CAIRN_MSG_CHUNK_PUT);
    cairn_msg_set_rid(put, 6);
    uint8_t dom[16] = {1}, id[32] = {2};
    uint8_t *big = malloc(256 * 1024);
    tu_fill_random(&(uint64_t){7}, big, 256 * 1024);
    cairn_msg_set_bin(put, "domain", dom, sizeof(dom));
    struct cairn_mval *ids = cairn_msg_set_array(put, "ids");
    cairn_mval_push_bin(put, ids, id, sizeof(id));
    cairn_mval_push_bin(put, ids, id, sizeof(id));
    cairn_msg_add_frame(put, big, 256 * 1024);
    cairn_msg_add_frame(put, "", 0);
    send_ok(c, &put);
    struct cairn_msg *q = recv_ok(f->srv, 3000);
    assert_int_equal(cairn_msg_type(q), CAIRN_MSG_CHUNK_PUT);
    assert_int_equal(cairn_msg_frame_count(q), 2);
    const uint8_t *p;
    size_t len;
    assert_int_equal(cairn_msg_frame(q, 0, &p, &len), CAIRN_OK);
    assert_int_equal(len, 256 * 1024);
    assert_memory_equal(p, big, len);
    assert_int_equal(cairn_msg_frame(q, 1, &p, &len), CAIRN_OK);
    assert_int_equal(len, 0);
    r = cairn_msg_reply(q, CAIRN_OK, NULL);
    struct cairn_mval *st = cairn_msg_set_array(r, "status");
    cairn_mval_push_u64(r, st, 0);
    cairn_mval_push_u64(r, st, CAIRN_ECORRUPT);
    send_ok(f->srv, &r);
    cairn_msg_destroy(&q);
    r = recv_ok(c, 3000);
    assert_int_equal(cairn_msg_rid(r), 6);
    const struct cairn_mval *sa;
    size_t n;
    assert_int_equal(cairn_msg_get_array(r, "status", &sa, &n), CAIRN_OK);
    assert_int_equal(n, 2);
    cairn_msg_destroy(&r);
    free(big);

    uint64_t acc = 0, ref = 0;
    cairn_net_zap_stats(f->net, &acc, &ref);
    assert_true(acc >= 1);
    assert_int_equal(ref, 0);
    cairn_sock_destroy(&c);
    cairn_sock_destroy(&c); /* NULL-safe */
}

static void test_unknown_key_gets_nothing(void **state)
{
    struct fx *f = *state;
    struct cairn_sock *c = connect_as(f, &f->stranger, f->server.public_z85, NULL);
    struct cairn_msg *m = ping(1);
    send_ok(c, &m); /* queued: the client cannot tell */
    struct cairn_msg *got = NULL;
    assert_int_equal(cairn_sock_recv(f->srv, 1000, &got), CAIRN_ETIMEDOUT);
    assert_null(got);
    assert_int_equal(cairn_sock_recv(c, 100, &got), CAIRN_ETIMEDOUT);
    uint64_t acc = 0, ref = 0;
    cairn_net_zap_stats(f->net, &acc, &ref);
    assert_true(ref >= 1);
    assert_int_equal(acc, 0);
    cairn_sock_destroy(&c);

    /* the server still serves allowed clients */
    c = connect_as(f, &f->client, f->server.public_z85, NULL);
    m = ping(2);
    send_ok(c, &m);
    serve_ping(f, f->client.public_z85);
    struct cairn_msg *r = recv_ok(c, 3000);
    assert_int_equal(cairn_msg_rid(r), 2);
    cairn_msg_destroy(&r);
    cairn_sock_destroy(&c);
}

static void test_wrong_server_key_gets_nothing(void **state)
{
    struct fx *f = *state;
    struct cairn_sock *c = connect_as(f, &f->client, f->stranger.public_z85, NULL);
    struct cairn_msg *m = ping(1);
    send_ok(c, &m);
    struct cairn_msg *got = NULL;
    assert_int_equal(cairn_sock_recv(f->srv, 1000, &got), CAIRN_ETIMEDOUT);
    assert_int_equal(cairn_sock_recv(c, 100, &got), CAIRN_ETIMEDOUT);
    uint64_t acc = 0, ref = 0;
    cairn_net_zap_stats(f->net, &acc, &ref);
    assert_int_equal(acc, 0); /* CURVE failed before ZAP was asked */
    cairn_sock_destroy(&c);
}

static void test_malformed_frames_are_decode_errors(void **state)
{
    struct fx *f = *state;
    struct cairn_sock *c = connect_as(f, &f->client, f->server.public_z85, NULL);

    /* 1. random garbage: EPROTO, nothing to answer */
    const uint8_t junk[] = {0xde, 0xad, 0xbe, 0xef};
    const uint8_t *fr[2] = {junk};
    size_t lens[2] = {sizeof(junk)};
    assert_int_equal(cairn_sock_send_raw(c, NULL, fr, lens, 1), CAIRN_OK);
    struct cairn_msg *got = NULL;
    assert_int_equal(cairn_sock_recv(f->srv, 3000, &got), CAIRN_EPROTO);
    if (got) {
        assert_int_equal(cairn_msg_rid(got), 0);
        cairn_msg_destroy(&got);
    }

    /* 2. a future protocol version: EVERSION with a shell the server answers */
    const uint8_t v2[] = {0x83, 0xa1, 'v', 0x02, 0xa1, 't', 0x01, 0xa3, 'r', 'i', 'd', 0x2a};
    fr[0] = v2;
    lens[0] = sizeof(v2);
    assert_int_equal(cairn_sock_send_raw(c, NULL, fr, lens, 1), CAIRN_OK);
    assert_int_equal(cairn_sock_recv(f->srv, 3000, &got), CAIRN_EVERSION);
    assert_non_null(got);
    assert_int_equal(cairn_msg_rid(got), 42);
    assert_int_equal(cairn_msg_type(got), CAIRN_MSG_PING);
    assert_string_equal(cairn_msg_peer_key(got), f->client.public_z85);
    struct cairn_msg *r = cairn_msg_reply(got, CAIRN_EVERSION, cairn_err_msg());
    send_ok(f->srv, &r);
    cairn_msg_destroy(&got);
    r = recv_ok(c, 3000);
    assert_int_equal(cairn_msg_rid(r), 42);
    assert_int_equal(cairn_msg_code(r), CAIRN_EVERSION);
    assert_non_null(strstr(cairn_msg_text(r), "version 2"));
    cairn_msg_destroy(&r);

    /* 3. a valid envelope with a field of the wrong type, plus a stray raw frame */
    const uint8_t badf[] = {0x84, 0xa1, 'v', 0x01, 0xa1, 't', 0x01, 0xa3, 'r', 'i', 'd', 0x09,
                            0xa1, 'f', 0x81, 0xa4, 'e', 'c', 'h', 'o', 0x05};
    fr[0] = badf;
    lens[0] = sizeof(badf);
    fr[1] = (const uint8_t *)"raw";
    lens[1] = 3;
    assert_int_equal(cairn_sock_send_raw(c, NULL, fr, lens, 2), CAIRN_OK);
    assert_int_equal(cairn_sock_recv(f->srv, 3000, &got), CAIRN_EPROTO);
    assert_non_null(strstr(cairn_err_msg(), "'echo'"));
    assert_non_null(got);
    assert_int_equal(cairn_msg_rid(got), 9);
    assert_int_equal(cairn_msg_frame_count(got), 0);
    cairn_msg_destroy(&got);

    /* 4. an empty envelope frame */
    fr[0] = (const uint8_t *)"";
    lens[0] = 0;
    assert_int_equal(cairn_sock_send_raw(c, NULL, fr, lens, 1), CAIRN_OK);
    assert_int_equal(cairn_sock_recv(f->srv, 3000, &got), CAIRN_EPROTO);
    cairn_msg_destroy(&got);

    /* the server keeps serving */
    struct cairn_msg *m = ping(77);
    send_ok(c, &m);
    serve_ping(f, f->client.public_z85);
    r = recv_ok(c, 3000);
    assert_int_equal(cairn_msg_rid(r), 77);
    cairn_msg_destroy(&r);

    /* and a client reports a malformed reply the same way */
    assert_int_equal(cairn_sock_send_raw(c, NULL, (const uint8_t *const[]){v2}, (const size_t[]){sizeof(v2)}, 1),
                     CAIRN_OK);
    assert_int_equal(cairn_sock_recv(f->srv, 3000, &got), CAIRN_EVERSION);
    struct cairn_route route = cairn_msg_route(got);
    assert_int_equal(cairn_sock_send_raw(f->srv, &route, (const uint8_t *const[]){junk},
                                         (const size_t[]){sizeof(junk)}, 1),
                     CAIRN_OK);
    cairn_msg_destroy(&got);
    assert_int_equal(cairn_sock_recv(c, 3000, &got), CAIRN_EPROTO);
    cairn_msg_destroy(&got);
    cairn_sock_destroy(&c);
}

static void test_allowlist_reload(void **state)
{
    struct fx *f = *state;
    const char *path = tu_path("%s/allow", f->dir);
    char text[512];
    snprintf(text, sizeof(text),
             "# clients allowed to talk to the coordinator\n\n  %s   cli-1 # the CLI\n%s\t# the stranger\n",
             f->client.public_z85, f->stranger.public_z85);
    tu_write_file(path, text, strlen(text));
    assert_int_equal(cairn_net_allow_load(f->net, DOMAIN, path), CAIRN_OK);
    assert_int_equal(cairn_net_allow_count(f->net, DOMAIN), 2);

    struct cairn_sock *c = connect_as(f, &f->stranger, f->server.public_z85, NULL);
    struct cairn_msg *m = ping(3);
    send_ok(c, &m);
    serve_ping(f, f->stranger.public_z85);
    struct cairn_msg *r = recv_ok(c, 3000);
    cairn_msg_destroy(&r);
    cairn_sock_destroy(&c);

    /* a broken file changes nothing */
    const char *bad = "not-a-key\n";
    tu_write_file(path, bad, strlen(bad));
    assert_int_equal(cairn_net_allow_load(f->net, DOMAIN, path), CAIRN_ECORRUPT);
    assert_non_null(strstr(cairn_err_msg(), "line 1"));
    assert_int_equal(cairn_net_allow_count(f->net, DOMAIN), 2);
    assert_int_equal(cairn_net_allow_load(f->net, DOMAIN, tu_path("%s/missing", f->dir)), CAIRN_ENOTFOUND);
    const char *bad_keys[] = {f->client.public_z85, "short"};
    assert_int_equal(cairn_net_allow_set(f->net, DOMAIN, bad_keys, 2), CAIRN_EINVAL);
    assert_int_equal(cairn_net_allow_count(f->net, DOMAIN), 2);

    /* reload without the stranger: new handshakes are refused */
    snprintf(text, sizeof(text), "%s\n", f->client.public_z85);
    tu_write_file(path, text, strlen(text));
    assert_int_equal(cairn_net_allow_load(f->net, DOMAIN, path), CAIRN_OK);
    assert_int_equal(cairn_net_allow_count(f->net, DOMAIN), 1);
    c = connect_as(f, &f->stranger, f->server.public_z85, NULL);
    m = ping(4);
    send_ok(c, &m);
    struct cairn_msg *got = NULL;
    assert_int_equal(cairn_sock_recv(f->srv, 1000, &got), CAIRN_ETIMEDOUT);
    cairn_sock_destroy(&c);

    /* '#' is a Z85 character: a key containing it is not cut at the '#' */
    struct cairn_curve_keys hashed;
    do
        assert_int_equal(cairn_curve_keypair(&hashed), CAIRN_OK);
    while (!strchr(hashed.public_z85, '#'));
    snprintf(text, sizeof(text), "#only a comment\n%s #label\n", hashed.public_z85);
    tu_write_file(path, text, strlen(text));
    assert_int_equal(cairn_net_allow_load(f->net, DOMAIN, path), CAIRN_OK);
    assert_int_equal(cairn_net_allow_count(f->net, DOMAIN), 1);
    c = connect_as(f, &hashed, f->server.public_z85, NULL);
    m = ping(5);
    send_ok(c, &m);
    serve_ping(f, hashed.public_z85);
    cairn_sock_destroy(&c);
    cairn_curve_keys_clear(&hashed);

    /* an empty list denies everyone; other domains are separate */
    tu_write_file(path, "# nobody\n", 9);
    assert_int_equal(cairn_net_allow_load(f->net, DOMAIN, path), CAIRN_OK);
    assert_int_equal(cairn_net_allow_count(f->net, DOMAIN), 0);
    assert_int_equal(cairn_net_allow_count(f->net, "workers"), 0);
}

static void test_routing_and_poll(void **state)
{
    struct fx *f = *state;
    struct cairn_sock_opts o = {.routing_id = "w1", .hwm = 16, .heartbeat_ms = -1};
    struct cairn_sock *c1 = connect_as(f, &f->client, f->server.public_z85, &o);
    struct cairn_sock *c2 = connect_as(f, &f->client, f->server.public_z85, NULL);
    struct cairn_msg *m = ping(10);
    send_ok(c1, &m);
    struct cairn_sock *socks[] = {c1, c2, f->srv};
    uint64_t ready = 0;
    assert_int_equal(cairn_sock_poll(socks, 3, 3000, &ready), CAIRN_OK);
    assert_int_equal(ready, 4);
    struct cairn_msg *q = recv_ok(f->srv, 0);
    struct cairn_route route = cairn_msg_route(q);
    assert_int_equal(route.len, 2);
    assert_memory_equal(route.id, "w1", 2);
    cairn_msg_destroy(&q);

    /* the server can push to a client by route (coordinator -> worker) */
    struct cairn_msg *push = cairn_msg_new(CAIRN_MSG_MEMBERSHIP);
    cairn_msg_set_rid(push, 99);
    cairn_msg_set_u64(push, "epoch", 1);
    cairn_msg_set_array(push, "workers");
    cairn_msg_set_route(push, &route);
    send_ok(f->srv, &push);
    struct cairn_msg *got = recv_ok(c1, 3000);
    assert_int_equal(cairn_msg_type(got), CAIRN_MSG_MEMBERSHIP);
    cairn_msg_destroy(&got);
    assert_int_equal(cairn_sock_poll(socks, 3, 100, &ready), CAIRN_ETIMEDOUT);
    assert_int_equal(ready, 0);

    /* an unknown route is an error, not a silent drop */
    struct cairn_route nobody = {.len = 3, .id = "zzz"};
    push = cairn_msg_new(CAIRN_MSG_MEMBERSHIP);
    cairn_msg_set_u64(push, "epoch", 1);
    cairn_msg_set_array(push, "workers");
    cairn_msg_set_route(push, &nobody);
    assert_int_equal(cairn_sock_send(f->srv, push), CAIRN_ENOTFOUND);
    cairn_msg_set_route(push, NULL);
    assert_int_equal(cairn_sock_send(f->srv, push), CAIRN_EINVAL);
    assert_int_equal(cairn_sock_send(c1, push), CAIRN_OK); /* clients need no route */
    cairn_msg_destroy(&push);
    /* invalid messages are never sent */
    struct cairn_msg *bad = cairn_msg_new(CAIRN_MSG_CLUSTER_STATUS); /* no app, no token */
    assert_int_equal(cairn_sock_send(c2, bad), CAIRN_EPROTO);
    cairn_msg_destroy(&bad);

    /* a second bind on the same port */
    struct cairn_sock *dup = NULL;
    assert_int_equal(cairn_sock_server(f->net, cairn_sock_endpoint(f->srv), &f->server, DOMAIN, NULL, &dup),
                     CAIRN_EBUSY);
    assert_null(dup);
    assert_int_equal(cairn_sock_server(f->net, "tcp://127.0.0.1:*", &f->server, "", NULL, &dup), CAIRN_EINVAL);
    assert_int_equal(cairn_sock_server(f->net, "bogus://x", &f->server, DOMAIN, NULL, &dup), CAIRN_EINVAL);
    cairn_sock_destroy(&c1);
    cairn_sock_destroy(&c2);
}

static void test_key_files(void **state)
{
    struct fx *f = *state;
    const char *kp = tu_path("%s/node.key", f->dir);
    const char *pp = tu_path("%s/node.pub", f->dir);
    assert_int_equal(cairn_curve_keys_write(kp, &f->client), CAIRN_OK);
    struct stat st;
    assert_int_equal(stat(kp, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    struct cairn_curve_keys k;
    assert_int_equal(cairn_curve_keys_read(kp, &k), CAIRN_OK);
    assert_string_equal(k.public_z85, f->client.public_z85);
    assert_string_equal(k.secret_z85, f->client.secret_z85);
    cairn_curve_keys_clear(&k);
    assert_int_equal(k.secret_z85[0], 0);

    char pub[CAIRN_CURVE_Z85_LEN + 1];
    assert_int_equal(cairn_curve_public_read(kp, pub), CAIRN_OK);
    assert_string_equal(pub, f->client.public_z85);
    assert_int_equal(cairn_curve_public_write(pp, f->client.public_z85), CAIRN_OK);
    assert_int_equal(cairn_curve_public_read(pp, pub), CAIRN_OK);
    assert_string_equal(pub, f->client.public_z85);
    /* a public key file is not a key pair */
    assert_int_equal(chmod(pp, 0600), 0);
    assert_int_equal(cairn_curve_keys_read(pp, &k), CAIRN_ECORRUPT);

    /* a readable secret key file is refused */
    assert_int_equal(chmod(kp, 0644), 0);
    assert_int_equal(cairn_curve_keys_read(kp, &k), CAIRN_EPERM);
    assert_non_null(strstr(cairn_err_msg(), "chmod 600"));
    assert_null(strstr(cairn_err_msg(), f->client.secret_z85)); /* never in messages */
    assert_int_equal(chmod(kp, 0600), 0);

    /* a public key that does not match the secret, and garbage */
    char text[256];
    snprintf(text, sizeof(text), "public-key = %s\nsecret-key = %s\n", f->stranger.public_z85, f->client.secret_z85);
    tu_write_file(kp, text, strlen(text));
    assert_int_equal(chmod(kp, 0600), 0);
    assert_int_equal(cairn_curve_keys_read(kp, &k), CAIRN_ECORRUPT);
    assert_null(strstr(cairn_err_msg(), f->client.secret_z85));
    tu_write_file(kp, "secret-key = abc\n", 17);
    assert_int_equal(chmod(kp, 0600), 0);
    assert_int_equal(cairn_curve_keys_read(kp, &k), CAIRN_ECORRUPT);
    tu_write_file(kp, "hello\n", 6);
    assert_int_equal(chmod(kp, 0600), 0);
    assert_int_equal(cairn_curve_keys_read(kp, &k), CAIRN_ECORRUPT);
    assert_int_equal(cairn_curve_keys_read(tu_path("%s/none", f->dir), &k), CAIRN_ENOTFOUND);

    assert_true(cairn_curve_key_valid(f->client.public_z85));
    assert_false(cairn_curve_key_valid("short"));
    assert_false(cairn_curve_key_valid("0000000000000000000000000000000000000000x"));
    assert_false(cairn_curve_key_valid("000000000000000000000000000000000000000\""));
    assert_false(cairn_curve_key_valid(NULL));
    /* keys are rejected before any socket is made */
    struct cairn_sock *s = NULL;
    struct cairn_curve_keys broken = f->client;
    broken.secret_z85[0] = '"';
    assert_int_equal(cairn_sock_client(f->net, "tcp://127.0.0.1:1", &broken, f->server.public_z85, NULL, &s),
                     CAIRN_EINVAL);
    assert_int_equal(cairn_sock_client(f->net, "tcp://127.0.0.1:1", &f->client, "nope", NULL, &s), CAIRN_EINVAL);
    assert_null(s);
    cairn_curve_keys_clear(&broken);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_allowed_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_key_gets_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_server_key_gets_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_frames_are_decode_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_allowlist_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routing_and_poll, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_files, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
