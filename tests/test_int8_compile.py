"""int8 QDQ models compiled to integer-only C: the rewrite pass, bit-exactness against the integer
reference (TFLite Micro semantics) on QEMU, agreement with onnxruntime, the bundle's int8 interface
and the CLI's int8 paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import tvm
from tvm import relax

from tvmnas.codegen.c_printer import print_kernel
from tvmnas.compiler import compile_model
from tvmnas.errors import QuantizationError, TvmnasError
from tvmnas.frontend import import_model
from tvmnas.passes import LowerTIRForC, MCULowering, QuantizeToInteger, extract_call_graph, io_quantization
from tvmnas.quant.int8_nets import INT8_NETS, calibration_data, write_int8_net
from tvmnas.quant.reference import ReferenceModel, quantize_input
from tvmnas.measure.runner import build, build_host, run, run_host
from tvmnas.targets import load_target

M4 = "cortex-m4"


@pytest.fixture(scope="module")
def nets(tmp_path_factory) -> dict[str, Path]:
    """QDQ ONNX of every network of the int8 set (tvmnas.quant.int8_nets), made by the quantizer."""
    out = tmp_path_factory.mktemp("int8_nets")
    return {name: write_int8_net(name, out).qdq_onnx for name in INT8_NETS}


def _int8_samples(model: Path, name: str, n: int = 3) -> tuple[ReferenceModel, list[np.ndarray]]:
    ref = ReferenceModel(model)
    t = ref.graph.tensors[ref.graph.inputs[0]]
    calib = calibration_data(name, samples=n, seed=7)
    return ref, [quantize_input(c[None], t) for c in calib]


def _ops(mod: tvm.IRModule) -> list[str]:
    found = []

    def visit(e) -> None:
        if isinstance(e, relax.Call):
            found.append(e.op.name if isinstance(e.op, tvm.ir.Op) else "")

    relax.analysis.post_order_visit(mod["main"], visit)
    return found


def _ort_quantized(tmp_path: Path, per_channel: bool, fmt: str = "QDQ") -> tuple[Path, np.ndarray]:
    """A small CNN (conv, depthwise, 1x1 conv + residual add, max pool, mean, dense) quantized by
    onnxruntime's own quantizer (an independent QDQ producer), and one float input."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, stride=2, groups=8)
            self.c2 = torch.nn.Conv2d(8, 8, 1)
            self.fc = torch.nn.Linear(8, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.c1(x))
            z = torch.relu(self.dw(y))
            z = z + self.c2(z)
            z = torch.nn.functional.max_pool2d(z, 2)
            return self.fc(z.mean((2, 3)))

    torch.manual_seed(0)
    float_path, q_path = tmp_path / "f.onnx", tmp_path / f"q_{fmt}_{per_channel}.onnx"
    torch.onnx.export(Net().eval(), torch.randn(1, 3, 8, 8), str(float_path), dynamo=False, opset_version=17,
                      input_names=["x"])
    samples = [np.random.RandomState(i).randn(1, 3, 8, 8).astype(np.float32) for i in range(8)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter({"x": s} for s in samples)

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(float_path), str(q_path), Reader(), quant_format=getattr(QuantFormat, fmt),
                    per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return q_path, np.random.RandomState(99).randn(1, 3, 8, 8).astype(np.float32)


def _ort_unoptimized(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


# ---- import and the rewrite pass ---------------------------------------------------------------


def test_stock_lowering_turns_qdq_weights_into_float32_constants(nets) -> None:
    """What the rewrite is for: without it the QDQ model lowers to fake-quant float (weights float32)."""
    graph = extract_call_graph(MCULowering()(import_model(nets["conv"])))
    assert {str(c.dtype) for c in graph.constants.values()} == {"float32"}


def test_rewrite_leaves_only_integer_kernels_and_int8_weights(nets) -> None:
    mod = import_model(nets["residual"])
    rewritten = QuantizeToInteger()(mod)
    ops = _ops(rewritten)
    assert "relax.quantize" not in ops and "relax.dequantize" not in ops and "relax.nn.conv2d" not in ops
    main = rewritten["main"]
    assert str(main.params[0].ty.dtype) == "int8" and str(main.ret_ty.dtype) == "int8"
    graph = extract_call_graph(MCULowering()(rewritten))
    dtypes = sorted({str(c.dtype) for c in graph.constants.values()})
    assert dtypes == ["int32", "int8"]  # int8 weights; int32 bias, multipliers and shifts
    assert all(str(c.dtype) == "int8" for c in graph.constants.values() if c.ndim == 4)
    assert all(t.dtype == "int8" for t in graph.tensors.values())


def test_io_quantization_reads_the_input_and_output_scales(nets) -> None:
    mod = import_model(nets["dense"])
    ref = ReferenceModel(nets["dense"]).graph
    io = io_quantization(mod)
    t_in, t_out = ref.tensors[ref.inputs[0]], ref.tensors[ref.outputs[0]]
    assert io["input"].zero_point == t_in.zero_point and io["input"].scale == pytest.approx(float(t_in.scale))
    assert io["output"].zero_point == t_out.zero_point and io["output"].scale == pytest.approx(float(t_out.scale))


def test_float_island_stays_float_and_compiles(tmp_path: Path) -> None:
    """A Sigmoid whose output is not quantized as TFLite's int8 LOGISTIC requires (scale 1/256, zero
    point -128) has no integer kernel: it stays float between the integer layers, and the model
    still agrees with onnxruntime within one output step."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(3)
    w = rng.randint(-127, 128, size=(4, 2, 3, 3)).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.float32(0.02), "s_in"), numpy_helper.from_array(np.int8(3), "z_in"),
        numpy_helper.from_array(w, "w_q"), numpy_helper.from_array(np.full(4, 0.01, np.float32), "w_s"),
        numpy_helper.from_array(np.zeros(4, np.int8), "w_z"),
        numpy_helper.from_array(np.float32(0.05), "s_c"), numpy_helper.from_array(np.int8(-5), "z_c"),
        numpy_helper.from_array(np.float32(1 / 250), "s_o"), numpy_helper.from_array(np.int8(-128), "z_o"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s_in", "z_in"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s_in", "z_in"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("QuantizeLinear", ["c", "s_c", "z_c"], ["cq"]),
        helper.make_node("DequantizeLinear", ["cq", "s_c", "z_c"], ["cd"]),
        helper.make_node("Sigmoid", ["cd"], ["sg"], name="sigmoid"),
        helper.make_node("QuantizeLinear", ["sg", "s_o", "z_o"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "s_o", "z_o"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "island", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], inits)
    path = tmp_path / "island.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))

    rewritten = QuantizeToInteger()(import_model(path))
    assert "relax.sigmoid" in _ops(rewritten) and "relax.quantize" in _ops(rewritten)
    bundle = compile_model(path, load_target(M4), tmp_path / "c")
    x = rng.randn(1, 2, 6, 6).astype(np.float32)
    xq = np.clip(np.rint(x / np.float32(0.02)) + 3, -128, 127)
    y = run_host(build_host(bundle.out_dir, tmp_path / "h"), [xq.astype(np.float32)])[0]
    ref = np.rint(_ort_unoptimized(path, x).reshape(-1) * 250) - 128
    assert np.abs(y - ref).max() <= 1


# ---- bit-exact against the integer reference, on the emulator -----------------------------------


def _compile_and_run(model: Path, target_name: str, inputs: list[np.ndarray], tmp_path: Path):
    target = load_target(target_name)
    bundle = compile_model(model, target, tmp_path / "c")
    result = run(build(bundle.out_dir, target, tmp_path / "b"), target, [x.astype(np.float32) for x in inputs],
                 timeout_s=300)
    return bundle, result


@pytest.mark.parametrize("name", sorted(INT8_NETS))
def test_network_is_bit_exact_on_host(nets, name: str, tmp_path: Path) -> None:
    ref, xs = _int8_samples(nets[name], name)
    bundle = compile_model(nets[name], load_target(M4), tmp_path / "c")
    assert bundle.manifest["precision"] == "int8"
    outs = run_host(build_host(bundle.out_dir, tmp_path / "h"), [x.astype(np.float32) for x in xs])
    for x, y in zip(xs, outs):
        np.testing.assert_array_equal(y.astype(np.int8), ref.run_int8(x)[0].reshape(-1))


def test_concat_of_differently_quantized_inputs_is_bit_exact(tmp_path: Path) -> None:
    """Concat whose inputs carry other scales than its output: each is requantized in integers first."""
    from tvmnas.quant.quantize import quantize_model
    from tvmnas.model_file import export_onnx

    class Cat(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.b = torch.nn.Conv2d(3, 6, 1)
            self.fc = torch.nn.Linear(10 * 6 * 6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.flatten(torch.cat([torch.relu(self.a(x)), self.b(x)], 1), 1))

    torch.manual_seed(0)
    export_onnx(Cat().eval(), (1, 3, 6, 6), tmp_path / "cat.onnx")
    calib = np.random.RandomState(0).randn(8, 3, 6, 6).astype(np.float32)
    onnx.save(quantize_model(tmp_path / "cat.onnx", calib), str(tmp_path / "cat.qdq.onnx"))
    ref = ReferenceModel(tmp_path / "cat.qdq.onnx")
    bundle = compile_model(tmp_path / "cat.qdq.onnx", load_target(M4), tmp_path / "c")
    assert any("requantize_int8" in k["name"] for k in bundle.manifest["kernels"])
    xs = [quantize_input(c[None], ref.graph.tensors[ref.graph.inputs[0]]) for c in calib[:3]]
    outs = run_host(build_host(bundle.out_dir, tmp_path / "h"), [x.astype(np.float32) for x in xs])
    for x, y in zip(xs, outs):
        np.testing.assert_array_equal(y.astype(np.int8), ref.run_int8(x)[0].reshape(-1))


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.ci) if n == "residual" else n
                                  for n in sorted(INT8_NETS)])
def test_network_is_bit_exact_on_qemu_cortex_m4(nets, name: str, tmp_path: Path) -> None:
    ref, xs = _int8_samples(nets[name], name)
    _, result = _compile_and_run(nets[name], M4, xs, tmp_path)
    for x, y in zip(xs, result.outputs):
        np.testing.assert_array_equal(y.astype(np.int8), ref.run_int8(x)[0].reshape(-1))
    assert all(n > 0 for n in result.instructions)


@pytest.mark.slow
@pytest.mark.parametrize("target_name", ["cortex-m0", "cortex-m3", "cortex-m7", "cortex-m55"])
@pytest.mark.parametrize("name", ["residual", "depthwise"])
def test_network_is_bit_exact_on_other_cores(nets, name: str, target_name: str, tmp_path: Path) -> None:
    """Cortex-M0 has no 64-bit multiply instruction (libgcc's), M3 no DSP, M7 and M55 other pipelines."""
    ref, xs = _int8_samples(nets[name], name, n=2)
    _, result = _compile_and_run(nets[name], target_name, xs, tmp_path)
    for x, y in zip(xs, result.outputs):
        np.testing.assert_array_equal(y.astype(np.int8), ref.run_int8(x)[0].reshape(-1))


@pytest.mark.parametrize("per_channel", [True, False])
def test_onnxruntime_qdq_model_within_one_step_of_onnxruntime(per_channel: bool, tmp_path: Path) -> None:
    """A QDQ model from onnxruntime's quantizer (per-channel and per-tensor weights): the integer C
    agrees with onnxruntime's unoptimized (fake-quant float) run within 1 LSB, and bit for bit with
    the integer reference."""
    path, x = _ort_quantized(tmp_path, per_channel)
    bundle = compile_model(path, load_target(M4), tmp_path / "c")
    assert all(k["name"].find("int8") >= 0 for k in bundle.manifest["kernels"])  # no float island left
    (inp,), (out,) = bundle.manifest["inputs"], bundle.manifest["outputs"]
    xq = np.clip(np.rint(x / np.float32(inp["scale"])) + inp["zero_point"], -128, 127).astype(np.float32)
    y = run_host(build_host(bundle.out_dir, tmp_path / "h"), [xq])[0]
    ref = np.rint(_ort_unoptimized(path, x).reshape(-1) / np.float32(out["scale"])) + out["zero_point"]
    assert np.abs(y - ref).max() <= 1
    np.testing.assert_array_equal(y.astype(np.int8), ReferenceModel(path).run_int8(xq.astype(np.int8))[0].reshape(-1))


# ---- the bundle's int8 interface ----------------------------------------------------------------


def test_int8_bundle_keeps_int8_weights_and_a_quarter_size_arena(nets, tmp_path: Path) -> None:
    q = compile_model(nets["depthwise"], load_target(M4), tmp_path / "q").manifest
    f = compile_model(nets["depthwise"].with_name("depthwise.onnx"), load_target(M4), tmp_path / "f").manifest
    weights = (tmp_path / "q" / "model_weights.c").read_text()
    assert "const int8_t" in weights and "const float" not in weights
    assert f["precision"] == "float32" and q["precision"] == "int8"
    assert q["weights_bytes"] * 2 < f["weights_bytes"]  # int8 weights; int32 bias, multiplier, shift per channel
    assert q["arena_bytes"] * 3 <= f["arena_bytes"]
    header = (tmp_path / "q" / "model.h").read_text()
    assert "int model_run(const int8_t *input, int8_t *output, uint8_t *arena);" in header
    (inp,), (out,) = q["inputs"], q["outputs"]
    assert f"#define MODEL_INPUT_ZERO_POINT ({inp['zero_point']})" in header
    assert f"#define MODEL_OUTPUT_ZERO_POINT ({out['zero_point']})" in header
    assert "#define MODEL_INPUT_SCALE" in header and "#define MODEL_OUTPUT_TYPE int8_t" in header


def test_integer_convolutions_get_the_integer_register_tile(tmp_path: Path) -> None:
    """ScheduleForMCU tiles int32 accumulators 2x2 (core registers), float ones 4x4 (FPU registers)."""
    from tvmnas.quant.quantize import quantize_model
    from tvmnas.model_file import export_onnx

    torch.manual_seed(0)
    export_onnx(torch.nn.Conv2d(8, 8, 3, padding=1).eval(), (1, 8, 8, 8), tmp_path / "conv.onnx")
    calib = np.random.RandomState(0).randn(4, 8, 8, 8).astype(np.float32)
    onnx.save(quantize_model(tmp_path / "conv.onnx", calib), str(tmp_path / "conv.qdq.onnx"))
    compile_model(tmp_path / "conv.qdq.onnx", load_target(M4), tmp_path / "q", simd=False)
    compile_model(tmp_path / "conv.onnx", load_target(M4), tmp_path / "f")
    assert "int32_t conv2d_nchw_int32[4];" in (tmp_path / "q" / "model.c").read_text()
    assert "float conv2d_nchw_intermediate[16];" in (tmp_path / "f" / "model.c").read_text()


def test_profiler_lowers_qdq_models_to_integer_kernels(nets) -> None:
    """`tvmnas profile` times what `compile` builds: integer kernels, reported as int8."""
    from tvmnas.measure.profiler import lower_network

    network = lower_network(nets["residual"])
    assert network.precision == "int8"
    assert all("int8" in call.kernel for call in network.graph.calls)
    assert sum(network.macs) > 0


def test_qoperator_onnx_is_refused_with_one_line(tmp_path: Path) -> None:
    path, _ = _ort_quantized(tmp_path, per_channel=False, fmt="QOperator")
    with pytest.raises(QuantizationError, match=r"QLinearConv.*export QDQ instead"):
        import_model(path)


# ---- the C printer's integer gaps -----------------------------------------------------------------


def _printed(func) -> str:
    flat = LowerTIRForC()(tvm.IRModule({"k": func}))
    return print_kernel(flat["k"], "k")[0]


def test_int64_min_max_use_int64_helpers() -> None:
    from tvm import te

    a = te.placeholder((4,), "int64", name="a")
    b = te.compute((4,), lambda i: tvm.tirx.max(tvm.tirx.min(a[i], tvm.tirx.const(1 << 40, "int64")),
                                                 tvm.tirx.const(-(1 << 40), "int64")), name="b")
    text = _printed(te.create_prim_func([a, b]))
    assert "tvmnas_maxl(tvmnas_minl(" in text and "tvmnas_maxi" not in text


def test_address_of_is_printed() -> None:
    from tvm.script import tirx as T

    @T.prim_func
    def word_loads(a: T.Buffer((8,), "int8"), b: T.Buffer((4,), "int32")):
        for i in range(4):
            b[i] = T.call_pure_extern("int32", "word_at", T.address_of(a[i * 2]))

    assert "word_at((&a[(i * 2)]))" in _printed(word_loads)


# ---- the CLI --------------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tvmnas", *args], capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.ci
def test_cli_quantize_compile_and_run_float_and_raw(tmp_path: Path) -> None:
    """compile --quantize int8 writes quantized.onnx and an int8 manifest; run takes and gives
    float32 (quantized with the manifest's parameters), --raw passes int8 through; both agree with
    the integer reference of the bundle's own quantized.onnx."""
    files = write_int8_net("dense", tmp_path / "net")
    out = tmp_path / "bundle"
    res = _cli("compile", str(files.float_onnx), "--out", str(out), "--quantize", "int8",
               "--calibration", str(files.calibration))
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and (out / "quantized.onnx").is_file()
    ref = ReferenceModel(out / "quantized.onnx")
    x = calibration_data("dense", samples=1, seed=5)
    np.save(tmp_path / "x.npy", x)
    res = _cli("run", str(out), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["precision"] == "int8"
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, ref.run(x)[0])
    q = quantize_input(x, ref.graph.tensors[ref.graph.inputs[0]])
    np.save(tmp_path / "xq.npy", q)
    res = _cli("run", str(out), "--input", str(tmp_path / "xq.npy"), "--output", str(tmp_path / "yq.npy"), "--raw")
    assert res.returncode == 0, res.stderr
    yq = np.load(tmp_path / "yq.npy")
    assert yq.dtype == np.int8
    np.testing.assert_array_equal(yq, ref.run_int8(q)[0])


def test_cli_quantize_needs_calibration_of_the_right_shape(tmp_path: Path) -> None:
    files = write_int8_net("dense", tmp_path / "net")
    res = _cli("compile", str(files.float_onnx), "--out", str(tmp_path / "a"), "--quantize", "int8")
    assert res.returncode != 0 and "--calibration" in res.stderr and "Traceback" not in res.stderr
    np.save(tmp_path / "bad.npy", np.zeros((4, 39), np.float32))
    res = _cli("compile", str(files.float_onnx), "--out", str(tmp_path / "a"), "--quantize", "int8",
               "--calibration", str(tmp_path / "bad.npy"))
    assert res.returncode != 0 and "(4, 39)" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "a").exists()


def test_raw_input_must_hold_int8_values(nets, tmp_path: Path) -> None:
    from tvmnas.quantized import bundle_input

    manifest = {"inputs": [{"name": "x", "dtype": "int8", "scale": 0.5, "zero_point": 1}]}
    with pytest.raises(TvmnasError, match="int8 values"):
        bundle_input(np.array([0.5, 200.0], np.float32), manifest, raw=True)
    np.testing.assert_array_equal(bundle_input(np.array([1.0, -0.9, 100.0], np.float32), manifest, raw=False),
                                  [3, -1, 127])


def test_quantize_errors_name_settings_in_words_and_the_cli_prints_flags() -> None:
    """Library errors name no command-line flag; the CLI's error line maps the settings to flags."""
    from tvmnas.cli.options import error_line
    from tvmnas.quantized import bundle_input, quantize_for_compile

    cases = [(lambda: quantize_for_compile("m.onnx", "int8", None), ["--quantize int8", "--calibration"]),
             (lambda: quantize_for_compile("m.onnx", None, "x.npy"), ["--calibration", "--quantize"]),
             (lambda: quantize_for_compile("m.onnx", "fp16", "x.npy"), ["--quantize 'fp16'"]),
             (lambda: bundle_input(np.zeros(2, np.float32), {"inputs": [{"name": "x", "dtype": "float32"}]}, raw=True),
              ["--raw is for int8 bundles"])]
    for call, flags in cases:
        with pytest.raises(TvmnasError) as info:
            call()
        assert "--" not in str(info.value)
        line = error_line(info.value).replace("'int8'", "int8")
        assert all(f in line for f in flags), line
