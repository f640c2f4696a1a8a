#!/usr/bin/env bash
# Sandboxes end to end through the `cairn` CLI on a real cluster (2 workers, runsc), with the busybox
# default image (docs/internals/sandboxes.md):
#   - `up --default-image busybox` imports it into app "default" as "default", once;
#   - sandbox create without --image uses it; exec streams stdout and stderr apart and exits with the
#     command's code; 100 MB of output arrive whole (counted and hashed); stdin is passed; --json
#     collects; --timeout kills (137); --env and --workdir reach the command;
#   - snapshot-fs captures the filesystem (new files, a deletion) while the sandbox keeps running; a
#     sandbox created from the snapshot on the other worker (--worker) sees that state; terminate;
#   - image import of a directory and of a tarball, by name and id, image show/ls/rm;
#   - errors with their exit codes: unknown sandbox and image ids (5), images, sandboxes and the
#     default image of another app (5), an unknown worker (5), GPUs (11), a terminated sandbox (5).
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/cluster.sh"

if ! command -v runsc >/dev/null 2>&1; then
  echo "# runsc is not installed: sandboxes cannot run here"
  bad "runsc missing"; finish; exit 1
fi

cluster_up sbx --workers 2 --default-image busybox || { bad "cluster up"; finish; exit 1; }
cx() { "$CAIRN" "$@" </dev/null; } # the CLI without our stdin

# ---- the default image ----
cj L image ls
check "image ls works" test "$CJ_RC" = 0
DEF=$(jget "$L" "[i['id'] for i in j['images'] if i.get('name') == 'default'][0]")
check "up imported an image named 'default' ($DEF)" test -n "$DEF"
check "... a base image" test "$(jget "$L" "[i['kind'] for i in j['images'] if i['id'] == '$DEF'][0]")" = base
"$CL_SCRIPT" up --dir "$CL_DIR" --default-image busybox >/dev/null 2>"$T/up2.err" || cat "$T/up2.err"
cj L image ls
check "up again imports nothing more" test "$(jget "$L" "len(j['images'])")" = 1
check "... and says nothing about importing" sh -c "! grep -q importing '$T/up2.err'"

# ---- create and exec ----
SB=$(cx sandbox create 2>"$T/create.err" | tail -n1) || true
check "sandbox create (default image) prints an sb- id ($SB)" grep -qE '^sb-[0-9a-f]{16}$' <<<"$SB"
[ -n "$SB" ] || { cat "$T/create.err"; cluster_logs; cluster_down; finish; exit 1; }
cj S sandbox ls
W1=$(jget "$S" "[s['worker'] for s in j['sandboxes'] if s['id'] == '$SB'][0]")
check "sandbox ls shows it running on a worker ($W1)" test "$(jget "$S" "[s['state'] for s in j['sandboxes'] if s['id'] == '$SB'][0]")" = running
check "... with the default image" test "$(jget "$S" "[s['image'] for s in j['sandboxes'] if s['id'] == '$SB'][0]")" = "$DEF"

check "exec: stdout" test "$(cx sandbox exec "$SB" -- echo hello sandbox)" = "hello sandbox"
rc=0; cx sandbox exec "$SB" -- sh -c 'echo to-out; echo to-err >&2; exit 3' >"$T/o" 2>"$T/e" || rc=$?
check "exec: exit code is the command's (3)" test "$rc" = 3
check "exec: stdout apart" test "$(cat "$T/o")" = to-out
check "exec: stderr apart" test "$(cat "$T/e")" = to-err
rc=0; cx sandbox exec "$SB" -- nosuchcommand >/dev/null 2>"$T/e" || rc=$?
check "exec of a missing command fails ($rc) naming it" test "$rc" != 0 -a "$(grep -c nosuchcommand "$T/e")" -ge 1
[ "$rc" = 127 ] || echo "# NOTE: a missing command exits $rc, not 127 as in a shell: $(head -c 300 "$T/e")"

