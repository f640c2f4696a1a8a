#!/usr/bin/env bash
# Customer-supplied encryption keys (CSEK) end to end on a real 3-worker cluster (runsc, busybox default
# image; docs/internals/snapshots.md, the CSEK seed, DESIGN §3):
#   - round trip: a 32-byte key from /dev/urandom in a file; snapshot-dir --key-file makes a `csek` image;
#     it mounts on another worker with the same key (same tree), is listed as a CSEK mount;
#   - refusals, each with its own message and exit code, and nothing changed (no mount in `sandbox ls
#     --json`, the path not created in the sandbox, no image made): wrong key (EKEY), no key (EKEY), 15-byte,
#     513-byte and empty keys (EINVAL, cairn_csek_validate's messages), a key file that does not exist, a key
#     for a managed image (EINVAL), a CSEK image as a sandbox's root image (EUNSUPPORTED); the bad-size keys
#     refused by snapshot-dir too;
#   - 16- and 512-byte keys (the limits) work;
#   - re-snapshot of the mounted CSEK directory: with the same key a CSEK image in the same encryption
#     domain whose unchanged chunks are not stored again (cairn-store chunks on every worker: no new
#     domain, few new chunks); with another key a new domain and only that key mounts it; without a key a
#     managed image that mounts without a key;
#   - CSEK layers stay out of the shared layer cache, and DATA_DIR/private is empty once the sandboxes
#     are gone;
#   - finally every file under the cluster dir (coordinator and worker data dirs with their RocksDB
#     files, configs, logs; no core files) and every file this test wrote, is searched for every key
#     used, raw and in hex (lower and upper case) and base64, whole and by its first and last 16 bytes:
#     nothing found.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/cluster.sh"
source "$(dirname "$0")/lib/snap.sh"

if ! command -v runsc >/dev/null 2>&1; then
  echo "# runsc is not installed: sandboxes cannot run here"
  bad "runsc missing"; finish; exit 1
fi
T_START=$(now_ms)
cluster_up csek --workers 3 --default-image busybox || { bad "cluster up"; finish; exit 1; }
stop() { if [ "$FAILED" -gt 0 ]; then cluster_logs; fi; cluster_down; finish; exit $?; }

KEYS=$T/keys
mkdir -p "$KEYS" && chmod 700 "$KEYS"
head -c 32 /dev/urandom >"$KEYS/k1"
head -c 32 /dev/urandom >"$KEYS/wrong"
head -c 32 /dev/urandom >"$KEYS/k3"
head -c 16 /dev/urandom >"$KEYS/k16"
head -c 512 /dev/urandom >"$KEYS/k512"
head -c 15 /dev/urandom >"$KEYS/k15"
head -c 513 /dev/urandom >"$KEYS/k513"
: >"$KEYS/empty"

# expect_fail_nz NEEDLE -- cmd... : cmd must fail (any non-zero exit) and say NEEDLE on stderr
expect_fail_nz() {
  local needle=$1; shift 2
  local out rc=0
  out=$("$@" 2>&1 >/dev/null) || rc=$?
  if [ "$rc" -ne 0 ] && grep -qiF -- "$needle" <<<"$out"; then ok "refused ($rc): $needle"; else bad "expected a failure with '$needle', got $rc: $out"; fi
}

