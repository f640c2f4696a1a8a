#!/usr/bin/env bash
# Retention of directory and filesystem snapshots and garbage collection of their chunks, on a real
# 3-worker cluster started with --test-clock (the coordinator's clock is moved with `cairn admin clock
# advance`; docs/internals/snapshots.md "Retention and garbage collection"):
#   day 0   dir snapshots A, B, C (same tree: they share every chunk), T (--ttl 2d), Y and X (X = Y's two
#           shared files plus one of its own), filesystem snapshots F (never expires) and F10 (--ttl 10d);
#           A..C, X, Y: retention sliding:2592000 (30 days), T ttl:172800, F never;
#   day 1   T mounts (a use, which does not extend a fixed TTL);
#   day 2   T: mount refused, ENOTFOUND "image ... expired on ...";
#   day 29  A, B, Y mounted (uses: their expiry moves to day 59); F10 expired (sandbox create refused);
#   day 58  A still ready (image show is not a use); C and X expired 28 days ago: mount and sandbox create
#           refused; X's own chunks disappear from every worker (cairn-store chunks on each data dir,
#           polled) while Y's chunks and the chunks C shares with A and B stay; B and Y used again;
#   day 60  A expired (a use on day 29 kept it alive to day 59, not longer); B still mounts; a fresh
#           worker w4 (holds none of Y's chunks) mounts Y with the right content;
#   day 400 the filesystem snapshot F still makes a working sandbox.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/cluster.sh"
source "$(dirname "$0")/lib/snap.sh"

if ! command -v runsc >/dev/null 2>&1; then
  echo "# runsc is not installed: sandboxes cannot run here"
  bad "runsc missing"; finish; exit 1
fi
T_START=$(now_ms)
cluster_up retention --workers 3 --test-clock --default-image busybox || { bad "cluster up"; finish; exit 1; }
stop() { if [ "$FAILED" -gt 0 ]; then cluster_logs; fi; cluster_down; finish; exit $?; }

DAY=0
NOW=0
advance() { # N: advance the clock by N days; NOW = the coordinator's new clock (ns)
  local j
  cj j admin clock advance "${1}d"
  if [ "$CJ_RC" -ne 0 ]; then bad "admin clock advance ${1}d: exit $CJ_RC: $j $(cat "$T/cj.err")"; return 1; fi
  NOW=$(jget "$j" "j['now']")
  DAY=$((DAY + $1))
  echo "# ---- day $DAY (clock $NOW)"
}
MOUNTN=0
use() { # SB IMAGE: mount IMAGE at a fresh path in SB; exit status of the mount
  MOUNTN=$((MOUNTN + 1))
  sb_mount "$1" "/use$MOUNTN" "$2"
}
DAYS=86400000000000 # ns
x_held() { # how many of X's own chunks the workers hold (copies counted); fails when a listing fails
  local w n=0
  for w in w1 w2 w3; do
    chunks_of "$w" >"$T/held.$w" && [ -s "$T/held.$w" ] || return 1
    n=$((n + $(LC_ALL=C comm -12 "$T/held.$w" "$T/x.chunks" | wc -l)))
  done
  echo "$n"
}
x_gone() { [ "$(x_held)" = 0 ]; }

# ---- day 0 ----
SA=$(sb_create --worker w1)
check "sandbox on w1 ($SA)" grep -qE '^sb-[0-9a-f]{16}$' <<<"$SA"
[ -n "$SA" ] || { cat "$T/create.err"; stop; }
SB=$(sb_create --worker w2)
check "sandbox on w2 ($SB)" grep -qE '^sb-[0-9a-f]{16}$' <<<"$SB"

sb_mount "$SA" /m || bad "mount /m: $(cat "$T/mount.err")"
write_tree "$SA" /m abc 1 || bad "writing /m"
chunks_all "$T/l0" || bad "listing chunks"
A=$(sb_snapdir "$SA" /m); B=$(sb_snapdir "$SA" /m); C=$(sb_snapdir "$SA" /m)
check "dir snapshots A B C ($A $B $C)" test -n "$A" -a -n "$B" -a -n "$C"
chunks_all "$T/l1" || bad "listing chunks"
comm -13 "$T/l0" "$T/l1" >"$T/abc.chunks"
echo "# A, B, C: $(wc -l <"$T/abc.chunks") chunks"
check "A: sliding 30 days" test "$(img_field "$A" retention)" = sliding:2592000
A_EXP0=$(img_field "$A" expires_at)
A_CRE=$(img_field "$A" created_at)
check "A: expires 30 days after its creation" test -n "$A_EXP0" -a "$(( (${A_EXP0:-0} - ${A_CRE:-0}) / DAYS ))" = 30

