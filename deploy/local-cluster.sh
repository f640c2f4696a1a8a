#!/usr/bin/env bash
# A whole cairn cluster on this machine: one cairn-coordinator and N cairn-worker processes
# (docs/internals/cluster.md, "Deploy").
#
#   deploy/local-cluster.sh up [--workers N] [--dir DIR] [--test-clock] [--base-port P]
#                              [--default-image debian|busybox | --no-default-image]
#   deploy/local-cluster.sh status [--dir DIR]
#   deploy/local-cluster.sh env [--dir DIR]
#   deploy/local-cluster.sh restart coordinator|wN [--dir DIR]
#   deploy/local-cluster.sh down [--dir DIR]
#
# up      writes what is missing under DIR (default ./var/cluster): CURVE keys (cairn keygen), the
#         clients/workers allow-lists, master.key and admin.token (cairn-coordinator --init-*),
#         config files; starts the coordinator and workers w1..wN in the background (logs in
#         DIR/logs, pids in DIR/pids), creates app "default" (token in DIR/default.token), waits
#         (30 s at most) until `cairn cluster status` shows the N workers alive, and prints `export`
#         lines on stdout:   eval "$(deploy/local-cluster.sh up --workers 3)"
#         Safe to re-run: existing keys and secrets are kept, running processes whose config did not
#         change are left alone, missing ones are started, workers beyond N are stopped.
#         Then, unless --no-default-image: if app "default" has no image named "default", one is
#         imported (docs/internals/sandboxes.md, "Base images"): the Debian 12 minbase image
#         (deploy/make-debian-image.sh, built once per machine into /var/cache/cairn), or with
#         --default-image busybox the tiny busybox image (deploy/make-busybox-image.sh; fast, what
#         tests use). CAIRN_DEFAULT_IMAGE=debian|busybox|none sets the default of that choice. A
#         failure there (no mirror, fewer live workers than replicas) is a warning, not an error.
# restart stops one process of the cluster (by its pid file) and starts it again with the same
#         config; waits until the coordinator answers, or until the worker is alive again.
# status  the processes and `cairn cluster status`; exit 0 when every process runs.
# env     the export lines again.
# down    stops exactly the pids in DIR/pids (SIGTERM, SIGKILL after 10 s), then what sandboxes
#         left running (runsc containers of the workers' runsc roots, their processes by pid,
#         mounts below DIR, their cgroups); data stays in DIR.
#
# Ports (loopback): client endpoint P, worker endpoint P+1, worker wI's peer endpoint P+10+I.
# Default P = 17300 (the coordinator's built-in defaults, 7300/7301, stay free for an installed
# cluster); give clusters that run at the same time different --dir and --base-port.
# Binaries: $CAIRN_BUILD, else ./build (any depth), else the repository's build/.
#
# Run as deploy/netns-cluster.sh, the same script puts every node in its own network namespace
# (see that file); the only differences are marked "netns".
set -euo pipefail

NETNS=${CAIRN_CLUSTER_NETNS:-0}
PROG=${CAIRN_CLUSTER_PROG:-deploy/local-cluster.sh}
SRC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { echo "${PROG##*/}: $*" >&2; exit 1; }
say() { echo "${PROG##*/}: $*" >&2; }

usage() {
  if [ "$NETNS" = 1 ]; then
    sed -n '2,/^set -euo/p' "$SRC_ROOT/deploy/netns-cluster.sh" | sed '$d; s/^# \{0,1\}//'
  else
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
  fi
}

# ---- arguments ----------------------------------------------------------------------------------

CMD=${1:-}
[ $# -gt 0 ] && shift
case "$CMD" in
  up|status|env|down|restart) ;;
  cut|heal) [ "$NETNS" = 1 ] || die "'$CMD' is a netns-cluster.sh command" ;;
  help|-h|--help) usage; exit 0 ;;
  "") usage >&2; exit 1 ;;
  *) die "unknown command '$CMD' (up, status, env, restart, down$([ "$NETNS" = 1 ] && echo ', cut, heal'))" ;;
