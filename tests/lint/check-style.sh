#!/usr/bin/env bash
# Style rules the compiler cannot see (c-style.md §14), checked on every test run:
#  - banned functions anywhere in our C: strcpy strcat sprintf vsprintf strtok atoi gmtime localtime
#  - no raw malloc/calloc/realloc/free in common/ outside alloc.c (use cairn_malloc & co.)
#  - dependency rules of DESIGN §2: only common/ includes rocksdb, sodium, zstd;
#    only proto/ includes zmq and msgpack; coordinator/worker/client never include each other
set -u
src=${1:?source dir}
cd "$src"
bad=0
report() { echo "style: $*"; bad=1; }

files=$(git ls-files '*.c' '*.h' 2>/dev/null || find common proto coordinator worker client tests -name '*.[ch]')
for f in $files; do
  [ -f "$f" ] || continue
  # strip comments and string literals before matching (line numbers are kept)
  body=$(perl -0777 -pe 's{/\*.*?\*/}{my $c=$&; $c=~s/[^\n]//g; $c}gse; s{//[^\n]*}{}g; s{"(\\.|[^"\\\n])*"}{""}g' "$f")
  if echo "$body" | grep -nE '(^|[^_a-zA-Z0-9])(strcpy|strcat|sprintf|vsprintf|strtok|atoi|gmtime|localtime)[[:space:]]*\(' >/dev/null; then
    report "$f uses a banned function: $(echo "$body" | grep -nE '(^|[^_a-zA-Z0-9])(strcpy|strcat|sprintf|vsprintf|strtok|atoi|gmtime|localtime)[[:space:]]*\(' | head -3)"
  fi
  case "$f" in
    common/alloc.c) ;;
    common/*)
      if echo "$body" | grep -nE '(^|[^_a-zA-Z0-9.>])(malloc|calloc|realloc|free)[[:space:]]*\(' >/dev/null; then
        report "$f calls the C allocator directly: $(echo "$body" | grep -nE '(^|[^_a-zA-Z0-9.>])(malloc|calloc|realloc|free)[[:space:]]*\(' | head -3)"
      fi ;;
  esac
  case "$f" in
    common/*) ;;
    *) grep -nE '#include[[:space:]]*<(rocksdb/|sodium|zstd)' "$f" >/dev/null && report "$f includes a library reserved to common/" ;;
  esac
  case "$f" in
    proto/*) ;;
    *) grep -nE '#include[[:space:]]*<(zmq|msgpack)' "$f" >/dev/null && report "$f includes a library reserved to proto/" ;;
  esac
  for d in coordinator worker client; do
    case "$f" in
      $d/*) for o in coordinator worker client; do
              [ "$o" = "$d" ] && continue
              grep -nE "#include[[:space:]]*\"($o/|\\.\\./$o/)" "$f" >/dev/null && report "$f ($d) includes $o"
            done ;;
    esac
  done
done
if [ $bad -eq 0 ]; then echo "style: ok ($(echo "$files" | wc -w) files)"; fi
exit $bad
