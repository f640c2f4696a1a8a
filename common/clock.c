/* clock.c: see clock.h. The offset is persisted by the coordinator so a restart keeps advanced time. */
#include "cairn/clock.h"
#include "cairn/bytes.h"
#include "cairn/err.h"

void cairn_clock_init(struct cairn_clock *c, bool test, int64_t initial_offset_ns)
{
    c->offset_ns = initial_offset_ns;
    c->test = test;
}

int64_t cairn_clock_now_ns(struct cairn_clock *c)
{
    return cairn_now_real_ns() + c->offset_ns;
}

int64_t cairn_clock_offset_ns(struct cairn_clock *c)
{
    return c->offset_ns;
}

int cairn_clock_advance(struct cairn_clock *c, int64_t ns)
{
    if (!c->test)
        return cairn_err_set(CAIRN_EPERM, "the clock can only be advanced on a coordinator started with --test-clock");
    if (ns <= 0)
        return cairn_err_set(CAIRN_EINVAL, "the clock only moves forward");
    c->offset_ns += ns;
    return CAIRN_OK;
}
