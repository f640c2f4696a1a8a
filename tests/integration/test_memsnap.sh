#!/usr/bin/env bash
# Memory snapshots and clone fan-out (issue 6; docs/internals/snapshots.md) on a real 3-worker cluster
# started with --test-clock, busybox default image, runsc:
#   - a counter process that is the sandbox's own command (a random boot tag and a count, written every
#     0.2 s to /tmp/c, a tmpfs in sentry memory, and to /c on the root filesystem) keeps counting from its
#     snapshot value, with the same boot tag, in each of 4 clones (`restore --count 4`) spread over the 3
#     workers;
#   - each chunk crosses the network at most once per worker (the chunks a worker's clones fetched, from
#     its log, are at most the chunks it lacked, from `cairn-store chunks`; 6 clones of the re-snapshot
#     below, so that workers run 2 or more);
#   - memory contents: 200 MB of random bytes in the sandbox's /tmp tmpfs (memory, not disk) have the same
#     md5 in every clone;
#   - files survive: a file written and a file deleted in the root filesystem diff, files in a directory
#     mounted with `cairn sandbox mount SB /data`;
#   - refusals, each with its exit code and message, the sandbox still running afterwards: a sandbox not
#     created with --enable-snapshot (11), an exec still running in it (19), a CSEK mount in it (11),
#     `create --enable-snapshot --gpu 1` (1, and no sandbox made); once the exec ended the snapshot works;
#   - taking a snapshot terminates the sandbox (ls --all: terminated; exec: 5);
#   - re-snapshot of a clone works, its `snapshot show` expires_at equals its parent's (created_at + 7d),
#     and its 6 clones (on 3 workers) start; one of them still counts with the original boot tag;
#   - `snapshot rm` makes a snapshot unusable at once (restore: 5);
#   - restore while one worker is down (killed -9 by pid, status says dead) works on the other two, and a
#     restore pinned to the dead worker is refused (21);
#   - expiry: after `admin clock advance` 6d the snapshot is still there; 1d+1s later restore fails with
#     ENOTFOUND saying it expired (the re-snapshot too), and every chunk that appeared with the snapshots
#     vanishes from every worker (`cairn-store chunks DATA_DIR`), while the chunks that were there before
#     (the image's, a live directory snapshot's) stay.
# Not testable here: snapshot of a sandbox with a GPU (no worker has GPUs, so such a sandbox cannot exist).
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/cluster.sh"

if ! command -v runsc >/dev/null 2>&1; then
  echo "# runsc is not installed: sandboxes cannot run here"
  bad "runsc missing"; finish; exit 1
fi
T_START=$(now_ms)
# snapshots and restores of 200 MB sandboxes take longer than the CLI's default 10 s per call
export CAIRN_TIMEOUT_MS=${CAIRN_TIMEOUT_MS:-300000}
STORE=$(bin cairn-store)

cluster_up mem --workers 3 --test-clock --default-image busybox || { bad "cluster up"; finish; exit 1; }
cx() { "$CAIRN" "$@" </dev/null; } # the CLI without our stdin

