#!/usr/bin/env bash
# Authentication on a real cluster: a client key not on the allow-list and a wrong coordinator key get
# no answer at all (ETIMEDOUT within the client's deadline); a wrong app token, an unknown app and admin
# calls with an app token are EAUTH; the test clock is EPERM without --test-clock; secrets never reach
# the logs; a key pair file others can read is refused.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/cluster.sh"

cluster_up sec --workers 1 || { bad "cluster up"; finish; exit 1; }
check "the allowed client works" "$CAIRN" ping
check "the app token works" "$CAIRN" cluster status

# timed RC MS -- cmd...: exit status in TRC, wall ms in TMS
timed() { local t0; t0=$(now_ms); TRC=0; "$@" >"$T/timed.out" 2>&1 || TRC=$?; TMS=$(( $(now_ms) - t0 )); }

# ---- a key that is not on the allow-list: no answer, ETIMEDOUT within the deadline ----
"$CAIRN" keygen --out "$T/stranger.key" >/dev/null
timed env CAIRN_CLIENT_KEY="$T/stranger.key" CAIRN_TIMEOUT_MS=2000 "$CAIRN" ping
check "unknown client key: ping -> ETIMEDOUT (14), got $TRC" test "$TRC" = 14
check "... within the 2 s deadline (+1.5 s), took $TMS ms" test "$TMS" -ge 1900 -a "$TMS" -le 3500
check "... the message suggests the allow-list" grep -qi "allow" "$T/timed.out"
timed env CAIRN_CLIENT_KEY="$T/stranger.key" CAIRN_TIMEOUT_MS=2000 "$CAIRN" --json cluster status
check "unknown client key: cluster status -> 14" test "$TRC" = 14
check "... JSON error ETIMEDOUT" test "$(jget "$(cat "$T/timed.out")" "j['error']['name']")" = ETIMEDOUT
timed env CAIRN_CLIENT_KEY="$T/stranger.key" CAIRN_TIMEOUT_MS=2000 "$CAIRN" job submit noop --wait
check "unknown client key: job submit -> 14" test "$TRC" = 14

# ---- the wrong coordinator public key: the handshake fails, nothing is delivered ----
"$CAIRN" keygen --out "$T/fake-coord.key" >/dev/null
"$CAIRN" keygen --public "$T/fake-coord.key" "$T/fake-coord.pub" >/dev/null
timed env CAIRN_COORDINATOR_KEY="$T/fake-coord.pub" CAIRN_TIMEOUT_MS=2000 "$CAIRN" ping
check "wrong coordinator key: ping -> 14, got $TRC" test "$TRC" = 14
check "... within the deadline, took $TMS ms" test "$TMS" -le 3500
timed env CAIRN_COORDINATOR_KEY="$T/fake-coord.pub" CAIRN_TIMEOUT_MS=2000 "$CAIRN" cluster status
check "wrong coordinator key: cluster status -> 14" test "$TRC" = 14

# ---- wrong app token, unknown app ----
BADTOK=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
J=$(CAIRN_TOKEN="$BADTOK" "$CAIRN" --json cluster status 2>/dev/null) && rc=0 || rc=$?
check "wrong app token -> EAUTH (7), got $rc" test "$rc" = 7
check "... message names the app" test "$(jget "$J" "j['error']['name'] == 'EAUTH' and 'default' in j['error']['message']")" = true
J=$(CAIRN_TOKEN="$BADTOK" "$CAIRN" --json job submit noop 2>/dev/null) && rc=0 || rc=$?
check "wrong app token: job submit -> 7" test "$rc" = 7
J=$(CAIRN_APP=nosuchapp CAIRN_TOKEN="$BADTOK" "$CAIRN" --json cluster status 2>/dev/null) && rc=0 || rc=$?
check "unknown app -> EAUTH too (7), got $rc" test "$rc" = 7
J2=$(CAIRN_TOKEN="$BADTOK" "$CAIRN" --json cluster status 2>/dev/null) || true
check "unknown app and wrong token answer alike (nothing tells which apps exist)" test \
  "$(jget "$J" "j['error']['message'].replace('nosuchapp', 'X')")" = "$(jget "$J2" "j['error']['message'].replace('default', 'X')")"
