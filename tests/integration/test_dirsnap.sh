#!/usr/bin/env bash
# Directory mounts and directory snapshots end to end on a real 3-worker cluster (runsc, busybox default
# image; docs/internals/snapshots.md, DESIGN §7):
#   - `sandbox mount SB /data` (no image) mounts an empty writable directory at once (sandbox ls shows it);
#     a missing path is created; write a tree; `snapshot-dir` makes a `dir` image (managed, sliding
#     retention); mounted in a sandbox on another worker (--worker) it has the same tree, is writable there,
#     and a write there changes neither the image nor the first sandbox;
#   - an imported image mounted at a path: its files are there, write (add, change, delete), snapshot-dir,
#     re-mounted on the third worker: the image's files with the changes;
#   - a mount below a mount is left out of the outer mount's snapshot, and has its own;
#   - unmount reveals what was below (a directory of the root filesystem) and the mount's files go away;
#     unmount of a path without a mount: ENOTFOUND;
#   - snapshot-dir of a path that was not mounted (a root fs directory, an unmounted path, a path below a
#     mount) is refused with EINVAL and its message, and makes no image;
#   - a directory image as a sandbox's root image (a busybox image mounted, changed, snapshotted);
#   - mount errors: relative path, /, /proc/..., a path with '..', an unknown image (id and name), a path
#     already mounted, an unknown sandbox; none leaves a mount behind;
#   - `admin clock advance` is refused without --test-clock.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/cluster.sh"
source "$(dirname "$0")/lib/snap.sh"

if ! command -v runsc >/dev/null 2>&1; then
  echo "# runsc is not installed: sandboxes cannot run here"
  bad "runsc missing"; finish; exit 1
fi
T_START=$(now_ms)
cluster_up dirsnap --workers 3 --default-image busybox || { bad "cluster up"; finish; exit 1; }
stop() { if [ "$FAILED" -gt 0 ]; then cluster_logs; fi; cluster_down; finish; exit $?; }

# ---- mount empty, write, snapshot-dir ----
SA=$(sb_create --worker w1)
check "sandbox on w1 ($SA)" grep -qE '^sb-[0-9a-f]{16}$' <<<"$SA"
[ -n "$SA" ] || { cat "$T/create.err"; stop; }
rc=0; sb_mount "$SA" /data || rc=$?
check "mount SB /data (empty) exits 0 ($rc: $(head -c 300 "$T/mount.err"))" test "$rc" = 0
check "... sandbox ls shows the mount" test "$(sb_mounts "$SA")" = "/data - managed"
check "... an empty directory in the sandbox" test "$(sx "$SA" 'test -d /data && ls -A /data | wc -l')" = 0
check "... writable at once" test "$(sx "$SA" 'echo hi >/data/hello && cat /data/hello')" = hi
rc=0; sb_mount "$SA" /mnt/not/yet/there || rc=$?
check "mount at a missing path creates it ($rc: $(head -c 300 "$T/mount.err"))" test "$(sx "$SA" 'test -d /mnt/not/yet/there && echo dir')" = dir
write_tree "$SA" /data one 3 || bad "writing a tree in $SA:/data"
D1=$(tree_digest "$SA" /data || true)
check "the tree is there ($(grep -c '|' <<<"$D1") entries)" test "$(grep -c '|' <<<"$D1")" -ge 50
N0=$(img_count)
t0=$(now_ms)
IMG=$(sb_snapdir "$SA" /data)
check "snapshot-dir prints an im- id ($IMG, $(( $(now_ms) - t0 )) ms)" grep -qE '^im-[0-9a-f]{16}$' <<<"$IMG"
[ -n "$IMG" ] || cat "$T/snapdir.err"
check "... a dir image" test "$(img_field "$IMG" kind)" = dir
check "... managed encryption" test "$(img_field "$IMG" encryption)" = managed
check "... sliding retention, 30 days by default" test "$(img_field "$IMG" retention)" = sliding:2592000
check "... with an expiry" test -n "$(img_field "$IMG" expires_at)"
check "... one image more" test "$(img_count)" = $((N0 + 1))
cj J sandbox snapshot-dir "$SA" /data
check "snapshot-dir --json: {\"id\": im-...}" grep -qE '^im-[0-9a-f]{16}$' <<<"$(jget "$J" "j['id']")"
check "the sandbox keeps running, its mount too" test "$(sx "$SA" 'cat /data/hello')" = hi

