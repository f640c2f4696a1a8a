/*
 * alloc.c: thin wrappers over the C allocator, so that allocation policy
 * (accounting, failure injection, OOM handling) has one place to live.
 */
#include "cairn/alloc.h"
#include "cairn/err.h"

#include <stdlib.h>

void *cairn_malloc(size_t n) { return malloc(n ? n : 1); }

void *cairn_calloc(size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        return NULL;
    return calloc(count ? count : 1, size ? size : 1);
}

void *cairn_realloc(void *p, size_t n) { return realloc(p, n ? n : 1); }

int cairn_array_grow(void **arr, size_t *cap, size_t need, size_t elem_size)
{
    if (need <= *cap)
        return CAIRN_OK;
    size_t ncap = *cap ? *cap : 8;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2)
            return cairn_err_set(CAIRN_ENOMEM, "array too large");
        ncap *= 2;
    }
    if (elem_size && ncap > SIZE_MAX / elem_size)
        return cairn_err_set(CAIRN_ENOMEM, "array too large");
    void *n = realloc(*arr, ncap * elem_size);
    if (!n)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory growing an array to %zu elements", ncap);
    *arr = n;
    *cap = ncap;
    return CAIRN_OK;
}

char *cairn_strdup(const char *s) { return s ? strdup(s) : NULL; }
char *cairn_strndup(const char *s, size_t n) { return s ? strndup(s, n) : NULL; }

void *cairn_memdup(const void *p, size_t n)
{
    void *q = malloc(n ? n : 1);
    if (q && n)
        memcpy(q, p, n);
    return q;
}

void cairn_free(void *p) { free(p); }
