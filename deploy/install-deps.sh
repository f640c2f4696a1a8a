#!/usr/bin/env bash
# Installs every Debian 12 package that building, testing and running cairn need.
# Idempotent: packages already present are left alone; `apt-get update` runs only
# when the package lists are missing or a package cannot be found in them.
# Nothing is fetched from anywhere but Debian's mirror.
set -euo pipefail

PKGS=(
  # build
  build-essential cmake pkg-config git
  # libraries (DESIGN §2: only common/ touches rocksdb/sodium/zstd, only proto/ zmq/msgpack)
  librocksdb-dev libsodium-dev libzstd-dev libarchive-dev libzmq3-dev libmsgpack-dev
  # tests
  libcmocka-dev clang libclang-rt-14-dev attr xxd python3 procps psmisc
  # runtime: sandboxes, images, network-namespace clusters
  runsc busybox-static debootstrap iproute2 util-linux
  # benchmark peers (tests/bench)
  zstd restic borgbackup
)

if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
  $SUDO apt-get update -q
fi
if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"; then
  # the lists may be stale (a package moved to a new version): refresh once and retry
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
