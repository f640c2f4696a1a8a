/*
 * clock.h: the injectable wall clock of the coordinator (DESIGN §5).
 *
 * Retention compares record times with cairn_clock_now_ns(). A test clock can be
 * moved forward (never back) with cairn_clock_advance, which is refused with
 * CAIRN_EPERM unless the clock was made with test = true (the coordinator's
 * explicit --test-clock flag). Thread-safe.
 */
#ifndef CAIRN_CLOCK_H
#define CAIRN_CLOCK_H

#include "cairn/prelude.h"

struct cairn_clock {
    _Atomic int64_t offset_ns;
    bool test;
};

void cairn_clock_init(struct cairn_clock *c, bool test, int64_t initial_offset_ns);
/* Real time (ns since the Unix epoch) plus the advanced offset. */
int64_t cairn_clock_now_ns(struct cairn_clock *c);
int64_t cairn_clock_offset_ns(struct cairn_clock *c);
int cairn_clock_advance(struct cairn_clock *c, int64_t ns);

#endif