t0=$(now_ms)
rc=0; cx sandbox exec "$SB" -- sh -c 'yes 0123456789abcdef | head -c 100000000' | wc -c >"$T/count" || rc=$?
ms=$(( $(now_ms) - t0 ))
check "100 MB of output through exec | wc -c: $(cat "$T/count") bytes in $ms ms" test "$(cat "$T/count")" = 100000000
rc=0; cx sandbox exec "$SB" -- sh -c 'yes 0123456789abcdef | head -c 100000000' >"$T/big" || rc=$?
check "... exit 0 ($rc), and the same bytes" test "$rc:$(md5sum <"$T/big" | cut -d' ' -f1)" = "0:$(yes 0123456789abcdef | head -c 100000000 | md5sum | cut -d' ' -f1)"
rm -f "$T/big"
echo "# 100 MB streamed in $ms ms"

check "exec: stdin is passed" test "$(printf 'from stdin' | "$CAIRN" sandbox exec "$SB" -- cat)" = "from stdin"
check "exec: --env and --workdir" test "$(cx sandbox exec "$SB" --env FOO=bar --workdir /etc -- sh -c 'echo $FOO $(pwd)')" = "bar /etc"
cj J sandbox exec "$SB" -- sh -c 'printf x; printf y >&2; exit 4'
check "exec --json exits 0" test "$CJ_RC" = 0
check "exec --json: exit_code, stdout, stderr" test "$(jget "$J" "'%d/%s/%s' % (j['exit_code'], j['stdout'], j['stderr'])")" = 4/x/y
rc=0; t0=$(now_ms); cx sandbox exec "$SB" --timeout 1s -- sleep 30 || rc=$?
check "exec --timeout 1s kills the command: exit 137 ($rc) within $(( $(now_ms) - t0 )) ms" test "$rc" = 137

# ---- snapshot-fs, and a sandbox from it on the other worker ----
cx sandbox exec "$SB" -- sh -c 'mkdir -p /data && echo persisted >/data/f && rm /etc/group && echo again >>/etc/passwd' ||
  bad "writing state in $SB"
IMG=$(cx sandbox snapshot-fs "$SB" 2>"$T/snap.err" | tail -n1) || true
check "snapshot-fs prints an im- id ($IMG)" grep -qE '^im-[0-9a-f]{16}$' <<<"$IMG"
check "... and the pause on stderr ($(cat "$T/snap.err"))" grep -qE '^pause: [0-9]+ ms$' "$T/snap.err"
check "the sandbox keeps running after the snapshot" test "$(cx sandbox exec "$SB" -- cat /data/f)" = persisted
cj I image show "$IMG"
check "the snapshot is an fs image on the default image" test "$(jget "$I" "j['kind'] + '/' + j.get('parent', '')")" = "fs/$DEF"
W2=w1; [ "$W1" = w1 ] && W2=w2
SB2=$(cx sandbox create --image "$IMG" --worker "$W2" 2>"$T/create2.err" | tail -n1) || true
check "sandbox create from the snapshot on $W2 ($SB2)" grep -qE '^sb-[0-9a-f]{16}$' <<<"$SB2"
cj S sandbox ls
check "... it runs on $W2" test "$(jget "$S" "[s['worker'] for s in j['sandboxes'] if s['id'] == '$SB2'][0]")" = "$W2"
check "... and sees the new file" test "$(cx sandbox exec "$SB2" -- cat /data/f)" = persisted
check "... the deletion" test "$(cx sandbox exec "$SB2" -- sh -c 'test -e /etc/group && echo present || echo gone')" = gone
check "... and the change" test "$(cx sandbox exec "$SB2" -- tail -n1 /etc/passwd)" = again
SB3=$(cx sandbox create --image default -- sh -c 'echo started >/started; exec sleep 100000' | tail -n1) || true
check "create by image name with a command ($SB3)" grep -qE '^sb-' <<<"$SB3"
check "... the command ran, and the default image is unchanged" test "$(cx sandbox exec "$SB3" -- sh -c 'cat /started; test -e /etc/group && echo has-group')" = "started
has-group"

