#!/usr/bin/env bash
# Replication on a real 3-worker cluster: `ingest` jobs pinned to w1 store chunks; a `chunk-has` job on
# every worker shows each chunk of the result held by exactly the R workers that rendezvous hashing
# names. The expected set is computed here, independently, in Python from the score documented in
# common/include/cairn/placement.h, checked first against the value pinned in tests/unit/test_config.c.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/cluster.sh"

# The placement score, in Python: BLAKE2b-64("cairn place v1" || le32(len(w)) || w || domain || chunk), LE.
PLACE_PY='
import hashlib, struct
def score(w, dom, cid):
    wb = w.encode()
    h = hashlib.blake2b(b"cairn place v1" + struct.pack("<I", len(wb)) + wb + dom + cid, digest_size=8).digest()
    return struct.unpack("<Q", h)[0]
def place(workers, r, dom, cid):
    return set(sorted(workers, key=lambda w: (-score(w, dom, cid), w))[:r])
'
check "python score matches the pinned value of test_config.c" python3 -c "$PLACE_PY
assert score('w1', bytes(16), bytes(32)) == 18193495279832423249, score('w1', bytes(16), bytes(32))"

cluster_up repl --workers 3 || { bad "cluster up"; finish; exit 1; }
cj S cluster status
R=$(jget "$S" "j['replicas']")
WORKERS=$(jget "$S" "' '.join(sorted(w['id'] for w in j['workers'] if w['alive']))")
check "3 live workers, R = $R" test "$WORKERS" = "w1 w2 w3" -a "${R:-0}" -ge 1

