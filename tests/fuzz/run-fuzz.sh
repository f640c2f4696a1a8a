#!/usr/bin/env bash
# run-fuzz.sh SRC_DIR OUT_DIR: build every tests/fuzz/fuzz_*.c as a libFuzzer target and run each
# for a bounded time (ctest test fuzz.decoders).
#
# - common/*.c and proto/proto.c (the codec; not the ZeroMQ transport) are compiled once (ASan + UBSan +
#   libFuzzer coverage) into OUT_DIR/libcairn_fuzz.a and every target links against that archive, so only
#   the objects a target needs are pulled in.
# - Each target runs on a copy of tests/fuzz/corpus/<name without fuzz_>/ in OUT_DIR (libFuzzer adds
#   the inputs it finds there), so the source tree is never written. Crash inputs are saved as
#   OUT_DIR/artifacts/<name>-crash-*.
# - Exit 0 when every target built and ran clean, 1 when one failed to build or found a crash,
#   77 (ctest's skip code) when clang or its libFuzzer runtime is missing.
# Environment: CAIRN_FUZZ_SECONDS (default 20) per target, CAIRN_FUZZ_CC (default clang),
#              CAIRN_FUZZ_JOBS (default 2) parallel compiles.
set -u
usage="usage: run-fuzz.sh SRC_DIR OUT_DIR"
src=${1:?$usage}
out=${2:?$usage}
src=$(cd "$src" && pwd) || exit 1
secs=${CAIRN_FUZZ_SECONDS:-20}
cc=${CAIRN_FUZZ_CC:-clang}
jobs=${CAIRN_FUZZ_JOBS:-2}

if ! command -v "$cc" >/dev/null 2>&1; then
  echo "fuzz: SKIPPED: clang not found ('$cc'); install clang and libclang-rt-14-dev (deploy/install-deps.sh) to run the fuzz targets"
  exit 77
fi

shopt -s nullglob
targets=("$src"/tests/fuzz/fuzz_*.c)
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz: SKIPPED: no tests/fuzz/fuzz_*.c targets"
  exit 77
fi

mkdir -p "$out" || exit 1
out=$(cd "$out" && pwd) || exit 1
rm -rf "$out/obj" "$out/bin" "$out/corpus" "$out/log"
mkdir -p "$out/obj" "$out/bin" "$out/corpus" "$out/log" "$out/artifacts" || exit 1

cflags=(-g -O1 -fno-omit-frame-pointer -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -std=gnu11
        -I"$src/common/include" -I"$src/proto/include" -fsanitize=address,undefined -fno-sanitize-recover=undefined)
if ! pkgs=$(pkg-config --libs rocksdb libsodium libzstd msgpack 2>&1); then
  echo "fuzz: FAILED: pkg-config cannot find the libraries of common/: $pkgs"
  exit 1
fi
read -r -a libs <<<"$pkgs"
if pkg-config --exists libarchive 2>/dev/null; then
  read -r -a more <<<"$(pkg-config --libs libarchive)"
  libs+=("${more[@]}")
fi
libs+=(-lstdc++ -lpthread -lm)

# clang present but without its libFuzzer runtime: the environment, not our code, is missing something
probe_dir=$(mktemp -d)
printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' \
  >"$probe_dir/probe.c"
if ! "$cc" -fsanitize=fuzzer,address,undefined "$probe_dir/probe.c" -o "$probe_dir/probe" >"$probe_dir/log" 2>&1; then
  echo "fuzz: SKIPPED: $cc cannot link libFuzzer (install libclang-rt-14-dev): $(head -3 "$probe_dir/log")"
  rm -rf "$probe_dir"
  exit 77
fi
rm -rf "$probe_dir"

# 1. common/ once, into an archive
fuzz_sources=("$src"/common/*.c)
[ -f "$src/proto/proto.c" ] && fuzz_sources+=("$src/proto/proto.c")
echo "fuzz: compiling common/ and the proto codec (${#fuzz_sources[@]} files)"
export cc out
printf '%s\n' "${fuzz_sources[@]}" | CFLAGS_STR="${cflags[*]}" xargs -P "$jobs" -I{} sh -c '
  f="$1"; o="$out/obj/$(basename "$f" .c).o"
  $cc $CFLAGS_STR -fsanitize=fuzzer-no-link -c "$f" -o "$o" 2>"$o.log" || { echo "fuzz: FAILED to compile $f:"; cat "$o.log"; exit 1; }
' sh {}
if [ $? -ne 0 ]; then
  echo "fuzz: FAILED: common/ does not compile for fuzzing"
  echo "fuzz: 0 passed, ${#targets[@]} failed"
  exit 1
fi
ar rcs "$out/libcairn_fuzz.a" "$out"/obj/*.o || exit 1

# 2. each target: link, then run on a copy of its corpus
passed=0
failed=0
for t in "${targets[@]}"; do
  base=$(basename "$t" .c)
  name=${base#fuzz_}
  bin="$out/bin/$base"
  if ! "$cc" "${cflags[@]}" -fsanitize=fuzzer "$t" "$out/libcairn_fuzz.a" "${libs[@]}" -o "$bin" \
      >"$out/log/$base.build.log" 2>&1; then
    echo "fuzz: FAILED to build $base:"
    cat "$out/log/$base.build.log"
    failed=$((failed + 1))
    continue
  fi
  corpus="$out/corpus/$name"
  mkdir -p "$corpus"
  if [ -d "$src/tests/fuzz/corpus/$name" ]; then
    cp -R "$src/tests/fuzz/corpus/$name/." "$corpus/"
  else
    echo "fuzz: note: no seed corpus tests/fuzz/corpus/$name/ for $base"
  fi
  echo "fuzz: running $base for ${secs}s ($(ls "$corpus" | wc -l) seeds)"
  ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
    "$bin" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts/$base-" "$corpus" >"$out/log/$base.log" 2>&1
  rc=$?
  if [ $rc -ne 0 ]; then
    echo "fuzz: FAILED: $base exited $rc; last lines of $out/log/$base.log:"
    tail -40 "$out/log/$base.log"
    ls "$out/artifacts" | grep "^$base-" | sed "s|^|fuzz: artifact: $out/artifacts/|"
    failed=$((failed + 1))
  else
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/log/$base.log" | grep -o '[0-9]*$')
    echo "fuzz: ok: $base (${runs:-?} runs, corpus now $(ls "$corpus" | wc -l) inputs)"
    passed=$((passed + 1))
  fi
done

echo "fuzz: $passed passed, $failed failed"
[ $failed -eq 0 ]
