#!/usr/bin/env bash
# Filesystem snapshots chained through sandboxes on a real 3-worker cluster (runsc, busybox default
# image; docs/internals/sandboxes.md):
#   (a) persisting sandbox state: exec writes state in a sandbox on w1, snapshot-fs, terminate, a
#       sandbox created from the im-... on another worker (--worker) reads the same state;
#   (b) a snapshot of a sandbox whose image is itself a snapshot: deletions across layers (a file of
#       the layer below, a file of the base deleted below and created again, a directory replaced by
#       a new one = opaque), depth 3, read back on a third worker;
#   (c) 50 chained steps of exec -> snapshot-fs -> terminate -> create (on w1, w2, w3 in turn, so each
#       step fetches the new layer from a peer): each step appends a line to a
#       file and deletes the previous step's marker; at the end the file has 50 lines and only the last
#       marker exists; past depth 15 the coordinator flattens, so `image show` depth stays <= 15;
#   (d) `local-cluster.sh down` with a sandbox still running leaves nothing behind: no runsc process
#       of this cluster (by the --root path in its command line), no mount below the cluster dir, no
#       cgroup dir named in a sandbox bundle's config.json (nor its parent).
# Every sandbox is terminated except the one (d) leaves running on purpose.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/cluster.sh"

if ! command -v runsc >/dev/null 2>&1; then
  echo "# runsc is not installed: sandboxes cannot run here"
  bad "runsc missing"; finish; exit 1
fi

T_START=$(now_ms)
cluster_up chain --workers 3 --default-image busybox || { bad "cluster up"; finish; exit 1; }
cx() { "$CAIRN" "$@" </dev/null; } # the CLI without our stdin

