"""In-place arena planning: the TIR analysis (passes/in_place.py), the planner's choice of which
calls run in place (passes/plan_arena.py), and compiled bundles that run in place."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import tvm
from torch import nn
from tvm import te

from tvmnas.compiler import compile_model, lower_model
from tvmnas.frontend import import_model
from tvmnas.passes import (
    ArenaBuffer,
    AnnotateInPlace,
    CallGraph,
    KernelCall,
    LowerTIRForC,
    TensorInfo,
    estimate_memory,
    graph_buffers,
    in_place_aliases,
    in_place_pairs,
    lower_bound,
    plan_arena,
)
from tvmnas.passes.in_place import INPLACE_ATTR
from tvmnas.measure.runner import build, build_host, run, run_host
from tvmnas.targets import load_target
from tvmnas.model_file import export_onnx, sample_input
from zoo import ZOO

N = 64


def _flat(*tensors) -> tvm.tirx.PrimFunc:
    """A TE kernel lowered as the C emitter sees it (LowerTIRForC)."""
    return LowerTIRForC()(tvm.IRModule({"k": te.create_prim_func(list(tensors))}))["k"]


# ---- the analysis ------------------------------------------------------------------------------


def test_elementwise_add_may_write_over_either_input() -> None:
    a = te.placeholder((N,), "float32", name="a")
    b = te.placeholder((N,), "float32", name="b")
    assert in_place_pairs(_flat(a, b, te.compute((N,), lambda i: a[i] + b[i], name="o"))) == [(0, 2), (1, 2)]


def test_a_read_at_another_index_is_not_in_place() -> None:
    a = te.placeholder((N,), "float32", name="a")
    assert in_place_pairs(_flat(a, te.compute((N,), lambda i: a[(i + 1) % N], name="o"))) == []
    assert in_place_pairs(_flat(a, te.compute((N,), lambda i: a[i] + a[(i + 1) % N], name="o"))) == []


def test_an_output_accumulated_in_memory_is_not_in_place() -> None:
    # o[i] = 0, then o[i] += a[i] * w[k] four times: o is read back and written more than once
    a = te.placeholder((N,), "float32", name="a")
    w = te.placeholder((4,), "float32", name="w")
    k = te.reduce_axis((0, 4), name="k")
    assert in_place_pairs(_flat(a, w, te.compute((N,), lambda i: te.sum(a[i] * w[k], axis=k), name="o"))) == []


def test_another_dtype_is_not_in_place() -> None:
    a = te.placeholder((N,), "float32", name="a")
    assert in_place_pairs(_flat(a, te.compute((N,), lambda i: a[i].astype("int32"), name="o"))) == []


class _Residual(nn.Module):
    """conv -> relu -> depthwise 3x3 -> conv + skip -> relu -> 1x1 conv: one conv epilogue adds a residual."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv1(x))
        return self.head(torch.relu(self.conv2(self.dw(y)) + y))


def _kernels(model, shape) -> tuple[dict[str, tvm.tirx.PrimFunc], object]:
    mod = import_model(model, shape)
    lowered, graph = lower_model(mod)
    used = {c.kernel for c in graph.calls}
    flat = LowerTIRForC()(tvm.IRModule({gv: f for gv, f in lowered.functions.items() if gv.name_hint in used}))
    return {gv.name_hint: f for gv, f in flat.functions.items()}, graph


@pytest.mark.parametrize("route", ["torch", "onnx"])
def test_conv_epilogue_writes_over_the_residual_but_not_over_its_window(route: str, tmp_path: Path) -> None:
    net = _Residual().eval()
    model = net if route == "torch" else export_onnx(net, (1, 4, 8, 8), tmp_path / "r.onnx")
    funcs, graph = _kernels(model, (1, 4, 8, 8))
    pairs = {c.index: in_place_pairs(funcs[c.kernel]) for c in graph.calls}
    (add_call,) = [c for c in graph.calls if len([a for a in c.args if a in graph.tensors]) == 2]
    residual = next(i for i, a in enumerate(add_call.args) if a == graph.calls[0].outputs[0])
    assert pairs[add_call.index] == [(residual, len(add_call.args))]
    # the depthwise 3x3 window reads its input at other pixels than the one it writes
    dw = graph.calls[1]
    assert dw.kernel != add_call.kernel and pairs[dw.index] == []


