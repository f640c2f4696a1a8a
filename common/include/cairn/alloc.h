/*
 * alloc.h: the allocation wrappers. common/ never calls malloc/free directly.
 *
 * Contract: every function returns NULL on failure (and never aborts); the
 * caller turns that into CAIRN_ENOMEM. Memory from these functions is freed with
 * cairn_free (NULL-safe). CAIRN_FREE(p) frees and nulls a reachable pointer.
 * Secrets do not use these: they live in guarded memory (crypto.h, cairn_secret).
 */
#ifndef CAIRN_ALLOC_H
#define CAIRN_ALLOC_H

#include "cairn/prelude.h"

void *cairn_malloc(size_t n);
void *cairn_calloc(size_t count, size_t size);  /* overflow-checked */
void *cairn_realloc(void *p, size_t n);
/* Grow an array to hold at least `need` elements; *cap is updated. CAIRN_OK or CAIRN_ENOMEM. */
int cairn_array_grow(void **arr, size_t *cap, size_t need, size_t elem_size);
char *cairn_strdup(const char *s);
char *cairn_strndup(const char *s, size_t n);
void *cairn_memdup(const void *p, size_t n);
void cairn_free(void *p);

#define CAIRN_FREE(p)      \
    do {                   \
        cairn_free(p);     \
        (p) = NULL;        \
    } while (0)

#endif