# ---- round trip ----
SA=$(sb_create --worker w1)
check "sandbox on w1 ($SA)" grep -qE '^sb-[0-9a-f]{16}$' <<<"$SA"
[ -n "$SA" ] || { cat "$T/create.err"; stop; }
rc=0; sb_mount "$SA" /secret || rc=$?
check "mount an empty dir at /secret ($rc: $(head -c 300 "$T/mount.err"))" test "$rc" = 0
write_tree "$SA" /secret csek 3 || bad "writing the tree"
D1=$(tree_digest "$SA" /secret || true)
chunks_all "$T/c0" || bad "listing chunks"
N0=$(img_count)
IMG=$(sb_snapdir "$SA" /secret --key-file "$KEYS/k1")
check "snapshot-dir --key-file (32 bytes) ($IMG: $(head -c 300 "$T/snapdir.err"))" grep -qE '^im-[0-9a-f]{16}$' <<<"$IMG"
check "... a csek dir image" test "$(img_field "$IMG" kind)/$(img_field "$IMG" encryption)" = dir/csek
check "... image show says nothing of its data key" lacks "$(cx --json image show "$IMG")" dek
chunks_all "$T/c1" || bad "listing chunks"
comm -13 <(domains_of "$T/c0") <(domains_of "$T/c1") >"$T/d1"
check "... its chunks are in one new encryption domain ($(tr '\n' ' ' <"$T/d1"))" test "$(wc -l <"$T/d1")" = 1
DOM1=$(head -n1 "$T/d1")
N1=$(grep -c "^$DOM1 " "$T/c1" || true)
echo "# $N1 chunks in the CSEK domain"

SB=$(sb_create --worker w2)
W=$(sb_worker "$SB"); check "sandbox on w2 ($SB on $W)" test "$W" = w2
rc=0; sb_mount "$SB" /s "$IMG" --key-file "$KEYS/k1" || rc=$?
check "mount it on w2 with the same key ($rc: $(head -c 300 "$T/mount.err"))" test "$rc" = 0
check "... the same tree" test "$(tree_digest "$SB" /s || true)" = "$D1"
check "... listed as a CSEK mount" test "$(sb_mounts "$SB")" = "/s $IMG csek"
check "... not in w2's shared layer cache" lacks "$(ls -a "$CL_DIR/data/w2/layers" 2>/dev/null)" "$IMG"
check "... but under DATA_DIR/private" test -n "$(find "$CL_DIR/data/w2/private" -mindepth 1 -maxdepth 3 2>/dev/null | head -n1)"

# ---- refusals: each its own message, nothing changed ----
M0=$(sb_mounts "$SB")
expect_fail 8 "wrong encryption key for image $IMG" -- cx sandbox mount "$SB" /w "$IMG" --key-file "$KEYS/wrong"
expect_fail 8 "image $IMG is encrypted with a customer-supplied key: pass the same key (--key-file)" -- cx sandbox mount "$SB" /w "$IMG"
expect_fail 1 "encryption key is too short: 15 bytes (at least 16)" -- cx sandbox mount "$SB" /w "$IMG" --key-file "$KEYS/k15"
expect_fail 1 "encryption key is too long: 513 bytes (at most 512)" -- cx sandbox mount "$SB" /w "$IMG" --key-file "$KEYS/k513"
expect_fail 1 "encryption key is empty" -- cx sandbox mount "$SB" /w "$IMG" --key-file "$KEYS/empty"
expect_fail_nz "$KEYS/absent" -- cx sandbox mount "$SB" /w "$IMG" --key-file "$KEYS/absent"
cj J sandbox mount "$SB" /w "$IMG" --key-file "$KEYS/wrong"
check "wrong key with --json: EKEY" test "$(jget "$J" "j['error']['name']")" = EKEY
check "no mount appeared (sandbox ls --json)" test "$(sb_mounts "$SB")" = "$M0"
check "... /w was not created in the sandbox" test "$(sx "$SB" 'test -e /w && echo present || echo absent')" = absent
check "... the CSEK mount still reads" test "$(sx "$SB" 'cat /s/small-2.txt')" = "csek file 2"
expect_fail 11 "image $IMG is encrypted with a customer-supplied key: mount it into a running sandbox with its key" -- cx sandbox create --image "$IMG"
N2=$(img_count)
expect_fail 1 "encryption key is too short: 15 bytes (at least 16)" -- cx sandbox snapshot-dir "$SB" /s --key-file "$KEYS/k15"
expect_fail 1 "encryption key is too long: 513 bytes (at most 512)" -- cx sandbox snapshot-dir "$SB" /s --key-file "$KEYS/k513"
expect_fail 1 "encryption key is empty" -- cx sandbox snapshot-dir "$SB" /s --key-file "$KEYS/empty"
check "no image was made by the refused snapshot-dirs" test "$(img_count)" = "$N2"

