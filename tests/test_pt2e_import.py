"""PT2E-quantized torch.export programs (torchao prepare_pt2e / convert_pt2e): their
quantized_decomposed ops import as relax quantize / dequantize, compile to integer kernels, and the
C agrees with the PT2E model's own output within one step."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from tvmnas.compiler import compile_model
from tvmnas.frontend import import_model
from tvmnas.frontend_pt2e import register_quantized_ops
from tvmnas.passes import QuantizeToInteger
from tvmnas.measure.runner import build, build_host, run, run_host
from tvmnas.targets import load_target

SHAPE = (1, 3, 8, 8)


class Net(torch.nn.Module):
    """conv + ReLU, strided conv + ReLU, max pool, flatten, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(8 * 2 * 2, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(x))
        x = torch.nn.functional.max_pool2d(torch.relu(self.c2(x)), 2)
        return self.fc(torch.flatten(x, 1))


@pytest.fixture(scope="module")
def pt2e(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """The network quantized by torchao's PT2E flow (XNNPACK's int8 scheme: per-channel symmetric
    weights, per-tensor activations), saved as .pt2; and the quantized module itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.testing.pt2e._xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config

        torch.manual_seed(0)
        example = (torch.randn(*SHAPE),)
        module = torch.export.export(Net().eval(), example).module()
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared = prepare_pt2e(module, quantizer)
        gen = torch.Generator().manual_seed(1)
        for _ in range(8):
            prepared(torch.randn(*SHAPE, generator=gen))
        quantized = convert_pt2e(prepared)
        path = tmp_path_factory.mktemp("pt2e") / "net.pt2"
        torch.export.save(torch.export.export(quantized, example), str(path))
    return path, quantized


def _ops(mod: tvm.IRModule) -> set[str]:
    found = set()

    def visit(e) -> None:
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op):
            found.add(e.op.name)

    relax.analysis.post_order_visit(mod["main"], visit)
    return found


def _samples(manifest: dict, n: int) -> tuple[list[torch.Tensor], list[np.ndarray]]:
    """Float inputs and the int8 values the bundle takes for them (PT2E's own quantize)."""
    register_quantized_ops()
    spec = manifest["inputs"][0]
    gen = torch.Generator().manual_seed(11)
    xs = [torch.randn(*SHAPE, generator=gen) for _ in range(n)]
    qs = [torch.ops.quantized_decomposed.quantize_per_tensor.default(x, spec["scale"], spec["zero_point"], -128, 127,
                                                                      torch.int8).numpy() for x in xs]
    return xs, qs


def _pt2e_int8(module: torch.nn.Module, x: torch.Tensor, manifest: dict) -> np.ndarray:
    """The PT2E model's own output, in the int8 steps of the bundle's output."""
    spec = manifest["outputs"][0]
    with torch.no_grad():
        y = module(x)
    y = (y[0] if isinstance(y, (tuple, list)) else y).numpy().reshape(-1)
    return np.clip(np.rint(y / np.float32(spec["scale"])) + spec["zero_point"], -128, 127)


def test_pt2e_program_imports_as_quantize_dequantize_and_rewrites_to_integer_kernels(pt2e) -> None:
    mod = import_model(pt2e[0])
    assert {"relax.quantize", "relax.dequantize", "relax.nn.conv2d"} <= _ops(mod)
    rewritten = QuantizeToInteger()(mod)
    assert not {"relax.quantize", "relax.dequantize", "relax.nn.conv2d", "relax.matmul"} & _ops(rewritten)
    main = rewritten["main"]
    assert str(main.params[0].ty.dtype) == "int8" and str(main.ret_ty.dtype) == "int8"


def test_pt2e_c_is_within_one_step_of_the_pt2e_model_on_host(pt2e, tmp_path: Path) -> None:
    path, module = pt2e
    bundle = compile_model(path, load_target("cortex-m4"), tmp_path / "c")
    assert bundle.manifest["precision"] == "int8"
    assert all("int8" in k["name"] or k["name"] == "reshape" for k in bundle.manifest["kernels"])
    xs, qs = _samples(bundle.manifest, 4)
    outs = run_host(build_host(bundle.out_dir, tmp_path / "h"), [q.astype(np.float32) for q in qs])
    for x, y in zip(xs, outs):
        assert np.abs(y - _pt2e_int8(module, x, bundle.manifest)).max() <= 1


@pytest.mark.slow
def test_pt2e_c_on_qemu_is_within_one_step_of_the_pt2e_model(pt2e, tmp_path: Path) -> None:
    path, module = pt2e
    target = load_target("cortex-m4")
    bundle = compile_model(path, target, tmp_path / "c")
    xs, qs = _samples(bundle.manifest, 3)
    result = run(build(bundle.out_dir, target, tmp_path / "b"), target, [q.astype(np.float32) for q in qs], timeout_s=300)
    for x, y in zip(xs, result.outputs):
        assert np.abs(y - _pt2e_int8(module, x, bundle.manifest)).max() <= 1


@pytest.mark.slow
def test_cli_loads_and_compiles_a_pt2e_program(pt2e, tmp_path: Path) -> None:
    """A fresh interpreter reads the .pt2 (its quantized_decomposed ops registered before loading)."""
    out = tmp_path / "bundle"
    res = subprocess.run([sys.executable, "-m", "tvmnas", "compile", str(pt2e[0]), "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "manifest.json").read_text())["precision"] == "int8"
