#!/usr/bin/env bash
# The storage-core walkthrough (README): snapshots a real tree into a local single-node store and back.
#   bash deploy/demo-store.sh [SRC] [--dir DIR]
# Installs dependencies, builds, then: snapshots SRC (default /usr/share) into a fresh local store,
# snapshots it again (dedup: nothing new is stored), restores it, checks the restored tree is identical,
# verifies the store, and prints sizes and speeds. The store stays in DIR (default ./var/demo) to explore
# with build/client/cairn-store; rerunning the demo replaces it.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=/usr/share
DIR=var/demo
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) SRC=$1; shift ;;
  esac
done
bash deploy/install-deps.sh >/dev/null
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
CS=build/client/cairn-store

rm -rf "$DIR"; mkdir -p "$DIR"
STORE=$DIR/store
step() { printf '\n== %s\n' "$*"; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }

step "source: $SRC"
src_bytes=$(du -sb --apparent-size "$SRC" | cut -f1)
echo "$(find "$SRC" | wc -l) entries, $(mb "$src_bytes")"

step "cairn-store init $STORE"
$CS init "$STORE"

step "cairn-store capture $STORE $SRC   (chunk, dedup, zstd, XChaCha20-Poly1305, RocksDB; all cores)"
ID=$($CS capture "$STORE" "$SRC")
echo "snapshot id: $ID"
stored=$(du -sb "$STORE/db" | cut -f1)
echo "store on disk: $(mb "$stored") for $(mb "$src_bytes") of source ($(awk -v a="$src_bytes" -v b="$stored" 'BEGIN{printf "%.2fx", a/b}') smaller)"

step "capture again: unchanged data is deduplicated"
ID2=$($CS capture "$STORE" "$SRC")
echo "snapshot id: $ID2; store on disk now $(mb "$(du -sb "$STORE/db" | cut -f1)")"

step "cairn-store restore $STORE $ID $DIR/restored"
$CS restore "$STORE" "$ID" "$DIR/restored"

step "compare source and restored tree"
if diff -r --no-dereference "$SRC" "$DIR/restored" >/dev/null 2>&1; then
  echo "identical contents"
else
  echo "DIFFERENT (if $SRC changed during the demo this is expected)"; exit 1
fi

step "cairn-store ls / verify"
$CS ls "$STORE"
$CS verify "$STORE"
printf '\ndone: the store is in %s; try: %s ls %s\n' "$DIR" "$CS" "$STORE"