# ---- the key size limits ----
rc=0; sb_mount "$SA" /tiny || rc=$?
sx "$SA" 'echo tiny >/tiny/t' || bad "writing /tiny"
I16=$(sb_snapdir "$SA" /tiny --key-file "$KEYS/k16")
I512=$(sb_snapdir "$SA" /tiny --key-file "$KEYS/k512")
check "snapshot-dir with a 16-byte and a 512-byte key ($I16, $I512)" test -n "$I16" -a -n "$I512"
rc=0; sb_mount "$SB" /t16 "$I16" --key-file "$KEYS/k16" || rc=$?
rc2=0; sb_mount "$SB" /t512 "$I512" --key-file "$KEYS/k512" || rc2=$?
check "... both mount with their keys ($rc, $rc2)" test "$(sx "$SB" 'cat /t16/t /t512/t')" = "tiny
tiny"
expect_fail 8 "wrong encryption key for image $I512" -- cx sandbox mount "$SB" /w "$I512" --key-file "$KEYS/k16"

# ---- re-snapshot with the same key: same domain, unchanged chunks not stored again ----
sx "$SB" 'echo edited >/s/small-1.txt && echo added >/s/added.txt' || bad "changing /s"
D2=$(tree_digest "$SB" /s || true)
chunks_all "$T/c2a" || bad "listing chunks"
IS=$(sb_snapdir "$SB" /s --key-file "$KEYS/k1")
check "re-snapshot with the same key ($IS: $(head -c 300 "$T/snapdir.err"))" grep -qE '^im-[0-9a-f]{16}$' <<<"$IS"
check "... a csek image" test "$(img_field "$IS" encryption)" = csek
chunks_all "$T/c2" || bad "listing chunks"
check "... no new encryption domain" test "$(domains_of "$T/c2")" = "$(domains_of "$T/c2a")"
NEW=$(( $(grep -c "^$DOM1 " "$T/c2" || true) - $(grep -c "^$DOM1 " "$T/c2a" || true) ))
check "... only $NEW new chunks in the domain (of $N1: the unchanged ones dedup)" test "$NEW" -ge 1 -a "$NEW" -lt $((N1 / 3))
SC=$(sb_create --worker w3)
rc=0; sb_mount "$SC" /s2 "$IS" --key-file "$KEYS/k1" || rc=$?
check "... mounts on w3 with the same key ($rc) and has the changes" test "$(tree_digest "$SC" /s2 || true)" = "$D2"
expect_fail 8 "wrong encryption key for image $IS" -- cx sandbox mount "$SC" /w "$IS" --key-file "$KEYS/k3"

# ---- with another key: a new domain, only the new key mounts it ----
I3=$(sb_snapdir "$SB" /s --key-file "$KEYS/k3")
check "re-snapshot with another key ($I3)" grep -qE '^im-[0-9a-f]{16}$' <<<"$I3"
check "... a csek image" test "$(img_field "$I3" encryption)" = csek
chunks_all "$T/c3" || bad "listing chunks"
comm -13 <(domains_of "$T/c2") <(domains_of "$T/c3") >"$T/d3"
check "... in a new domain" test "$(wc -l <"$T/d3")" = 1
N3=$(grep -c "^$(head -n1 "$T/d3") " "$T/c3" || true)
check "... which holds the whole tree again ($N3 chunks)" test "$N3" -ge $((N1 * 2 / 3))
expect_fail 8 "wrong encryption key for image $I3" -- cx sandbox mount "$SC" /w "$I3" --key-file "$KEYS/k1"
rc=0; sb_mount "$SC" /s3 "$I3" --key-file "$KEYS/k3" || rc=$?
check "... mounts with the new key ($rc)" test "$(tree_digest "$SC" /s3 || true)" = "$D2"

