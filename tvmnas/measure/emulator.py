"""Emulator: one target's emulated board, the measurement stage's one handle on it: build a C bundle
with the board support, run it, profile it (instructions exact, cycles from the timing table)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from tvmnas.measure.profile import Profile, profile_elf
from tvmnas.measure.runner import RunResult, build, run
from tvmnas.targets import Target


@dataclass(frozen=True)
class Emulator:
    """The QEMU board of `target`; every run stops after `timeout_s` seconds."""

    target: Target
    timeout_s: float = 60.0

    def build(self, bundle_dir: Path, build_dir: Path, *, profile: bool = False,
              extra_cflags: Sequence[str] = ()) -> Path:
        """Compile a bundle into an ELF (profile=True: with a mark before every kernel call)."""
        return build(bundle_dir, self.target, build_dir, profile=profile, extra_cflags=extra_cflags)

    def run(self, elf: Path, inputs: list[np.ndarray], *, configs: list[int] | None = None) -> RunResult:
        """One model call per input: outputs and exact instruction counts."""
        return run(elf, self.target, inputs, configs=configs, timeout_s=self.timeout_s)

    def profile(self, elf: Path, inputs: list[np.ndarray], *, kernel_names: Sequence[str] = (), call: int = -1,
                configs: list[int] | None = None) -> Profile:
        """Per-kernel profile of model call `call` of an ELF built with profile=True."""
        return profile_elf(elf, self.target, inputs, kernel_names=kernel_names, timeout_s=self.timeout_s,
                           call=call, configs=configs)