esac
WORKERS=
DIR=
TEST_CLOCK=
BASE_PORT=
SUBNET=
NODE=
DEFAULT_IMAGE=
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) WORKERS=${2:?--workers needs a number}; shift 2 ;;
    --workers=*) WORKERS=${1#*=}; shift ;;
    --dir) DIR=${2:?--dir needs a directory}; shift 2 ;;
    --dir=*) DIR=${1#*=}; shift ;;
    --test-clock) TEST_CLOCK=true; shift ;;
    --no-default-image) DEFAULT_IMAGE=none; shift ;;
    --default-image) DEFAULT_IMAGE=${2:?--default-image needs debian, busybox or none}; shift 2 ;;
    --default-image=*) DEFAULT_IMAGE=${1#*=}; shift ;;
    --base-port) BASE_PORT=${2:?--base-port needs a port}; shift 2 ;;
    --base-port=*) BASE_PORT=${1#*=}; shift ;;
    --subnet) [ "$NETNS" = 1 ] || die "--subnet is for netns-cluster.sh"; SUBNET=${2:?--subnet needs 0..255}; shift 2 ;;
    --subnet=*) [ "$NETNS" = 1 ] || die "--subnet is for netns-cluster.sh"; SUBNET=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) if [ -z "$NODE" ] && { [ "$CMD" = restart ] || { [ "$NETNS" = 1 ] && { [ "$CMD" = cut ] || [ "$CMD" = heal ]; }; }; }; then NODE=$1; shift
       else die "unexpected argument '$1' (see --help)"; fi ;;
  esac
done
[ -z "$WORKERS" ] || [[ "$WORKERS" =~ ^[0-9]+$ && $WORKERS -ge 1 && $WORKERS -le 64 ]] || die "--workers must be 1..64"
[ -z "$BASE_PORT" ] || [[ "$BASE_PORT" =~ ^[0-9]+$ && $BASE_PORT -ge 1024 && $BASE_PORT -le 65400 ]] ||
  die "--base-port must be 1024..65400"
[ -z "$SUBNET" ] || [[ "$SUBNET" =~ ^[0-9]+$ && $SUBNET -le 255 ]] || die "--subnet must be 0..255"
DEFAULT_IMAGE=${DEFAULT_IMAGE:-${CAIRN_DEFAULT_IMAGE:-debian}}
case "$DEFAULT_IMAGE" in
  debian|busybox|none) ;;
  *) die "--default-image must be debian, busybox or none (got '$DEFAULT_IMAGE')" ;;
esac
[ "$CMD" != restart ] || [ -n "$NODE" ] || die "restart needs a process: coordinator or wN"

if [ -z "$DIR" ]; then
  if [ "$NETNS" = 1 ]; then DIR=./var/netns-cluster; else DIR=./var/cluster; fi
fi
if [ "$CMD" = up ]; then
  mkdir -p "$DIR"
fi
if [ "$CMD" = down ] && [ ! -f "$DIR/cluster.state" ]; then
  say "no cluster in '$DIR': nothing to stop"
  exit 0
fi
[ -d "$DIR" ] || die "no cluster in '$DIR' (run up first)"
DIR=$(cd "$DIR" && pwd)
STATE=$DIR/cluster.state

# ---- binaries -----------------------------------------------------------------------------------

find_bin() { # name -> path of the newest executable file of that name
  local name=$1 d found=""
  for d in ${CAIRN_BUILD:+"$CAIRN_BUILD"} ./build "$SRC_ROOT/build"; do
    [ -d "$d" ] || continue
    found=$(find "$d" -type f -name "$name" -perm -u+x -printf '%T@ %p\n' 2>/dev/null | sort -rn | head -1 | cut -d' ' -f2-)
    [ -n "$found" ] && break
  done
  [ -n "$found" ] || die "cannot find the '$name' binary in \$CAIRN_BUILD, ./build or $SRC_ROOT/build (build first: cmake -S . -B build && cmake --build build)"
  (cd "$(dirname "$found")" && echo "$(pwd)/$(basename "$found")")
}

