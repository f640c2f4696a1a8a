/*
 * prelude.h: the first include of every cairn source file.
 *
 * Why: one place for feature macros and the standard headers every module uses,
 * so that platform #ifdefs live in one file. Banned functions (strcpy, strcat,
 * sprintf, strtok, atoi, gmtime, localtime, raw malloc in common/) are enforced
 * by tests/lint/check-style.sh, a ctest test: a macro list here would break the
 * system headers included after it.
 */
#ifndef CAIRN_PRELUDE_H
#define CAIRN_PRELUDE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define CAIRN_VERSION "0.1.0"

#define CAIRN_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define CAIRN_MIN(a, b) ((a) < (b) ? (a) : (b))
#define CAIRN_MAX(a, b) ((a) > (b) ? (a) : (b))
#define CAIRN_UNUSED(x) ((void)(x))
#define CAIRN_PRINTF(f, a) __attribute__((format(printf, f, a)))

#endif
