/*
 * testutil.h: helpers shared by the unit tests (temp dirs, deterministic random
 * data, files). Real files on disk under $CAIRN_TEST_TMP (the build's testtmp/)
 * or /tmp; every helper aborts the test (cmocka fail) on OS errors, since a
 * test's own setup failing is a test failure.
 */
#ifndef CAIRN_TESTUTIL_H
#define CAIRN_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/* mkdtemp under the test tmp root; caller frees the string (free) and calls tu_rmrf. */
char *tu_tempdir(const char *tag);
/* rm -rf path (no symlink following, any depth, single-quoted: no quotes in path). */
void tu_rmrf(const char *path);
/* Deterministic pseudo-random bytes (xorshift64*), seeded. */
void tu_fill_random(uint64_t *state, void *buf, size_t n);
uint64_t tu_rand(uint64_t *state);
/* Write a file with content (creating parents is the caller's job). */
void tu_write_file(const char *path, const void *data, size_t n);
/* Read a whole file; caller frees. NULL if missing. */
uint8_t *tu_read_file(const char *path, size_t *n);
/* snprintf into a static rotating buffer (8 slots) for building paths. */
const char *tu_path(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Run a shell command; returns its exit status. */
int tu_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