# ---- terminate ----
cj X sandbox terminate "$SB2"
check "terminate" test "$CJ_RC" = 0
expect_rc 5 "exec in a terminated sandbox -> ENOTFOUND" -- cx sandbox exec "$SB2" -- true
cj S sandbox ls
check "sandbox ls leaves it out" test "$(jget "$S" "'$SB2' in [s['id'] for s in j['sandboxes']]")" = false
cj S sandbox ls --all
check "sandbox ls --all shows it terminated" test "$(jget "$S" "[s['state'] for s in j['sandboxes'] if s['id'] == '$SB2'][0]")" = terminated

# ---- import a directory and a tarball ----
mkdir -p "$T/tree"
tar -xf "$CL_DIR/images/busybox.tar" -C "$T/tree" || bad "extracting the busybox image"
mkdir -p "$T/tree/opt/app" && echo "from a directory" >"$T/tree/opt/app/README"
echo utf8 >"$T/tree/opt/app/café"; echo raw >"$T/tree/opt/app/$(printf 'raw\377')" # names in UTF-8 and not
D=$(cx image import "$T/tree" --name fromdir 2>"$T/imp.err" | tail -n1) || true
check "image import DIR prints an im- id ($D)" grep -qE '^im-[0-9a-f]{16}$' <<<"$D"
[ -n "$D" ] || cat "$T/imp.err"
SB4=$(cx sandbox create --image fromdir | tail -n1) || true
check "a sandbox of the directory image reads its files" test "$(cx sandbox exec "$SB4" -- cat /opt/app/README)" = "from a directory"
check "... names in UTF-8 and raw bytes too" test "$(cx sandbox exec "$SB4" -- sh -c 'cat /opt/app/café /opt/app/raw*; ls /opt/app | wc -l')" = "utf8
raw
3"
gzip -c "$CL_DIR/images/busybox.tar" >"$T/bb.tar.gz"
cj G image import "$T/bb.tar.gz" --name gz
check "image import TARBALL.gz --json: id" grep -qE '^im-' <<<"$(jget "$G" "j['id']")"
cj L image ls
check "image ls lists the 4 images" test "$(jget "$L" "len(j['images'])")" = 4
cj R image rm "$(jget "$G" "j['id']")"
check "image rm" test "$CJ_RC" = 0
expect_rc 5 "image show of a removed image -> ENOTFOUND" -- cx image show "$(jget "$G" "j['id']")"

# ---- errors ----
expect_fail 5 "sb-0000000000000000" -- cx sandbox exec sb-0000000000000000 -- true
expect_fail 5 "im-0000000000000000" -- cx sandbox create --image im-0000000000000000
expect_fail 5 "no image named 'nosuchname'" -- cx sandbox create --image nosuchname
expect_fail 5 "nosuchworker" -- cx sandbox create --worker nosuchworker
expect_fail 11 "GPU" -- cx sandbox create --gpu 1
expect_fail 5 "sb-0000000000000000" -- cx sandbox snapshot-fs sb-0000000000000000
cj A app create other --token-out "$T/other.token"
other() { CAIRN_APP=other CAIRN_TOKEN_FILE="$T/other.token" "$@"; }
expect_fail 5 "no image named 'default' in app 'other'" -- other cx sandbox create
expect_fail 5 "$IMG" -- other cx sandbox create --image "$IMG"
expect_fail 5 "$IMG" -- other cx image show "$IMG"
expect_fail 5 "$SB" -- other cx sandbox exec "$SB" -- true
expect_fail 5 "$SB" -- other cx sandbox terminate "$SB"
check "the other app sees no sandboxes" test "$(other "$CAIRN" --json sandbox ls </dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["sandboxes"]))')" = 0

for s in "$SB" "$SB3" "$SB4"; do cx sandbox terminate "$s" >/dev/null || bad "terminate $s"; done
cj S sandbox ls
check "every sandbox terminated" test "$(jget "$S" "len(j['sandboxes'])")" = 0
if [ "$FAILED" -gt 0 ]; then cluster_logs; fi
cluster_down
finish
