"""The compiler end to end: zoo networks compiled to C and run (host gcc and QEMU) against PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tvmnas.compiler import compile_model
from tvmnas.errors import BudgetExceededError, ModelLoadError, UnknownTargetError, UnsupportedOperatorError
from tvmnas.output_dir import write_marker
from tvmnas.measure.runner import build, build_host, run, run_host
from tvmnas.targets import load_target
from tvmnas.model_file import export_onnx, export_pt2
from zoo import ZOO

TOLERANCE = 1e-4  # of the output's scale (max abs value)
M4 = "cortex-m4"
CI_ZOO = ["resnet8", "mobilenetv2_tiny", "darts_cells"]
M0_ZOO = sorted(name for name, e in ZOO.items() if e.m0_sized)


def _reference(name: str, seed: int = 0) -> tuple[torch.nn.Module, np.ndarray, np.ndarray]:
    entry = ZOO[name]
    model = entry.build()
    x = entry.sample_input(seed).numpy()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    return model, x, ref


def _assert_close(y: np.ndarray, ref: np.ndarray) -> None:
    scale = float(np.abs(ref).max())
    err = float(np.abs(y.reshape(ref.shape) - ref).max())
    assert err <= TOLERANCE * scale, f"max abs error {err:.3g} > {TOLERANCE} x output scale {scale:.3g}"


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_matches_pytorch_on_host(name: str, tmp_path: Path) -> None:
    model, x, ref = _reference(name)
    bundle = compile_model(model, load_target(M4), tmp_path / "c", input_shape=x.shape, ignore_budget=True)
    manifest = json.loads((bundle.out_dir / "manifest.json").read_text())
    assert manifest["inputs"][0]["shape"] == list(x.shape)
    assert manifest["outputs"][0]["shape"] == list(ref.shape)
    assert manifest["arena_bytes"] >= manifest["arena_lower_bound_bytes"] > 0
    exe = build_host(bundle.out_dir, tmp_path / "host")
    _assert_close(run_host(exe, [x])[0], ref)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.ci) if n in CI_ZOO else n for n in sorted(ZOO)]
)
def test_zoo_matches_pytorch_on_qemu_cortex_m4(name: str, tmp_path: Path) -> None:
    model, x, ref = _reference(name)
    target = load_target(M4)
    bundle = compile_model(model, target, tmp_path / "c", input_shape=x.shape, ignore_budget=True)
    result = run(build(bundle.out_dir, target, tmp_path / "b"), target, [x], timeout_s=600)
    _assert_close(result.outputs[0], ref)
    assert result.instructions[0] > 0


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.parametrize("target_name", ["cortex-m0", "cortex-m3", "cortex-m7", "cortex-m55"])
@pytest.mark.parametrize("name", M0_ZOO[:3])
def test_small_zoo_matches_pytorch_on_other_cores(name: str, target_name: str, tmp_path: Path) -> None:
    model, x, ref = _reference(name)
    target = load_target(target_name)
    bundle = compile_model(model, target, tmp_path / "c", input_shape=x.shape)
    result = run(build(bundle.out_dir, target, tmp_path / "b"), target, [x], timeout_s=300)
    _assert_close(result.outputs[0], ref)


def test_instruction_count_is_deterministic(tmp_path: Path) -> None:
    model, x, _ = _reference("m0_cnn")
    target = load_target(M4)
    bundle = compile_model(model, target, tmp_path / "c", input_shape=x.shape)
    elf = build(bundle.out_dir, target, tmp_path / "b")
    first, second = run(elf, target, [x]), run(elf, target, [x])
    assert first.instructions == second.instructions
    assert first.instructions[0] > 1000


class _RepeatedInput(torch.nn.Module):
    """One kernel takes the same tensor twice (concat(a, b, a)), as a DARTS cell whose identical
    edges the importer merges does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.nn.functional.max_pool2d(x, 3, 2, 1)
        b = self.conv(a)
        return torch.cat([a, b, a], dim=1)