# ---- without a key: managed ----
IM=$(sb_snapdir "$SB" /s)
check "re-snapshot without a key ($IM)" grep -qE '^im-[0-9a-f]{16}$' <<<"$IM"
check "... a managed image" test "$(img_field "$IM" encryption)" = managed
rc=0; sb_mount "$SC" /sm "$IM" || rc=$?
check "... mounts without a key ($rc)" test "$(tree_digest "$SC" /sm || true)" = "$D2"
check "... listed as managed" has "$(sb_mounts "$SC")" "/sm $IM managed"
expect_fail 1 "image $IM is not encrypted with a customer-supplied key; mount it without a key" -- cx sandbox mount "$SC" /w "$IM" --key-file "$KEYS/k1"

# ---- unmount and terminate clean the private dirs ----
rc=0; cx sandbox unmount "$SB" /s >/dev/null 2>&1 || rc=$?
check "unmount the CSEK mount ($rc)" test "$rc" = 0
for s in "$SA" "$SB" "$SC"; do [ -n "$s" ] && { cx sandbox terminate "$s" >/dev/null || bad "terminate $s"; }; done
check "no file left under any DATA_DIR/private" test "$(find "$CL_DIR"/data/w*/private -type f 2>/dev/null | wc -l)" = 0

# ---- no key anywhere: every file of every node, and the test's own output ----
if [ "$FAILED" -gt 0 ]; then cluster_logs; fi
cluster_down
check "no core files" test "$(find "$CL_DIR" -name 'core*' -type f | wc -l)" = 0
cat >"$T/scan.py" <<'PY'
import base64, os, sys
keys_dir, roots = sys.argv[1], sys.argv[2:]
pats = []
for name in sorted(os.listdir(keys_dir)):
    k = open(os.path.join(keys_dir, name), "rb").read()
    if len(k) < 16:
        continue  # the refused short keys were never sent anywhere
    for part, b in (("whole", k), ("first16", k[:16]), ("last16", k[-16:])):
        for form, p in (("raw", b), ("hex", b.hex().encode()), ("HEX", b.hex().upper().encode()),
                        ("base64", base64.b64encode(b).rstrip(b"="))):
            pats.append((f"{name}/{part}/{form}", p))
found, files, size = [], 0, 0
seen = set()
for root in roots:
    for dp, dns, fns in os.walk(root):
        if os.path.abspath(dp).startswith(os.path.abspath(keys_dir)):
            continue
        for fn in fns:
            p = os.path.join(dp, fn)
            if os.path.islink(p) or not os.path.isfile(p) or p in seen:
                continue
            seen.add(p)
            try:
                data = open(p, "rb").read()
            except OSError as e:
                print(f"cannot read {p}: {e}")
                continue
            files += 1
            size += len(data)
            for what, pat in pats:
                if pat in data:
                    found.append(f"{what} in {p}")
print(f"searched {files} files, {size} bytes, for {len(pats)} patterns")
for f in found:
    print("FOUND", f)
sys.exit(1 if found or files == 0 else 0)
PY
# the scanner finds what it looks for: a planted hex copy of k1 in a control dir
mkdir -p "$T/control" && { echo "log line"; python3 -c 'import sys; print("key=" + open(sys.argv[1], "rb").read().hex())' "$KEYS/k1"; } >"$T/control/planted.log"
rc=0; python3 "$T/scan.py" "$KEYS" "$T/control" >"$T/scan0.out" 2>&1 || rc=$?
check "the key scanner finds a planted hex key ($(grep -c FOUND "$T/scan0.out") hits)" test "$rc" = 1 -a "$(grep -c 'FOUND k1/whole/hex' "$T/scan0.out")" = 1
rm -rf "$T/control"
rc=0; python3 "$T/scan.py" "$KEYS" "$CL_DIR" "$T" >"$T/scan.out" 2>&1 || rc=$?
cat "$T/scan.out"
check "no key bytes (raw, hex, base64) in any data dir, RocksDB file, config, log or output" test "$rc" = 0
echo "# test_csek took $(( ($(now_ms) - T_START) / 1000 )) s"
finish
