/* tvmnas timing firmware: runs each model of timing_models.c, reads the counter at every kernel
 * mark (the bundle is compiled with -DTVMNAS_PROFILE, so model_run calls tvmnas_kernel_mark(k)
 * before kernel k) and prints one line per kernel:
 *
 *   tvmnas-timing 1 unit=<cycles|instructions> models=<M> warmup=<W> runs=<R> overhead=<O>
 *   tvmnas-kernel <model>.<index> <name> <unit> <min> <max> <runs>
 *   tvmnas-done kernels=<N>
 *
 * A kernel's figure runs from its mark to the next mark (the last one's to model_run's return),
 * less the measured cost of a mark (O); the emulator build adds back the three instructions an
 * empty marker call costs in `tvmnas profile`, so its counts equal the profiler's. */
#include <stddef.h>
#include <stdint.h>

#include "timing_counter.h"
#include "timing_io.h"
#include "timing_models.h"

#ifndef TVMNAS_TIMING_RUNS
#define TVMNAS_TIMING_RUNS 5
#endif
#ifndef TVMNAS_TIMING_WARMUP
#define TVMNAS_TIMING_WARMUP 1
#endif
#ifdef TIMING_EMULATOR
#define MARK_BASE 3u /* movs r0, #k; bl mark; bx lr: an empty marker call in the profiler's harness */
#else
#define MARK_BASE 0u
#endif
#define CALIBRATION_REPEATS 8

static timing_raw stamps[TIMING_MAX_KERNELS + 2];
static uint8_t arena[TIMING_ARENA_BYTES] __attribute__((section(TVMNAS_ARENA_SECTION), aligned(16)));
uint32_t tvmnas_timing_end_index;

__attribute__((noinline, used)) void tvmnas_kernel_mark(int k) { timing_read(&stamps[k]); }

/* model(input, output, arena) then mark(tvmnas_timing_end_index): two instructions between the
 * model's return and the mark, as between model_run's return and the window end in the harness. */
void tvmnas_timing_call(const void *input, void *output, uint8_t *arena_ptr, uintptr_t run);
/* Two back-to-back marks: the cost of one mark plus a `movs; bl` pair. */
void tvmnas_timing_calibrate(void);
__asm__(".section .text.tvmnas_timing_call,\"ax\",%progbits\n\t"
        ".syntax unified\n\t"
        ".thumb\n\t"
        ".p2align 2\n\t"
        ".global tvmnas_timing_call\n\t"
        ".thumb_func\n\t"
        ".type tvmnas_timing_call, %function\n"
        "tvmnas_timing_call:\n\t"
        "push {r4, lr}\n\t"
        "ldr r4, =tvmnas_timing_end_index\n\t"
        "ldr r4, [r4]\n\t"
        "blx r3\n\t"
        "mov r0, r4\n\t"
        "bl tvmnas_kernel_mark\n\t"
        "pop {r4, pc}\n\t"
        ".ltorg\n\t"
        ".size tvmnas_timing_call, .-tvmnas_timing_call\n\t"
        ".p2align 2\n\t"
        ".global tvmnas_timing_calibrate\n\t"
        ".thumb_func\n\t"
        ".type tvmnas_timing_calibrate, %function\n"
        "tvmnas_timing_calibrate:\n\t"
        "push {r4, lr}\n\t"
        "movs r0, #0\n\t"
        "bl tvmnas_kernel_mark\n\t"
        "movs r0, #1\n\t"
        "bl tvmnas_kernel_mark\n\t"
        "pop {r4, pc}\n\t"
        ".size tvmnas_timing_calibrate, .-tvmnas_timing_calibrate\n\t"
        ".text\n");

static uint64_t mark_overhead(void)
{
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < CALIBRATION_REPEATS; ++i) {
        tvmnas_timing_calibrate();
        const uint64_t d = timing_elapsed(&stamps[0], &stamps[1]);
        best = d < best ? d : best;
    }
    return best;
}

static void copy_bytes(void *dst, const void *src, uint32_t n)
{
    uint8_t *d = dst;
    const uint8_t *s = src;
    for (uint32_t i = 0; i < n; ++i) {
        d[i] = s[i];
    }
}

static uint64_t kernel_min[TIMING_MAX_KERNELS];
static uint64_t kernel_max[TIMING_MAX_KERNELS];

static void time_model(const timing_model *m, uint64_t overhead)
{
    copy_bytes(m->input, m->input_init, m->input_bytes);
    for (uint32_t k = 0; k < m->kernels; ++k) {
        kernel_min[k] = UINT64_MAX;
        kernel_max[k] = 0;
    }
    for (int r = 0; r < TVMNAS_TIMING_WARMUP + TVMNAS_TIMING_RUNS; ++r) {
        tvmnas_timing_end_index = m->kernels;
        tvmnas_timing_call(m->input, m->output, arena, m->run);
        if (r < TVMNAS_TIMING_WARMUP) {
            continue;
        }
        for (uint32_t k = 0; k < m->kernels; ++k) {
            const uint64_t d = timing_elapsed(&stamps[k], &stamps[k + 1]) - overhead + MARK_BASE;
            kernel_min[k] = d < kernel_min[k] ? d : kernel_min[k];
            kernel_max[k] = d > kernel_max[k] ? d : kernel_max[k];
        }
    }
}

int main(void)
{
    tvmnas_board_init();
    timing_counter_init();
    const uint64_t overhead = mark_overhead();
    timing_puts("tvmnas-timing 1 unit=" TIMING_UNIT " models=");
    timing_putu(TIMING_MODELS);
    timing_puts(" warmup=");
    timing_putu(TVMNAS_TIMING_WARMUP);
    timing_puts(" runs=");
    timing_putu(TVMNAS_TIMING_RUNS);
    timing_puts(" overhead=");
    timing_putu(overhead);
    timing_puts("\n");
    uint32_t total = 0;
    for (uint32_t i = 0; i < TIMING_MODELS; ++i) {
        const timing_model *m = &timing_models[i];
        time_model(m, overhead);
        for (uint32_t k = 0; k < m->kernels; ++k) {
            timing_puts("tvmnas-kernel ");
            timing_putu(i);
            timing_puts(".");
            timing_putu(k);
            timing_puts(" ");
            timing_puts(m->names[k]);
            timing_puts(" " TIMING_UNIT " ");
            timing_putu(kernel_min[k]);
            timing_puts(" ");
            timing_putu(kernel_max[k]);
            timing_puts(" ");
            timing_putu(TVMNAS_TIMING_RUNS);
            timing_puts("\n");
            ++total;
        }
    }
    timing_puts("tvmnas-done kernels=");
    timing_putu(total);
    timing_puts("\n");
    return 0;
}
