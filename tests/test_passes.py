"""Structural tests of the Relax passes and the arena planner (Before / Expected / equality)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from tvm import relax
from tvm.script import relax as R

from tvmnas.frontend import import_model
from tvmnas.passes import ArenaBuffer, FoldBatchNorm, SplitToSlices, lower_bound, plan_arena


def _conv_bn_module(bias: bool) -> tuple[tvm.IRModule, dict[str, np.ndarray]]:
    rng = np.random.RandomState(0)
    p = {
        "w": rng.randn(4, 3, 3, 3).astype("float32"),
        "b": rng.randn(1, 4, 1, 1).astype("float32"),
        "gamma": rng.rand(4).astype("float32") + 0.5,
        "beta": rng.randn(4).astype("float32"),
        "mean": rng.randn(4).astype("float32"),
        "var": rng.rand(4).astype("float32") + 0.5,
    }
    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((1, 3, 8, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(p["w"]), padding=[1, 1, 1, 1]))
            if bias:
                y = bb.emit(relax.op.add(y, relax.const(p["b"])))
            bn = bb.emit(relax.op.nn.batch_norm(
                y, relax.const(p["gamma"]), relax.const(p["beta"]), relax.const(p["mean"]),
                relax.const(p["var"]), axis=1, epsilon=1e-5))
            out = bb.emit_output(relax.TupleGetItem(bn, 0))
        bb.emit_func_output(out)
    return bb.get(), p


def _expected_folded(p: dict[str, np.ndarray], bias: bool) -> tvm.IRModule:
    scale = p["gamma"].astype(np.float64) / np.sqrt(p["var"].astype(np.float64) + 1e-5)
    b = p["b"].reshape(-1).astype(np.float64) if bias else np.zeros(4)
    w = (p["w"].astype(np.float64) * scale[:, None, None, None]).astype("float32")
    new_b = ((b - p["mean"]) * scale + p["beta"]).astype("float32").reshape(1, -1, 1, 1)
    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((1, 3, 8, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(w), padding=[1, 1, 1, 1]))
            out = bb.emit_output(relax.op.add(y, relax.const(new_b)))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("bias", [True, False])
def test_fold_batch_norm_matches_expected(bias: bool) -> None:
    before, p = _conv_bn_module(bias)
    after = FoldBatchNorm()(before)
    tvm.ir.assert_structural_equal(after, _expected_folded(p, bias), map_free_vars=True)


def test_fold_batch_norm_leaves_bn_without_conv_untouched() -> None:
    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((1, 4, 2, 2), "float32"))
    ones = relax.const(np.ones(4, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            bn = bb.emit(relax.op.nn.batch_norm(x, ones, ones, ones, ones, axis=1))
            out = bb.emit_output(relax.TupleGetItem(bn, 0))
        bb.emit_func_output(out)
    before = bb.get()
    tvm.ir.assert_structural_equal(FoldBatchNorm()(before), before)


def _run_relax(mod: tvm.IRModule, x: np.ndarray) -> np.ndarray:
    exe = tvm.compile(mod, target="llvm")
    vm = relax.VirtualMachine(exe, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x))
    out = out[0] if isinstance(out, (list, tuple)) or hasattr(out, "__len__") and not hasattr(out, "numpy") else out
    return out.numpy()


class ConvBn(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1, groups=3)
        self.bn = torch.nn.BatchNorm2d(6)
        self.bn.running_mean.uniform_(-1, 1)
        self.bn.running_var.uniform_(0.5, 2)
        self.bn.weight.data.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


@pytest.mark.parametrize("route", ["torch", "onnx"])
def test_fold_batch_norm_preserves_outputs(route: str, tmp_path) -> None:
    model = ConvBn().eval()
    x = np.random.RandomState(1).randn(1, 3, 8, 8).astype("float32")
    ref = model(torch.from_numpy(x)).detach().numpy()
    if route == "onnx":
        path = tmp_path / "m.onnx"
        torch.onnx.export(model, (torch.from_numpy(x),), str(path), dynamo=False, do_constant_folding=False)
        mod = import_model(path)
    else:
        mod = import_model(model, (1, 3, 8, 8))
    folded = FoldBatchNorm()(relax.transform.FoldConstant()(mod))
    assert "batch_norm" not in folded["main"].script()
    np.testing.assert_allclose(_run_relax(folded, x), ref, atol=1e-5 * np.abs(ref).max())


def test_split_to_slices_removes_split_and_keeps_values() -> None:
    class Chunk(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, b = torch.split(x, [1, 3], dim=1)
            return torch.cat([b, a * 2], dim=1)

    mod = import_model(Chunk(), (1, 4, 2, 2))
    after = SplitToSlices()(mod)
    text = after["main"].script()
    assert "R.split" not in text and text.count("R.strided_slice") == 2
    x = np.arange(16, dtype="float32").reshape(1, 4, 2, 2)
    ref = Chunk()(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(_run_relax(after, x), ref)


def test_module_passes_leave_their_input_module_unchanged() -> None:
    # like TVM's own passes: a new module out, the caller's module untouched
    from tvmnas.passes import MCULowering, ScheduleForMCU

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    mod = import_model(net, (1, 3, 8, 8))
    for make in (FoldBatchNorm, SplitToSlices):
        before = {gv.name_hint: f for gv, f in mod.functions.items()}
        make()(mod)
        assert all(mod[name].same_as(f) for name, f in before.items()), make.__name__
    lowered = MCULowering()(mod)
    before = {gv.name_hint: f for gv, f in lowered.functions.items()}
    scheduled = ScheduleForMCU()(lowered)
    assert all(lowered[name].same_as(f) for name, f in before.items())
    assert any(not scheduled[name].same_as(f) for name, f in before.items())


def test_plan_arena_reuses_dead_buffers() -> None:
    bufs = [ArenaBuffer("a", 100, 0, 1), ArenaBuffer("b", 100, 1, 2), ArenaBuffer("c", 100, 2, 3)]
    plan = plan_arena(bufs)
    assert plan.offsets["a"] == plan.offsets["c"]          # a is dead when c is born
    assert plan.offsets["a"] != plan.offsets["b"]
    assert plan.arena_bytes == 224 == plan.lower_bound_bytes
    assert plan.unshared_bytes == 336


def test_plan_arena_never_overlaps_live_buffers() -> None:
    rng = np.random.RandomState(3)
    bufs = []
    for i in range(40):
        first = int(rng.randint(0, 20))
        bufs.append(ArenaBuffer(f"t{i}", int(rng.randint(1, 5000)), first, first + int(rng.randint(0, 5))))
    plan = plan_arena(bufs)
    for i, a in enumerate(bufs):
        for b in bufs[i + 1:]:
            if a.overlaps(b):
                a0, b0 = plan.offsets[a.name], plan.offsets[b.name]
                assert a0 + a.nbytes <= b0 or b0 + b.nbytes <= a0
        assert plan.offsets[a.name] % 16 == 0
    assert lower_bound(bufs) <= plan.arena_bytes <= plan.unshared_bytes
