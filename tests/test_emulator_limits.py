"""Where a firmware meets the machine's limits: memory that does not fit, writes outside the arena,
and NaN inputs, each run anyway or named in one line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tvmnas.cli.run import nonfinite_warning
from tvmnas.compiler import compile_model
from tvmnas.errors import BudgetExceededError, BuildError, EmulatorError
from tvmnas.measure.runner import build, build_host, linker_reason, run, run_host
from tvmnas.targets import load_target

LD_STDERR = """\
/usr/lib/gcc/arm-none-eabi/12.2.1/../../../arm-none-eabi/bin/ld: model.elf section `.rodata' will not fit in region `FLASH'
/usr/lib/gcc/arm-none-eabi/12.2.1/../../../arm-none-eabi/bin/ld: region `FLASH' overflowed by 1161956 bytes
collect2: error: ld returned 1 exit status
"""


def test_linker_reason_names_region_sections_and_bytes() -> None:
    assert linker_reason(LD_STDERR) == "region FLASH overflowed by 1,161,956 bytes (.rodata will not fit)"
    assert linker_reason("collect2: error: ld returned 1 exit status\nundefined reference to `expf'") is None


def dense(inputs: int, hidden: int, outputs: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, outputs)).eval()


def test_firmware_over_the_boards_flash_says_which_region_and_by_how_much(tmp_path: Path) -> None:
    # 270 KB of weights for the micro:bit's 256 KB flash (the emulated machine has no more memory)
    target = load_target("cortex-m0")
    bundle = tmp_path / "b"
    compile_model(dense(260, 260, 4), target, bundle, input_shape=(1, 260), ignore_budget=True)
    with pytest.raises(BuildError) as err:
        build(bundle, target, tmp_path / "build")
    message = str(err.value)
    assert re.search(r"region FLASH overflowed by [\d,]+ bytes", message), message
    assert "ld returned 1" not in message and "\n" not in message


@pytest.mark.slow
def test_model_over_the_emulators_flash_runs_when_compiled_with_ignore_budget(tmp_path: Path) -> None:
    # 4.4 MB of weights: over the cortex-m4 board's 2 MB flash and the 4 MB code memory of the usual
    # MPS2 map; the budget check refuses it, and with --ignore-budget it runs on QEMU
    target = load_target("cortex-m4")
    model = dense(1040, 1040, 10)
    with pytest.raises(BudgetExceededError, match="model flash"):
        compile_model(model, target, tmp_path / "refused", input_shape=(1, 1040))
    bundle = tmp_path / "b"
    manifest = compile_model(model, target, bundle, input_shape=(1, 1040), ignore_budget=True).manifest
    assert manifest["flash_bytes"] > 4 * 1024 * 1024
    x = np.random.default_rng(0).standard_normal((1, 1040)).astype(np.float32)
    result = run(build(bundle, target, tmp_path / "build"), target, [x])
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy().reshape(-1)
    np.testing.assert_allclose(result.outputs[0], expected, atol=1e-4 * float(np.abs(expected).max()))
    assert result.instructions[0] > 1040 * 1040


class SmallNet(nn.Module):
    """conv, ReLU, max pooling, ReLU6 and a linear layer: a few kernels sharing one arena."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.relu6 = nn.ReLU6()
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = self.relu(x)
        x = self.pool(x)
        x = self.relu6(x)
        x = self.fc(x.flatten(1))
        return x


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory) -> Path:
    bundle = tmp_path_factory.mktemp("small") / "b"
    compile_model(SmallNet().eval(), load_target("cortex-m4"), bundle, input_shape=(1, 1, 8, 8))
    return bundle


def small_input() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((1, 1, 8, 8)).astype(np.float32)


def test_nonfinite_warning_counts_nan_and_inf_in_input_and_output() -> None:
    x, y = small_input(), np.zeros(10, np.float32)
    assert nonfinite_warning(x, y) is None
    x[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    y[4] = np.nan
    warning = nonfinite_warning(x, y)
    assert warning.startswith("warning: 3 of 64 input values and 1 of 10 output values are NaN or inf")
    assert "\n" not in warning


@pytest.mark.slow
def test_run_warns_in_one_line_on_a_nan_input(small_bundle: Path, tmp_path: Path) -> None:
    x = small_input()
    x[0, 0, 3, 3] = np.nan
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run([sys.executable, "-m", "tvmnas", "run", str(small_bundle), "--input", str(tmp_path / "x.npy"),
                           "--output", str(tmp_path / "y.npy")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "1 of 64 input values" in warnings[0], proc.stderr
    assert (tmp_path / "y.npy").is_file()


def shrink_declared_arena(bundle: Path, by: int) -> int:
    header = bundle / "model.h"
    text = header.read_text()
    size = int(re.search(r"#define MODEL_ARENA_SIZE (\d+)", text).group(1))
    header.write_text(text.replace(f"#define MODEL_ARENA_SIZE {size}", f"#define MODEL_ARENA_SIZE {size - by}"))
    return size - by


def test_write_past_the_arena_fails_with_one_line_on_the_host_build(small_bundle, tmp_path: Path) -> None:
    bundle = small_bundle
    x = small_input()
    assert len(run_host(build_host(bundle, tmp_path / "ok"), [x])) == 1  # the bundle as compiled is fine
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for path in bundle.glob("*.[ch]"):
        (corrupt / path.name).write_text(path.read_text())
    shrink_declared_arena(corrupt, 64)  # the kernels still use the full arena: 64 bytes past its end
    with pytest.raises(EmulatorError, match="wrote outside its arena") as err:
        run_host(build_host(corrupt, tmp_path / "host"), [x])
    assert "\n" not in str(err.value)


@pytest.mark.slow
@pytest.mark.ci
def test_write_past_the_arena_fails_with_one_line_on_qemu(small_bundle, tmp_path: Path) -> None:
    bundle = small_bundle
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for path in bundle.glob("*.[ch]"):
        (corrupt / path.name).write_text(path.read_text())
    shrink_declared_arena(corrupt, 16)
    target = load_target("cortex-m4")
    with pytest.raises(EmulatorError) as err:
        run(build(corrupt, target, tmp_path / "build"), target, [small_input()])
    message = str(err.value)
    assert "model_run wrote outside its arena" in message and "exit status 8" in message and "\n" not in message


def test_write_before_the_arena_is_caught_too(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "model.h").write_text(
        "#include <stdint.h>\n#define MODEL_INPUT_SIZE 4\n#define MODEL_OUTPUT_SIZE 4\n#define MODEL_ARENA_SIZE 64\n"
        "int model_run(const float *input, float *output, uint8_t *arena);\n"
    )
    (bundle / "model.c").write_text(
        '#include "model.h"\n'
        "int model_run(const float *input, float *output, uint8_t *arena)\n"
        "{\n  uint8_t *volatile p = arena;\n  p[-3] = 0;\n"
        "  for (int i = 0; i < MODEL_OUTPUT_SIZE; ++i) output[i] = input[i];\n  return 0;\n}\n"
    )
    with pytest.raises(EmulatorError, match="wrote outside its arena"):
        run_host(build_host(bundle, tmp_path / "host"), [np.zeros(4, np.float32)])