# a token of another app does not open this one
"$CAIRN" app create other --token-out "$T/other.token" >/dev/null
J=$(CAIRN_TOKEN_FILE="$T/other.token" "$CAIRN" --json cluster status 2>/dev/null) && rc=0 || rc=$?
check "the token of app 'other' for app 'default' -> 7" test "$rc" = 7
J=$(CAIRN_APP=other CAIRN_TOKEN_FILE="$T/other.token" "$CAIRN" --json cluster status 2>/dev/null) && rc=0 || rc=$?
check "... and it opens 'other'" test "$rc" = 0

# ---- admin calls with an app token ----
expect_rc 7 "app create with the app token as admin token -> EAUTH" -- env CAIRN_ADMIN_TOKEN_FILE="$CAIRN_TOKEN_FILE" "$CAIRN" app create x1
expect_rc 7 "admin clock advance with the app token -> EAUTH" -- env CAIRN_ADMIN_TOKEN_FILE="$CAIRN_TOKEN_FILE" "$CAIRN" admin clock advance 1d
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/fake-admin.token"; chmod 600 "$T/fake-admin.token"
expect_rc 7 "app create with a random admin token -> EAUTH" -- env CAIRN_ADMIN_TOKEN_FILE="$T/fake-admin.token" "$CAIRN" app create x2
J=$(CAIRN_ADMIN_TOKEN_FILE="$CAIRN_TOKEN_FILE" "$CAIRN" --json app create x3 2>/dev/null) || true
check "... JSON error EAUTH" test "$(jget "$J" "j['error']['name']")" = EAUTH
expect_rc 0 "the refused calls created nothing: the real admin token creates app x1" -- "$CAIRN" app create x1 --token-out "$T/x1.token"

# ---- the test clock without --test-clock ----
cj A admin clock advance 1d
check "admin clock advance without --test-clock -> EPERM (12), got $CJ_RC" test "$CJ_RC" = 12
check "... JSON error EPERM" test "$(jget "$A" "j['error']['name']")" = EPERM

# ---- key files others can read are refused ----
cp "$CAIRN_CLIENT_KEY" "$T/open.key"; chmod 644 "$T/open.key"
expect_rc 12 "a client key pair file readable by others -> EPERM" -- env CAIRN_CLIENT_KEY="$T/open.key" "$CAIRN" ping

# ---- secrets never reach the logs ----
TOK=$(tr -d ' \n' <"$CAIRN_TOKEN_FILE")
ADM=$(tr -d ' \n' <"$CAIRN_ADMIN_TOKEN_FILE")
SECRET=$(grep -h '^secret-key' "$CL_DIR"/keys/*.key | sed 's/^secret-key *= *//' | head -n1)
check "logs exist" test -s "$CL_DIR/logs/coordinator.log"
check "the app token is in no log" sh -c "! grep -rqiF -- '$TOK' '$CL_DIR/logs'"
check "the admin token is in no log" sh -c "! grep -rqiF -- '$ADM' '$CL_DIR/logs'"
check "the bad token is in no log" sh -c "! grep -rqiF -- '$BADTOK' '$CL_DIR/logs'"
check "no secret key is in a log" sh -c "! grep -rqF -- '$SECRET' '$CL_DIR/logs'"
check "secret files are 0600" test "$(stat -c %a "$CL_DIR/master.key" "$CL_DIR/admin.token" "$CAIRN_CLIENT_KEY" | sort -u)" = 600

# and the cluster is fine
check "the allowed client still works" "$CAIRN" ping
cj J job submit noop --wait
check "jobs still run" test "$(jget "$J" "j['state']")" = succeeded

[ "$FAILED" -eq 0 ] || cluster_logs
cluster_down
finish
