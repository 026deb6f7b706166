/* Character output (weak semihosting default), number formatting and exit for the timing firmware. */
#include "timing_io.h"

static int semihost_call(int op, const void *arg)
{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

__attribute__((weak)) void tvmnas_putchar(int c)
{
    const char ch = (char)c;
    semihost_call(0x03, &ch); /* SYS_WRITEC */
}

__attribute__((weak)) void tvmnas_board_init(void) {}

void timing_puts(const char *s)
{
    while (*s) {
        tvmnas_putchar(*s++);
    }
}

void timing_putu(uint64_t v)
{
    char buf[21];
    int i = 20;
    buf[i] = '\0';
    do {
        buf[--i] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v && i > 0);
    timing_puts(&buf[i]);
}

void timing_exit(int code)
{
#ifdef TIMING_EMULATOR_EXIT
    const uint32_t args[2] = {0x20026u, (uint32_t)code}; /* ADP_Stopped_ApplicationExit */
    semihost_call(0x20, args);                             /* SYS_EXIT_EXTENDED */
#else
    (void)code;
#endif
    for (;;) {
        __asm__ volatile("wfi");
    }
}
