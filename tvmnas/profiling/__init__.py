"""Block profiles of guest programs from a QEMU plugin, and per-core cycle estimates from them.

Instructions are exact (counted inside the tvmnas_window_begin/end window); cycles are estimates
from a per-core timing table (targets/timing/), see tvmnas.profiling.cycles for the model's limits.
"""

from tvmnas.profiling.blocks import BlockProfile, parse_block_profile
from tvmnas.profiling.cycles import TimingTable, estimate_cycles, estimate_segment_cycles, load_timing_table
from tvmnas.profiling.plugin import build_plugin, qemu_plugin_args
from tvmnas.profiling.profile import KernelProfile, Profile, profile_elf, profile_from_blocks, run_block_profile

__all__ = [
    "BlockProfile", "KernelProfile", "Profile", "TimingTable", "build_plugin", "estimate_cycles",
    "estimate_segment_cycles", "load_timing_table", "parse_block_profile", "profile_elf",
    "profile_from_blocks", "qemu_plugin_args", "run_block_profile",
]
