"""profile_elf on a harness ELF (tvmnas.measure.runner): a hand-written float conv + ReLU bundle with kernel marks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tvmnas.measure.profile import profile_elf
from tvmnas.measure.runner import build, run
from tvmnas.targets import load_target

H, W, C, K = 10, 10, 4, 4  # input HxWxC, K output channels, 3x3 valid conv -> 8x8xK
OUT = (H - 2) * (W - 2) * K
MACS = OUT * 9 * C

MODEL_C = f"""#include "model.h"
void tvmnas_kernel_mark(int k);
static const float weight[{K}][3][3][{C}] = {{{{{{{{0.25f}}}}}}}};
static void conv3x3(const float *x, float *y)
{{
    for (int oy = 0; oy < {H - 2}; ++oy)
        for (int ox = 0; ox < {W - 2}; ++ox)
            for (int k = 0; k < {K}; ++k) {{
                float acc = 0.0f;
                for (int ky = 0; ky < 3; ++ky)
                    for (int kx = 0; kx < 3; ++kx)
                        for (int c = 0; c < {C}; ++c)
                            acc += x[((oy + ky) * {W} + ox + kx) * {C} + c] * weight[k][ky][kx][c];
                y[(oy * {W - 2} + ox) * {K} + k] = acc;
            }}
}}
static void relu(const float *x, float *y, int n)
{{
    for (int i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}}
int model_run(const float *input, float *output, uint8_t *arena)
{{
    float *tmp = (float *)arena;
    tvmnas_kernel_mark(0);
    conv3x3(input, tmp);
    tvmnas_kernel_mark(1);
    relu(tmp, output, {OUT});
    return 0;
}}
"""


def write_conv_bundle(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.h").write_text(
        "#include <stddef.h>\n#include <stdint.h>\n"
        f"#define MODEL_INPUT_SIZE {H * W * C}\n#define MODEL_OUTPUT_SIZE {OUT}\n#define MODEL_ARENA_SIZE {OUT * 4}\n"
        "int model_run(const float *input, float *output, uint8_t *arena);\n"
    )
    (directory / "model.c").write_text(MODEL_C)
    (directory / "manifest.json").write_text(json.dumps({"target": "cortex-m4", "kernels": ["conv3x3", "relu"]}))
    return directory


@pytest.mark.parametrize("target_name", ["cortex-m4", "cortex-m33"])
def test_profile_elf_matches_harness_counts_and_splits_kernels(tmp_path: Path, target_name: str) -> None:
    target = load_target(target_name)
    elf = build(write_conv_bundle(tmp_path / "bundle"), target, tmp_path / "build")
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(H * W * C).astype(np.float32) for _ in range(2)]
    harness = run(elf, target, inputs, timeout_s=60)
    profiles = [profile_elf(elf, target, inputs, timeout_s=60, call=i) for i in range(2)]
    for i, prof in enumerate(profiles):
        assert len(prof.kernels) == 2
        assert prof.instructions == prof.preamble_instructions + sum(k.instructions for k in prof.kernels)
        assert prof.cycles == prof.preamble_cycles + sum(k.cycles for k in prof.kernels)
        assert prof.kernels[0].instructions > 9 * prof.kernels[1].instructions
        assert prof.cycles > prof.instructions
    # The harness subtracts its calibrated overhead: the two exact counters differ by a constant.
    gaps = [p.instructions - n for p, n in zip(profiles, harness.instructions)]
    assert gaps[0] == gaps[1]
    assert 0 < gaps[0] < 20
    print(f"conv3x3 {MACS} MACs on {target_name}: {profiles[0].kernels[0].instructions} instructions, "
          f"{profiles[0].kernels[0].cycles} cycles (estimate), CPI {profiles[0].kernels[0].cycles / profiles[0].kernels[0].instructions:.2f}, "
          f"{profiles[0].kernels[0].cycles / MACS:.2f} cycles/MAC; harness-plugin gap {gaps[0]}")
