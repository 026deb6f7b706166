/* Counter set-up and raw-to-count conversion for the timing firmware (see timing_counter.h). */
#include "timing_counter.h"

#if defined(TVMNAS_TIMING_DWT)

#define DEMCR TIMING_REG32(0xE000EDFCu)
#define DWT_CTRL TIMING_REG32(0xE0001000u)
#define DWT_CYCCNT TIMING_REG32(0xE0001004u)
#define DWT_LAR TIMING_REG32(0xE0001FB0u)

void timing_counter_init(void)
{
    DEMCR |= 1u << 24; /* TRCENA */
    DWT_LAR = 0xC5ACCE55u; /* unlocks the DWT where a lock exists (Cortex-M7); ignored elsewhere */
    DWT_CYCCNT = 0;
    DWT_CTRL |= 1u; /* CYCCNTENA */
}

uint64_t timing_elapsed(const timing_raw *from, const timing_raw *to)
{
    return (uint32_t)(to->a - from->a); /* modulo 2^32: a kernel must take under 2^32 cycles */
}

#elif defined(TVMNAS_TIMING_SYSTICK) || defined(TVMNAS_TIMING_EMU_SYSTICK)

#define SYST_CSR TIMING_REG32(0xE000E010u)
#define SYST_RVR TIMING_REG32(0xE000E014u)
#define SYST_CVR TIMING_REG32(0xE000E018u)
#define RELOAD 0x00FFFFFFu
#define PERIOD ((uint64_t)RELOAD + 1u)
/* Instructions the wrap handler below executes (subtracted on the emulator, like the harness). */
#define HANDLER_INSTRUCTIONS 5u

volatile uint32_t tvmnas_timing_wraps;

__attribute__((naked)) void SysTick_Handler(void)
{
    __asm__ volatile(
        ".syntax unified\n\t"
        "ldr r0, =tvmnas_timing_wraps\n\t"
        "ldr r1, [r0]\n\t"
        "adds r1, r1, #1\n\t"
        "str r1, [r0]\n\t"
        "bx lr\n\t"
        ".ltorg\n\t");
}

void timing_counter_init(void)
{
    SYST_CSR = 0;
    SYST_RVR = RELOAD;
    SYST_CVR = 0;
    tvmnas_timing_wraps = 0;
    SYST_CSR = 7u; /* enable, interrupt on wrap, core clock */
    __asm__ volatile("cpsie i" ::: "memory");
}


#if defined(TVMNAS_TIMING_EMU_SYSTICK)
/* `to` holds the count since the restart at `from` (timing_read restarts the timer). */
uint64_t timing_elapsed(const timing_raw *from, const timing_raw *to)
{
    (void)from;
    const uint64_t t = (uint64_t)to->a * PERIOD + (RELOAD - to->b);
    const uint64_t den = (uint64_t)TVMNAS_COUNTER_HZ << TVMNAS_ICOUNT_SHIFT;
    return (t * 1000000000ull + den - 1u) / den - (uint64_t)to->a * HANDLER_INSTRUCTIONS;
}
#else
/* Wraps counted when the current value was read: the second read if a wrap came in between and
 * the value is from the new period (high), else the first. */
static uint64_t ticks(const timing_raw *r)
{
    const uint32_t wraps = (r->a != r->c && r->b > RELOAD / 2u) ? r->c : r->a;
    return (uint64_t)wraps * PERIOD + (RELOAD - r->b);
}

uint64_t timing_elapsed(const timing_raw *from, const timing_raw *to)
{
    return ticks(to) - ticks(from); /* the wrap handler's few cycles per 2^24 are included */
}
#endif

#elif defined(TVMNAS_TIMING_EMU_CMSDK)

#define TIMER0_CTRL TIMING_REG32(0x40000000u)
#define TIMER0_VALUE TIMING_REG32(0x40000004u)
#define TIMER0_RELOAD TIMING_REG32(0x40000008u)
#define DUAL1_LOAD TIMING_REG32(0x40002000u)
#define DUAL1_VALUE TIMING_REG32(0x40002004u)
#define DUAL1_CONTROL TIMING_REG32(0x40002008u)

void timing_counter_init(void)
{
    TIMER0_CTRL = 0;
    DUAL1_CONTROL = 0;
    TIMER0_RELOAD = 0xFFFFFFFFu;
    TIMER0_VALUE = 0xFFFFFFFFu;
    DUAL1_LOAD = 0xFFFFFFFFu;
    DUAL1_CONTROL = 0x80u | 0x08u | 0x02u; /* enable, /256, 32-bit */
    TIMER0_CTRL = 1u;
}

/* Ticks since init: the fine count modulo 2^32, its wraps from the /256 coarse count. */
static uint64_t ticks(const timing_raw *r)
{
    const uint64_t period = 1ull << 32;
    const uint64_t fine = (uint64_t)(0xFFFFFFFFu - r->a);
    const uint64_t coarse = (uint64_t)(0xFFFFFFFFu - r->b) << 8;
    const uint64_t wraps = (coarse + period / 2u >= fine) ? (coarse + period / 2u - fine) / period : 0u;
    return wraps * period + fine;
}

static uint64_t instructions(uint64_t t)
{
    const uint64_t den = (uint64_t)TVMNAS_COUNTER_HZ << TVMNAS_ICOUNT_SHIFT;
    return (t * 1000000000ull + den - 1u) / den;
}

uint64_t timing_elapsed(const timing_raw *from, const timing_raw *to)
{
    return instructions(ticks(to)) - instructions(ticks(from));
}

#endif
