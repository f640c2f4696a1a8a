#!/usr/bin/env bash
# A real 3-worker cluster (deploy/local-cluster.sh): registration, ping, a job round trip, idempotent
# submits, pinned jobs, and the errors of unknown workers and of jobs of another app.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/cluster.sh"

cluster_up basic --workers 3 || { bad "cluster up"; finish; exit 1; }

# ---- registration ----
cj S cluster status
check "cluster status exits 0" test "$CJ_RC" = 0
check "3 workers registered" test "$(jget "$S" "len(j['workers'])")" = 3
check "3 workers alive" test "$(jget "$S" "sum(1 for w in j['workers'] if w['alive'] is True)")" = 3
check "workers are w1 w2 w3" test "$(jget "$S" "' '.join(sorted(w['id'] for w in j['workers']))")" = "w1 w2 w3"
check "every worker has its peer addr" test "$(jget "$S" "all(w['addr'].startswith('tcp://') and w['addr'].endswith(':' + str($CL_PORT + 10 + int(w['id'][1:]))) for w in j['workers'])")" = true
check "every worker has counts" test "$(jget "$S" "all(isinstance(w[k], int) and w[k] >= 0 for w in j['workers'] for k in ('chunks', 'bytes', 'sandboxes'))")" = true
check "last_seen is recent" python3 -c '
import json, sys, time
j = json.loads(sys.argv[1])
assert all(abs(w["last_seen"] / 1e9 - time.time()) < 30 for w in j["workers"]), j' "$S"
check "status has an epoch and R" test "$(jget "$S" "j['epoch'] >= 1 and j['replicas'] >= 1")" = true
check "text status lists the workers" sh -c "'$CAIRN' cluster status | grep -cE '^w[123] ' | grep -qx 3"

# ---- ping ----
check "cairn ping" "$CAIRN" ping
cj P ping
check "ping --json names the protocol and version" test "$(jget "$P" "j['proto'] == 1 and len(j['version']) > 0")" = true

# ---- a job round trip ----
cj J job submit noop --wait
check "noop --wait exits 0" test "$CJ_RC" = 0
JOB=$(jget "$J" "j['id']")
W=$(jget "$J" "j['worker']")
check "job id is jb- + 16 hex" grep -qE '^jb-[0-9a-f]{16}$' <<<"$JOB"
check "noop succeeded" test "$(jget "$J" "j['state']")" = succeeded
check "the job names its worker" grep -qE '^w[123]$' <<<"$W"
check "the noop result names the same worker" test "$(jget "$J" "j['result']['worker']")" = "$W"
cj G job get "$JOB"
check "job get exits 0" test "$CJ_RC" = 0
check "job get shows succeeded" test "$(jget "$G" "j['state']")" = succeeded
check "job get shows the worker" test "$(jget "$G" "j['worker']")" = "$W"
check "job get shows the kind" test "$(jget "$G" "j['kind']")" = noop
# without --json: the result alone on the last line
OUT=$("$CAIRN" job submit noop --wait)
check "text submit --wait prints the result" python3 -c 'import json,sys; assert json.loads(sys.argv[1].splitlines()[-1])["worker"]' "$OUT"

# a job that takes time: --wait waits for it, job get --wait long-polls it
t0=$(now_ms)
cj J2 job submit noop --param sleep_ms=700
JOB2=$(jget "$J2" "j['id']")
check "sleeping job accepted at once" test "$(jget "$J2" "j['state'] in ('queued', 'running')")" = true
cj G2 job get "$JOB2" --wait 10000
check "job get --wait returns once it finished" test "$(jget "$G2" "j['state']")" = succeeded
check "... and not before its 700 ms" test $(( $(now_ms) - t0 )) -ge 700

# ---- idempotency ----
RQ=rq-basic-$$
cj A job submit noop --req-id "$RQ" --wait
cj B job submit noop --req-id "$RQ"
check "same --req-id twice -> same job id" test -n "$(jget "$A" "j['id']")" -a "$(jget "$A" "j['id']")" = "$(jget "$B" "j['id']")"
check "the repeat reports the finished job" test "$(jget "$B" "j['state']")" = succeeded
cj C job submit noop --req-id "$RQ-2"
check "another --req-id -> another job" test "$(jget "$C" "j['id']")" != "$(jget "$A" "j['id']")"
# in parallel: 5 concurrent submits with one req_id make one job
for i in 1 2 3 4 5; do "$CAIRN" --json job submit noop --req-id "$RQ-par" >"$T/par.$i" & done
wait
check "5 concurrent submits with one --req-id -> one job" test "$(cat "$T"/par.* | python3 -c 'import json,sys; print(len({json.loads(l)["id"] for l in sys.stdin}))')" = 1

# ---- pinned jobs ----
for w in w1 w2 w3; do
  cj P job submit noop --worker "$w" --wait
  check "job pinned to $w runs on $w" test "$(jget "$P" "j['worker'] + '/' + j['result']['worker'] + '/' + j['state']")" = "$w/$w/succeeded"
done
cj P job submit noop --param-str worker=w2 --wait
check "pinning through params works the same" test "$(jget "$P" "j['worker']")" = w2

# ---- unknown worker ----
cj U job submit noop --worker w9 --wait
check "unknown worker -> exit 5" test "$CJ_RC" = 5
check "unknown worker -> ENOTFOUND naming it" test "$(jget "$U" "j['error']['name'] == 'ENOTFOUND' and 'w9' in j['error']['message']")" = true
expect_fail 5 "w9" -- "$CAIRN" job submit noop --worker w9 --wait

# ---- unknown jobs and jobs of another app ----
expect_rc 5 "job get of an unknown job id" -- "$CAIRN" job get jb-0000000000000000
cj N app create other --token-out "$T/other.token"
check "admin creates app 'other'" test "$CJ_RC" = 0
check "token file is 0600" test "$(stat -c %a "$T/other.token")" = 600
expect_rc 6 "creating app 'other' again -> EEXIST" -- "$CAIRN" app create other --token-out "$T/other2.token"
O=$(CAIRN_APP=other CAIRN_TOKEN_FILE="$T/other.token" "$CAIRN" --json job get "$JOB" 2>/dev/null) && orc=0 || orc=$?
check "job of another app -> exit 5" test "$orc" = 5
check "job of another app -> ENOTFOUND (never EPERM)" test "$(jget "$O" "j['error']['name']")" = ENOTFOUND
O=$(CAIRN_APP=other CAIRN_TOKEN_FILE="$T/other.token" "$CAIRN" --json job submit noop --req-id "$RQ" --wait 2>/dev/null) || true
check "req_ids are per app: same --req-id in 'other' is a new job" test -n "$(jget "$O" "j['id']")" -a "$(jget "$O" "j['id']")" != "$(jget "$A" "j['id']")"
check "... which runs" test "$(jget "$O" "j['state']")" = succeeded
OJ=$(jget "$O" "j['id']")
expect_rc 5 "and 'default' cannot see the job of 'other'" -- "$CAIRN" job get "$OJ"
cj S2 cluster status
check "still 3 workers alive" test "$(jget "$S2" "j['alive']")" = 3

cluster_down
finish