TOTAL_CHUNKS=0
TOTAL_AWAY=0
LAST_IDS=""
# ingest BYTES SEED WORKER: runs the job, then checks placement of every chunk id of its result
ingest_and_check() {
  local bytes=$1 seed=$2 on=$3 J n ids dom w H
  cj J job submit ingest --param bytes="$bytes" --param seed="$seed" --worker "$on" --wait 120000
  if [ "$(jget "$J" "j['state']")" != succeeded ]; then
    bad "ingest $bytes bytes (seed $seed) on $on: exit $CJ_RC: $J $(cat "$T/cj.err")"
    return 1
  fi
  n=$(jget "$J" "j['result']['chunks']")
  dom=$(jget "$J" "j['result']['domain']")
  ids=$(jget "$J" "','.join(j['result']['ids'])")
  echo "# ingest $bytes bytes seed $seed on $on: $n chunks, domain $dom"
  check "ingest $bytes: result bytes = $bytes" test "$(jget "$J" "j['result']['bytes']")" = "$bytes"
  check "ingest $bytes: ran on $on" test "$(jget "$J" "j['worker']")" = "$on"
  check "ingest $bytes: ids are min(chunks, 64) hex chunk ids" python3 -c '
import json, re, sys
j = json.loads(sys.argv[1]); r = j["result"]
assert len(r["ids"]) == min(r["chunks"], 64) and r["chunks"] >= 1, r
assert all(re.fullmatch("[0-9a-f]{64}", i) for i in r["ids"]), r["ids"]
assert re.fullmatch("[0-9a-f]{32}", r["domain"]), r["domain"]' "$J"
  : >"$T/held.$seed"
  for w in $WORKERS; do
    cj H job submit chunk-has --worker "$w" --param-str domain="$dom" --param "ids=[$ids]" --wait 30000
    if [ "$(jget "$H" "j['state']")" != succeeded ]; then
      bad "chunk-has on $w: exit $CJ_RC: $H $(cat "$T/cj.err")"
      return 1
    fi
    echo "$w $(jget "$H" "j['result']['held']")" >>"$T/held.$seed"
  done
  check "ingest $bytes: every chunk held by exactly the $R workers rendezvous hashing names" python3 -c "$PLACE_PY
import json, sys
workers = sys.argv[1].split(); r = int(sys.argv[2]); dom = bytes.fromhex(sys.argv[3]); ids = sys.argv[4].split(',')
held = {}
for line in open(sys.argv[5]):
    w, arr = line.split(' ', 1)
    held[w] = json.loads(arr)
    assert len(held[w]) == len(ids), (w, held[w])
bad = []
for i, cid in enumerate(ids):
    want = place(workers, r, dom, bytes.fromhex(cid))
    got = {w for w in workers if held[w][i] is True}
    if got != want:
        bad.append(f'chunk {cid[:16]}: held by {sorted(got)}, placement says {sorted(want)}')
if bad:
    print('\n'.join(bad)); sys.exit(1)
" "$WORKERS" "$R" "$dom" "$ids" "$T/held.$seed"
  AWAY=$(python3 -c "$PLACE_PY
import sys
workers = sys.argv[1].split(); dom = bytes.fromhex(sys.argv[3])
print(sum(1 for c in sys.argv[4].split(',') if sys.argv[5] not in place(workers, int(sys.argv[2]), dom, bytes.fromhex(c))))
" "$WORKERS" "$R" "$dom" "$ids" "$on")
  echo "# $AWAY of the chunks are placed away from $on (it must have dropped its own copy)"
  TOTAL_AWAY=$((TOTAL_AWAY + AWAY))
  TOTAL_CHUNKS=$((TOTAL_CHUNKS + n))
  LAST_IDS=$ids
  return 0
}

ingest_and_check 5000 11 w1 || true          # one chunk (under the chunker's minimum)
ingest_and_check 100000 12 w1 || true        # a few chunks
LAST_IDS=""; ingest_and_check 2000000 13 w1 || true       # ~2 MB: about 30 chunks
IDS13=${LAST_IDS:-}

# the same data again, from another worker: same chunk ids (deterministic), and still exactly R copies
# (the ingesting worker drops its copy when it is not in the placement set)
LAST_IDS=""; ingest_and_check 2000000 13 w3 || true
check "same seed -> same chunk ids" test -n "$IDS13" -a "${LAST_IDS:-}" = "$IDS13"
TOTAL_CHUNKS=$((TOTAL_CHUNKS - $(tr ',' '\n' <<<"$IDS13" | wc -l)))

check "some chunks ($TOTAL_AWAY) were placed away from the ingesting worker" test "$TOTAL_AWAY" -gt 0

# the workers' chunk counters (heartbeats) add up to R copies of every chunk
sum_chunks_ok() {
  local s; cj s cluster status
  [ "$(jget "$s" "sum(w['chunks'] for w in j['workers'])")" = "$((R * TOTAL_CHUNKS))" ]
}
check "cluster status: chunks over all workers = R x $TOTAL_CHUNKS" wait_for 10 "chunk counters" sum_chunks_ok
cj S cluster status
echo "# chunks per worker: $(jget "$S" "' '.join(w['id'] + '=' + str(w['chunks']) for w in j['workers'])")"
check "stored bytes are reported" test "$(jget "$S" "all(w['bytes'] > 0 for w in j['workers'] if w['chunks'] > 0)")" = true

# chunk-has of ids nobody stored
cj H job submit chunk-has --worker w2 --param-str domain=00000000000000000000000000000000 \
  --param "ids=[$(printf '%064d' 0)]" --wait 30000
check "chunk-has of an unknown chunk -> not held" test "$(jget "$H" "j['result']['held']")" = "[false]"
# bad params are refused by the job, not by a crash
cj H job submit chunk-has --worker w2 --param-str domain=zz --param "ids=[00]" --wait 30000
check "chunk-has with a malformed domain fails cleanly" test "$(jget "$H" "j['state']")" = failed
cj H job submit ingest --param bytes=not-a-number --worker w2 --wait 30000
check "ingest with a malformed bytes param fails cleanly (EINVAL)" test "$(jget "$H" "j['state'] + ':' + str(j['error']['code'])")" = failed:1
check "3 workers still alive" test "$(alive_count)" = 3

[ "$FAILED" -eq 0 ] || cluster_logs
cluster_down
finish
