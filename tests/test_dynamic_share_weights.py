"""passes/share_weights: the slice analysis and the strided weight view (structure, and C that runs)."""

from __future__ import annotations

import ctypes
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import tvm
from tvm.script import tirx as T

from tvmnas.codegen.bundle import PRELUDE
from tvmnas.codegen.c_printer import print_kernel
from tvmnas.compiler import lower_model
from tvmnas.frontend import import_model
from tvmnas.passes import LowerTIRForC
from tvmnas.passes.share_weights import ReadSharedWeights, StridedWeightView, WeightView, share_weights
from tvmnas.measure.toolchain import require_host_compiler

RNG = np.random.default_rng(0)
FULL = RNG.standard_normal((6, 3, 5, 5)).astype(np.float32)


def test_finds_prefix_and_centred_kernel_slices():
    c0 = {"a": FULL[:4, :2, 1:4, 1:4].copy()}
    c1 = {"a": FULL.copy()}
    layout = share_weights([c0, c1], {"w": FULL})
    assert set(layout.arrays) == {"w"} and not layout.private
    assert layout.views[(0, "a")].offsets == (0, 0, 1, 1)
    assert layout.views[(1, "a")].offsets == (0, 0, 0, 0)
    np.testing.assert_array_equal(layout.arrays["w"], FULL)


def test_stored_array_is_cropped_to_what_configs_read():
    layout = share_weights([{"a": FULL[:2, :1, 1:4, 1:4].copy()}, {"b": FULL[:4, :2, 1:4, 1:4].copy()}], {"w": FULL})
    assert layout.arrays["w"].shape == (4, 2, 3, 3)
    view = layout.views[(0, "a")]
    assert view.offsets == (0, 0, 0, 0) and view.full_shape == (4, 2, 3, 3)
    assert view.strides == (18, 9, 3, 1)


def test_transposed_linear_weight_and_private_constants():
    fc = RNG.standard_normal((10, 8)).astype(np.float32)
    scale = RNG.standard_normal((1, 4, 1, 1)).astype(np.float32)
    layout = share_weights([{"m": fc[:, :4].T.copy(), "s": scale}], {"fc.weight": fc, "w": FULL})
    assert layout.views[(0, "m")].shared == "fc.weight.T"
    assert layout.arrays["fc.weight.T"].shape == (4, 10)
    np.testing.assert_array_equal(layout.private[(0, "s")], scale)
    assert layout.private_bytes == scale.nbytes


def test_a_value_that_is_no_slice_stays_private():
    other = FULL[:2, :2, :3, :3] + 1.0
    layout = share_weights([{"a": other}], {"w": FULL})
    assert not layout.views and (0, "a") in layout.private


@T.prim_func(private=True)
def _before(x: T.Buffer((4, 2), "float32"), w: T.Buffer((2, 2), "float32"), y: T.Buffer((4, 2), "float32")):
    for i, j in T.grid(4, 2):
        y[i, j] = x[i, j] * w[j, j]


@T.prim_func(private=True)
def _expected(x: T.Buffer((4, 2), "float32"), w: T.Buffer((2, 2), "float32", strides=(5, 1), elem_offset=6),
              y: T.Buffer((4, 2), "float32")):
    for i, j in T.grid(4, 2):
        y[i, j] = x[i, j] * w[j, j]


def test_strided_view_changes_only_the_parameter_layout():
    view = WeightView("w", (2, 2), (1, 1), (3, 5))
    after = StridedWeightView(_before, {1: view})
    tvm.ir.assert_structural_equal(after, _expected, map_free_vars=True)


def test_strided_view_rejects_a_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        StridedWeightView(_before, {1: WeightView("w", (3, 2), (0, 0), (3, 5))})


def test_module_pass_rewrites_only_named_functions():
    mod = tvm.IRModule({"k": _before, "other": _before})
    out = ReadSharedWeights({"k": {1: WeightView("w", (2, 2), (1, 1), (3, 5))}})(mod)
    assert [int(s) for s in out["k"].params[1].ty.strides] == [5, 1]
    assert not list(out["other"].params[1].ty.strides)


class _Conv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 4, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(FULL[:4, :2, 1:4, 1:4]))

    def forward(self, x):
        return torch.relu(self.conv(x))


def _import(route: str, tmp: Path) -> tvm.IRModule:
    model = _Conv().eval()
    if route == "torch":
        return import_model(model, (1, 2, 6, 6))
    path = tmp / "conv.onnx"
    torch.onnx.export(model, (torch.zeros(1, 2, 6, 6),), str(path), dynamo=False, input_names=["x"], opset_version=17)
    return import_model(path)


@pytest.mark.parametrize("route", ["onnx", "torch"])
def test_kernel_reads_its_weights_from_the_shared_array(route, tmp_path):
    """Import, lower, view the conv weight into the 6x3x5x5 shared array, print C, run it on the host."""
    require_host_compiler()
    lowered, graph = lower_model(_import(route, tmp_path))
    (call,) = graph.calls
    # a second configuration reads the whole tensor, so the stored array is all of it
    layout = share_weights([graph.constants, {"big": FULL}], {"w": FULL})
    views = {i: layout.views[(0, a)] for i, a in enumerate(call.args) if (0, a) in layout.views}
    assert len(views) == 1 and layout.arrays["w"].shape == FULL.shape
    func = LowerTIRForC()(tvm.IRModule({"kernel": StridedWeightView(lowered[call.kernel], views)}))["kernel"]
    text, sig = print_kernel(func, "kernel")
    (tmp_path / "model.h").write_text("")
    (tmp_path / "model_weights.h").write_text("")
    (tmp_path / "k.c").write_text(PRELUDE + re.sub(r"static (__attribute__\(\(\w+\)\) )?void kernel\(", "void kernel(", text, count=1))
    lib = tmp_path / "k.so"
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", f"-I{tmp_path}", str(tmp_path / "k.c"), "-o", str(lib), "-lm"],
                   check=True, capture_output=True)
    x = RNG.standard_normal((1, 2, 6, 6)).astype(np.float32)
    y = np.zeros((1, 4, 6, 6), np.float32)
    shared = np.ascontiguousarray(layout.arrays["w"])
    scratch = [np.zeros(n, np.float32) for _, _, n in sig.scratch]
    by_arg = {a: x for a in call.args if a == graph.inputs[0].name}
    args = []
    for i, name in enumerate(call.args):
        args.append(shared if i in views else by_arg.get(name, graph.constants.get(name)))
    args += [y] + scratch
    ctypes.CDLL(str(lib)).kernel(*[a.ctypes.data_as(ctypes.c_void_p) for a in args])
    with torch.no_grad():
        ref = _Conv()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
