/* Exit statuses of a harness program; tvmnas/runner.py maps them back to names (keep in sync). */
#ifndef TVMNAS_EXIT_CODES_H
#define TVMNAS_EXIT_CODES_H

#define TVMNAS_EXIT_OK 0
#define TVMNAS_EXIT_NO_JOB 2          /* the job file could not be opened */
#define TVMNAS_EXIT_BAD_JOB 3         /* bad magic/version/size, or a short read */
#define TVMNAS_EXIT_WRITE 4           /* the result file could not be written */
#define TVMNAS_EXIT_BAD_CONFIG 5      /* config index out of range, or model_set_config failed */
#define TVMNAS_EXIT_MODEL_ERROR 6     /* model_run returned non-zero */
#define TVMNAS_EXIT_ARENA 7           /* model_arena_size(k) exceeds MODEL_ARENA_SIZE */
#define TVMNAS_EXIT_ARENA_OVERRUN 8   /* model_run wrote into a guard band around the arena */
#define TVMNAS_EXIT_NMI 100
#define TVMNAS_EXIT_HARDFAULT 101
#define TVMNAS_EXIT_MEMMANAGE 102
#define TVMNAS_EXIT_BUSFAULT 103
#define TVMNAS_EXIT_USAGEFAULT 104
#define TVMNAS_EXIT_SECUREFAULT 105
#define TVMNAS_EXIT_UNEXPECTED_IRQ 106
#define TVMNAS_EXIT_STACK_OVERFLOW 107   /* SP went below the stack (MSPLIM or the MPU guard) */

#endif
