#!/usr/bin/env bash
# The test command (README): installs the Debian packages, builds with warnings as errors, and runs
# every test through ctest. On a fresh Debian 12 machine with only this repository, this is all it takes.
#   bash tests/run.sh            everything
#   bash tests/run.sh -R unit    extra arguments go to ctest
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
BUILD=${CAIRN_BUILD_DIR:-build}
cmake -S . -B "$BUILD" -DCAIRN_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j"$(nproc)"
cd "$BUILD"
exec ctest --output-on-failure --timeout 900 "$@"