# cgroup paths of every sandbox bundle seen (collected while they exist; checked after `down`)
CGPATHS=$T/cgpaths
: >"$CGPATHS"
note_cgroups() {
  local f
  for f in "$CL_DIR"/data/w*/runtime/sandboxes/*/bundle/config.json; do
    [ -f "$f" ] || continue
    python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["linux"].get("cgroupsPath",""); print(p) if p else None' "$f" >>"$CGPATHS" 2>/dev/null || true
  done
  sort -u -o "$CGPATHS" "$CGPATHS"
}

# create [--worker W] [--image I] -> prints sb-...; "" on failure (stderr kept in $T/create.err)
create() { cx sandbox create "$@" 2>"$T/create.err" | tail -n1 || true; }
snap() { cx sandbox snapshot-fs "$1" 2>"$T/snap.err" | tail -n1 || true; }
worker_of() { local s; cj s sandbox ls; jget "$s" "[x['worker'] for x in j['sandboxes'] if x['id'] == '$1'][0]"; }
img_field() { local i; cj i image show "$1"; jget "$i" "j.get('$2', '')"; }
def_id() { local l; cj l image ls; jget "$l" "[i['id'] for i in j['images'] if i.get('name') == 'default'][0]"; }

# ---- (a) persisting sandbox state across workers ----
SA=$(create --worker w1)
check "create on w1 ($SA)" grep -qE '^sb-[0-9a-f]{16}$' <<<"$SA"
[ -n "$SA" ] || { cat "$T/create.err"; cluster_logs; cluster_down; finish; exit 1; }
check "... it runs on w1" test "$(worker_of "$SA")" = w1
note_cgroups
cx sandbox exec "$SA" -- sh -c 'mkdir -p /data/d && echo state-1 >/data/state && echo a >/data/d/a && echo b >/data/d/b && rm /etc/group' ||
  bad "exec writing state in $SA"
IA=$(snap "$SA")
check "snapshot-fs of $SA ($IA)" grep -qE '^im-[0-9a-f]{16}$' <<<"$IA"
cj X sandbox terminate "$SA"
check "terminate $SA" test "$CJ_RC" = 0
SB=$(create --worker w2 --image "$IA")
check "create from $IA on w2 ($SB)" grep -qE '^sb-[0-9a-f]{16}$' <<<"$SB"
check "... it runs on w2" test "$(worker_of "$SB")" = w2
note_cgroups
check "... and reads the state written on w1" test "$(cx sandbox exec "$SB" -- cat /data/state /data/d/a /data/d/b)" = "state-1
a
b"
check "... the deletion holds" test "$(cx sandbox exec "$SB" -- sh -c 'test -e /etc/group && echo present || echo gone')" = gone

# ---- (b) a snapshot of a sandbox whose image is a snapshot ----
cx sandbox exec "$SB" -- sh -c 'rm /data/state && echo back >/etc/group && rm -r /data/d && mkdir /data/d && echo c >/data/d/c && echo layer2 >/l2' ||
  bad "exec changing state in $SB"
IB=$(snap "$SB")
check "snapshot-fs of a sandbox of a snapshot ($IB)" grep -qE '^im-[0-9a-f]{16}$' <<<"$IB"
check "... its parent is $IA" test "$(img_field "$IB" parent)" = "$IA"
check "... whose parent is the default image (depth 3)" test "$(img_field "$IA" parent)" = "$(def_id)"
SC=$(create --worker w3 --image "$IB")
check "create from $IB on w3 ($SC)" grep -qE '^sb-[0-9a-f]{16}$' <<<"$SC"
note_cgroups
check "... a file of the layer below, deleted, is gone" test "$(cx sandbox exec "$SC" -- sh -c 'test -e /data/state && echo present || echo gone')" = gone
check "... a base file deleted below and created again is back" test "$(cx sandbox exec "$SC" -- cat /etc/group)" = back
check "... a replaced directory holds only its new entries" test "$(cx sandbox exec "$SC" -- sh -c 'ls /data/d')" = c
check "... new files are there" test "$(cx sandbox exec "$SC" -- cat /l2 /data/d/c)" = "layer2
c"
check "... the base is intact" test "$(cx sandbox exec "$SC" -- sh -c 'test -x /bin/busybox && grep -c root /etc/passwd')" = 1
check "... and $SB still sees its own state" test "$(cx sandbox exec "$SB" -- cat /l2)" = layer2
for s in "$SB" "$SC"; do cx sandbox terminate "$s" >/dev/null || bad "terminate $s"; done

# ---- (c) a chain of 50 snapshot -> create steps ----
STEPS=${CHAIN_STEPS:-50}
S=$(create)
[ -n "$S" ] || { cat "$T/create.err"; bad "chain: first create"; }
declare -A DEPTH
DEF=$(def_id); [ -n "$DEF" ] && DEPTH[$DEF]=1
MAXD=0; FLAT=0; FAILS=0; t0=$(now_ms); WS=""
for i in $(seq 1 "$STEPS"); do
  if ! cx sandbox exec "$S" -- sh -c "echo line-$i >>/chain && rm -f /marker-$((i - 1)) && touch /marker-$i"; then
    bad "chain step $i: exec in $S"; FAILS=1; break
  fi
  I=$(snap "$S")
  if ! grep -qE '^im-[0-9a-f]{16}$' <<<"$I"; then bad "chain step $i: snapshot-fs of $S: $(cat "$T/snap.err")"; FAILS=1; break; fi
  # `image show --json` carries no depth: it follows from the parent links (a flattened image has
  # none, so depth 1), each parent being the previous step's image
  cj J image show "$I"
  par=$(jget "$J" "j.get('parent', '')")
  if [ -z "$par" ]; then d=1; else d=$(( ${DEPTH[$par]:-98} + 1 )); fi
  DEPTH[$I]=$d
  [ "${d:-99}" -gt "$MAXD" ] && MAXD=${d:-99}
  [ "$d" = 1 ] && FLAT=$((FLAT + 1))
  cx sandbox terminate "$S" >/dev/null || bad "chain step $i: terminate $S"
  S=$(create --image "$I" --worker "w$(( i % 3 + 1 ))") # each step on the next worker: layers fetched from peers
  if [ -z "$S" ]; then bad "chain step $i: create from $I (depth $d): $(cat "$T/create.err")"; FAILS=1; break; fi
  WS="$WS $(worker_of "$S")"
  [ $((i % 10)) = 0 ] && { note_cgroups; echo "# chain step $i: depth $d, $(( $(now_ms) - t0 )) ms so far"; }
done
echo "# chain of $STEPS steps in $(( $(now_ms) - t0 )) ms; workers used:$(tr ' ' '\n' <<<"$WS" | sort | uniq -c | tr -s ' \n' ' ')"
if [ "$FAILS" = 0 ]; then
  check "after $STEPS steps the file has $STEPS lines" test "$(cx sandbox exec "$S" -- wc -l /chain | awk '{print $1}')" = "$STEPS"
  check "... in order" test "$(cx sandbox exec "$S" -- sh -c 'head -n1 /chain; tail -n1 /chain')" = "line-1
line-$STEPS"
  check "... and only the last marker exists" test "$(cx sandbox exec "$S" -- sh -c 'ls / | grep marker')" = "marker-$STEPS"
  check "depth stayed bounded (max $MAXD <= 15)" test "$MAXD" -le 15
  check "... by flattening ($FLAT flattened images)" test "$FLAT" -ge 1
fi
[ -n "$S" ] && { cx sandbox terminate "$S" >/dev/null || bad "terminate $S"; }
cj L sandbox ls
check "every sandbox terminated" test "$(jget "$L" "len(j['sandboxes'])")" = 0

# ---- (d) down with a sandbox still running ----
SD=$(create --worker w2)
check "a sandbox left running for down ($SD)" grep -qE '^sb-[0-9a-f]{16}$' <<<"$SD"
note_cgroups
check "... it answers" test "$(cx sandbox exec "$SD" -- echo up)" = up
[ "$FAILED" -eq 0 ] || cluster_logs
cluster_down

left_runsc() { # pids whose command line names a runsc root of this cluster
  local p
  for p in /proc/[0-9]*; do
    if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$CL_DIR/data/"; then echo "${p#/proc/}"; fi
  done
  return 0
}
left_mounts() { awk -v d="$CL_DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo; }
cg_roots() { awk '$3 == "cgroup" || $3 == "cgroup2" {print $2}' /proc/self/mounts; }
left_cgroups() {
  local r p
  for r in $(cg_roots); do
    while read -r p; do
      [ -n "$p" ] || continue
      if [ -d "$r$p" ]; then echo "$r$p"; fi
      if [ -d "$r$(dirname "$p")" ]; then echo "$r$(dirname "$p")"; fi
    done <"$CGPATHS"
  done | sort -u
  return 0
}
sleep 0.5
P=$(left_runsc)
check "down left no process of this cluster's runsc roots${P:+ (left: $(echo $P))}" test -z "$P"
M=$(left_mounts)
check "down left no mount below $CL_DIR${M:+ (left: $(echo $M))}" test -z "$M"
check "bundles named $(wc -l <"$CGPATHS") cgroup paths" test "$(wc -l <"$CGPATHS")" -ge 1
G=$(left_cgroups)
check "down left no cgroup dir of them${G:+ (left: $(echo $G))}" test -z "$G"
if rm -rf "$CL_DIR" 2>"$T/rm.err"; then ok "rm -rf of the cluster dir works"; else bad "rm -rf $CL_DIR: $(head -c 300 "$T/rm.err")"; fi
# leave nothing behind even when down failed us (by pid and by path)
for p in $P; do kill -9 "$p" 2>/dev/null || true; done
for m in $(left_mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
echo "# test ran $(( ($(now_ms) - T_START) / 1000 )) s"
finish
