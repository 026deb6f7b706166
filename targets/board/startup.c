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
extern uint32_t __stack_bottom;

int main(void);
void Reset_Handler(void) __attribute__((noreturn));

#define REG32(addr) (*(volatile uint32_t *)(addr))
#define CPACR REG32(0xE000ED88u)
#define SCB_CFSR REG32(0xE000ED28u)
#define SCB_MMFAR REG32(0xE000ED34u)
#define MPU_CTRL REG32(0xE000ED94u)
#define MPU_RNR REG32(0xE000ED98u)
#define MPU_RBAR REG32(0xE000ED9Cu)
#define MPU_RASR REG32(0xE000EDA0u)
#define CFSR_MSTKERR (1u << 4)
#define CFSR_DACCVIOL (1u << 1)
#define CFSR_MMARVALID (1u << 7)
#define CFSR_STKOF (1u << 20)
#define STACK_GUARD_BYTES 1024u

/* Catch stack overflow: Armv8-M checks SP against MSPLIM in hardware; on Armv7-M an MPU region
 * with no access sits under the stack (memory below RAM on the MPS2 images ignores writes, so an
 * overflow would otherwise go unnoticed). Armv6-M (micro:bit) faults on the unmapped address. */
static void stack_guard_init(void)
{
#if defined(__ARM_ARCH_8M_MAIN__) || defined(__ARM_ARCH_8_1M_MAIN__)
    __asm__ volatile("msr msplim, %0" : : "r"(&__stack_bottom));
#elif defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__)
    MPU_RNR = 0;
    MPU_RBAR = (uint32_t)(uintptr_t)&__stack_bottom - STACK_GUARD_BYTES;
    /* XN, AP = no access, SIZE = log2(1024) - 1, enable */
    MPU_RASR = (1u << 28) | (0u << 24) | (9u << 1) | 1u;
    MPU_CTRL = (1u << 2) | 1u; /* PRIVDEFENA: the default map elsewhere */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
}

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
    stack_guard_init();
    semihost_exit(main());
}

static void fault_exit(int code, const char *msg) __attribute__((noreturn));
static void fault_exit(int code, const char *msg)
{
    semihost_puts(msg);
    semihost_exit(code);
}

void NMI_Handler(void) { fault_exit(TVMNAS_EXIT_NMI, "tvmnas: NMI\n"); }
/* Configurable faults are left disabled, so they escalate here; CFSR still says why. */
static void hardfault_report(uint32_t sp_at_fault) __attribute__((noreturn, used));
static void hardfault_report(uint32_t sp_at_fault)
{
    if (sp_at_fault < (uint32_t)(uintptr_t)&__stack_bottom) {
        fault_exit(TVMNAS_EXIT_STACK_OVERFLOW, "tvmnas: stack overflow\n");
    }
#if defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_8M_MAIN__) || \
    defined(__ARM_ARCH_8_1M_MAIN__)
    const uint32_t cfsr = SCB_CFSR;
    const uint32_t guard = (uint32_t)(uintptr_t)&__stack_bottom - STACK_GUARD_BYTES;
    const int in_guard = (cfsr & CFSR_MMARVALID) && SCB_MMFAR >= guard && SCB_MMFAR < guard + STACK_GUARD_BYTES;
    if ((cfsr & (CFSR_STKOF | CFSR_MSTKERR)) || ((cfsr & CFSR_DACCVIOL) && in_guard)) {
        fault_exit(TVMNAS_EXIT_STACK_OVERFLOW, "tvmnas: stack overflow\n");
    }
#endif
    fault_exit(TVMNAS_EXIT_HARDFAULT, "tvmnas: HardFault\n");
}

/* Restart from a sane stack (the fault may be a stack overflow), then report with the old SP. */
__attribute__((naked)) void HardFault_Handler(void)
{
    __asm__ volatile(
        ".syntax unified\n\t"
        "mov r0, sp\n\t"
        "ldr r1, =__stack_top\n\t"
        "mov sp, r1\n\t"
        "ldr r1, =hardfault_report\n\t"
        "bx r1\n\t"
        ".ltorg\n\t");
}
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
