/* What the tvmnas harness offers generated code: the per-kernel profiling marker.
 * Generated C calls tvmnas_kernel_mark(k) before kernel k when built with -DTVMNAS_PROFILE;
 * a profiler keys on the addresses of these three functions. */
#ifndef TVMNAS_HARNESS_H
#define TVMNAS_HARNESS_H

void tvmnas_window_begin(void);
void tvmnas_window_end(void);
void tvmnas_kernel_mark(int k);

#endif
