#!/usr/bin/env bash
# The main command (README): on a fresh Debian 12 machine, sets everything up and walks through a
# local cairn cluster.
#   bash deploy/demo.sh [--dir DIR] [--workers N] [--base-port P]
# Installs dependencies, builds, brings up one coordinator and N (default 3) workers on loopback under
# DIR (default ./var/cluster) with CURVE keys and allow-lists, then: shows `cairn cluster status`,
# runs a job round trip, stores 8 MB of data on one worker and shows each chunk landing on the R
# workers rendezvous hashing picks, runs a gVisor sandbox from the Debian base image (built once with
# debootstrap and cached), snapshots its filesystem and restores it on another worker, takes a directory
# snapshot under a customer-supplied key and mounts it elsewhere (and shows a wrong key refused), takes a
# memory snapshot of a counting sandbox and restores 3 clones that keep counting, and prints the export
# lines to keep using the cluster.
# The cluster keeps running afterwards: `deploy/local-cluster.sh down --dir DIR` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=var/cluster
WORKERS=3
PORT=17300
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --base-port) PORT=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1'" >&2; exit 1 ;;
  esac
done
step() { printf '\n== %s\n' "$*"; }

step "installing dependencies and building"
bash deploy/install-deps.sh >/dev/null
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
export PATH="$PWD/build/client:$PATH"

step "deploy/local-cluster.sh up --workers $WORKERS --dir $DIR --base-port $PORT"
eval "$(deploy/local-cluster.sh up --workers "$WORKERS" --dir "$DIR" --base-port "$PORT")"
deploy/local-cluster.sh env --dir "$DIR"

step "cairn cluster status"
cairn cluster status

step "cairn ping"
cairn ping

step "a job round trip: cairn job submit noop --wait"
cairn job submit noop --wait

step "1,000 no-op jobs, 32 in flight (state persisted by the coordinator)"
cairn job submit noop --count 1000 --window 32

step "store 8 MB on worker w1: chunked, encrypted, replicated to R workers by rendezvous hashing"
res=$(cairn --json job submit ingest --param bytes=8000000 --param seed=42 --worker w1 --wait)
python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r=r.get("result",r); print("%d chunks, %d bytes, domain %s" % (r["chunks"], r["bytes"], r["domain"]))' "$res"
ids=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r=r.get("result",r); print(",".join(r["ids"][:4]))' "$res")
dom=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r=r.get("result",r); print(r["domain"])' "$res")
echo "where the first 4 chunks live (a chunk-has job on every worker):"
for w in $(cairn --json cluster status | python3 -c 'import json,sys; print(" ".join(w["id"] for w in json.load(sys.stdin)["workers"]))'); do
  held=$(cairn --json job submit chunk-has --param-str domain="$dom" --param "ids=[$ids]" --worker "$w" --wait |
         python3 -c 'import json,sys; r=json.load(sys.stdin); r=r.get("result",r); print(" ".join("x" if h else "." for h in r["held"]))')
  echo "  $w: $held"
done

if cairn image ls 2>/dev/null | grep -q default; then
  step "cairn image ls (the Debian 12 minbase image that local-cluster.sh imported as 'default')"
  cairn image ls

  step "a sandbox from the default image, on gVisor: cairn sandbox create; cairn sandbox exec"
  sb=$(cairn sandbox create --worker w1 | tail -n1)
  echo "sandbox: $sb"
  cairn sandbox exec "$sb" -- sh -c 'echo "hello from $(hostname), Debian $(cat /etc/debian_version)"; echo "state saved at $(date -u +%T)" > /root/state.txt'

  step "filesystem snapshot (the sandbox keeps running): cairn sandbox snapshot-fs"
  im=$(cairn sandbox snapshot-fs "$sb" | tail -n1)
  echo "image: $im"

  step "a new sandbox from that snapshot on another worker sees the saved state"
  sb2=$(cairn sandbox create --image "$im" --worker w2 | tail -n1)
  cairn sandbox exec "$sb2" -- cat /root/state.txt

  step "directory snapshot with a customer-supplied key: cairn sandbox mount / snapshot-dir --key-file"
  keydir=$(mktemp -d); trap 'rm -rf "$keydir"' EXIT
  head -c 32 /dev/urandom > "$keydir/project.key"; head -c 32 /dev/urandom > "$keydir/wrong.key"
  cairn sandbox mount "$sb" /project >/dev/null        # an empty writable directory
  cairn sandbox exec "$sb" -- sh -c 'echo "private data" > /project/state.txt'
  dim=$(cairn sandbox snapshot-dir "$sb" /project --key-file "$keydir/project.key" | tail -n1)
  echo "CSEK directory image: $dim"
  cairn sandbox mount "$sb2" /project "$dim" --key-file "$keydir/project.key" >/dev/null
  echo -n "mounted on $sb2 with the key: "; cairn sandbox exec "$sb2" -- cat /project/state.txt
  echo "mounting it without the key, then with a wrong key (both refused, nothing changes):"
  cairn sandbox mount "$sb2" /other "$dim" 2>&1 || true
  cairn sandbox mount "$sb2" /other "$dim" --key-file "$keydir/wrong.key" 2>&1 || true
  cairn sandbox terminate "$sb" >/dev/null
  cairn sandbox terminate "$sb2" >/dev/null
  echo "terminated $sb and $sb2"

  step "memory snapshot and clones: a counter keeps counting in every clone"
  msb=$(cairn sandbox create --enable-snapshot --worker w1 -- sh -c 'i=0; while :; do i=$((i+1)); echo $i > /count; sleep 1; done' | tail -n1)
  sleep 3
  echo "counter in $msb before the snapshot: $(cairn sandbox exec "$msb" -- cat /count)"
  sn=$(cairn sandbox snapshot "$msb" | tail -n1)
  echo "memory snapshot: $sn (taking it terminated $msb)"
  clones=$(cairn sandbox restore "$sn" --count 3)
  sleep 2
  for c in $clones; do echo "  clone $c: counter $(cairn sandbox exec "$c" -- cat /count)"; done
  for c in $clones; do cairn sandbox terminate "$c" >/dev/null; done
else
  step "no default image (local-cluster.sh could not build or import it): sandbox steps skipped"
fi

sleep 1.5   # let every worker's next heartbeat report its chunk count
step "cairn cluster status (chunk counts per worker)"
cairn cluster status

cat <<EOT

The cluster is still running. To use it from this shell:
  eval "\$(deploy/local-cluster.sh env --dir $DIR)"; export PATH="$PWD/build/client:\$PATH"
  cairn cluster status --json
Stop it with:
  deploy/local-cluster.sh down --dir $DIR
EOT