sb_mount "$SA" /t || bad "mount /t"
sx "$SA" 'echo fixed >/t/f' || bad "writing /t"
TT=$(sb_snapdir "$SA" /t --ttl 2d)
check "dir snapshot with --ttl 2d ($TT): retention ttl:172800" test "$(img_field "$TT" retention)" = ttl:172800
TT_EXP=$(img_field "$TT" expires_at)

sx "$SA" 'echo fs-snapshot >/fsmarker' || bad "writing /fsmarker"
F=$(cx sandbox snapshot-fs "$SA" 2>"$T/fs.err" | tail -n1) || true
check "filesystem snapshot F ($F): retention never, no expiry" test "$(img_field "$F" retention)/$(img_field "$F" expires_at)" = never/
F10=$(cx sandbox snapshot-fs "$SA" --ttl 10d 2>"$T/fs.err" | tail -n1) || true
check "filesystem snapshot F10 with --ttl 10d ($F10)" test "$(img_field "$F10" retention)" = ttl:864000

# Y: two shared files and one of its own; X: the same two shared files (copied) and one of its own
sb_mount "$SA" /y || bad "mount /y"
sx "$SA" 'head -c 1048576 /dev/urandom >/y/s1 && head -c 1048576 /dev/urandom >/y/s2 && head -c 1048576 /dev/urandom >/y/q' ||
  bad "writing /y"
YD=$(tree_digest "$SA" /y || true)
chunks_all "$T/l2" || bad "listing chunks"
Y=$(sb_snapdir "$SA" /y)
chunks_all "$T/l3" || bad "listing chunks"
comm -13 "$T/l2" "$T/l3" >"$T/y.chunks"
sb_mount "$SA" /x || bad "mount /x"
sx "$SA" 'cp /y/s1 /y/s2 /x/ && head -c 1048576 /dev/urandom >/x/p' || bad "writing /x"
X=$(sb_snapdir "$SA" /x)
chunks_all "$T/l4" || bad "listing chunks"
comm -13 "$T/l3" "$T/l4" >"$T/x.chunks"
NY=$(wc -l <"$T/y.chunks"); NX=$(wc -l <"$T/x.chunks")
check "Y ($Y, $NY new chunks) and X ($X, $NX new chunks)" test -n "$Y" -a -n "$X" -a "$NY" -gt 0 -a "$NX" -gt 0
check "... X shares Y's files: it stored well under its size ($NX < $NY * 2/3)" test "$NX" -lt $((NY * 2 / 3))
for w in w1 w2 w3; do chunks_of "$w" | LC_ALL=C comm -12 - "$T/y.chunks" >"$T/y.$w"; done
for w in w1 w2 w3; do chunks_of "$w" | LC_ALL=C comm -12 - "$T/abc.chunks" >"$T/abc.$w"; done

# ---- day 1, 2: fixed TTL ----
advance 1
use "$SB" "$TT" || bad "mount T on day 1: $(cat "$T/mount.err")"
ok "T mounts on day 1"
check "... a use does not move a fixed expiry" test "$(img_field "$TT" expires_at)" = "$TT_EXP"
advance 1
expect_fail 5 "image $TT expired on" -- cx sandbox mount "$SB" /tt "$TT"
expect_fail 5 "expired" -- cx sandbox create --image "$TT"

# ---- day 29: uses ----
advance 27
for i in "$A" "$B" "$Y"; do
  rc=0; use "$SB" "$i" || rc=$?
  check "mount $i on day 29 ($rc: $(head -c 200 "$T/mount.err"))" test "$rc" = 0
done
A_EXP=$(img_field "$A" expires_at)
check "A's expiry moved by the use: day 59 ($(( (${A_EXP:-0} - ${A_CRE:-0}) / DAYS )))" test "$(( (${A_EXP:-0} - ${A_CRE:-0} + DAYS / 2) / DAYS ))" = 59
check "... last_used_at set" test -n "$(img_field "$A" last_used_at)"
expect_fail 5 "expired" -- cx sandbox create --image "$F10"
check "X (expires on day 30) still has its chunks on day 29 ($(x_held) copies of $NX)" test "$(x_held)" -ge "$NX"