# ---- helpers ----
# Functions set globals (no $(...): a subshell would lose them).
terminate_all() { # every sandbox of the app still running (at exit, while the cluster is up)
  local s l
  [ -f "$CL_DIR/cluster.state" ] || return 0
  l=$(CAIRN_TIMEOUT_MS=5000 "$CAIRN" --json sandbox ls </dev/null 2>/dev/null) || return 0
  for s in $(jget "$l" "' '.join(x['id'] for x in j['sandboxes'])"); do
    CAIRN_TIMEOUT_MS=20000 "$CAIRN" sandbox terminate "$s" </dev/null >/dev/null 2>&1 || true
  done
}
on_exit terminate_all # runs before cluster_down (cleanups run in reverse)
# checkf FILE WHAT CMD...: check, and show FILE (an error output) when it fails
checkf() { local f=$1 what=$2; shift 2; if "$@"; then ok "$what"; else bad "$what"; sed 's/^/#   /' "$f" 2>/dev/null | head -n 20; fi; }
num() { if [[ "${1:-}" =~ ^[0-9]+$ ]]; then echo "$1"; else echo -1; fi; }
create() { # create ARGS... -> SBID=sb-... ("" on failure; stderr in $T/create.err)
  SBID=$(cx sandbox create "$@" 2>"$T/create.err" | tail -n1) || true
  grep -qE '^sb-[0-9a-f]{16}$' <<<"$SBID" || SBID=""
}
ls_field() { local s; cj s sandbox ls --all; jget "$s" "[x['$2'] for x in j['sandboxes'] if x['id'] == '$1'][0]"; }
worker_of() { ls_field "$1" worker; }
state_of() { ls_field "$1" state; }
alive_sb() { [ "$(cx sandbox exec "$1" -- echo alive 2>/dev/null)" = alive ]; }
snap() { # snap SB -> SNID=sn-... ("" on failure; stderr in $T/snap.err), SNAP_MS
  local t0; t0=$(now_ms)
  SNID=$(cx sandbox snapshot "$1" 2>"$T/snap.err" | tail -n1) || true
  SNAP_MS=$(( $(now_ms) - t0 ))
  grep -qE '^sn-[0-9a-f]{16}$' <<<"$SNID" || SNID=""
}
restore() { # restore SN [--count N] -> IDS=(sb-...) (empty on failure; json in $T/restore.json), RESTORE_MS
  local t0 out; t0=$(now_ms)
  IDS=()
  cj out sandbox restore "$@"
  RESTORE_MS=$(( $(now_ms) - t0 ))
  printf '%s\n' "$out" >"$T/restore.json"
  [ "$CJ_RC" = 0 ] || { cat "$T/cj.err" >>"$T/restore.json"; return 0; }
  read -r -a IDS <<<"$(jget "$out" "' '.join(j['ids']) if 'ids' in j else j['id']")"
}
workers_of() { local s w=""; for s in "$@"; do w="$w $(worker_of "$s")"; done; echo "$w"; }
uniq_words() { tr ' ' '\n' <<<"$1" | grep . | sort -u | tr '\n' ' '; }
# the counter: "<boot tag> <count>" in /tmp/c (tmpfs: sentry memory) and /c (root filesystem diff)
COUNTER='b=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d " \n"); i=0
while :; do i=$((i+1)); echo "$b $i" >/tmp/c.n; mv /tmp/c.n /tmp/c; echo "$b $i" >/c.n; mv /c.n /c; sleep 0.2; done'
counter() { cx sandbox exec "$1" -- cat "${2:-/tmp/c}" 2>/dev/null || true; } # SB [FILE] -> "tag n"
# check_counts NAME SB TAG MIN: the counter of SB carries TAG, is >= MIN in /tmp/c and /c, and moves on
check_counts() {
  local name=$1 sb=$2 tag=$3 min a r b
  min=$(num "$4")
  a=$(counter "$sb"); r=$(counter "$sb" /c)
  check "$name: /tmp/c has the boot tag $tag ($a)" test "${a% *}" = "$tag"
  check "$name: ... counting from the snapshot value (${a#* } >= $min)" test "$(num "${a#* }")" -ge "$min"
  check "$name: /c on the root fs too ($r)" test "${r% *}:$(( $(num "${r#* }") >= min ))" = "$tag:1"
  sleep 0.8
  b=$(counter "$sb")
  check "$name: ... and keeps counting (${a#* } -> ${b#* })" test "${b% *}:$(( $(num "${b#* }") > $(num "${a#* }") ))" = "$tag:1"
}
# fetch_bound SN SB...: each chunk crosses the network at most once per worker. What the clones SB... of
# SN on a worker fetched in all (the workers' "restored from SN" log lines) is at most what that worker
# lacked of the cluster's chunks ($T/chunks.pre, listed right before the restore: the snapshot's, and the
# image's for a worker that never ran a sandbox of it). Meaningful for a worker with 2 clones or more.
fetch_bound() {
  local sn=$1 w s c n nlog fetched lacked; shift
  chunks_tool || return 0
  cut -d' ' -f2- "$T/chunks.pre" | LC_ALL=C sort -u >"$T/allchunks"
  for w in w1 w2 w3; do
    lacked=$(grep "^$w " "$T/chunks.pre" | cut -d' ' -f2- | LC_ALL=C sort -u | comm -13 - "$T/allchunks" | wc -l)
    fetched=0; nlog=0; n=0
    for s in "$@"; do
      [ "$(worker_of "$s")" = "$w" ] || continue
      n=$((n + 1))
      c=$(grep -ohE "\($s\) restored from $sn in [0-9]+ ms \(runsc restore [0-9]+ ms; [0-9]+ chunks" "$CL_DIR/logs/$w.log" |
        sed -E 's/.*; ([0-9]+) chunks$/\1/' | head -n1)
      if [ -n "$c" ]; then fetched=$((fetched + c)); nlog=$((nlog + 1)); fi
    done
    [ "$n" -gt 0 ] || continue
    if [ "$nlog" != "$n" ]; then echo "# NOTE: no 'restored from' log line with fetched chunks for the clones on $w"; continue; fi
    check "$w: its $n clone(s) of $sn fetched $fetched chunks, at most the $lacked it lacked" test "$fetched" -le "$lacked"
  done
}
chunks_tool() { [ -x "$STORE" ] && "$STORE" --help 2>&1 | grep -q 'chunks DIR'; }
chunks_all() { # -> "wN <domain> <chunk>" lines of every worker, sorted
  local w
  for w in w1 w2 w3; do "$STORE" chunks "$CL_DIR/data/$w" --quiet | sed "s/^/$w /"; done | LC_ALL=C sort
}
chunk_counts() { local s; cj s cluster status; jget "$s" "' '.join('%s=%s' % (w['id'], w['chunks']) for w in sorted(j['workers'], key=lambda w: w['id']))"; }

# ---- setup: a plain sandbox, one for the refusals, the main one ----
create --worker w2; P=$SBID
check "a sandbox without --enable-snapshot ($P)" grep -q '^sb-' <<<"$P"
create --enable-snapshot --worker w2; R=$SBID
check "a sandbox with --enable-snapshot for the refusals ($R)" grep -q '^sb-' <<<"$R"
create --enable-snapshot --worker w1 -- sh -c "$COUNTER"; A=$SBID
check "the main sandbox: --enable-snapshot, on w1, a counter as its command ($A)" grep -q '^sb-' <<<"$A"
if [ -z "$A" ] || [ -z "$R" ] || [ -z "$P" ]; then cat "$T/create.err"; cluster_logs; cluster_down; finish; exit 1; fi

cj M sandbox mount "$A" /data
checkf "$T/cj.err" "sandbox mount $A /data (an empty directory)" test "$CJ_RC" = 0
cx sandbox exec "$A" -- sh -c 'echo mounted >/data/m && mkdir -p /data/sub && echo deep >/data/sub/f &&
  echo in-root >/etc/rootdiff && rm /etc/group' || bad "exec writing files in $A"
t0=$(now_ms)
BLOB=$(cx sandbox exec "$A" --timeout 120s -- sh -c 'dd if=/dev/urandom of=/tmp/blob bs=1M count=200 2>/dev/null && md5sum /tmp/blob | cut -d" " -f1') || true
check "200 MiB of random bytes in $A's /tmp tmpfs, md5 $BLOB ($(( $(now_ms) - t0 )) ms)" grep -qE '^[0-9a-f]{32}$' <<<"$BLOB"
check "/tmp in the sandbox is a tmpfs (memory)" test "$(cx sandbox exec "$A" -- sh -c "awk '\$2 == \"/tmp\" {print \$3}' /proc/mounts")" = tmpfs

# R: a CSEK mount (a directory snapshot made with a key, mounted again with it)
head -c 32 /dev/urandom >"$T/key"
cj X sandbox mount "$R" /k
cx sandbox exec "$R" -- sh -c 'echo secret >/k/s' || bad "exec writing /k/s in $R"
cj X sandbox snapshot-dir "$R" /k --key-file "$T/key"
KIMG=$(jget "$X" "j['id']")
check "a CSEK directory snapshot for the refusal ($KIMG)" grep -q '^im-' <<<"$KIMG"
cj X sandbox mount "$R" /k2 "$KIMG" --key-file "$T/key"
checkf "$T/cj.err" "... mounted into $R at /k2 with its key" test "$CJ_RC" = 0

# the chunks before any memory snapshot
if chunks_tool; then chunks_all >"$T/chunks.0"; echo "# $(wc -l <"$T/chunks.0") chunks on the workers before the snapshots"
else echo "# NOTE: cairn-store has no 'chunks DIR': chunk counts from cluster status instead"; C0=$(chunk_counts); echo "# chunks before: $C0"; fi

# ---- refusals ----
cj S sandbox ls
N_SB=$(jget "$S" "len(j['sandboxes'])")
expect_fail 11 "was not created with --enable-snapshot" -- cx sandbox snapshot "$P"
check "... $P is still running" alive_sb "$P"
expect_fail 1 "sandboxes with snapshots enabled cannot have GPUs" -- cx sandbox create --enable-snapshot --gpu 1
cj S sandbox ls
check "... and made no sandbox" test "$(jget "$S" "len(j['sandboxes'])")" = "$N_SB"
expect_fail 11 "has a CSEK mount at /k2" -- cx sandbox snapshot "$R"
check "... $R is still running, its CSEK mount too" test "$(cx sandbox exec "$R" -- cat /k2/s 2>&1)" = secret
cj X sandbox unmount "$R" /k2
check "unmount /k2" test "$CJ_RC" = 0
"$CAIRN" sandbox exec "$R" --timeout 60s -- sh -c 'sleep 8; echo done' </dev/null >"$T/bg.out" 2>&1 &
BG=$!
on_exit "kill $BG 2>/dev/null"
wait_for 20 "the background exec to run in $R" sh -c "\"$CAIRN\" sandbox exec '$R' -- ps </dev/null | grep -q 'sleep 8'" ||
  bad "the background exec did not show up in $R"
expect_fail 19 "an exec is still running in $R" -- cx sandbox snapshot "$R"
check "... $R is still running" alive_sb "$R"
rc=0; wait "$BG" || rc=$?
check "... and the exec ran to its end (exit $rc: $(cat "$T/bg.out"))" test "$rc:$(cat "$T/bg.out")" = "0:done"
snap "$R"; SNR=$SNID
checkf "$T/snap.err" "once the exec ended, the snapshot of $R works ($SNR, $SNAP_MS ms)" grep -q '^sn-' <<<"$SNR"

# ---- snapshot of the counter sandbox ----
C=$(counter "$A")
TAG=${C% *}; N0=${C#* }
check "the counter runs in $A ($C)" grep -qE '^[0-9a-f]{16} [0-9]+$' <<<"$C"
snap "$A"; SN=$SNID
checkf "$T/snap.err" "sandbox snapshot $A -> $SN ($SNAP_MS ms, 200 MiB in memory)" grep -qE '^sn-[0-9a-f]{16}$' <<<"$SN"
[ -n "$SN" ] || { cluster_logs; cluster_down; finish; exit 1; }
check "snapshotting terminated $A (ls --all: $(state_of "$A"))" test "$(state_of "$A")" = terminated
expect_rc 5 "exec in the snapshotted sandbox -> ENOTFOUND" -- cx sandbox exec "$A" -- true
cj J snapshot show "$SN"
checkf "$T/cj.err" "snapshot show $SN works (state: $(jget "$J" "j.get('state', '-')"))" test "$CJ_RC:$(jget "$J" "j.get('state', 'ready')")" = 0:ready
EXP=$(jget "$J" "j.get('expires_at')"); CRE=$(jget "$J" "j.get('created_at')")
check "... expires_at ($EXP) = created_at ($CRE) + 7 days" python3 - "$EXP" "$CRE" <<'PY'
import sys, datetime
def t(v):  # ns since the epoch, or an ISO 8601 UTC string
    try:
        return int(v) / 1e9
    except ValueError:
        return datetime.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
sys.exit(0 if abs(t(sys.argv[1]) - t(sys.argv[2]) - 7 * 86400) < 1.5 else 1)
PY
cj L snapshot ls
check "snapshot ls lists $SN and $SNR" test "$(jget "$L" "sorted(s['id'] for s in j['snapshots'])")" = "$(python3 -c 'import json,sys; print(json.dumps(sorted(sys.argv[1:])))' "$SN" "$SNR")"

cj X snapshot rm "$SNR"
check "snapshot rm $SNR" test "$CJ_RC" = 0
expect_fail 5 "$SNR" -- cx sandbox restore "$SNR"

# ---- 4 clones on 3 workers ----
chunks_tool && chunks_all >"$T/chunks.pre"
restore "$SN" --count 4; CL=("${IDS[@]}")
checkf "$T/restore.json" "restore $SN --count 4 -> 4 sandboxes in $RESTORE_MS ms (${CL[*]})" test "${#CL[@]}" = 4
WS=$(workers_of "${CL[@]}")
check "... spread over the 3 workers:$WS" test "$(uniq_words "$WS")" = "w1 w2 w3 "
fetch_bound "$SN" "${CL[@]}"
for s in "${CL[@]}"; do
  check_counts "clone $s" "$s" "$TAG" "$N0"
  check "clone $s: the 200 MiB in memory have md5 $BLOB" test "$(cx sandbox exec "$s" --timeout 60s -- sh -c 'md5sum /tmp/blob | cut -d" " -f1')" = "$BLOB"
  check "clone $s: the root diff (a new file, a deletion) and the mount's files" test "$(cx sandbox exec "$s" -- sh -c 'cat /etc/rootdiff /data/m /data/sub/f; test -e /etc/group && echo has-group')" = "in-root
mounted
deep"
done
if [ "${#CL[@]}" -lt 2 ]; then cluster_logs; cluster_down; finish; exit 1; fi
cx sandbox exec "${CL[0]}" -- sh -c 'echo only-here >/data/c0' || bad "writing in clone ${CL[0]}"
check "clones are independent (a file written in one is not in another)" test "$(cx sandbox exec "${CL[1]}" -- sh -c 'test -e /data/c0 && echo shared || echo apart')" = apart

# ---- re-snapshot of a clone ----
C1=$(counter "${CL[0]}")
snap "${CL[0]}"; SN2=$SNID
checkf "$T/snap.err" "snapshot of clone ${CL[0]} -> $SN2 ($SNAP_MS ms)" grep -qE '^sn-[0-9a-f]{16}$' <<<"$SN2"
cj J2 snapshot show "$SN2"
check "... its expires_at equals its parent's ($(jget "$J2" "j.get('expires_at')") = $EXP)" test "$(jget "$J2" "j.get('expires_at')")" = "$EXP"
[ "$(jget "$J2" "j.get('parent', '')")" = "$SN" ] || echo "# NOTE: snapshot show $SN2 gives parent '$(jget "$J2" "j.get('parent', '')")' (agreement: $SN)"
for s in "${CL[@]:1}"; do cx sandbox terminate "$s" >/dev/null 2>&1 || bad "terminate $s"; done
chunks_tool && chunks_all >"$T/chunks.pre"
restore "$SN2" --count 6; D=("${IDS[@]}")
checkf "$T/restore.json" "restore $SN2 --count 6 -> ${D[*]:-nothing} ($RESTORE_MS ms)" test "${#D[@]}" = 6
WS=$(workers_of "${D[@]}")
check "... on the 3 workers:$WS" test "$(uniq_words "$WS")" = "w1 w2 w3 "
fetch_bound "$SN2" "${D[@]}"
[ "${#D[@]}" -ge 1 ] && check_counts "clone of the clone ${D[0]}" "${D[0]}" "$TAG" "${C1#* }"
for s in "${D[@]}"; do cx sandbox terminate "$s" >/dev/null 2>&1 || bad "terminate $s"; done

# ---- restore with one worker down ----
W3PID=$(cluster_pid w3)
kill -9 "$W3PID"
check "w3 (pid $W3PID) killed, declared dead" wait_for 20 "w3 dead" worker_dead w3
expect_fail 21 "w3" -- cx sandbox restore "$SN" --worker w3
restore "$SN" --count 2; E=("${IDS[@]}")
checkf "$T/restore.json" "restore $SN --count 2 with w3 down -> ${E[*]:-nothing} ($RESTORE_MS ms)" test "${#E[@]}" = 2
WS=$(workers_of "${E[@]}")
check "... on live workers:$WS" test -n "$WS" -a "${WS/w3/}" = "$WS"
[ "$(uniq_words "$WS")" = "w1 w2 " ] || echo "# NOTE: the 2 clones were not spread over w1 and w2:$WS"
for s in "${E[@]}"; do check_counts "clone $s (w3 down)" "$s" "$TAG" "$N0"; done
for s in "${E[@]}"; do cx sandbox terminate "$s" >/dev/null 2>&1 || bad "terminate $s"; done
cluster_restart w3 || bad "restart w3"
check "w3 alive again" wait_for 20 "w3 alive" worker_alive w3

# ---- expiry after 7 days ----
if chunks_tool; then
  chunks_all >"$T/chunks.1"
  # by (domain, chunk): a chunk of the image fetched by a worker that had no copy before is not new
  comm -13 <(cut -d' ' -f2- "$T/chunks.0" | LC_ALL=C sort -u) <(cut -d' ' -f2- "$T/chunks.1" | LC_ALL=C sort -u) >"$T/new"
  echo "# chunks: $(wc -l <"$T/chunks.0") before the snapshots, $(wc -l <"$T/chunks.1") now, $(wc -l <"$T/new") new distinct"
  check "the snapshots added chunks ($(wc -l <"$T/new"))" test -s "$T/new"
else
  C1N=$(chunk_counts); echo "# chunks now: $C1N"
fi
cj X admin clock advance 6d
checkf "$T/cj.err" "admin clock advance 6d" test "$CJ_RC" = 0
cj J snapshot show "$SN"
checkf "$T/cj.err" "after 6 days $SN is still there (snapshot show)" test "$CJ_RC:$(jget "$J" "j.get('state', 'ready')")" = 0:ready
cj X admin clock advance 86401
checkf "$T/cj.err" "admin clock advance 86401 (1d+1s)" test "$CJ_RC" = 0
expect_fail 5 "snapshot $SN expired on" -- cx sandbox restore "$SN"
expect_fail 5 "snapshot $SN2 expired on" -- cx sandbox restore "$SN2"
cj J snapshot show "$SN"
check "snapshot show $SN says expired" grep -q expired <<<"$J $(cat "$T/cj.err")"
if chunks_tool; then
  gone() { chunks_all | cut -d' ' -f2- | LC_ALL=C sort -u | comm -12 - "$T/new" >"$T/left"; [ ! -s "$T/left" ]; }
  t0=$(now_ms)
  check "every chunk of the expired snapshots left every worker" wait_for 60 "the snapshots' chunks collected" gone
  echo "# collected in $(( $(now_ms) - t0 )) ms; left: $(wc -l <"$T/left")"
  chunks_all >"$T/chunks.2"
  if [ -s "$T/left" ]; then
    echo "# chunks left, by worker: $(grep -F -f "$T/left" "$T/chunks.2" | cut -d' ' -f1 | sort | uniq -c | tr -s ' \n' ' ')"
    grep -iE 'collect|delete-chunks|expired' "$CL_DIR/logs/coordinator.log" | tail -n 8 | sed 's/^/#   /'
  fi
  check "the chunks that were there before stay ($(wc -l <"$T/chunks.0"))" test -z "$(comm -23 "$T/chunks.0" "$T/chunks.2")"
else
  back() { [ "$(chunk_counts)" = "$C0" ]; }
  check "chunk counts back to before the snapshots ($C0)" wait_for 60 "chunk counts back" back
  echo "# chunk counts now: $(chunk_counts)"
fi

# ---- the end ----
check "$P (never snapshotted) is still running" alive_sb "$P"
cx sandbox terminate "$P" >/dev/null 2>&1 || bad "terminate $P"
cj S sandbox ls
check "no sandbox left running" test "$(jget "$S" "len(j['sandboxes'])")" = 0
if [ "$FAILED" -gt 0 ]; then cluster_logs; fi
cluster_down
echo "# test ran $(( ($(now_ms) - T_START) / 1000 )) s"
finish
