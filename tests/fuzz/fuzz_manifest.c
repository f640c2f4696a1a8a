/*
 * fuzz_manifest.c: libFuzzer target for the manifest decoder (manifest.h).
 *
 * The input is a manifest as read back from (possibly damaged or forged)
 * chunks. cairn_manifest_decode must never crash, leak or read out of bounds,
 * and:
 *   - on failure the manifest is empty and a message is set;
 *   - on success it is a fixed point: encode it, decode that again, and the two
 *     manifests are identical, and encoding the second gives the same bytes
 *     (the round-trip assertion);
 *   - every decoded entry satisfies what the decoder promises (sorted, valid
 *     paths, pieces adding up to the size), checked again independently here.
 * Seeds in corpus/manifest/ are valid manifests (every entry type, xattrs,
 * holes, odd names, "entries" before "v", an unknown key), so mutations start
 * deep inside the entry decoder.
 */
#include "cairn/prelude.h"
#include "cairn/err.h"
#include "cairn/manifest.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same_entry(const struct cairn_entry *a, const struct cairn_entry *b)
{
    if (strcmp(a->path, b->path) != 0 || a->type != b->type || a->flags != b->flags || a->mode != b->mode ||
        a->uid != b->uid || a->gid != b->gid || a->mtime_ns != b->mtime_ns || a->size != b->size ||
        a->rdev != b->rdev || (a->target == NULL) != (b->target == NULL) ||
        (a->target && strcmp(a->target, b->target) != 0) || a->n_xattrs != b->n_xattrs ||
        a->n_pieces != b->n_pieces)
        __builtin_trap();
    for (uint32_t i = 0; i < a->n_xattrs; i++) {
        const struct cairn_xattr *x = &a->xattrs[i], *y = &b->xattrs[i];
        if (strcmp(x->name, y->name) != 0 || x->len != y->len || (x->len && memcmp(x->value, y->value, x->len) != 0))
            __builtin_trap();
    }
    for (uint32_t i = 0; i < a->n_pieces; i++) {
        const struct cairn_piece *p = &a->pieces[i], *q = &b->pieces[i];
        if (p->hole != q->hole || p->len != q->len || (!p->hole && memcmp(p->id, q->id, sizeof(p->id)) != 0))
            __builtin_trap();
    }
}

static void check_invariants(const struct cairn_manifest *m)
{
    for (size_t i = 0; i < m->n; i++) {
        const struct cairn_entry *e = &m->entries[i];
        if (cairn_path_validate(e->path, strlen(e->path)) != CAIRN_OK)
            __builtin_trap();
        if (i > 0 && cairn_path_cmp(m->entries[i - 1].path, e->path) >= 0)
            __builtin_trap();
        uint64_t sum = 0;
        for (uint32_t k = 0; k < e->n_pieces; k++)
            sum += e->pieces[k].len;
        if (sum != e->size || (e->type != CAIRN_ET_FILE && (e->n_pieces || e->size)))
            __builtin_trap();
        if ((e->type == CAIRN_ET_SYMLINK || e->type == CAIRN_ET_HARDLINK) != (e->target != NULL))
            __builtin_trap();
        if (e->type < CAIRN_ET_FILE || e->type > CAIRN_ET_WHITEOUT || e->mode > 07777)
            __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cairn_manifest m, m2;
    struct cairn_buf b1, b2;
    cairn_buf_init(&b1, 0);
    cairn_buf_init(&b2, 0);
    cairn_manifest_init(&m2);

    int rc = cairn_manifest_decode(data, size, &m);
    if (rc != CAIRN_OK) {
        if (m.n != 0 || m.entries != NULL || cairn_err_msg()[0] == '\0')
            __builtin_trap();
        if (rc != CAIRN_ECORRUPT && rc != CAIRN_EVERSION && rc != CAIRN_ENOMEM)
            __builtin_trap();
        return 0;
    }
    check_invariants(&m);
    if (cairn_manifest_encode(&m, &b1) != CAIRN_OK)
        __builtin_trap();
    if (cairn_manifest_decode(b1.data, b1.len, &m2) != CAIRN_OK)
        __builtin_trap();
    if (m2.n != m.n)
        __builtin_trap();
    for (size_t i = 0; i < m.n; i++)
        same_entry(&m.entries[i], &m2.entries[i]);
    if (cairn_manifest_encode(&m2, &b2) != CAIRN_OK || b2.len != b1.len || memcmp(b1.data, b2.data, b1.len) != 0)
        __builtin_trap();

    cairn_manifest_release(&m);
    cairn_manifest_release(&m2);
    cairn_buf_release(&b1);
    cairn_buf_release(&b2);
    return 0;
}