# ---- day 58 ----
advance 29
cj J image show "$A"
check "A is still there on day 58: image show works ($CJ_RC) and its expiry is ahead (image show is not a use)" \
  test "$CJ_RC" = 0 -a "$(jget "$J" "j['expires_at']")" -gt "${NOW:-0}"
check "... unmoved by image show" test "$(jget "$J" "j['expires_at']")" = "$A_EXP"
expect_fail 5 "image $C expired on" -- cx sandbox mount "$SB" /c "$C"
expect_fail 5 "image $C expired on" -- cx sandbox create --image "$C"
expect_fail 5 "image $X expired on" -- cx sandbox mount "$SB" /xx "$X"
# X's own chunks are collected from every worker; Y's and A/B/C's stay
t0=$(now_ms); rc=0
wait_for 60 "X's chunks to be collected" x_gone || rc=$?
check "X's $NX own chunks are gone from every worker (after $(( $(now_ms) - t0 )) ms)" test "$rc" = 0
for w in w1 w2 w3; do
  chunks_of "$w" | LC_ALL=C comm -12 - "$T/y.chunks" >"$T/y.$w.after"
  # (a worker may hold more now: mounting fetches chunks from peers into its store)
  check "$w keeps all $(wc -l <"$T/y.$w") of Y's chunks it held ($(comm -23 "$T/y.$w" "$T/y.$w.after" | wc -l) lost)" \
    test "$(comm -23 "$T/y.$w" "$T/y.$w.after" | wc -l)" = 0
  chunks_of "$w" | LC_ALL=C comm -12 - "$T/abc.chunks" >"$T/abc.$w.after"
  check "$w keeps the $(wc -l <"$T/abc.$w") chunks C shares with the live A and B ($(comm -23 "$T/abc.$w" "$T/abc.$w.after" | wc -l) lost)" \
    test "$(comm -23 "$T/abc.$w" "$T/abc.$w.after" | wc -l)" = 0
done
for i in "$B" "$Y"; do
  rc=0; use "$SB" "$i" || rc=$?
  check "mount $i on day 58 ($rc)" test "$rc" = 0
done

# ---- day 60 ----
advance 2
expect_fail 5 "image $A expired on" -- cx sandbox mount "$SB" /a "$A"
rc=0; use "$SB" "$B" || rc=$?
check "B (used on day 58) still mounts on day 60 ($rc)" test "$rc" = 0
# a fresh worker holds none of Y's chunks: it fetches them from its peers
rc=0
"$CL_SCRIPT" up --dir "$CL_DIR" --workers 4 --no-default-image >"$T/up4.out" 2>"$T/up4.err" || rc=$?
check "a fourth worker joins ($rc: $(tail -n2 "$T/up4.err"))" test "$rc" = 0
check "... holding none of Y's chunks" test "$(chunks_of w4 2>/dev/null | LC_ALL=C comm -12 - "$T/y.chunks" | wc -l)" = 0
SD=$(sb_create --worker w4)
check "sandbox on w4 ($SD: $(head -c 200 "$T/create.err"))" grep -qE '^sb-' <<<"$SD"
rc=0; sb_mount "$SD" /y "$Y" || rc=$?
check "Y mounts on w4 ($rc: $(head -c 200 "$T/mount.err"))" test "$rc" = 0
check "... with Y's content" test "$(tree_digest "$SD" /y || true)" = "$YD"

# ---- day 400 ----
advance 340
SF=$(sb_create --worker w3 --image "$F")
check "the filesystem snapshot F makes a sandbox on day 400 ($SF: $(head -c 200 "$T/create.err"))" grep -qE '^sb-' <<<"$SF"
check "... with its files" test "$(sx "$SF" 'cat /fsmarker' 2>/dev/null)" = fs-snapshot
check "F: still no expiry" test "$(img_field "$F" expires_at)" = ""

for s in "$SA" "$SB" "$SD" "$SF"; do [ -n "$s" ] && { cx sandbox terminate "$s" >/dev/null || bad "terminate $s"; }; done
echo "# test_retention took $(( ($(now_ms) - T_START) / 1000 )) s"
stop
