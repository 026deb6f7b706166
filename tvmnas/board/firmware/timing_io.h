/* Output of the timing firmware and the hooks a board supplies.
 *
 * tvmnas_putchar(c) sends one character; the default (weak) one uses Arm semihosting
 * (SYS_WRITEC), which needs a debugger (or QEMU) attached. Define your own in a source file
 * passed as `make USER_SRC=uart.c` to print over a UART or RTT instead.
 * tvmnas_board_init() runs first: set the clock, flash wait states, caches and the UART there,
 * as your application does (the default does nothing, so the core runs on its reset clock). */
#ifndef TVMNAS_TIMING_IO_H
#define TVMNAS_TIMING_IO_H

#include <stdint.h>

void tvmnas_putchar(int c);
void tvmnas_board_init(void);
void timing_puts(const char *s);
void timing_putu(uint64_t v);
/* Leave: exit status through semihosting on the emulator; a board stops in a wfi loop. */
void timing_exit(int code) __attribute__((noreturn));

#endif
