# Helpers for the cluster integration tests (test_cluster_*.sh), over deploy/local-cluster.sh and
# deploy/netns-cluster.sh. Source it after lib/common.sh.
#
#   cluster_up NAME [up options...]   start a cluster in $T/NAME on a free base port of its own,
#                                     eval the export lines `up` prints, and register cluster_down
#                                     with on_exit, so every process started is stopped by pid even
#                                     when the test fails. Sets CL_DIR, CL_PORT, CL_SCRIPT.
#                                     CL_SCRIPT=$NETNS_CLUSTER before the call for a netns cluster.
#   cluster_down [DIR]                `down`, then SIGKILL (and count as a failure) any pid of DIR's
#                                     pid files still alive. Tests call it before `finish`.
#   cj VAR CLI-ARGS...                `cairn --json CLI-ARGS`: VAR gets stdout, CJ_RC the exit status.
#   jget JSON PY-EXPR                 PY-EXPR evaluated with j = the parsed JSON ("" on any error);
#                                     lists and dicts print as JSON, booleans as true/false.
#   wait_for SECS WHAT CMD...         retry CMD every 0.2 s until it succeeds; 1 after SECS.
#   worker_alive ID / worker_dead ID  per `cairn cluster status`
#   cluster_pid NAME                  pid of "coordinator" or of worker NAME (DIR/pids/NAME.pid)
#   cluster_restart NAME              restart the coordinator or a worker with its config
#   worker_add_peer_key W PUBFILE     put a public key on worker W's peers_allow list (for tools
#                                     acting as a peer), restarting W if the list is not configured
#   expect_rc CODE WHAT -- CMD...     CMD must exit with CODE
: "${T:?source lib/common.sh first}"
CAIRN=$(bin cairn)
COORD_BIN=$(bin cairn-coordinator)
WORKER_BIN=$(bin cairn-worker)
LOCAL_CLUSTER=$CAIRN_SRC/deploy/local-cluster.sh
NETNS_CLUSTER=$CAIRN_SRC/deploy/netns-cluster.sh
CL_SCRIPT=${CL_SCRIPT:-$LOCAL_CLUSTER}
# local-cluster.sh finds the binaries of this build through CAIRN_BUILD (set by ctest)
export CAIRN_BUILD

need_cluster_bins() {
  local missing=""
  [ -x "$CAIRN" ] || missing="$missing cairn"
  [ -x "$COORD_BIN" ] || missing="$missing cairn-coordinator"
  [ -x "$WORKER_BIN" ] || missing="$missing cairn-worker"
  [ -x "$CL_SCRIPT" ] || missing="$missing ${CL_SCRIPT#$CAIRN_SRC/}"
  if [ -n "$missing" ]; then
    echo "FAIL - not built or missing:$missing (CAIRN_BUILD=$CAIRN_BUILD)"
    echo "0 passed, 1 failed"
    exit 1
  fi
}

# A base port with the next 100 ports free on 127.0.0.1, chosen at random so that tests running
# in parallel do not collide (local-cluster.sh uses P, P+1 and P+10+i).
free_base_port() {
  python3 - <<'PY'
import random, socket
for _ in range(200):
    base = random.randrange(20000, 60000, 100)
    ok = True
    for p in range(base, base + 100):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            ok = False
        finally:
            s.close()
        if not ok:
            break
    if ok:
        print(base)
        raise SystemExit(0)
raise SystemExit("no free port range found")
PY
}

