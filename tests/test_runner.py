"""Runner tests: hand-written C bundles built for every target, run on QEMU, read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tvmnas.errors import BuildError, EmulatorError
from tvmnas.measure.runner import build, build_host, memory_usage, run, run_host
from tvmnas.targets import list_targets, load_target

AFFINE_BODY = """
    (void)arena;
    for (int i = 0; i < MODEL_INPUT_SIZE; ++i) {
        output[i] = 2.0f * input[i] + 1.0f;
    }
    return 0;
"""

DYNAMIC_SOURCE = """#include "model.h"
static int current = 0;
int model_set_config(int k) { current = k; return 0; }
size_t model_arena_size(int k) { return (size_t)(16 * (k + 1)); }
int model_run(const float *input, float *output, uint8_t *arena)
{
    (void)arena;
    for (int r = 0; r <= current; ++r) {
        for (int i = 0; i < MODEL_INPUT_SIZE; ++i) {
            output[i] = (r == 0 ? input[i] : output[i]) + 1.0f;
        }
    }
    return 0;
}
"""


def write_bundle(
    directory: Path,
    body: str = AFFINE_BODY,
    *,
    size: int = 16,
    arena: int = 64,
    configs: int | None = None,
    source: str | None = None,
) -> Path:
    """A minimal C bundle: model.h, model.c, manifest.json (y = 2x + 1 unless body/source says otherwise)."""
    directory.mkdir(parents=True, exist_ok=True)
    dynamic = ""
    if configs is not None:
        dynamic = (
            f"#define MODEL_NUM_CONFIGS {configs}\n"
            "int model_set_config(int k);\nsize_t model_arena_size(int k);\n"
        )
    (directory / "model.h").write_text(
        "#include <stddef.h>\n#include <stdint.h>\n"
        f"#define MODEL_INPUT_SIZE {size}\n#define MODEL_OUTPUT_SIZE {size}\n#define MODEL_ARENA_SIZE {arena}\n"
        + dynamic
        + "int model_run(const float *input, float *output, uint8_t *arena);\n"
    )
    (directory / "model.c").write_text(
        source
        if source is not None
        else '#include "model.h"\nint model_run(const float *input, float *output, uint8_t *arena)\n{' + body + "}\n"
    )
    manifest = {
        "target": "cortex-m4",
        "inputs": [{"name": "x", "shape": [1, size], "dtype": "float32"}],
        "outputs": [{"name": "y", "shape": [1, size], "dtype": "float32"}],
        "arena_bytes": arena,
        "flash_bytes": 0,
        "kernels": ["affine"],
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def dynamic_reference(x: np.ndarray, config: int) -> np.ndarray:
    """What DYNAMIC_SOURCE computes: add 1.0f, config + 1 times, in float32."""
    y = x.copy()
    for _ in range(config + 1):
        y = y + np.float32(1)
    return y


def affine_input(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(size).astype(np.float32)


@pytest.fixture(scope="module")
def affine_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(tmp_path_factory.mktemp("affine") / "bundle")


@pytest.mark.parametrize("target_name", [t.name for t in list_targets()])
def test_affine_bundle_runs_exactly_on_every_target(affine_bundle: Path, tmp_path: Path, target_name: str) -> None:
    target = load_target(target_name)
    elf = build(affine_bundle, target, tmp_path / "small")
    x0, x1 = affine_input(16, 0), affine_input(16, 1)
    first = run(elf, target, [x0, x1])
    second = run(elf, target, [x0])
    assert first.exit_code == 0
    np.testing.assert_array_equal(first.outputs[0], 2.0 * x0 + 1.0)
    np.testing.assert_array_equal(first.outputs[1], 2.0 * x1 + 1.0)
    assert first.instructions[0] > 0
    assert first.instructions[0] == second.instructions[0]  # same input, same count (soft float is data-dependent)

    bigger = write_bundle(tmp_path / "big", size=64)
    big = run(build(bigger, target, tmp_path / "big_build"), target, [affine_input(64, 2)])
    assert big.instructions[0] > first.instructions[0]


NOP_SLED = """#include "model.h"
__asm__(".section .text.model_run,\\"ax\\",%progbits\\n.syntax unified\\n.thumb\\n.p2align 2\\n"
        ".global model_run\\n.thumb_func\\n.type model_run, %function\\nmodel_run:\\n"
        ".rept {k}\\nnop\\n.endr\\nmovs r0, #0\\nbx lr\\n.size model_run, .-model_run\\n.text\\n");