def test_kernel_taking_one_tensor_twice_matches_pytorch_on_qemu(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _RepeatedInput().eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    target = load_target(M4)
    bundle = compile_model(model, target, tmp_path / "c", input_shape=x.shape)
    c_text = (bundle.out_dir / "model.c").read_text()
    (call,) = [line.strip() for line in c_text.splitlines() if line.strip().startswith("concatenate(")]
    args = call.removeprefix("concatenate(").removesuffix(");").split(", ")
    assert len(set(args)) < len(args), call  # the same tensor passed twice
    result = run(build(bundle.out_dir, target, tmp_path / "b"), target, [x])
    _assert_close(result.outputs[0], ref)


@pytest.mark.parametrize("route", ["onnx", "pt2"])
def test_onnx_and_pytorch_routes_agree(route: str, tmp_path: Path) -> None:
    model, x, ref = _reference("m0_resnet")
    path = tmp_path / f"m.{route}"
    if route == "onnx":
        export_onnx(model, x.shape, path, keep_batchnorm=True)
    else:
        export_pt2(model, x.shape, path)
    bundle = compile_model(path, load_target(M4), tmp_path / "c")
    from_file = run_host(build_host(bundle.out_dir, tmp_path / "h"), [x])[0]
    direct = compile_model(model, load_target(M4), tmp_path / "d", input_shape=x.shape)
    from_module = run_host(build_host(direct.out_dir, tmp_path / "h2"), [x])[0]
    _assert_close(from_file, ref)
    np.testing.assert_allclose(from_file, from_module, atol=1e-6 * np.abs(ref).max())


def test_same_input_gives_same_bytes(tmp_path: Path) -> None:
    model, x, _ = _reference("m0_dwsep")
    a = compile_model(model, load_target(M4), tmp_path / "a", input_shape=x.shape).out_dir
    b = compile_model(model, load_target(M4), tmp_path / "b", input_shape=x.shape).out_dir
    for name in ("model.c", "model.h", "model_weights.c", "manifest.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_generated_c_names_layers_and_arena_roles(tmp_path: Path) -> None:
    model, x, _ = _reference("m0_cnn")
    out = compile_model(model, load_target(M4), tmp_path / "c", input_shape=x.shape).out_dir
    source = (out / "model.c").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    first_conv = next(k for k in manifest["kernels"] if "conv2d" in k["name"])
    assert first_conv["source"] == "conv1.conv"  # the torch module path of m0_cnn's first convolution
    assert f"/* {first_conv['index']} conv1.conv: conv2d" in source and "-> 1x" in source
    assert "/* activation" in source
    assert "malloc" not in source and "tvm/" not in source
    assert "__attribute__((aligned(16)))" in (out / "model_weights.c").read_text()


# ---- failure paths: one clear line, nothing half-written ------------------------------------------


class ErfInv(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erfinv(torch.tanh(self.conv(x)))


def test_unsupported_operator_names_op_and_node(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedOperatorError) as err:
        compile_model(ErfInv(), load_target(M4), tmp_path / "c", input_shape=(1, 1, 4, 4))
    message = str(err.value)
    assert "'erfinv" in message and "at node 'erfinv" in message
    assert "\n" not in message
    assert not (tmp_path / "c").exists()


def test_missing_and_corrupt_model_files(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        compile_model(tmp_path / "nope.onnx", load_target(M4), tmp_path / "c")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelLoadError, match="not a valid ONNX model"):
        compile_model(bad, load_target(M4), tmp_path / "c")
    bad_pt2 = tmp_path / "bad.pt2"
    bad_pt2.write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match="not a readable torch.export program"):
        compile_model(bad_pt2, load_target(M4), tmp_path / "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx", "bad.pt2"]


def test_unknown_target() -> None:
    with pytest.raises(UnknownTargetError, match="cortex-m99"):
        load_target("cortex-m99")


def test_over_budget_model_is_refused_with_both_numbers(tmp_path: Path) -> None:
    model, x, _ = _reference("resnet8")
    (tmp_path / "c").mkdir()
    write_marker(tmp_path / "c", "bundle")  # an earlier bundle: compile may replace it, but only when done
    (tmp_path / "c" / "keep.txt").write_text("previous bundle")
    with pytest.raises(BudgetExceededError) as err:
        compile_model(model, load_target("cortex-m0"), tmp_path / "c", input_shape=x.shape)
    message = str(err.value)
    assert "cortex-m0" in message and "bytes" in message and err.value.settings == ("ignore_budget",)
    assert err.value.needed > err.value.budget
    # the previous output directory is untouched and no staging directory is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
    assert (tmp_path / "c" / "keep.txt").read_text() == "previous bundle"