# ---- saved settings -----------------------------------------------------------------------------

# cluster.state remembers what `up` chose, so status/env/down and re-runs need no flags.
if [ -f "$STATE" ]; then
  # shellcheck disable=SC1090
  . "$STATE"
fi
S_WORKERS=${S_WORKERS:-}
S_BASE_PORT=${S_BASE_PORT:-}
S_TEST_CLOCK=${S_TEST_CLOCK:-false}
S_SUBNET=${S_SUBNET:-}
if [ "$CMD" = up ]; then
  WORKERS=${WORKERS:-${S_WORKERS:-3}}
  BASE_PORT=${BASE_PORT:-${S_BASE_PORT:-17300}}
  TEST_CLOCK=${TEST_CLOCK:-$S_TEST_CLOCK}
  SUBNET=${SUBNET:-${S_SUBNET:-0}}
else
  [ -f "$STATE" ] || die "no cluster in '$DIR' (run up first)"
  WORKERS=$S_WORKERS BASE_PORT=$S_BASE_PORT TEST_CLOCK=$S_TEST_CLOCK SUBNET=${S_SUBNET:-0}
fi

# ---- addresses (netns: one namespace per node) --------------------------------------------------

HASH=$(printf '%s' "$DIR" | sha256sum | cut -c1-8)
BRIDGE=cb-$HASH
ns_name() { echo "cairn-$1-$HASH"; }                  # node -> namespace
veth_name() { echo "cv$HASH$2"; }                    # (node, index) -> host-side veth (<= 15 chars)
node_index() { case "$1" in coordinator) echo 1 ;; w*) echo $((10 + ${1#w})) ;; *) return 1 ;; esac; }
node_ip() { # node -> address the others reach it at
  if [ "$NETNS" = 1 ]; then echo "10.213.$SUBNET.$(node_index "$1")"; else echo 127.0.0.1; fi
}
client_port() { echo "$BASE_PORT"; }
worker_port() { echo $((BASE_PORT + 1)); }
peer_port() { echo $((BASE_PORT + 10 + ${1#w})); }
endpoint() { echo "tcp://$(node_ip "$1"):$2"; }

netns_node_up() { # node: namespace, veth into the bridge, address
  local node=$1 ns idx veth
  ns=$(ns_name "$node"); idx=$(node_index "$node"); veth=$(veth_name "$node" "$idx")
  ip netns list | grep -qw "^$ns" || ip netns add "$ns"
  ip -n "$ns" link set lo up
  if ! ip link show "$veth" >/dev/null 2>&1; then
    ip link add "$veth" type veth peer name eth0 netns "$ns"
  fi
  ip link set "$veth" master "$BRIDGE"
  ip link set "$veth" up
  ip -n "$ns" addr replace "10.213.$SUBNET.$idx/24" dev eth0
  ip -n "$ns" link set eth0 up
}

netns_bridge_up() {
  [ "$(id -u)" = 0 ] || die "network namespaces need root"
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  ip addr replace "10.213.$SUBNET.254/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
}

netns_down() {
  local ns veth
  # veths first (deleting one end deletes the pair): a deleted namespace frees its links only later
  for veth in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E "^cv${HASH}[0-9]+\$" || true); do
    ip link del "$veth" 2>/dev/null || true
  done
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^cairn-.*-$HASH\$" || true); do
    ip netns del "$ns" 2>/dev/null || true   # deletes its veth pair too
  done
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE" 2>/dev/null || true; fi
}

# ---- processes ----------------------------------------------------------------------------------

pid_of() { local f=$DIR/pids/$1.pid; if [ -f "$f" ]; then cat "$f"; fi; }

# A pid counts as ours only if it runs with this cluster's config file (pids get reused).
running() { # name
  local pid; pid=$(pid_of "$1")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$DIR/$1.conf"
}

start_proc() { # name binary
  local name=$1 bin=$2 cmd=()
  # a plain command (no function, no subshell) so that $! is the daemon itself: ip netns exec and
  # setsid both exec in place; fd 9 (our lock) must not leak into the daemon
  if [ "$NETNS" = 1 ]; then cmd=(ip netns exec "$(ns_name "$name")"); fi
  cmd+=(setsid "$bin" --config "$DIR/$name.conf")
  "${cmd[@]}" </dev/null >>"$DIR/logs/$name.log" 2>&1 9>&- &
  echo $! >"$DIR/pids/$name.pid"
}

stop_procs() { # names...: SIGTERM, wait up to 10 s, SIGKILL; pid files removed
  local name pid left i
  for name in "$@"; do
    if running "$name"; then kill -TERM "$(pid_of "$name")" 2>/dev/null || true; fi
  done
  for i in $(seq 1 100); do
    left=0
    for name in "$@"; do running "$name" && left=1; done
    [ $left = 0 ] && break
    sleep 0.1
  done
  for name in "$@"; do
    if running "$name"; then
      pid=$(pid_of "$name")
      say "$name (pid $pid) did not stop within 10 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$DIR/pids/$name.pid"
  done
}

port_busy() { ss -ltnH "sport = :$1" 2>/dev/null | grep -q .; }

log_tail() { echo "--- last lines of $DIR/logs/$1.log:" >&2; tail -n 15 "$DIR/logs/$1.log" >&2 || true; }

# ---- the client environment ---------------------------------------------------------------------

print_env() {
  printf 'export CAIRN_COORDINATOR=%q\n' "$(endpoint coordinator "$(client_port)")"
  printf 'export CAIRN_COORDINATOR_KEY=%q\n' "$DIR/keys/coordinator.pub"
  printf 'export CAIRN_CLIENT_KEY=%q\n' "$DIR/keys/client.key"
  printf 'export CAIRN_APP=default\n'
  printf 'export CAIRN_TOKEN_FILE=%q\n' "$DIR/default.token"
  printf 'export CAIRN_ADMIN_TOKEN_FILE=%q\n' "$DIR/admin.token"
  printf 'export CAIRN_CLUSTER_DIR=%q\n' "$DIR"
}

cli() { # run the cairn CLI against this cluster
  env CAIRN_COORDINATOR="$(endpoint coordinator "$(client_port)")" \
      CAIRN_COORDINATOR_KEY="$DIR/keys/coordinator.pub" CAIRN_CLIENT_KEY="$DIR/keys/client.key" \
      CAIRN_APP=default CAIRN_TOKEN_FILE="$DIR/default.token" CAIRN_ADMIN_TOKEN_FILE="$DIR/admin.token" \
      "$CAIRN" "$@"
}

# ---- commands -----------------------------------------------------------------------------------

# Write a file only when its content changes; returns 0 when it changed.
write_if_changed() { # path content
  if [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; then return 1; fi
  printf '%s\n' "$2" >"$1.tmp" && mv "$1.tmp" "$1"
  return 0
}

cmd_up() {
  local COORD WORKER name i changed=() n_alive deadline out
  CAIRN=$(find_bin cairn)
  COORD=$(find_bin cairn-coordinator)
  WORKER=$(find_bin cairn-worker)
  mkdir -p "$DIR"/{keys,logs,pids,data}
  chmod 700 "$DIR" "$DIR/keys"
  cat >"$STATE.tmp" <<EOF
S_WORKERS=$WORKERS
S_BASE_PORT=$BASE_PORT
S_TEST_CLOCK=$TEST_CLOCK
S_SUBNET=$SUBNET
EOF
  mv "$STATE.tmp" "$STATE"

  # keys and secrets: made once, kept forever (the data is encrypted under master.key)
  for name in coordinator client $(seq -f 'w%g' 1 "$WORKERS"); do
    [ -f "$DIR/keys/$name.key" ] || "$CAIRN" keygen --out "$DIR/keys/$name.key" >/dev/null
    [ -f "$DIR/keys/$name.pub" ] || "$CAIRN" keygen --public "$DIR/keys/$name.key" "$DIR/keys/$name.pub" >/dev/null
  done
  [ -f "$DIR/master.key" ] || "$COORD" --init-master-key "$DIR/master.key" >/dev/null
  [ -f "$DIR/admin.token" ] || "$COORD" --init-admin-token "$DIR/admin.token" >/dev/null
  # allow-lists: the client key, and every worker key ever made here (a worker removed by a smaller
  # --workers may come back)
  local allow_changed=false
  write_if_changed "$DIR/clients.allow" "$(printf '%s client\n' "$("$CAIRN" keygen --public "$DIR/keys/client.key")")" &&
    allow_changed=true
  out=""
  for f in "$DIR"/keys/w*.key; do
    out+="$("$CAIRN" keygen --public "$f") $(basename "$f" .key)"$'\n'
  done
  write_if_changed "$DIR/workers.allow" "${out%$'\n'}" && allow_changed=true

  # configs
  if write_if_changed "$DIR/coordinator.conf" "# written by ${PROG##*/} up; edits are overwritten
data_dir = $DIR/data/coordinator
client_endpoint = $(endpoint coordinator "$(client_port)")
worker_endpoint = $(endpoint coordinator "$(worker_port)")
keys = $DIR/keys/coordinator.key
clients_allow = $DIR/clients.allow
workers_allow = $DIR/workers.allow
admin_token_file = $DIR/admin.token
master_key = $DIR/master.key
test_clock = $TEST_CLOCK
log_level = info"; then changed+=(coordinator); fi
  for i in $(seq 1 "$WORKERS"); do
    if write_if_changed "$DIR/w$i.conf" "# written by ${PROG##*/} up; edits are overwritten
id = w$i
data_dir = $DIR/data/w$i
coordinator = $(endpoint coordinator "$(worker_port)")
coordinator_key = $DIR/keys/coordinator.pub
keys = $DIR/keys/w$i.key
peer_endpoint = $(endpoint "w$i" "$(peer_port "w$i")")
master_key = $DIR/master.key
log_level = info"; then changed+=("w$i"); fi
  done

  # workers beyond N (from an earlier, larger up) are stopped
  for f in "$DIR"/pids/w*.pid; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .pid)
    if [ "${name#w}" -gt "$WORKERS" ]; then say "stopping $name (beyond --workers $WORKERS)"; stop_procs "$name"; fi
  done
  # a running process whose config changed is restarted
  for name in "${changed[@]}"; do
    if running "$name"; then say "config of $name changed: restarting it"; stop_procs "$name"; fi
  done

  if [ "$NETNS" = 1 ]; then
    netns_bridge_up
    for name in coordinator $(seq -f 'w%g' 1 "$WORKERS"); do netns_node_up "$name"; done
  fi

  if ! running coordinator; then
    if [ "$NETNS" != 1 ]; then
      for p in "$(client_port)" "$(worker_port)"; do
        port_busy "$p" && die "port $p is in use by another process: choose other ports with --base-port"
      done
    fi
    say "starting cairn-coordinator on $(endpoint coordinator "$(client_port)")"
    start_proc coordinator "$COORD"
  elif [ "$allow_changed" = true ]; then
    # new keys (more workers than before): the running coordinator reloads its allow-lists on SIGHUP
    say "allow-lists changed: cairn-coordinator reloads them (SIGHUP)"
    kill -HUP "$(pid_of coordinator)"
  fi
  # the coordinator answers before any worker is needed: create the app now (cluster status needs it)
  deadline=$((SECONDS + 15))
  until cli ping --timeout 1000 >/dev/null 2>&1; do
    running coordinator || { log_tail coordinator; die "cairn-coordinator exited (see $DIR/logs/coordinator.log)"; }
    [ $SECONDS -lt $deadline ] || { log_tail coordinator; die "cairn-coordinator does not answer on $(endpoint coordinator "$(client_port)")"; }
    sleep 0.2
  done
  if [ ! -s "$DIR/default.token" ]; then
    if ! out=$(cli app create default --token-out "$DIR/default.token" 2>&1); then
      case "$out" in
        *EEXIST*) die "app 'default' exists but $DIR/default.token is missing: its token was shown only once (start over with: ${PROG##*/} down --dir $DIR; rm -rf $DIR)" ;;
        *) die "creating app 'default' failed: $out" ;;
      esac
    fi
  fi

  for i in $(seq 1 "$WORKERS"); do
    name=w$i
    running "$name" && continue
    if [ "$NETNS" != 1 ] && port_busy "$(peer_port "$name")"; then
      die "port $(peer_port "$name") (peer endpoint of $name) is in use: choose other ports with --base-port"
    fi
    mkdir -p "$DIR/data/$name"
    start_proc "$name" "$WORKER"
  done
  say "waiting for $WORKERS live workers"
  deadline=$((SECONDS + 30))
  while :; do
    out=$(cli cluster status --json --timeout 2000 2>/dev/null || true)
    n_alive=0
    for i in $(seq 1 "$WORKERS"); do
      grep -qE "\"id\":\"w$i\",[^}]*\"alive\":true" <<<"$out" && n_alive=$((n_alive + 1))
    done
    [ "$n_alive" -ge "$WORKERS" ] && break
    for i in $(seq 1 "$WORKERS"); do
      running "w$i" || { log_tail "w$i"; die "cairn-worker w$i exited (see $DIR/logs/w$i.log)"; }
    done
    running coordinator || { log_tail coordinator; die "cairn-coordinator exited (see $DIR/logs/coordinator.log)"; }
    if [ $SECONDS -ge $deadline ]; then
      for i in $(seq 1 "$WORKERS"); do log_tail "w$i"; done
      die "only $n_alive of $WORKERS workers alive after 30 s"
    fi
    sleep 0.3
  done
  say "cluster up in $DIR: coordinator and $WORKERS workers (logs in $DIR/logs)"
  default_image
  print_env
}

# The app "default" gets an image named "default" once (sandbox create without --image uses it).
# The cluster is usable without it, so a failure here is a warning: `up` still succeeds, and says
# how to import the image later.
default_image() {
  local out id path rc=0
  [ "$DEFAULT_IMAGE" != none ] || return 0
  out=$(cli --json image ls 2>&1) || rc=$?
  if [ "$rc" -ne 0 ]; then
    case "$out" in
      *EUNSUPPORTED*|*'not in this'*) say "the coordinator does not serve images yet: no default image" ;;
      *) say "WARNING: cannot list the images of app 'default', so no default image: $out" ;;
    esac
    return 0
  fi
  if grep -q '"name":"default"' <<<"$out"; then
    return 0
  fi
  case "$DEFAULT_IMAGE" in
    busybox)
      path=$DIR/images/busybox.tar
      if [ ! -s "$path" ]; then
        say "making the busybox image $path"
        mkdir -p "$DIR/images"
        "$SRC_ROOT/deploy/make-busybox-image.sh" "$path" ||
          { say "WARNING: making the busybox image failed (above): app 'default' has no default image"; return 0; }
      fi ;;
    debian)
      path=${CAIRN_IMAGE_CACHE:-/var/cache/cairn}/debian-12-minbase.tar.zst
      if [ ! -s "$path" ]; then
        say "no cached Debian image: building it (deploy/make-debian-image.sh; --default-image busybox or --no-default-image skip this)"
        "$SRC_ROOT/deploy/make-debian-image.sh" "$path" ||
          { say "WARNING: making the Debian image failed (above): app 'default' has no default image (use --default-image busybox, or import one later: cairn image import --name default PATH)"; return 0; }
      fi ;;
  esac
  say "importing $path into app 'default' as image 'default'"
  rc=0
  id=$(cli image import "$path" --name default 2>"$DIR/logs/default-image.err") || rc=$?
  if [ "$rc" -ne 0 ]; then
    say "WARNING: importing the default image failed (exit $rc): $(cat "$DIR/logs/default-image.err")"
    say "app 'default' has no default image; import it later with: cairn image import --name default $path"
    return 0
  fi
  say "default image of app 'default': ${id##*$'\n'}"
}

