/* Exact instruction counter for the measured window, from a timer that follows QEMU's virtual
 * clock under `-icount shift=TVMNAS_ICOUNT_SHIFT` (each instruction = 2^shift ns of virtual time).
 * Built with one of TVMNAS_COUNTER_CMSDK_TIMER (MPS2: CMSDK APB TIMER0, 32-bit) or
 * TVMNAS_COUNTER_SYSTICK (24-bit SysTick on the core clock, wraps counted by an interrupt whose
 * own instructions are subtracted), at TVMNAS_COUNTER_HZ. */
#ifndef TVMNAS_COUNTER_H
#define TVMNAS_COUNTER_H

#include <stdint.h>

/* Restart the timer from zero (the window opens here). */
void counter_start(void);
/* Stop the timer; return the instructions executed since counter_start() (range: about 687 G
 * instructions with the CMSDK timers, 2^56 timer ticks with SysTick). */
uint64_t counter_stop(void);

#endif
