/* Vector table, reset and fault handlers for every tvmnas target (Armv6-M to Armv8.1-M).
 *
 * Reset_Handler enables the FPU/MVE (CPACR CP10/CP11) when the code is built for one, copies .data,
 * zeroes .bss, calls main and exits through semihosting with main's return value. Each fault
 * handler exits with its own status (exit_codes.h), so a crashing guest becomes a named error on
 * the host instead of a hang. */
#include <stdint.h>

#include "exit_codes.h"
#include "semihost.h"

extern uint32_t __data_load;
extern uint32_t __data_start;
extern uint32_t __data_end;
extern uint32_t __bss_start;
extern uint32_t __bss_end;
extern uint32_t __stack_top;

int main(void);
void Reset_Handler(void) __attribute__((noreturn));

#define CPACR (*(volatile uint32_t *)0xE000ED88u)

void Reset_Handler(void)
{
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
    CPACR |= (0xFu << 20); /* full access to CP10 and CP11 */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    const uint32_t *src = &__data_load;
    for (uint32_t *dst = &__data_start; dst < &__data_end;) {
        *dst++ = *src++;
    }
    for (uint32_t *dst = &__bss_start; dst < &__bss_end;) {
        *dst++ = 0;
    }
    semihost_exit(main());
}

static void fault_exit(int code, const char *msg) __attribute__((noreturn));
static void fault_exit(int code, const char *msg)
{
    semihost_puts(msg);
    semihost_exit(code);
}

void NMI_Handler(void) { fault_exit(TVMNAS_EXIT_NMI, "tvmnas: NMI\n"); }
void HardFault_Handler(void) { fault_exit(TVMNAS_EXIT_HARDFAULT, "tvmnas: HardFault\n"); }
void MemManage_Handler(void) { fault_exit(TVMNAS_EXIT_MEMMANAGE, "tvmnas: MemManage fault\n"); }
void BusFault_Handler(void) { fault_exit(TVMNAS_EXIT_BUSFAULT, "tvmnas: BusFault\n"); }
void UsageFault_Handler(void) { fault_exit(TVMNAS_EXIT_USAGEFAULT, "tvmnas: UsageFault\n"); }
void SecureFault_Handler(void) { fault_exit(TVMNAS_EXIT_SECUREFAULT, "tvmnas: SecureFault\n"); }
void Default_Handler(void) { fault_exit(TVMNAS_EXIT_UNEXPECTED_IRQ, "tvmnas: unexpected interrupt\n"); }

void SVC_Handler(void) __attribute__((weak, alias("Default_Handler")));
void DebugMon_Handler(void) __attribute__((weak, alias("Default_Handler")));
void PendSV_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));

#define NUM_IRQS 64

typedef void (*vector_t)(void);

__attribute__((section(".vectors"), used)) const vector_t tvmnas_vectors[16 + NUM_IRQS] = {
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
