/* Arm semihosting: file I/O with the host and a clean exit through the emulator (bkpt 0xAB). */
#ifndef TVMNAS_SEMIHOST_H
#define TVMNAS_SEMIHOST_H

#include <stddef.h>
#include <stdint.h>

/* Open a host file; mode is "rb" or "wb". Returns a handle >= 0, or -1. */
int semihost_open(const char *path, const char *mode);
/* Read/write exactly n bytes; return 0 on success, -1 on a short transfer. */
int semihost_read(int handle, void *buf, size_t n);
int semihost_write(int handle, const void *buf, size_t n);
int semihost_close(int handle);
/* Print a NUL-terminated message on the emulator's stderr. */
void semihost_puts(const char *msg);
/* Leave the emulator with this exit status (SYS_EXIT_EXTENDED). */
void semihost_exit(int code) __attribute__((noreturn));

#endif