"""


@pytest.mark.parametrize("target_name", [t.name for t in list_targets()])
def test_nop_sled_counts_each_instruction(tmp_path: Path, target_name: str) -> None:
    target = load_target(target_name)
    counts = []
    for k in (0, 7, 1000):
        bundle = write_bundle(tmp_path / f"sled{k}", source=NOP_SLED.replace("{k}", str(k)))
        result = run(build(bundle, target, tmp_path / f"b{k}"), target, [np.zeros(16, np.float32)])
        counts.append(result.instructions[0])
    assert counts == [2, 9, 1002]  # k nops + movs + bx lr


def test_dynamic_bundle_switches_config_mid_stream(tmp_path: Path) -> None:
    target = load_target("cortex-m4")
    bundle = write_bundle(tmp_path / "dyn", configs=3, arena=64, source=DYNAMIC_SOURCE)
    elf = build(bundle, target, tmp_path / "b")
    x = affine_input(16, 3)
    result = run(elf, target, [x, x, x, x], configs=[0, 2, 0, 1])
    for config, out in zip([0, 2, 0, 1], result.outputs):
        np.testing.assert_array_equal(out, dynamic_reference(x, config))
    assert result.configs == [0, 2, 0, 1]
    assert result.instructions[0] == result.instructions[2] < result.instructions[3] < result.instructions[1]
    with pytest.raises(EmulatorError, match="config index out of range"):
        run(elf, target, [x], configs=[3])


def test_hanging_guest_times_out_naming_the_elf(tmp_path: Path) -> None:
    target = load_target("cortex-m3")
    bundle = write_bundle(tmp_path / "hang", body="(void)input; (void)output; (void)arena;\n"
                          "for (;;) { __asm__ volatile(\"\"); }\n")
    elf = build(bundle, target, tmp_path / "b")
    with pytest.raises(EmulatorError, match=r"model\.elf.*guest hung"):
        run(elf, target, [np.zeros(16, np.float32)], timeout_s=2)


@pytest.mark.parametrize("target_name", ["cortex-m0", "cortex-m33", "cortex-m55"])
def test_faulting_guest_reports_hardfault(tmp_path: Path, target_name: str) -> None:
    target = load_target(target_name)
    bundle = write_bundle(tmp_path / "fault", body="(void)input; (void)output; (void)arena;\n__builtin_trap();\n")
    elf = build(bundle, target, tmp_path / "b")
    with pytest.raises(EmulatorError, match="HardFault"):
        run(elf, target, [np.zeros(16, np.float32)])


def test_model_error_code_is_reported(tmp_path: Path) -> None:
    target = load_target("cortex-m4")
    bundle = write_bundle(tmp_path / "rc", body="(void)input; (void)output; (void)arena;\nreturn 3;\n")
    with pytest.raises(EmulatorError, match="model_run returned 3 on call 0"):
        run(build(bundle, target, tmp_path / "b"), target, [np.zeros(16, np.float32)])


def test_input_of_wrong_size_is_rejected_by_the_guest(affine_bundle: Path, tmp_path: Path) -> None:
    target = load_target("cortex-m4")
    elf = build(affine_bundle, target, tmp_path / "b")
    with pytest.raises(EmulatorError, match="input size"):
        run(elf, target, [np.zeros(15, np.float32)])


def test_bundle_that_does_not_compile_raises_build_error(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "broken", body="return undefined_symbol;\n")
    with pytest.raises(BuildError, match="undefined_symbol"):
        build(bundle, load_target("cortex-m4"), tmp_path / "b")


def test_directory_without_model_h_raises_build_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="no model.h"):
        build(tmp_path, load_target("cortex-m4"), tmp_path / "b")


def test_memory_usage_counts_arena_stack_and_flash(tmp_path: Path) -> None:
    target = load_target("cortex-m4")
    small = memory_usage(build(write_bundle(tmp_path / "a", arena=64), target, tmp_path / "ba"), target)
    large = memory_usage(build(write_bundle(tmp_path / "c", arena=4096), target, tmp_path / "bc"), target)
    assert small.arena_bytes == 64 and large.arena_bytes == 4096
    assert large.sram_bytes - small.sram_bytes == 4096 - 64
    assert small.stack_bytes == 0x2000
    assert small.sram_bytes == small.arena_bytes + small.stack_bytes + small.static_bytes
    assert 0 < small.flash_bytes < 64 * 1024


def test_host_build_matches_the_formula(affine_bundle: Path, tmp_path: Path) -> None:
    exe = build_host(affine_bundle, tmp_path / "host")
    x = affine_input(16, 4)
    (out,) = run_host(exe, [x])
    np.testing.assert_array_equal(out, 2.0 * x + 1.0)


def test_host_build_of_dynamic_bundle_honours_configs(tmp_path: Path) -> None:
    exe = build_host(write_bundle(tmp_path / "dyn", configs=3, source=DYNAMIC_SOURCE), tmp_path / "host")
    x = affine_input(16, 5)
    outs = run_host(exe, [x, x], configs=[2, 0])
    np.testing.assert_array_equal(outs[0], dynamic_reference(x, 2))
    np.testing.assert_array_equal(outs[1], dynamic_reference(x, 0))


DEEP_RECURSION = """#include "model.h"
__attribute__((noinline)) static int deep(int n)
{
    volatile char buf[256];
    buf[0] = (char)n;
    buf[255] = 1;
    return n ? deep(n - 1) + buf[0] + buf[255] : 0;
}
int model_run(const float *input, float *output, uint8_t *arena)
{
    (void)arena;
    output[0] = (float)deep((int)input[0]);
    return 0;
}
"""


@pytest.mark.parametrize("target_name", ["cortex-m0", "cortex-m4", "cortex-m33", "cortex-m55"])
def test_stack_overflow_is_named(tmp_path: Path, target_name: str) -> None:
    target = load_target(target_name)
    elf = build(write_bundle(tmp_path / "deep", source=DEEP_RECURSION), target, tmp_path / "b")
    shallow, too_deep = np.zeros(16, np.float32), np.zeros(16, np.float32)
    shallow[0], too_deep[0] = 3, 1000
    assert run(elf, target, [shallow]).outputs[0][0] == 9.0
    with pytest.raises(EmulatorError, match="stack overflow"):
        run(elf, target, [too_deep])


@pytest.mark.parametrize("target_name", ["cortex-m0", "cortex-m4", "cortex-m33"])
def test_timer_wraps_are_handled_exactly(tmp_path: Path, target_name: str) -> None:
    """Shrunken timer periods force many wraps inside one call: SysTick (M0), CMSDK TIMER0 at 25 MHz
    (M4) and the AN505's at 20 MHz (M33)."""
    target = load_target(target_name)
    shrink = "-DTVMNAS_SYSTICK_RELOAD=0xFFF" if target.counter == "systick" else "-DTVMNAS_TIMER_RELOAD=0xFFFF"
    bundle = write_bundle(tmp_path / "sled", source=NOP_SLED.replace("{k}", "100000"))
    elf = build(bundle, target, tmp_path / "b", extra_cflags=[shrink])
    assert run(elf, target, [np.zeros(16, np.float32)]).instructions == [100002]


