/* Arm semihosting calls used by the harness: open/read/write/close a host file, print, exit. */
#include "semihost.h"

#include <string.h>

enum {
    SYS_OPEN = 0x01,
    SYS_CLOSE = 0x02,
    SYS_WRITE0 = 0x04,
    SYS_WRITE = 0x05,
    SYS_READ = 0x06,
    SYS_EXIT_EXTENDED = 0x20,
    ADP_STOPPED_APPLICATION_EXIT = 0x20026,
    OPEN_MODE_RB = 1,
    OPEN_MODE_WB = 5,
};

static int semihost_call(int op, const void *arg)
{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

int semihost_open(const char *path, const char *mode)
{
    uint32_t args[3];
    args[0] = (uint32_t)(uintptr_t)path;
    args[1] = (mode[0] == 'w') ? OPEN_MODE_WB : OPEN_MODE_RB;
    args[2] = (uint32_t)strlen(path);
    return semihost_call(SYS_OPEN, args);
}

int semihost_read(int handle, void *buf, size_t n)
{
    uint32_t args[3] = {(uint32_t)handle, (uint32_t)(uintptr_t)buf, (uint32_t)n};
    return semihost_call(SYS_READ, args) == 0 ? 0 : -1; /* returns bytes NOT read */
}

int semihost_write(int handle, const void *buf, size_t n)
{
    uint32_t args[3] = {(uint32_t)handle, (uint32_t)(uintptr_t)buf, (uint32_t)n};
    return semihost_call(SYS_WRITE, args) == 0 ? 0 : -1; /* returns bytes NOT written */
}

int semihost_close(int handle)
{
    uint32_t args[1] = {(uint32_t)handle};
    return semihost_call(SYS_CLOSE, args);
}

void semihost_puts(const char *msg)
{
    semihost_call(SYS_WRITE0, msg);
}

void semihost_exit(int code)
{
    uint32_t args[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)code};
    semihost_call(SYS_EXIT_EXTENDED, args);
    for (;;) {
    }
}
