#!/usr/bin/env bash
# A tiny root filesystem for sandboxes, as a tarball: /bin/busybox (a static build, from Debian's
# busybox-static) and a symlink for every applet it has, where `busybox --list-full` puts it
# (/bin/sh, /usr/bin/env, /sbin/...), /etc/passwd and /etc/group with root, an empty /tmp (1777) and
# the usual empty mount points. Tests import it instead of the Debian image because it is fast:
# about 2 MB (docs/internals/sandboxes.md, "Base images").
#
#   deploy/make-busybox-image.sh OUT.tar
#
# The tarball is deterministic: same busybox, same bytes (names sorted, mtimes 0, numeric owners
# 0:0, fixed modes, GNU format without per-file extended headers).
# BUSYBOX=/path/to/busybox overrides the binary (it must be statically linked: the image has no libc).
set -euo pipefail

die() { echo "make-busybox-image.sh: $*" >&2; exit 1; }

[ $# -eq 1 ] && [ -n "$1" ] || die "usage: deploy/make-busybox-image.sh OUT.tar"
OUT=$1
BB=${BUSYBOX:-/bin/busybox}
[ -x "$BB" ] || die "no busybox at $BB (install it: apt-get install busybox-static)"
if ldd "$BB" >/dev/null 2>&1; then
  die "$BB is dynamically linked: the image has no libc for it (install busybox-static, or set BUSYBOX to a static build)"
fi
command -v tar >/dev/null || die "tar is not installed"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cairn-busybox.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
R=$TMP/root
mkdir -p "$R"
for d in bin sbin usr/bin usr/sbin etc dev proc sys run var home root tmp; do mkdir -p "$R/$d"; done
install -m 0755 "$BB" "$R/bin/busybox"

# applets: a relative symlink to bin/busybox each (so the tree also reads right outside a sandbox)
list=$("$BB" --list-full 2>/dev/null) || list=$("$BB" --list | sed 's|^|bin/|')
while IFS= read -r p; do
  [ -n "$p" ] || continue
  case "$p" in
    bin/busybox|*/|*..*) continue ;;
    */*) ;;
    *) continue ;; # top-level names like "linuxrc" do not belong in a sandbox root
  esac
  dir=$(dirname "$p")
  up=$(printf '%s' "$dir" | sed 's|[^/][^/]*|..|g')
  mkdir -p "$R/$dir"
  if [ "$dir" = bin ]; then ln -sfn busybox "$R/$p"; else ln -sfn "$up/bin/busybox" "$R/$p"; fi
done <<<"$list"

printf 'root:x:0:0:root:/root:/bin/sh\n' >"$R/etc/passwd"
printf 'root:x:0:\n' >"$R/etc/group"
find "$R" -type d -exec chmod 0755 {} +
chmod 0700 "$R/root"
chmod 1777 "$R/tmp"
chmod 0644 "$R/etc/passwd" "$R/etc/group"

mkdir -p "$(dirname "$OUT")"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu -C "$R" -cf "$OUT.tmp.$$" .
mv -f "$OUT.tmp.$$" "$OUT"
echo "make-busybox-image.sh: wrote $OUT ($(stat -c %s "$OUT") bytes, $(printf '%s\n' "$list" | grep -c /) applets)" >&2
