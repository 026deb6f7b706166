/* tvmnas harness: runs a C bundle (model.h / model_run) on a sequence of inputs read from a host
 * file and writes the outputs and per-call instruction counts back (protocol in README.md).
 *
 * One source for two builds: on the emulator (default) files go through Arm semihosting and the
 * model call is counted exactly (counter.h); with -DTVMNAS_HOST it is a plain stdio program for
 * fast host checks of a bundle, where counts are 0. */
#include <stddef.h>
#include <stdint.h>

#include "exit_codes.h"
#include "model.h"
#include "tvmnas_harness.h"

#define JOB_MAGIC 0x4A4E5654u    /* "TVNJ" little-endian */
#define RESULT_MAGIC 0x524E5654u /* "TVNR" */
#define PROTOCOL_VERSION 1u
#define NO_CONFIG (-1)
#define ARENA_BYTES (MODEL_ARENA_SIZE > 0 ? MODEL_ARENA_SIZE : 1)

#ifdef TVMNAS_HOST
#include <stdio.h>

typedef FILE *io_file;
#define IO_INVALID NULL
static io_file io_open(const char *path, const char *mode) { return fopen(path, mode); }
static int io_read(io_file f, void *buf, size_t n) { return fread(buf, 1, n, f) == n ? 0 : -1; }
static int io_write(io_file f, const void *buf, size_t n) { return fwrite(buf, 1, n, f) == n ? 0 : -1; }
static void io_close(io_file f) { fclose(f); }
static void io_puts(const char *msg) { fputs(msg, stderr); }
#else
#include "counter.h"
#include "semihost.h"

typedef int io_file;
#define IO_INVALID (-1)
static io_file io_open(const char *path, const char *mode) { return semihost_open(path, mode); }
static int io_read(io_file f, void *buf, size_t n) { return semihost_read(f, buf, n); }
static int io_write(io_file f, const void *buf, size_t n) { return semihost_write(f, buf, n); }
static void io_close(io_file f) { semihost_close(f); }
static void io_puts(const char *msg) { semihost_puts(msg); }
#endif

/* Window markers around the model call (a profiler keys on their addresses) and the per-kernel
 * marker that generated code calls with -DTVMNAS_PROFILE. Bodies are empty on purpose. */
__attribute__((noinline, noipa, used)) void tvmnas_window_begin(void) { __asm__ volatile("" ::: "memory"); }
__attribute__((noinline, noipa, used)) void tvmnas_window_end(void) { __asm__ volatile("" ::: "memory"); }
__attribute__((noinline, noipa, used)) void tvmnas_kernel_mark(int k) { __asm__ volatile("" : : "r"(k) : "memory"); }

/* The job and result files carry float32 values. An int8 model (model.h defines MODEL_INPUT_TYPE /
 * MODEL_OUTPUT_TYPE) gets them converted to and from its integer type outside the measured window;
 * the host sends integer values, so the conversion is exact. */
#ifdef MODEL_INPUT_TYPE
typedef MODEL_INPUT_TYPE model_input_t;
#define MODEL_INPUT_CONVERTED 1
#else
typedef float model_input_t;
#endif
#ifdef MODEL_OUTPUT_TYPE
typedef MODEL_OUTPUT_TYPE model_output_t;
#define MODEL_OUTPUT_CONVERTED 1
#else
typedef float model_output_t;
#endif

typedef int (*model_fn)(const model_input_t *input, model_output_t *output, uint8_t *arena);

/* The arena sits between two guard bands that are filled before each call and checked after it,
 * so a kernel writing outside MODEL_ARENA_SIZE bytes fails the run with its own exit status
 * instead of silently corrupting whatever lies next to the arena. */
#define ARENA_GUARD_BYTES 32u
static struct {
    uint8_t before[ARENA_GUARD_BYTES];
    uint8_t arena[ARENA_BYTES];
    uint8_t after[ARENA_GUARD_BYTES];
} tvmnas_guarded_arena __attribute__((aligned(16)));
#define tvmnas_arena (tvmnas_guarded_arena.arena)
static float input_buf[MODEL_INPUT_SIZE];
static float output_buf[MODEL_OUTPUT_SIZE];
#ifdef MODEL_INPUT_CONVERTED
static model_input_t model_input[MODEL_INPUT_SIZE];
#else
#define model_input input_buf
#endif
#ifdef MODEL_OUTPUT_CONVERTED
static model_output_t model_output[MODEL_OUTPUT_SIZE];
#else
#define model_output output_buf
#endif