CL_DIR=""
CL_PORT=""
CL_UP_OUT=""
CL_UP_FLAGS=()
cluster_up() {
  local name=$1; shift
  need_cluster_bins
  CL_DIR=$T/$name
  CL_PORT=$(free_base_port)
  on_exit "cluster_down '$CL_DIR'"
  local rc=0 t0; t0=$(now_ms)
  CL_UP_FLAGS=()
  # the tests of this issue need no sandbox image: skip the default image import where `up` has one
  if grep -q -- '--no-default-image' "$LOCAL_CLUSTER" && [[ " $* " != *" --default-image"* && " $* " != *" --no-default-image "* ]]; then
    CL_UP_FLAGS+=(--no-default-image)
  fi
  CL_UP_OUT=$("$CL_SCRIPT" up --dir "$CL_DIR" --base-port "$CL_PORT" "${CL_UP_FLAGS[@]}" "$@" 2>"$T/$name.up.err") || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "${CL_SCRIPT##*/} up --dir $CL_DIR --base-port $CL_PORT $* failed ($rc):"
    cat "$T/$name.up.err"; echo "$CL_UP_OUT"
    cluster_logs "$CL_DIR"
    return 1
  fi
  eval "$(grep -E '^export CAIRN_[A-Z_]+=' <<<"$CL_UP_OUT")"
  if [ -z "${CAIRN_COORDINATOR:-}" ]; then
    echo "${CL_SCRIPT##*/} up printed no export lines:"; echo "$CL_UP_OUT"; return 1
  fi
  echo "# cluster $name up in $(( $(now_ms) - t0 )) ms: $CAIRN_COORDINATOR, dir $CL_DIR, coordinator $(readlink "/proc/$(cluster_pid coordinator)/exe" 2>/dev/null)"
  return 0
}

# Every pid in DIR's pid files, one per line.
cluster_pids() {
  local d=${1:-$CL_DIR} f
  [ -d "$d/pids" ] || return 0
  for f in "$d"/pids/*.pid; do
    [ -f "$f" ] && tr -dc '0-9' < "$f" && echo
  done
  return 0
}

cluster_down() {
  local d=${1:-$CL_DIR} p left="" pids
  [ -d "$d" ] || return 0
  [ -f "$d/cluster.state" ] || return 0
  pids=$(cluster_pids "$d")
  "$CL_SCRIPT" down --dir "$d" >/dev/null 2>"$T/down.err" || { echo "note: ${CL_SCRIPT##*/} down --dir $d failed:"; cat "$T/down.err"; }
  for p in $pids; do
    if pid_running "$p" && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$d/"; then
      left="$left $p"; kill -9 "$p" 2>/dev/null || true
    fi
  done
  if [ -n "$left" ]; then bad "${CL_SCRIPT##*/} down left processes running:$left (killed)"; fi
  # daemons built with -DCAIRN_ASAN/UBSAN report into their logs: such a report fails the test
  local f
  for f in "$d"/logs/*.log; do
    [ -f "$f" ] || continue
    if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: UndefinedBehaviorSanitizer' "$f"; then
      bad "sanitizer report in ${f##*/}:"
      grep -m1 -A25 -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$f"
    fi
  done
  rm -f "$d/cluster.state" # down is done: the EXIT trap need not run it again
}

