#!/usr/bin/env bash
# Worker death on a real cluster: kill -9 one worker; the coordinator declares it dead within
# heartbeat_timeout (+ slack, never much before), the job it was running fails with EUNAVAILABLE
# naming it, jobs pinned to it fail the same way, other jobs keep running on the live workers; and
# a worker started again is alive again.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/cluster.sh"

HB_TIMEOUT_MS=5000   # coordinator default heartbeat_timeout (cluster.md); local-cluster.sh keeps it
HB_INTERVAL_MS=1000  # default heartbeat_interval
SLACK_MS=2500

cluster_up live --workers 3 || { bad "cluster up"; finish; exit 1; }
check "3 workers alive" test "$(alive_count)" = 3
VICTIM=w2
VPID=$(cluster_pid $VICTIM)
check "pid file of $VICTIM names a running cairn-worker" sh -c "tr '\0' ' ' </proc/$VPID/cmdline | grep -q cairn-worker"

# a long job running on the victim at kill time
cj L job submit noop --param sleep_ms=60000 --worker $VICTIM
LJOB=$(jget "$L" "j['id']")
check "long job accepted" test -n "$LJOB"
job_running() { local g; cj g job get "$LJOB"; [ "$(jget "$g" "j['state']")" = running ]; }
check "long job is running on $VICTIM" wait_for 10 "long job running" job_running

# a job that finishes before the kill keeps its state
cj D job submit noop --worker $VICTIM --wait
DJOB=$(jget "$D" "j['id']")

kill -9 "$VPID"
t_kill=$(now_ms)
check "$VICTIM is gone" wait_for 5 "pid $VPID to exit" pid_gone "$VPID"

# dead within heartbeat_timeout + slack, and not long before heartbeat_timeout - interval
wait_for $(( (HB_TIMEOUT_MS + SLACK_MS + 5000) / 1000 )) "$VICTIM dead" worker_dead $VICTIM || true
elapsed=$(( $(now_ms) - t_kill ))
echo "# $VICTIM declared dead ${elapsed} ms after kill -9"
check "$VICTIM declared dead" worker_dead $VICTIM
check "... within heartbeat_timeout + ${SLACK_MS} ms (${elapsed} ms)" test "$elapsed" -le $(( HB_TIMEOUT_MS + SLACK_MS ))
check "... not before heartbeat_timeout - 1 interval (${elapsed} ms)" test "$elapsed" -ge $(( HB_TIMEOUT_MS - HB_INTERVAL_MS - 200 ))
check "the others stay alive" test "$(alive_count)" = 2

# the job it was running failed with EUNAVAILABLE naming it
cj G job get "$LJOB" --wait 10000
check "running job failed" test "$(jget "$G" "j['state']")" = failed
check "... with EUNAVAILABLE (21)" test "$(jget "$G" "j['error']['code']")" = 21
check "... naming $VICTIM" test "$(jget "$G" "'$VICTIM' in j['error']['message']")" = true
echo "# message: $(jget "$G" "j['error']['message']")"
check "job get of a failed job exits with its code" test "$CJ_RC" = 21
cj G job get "$DJOB"
check "a job it finished earlier is still succeeded" test "$(jget "$G" "j['state']")" = succeeded

# a job pinned to the dead worker fails with EUNAVAILABLE naming it
cj P job submit noop --worker $VICTIM --wait 10000
check "pinned to a dead worker -> exit 21" test "$CJ_RC" = 21
check "... EUNAVAILABLE naming $VICTIM" test "$(jget "$P" "j['error']['name'] == 'EUNAVAILABLE' and '$VICTIM' in j['error']['message']")" = true
echo "# message: $(jget "$P" "j['error']['message']")"

# unpinned jobs go to the live workers only
ws=""
for i in 1 2 3 4 5 6; do
  cj J job submit noop --wait 10000
  ws="$ws $(jget "$J" "j['worker'] + ':' + j['state']")"
done
check "unpinned jobs succeed on live workers only ($ws)" python3 -c '
import sys
r = sys.argv[1].split()
assert len(r) == 6 and all(x.endswith(":succeeded") and not x.startswith(sys.argv[2] + ":") for x in r), r' "$ws" $VICTIM

# started again, it is alive again and runs jobs
cluster_restart $VICTIM || echo "# restarting $VICTIM failed"
check "$VICTIM alive again after a restart" wait_for 30 "$VICTIM alive" worker_alive $VICTIM
check "a new pid for $VICTIM" test "$(cluster_pid $VICTIM)" != "$VPID"
cj P job submit noop --worker $VICTIM --wait 10000
check "jobs pinned to $VICTIM run again" test "$(jget "$P" "j['state']")" = succeeded
check "3 workers alive" test "$(alive_count)" = 3

[ "$FAILED" -eq 0 ] || cluster_logs
cluster_down
finish
