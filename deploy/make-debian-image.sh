#!/usr/bin/env bash
# The default base image of a cairn cluster: a Debian 12 (bookworm) minbase root filesystem as a
# zstd-compressed tarball (docs/internals/sandboxes.md, "Base images").
#
#   deploy/make-debian-image.sh OUT.tar.zst
#
# Built once per machine with `debootstrap --variant=minbase bookworm` and kept at
# /var/cache/cairn/debian-12-minbase.tar.zst; OUT gets a copy (or is the cache itself). The apt
# caches and package lists are removed and /tmp is emptied (gVisor gives a sandbox a private tmpfs
# there). The tar keeps numeric owners and xattrs (file capabilities). Two runs at the same time do
# not build twice: the second waits on a lock and then copies what the first built.
#
# Needs root, debootstrap and zstd. Environment:
#   CAIRN_DEBIAN_MIRROR   the mirror (default http://deb.debian.org/debian, the machine's apt mirror)
#   CAIRN_IMAGE_CACHE     the cache directory (default /var/cache/cairn)
set -euo pipefail

die() { echo "make-debian-image.sh: $*" >&2; exit 1; }
say() { echo "make-debian-image.sh: $*" >&2; }

[ $# -eq 1 ] && [ -n "$1" ] || die "usage: deploy/make-debian-image.sh OUT.tar.zst"
OUT=$1
MIRROR=${CAIRN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
CACHE_DIR=${CAIRN_IMAGE_CACHE:-/var/cache/cairn}
CACHE=$CACHE_DIR/debian-12-minbase.tar.zst

mkdir -p "$CACHE_DIR" || die "cannot create the cache directory $CACHE_DIR"
exec 8>"$CACHE_DIR/.debian-12-minbase.lock"
if ! flock -n 8; then
  say "another build of the Debian image is running: waiting for it"
  flock 8
fi

WORK=""
cleanup() {
  [ -n "$WORK" ] && [ -d "$WORK" ] || return 0
  # never delete through a mount point debootstrap may have left (proc, sys, dev/pts)
  local m
  for m in $(findmnt -rn -o TARGET 2>/dev/null | grep -F "$WORK/" | sort -r); do umount -l "$m" 2>/dev/null || true; done
  if findmnt -rn -o TARGET 2>/dev/null | grep -qF "$WORK/"; then
    say "leaving $WORK in place: something is still mounted below it"
    return 0
  fi
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

build() {
  [ "$(id -u)" = 0 ] || die "building the Debian image needs root (debootstrap); run as root once, or import another image"
  command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
  command -v zstd >/dev/null || die "zstd is not installed (apt-get install zstd)"
  WORK=$(mktemp -d "$CACHE_DIR/build.XXXXXX")
  local log=$WORK/debootstrap.log t0=$SECONDS
  say "building Debian 12 minbase with debootstrap from $MIRROR (once per machine, a few minutes; log: $log)"
  if ! debootstrap --variant=minbase "$SUITE" "$WORK/root" "$MIRROR" >"$log" 2>&1; then
    if grep -qiE "Failed getting release|Couldn't download|could not resolve|Temporary failure|unable to fetch|connection (refused|timed out)|Network is unreachable|No route to host|Release signed by unknown key|Invalid Release" "$log"; then
      tail -n 5 "$log" >&2
      die "debootstrap cannot reach the Debian mirror $MIRROR (see above); set CAIRN_DEBIAN_MIRROR to a mirror this machine can reach, or import another image (deploy/make-busybox-image.sh)"
    fi
    tail -n 15 "$log" >&2
    die "debootstrap failed (last lines above)"
  fi
  local R=$WORK/root
  for m in $(findmnt -rn -o TARGET 2>/dev/null | grep -F "$R/" | sort -r); do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/cache/apt/archives/partial/* "$R"/var/cache/apt/*.bin \
    "$R"/var/lib/apt/lists/* "$R"/debootstrap
  find "$R/tmp" "$R/var/tmp" -mindepth 1 -delete 2>/dev/null || true
  chmod 1777 "$R/tmp"
  tar --numeric-owner --xattrs --xattrs-include='*' --sort=name -C "$R" -cf - . | zstd -q -T0 -10 -o "$WORK/image.tar.zst"
  mv -f "$WORK/image.tar.zst" "$CACHE"
  say "built $CACHE ($(du -h "$CACHE" | cut -f1) compressed, $((SECONDS - t0)) s)"
}

if [ -s "$CACHE" ]; then
  say "using the cached $CACHE"
else
  build
fi
if [ "$(readlink -f "$OUT")" != "$(readlink -f "$CACHE")" ]; then
  mkdir -p "$(dirname "$OUT")"
  cp --reflink=auto "$CACHE" "$OUT.tmp.$$"
  mv -f "$OUT.tmp.$$" "$OUT"
  say "wrote $OUT"
fi
