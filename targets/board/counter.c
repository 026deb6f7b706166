/* Instruction counting from an emulated timer; see counter.h. The conversion is exact because a
 * timer tick (1/TVMNAS_COUNTER_HZ) is shorter than one instruction's 2^shift ns, so
 * ticks = floor(instructions * 2^shift / tick_ns) can be inverted: instructions = ceil(ticks *
 * tick_ns / 2^shift). */
#include "counter.h"

#if !defined(TVMNAS_COUNTER_HZ) || !defined(TVMNAS_ICOUNT_SHIFT)
#error "build with -DTVMNAS_COUNTER_HZ=<timer Hz> -DTVMNAS_ICOUNT_SHIFT=<qemu -icount shift>"
#endif

#define REG32(addr) (*(volatile uint32_t *)(addr))

static uint64_t ticks_to_instructions(uint64_t ticks)
{
    const uint64_t den = (uint64_t)TVMNAS_COUNTER_HZ << TVMNAS_ICOUNT_SHIFT;
    return (ticks * 1000000000ull + den - 1) / den;
}

#if defined(TVMNAS_COUNTER_CMSDK_TIMER)

/* CMSDK APB TIMER0 on MPS2: 32-bit down-counter, the exact ("fine") count modulo its period.
 * Timer 1 of the CMSDK dual timer runs at /256 as a coarse count that says how many times the
 * fine one wrapped (a 2^40-tick range: about 687 G instructions), so no interrupt is needed. */
#define TIMER0_CTRL REG32(0x40000000u)
#define TIMER0_VALUE REG32(0x40000004u)
#define TIMER0_RELOAD REG32(0x40000008u)
#define TIMER0_INTSTATUS REG32(0x4000000Cu)
#define TIMER0_CTRL_ENABLE 1u
#define DUAL1_LOAD REG32(0x40002000u)
#define DUAL1_VALUE REG32(0x40002004u)
#define DUAL1_CONTROL REG32(0x40002008u)
#define DUAL_CONTROL_ENABLE 0x80u
#define DUAL_CONTROL_PRESCALE_256 0x08u
#define DUAL_CONTROL_SIZE_32 0x02u
#define COARSE_SHIFT 8u
#ifndef TVMNAS_TIMER_RELOAD
#define TVMNAS_TIMER_RELOAD 0xFFFFFFFFu /* smaller values only to test wrap handling */
#endif

void counter_start(void)
{
    TIMER0_CTRL = 0;
    DUAL1_CONTROL = 0;
    TIMER0_RELOAD = TVMNAS_TIMER_RELOAD;
    TIMER0_VALUE = TVMNAS_TIMER_RELOAD;
    DUAL1_LOAD = 0xFFFFFFFFu;
    DUAL1_CONTROL = DUAL_CONTROL_ENABLE | DUAL_CONTROL_PRESCALE_256 | DUAL_CONTROL_SIZE_32;
    TIMER0_CTRL = TIMER0_CTRL_ENABLE;
}

uint64_t counter_stop(void)
{
    const uint32_t value = TIMER0_VALUE;
    const uint32_t coarse_value = DUAL1_VALUE;
    TIMER0_CTRL = 0;
    DUAL1_CONTROL = 0;
    const uint64_t period = (uint64_t)TVMNAS_TIMER_RELOAD + 1u;
    const uint64_t fine = (uint64_t)(TVMNAS_TIMER_RELOAD - value);
    const uint64_t coarse = (uint64_t)(0xFFFFFFFFu - coarse_value) << COARSE_SHIFT;
    const uint64_t wraps = (coarse + period / 2u >= fine) ? (coarse + period / 2u - fine) / period : 0u;
    return ticks_to_instructions(wraps * period + fine);
}

#elif defined(TVMNAS_COUNTER_SYSTICK)

#define SYST_CSR REG32(0xE000E010u)
#define SYST_RVR REG32(0xE000E014u)
#define SYST_CVR REG32(0xE000E018u)
#define SCB_ICSR REG32(0xE000ED04u)
#define ICSR_PENDSTSET (1u << 26)
#define ICSR_PENDSTCLR (1u << 25)
#define CSR_ENABLE 1u
#define CSR_TICKINT 2u
#define CSR_CLKSOURCE_CPU 4u
#ifndef TVMNAS_SYSTICK_RELOAD
#define TVMNAS_SYSTICK_RELOAD 0x00FFFFFFu
#endif
/* Instructions SysTick_Handler executes per wrap (the asm below), subtracted from the count. */
#define SYSTICK_HANDLER_INSTRUCTIONS 5u

volatile uint32_t tvmnas_systick_wraps;

__attribute__((naked)) void SysTick_Handler(void)
{
    __asm__ volatile(
        ".syntax unified\n\t"
        "ldr r0, =tvmnas_systick_wraps\n\t"
        "ldr r1, [r0]\n\t"
        "adds r1, r1, #1\n\t"
        "str r1, [r0]\n\t"
        "bx lr\n\t"
        ".ltorg\n\t");
}

void counter_start(void)
{
    __asm__ volatile("cpsid i" ::: "memory");
    SYST_CSR = 0;
    SYST_RVR = TVMNAS_SYSTICK_RELOAD;
    SYST_CVR = 0;
    SCB_ICSR = ICSR_PENDSTCLR;
    tvmnas_systick_wraps = 0;
    SYST_CSR = CSR_ENABLE | CSR_TICKINT | CSR_CLKSOURCE_CPU;
    __asm__ volatile("cpsie i" ::: "memory");
}

uint64_t counter_stop(void)
{
    __asm__ volatile("cpsid i" ::: "memory");
    uint32_t value = SYST_CVR;
    uint32_t pending = SCB_ICSR & ICSR_PENDSTSET;
    SYST_CSR = 0;
    SCB_ICSR = ICSR_PENDSTCLR;
    uint32_t wraps = tvmnas_systick_wraps;
    __asm__ volatile("cpsie i" ::: "memory");
    const uint64_t period = (uint64_t)TVMNAS_SYSTICK_RELOAD + 1u;
    uint64_t ticks = (uint64_t)wraps * period + (TVMNAS_SYSTICK_RELOAD - value);
    if (pending && value > TVMNAS_SYSTICK_RELOAD / 2u) {
        ticks += period; /* wrapped between cpsid and the read */
    }
    return ticks_to_instructions(ticks) - (uint64_t)wraps * SYSTICK_HANDLER_INSTRUCTIONS;
}

#else
#error "build with -DTVMNAS_COUNTER_CMSDK_TIMER or -DTVMNAS_COUNTER_SYSTICK"
#endif