# Stop one process (by its pid file) and start it again with its config.
cmd_restart() {
  local bin n deadline
  case "$NODE" in
    coordinator) bin=$(find_bin cairn-coordinator) ;;
    w[0-9]*)
      n=${NODE#w}
      [[ "$n" =~ ^[0-9]+$ && $n -ge 1 && $n -le $WORKERS ]] || die "unknown process '$NODE' (coordinator or w1..w$WORKERS)"
      bin=$(find_bin cairn-worker) ;;
    *) die "unknown process '$NODE' (coordinator or w1..w$WORKERS)" ;;
  esac
  [ -f "$DIR/$NODE.conf" ] || die "no config for $NODE in $DIR (run up first)"
  CAIRN=$(find_bin cairn)
  if running "$NODE"; then
    say "stopping $NODE (pid $(pid_of "$NODE"))"
    stop_procs "$NODE"
  fi
  say "starting $NODE"
  start_proc "$NODE" "$bin"
  if [ "$NODE" = coordinator ]; then
    deadline=$((SECONDS + 15))
    until cli ping --timeout 1000 >/dev/null 2>&1; do
      running coordinator || { log_tail coordinator; die "cairn-coordinator exited (see $DIR/logs/coordinator.log)"; }
      [ $SECONDS -lt $deadline ] || { log_tail coordinator; die "cairn-coordinator does not answer after its restart"; }
      sleep 0.2
    done
    say "coordinator restarted (pid $(pid_of coordinator)); workers re-register on their own"
  else
    deadline=$((SECONDS + 30))
    until cli cluster status --json --timeout 2000 2>/dev/null | grep -qE "\"id\":\"$NODE\",[^}]*\"alive\":true"; do
      running "$NODE" || { log_tail "$NODE"; die "cairn-worker $NODE exited (see $DIR/logs/$NODE.log)"; }
      [ $SECONDS -lt $deadline ] || { log_tail "$NODE"; die "$NODE is not alive 30 s after its restart"; }
      sleep 0.3
    done
    say "$NODE restarted (pid $(pid_of "$NODE")) and alive"
  fi
}

