"""The measurement stage: from a lowered kernel to cost data.

toolchain (the cross compiler and QEMU as subprocesses), runner (build a C bundle with the board
support, run it on QEMU or the host), plugin / blocks / cycles / profile (block profiles from the
QEMU plugin; instructions exact, cycles estimated from a per-core timing table), profiler (kernel
identity, per-kernel profiles of networks and sampled operators), store (the profile database).
"""
