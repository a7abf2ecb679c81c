// sd_clock.h: the monotonic wall clock in seconds, for timings, progress rates and deadlines anywhere in
// the project (engine/ is the lowest layer, so every layer may include it). Header only.
#ifndef SD_CLOCK_H
#define SD_CLOCK_H

#include <time.h>

// Seconds on CLOCK_MONOTONIC (unaffected by changes to the system time); only differences are meaningful.
static inline double sd_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
