/* Vector table and reset for the timing firmware (every Cortex-M profile, board and emulator).
 * Reset_Handler enables the FPU/MVE when built for one, copies .data (and weights placed in RAM),
 * zeroes .bss, runs main and leaves through timing_exit. A fault prints one tvmnas-fault line. */
#include <stdint.h>

#include "timing_io.h"

extern uint32_t __data_load;
extern uint32_t __data_start;
extern uint32_t __data_end;
extern uint32_t __bss_start;
extern uint32_t __bss_end;
extern uint32_t __stack_top;

int main(void);
void Reset_Handler(void) __attribute__((noreturn));

void Reset_Handler(void)
{
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
    *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20); /* CPACR: CP10, CP11 full access */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    const uint32_t *src = &__data_load;
    for (uint32_t *dst = &__data_start; dst < &__data_end;) {
        *dst++ = *src++;
    }
    for (uint32_t *dst = &__bss_start; dst < &__bss_end;) {
        *dst++ = 0;
    }
    timing_exit(main());
}

static void fault(const char *what) __attribute__((noreturn));
static void fault(const char *what)
{
    timing_puts("tvmnas-fault ");
    timing_puts(what);
    timing_puts("\n");
    timing_exit(101);
}

void HardFault_Handler(void) { fault("HardFault"); }
void Default_Handler(void) { fault("unexpected interrupt"); }
void NMI_Handler(void) __attribute__((weak, alias("Default_Handler")));
void MemManage_Handler(void) __attribute__((weak, alias("HardFault_Handler")));
void BusFault_Handler(void) __attribute__((weak, alias("HardFault_Handler")));
void UsageFault_Handler(void) __attribute__((weak, alias("HardFault_Handler")));
void SecureFault_Handler(void) __attribute__((weak, alias("HardFault_Handler")));
void SVC_Handler(void) __attribute__((weak, alias("Default_Handler")));
void DebugMon_Handler(void) __attribute__((weak, alias("Default_Handler")));
void PendSV_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));

#define NUM_IRQS 64
typedef void (*vector_t)(void);

__attribute__((section(".vectors"), used)) const vector_t tvmnas_timing_vectors[16 + NUM_IRQS] = {
    (vector_t)(uintptr_t)&__stack_top,
    Reset_Handler,
    NMI_Handler,
    HardFault_Handler,
    MemManage_Handler,
    BusFault_Handler,
    UsageFault_Handler,
    SecureFault_Handler,
    0,
    0,
    0,
    SVC_Handler,
    DebugMon_Handler,
    0,
    PendSV_Handler,
    SysTick_Handler,
    [16 ... 16 + NUM_IRQS - 1] = Default_Handler,
};