#ifdef TVMNAS_HOST
static uint64_t measure(model_fn fn, int *rc)
{
    *rc = fn(model_input, model_output, tvmnas_arena);
    return 0;
}
static uint64_t calibrate(void) { return 0; }
#else
/* A model_run stand-in of exactly two instructions, measured through the same path as the model
 * to find the window's fixed overhead. */
__asm__(".section .text.tvmnas_calibration_model,\"ax\",%progbits\n\t"
        ".syntax unified\n\t"
        ".thumb\n\t"
        ".p2align 1\n\t"
        ".global tvmnas_calibration_model\n\t"
        ".thumb_func\n\t"
        ".type tvmnas_calibration_model, %function\n"
        "tvmnas_calibration_model:\n\t"
        "movs r0, #0\n\t"
        "bx lr\n\t"
        ".size tvmnas_calibration_model, .-tvmnas_calibration_model\n\t"
        ".text\n");
int tvmnas_calibration_model(const model_input_t *input, model_output_t *output, uint8_t *arena);
#define CALIBRATION_MODEL_INSTRUCTIONS 2u

typedef void (*marker_fn)(void);

/* Twins of the window markers with identical bodies, so the calibration window costs the same
 * instructions but is invisible to a profiler keyed on tvmnas_window_begin/end. */
__attribute__((noinline, noipa, used)) static void calibration_begin(void) { __asm__ volatile("" ::: "memory"); }
__attribute__((noinline, noipa, used)) static void calibration_end(void) { __asm__ volatile("" ::: "memory"); }

/* Instructions from counter_start to counter_stop around one call of fn (noipa: one copy of this
 * code serves the calibration and the model, so the overhead is identical). */
__attribute__((noinline, noipa)) static uint64_t measure_with(model_fn fn, marker_fn begin, marker_fn end, int *rc)
{
    counter_start();
    begin();
    int r = fn(model_input, model_output, tvmnas_arena);
    end();
    uint64_t n = counter_stop();
    *rc = r;
    return n;
}

static uint64_t measure(model_fn fn, int *rc)
{
    return measure_with(fn, tvmnas_window_begin, tvmnas_window_end, rc);
}

static uint64_t calibrate(void)
{
    int rc;
    return measure_with(tvmnas_calibration_model, calibration_begin, calibration_end, &rc) -
           CALIBRATION_MODEL_INSTRUCTIONS;
}
#endif

static int fail(int code, const char *msg)
{
    io_puts(msg);
    return code;
}

static uint8_t guard_byte(uint32_t i) { return (uint8_t)(0xA5u ^ (i * 0x3Bu)); }

static void arena_guard_fill(void)
{
    for (uint32_t i = 0; i < ARENA_GUARD_BYTES; ++i) {
        tvmnas_guarded_arena.before[i] = guard_byte(i);
        tvmnas_guarded_arena.after[i] = guard_byte(i + ARENA_GUARD_BYTES);
    }
}

static int arena_guard_intact(void)
{
    for (uint32_t i = 0; i < ARENA_GUARD_BYTES; ++i) {
        if (tvmnas_guarded_arena.before[i] != guard_byte(i) ||
            tvmnas_guarded_arena.after[i] != guard_byte(i + ARENA_GUARD_BYTES)) {
            return 0;
        }
    }
    return 1;
}

/* Select configuration k of a dynamic bundle; NO_CONFIG keeps the current one. */
static int select_config(int32_t config)
{
    if (config == NO_CONFIG) {
        return TVMNAS_EXIT_OK;
    }
#ifdef MODEL_NUM_CONFIGS
    if (config < 0 || config >= MODEL_NUM_CONFIGS) {
        return fail(TVMNAS_EXIT_BAD_CONFIG, "tvmnas: config index out of range\n");
    }
    if (model_arena_size(config) > (size_t)MODEL_ARENA_SIZE) {
        return fail(TVMNAS_EXIT_ARENA, "tvmnas: model_arena_size(config) > MODEL_ARENA_SIZE\n");
    }
    if (model_set_config(config) != 0) {
        return fail(TVMNAS_EXIT_BAD_CONFIG, "tvmnas: model_set_config failed\n");
    }
    return TVMNAS_EXIT_OK;
#else
    return config == 0 ? TVMNAS_EXIT_OK
                       : fail(TVMNAS_EXIT_BAD_CONFIG, "tvmnas: bundle has no configs; config must be 0\n");
#endif
}

