#!/usr/bin/env bash
# Sandbox create latency on workers that hold none of the image's chunks (a benchmark, not a test).
#   bash tests/bench/bench_create_peers.sh [N]     (default N=5)
# Brings up a 2-worker local cluster with the Debian default image (imported while only w1 and w2 exist,
# so they hold every chunk), then adds workers w3..w(N+2) one at a time and times `cairn sandbox create
# --worker wK` on each new worker: every chunk of the image is fetched from peers and the layer is
# materialised before runsc starts. Prints one line per create and p50/p95; the cluster is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-5}
D=$(mktemp -d /var/tmp/cairn-bench-peers.XXXXXX)
PORT=31300
export PATH="$PWD/build/client:$PATH"
cleanup() { deploy/local-cluster.sh down --dir "$D" >/dev/null 2>&1 || true; rm -rf "$D"; }
trap cleanup EXIT
eval "$(deploy/local-cluster.sh up --workers 2 --dir "$D" --base-port "$PORT" --default-image debian 2>/dev/null)"
times=()
for ((k = 3; k < N + 3; k++)); do
  deploy/local-cluster.sh up --workers "$k" --dir "$D" --base-port "$PORT" --no-default-image >/dev/null 2>&1
  t0=$(date +%s.%N)
  sb=$(cairn --timeout 120000 sandbox create --worker "w$k" | tail -n1)
  t1=$(date +%s.%N)
  dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  held=$(cairn --json cluster status | python3 -c "import json,sys; print([w['chunks'] for w in json.load(sys.stdin)['workers'] if w['id']=='w$k'][0])")
  echo "create on new worker w$k: ${dt} s ($sb; w$k holds $held chunks after the create)"
  times+=("$dt")
  cairn sandbox terminate "$sb" >/dev/null
done
printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { p50 = a[int((NR + 1) / 2)]; p95 = a[NR]; printf "N=%d  p50 %.3f s  p95 (max) %.3f s\n", NR, p50, p95 }'
