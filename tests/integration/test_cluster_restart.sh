#!/usr/bin/env bash
# Coordinator restart on a real cluster: everything it knows is in RocksDB. After SIGTERM and a start
# with the same config: app tokens still work, old jobs keep their states and results, req_ids still
# deduplicate, the workers re-register on their own, new jobs run, a job that was running during the
# restart still reports its outcome, and the test clock's offset survives.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/cluster.sh"

cluster_up rst --workers 2 --test-clock || { bad "cluster up"; finish; exit 1; }

# ---- state before the restart ----
cj A app create keep --token-out "$T/keep.token"
check "app 'keep' created" test "$CJ_RC" = 0
keep() { CAIRN_APP=keep CAIRN_TOKEN_FILE="$T/keep.token" "$@"; }
J1=$(keep "$CAIRN" --json job submit noop --req-id rq-keep-1 --wait 10000)
check "a job of app 'keep' succeeded" test "$(jget "$J1" "j['state']")" = succeeded
cj J2 job submit noop --worker w2 --req-id rq-default-2 --wait 10000
check "a job of app 'default' succeeded on w2" test "$(jget "$J2" "j['state'] + '/' + j['worker']")" = succeeded/w2
cj J3 job submit noop --worker nosuchworker --wait 10000
check "a failed job (unknown worker)" test "$(jget "$J3" "j['state']")" = failed
ID1=$(jget "$J1" "j['id']"); ID2=$(jget "$J2" "j['id']"); ID3=$(jget "$J3" "j['id']")
# a job still running when the coordinator goes away (the worker keeps it and reports it later)
cj J4 job submit noop --param sleep_ms=4000 --worker w1
ID4=$(jget "$J4" "j['id']")
job4_running() { local g; cj g job get "$ID4"; [ "$(jget "$g" "j['state']")" = running ]; }
check "a 4 s job is running on w1" wait_for 10 "job running" job4_running

cj C admin clock advance 2d
check "test clock advanced by 2 days" test "$CJ_RC" = 0
NOW_BEFORE=$(jget "$C" "j['now']")
offset_ok() { # JSON with "now": coordinator clock ahead of the real one by >= 2 days - 60 s
  python3 -c 'import json,sys,time; n=json.loads(sys.argv[1])["now"]; sys.exit(0 if n/1e9 - time.time() > 2*86400 - 60 else 1)' "$1"
}
check "the clock is 2 days ahead" offset_ok "$C"
cj S cluster status
EPOCH_BEFORE=$(jget "$S" "j['epoch']")

# ---- SIGTERM, and a clean exit ----
CPID=$(cluster_pid coordinator)
kill -TERM "$CPID"
check "coordinator exits on SIGTERM within 10 s" wait_for 10 "pid $CPID to exit" pid_gone "$CPID"
check "its log says nothing went wrong at shutdown" sh -c "! tail -n 20 '$CL_DIR/logs/coordinator.log' | grep -qiE 'error|corrupt|abort'"
expect_rc 14 "no coordinator: ping -> ETIMEDOUT" -- env CAIRN_TIMEOUT_MS=1000 "$CAIRN" ping

# ---- start it again with the same config ----
cluster_restart coordinator || echo "# starting the coordinator again failed"
NEWPID=$(cluster_pid coordinator)
check "a new coordinator process (pid $NEWPID)" test -n "$NEWPID" -a "$NEWPID" != "$CPID"
check "it runs with the same config" sh -c "tr '\0' ' ' </proc/$NEWPID/cmdline | grep -qF '$CL_DIR/coordinator.conf'"
check "it answers ping" wait_for 15 "ping" "$CAIRN" ping

# ---- after ----
alive2() { [ "$(alive_count)" = 2 ]; }
check "2 workers alive after the restart" wait_for 20 "2 workers alive" alive2
cj S cluster status
check "membership epoch moved on ($EPOCH_BEFORE -> $(jget "$S" "j['epoch']"))" test "$(jget "$S" "j['epoch'] > $EPOCH_BEFORE")" = true
check "the default app token still works" test "$(jget "$S" "len(j['workers'])")" = 2
G=$(keep "$CAIRN" --json job get "$ID1")
check "the 'keep' app token still works, its job is still succeeded" test "$(jget "$G" "j['state'] + '/' + j['kind']")" = succeeded/noop
check "... with its result" test "$(jget "$G" "j['result']['worker']")" = "$(jget "$J1" "j['worker']")"
cj G job get "$ID2"
check "old job of 'default' still succeeded on w2" test "$(jget "$G" "j['state'] + '/' + j['worker'] + '/' + j['result']['worker']")" = succeeded/w2/w2
cj G job get "$ID3"
check "old failed job still failed with ENOTFOUND" test "$(jget "$G" "j['state'] + '/' + j['error']['name']")" = failed/ENOTFOUND
expect_rc 5 "apps still separate: 'default' cannot see the job of 'keep'" -- "$CAIRN" job get "$ID1"
G=$(keep "$CAIRN" --json job submit noop --req-id rq-keep-1)
check "req_ids survive: same --req-id -> same job" test "$(jget "$G" "j['id']")" = "$ID1"
cj G job get "$ID4" --wait 15000
check "the job running during the restart reached an end state ($(jget "$G" "j['state']"))" test "$(jget "$G" "j['state'] in ('succeeded', 'failed')")" = true
check "... succeeded: its worker reported it to the new coordinator" test "$(jget "$G" "j['state']")" = succeeded
[ "$(jget "$G" "j['state']")" = succeeded ] || echo "# job 4: $G"
for w in w1 w2; do
  cj N job submit noop --worker $w --wait 10000
  check "new jobs run on $w" test "$(jget "$N" "j['state']")" = succeeded
done
cj N job submit noop --wait 10000
check "new unpinned jobs run" test "$(jget "$N" "j['state']")" = succeeded
expect_rc 6 "app 'keep' still exists (create again -> EEXIST)" -- "$CAIRN" app create keep --token-out "$T/keep2.token"

# the test clock offset survived
cj P ping
check "the coordinator clock is still 2 days ahead after the restart" offset_ok "$P"
cj C admin clock advance 1d
check "and it still moves forward only: now >= before + 1 day" test "$(jget "$C" "j['now'] >= $NOW_BEFORE + 86400 * 10**9")" = true

[ "$FAILED" -eq 0 ] || cluster_logs
cluster_down
finish
