# Helpers for the directory snapshot, CSEK and retention tests (test_dirsnap.sh, test_csek.sh,
# test_retention.sh; docs/internals/snapshots.md). Source it after lib/common.sh and lib/cluster.sh.
#
#   cx CLI-ARGS...                 the CLI without our stdin
#   sb_create [ARGS...]            `sandbox create ARGS`: prints sb-... ("" on failure; stderr in $T/create.err)
#   sb_snapdir SB PATH [ARGS...]   `sandbox snapshot-dir`: prints im-... ("" on failure; stderr in $T/snapdir.err)
#   sb_mount SB PATH [IMAGE] [--key-file F]   `sandbox mount`; its exit status (stderr in $T/mount.err)
#   sx SB SCRIPT                   exec `sh -c SCRIPT` in SB (stdout; exit status of the script)
#   sb_worker SB                   the worker SB runs on
#   sb_mounts SB                   SB's mounts from `sandbox ls --json`, one "path image csek" line each
#                                  in mount order ("-" for an empty mount)
#   img_field ID FIELD             a field of `image show --json` ("" when absent)
#   img_count                      number of images of the app (`image ls --json`)
#   write_tree SB DIR TAG [MB]     write a tree in SB under DIR: 40 small files, a subdir with 3 files, a
#                                  symlink, an empty file, a 0600 file, MB (default 2) MB of random data in
#                                  big.bin; TAG goes into the small files' content
#   tree_digest SB DIR             names, types, modes, sizes, link targets and md5 of every entry below DIR
#   chunks_of W                    `cairn-store chunks` of worker W's data dir (sorted "<domain> <chunk>" lines)
#   chunks_all FILE                the sorted union of every worker's chunks, into FILE
#   domains_of FILE                the sorted distinct domains of a chunks file
#   has TEXT NEEDLE / lacks TEXT NEEDLE   fixed-string search of NEEDLE in TEXT
: "${CAIRN:?source lib/cluster.sh first}"
CSTORE=$(bin cairn-store)

cx() { "$CAIRN" "$@" </dev/null; }

sb_create() { cx sandbox create "$@" 2>"$T/create.err" | tail -n1 || true; }

sb_snapdir() { cx sandbox snapshot-dir "$@" 2>"$T/snapdir.err" | tail -n1 || true; }

sb_mount() {
  local rc=0
  cx sandbox mount "$@" >"$T/mount.out" 2>"$T/mount.err" || rc=$?
  return $rc
}

sx() { local sb=$1; shift; cx sandbox exec "$sb" -- sh -c "$*"; }

sb_worker() {
  local s; cj s sandbox ls
  [ "$CJ_RC" = 0 ] || echo "# sandbox ls --json failed ($CJ_RC): $(head -c 300 "$T/cj.err") $(head -c 300 <<<"$s")" >&2
  jget "$s" "[x['worker'] for x in j['sandboxes'] if x['id'] == '$1'][0]"
}

sb_mounts() {
  local s; cj s sandbox ls
  python3 -c '
import json, sys
try:
    j = json.loads(sys.argv[1])
    sb = [x for x in j["sandboxes"] if x["id"] == sys.argv[2]][0]
except Exception:
    sys.exit(0)
for m in sb.get("mounts") or []:
    print(m.get("path"), m.get("image") or "-", "csek" if m.get("csek") else "managed")
' "$s" "$1"
}

img_field() { local i; cj i image show "$1"; jget "$i" "j.get('$2', '')"; }

img_count() { local l; cj l image ls; jget "$l" "len(j['images'])"; }

write_tree() {
  local sb=$1 dir=$2 tag=$3 mb=${4:-2}
  sx "$sb" "set -e; mkdir -p '$dir/sub/deeper'; cd '$dir'
    for i in \$(seq 1 40); do echo '$tag' file \$i >small-\$i.txt; done
    for i in 1 2 3; do seq 1 \$((i * 1000)) >sub/deeper/n\$i; done
    head -c $((mb * 1048576)) /dev/urandom >big.bin
    ln -s sub/deeper/n1 link; : >empty; echo secret-ish >private; chmod 600 private"
}

tree_digest() {
  sx "$1" "cd '$2' && find . -exec stat -c '%n|%F|%a|%s' {} + | LC_ALL=C sort &&
    find . -type l -exec readlink {} + | LC_ALL=C sort && find . -type f -exec md5sum {} + | LC_ALL=C sort -k2"
}

chunks_of() { "$CSTORE" chunks "$CL_DIR/data/$1" --quiet; }

chunks_all() {
  local out=$1 d
  : >"$out.tmp"
  for d in "$CL_DIR"/data/w*; do
    "$CSTORE" chunks "$d" --quiet >>"$out.tmp" || { echo "# cairn-store chunks $d failed"; return 1; }
  done
  LC_ALL=C sort -u "$out.tmp" >"$out"
  rm -f "$out.tmp"
}

domains_of() { cut -d' ' -f1 "$1" | LC_ALL=C sort -u; }

has() { grep -qF -- "$2" <<<"$1"; }
lacks() { ! grep -qF -- "$2" <<<"$1"; }