def test_annotate_in_place_marks_only_provable_kernels() -> None:
    a = te.placeholder((N,), "float32", name="a")
    b = te.placeholder((N,), "float32", name="b")
    mod = tvm.IRModule({
        "add": _flat(a, b, te.compute((N,), lambda i: a[i] + b[i], name="o")),
        "shift": _flat(a, te.compute((N,), lambda i: a[(i + 1) % N], name="o")),
    })
    out = AnnotateInPlace()(mod)
    assert [list(map(int, p)) for p in out["add"].attrs[INPLACE_ATTR]] == [[0, 2], [1, 2]]
    assert out["shift"].attrs is None or INPLACE_ATTR not in out["shift"].attrs
    assert mod["add"].attrs is None or INPLACE_ATTR not in mod["add"].attrs  # the input module is untouched


# ---- the planner -------------------------------------------------------------------------------


def _t(name: str, n: int = 256, dtype: str = "float32") -> TensorInfo:
    return TensorInfo(name, (n,), dtype)


def _graph(calls: list[tuple[str, tuple[str, ...], str]], tensors: list[TensorInfo]) -> CallGraph:
    """x (input) -> calls -> last call's output (model output)."""
    info = {t.name: t for t in tensors}
    return CallGraph([info["x"]], [info[calls[-1][2]]], info, {},
                     [KernelCall(i, k, args, (out,)) for i, (k, args, out) in enumerate(calls)])


ADD = {"add": [(0, 2), (1, 2)]}


def test_add_writes_over_the_input_that_dies_there() -> None:
    # a = f(x); b = g(a); c = add(b, a); y = h(c): a and b die at the add, c takes a's bytes
    g = _graph([("f", ("x",), "a"), ("g", ("a",), "b"), ("add", ("b", "a"), "c"), ("h", ("c",), "y")],
               [_t("x"), _t("a"), _t("b"), _t("c"), _t("y")])
    aliases = in_place_aliases(g, ADD)
    assert aliases == {"c": "b"}
    plan = plan_arena(graph_buffers(g, {}, aliases), aliases=aliases)
    assert plan.offsets["c"] == plan.offsets["b"] != plan.offsets["a"]
    assert plan.arena_bytes == plan.lower_bound_bytes == 2 * 256 * 4
    assert lower_bound(graph_buffers(g, {})) == 3 * 256 * 4


def test_not_in_place_over_an_input_read_later() -> None:
    # b is read again by the last call: the add must not overwrite it, a dies there instead
    g = _graph([("f", ("x",), "a"), ("g", ("a",), "b"), ("add", ("b", "a"), "c"), ("h2", ("c", "b"), "y")],
               [_t("x"), _t("a"), _t("b"), _t("c"), _t("y")])
    assert in_place_aliases(g, ADD) == {"c": "a"}
    g2 = _graph([("f", ("x",), "a"), ("add", ("a", "a2"), "c"), ("h2", ("c", "a", "a2"), "y")],
                [_t("x"), _t("a"), _t("a2"), _t("c"), _t("y")])
    assert in_place_aliases(g2, ADD) == {}


def test_not_in_place_over_the_model_input_or_into_the_model_output() -> None:
    g = _graph([("add", ("x", "x2"), "c"), ("h", ("c",), "y")], [_t("x"), _t("x2"), _t("c"), _t("y")])
    g.inputs.append(g.tensors["x2"])
    assert in_place_aliases(g, ADD) == {}
    g = _graph([("f", ("x",), "a"), ("g", ("x",), "b"), ("add", ("a", "b"), "y")],
               [_t("x"), _t("a"), _t("b"), _t("y")])
    assert in_place_aliases(g, ADD) == {}


def test_not_in_place_across_sizes_or_dtypes() -> None:
    g = _graph([("f", ("x",), "a"), ("g", ("a",), "b"), ("add", ("b", "a"), "c"), ("h", ("c",), "y")],
               [_t("x"), _t("a", 256, "int8"), _t("b", 128), _t("c"), _t("y")])
    assert in_place_aliases(g, ADD) == {}


