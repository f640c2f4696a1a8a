# Shared helpers for the shell integration tests. Source it; it sets `set -euo pipefail`,
# makes $T (a temp dir under $CAIRN_TEST_TMP removed on exit), and counts checks.
# Every test ends with `finish`, which prints "N passed, M failed" and exits non-zero on failures.
set -euo pipefail
: "${CAIRN_BUILD:?CAIRN_BUILD must point at the build dir}"
: "${CAIRN_SRC:?CAIRN_SRC must point at the source dir}"
mkdir -p "${CAIRN_TEST_TMP:-/tmp}"
T=$(mktemp -d "${CAIRN_TEST_TMP:-/tmp}/it.XXXXXX")
PASSED=0
FAILED=0
CLEANUPS=()
cleanup_all() {
  local i
  for ((i=${#CLEANUPS[@]}-1; i>=0; i--)); do eval "${CLEANUPS[$i]}" || true; done
  chmod -R u+rwx "$T" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup_all EXIT
on_exit() { CLEANUPS+=("$*"); }

bin() { find "$CAIRN_BUILD" -type f -name "$1" -perm -u+x | head -n1; }

ok()   { PASSED=$((PASSED+1)); echo "ok - $*"; }
bad()  { FAILED=$((FAILED+1)); echo "FAIL - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

# expect_fail CODE WHAT-SUBSTRING -- cmd...   : cmd must exit CODE and say SUBSTRING on stderr
expect_fail() {
  local code=$1 needle=$2; shift 3
  local out rc=0
  out=$("$@" 2>&1 >/dev/null) || rc=$?
  if [ "$rc" -eq "$code" ] && grep -qiF -- "$needle" <<<"$out"; then
    ok "refused with $code: $needle"
  else
    bad "expected exit $code with '$needle', got $rc: $out"
  fi
}

# A listing of every entry's metadata, for comparing trees (paths, type, mode, owner, mtime ns, size of
# non-directories, link target). Directory sizes are left out: they depend on the filesystem's history.
tree_listing() {
  (cd "$1" && find . ! -type d -printf '%p|%y|%m|%U|%G|%TY%Tm%Td%TH%TM%TS|%s|%l\n' -o -printf '%p|%y|%m|%U|%G|%TY%Tm%Td%TH%TM%TS\n' | LC_ALL=C sort)
}

finish() {
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ]
}