# ---- the snapshot mounted on another worker ----
SB=$(sb_create --worker w2)
W=$(sb_worker "$SB"); check "sandbox on w2 ($SB on $W)" test "$W" = w2
rc=0; t0=$(now_ms); sb_mount "$SB" /restored "$IMG" || rc=$?
check "mount $IMG at /restored on w2 ($rc, $(( $(now_ms) - t0 )) ms: $(head -c 300 "$T/mount.err"))" test "$rc" = 0
check "... sandbox ls shows it with its image" test "$(sb_mounts "$SB")" = "/restored $IMG managed"
D2=$(tree_digest "$SB" /restored || true)
check "... the same tree: names, types, modes, sizes, links, contents" test "$D1" = "$D2"
[ "$D1" = "$D2" ] || diff <(echo "$D1") <(echo "$D2") | head -20
check "... writable" test "$(sx "$SB" 'echo new >/restored/new && rm /restored/small-1.txt && cat /restored/new')" = new
check "... the first sandbox does not see that write" test "$(sx "$SA" 'test -e /data/new || test ! -e /data/small-1.txt || echo unchanged')" = unchanged
SC=$(sb_create --worker w3)
rc=0; sb_mount "$SC" /again "$IMG" || rc=$?
check "mount $IMG on w3 too ($rc)" test "$rc" = 0
check "... the image did not change with the write on w2" test "$(tree_digest "$SC" /again)" = "$D1"
rc=0; sb_mount "$SB" /by-name "$IMG" || rc=$?
check "the same image mounted twice in one sandbox, at two paths ($rc)" test "$rc" = 0
check "... each with its own upper" test "$(sx "$SB" 'test -e /by-name/small-1.txt && test ! -e /by-name/new && echo own')" = own

# ---- a mount below a mount: left out of the outer one's snapshot ----
rc=0; sb_mount "$SA" /data/nested || rc=$?
check "mount below a mount (/data/nested) ($rc: $(head -c 300 "$T/mount.err"))" test "$rc" = 0
sx "$SA" 'echo inner >/data/nested/x' || bad "writing /data/nested/x"
IMGO=$(sb_snapdir "$SA" /data)
IMGI=$(sb_snapdir "$SA" /data/nested)
check "snapshot-dir of the outer and of the inner mount ($IMGO, $IMGI)" test -n "$IMGO" -a -n "$IMGI"
rc=0; sb_mount "$SC" /outer "$IMGO" || rc=$?
rc2=0; sb_mount "$SC" /inner "$IMGI" || rc2=$?
check "... both mount on w3 ($rc, $rc2)" test "$rc:$rc2" = 0:0
check "... the outer one without the inner mount's files" test "$(sx "$SC" 'test -e /outer/nested/x && echo leaked; cat /outer/hello')" = hi
check "... the inner one with them" test "$(sx "$SC" 'cat /inner/x')" = inner
rc=0; cx sandbox unmount "$SA" /data/nested >/dev/null 2>&1 || rc=$?
check "unmount the inner mount ($rc)" test "$rc" = 0

# ---- an image mounted at a path, changed, snapshotted, re-mounted elsewhere ----
mkdir -p "$T/imgsrc/etc.d" && echo keep >"$T/imgsrc/keep.txt" && echo change-me >"$T/imgsrc/change.txt" &&
  echo remove-me >"$T/imgsrc/remove.txt" && echo conf >"$T/imgsrc/etc.d/a.conf" && head -c 1500000 /dev/urandom >"$T/imgsrc/blob"
BASE=$(cx image import "$T/imgsrc" --name datadir 2>"$T/imp.err" | tail -n1) || true
check "image import of a data directory ($BASE)" grep -qE '^im-' <<<"$BASE"
rc=0; sb_mount "$SB" /srv/app datadir || rc=$?
check "mount an image by name at /srv/app ($rc: $(head -c 300 "$T/mount.err"))" test "$rc" = 0
check "... its files are there" test "$(sx "$SB" 'cat /srv/app/keep.txt /srv/app/etc.d/a.conf; md5sum </srv/app/blob')" = "keep
conf
$(md5sum <"$T/imgsrc/blob")"
sx "$SB" 'echo changed >/srv/app/change.txt && rm /srv/app/remove.txt && echo added >/srv/app/etc.d/b.conf' ||
  bad "changing /srv/app"
IMG2=$(sb_snapdir "$SB" /srv/app)
check "snapshot-dir of the mounted image ($IMG2)" grep -qE '^im-[0-9a-f]{16}$' <<<"$IMG2"
[ -n "$IMG2" ] || cat "$T/snapdir.err"
check "... a dir image, not layered on the mounted image (parent '$(img_field "$IMG2" parent)')" \
  test "$(img_field "$IMG2" kind):$(img_field "$IMG2" parent)" = "dir:"
rc=0; sb_mount "$SC" /elsewhere/x "$IMG2" || rc=$?
check "re-mounted on w3 at another path ($rc)" test "$rc" = 0
check "... the image's files with the changes" test "$(sx "$SC" 'cd /elsewhere/x && cat keep.txt change.txt etc.d/a.conf etc.d/b.conf; test -e remove.txt && echo remove-present; md5sum <blob')" = "keep
changed
conf
added
$(md5sum <"$T/imgsrc/blob")"
rc=0; sb_mount "$SC" /orig "$BASE" || rc=$?
check "... and the imported image is unchanged ($rc)" test "$(sx "$SC" 'cat /orig/change.txt /orig/remove.txt')" = "change-me
remove-me"

