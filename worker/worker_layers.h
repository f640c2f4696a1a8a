/*
 * worker_layers.h: the layer cache of a worker (docs/internals/sandboxes.md "Layer cache").
 *
 * Each image's own layer (its tree, materialised in overlay mode: whiteouts as char 0/0, opaque dirs
 * marked) lives in DIR/<image id>, built once and never changed: a sandbox stacks the dirs of its image
 * chain as overlay lower dirs. A layer is built into DIR/<image id>.tmp and renamed when complete (after a
 * syncfs), so a crash never leaves a half layer under its final name; leftover .tmp dirs are removed when
 * the cache opens. Concurrent requests for one image wait for a single builder; when that build fails, the
 * next waiter builds (its own fetches may succeed where the first failed).
 *
 * Thread-safety: every function may be called from any thread.
 */
#ifndef CAIRN_WORKER_LAYERS_H
#define CAIRN_WORKER_LAYERS_H

#include "cairn/prelude.h"

struct cairn_wk_layers;

/* Open (and create, 0711) the cache in dir, an absolute path; removes leftover *.tmp builds. */
int cairn_wk_layers_new(struct cairn_wk_layers **out, const char *dir);
void cairn_wk_layers_destroy(struct cairn_wk_layers **l);

/* An image id usable as a layer dir name: 1..64 of [A-Za-z0-9_-], starting with a letter or digit. */
bool cairn_wk_layer_id_valid(const char *image);

/* Fill tmp_dir (absent when called) with the layer; CAIRN_OK or an error with its message set. */
typedef int (*cairn_wk_layer_build_fn)(void *arg, const char *tmp_dir);

/*
 * The layer dir of image (*path: caller frees with cairn_free), built with build(arg, tmp) unless it is
 * there already. *built: this call built it. CAIRN_EINVAL for an invalid id, the build's error, or
 * CAIRN_EIO when the finished build cannot be moved into place.
 */
int cairn_wk_layers_get(struct cairn_wk_layers *l, const char *image, cairn_wk_layer_build_fn build, void *arg,
                        char **path, bool *built);

/* Layers present (for logs and tests). */
size_t cairn_wk_layers_count(struct cairn_wk_layers *l);

/* rm -rf of path without following symlinks or crossing into other mounts (no-op when missing). */
int cairn_wk_rmrf(const char *path);

#endif