static int run_job(const char *job_path, const char *result_path)
{
    io_file job = io_open(job_path, "rb");
    if (job == IO_INVALID) {
        return fail(TVMNAS_EXIT_NO_JOB, "tvmnas: cannot open the job file\n");
    }
    uint32_t header[4];
    if (io_read(job, header, sizeof header) != 0 || header[0] != JOB_MAGIC ||
        header[1] != PROTOCOL_VERSION || header[3] != (uint32_t)MODEL_INPUT_SIZE) {
        io_close(job);
        return fail(TVMNAS_EXIT_BAD_JOB, "tvmnas: bad job header (magic, version or input size)\n");
    }
    const uint32_t n_calls = header[2];
    const uint64_t overhead = calibrate();

    io_file result = io_open(result_path, "wb");
    if (result == IO_INVALID) {
        io_close(job);
        return fail(TVMNAS_EXIT_WRITE, "tvmnas: cannot create the result file\n");
    }
    uint32_t out_header[5] = {RESULT_MAGIC, PROTOCOL_VERSION, n_calls, (uint32_t)MODEL_OUTPUT_SIZE,
                              (uint32_t)overhead};
    int status = io_write(result, out_header, sizeof out_header) == 0
                     ? TVMNAS_EXIT_OK
                     : fail(TVMNAS_EXIT_WRITE, "tvmnas: cannot write the result file\n");

    for (uint32_t i = 0; i < n_calls && status == TVMNAS_EXIT_OK; ++i) {
        int32_t config;
        if (io_read(job, &config, sizeof config) != 0 || io_read(job, input_buf, sizeof input_buf) != 0) {
            status = fail(TVMNAS_EXIT_BAD_JOB, "tvmnas: job file shorter than its header says\n");
            break;
        }
        status = select_config(config);
        if (status != TVMNAS_EXIT_OK) {
            break;
        }
#ifdef MODEL_INPUT_CONVERTED
        for (uint32_t k = 0; k < (uint32_t)MODEL_INPUT_SIZE; ++k) {
            model_input[k] = (model_input_t)(int32_t)input_buf[k];
        }
#endif
        int rc;
        arena_guard_fill();
        uint64_t n = measure(model_run, &rc);
        n -= overhead;
        const int guard_ok = arena_guard_intact();
#ifdef MODEL_OUTPUT_CONVERTED
        for (uint32_t k = 0; k < (uint32_t)MODEL_OUTPUT_SIZE; ++k) {
            output_buf[k] = (float)model_output[k];
        }
#endif
        int32_t record[4] = {config, rc, (int32_t)(uint32_t)n, (int32_t)(uint32_t)(n >> 32)};
        if (io_write(result, record, sizeof record) != 0 || io_write(result, output_buf, sizeof output_buf) != 0) {
            status = fail(TVMNAS_EXIT_WRITE, "tvmnas: cannot write the result file\n");
        } else if (!guard_ok) {
            status = fail(TVMNAS_EXIT_ARENA_OVERRUN,
                          "tvmnas: model_run wrote outside its arena of MODEL_ARENA_SIZE bytes (a guard band changed)\n");
        } else if (rc != 0) {
            status = fail(TVMNAS_EXIT_MODEL_ERROR, "tvmnas: model_run returned non-zero\n");
        }
    }
    io_close(result);
    io_close(job);
    return status;
}

#ifdef TVMNAS_HOST
int main(int argc, char **argv)
{
    if (argc != 3) {
        return fail(TVMNAS_EXIT_NO_JOB, "usage: harness JOB_FILE RESULT_FILE\n");
    }
    return run_job(argv[1], argv[2]);
}
#else
int main(void)
{
    return run_job("tvmnas_job.bin", "tvmnas_result.bin");
}
#endif