def test_an_elementwise_chain_shares_one_buffer() -> None:
    ew = {"r": [(0, 1)]}
    g = _graph([("f", ("x",), "a"), ("r", ("a",), "b"), ("r", ("b",), "c"), ("r", ("c",), "d"), ("h", ("d",), "y")],
               [_t("x"), _t("a"), _t("b"), _t("c"), _t("d"), _t("y")])
    aliases = in_place_aliases(g, ew)
    assert aliases == {"b": "a", "c": "b", "d": "c"}
    buffers = graph_buffers(g, {}, aliases)
    assert [(b.name, b.first, b.last) for b in buffers] == [("a", 0, 4)]
    plan = plan_arena(buffers, aliases=aliases)
    assert {plan.offsets[n] for n in "abcd"} == {0} and plan.arena_bytes == 1024


# ---- compiled bundles --------------------------------------------------------------------------


def test_compiled_residual_runs_in_place_and_matches_pytorch(tmp_path: Path) -> None:
    net = _Residual().eval()
    onnx_path = export_onnx(net, (1, 4, 8, 8), tmp_path / "r.onnx")
    bundle = compile_model(onnx_path, load_target("cortex-m4"), tmp_path / "c")
    m = bundle.manifest
    assert m["in_place"] and m["arena_bytes"] < m["arena_lower_bound_without_in_place_bytes"]
    # the kernel that runs in place does not promise the compiler that its two buffers are distinct
    text = (tmp_path / "c" / "model.c").read_text()
    assert "in place over" in text
    x = sample_input((1, 4, 8, 8)).numpy()
    (y,) = run_host(build_host(bundle.out_dir, tmp_path / "h"), [x])
    np.testing.assert_allclose(y.reshape(1, 2, 8, 8), net(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_memory_estimate_plans_in_place_as_the_compiler(tmp_path: Path) -> None:
    onnx_path = export_onnx(_Residual().eval(), (1, 4, 8, 8), tmp_path / "r.onnx")
    lowered, _ = lower_model(import_model(onnx_path))
    m = compile_model(onnx_path, load_target("cortex-m4"), tmp_path / "c").manifest
    assert estimate_memory(lowered).peak_sram_bytes == m["arena_bytes"]
    assert estimate_memory(lowered, in_place=False).peak_sram_bytes >= m["arena_lower_bound_without_in_place_bytes"]


def test_in_place_off_plans_every_tensor_its_own_bytes(tmp_path: Path) -> None:
    onnx_path = export_onnx(_Residual().eval(), (1, 4, 8, 8), tmp_path / "r.onnx")
    m = compile_model(onnx_path, load_target("cortex-m4"), tmp_path / "c", in_place=False).manifest
    assert m["in_place"] == {} and m["arena_bytes"] >= m["arena_lower_bound_without_in_place_bytes"]
    assert "in place over" not in (tmp_path / "c" / "model.c").read_text()


@pytest.mark.slow
@pytest.mark.ci
def test_resnet_in_place_on_qemu_matches_onnxruntime_and_the_int8_reference(tmp_path: Path) -> None:
    """A residual network float32 against onnxruntime and int8 bit for bit against the integer
    reference, both built in place, on the emulator."""
    from tvmnas.quant.quantize import quantize_model
    from tvmnas.quant.reference import ReferenceModel, quantize_input

    entry = ZOO["m0_resnet"]
    target = load_target("cortex-m4")
    onnx_path = export_onnx(entry.build(), entry.input_shape, tmp_path / "m.onnx")
    x = sample_input(entry.input_shape).numpy()
    f32 = compile_model(onnx_path, target, tmp_path / "f")
    assert f32.manifest["in_place"]
    (y,) = run(build(f32.out_dir, target, tmp_path / "fb"), target, [x], timeout_s=300).outputs
    expected = ort.InferenceSession(str(onnx_path)).run(None, {"input": x})[0]
    np.testing.assert_allclose(y.reshape(expected.shape), expected, rtol=1e-5, atol=1e-6)

    calibration = np.random.RandomState(0).randn(8, *entry.input_shape[1:]).astype(np.float32)
    qdq = tmp_path / "q.onnx"
    qdq.write_bytes(quantize_model(onnx_path, calibration).SerializeToString())
    ref = ReferenceModel(qdq)
    xq = quantize_input(x, ref.graph.tensors[ref.graph.inputs[0]])
    # SIMD: the adds run in place after the opaque convolutions; scalar: the conv epilogue adds in place
    for simd in (True, False):
        q = compile_model(qdq, target, tmp_path / f"q{simd}", simd=simd)
        assert q.manifest["in_place"]
        (yq,) = run(build(q.out_dir, target, tmp_path / f"qb{simd}"), target, [xq.astype(np.float32)],
                    timeout_s=300).outputs
        np.testing.assert_array_equal(yq.astype(np.int8), ref.run_int8(xq)[0].reshape(-1))


# DS-CNN's float32 buffers (name, bytes, first, last): explicit padding makes its chain alternate
# 48 KB, 32 KB, 32 KB, 48 KB, ...; first fit in every order leaves a third 32 KB hole (112,384 B)
DSCNN_BUFFERS = [
    ("lv", 2784, 0, 1), ("lv_1", 32000, 1, 2), ("1:pad_temp", 480, 1, 1), ("lv5", 48384, 2, 3), ("lv1", 32000, 3, 4),
    ("lv2", 32000, 4, 5), ("4:pad_temp", 1280, 4, 4), ("lv15", 48384, 5, 6), ("lv3", 32000, 6, 7),
    ("lv4", 32000, 7, 8), ("7:pad_temp", 1280, 7, 7), ("lv25", 48384, 8, 9), ("lv5_1", 32000, 9, 10),
    ("lv6", 32000, 10, 11), ("10:pad_temp", 1280, 10, 10), ("lv35", 48384, 11, 12), ("lv7", 32000, 12, 13),
    ("lv8", 32000, 13, 14), ("13:pad_temp", 1280, 13, 13), ("lv45", 256, 14, 15), ("lv46", 256, 15, 16),
]


def test_plan_reaches_the_bound_where_first_fit_fragments() -> None:
    bufs = [ArenaBuffer(n, b, f, la, is_scratch=":" in n) for n, b, f, la in DSCNN_BUFFERS]
    plan = plan_arena(bufs)
    assert plan.arena_bytes == plan.lower_bound_bytes == 48384 + 32000
    for i, a in enumerate(bufs):
        assert plan.offsets[a.name] % 16 == 0 and plan.offsets[a.name] + a.nbytes <= plan.arena_bytes
        for b in bufs[i + 1:]:
            if a.overlaps(b):
                a0, b0 = plan.offsets[a.name], plan.offsets[b.name]
                assert a0 + a.nbytes <= b0 or b0 + b.nbytes <= a0


@pytest.mark.slow
def test_dscnn_arena_at_its_bound_runs_correctly(tmp_path: Path) -> None:
    """MLPerf Tiny's DS-CNN (explicit padding between layers: the search places its chain), built
    for the host, against PyTorch."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from public_models import PUBLIC_MODELS

    entry = PUBLIC_MODELS["mlperf_dscnn"]
    net = entry.build()
    onnx_path = export_onnx(net, entry.input_shape, tmp_path / "ds.onnx")
    m = compile_model(onnx_path, load_target("cortex-m4"), tmp_path / "c").manifest
    assert m["arena_bytes"] == m["arena_lower_bound_bytes"]
    x = entry.sample_input().numpy()
    (y,) = run_host(build_host(tmp_path / "c", tmp_path / "h"), [x])
    expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y.reshape(expected.shape), expected, rtol=1e-4, atol=1e-5)


def test_integer_casts_in_an_index_are_evaluated() -> None:
    # darts_cells int8 has such an index; a cast that narrows wraps as C converts
    a = te.placeholder((N,), "float32", name="a")
    same = te.compute((N,), lambda i: a[i.astype("int16").astype("int32")] * 2.0, name="o")
    assert in_place_pairs(_flat(a, same)) == [(0, 1)]
    b = te.placeholder((512,), "float32", name="b")
    wrapped = te.compute((512,), lambda i: b[i.astype("int8").astype("int32") % 512], name="o")
    assert in_place_pairs(_flat(b, wrapped)) == []