cmd_status() {
  local name ok=0 pid
  CAIRN=$(find_bin cairn)
  for f in "$DIR"/pids/*.pid; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .pid); pid=$(cat "$f")
    if running "$name"; then echo "$name: running (pid $pid)"; else echo "$name: not running (pid file says $pid)"; ok=1; fi
  done
  [ -e "$DIR/pids/coordinator.pid" ] || { echo "coordinator: not started"; ok=1; }
  if running coordinator; then cli cluster status || ok=1; fi
  return $ok
}

# Sandboxes outlive the worker process that started them: runsc daemons, the overlay `merged`
# mount (which makes rm -rf of DIR fail with EBUSY) and cgroups stay when a worker stops with
# sandboxes running. After the daemons stopped, remove what is left, each thing by its runsc id,
# its pid or its path, never by a process name: runsc delete -force of every container in each
# worker's runsc root, SIGKILL to leftover processes whose command line names that root, umount -l
# of every mount below DIR (deepest first), rmdir of the cgroups named in the bundles' config.json
# (and of their parent when it is left empty).
down_sandboxes() {
  local data root id p m f cg r i left
  local roots=()
  for data in "$DIR"/data/w*; do
    [ -d "$data/runtime/runsc" ] || continue
    root=$data/runtime/runsc
    roots+=("$root")
    if command -v runsc >/dev/null 2>&1; then
      for id in $(runsc --root "$root" list -quiet 2>/dev/null || true); do
        timeout 20 runsc --root "$root" delete -force "$id" >/dev/null 2>&1 ||
          say "runsc --root $root delete -force $id failed"
      done
    fi
  done
  [ ${#roots[@]} -gt 0 ] || return 0
  for i in $(seq 1 50); do # SIGKILL what still names a root; wait (5 s at most) until it is gone
    left=0
    for p in /proc/[0-9]*; do
      for root in "${roots[@]}"; do
        if tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -qxF -e "--root=$root" -e "$root"; then
          left=1; kill -KILL "${p#/proc/}" 2>/dev/null || true
        fi
      done
    done
    [ $left = 0 ] && break
    sleep 0.1
  done
  awk -v d="$DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || say "cannot unmount $m"
  done
  for f in "$DIR"/data/w*/runtime/sandboxes/*/bundle/config.json; do
    [ -f "$f" ] || continue
    cg=$(grep -o '"cgroupsPath":"[^"]*"' "$f" | head -n1 | cut -d'"' -f4)
    case "$cg" in /?*) ;; *) continue ;; esac
    case "$cg" in *..*) continue ;; esac
    for r in $(awk '$3 == "cgroup" || $3 == "cgroup2" {print $2}' /proc/self/mounts); do
      if [ -d "$r$cg" ]; then
        for i in $(seq 1 20); do rmdir "$r$cg" 2>/dev/null && break; sleep 0.1; done
        [ ! -d "$r$cg" ] || say "cannot remove cgroup $r$cg"
      fi
      rmdir "$r$(dirname "$cg")" 2>/dev/null || true # the worker's parent, once empty
    done
  done
  return 0
}

cmd_down() {
  local names=() f
  for f in "$DIR"/pids/*.pid; do
    [ -e "$f" ] || continue
    names+=("$(basename "$f" .pid)")
  done
  # workers first, so that the coordinator does not spend its last seconds declaring them dead
  local ws=() c=()
  for n in "${names[@]}"; do if [ "$n" = coordinator ]; then c+=("$n"); else ws+=("$n"); fi; done
  [ ${#ws[@]} -eq 0 ] || stop_procs "${ws[@]}"
  [ ${#c[@]} -eq 0 ] || stop_procs "${c[@]}"
  down_sandboxes
  [ "$NETNS" != 1 ] || netns_down
  say "cluster in $DIR stopped (${#names[@]} processes); its data stays in $DIR"
}

cmd_link() { # cut|heal NODE
  [ -n "$NODE" ] || die "$CMD needs a node: coordinator or w1..w$WORKERS"
  node_index "$NODE" >/dev/null || die "unknown node '$NODE' (coordinator or w1..w$WORKERS)"
  local veth; veth=$(veth_name "$NODE" "$(node_index "$NODE")")
  ip link show "$veth" >/dev/null 2>&1 || die "no link for '$NODE' (is the cluster up?)"
  if [ "$CMD" = cut ]; then ip link set "$veth" down; else ip link set "$veth" up; fi
  say "$NODE: link $([ "$CMD" = cut ] && echo down || echo up)"
}

# One command at a time per cluster dir.
exec 9>"$DIR/.lock"
flock -w 60 9 || die "another ${PROG##*/} command holds $DIR/.lock"
case "$CMD" in
  up) cmd_up ;;
  status) cmd_status ;;
  env) print_env ;;
  down) cmd_down ;;
  restart) cmd_restart ;;
  cut|heal) cmd_link ;;
esac