def test_run_command_writes_output_and_prints_json(affine_bundle: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tvmnas.cli import app

    x = affine_input(16, 6).reshape(1, 16)
    np.save(tmp_path / "x.npy", x)
    result = CliRunner().invoke(
        app, ["run", str(affine_bundle), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["target"] == "cortex-m4" and summary["instructions"] > 0
    assert summary["cycles_note"].startswith("estimated") and summary["cycles"] >= summary["instructions"]
    assert summary["flash_bytes"] > 0 and summary["sram_bytes"] >= summary["arena_bytes"] + summary["stack_bytes"]
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (1, 16)
    np.testing.assert_array_equal(y, 2.0 * x + 1.0)


def test_run_command_rejects_a_wrong_input_shape(affine_bundle: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tvmnas.cli import app
    from tvmnas.errors import TvmnasError

    np.save(tmp_path / "x.npy", np.zeros((2, 16), np.float32))
    result = CliRunner().invoke(
        app, ["run", str(affine_bundle), "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"), "-t", "cortex-m0"]
    )
    assert isinstance(result.exception, TvmnasError)
    assert "needs shape [1, 16] (16 values), got [2, 16]" in str(result.exception)
    assert not (tmp_path / "y.npy").exists()


PROFILED_SOURCE = """#include "model.h"
#ifdef TVMNAS_PROFILE
#include "tvmnas_harness.h"
#define MARK(k) tvmnas_kernel_mark(k)
#else
#define MARK(k) ((void)0)
#endif
int model_run(const float *input, float *output, uint8_t *arena)
{
    (void)arena;
    MARK(0);
    for (int i = 0; i < MODEL_INPUT_SIZE; ++i) output[i] = 2.0f * input[i];
    MARK(1);
    for (int i = 0; i < MODEL_INPUT_SIZE; ++i) output[i] += 1.0f;
    return 0;
}
"""


def test_profile_build_calls_kernel_marks(tmp_path: Path) -> None:
    target = load_target("cortex-m4")
    bundle = write_bundle(tmp_path / "prof", source=PROFILED_SOURCE)
    x = affine_input(16, 7)
    plain = run(build(bundle, target, tmp_path / "plain"), target, [x])
    profiled = run(build(bundle, target, tmp_path / "prof_b", profile=True), target, [x])
    np.testing.assert_array_equal(profiled.outputs[0], 2.0 * x + 1.0)
    assert profiled.instructions[0] > plain.instructions[0]  # two calls to the marker