# Print the tail of every log under DIR (on failures).
cluster_logs() {
  local d=${1:-$CL_DIR} f
  for f in "$d"/logs/*.log; do
    [ -f "$f" ] || continue
    echo "---- $f (last 25 lines)"; tail -n 25 "$f"
  done
}

cj() {
  local __var=$1; shift
  local __out __rc=0
  __out=$("$CAIRN" --json "$@" 2>"$T/cj.err") || __rc=$?
  CJ_RC=$__rc
  printf -v "$__var" '%s' "$__out"
}

jget() {
  python3 -c '
import json, sys
try:
    j = json.loads(sys.argv[1])
    v = eval(sys.argv[2], {"j": j})
except Exception:
    sys.exit(0)
if isinstance(v, bool):
    print("true" if v else "false")
elif isinstance(v, (list, dict)):
    print(json.dumps(v))
elif v is not None:
    print(v)
' "$1" "$2"
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# A pid that runs (a zombie waiting for init to reap it has stopped running).
pid_running() { [ -n "$1" ] && [ -e "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
pid_gone() { ! pid_running "$1"; }

wait_for() {
  local secs=$1 what=$2; shift 2
  local deadline=$(( $(now_ms) + secs * 1000 ))
  while :; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if [ "$(now_ms)" -ge "$deadline" ]; then
      echo "# timed out after ${secs}s waiting for: $what"
      return 1
    fi
    sleep 0.2
  done
}

worker_field() { # ID FIELD: a field of worker ID in cluster status
  local s; cj s cluster status
  jget "$s" "[w for w in j['workers'] if w['id']=='$1'][0]['$2']"
}
worker_alive() { [ "$(worker_field "$1" alive)" = true ]; }
worker_dead() { [ "$(worker_field "$1" alive)" = false ]; }
alive_count() { local s; cj s cluster status; jget "$s" "sum(1 for w in j['workers'] if w['alive'])"; }

cluster_pid() { local f=$CL_DIR/pids/$1.pid; if [ -f "$f" ]; then tr -dc '0-9' < "$f"; fi; return 0; }

# expect_rc CODE WHAT -- cmd... : cmd must exit with CODE (output shown on failure)
expect_rc() {
  local code=$1 what=$2; shift 3
  local rc=0
  "$@" >"$T/expect_rc.out" 2>&1 || rc=$?
  if [ "$rc" -eq "$code" ]; then ok "$what (exit $code)"; else bad "$what: expected exit $code, got $rc: $(head -c 600 "$T/expect_rc.out")"; fi
}

# True when the cluster script has `restart coordinator|wN`.
cluster_has_restart() { grep -qE '^#.*local-cluster.sh restart' "$LOCAL_CLUSTER"; }

# (Re)start process NAME (coordinator or wN) with its config as it is: `restart NAME` where the
# script has it, else `up` again (which starts what is missing).
cluster_restart() {
  local name=$1
  if cluster_has_restart; then
    "$CL_SCRIPT" restart "$name" --dir "$CL_DIR" >/dev/null 2>"$T/restart.err" || { cat "$T/restart.err"; return 1; }
  else
    echo "# NOTE: ${CL_SCRIPT##*/} has no 'restart': running 'up' again (it starts what is missing)"
    "$CL_SCRIPT" up --dir "$CL_DIR" "${CL_UP_FLAGS[@]}" >/dev/null 2>"$T/restart.err" || { cat "$T/restart.err"; return 1; }
  fi
}

# Put a public key on worker W's peer allow-list. Workers re-read their peers_allow file on every
# membership; when local-cluster.sh did not configure one for W, W is restarted (stopped by pid,
# then started the way local-cluster.sh starts it) with `peers_allow` added to its config.
worker_add_peer_key() {
  local w=$1 pub=$2 conf=$CL_DIR/$1.conf file pid line
  line="$(grep -m1 -E '^public-key' "$pub" | sed 's/^public-key *= *//') bench-or-test-tool"
  file=$(sed -n 's/^peers_allow *= *//p' "$conf" | tail -n1)
  if [ -n "$file" ]; then
    echo "$line" >>"$file"
    return 0
  fi
  echo "# local-cluster.sh gives $w no peers_allow file: restarting $w with one"
  file=$CL_DIR/$w.peers_allow
  echo "$line" >"$file"
  pid=$(cluster_pid "$w")
  if cluster_has_restart; then
    echo "peers_allow = $file" >>"$conf"
    cluster_restart "$w" || return 1
  else
    kill -TERM "$pid"
    wait_for 15 "$w (pid $pid) to exit" pid_gone "$pid" || return 1
    echo "peers_allow = $file" >>"$conf"
    setsid "$WORKER_BIN" --config "$conf" </dev/null >>"$CL_DIR/logs/$w.log" 2>&1 &
    echo $! >"$CL_DIR/pids/$w.pid"
  fi
  # alive again once it re-registered (and got a membership, which loads the allow-list)
  sleep 0.5
  wait_for 20 "$w alive after its restart" worker_alive "$w"
}
