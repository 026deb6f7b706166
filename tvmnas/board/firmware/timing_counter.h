/* tvmnas timing firmware: the counter read at each kernel mark.
 *
 * One of four builds (chosen by the Makefile):
 *   TVMNAS_TIMING_DWT          board, Armv7-M/Armv8-M: DWT CYCCNT, core cycles
 *   TVMNAS_TIMING_SYSTICK      board, Armv6-M (no DWT): 24-bit SysTick on the core clock, cycles
 *   TVMNAS_TIMING_EMU_CMSDK    QEMU MPS2/AN505 under -icount: CMSDK TIMER0 + dual timer, instructions
 *   TVMNAS_TIMING_EMU_SYSTICK  QEMU AN547/micro:bit under -icount: SysTick, instructions
 * A mark stores raw register values only (a fixed instruction path); they become counts after
 * the run (timing_elapsed), so every mark costs the same and the calibrated overhead is exact. */
#ifndef TVMNAS_TIMING_COUNTER_H
#define TVMNAS_TIMING_COUNTER_H

#include <stdint.h>

typedef struct {
    uint32_t a; /* DWT: CYCCNT; SysTick: wraps before; CMSDK: TIMER0 value */
    uint32_t b; /* SysTick: current value; CMSDK: coarse (dual timer 1) value */
    uint32_t c; /* SysTick: wraps after */
} timing_raw;

void timing_counter_init(void);
/* Counts (cycles or instructions) from `from` to `to`. */
uint64_t timing_elapsed(const timing_raw *from, const timing_raw *to);
/* Reads the counter into *r with a fixed instruction path (no branches). */
static inline __attribute__((always_inline)) void timing_read(timing_raw *r);

#define TIMING_REG32(addr) (*(volatile uint32_t *)(addr))

#if defined(TVMNAS_TIMING_DWT)
#define TIMING_UNIT "cycles"
static inline __attribute__((always_inline)) void timing_read(timing_raw *r)
{
    r->a = TIMING_REG32(0xE0001004u); /* DWT_CYCCNT */
}
#elif defined(TVMNAS_TIMING_EMU_SYSTICK)
/* The emulator's SysTick count converts to instructions exactly only from a restart, so each
 * mark reads the count since the previous mark and restarts it (a fixed path as well). */
extern volatile uint32_t tvmnas_timing_wraps;
static inline __attribute__((always_inline)) void timing_read(timing_raw *r)
{
    TIMING_REG32(0xE000E010u) = 0; /* SYST_CSR: stop */
    r->b = TIMING_REG32(0xE000E018u);
    r->a = tvmnas_timing_wraps;
    TIMING_REG32(0xE000E018u) = 0; /* clear: restart from the reload value */
    tvmnas_timing_wraps = 0;
    TIMING_REG32(0xE000E010u) = 7u; /* enable, interrupt, core clock */
}
#elif defined(TVMNAS_TIMING_SYSTICK)
extern volatile uint32_t tvmnas_timing_wraps;
static inline __attribute__((always_inline)) void timing_read(timing_raw *r)
{
    r->a = tvmnas_timing_wraps;
    r->b = TIMING_REG32(0xE000E018u); /* SYST_CVR */
    r->c = tvmnas_timing_wraps;
}
#elif defined(TVMNAS_TIMING_EMU_CMSDK)
static inline __attribute__((always_inline)) void timing_read(timing_raw *r)
{
    r->a = TIMING_REG32(0x40000004u); /* TIMER0 VALUE */
    r->b = TIMING_REG32(0x40002004u); /* dual timer 1 VALUE */
}
#else
#error "build with one of TVMNAS_TIMING_DWT, TVMNAS_TIMING_SYSTICK, TVMNAS_TIMING_EMU_CMSDK, TVMNAS_TIMING_EMU_SYSTICK"
#endif

#if defined(TVMNAS_TIMING_EMU_CMSDK) || defined(TVMNAS_TIMING_EMU_SYSTICK)
#define TIMING_UNIT "instructions"
#define TIMING_EMULATOR 1
#elif !defined(TIMING_UNIT)
#define TIMING_UNIT "cycles"
#endif

#endif
