/*
 * archive.h: tarballs imported as stored trees (the groundwork of
 * `cairn image import DIR|TARBALL`).
 *
 * cairn_archive_import reads a tar archive (ustar, pax, GNU; plain or
 * compressed with gzip, bzip2, xz, lzma, zstd or lz4, detected from the bytes)
 * as a stream with libarchive: it never extracts anything to disk and never
 * holds a whole file in memory. Every entry becomes a manifest entry
 * (manifest.h); regular files are cut with FastCDC and their chunks go
 * through the same parallel pipeline as cairn_tree_capture (hash, dedup,
 * compress, encrypt, store on the pool's threads), with the same chunk
 * boundaries, so a tree imported from a tarball and captured from a directory
 * share their data chunks. The manifest is then sorted and stored
 * (cairn_manifest_store); *out is its reference.
 *
 * What is kept: files (sparse holes stay holes when the archive has sparse
 * maps), directories, symlinks, hardlinks (CAIRN_ET_HARDLINK; all names of one
 * file form one group), char and block devices, fifos, mode (07777), uid, gid,
 * mtime (with nanoseconds when the archive has them: pax), xattrs (pax
 * SCHILY.xattr / LIBARCHIVE.xattr). Sockets and unknown types are skipped
 * with a warning (stats.skipped). POSIX ACL records (SCHILY.acl.*) are not
 * imported.
 *
 * Paths: "./a" is "a", "a/" is "a", empty and "." components are dropped;
 * "./" (or "") is the root entry "."; directories the archive leaves out are
 * added (mode 0755, uid 0, gid 0, mtime 0) so the manifest is complete. A later
 * entry with the same path replaces an earlier one (tar semantics: replacing a
 * directory with a non-directory drops what was below it; a directory over a
 * directory only updates its metadata). opts->exclude applies as in capture
 * (a hardlink to an excluded file is skipped with a warning).
 *
 * Image layers (OCI / docker): ".wh.<name>" becomes a CAIRN_ET_WHITEOUT entry
 * "<name>" (mode 0, the marker's owner and mtime) unless the same archive has
 * a real "<name>" (a whiteout only hides lower layers); ".wh..wh..opq" sets
 * CAIRN_EF_OPAQUE on its directory; other ".wh..wh.*" names (aufs metadata)
 * and anything below a ".wh." name are skipped. This happens whatever
 * opts->flags says. With
 * CAIRN_TREE_OVERLAY, as in capture, a char device 0/0 is a whiteout too,
 * trusted.overlay.opaque=y on a directory is the opaque flag and other
 * trusted.overlay.* xattrs are dropped.
 *
 * A tarball is hostile input. CAIRN_ECORRUPT, with a message naming the
 * archive and the entry (printable, escaped), for: an absolute path, a ".."
 * component, an entry below a non-directory, a hardlink to a name that is not
 * an earlier file of the archive, a symlink target that is empty or over 4096
 * bytes, an owner outside 0..2^32-1, a bad xattr, data out of order or past a
 * file's size, and anything libarchive reports as damaged or truncated (its
 * message is included; a truncated archive names the entry being read). A file
 * larger than 64 TiB is CAIRN_ETOOBIG. Nothing is stored as a tree on failure
 * (*out stays empty); chunks already stored are unreferenced and left to GC.
 *
 * Memory: the manifest (about 150 bytes per entry plus 40 per chunk, as in
 * capture), a path index over it, and the pipeline's bounded chunk buffers.
 *
 * Thread-safety: as cairn_tree_capture (the store is shared, the rest is the
 * call's own). The current locale is used by libarchive to convert names
 * stored as UTF-8 (pax); in the C locale their bytes are kept as they are.
 */
#ifndef CAIRN_ARCHIVE_H
#define CAIRN_ARCHIVE_H

#include "cairn/tree.h"

/*
 * Import the tarball at path ("-" = standard input). CAIRN_ENOTFOUND when the
 * file does not exist, CAIRN_EPERM when it cannot be opened for that reason,
 * CAIRN_EINVAL for a directory. st (may be NULL) receives the stats of the
 * final manifest's entries and of the chunks written; opts may be NULL.
 * On success the caller owns *out (cairn_tree_ref_release).
 */
int cairn_archive_import(struct cairn_store *s, const struct cairn_domain *d, const char *path,
                         const struct cairn_tree_opts *opts, struct cairn_tree_ref *out,
                         struct cairn_tree_stats *st);

/*
 * Same from an open fd (borrowed: read to the end of the archive, not closed;
 * a pipe works). name is only used in messages (NULL: "fd <n>").
 */
int cairn_archive_import_fd(struct cairn_store *s, const struct cairn_domain *d, int fd, const char *name,
                            const struct cairn_tree_opts *opts, struct cairn_tree_ref *out,
                            struct cairn_tree_stats *st);

/*
 * What `image import DIR|TARBALL` calls: a directory is captured
 * (cairn_tree_capture), anything else (a regular file, a pipe, "-") is
 * imported as a tarball. CAIRN_ENOTFOUND when path does not exist.
 */
int cairn_tree_import_auto(struct cairn_store *s, const struct cairn_domain *d, const char *path,
                           const struct cairn_tree_opts *opts, struct cairn_tree_ref *out,
                           struct cairn_tree_stats *st);

#endif