# ---- unmount reveals what was below ----
sx "$SA" 'mkdir -p /below && echo underneath >/below/file' || bad "writing /below"
rc=0; sb_mount "$SA" /below || rc=$?
check "mount over a directory of the root fs ($rc)" test "$rc" = 0
check "... hides what was there" test "$(sx "$SA" 'ls -A /below | wc -l')" = 0
sx "$SA" 'echo mine >/below/mine' || bad "writing into the mount at /below"
rc=0; cx sandbox unmount "$SA" /below >/dev/null 2>"$T/umount.err" || rc=$?
check "unmount ($rc: $(head -c 300 "$T/umount.err"))" test "$rc" = 0
check "... reveals what was below, and the mount's file is gone" test "$(sx "$SA" 'cat /below/file; test -e /below/mine && echo mine-present')" = underneath
check "... sandbox ls no longer lists it" lacks "$(sb_mounts "$SA")" "/below "
expect_fail 5 "no mount at /below in $SA" -- cx sandbox unmount "$SA" /below
expect_fail 5 "no mount at /etc in $SA" -- cx sandbox unmount "$SA" /etc

# ---- snapshot-dir of what was not mounted ----
N1=$(img_count)
expect_fail 1 "/etc in $SA was not mounted with 'cairn sandbox mount'" -- cx sandbox snapshot-dir "$SA" /etc
expect_fail 1 "only mounted directories can be snapshotted" -- cx sandbox snapshot-dir "$SA" /below
expect_fail 1 "was not mounted with 'cairn sandbox mount'" -- cx sandbox snapshot-dir "$SA" /data/sub
expect_fail 5 "sb-0000000000000000" -- cx sandbox snapshot-dir sb-0000000000000000 /data
check "no image was made by the refusals" test "$(img_count)" = "$N1"

# ---- a directory image as a sandbox's root image ----
DEF=$(jget "$(cx --json image ls)" "[i['id'] for i in j['images'] if i.get('name') == 'default'][0]")
rc=0; sb_mount "$SA" /rootfs "$DEF" || rc=$?
check "mount the busybox image at /rootfs ($rc)" test "$rc" = 0
sx "$SA" 'echo from-a-dir-snapshot >/rootfs/marker && rm /rootfs/etc/group' || bad "changing /rootfs"
ROOTIMG=$(sb_snapdir "$SA" /rootfs)
check "snapshot-dir of it ($ROOTIMG)" grep -qE '^im-' <<<"$ROOTIMG"
SD=$(sb_create --worker w3 --image "$ROOTIMG")
check "a sandbox with the dir image as its root ($SD: $(head -c 300 "$T/create.err"))" grep -qE '^sb-' <<<"$SD"
check "... runs and sees the snapshot's files" test "$(sx "$SD" 'cat /marker; test -e /etc/group && echo group-present; echo ok')" = "from-a-dir-snapshot
ok"

# ---- mount errors: each refused, nothing mounted ----
M0=$(sb_mounts "$SA")
expect_fail 1 "not absolute" -- cx sandbox mount "$SA" data
expect_fail 1 "'/'" -- cx sandbox mount "$SA" /
expect_fail 1 "/proc/x" -- cx sandbox mount "$SA" /proc/x
expect_fail 1 "/a/../b" -- cx sandbox mount "$SA" /a/../b
expect_fail 5 "im-0000000000000000" -- cx sandbox mount "$SA" /u im-0000000000000000
expect_fail 5 "nosuchname" -- cx sandbox mount "$SA" /u nosuchname
expect_fail 6 "/data" -- cx sandbox mount "$SA" /data
expect_fail 5 "sb-0000000000000000" -- cx sandbox mount sb-0000000000000000 /u
check "no mount was added by the refused mounts" test "$(sb_mounts "$SA")" = "$M0"
check "... and /u was not created" test "$(sx "$SA" 'test -e /u && echo present || echo absent')" = absent
cj J sandbox mount "$SA" data
check "mount errors as JSON with --json" test "$(jget "$J" "j['error']['name']")" = EINVAL

# ---- the test clock is refused on a cluster started without --test-clock ----
expect_fail 12 "test" -- cx admin clock advance 1d

for s in "$SA" "$SB" "$SC" "$SD"; do [ -n "$s" ] && { cx sandbox terminate "$s" >/dev/null || bad "terminate $s"; }; done
cj S sandbox ls
check "every sandbox terminated" test "$(jget "$S" "len(j['sandboxes'])")" = 0
echo "# test_dirsnap took $(( ($(now_ms) - T_START) / 1000 )) s"
stop
