#!/usr/bin/env bash
# Hostile bytes against real daemons: tests/integration/tools/cairn_rawsend sends truncated envelopes,
# oversized counts, wrong field types, unknown versions and types, too many frames, messages of the
# wrong direction and a few hundred seeded random and mutated frames, first to the coordinator's
# client socket, then to a worker's peer socket (with a key on that worker's peers_allow list). Each
# must be answered with an error reply or dropped; the final valid request is answered; the
# processes keep running and the cluster stays healthy.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/cluster.sh"

RAWSEND=$(bin cairn_rawsend)
[ -x "$RAWSEND" ] || { bad "cairn_rawsend not built (tests/integration/CMakeLists.txt)"; finish; exit 1; }

cluster_up mal --workers 2 || { bad "cluster up"; finish; exit 1; }
CPID=$(cluster_pid coordinator)

# ---- the coordinator's client socket ----
for seed in 1 2; do
  rc=0
  "$RAWSEND" --endpoint "$CAIRN_COORDINATOR" --keys "$CAIRN_CLIENT_KEY" --server-key "$CAIRN_COORDINATOR_KEY" \
    --target client --seed $seed --random 300 >"$T/raw.client.$seed" 2>&1 || rc=$?
  grep '^FAIL' "$T/raw.client.$seed" || true
  tail -n1 "$T/raw.client.$seed"
  check "coordinator: every malformed message answered with an error or dropped (seed $seed)" test "$rc" = 0
  check "coordinator: the final ping is answered (seed $seed)" test "$(jget "$(tail -n1 "$T/raw.client.$seed")" "j['final_ok']")" = true
  check "coordinator: the pinned answers (EVERSION, EPROTO, ETOOBIG) are right (seed $seed)" \
    test "$(jget "$(tail -n1 "$T/raw.client.$seed")" "j['pinned'] > 0 and j['pinned'] == j['pinned_ok']")" = true
done
check "coordinator still runs (pid $CPID)" pid_running "$CPID"
check "cairn ping still works" "$CAIRN" ping
cj S cluster status
check "cluster status still works: 2 workers alive" test "$(jget "$S" "j['alive']")" = 2
cj J job submit noop --wait 10000
check "jobs still run" test "$(jget "$J" "j['state']")" = succeeded

# ---- a worker's peer socket ----
"$CAIRN" keygen --out "$T/tool.key" >/dev/null
"$CAIRN" keygen --public "$T/tool.key" "$T/tool.pub" >/dev/null
if ! grep -q 'peers_allow' "$CL_DIR/w1.conf"; then
  echo "# NOTE: deploy/local-cluster.sh has no way to put a tool's key on a worker's peers_allow list;"
  echo "#       this test restarts w1 with peers_allow added to its config (see worker_add_peer_key)"
fi
check "tool key on w1's peers_allow" worker_add_peer_key w1 "$T/tool.pub"
W1PID=$(cluster_pid w1)
PEER=$(worker_field w1 addr)
for seed in 1 2; do
  rc=0
  "$RAWSEND" --endpoint "$PEER" --keys "$T/tool.key" --server-key "$CL_DIR/keys/w1.pub" \
    --target peer --seed $seed --random 300 >"$T/raw.peer.$seed" 2>&1 || rc=$?
  grep '^FAIL' "$T/raw.peer.$seed" || true
  tail -n1 "$T/raw.peer.$seed"
  check "worker peer socket: every malformed message answered with an error or dropped (seed $seed)" test "$rc" = 0
  check "worker peer socket: the final chunk.has is answered (seed $seed)" test "$(jget "$(tail -n1 "$T/raw.peer.$seed")" "j['final_ok']")" = true
  check "worker peer socket: a corrupt chunk.put is refused (ECORRUPT) and not stored (seed $seed)" \
    test "$(jget "$(tail -n1 "$T/raw.peer.$seed")" "j['corrupt_put_ok']")" = true
  check "worker peer socket: the pinned answers are right (seed $seed)" \
    test "$(jget "$(tail -n1 "$T/raw.peer.$seed")" "j['pinned'] > 0 and j['pinned'] == j['pinned_ok']")" = true
done
check "w1 still runs (pid $W1PID)" pid_running "$W1PID"
# a key that is not on the list gets nothing from the peer socket
rc=0
"$CAIRN" keygen --out "$T/other.key" >/dev/null
timeout 20 "$RAWSEND" --endpoint "$PEER" --keys "$T/other.key" --server-key "$CL_DIR/keys/w1.pub" --target peer \
  --random 0 --timeout-ms 2000 >"$T/raw.stranger" 2>&1 || rc=$?
check "a key not on the peer allow-list gets no answer from the peer socket" \
  sh -c "test $rc = 2 && grep -q 'no valid answer' '$T/raw.stranger'"
grep -q "no valid answer" "$T/raw.stranger" || cat "$T/raw.stranger"

cj S cluster status
check "cluster status: 2 workers alive" test "$(jget "$S" "j['alive']")" = 2
cj J job submit noop --worker w1 --wait 10000
check "jobs pinned to w1 still run" test "$(jget "$J" "j['state']")" = succeeded
check "the coordinator never restarted (pid $CPID)" pid_running "$CPID"

[ "$FAILED" -eq 0 ] || cluster_logs
cluster_down
finish
