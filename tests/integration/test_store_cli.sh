#!/usr/bin/env bash
# cairn-store end to end: init, capture a real tree, restore it exactly, list, verify, the chunk listing
# (`chunks`: one sorted "<domain> <chunk>" line per stored chunk, read-only), and the errors a user meets
# (bad store, unknown id, non-empty destination, corrupt chunk on disk).
source "$(dirname "$0")/lib/common.sh"
CS=$(bin cairn-store)
[ -x "$CS" ] || { echo "cairn-store not built"; exit 1; }

S=$T/store
SRC=$T/src
mkdir -p "$SRC/sub dir/deeper" "$SRC/empty"
head -c 3000000 /dev/urandom > "$SRC/random.bin"
seq 1 200000 > "$SRC/sub dir/numbers.txt"
printf 'hello\n' > "$SRC/sub dir/deeper/hello.txt"
ln -s "sub dir/deeper/hello.txt" "$SRC/link"
ln "$SRC/sub dir/numbers.txt" "$SRC/hardlink"
mkfifo "$SRC/fifo"
: > "$SRC/empty-file"
truncate -s 100M "$SRC/sparse"; printf 'tail' >> "$SRC/sparse"
chmod 0751 "$SRC/sub dir"; chmod 4755 "$SRC/random.bin"
setfattr -n user.note -v "kept" "$SRC/sub dir/numbers.txt" 2>/dev/null || true
touch -d '2001-02-03 04:05:06.123456789' "$SRC/sub dir/deeper/hello.txt"
cp -a /usr/share/doc "$SRC/doc" 2>/dev/null || true

check "init" "$CS" init "$S" --quiet
check "master key is 0600" test "$(stat -c %a "$S/master.key")" = 600
expect_fail 6 "already a cairn store" -- "$CS" init "$S"

ID=$("$CS" capture "$S" "$SRC" --quiet)
check "capture prints an id" grep -qE '^tr-[0-9a-f]{16}$' <<<"$ID"

"$CS" restore "$S" "$ID" "$T/out" --quiet
check "restored tree has identical metadata" diff <(tree_listing "$SRC") <(tree_listing "$T/out")
check "restored contents identical" diff -r --no-dereference -x fifo "$SRC" "$T/out"
check "hardlink kept" test "$(stat -c %i "$T/out/hardlink")" = "$(stat -c %i "$T/out/sub dir/numbers.txt")"
check "sparse file keeps its holes" test "$(stat -c %b "$T/out/sparse")" -lt 1000
if getfattr -n user.note "$SRC/sub dir/numbers.txt" >/dev/null 2>&1; then
  check "xattr kept" test "$(getfattr --absolute-names --only-values -n user.note "$T/out/sub dir/numbers.txt")" = kept
fi

# second capture of the same tree stores (almost) nothing new
J=$("$CS" capture "$S" "$SRC" --json)
check "second capture dedups every data chunk" python3 -c '
import json,sys; j=json.loads(sys.argv[1]); sys.exit(0 if j["chunks_new"] <= 1 and j["chunks"] > 10 else 1)' "$J"

check "ls lists both snapshots" test "$("$CS" ls "$S" | wc -l)" = 2
check "ls --json parses" python3 -c 'import json,sys; j=json.load(sys.stdin); assert len(j["snapshots"])==2' < <("$CS" ls "$S" --json)
check "verify passes" "$CS" verify "$S" --quiet

# chunks: exactly the stored chunks, one line each, sorted, one domain per app
"$CS" chunks "$S" --quiet >"$T/chunks1"
NCH=$("$CS" verify "$S" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["chunks"])')
check "chunks lists as many chunks as verify scrubs ($NCH)" test "$(wc -l <"$T/chunks1")" = "$NCH"
check "chunks lines are '<domain 32 hex> <chunk 64 hex>'" test "$(grep -cvE '^[0-9a-f]{32} [0-9a-f]{64}$' "$T/chunks1")" = 0
check "chunks output is sorted and has no duplicates" sh -c "LC_ALL=C sort -u '$T/chunks1' | cmp -s - '$T/chunks1'"
check "one domain for app default" test "$(cut -d' ' -f1 "$T/chunks1" | sort -u | wc -l)" = 1
check "chunks STORE/db (the RocksDB dir itself) gives the same list" sh -c "'$CS' chunks '$S/db' --quiet | cmp -s - '$T/chunks1'"
mkdir -p "$T/wdata" && ln -s "$S/db" "$T/wdata/chunks"
check "chunks DATA_DIR (a worker's layout: DATA_DIR/chunks) gives the same list" sh -c "'$CS' chunks '$T/wdata' --quiet | cmp -s - '$T/chunks1'"
"$CS" capture "$S" "$SRC/sub dir" --app other --quiet >/dev/null
"$CS" chunks "$S" --quiet >"$T/chunks2"
check "a capture in app 'other' adds a second domain" test "$(cut -d' ' -f1 "$T/chunks2" | sort -u | wc -l)" = 2
check "... and keeps every chunk of the first" sh -c "comm -23 '$T/chunks1' '$T/chunks2' | wc -l | grep -qx 0"
"$CS" chunks "$S" --json >"$T/chunks.json"
check "chunks --json: count, domains and the same ids" python3 -c '
import json,sys; j=json.load(open(sys.argv[1])); lines=open(sys.argv[2]).read().split("\n")[:-1]
assert j["count"]==len(lines) and j["domains"]==2
assert ["%s %s" % (c["domain"], c["id"]) for c in j["chunks"]]==lines' "$T/chunks.json" "$T/chunks2"
expect_fail 5 "holds no chunk store" -- "$CS" chunks "$T/nowhere"
expect_fail 1 "'chunks' takes 1 argument" -- "$CS" chunks

expect_fail 5 "not found" -- "$CS" restore "$S" tr-0000000000000000 "$T/out2"
expect_fail 5 "not found" -- "$CS" restore "$S" "$ID" "$T/out3" --app other
expect_fail 6 "not empty" -- "$CS" restore "$S" "$ID" "$T/out"
expect_fail 5 "not a cairn store" -- "$CS" ls "$T/nowhere"
expect_fail 1 "unknown command" -- "$CS" frobnicate "$S"
expect_fail 1 "is not a directory" -- "$CS" capture "$S" "$SRC/random.bin"
expect_fail 1 "--threads" -- "$CS" capture "$S" "$SRC" --threads 0
J=$("$CS" restore "$S" nope "$T/o4" --json 2>/dev/null || true)
check "errors as JSON" python3 -c 'import json,sys; j=json.loads(sys.argv[1]); assert j["error"]["name"]=="ENOTFOUND"' "$J"

# corrupt one stored byte inside a RocksDB blob file: verify and restore must name a chunk, never return wrong data
blob=$(find "$S/db" -name '*.blob' -size +1M | head -n1)
if [ -n "$blob" ]; then
  python3 - "$blob" <<'PY'
import sys, os
p = sys.argv[1]; n = os.path.getsize(p)
with open(p, 'r+b') as f:
    f.seek(n // 2); b = f.read(1); f.seek(n // 2); f.write(bytes([b[0] ^ 0x40]))
PY
  expect_fail 4 "chunk" -- "$CS" restore "$S" "$ID" "$T/out5"
  expect_fail 4 "corrupt" -- "$CS" verify "$S"
else
  bad "no blob file found to corrupt in $S/db"
fi
finish
