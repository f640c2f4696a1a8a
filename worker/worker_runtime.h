/*
 * worker_runtime.h: the sandbox runtime of a worker, as far as this issue goes.
 *
 * Sandboxes (gVisor runsc, DESIGN §6) are a later issue. What exists now is the place they will live:
 * the capacity announced at registration, the count of running sandboxes (always 0 for now) and the
 * runtime fingerprint (docs/internals/cluster.md "Fingerprint"):
 *     runsc-<version>/cpu-<first 16 hex of BLAKE2b-128(cpu flags line)>
 * where <version> is the third word of the first line of `runsc --version` (e.g. 0.0~20221219.0) and
 * "none" when runsc is not installed or does not answer; the cpu flags line is the first "flags" (x86)
 * or "Features" (arm) line of /proc/cpuinfo, without its newline ("cpu-unknown" when there is none).
 *
 * Thread-safety: the fingerprint and capacity are read-only after cairn_wk_runtime_new; the sandbox
 * count is atomic.
 */
#ifndef CAIRN_WORKER_RUNTIME_H
#define CAIRN_WORKER_RUNTIME_H

#include "cairn/prelude.h"

#define CAIRN_WK_FINGERPRINT_MAX 256

struct cairn_wk_runtime;

/* Probe runsc and the CPU. Never fails on a missing runsc (the fingerprint says none). CAIRN_ENOMEM. */
int cairn_wk_runtime_new(struct cairn_wk_runtime **out, uint64_t capacity);
void cairn_wk_runtime_destroy(struct cairn_wk_runtime **rt);
const char *cairn_wk_runtime_fingerprint(const struct cairn_wk_runtime *rt);
uint64_t cairn_wk_runtime_capacity(const struct cairn_wk_runtime *rt);
uint64_t cairn_wk_runtime_sandboxes(const struct cairn_wk_runtime *rt);

/* The fingerprint computation itself (exposed for tests). out holds CAIRN_WK_FINGERPRINT_MAX + 1 bytes. */
void cairn_wk_fingerprint(char *out, const char *runsc_version, const char *cpu_flags_line);

#endif
