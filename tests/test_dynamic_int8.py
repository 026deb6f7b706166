"""int8 dynamic bundles: shared int8 weights stored once, per-configuration BatchNorm folded into the
requantization, C bit-exact with the integer reference for every configuration."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from onnx import numpy_helper

from tvmnas.dynamic.compile import INT8_COST_UNIT, compile_dynamic
from tvmnas.dynamic.quantize import quantize_shared, quantize_subnetwork
from tvmnas.dynamic.subnet import extract_subnet
from tvmnas.dynamic.supernet import DynamicSupernet, StageSpec, SubnetConfig, SupernetSpec, largest, smallest
from tvmnas.dynamic.train import recalibrate
from tvmnas.errors import BudgetExceededError, QuantizationError, TvmnasError
from tvmnas.measure.runner import build, run
from tvmnas.passes.share_weights import WeightView
from tvmnas.quant.quantize import quantize_model
from tvmnas.quant.reference import ReferenceModel
from tvmnas.quantized import bundle_output, dequantize_array, quantize_array
from tvmnas.targets import load_target

SPEC = SupernetSpec((1, 8, 8), 10, 8, (StageSpec(8, 2, 1), StageSpec(12, 1, 2)), width_fractions=(0.5, 1.0),
                    kernels=(3, 5), expands=(2, 3))
MIDDLE = SubnetConfig(8, (4, 12), (2, 1), (5, 3, 3), (2, 3, 2))
NEGATIVE = (0, 1)   # block 0's expand BatchNorm, channel 1: a negative gamma in every configuration


def _samples(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def family():
    """Three sub-networks of one untrained super-network, each with its own BN statistics, one
    BatchNorm channel with a negative gamma."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = DynamicSupernet(SPEC)
    with torch.no_grad():
        net.blocks[NEGATIVE[0]].expand_bn.weight[NEGATIVE[1]] = -0.7
    x = _samples(64, 0)
    subnets = []
    for config in (smallest(SPEC), MIDDLE, largest(SPEC)):
        recalibrate(net, config, x)
        subnets.append(extract_subnet(net, config))
    return net, subnets


CALIBRATION = _samples(16, 2)


@pytest.fixture(scope="module")
def bundle(family, tmp_path_factory):
    net, subnets = family
    out = tmp_path_factory.mktemp("dyn8") / "bundle"
    result = compile_dynamic(subnets, net.shared_tensors(), SPEC.input_shape, load_target("cortex-m4"), out,
                             accuracies=[0.5, 0.6, 0.7], cycles=[100, 200, 300], precision="int8",
                             calibration=CALIBRATION)
    return out, result.manifest


def _weights(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_every_configuration_reads_a_slice_of_one_int8_tensor_with_its_own_batchnorm_in_the_scales(family):
    net, subnets = family
    shared = net.shared_tensors()
    q = quantize_shared(shared)
    models = [quantize_subnetwork(s, shared, q, SPEC.input_shape, CALIBRATION) for s in subnets]
    inits = [_weights(m) for m in models]
    # the stem: the first output channels of one int8 tensor, in every configuration
    for init, sub in zip(inits, subnets):
        c = sub.stem[0].out_channels
        np.testing.assert_array_equal(init["stem.0.weight_quantized"], q.values["stem.weight"][:c])
        # the 3x3 depthwise window of block 0 is the centre of the shared 5x5 int8 kernels
        dw = init["blocks.0.depthwise.0.weight_quantized"]
        k = dw.shape[-1]
        o = (5 - k) // 2
        np.testing.assert_array_equal(dw, q.values["blocks.0.depthwise.weight"][:dw.shape[0], :, o:o + k, o:o + k])
        fc = init["fc.weight_quantized"]
        np.testing.assert_array_equal(fc, q.values["fc.weight"][:, :fc.shape[1]])
    # the same int8 values, different scales: each configuration's own BatchNorm statistics (block 0's
    # depthwise conv is 3x3 in the smallest configuration, 5x5 in the largest)
    small, big = inits[0]["blocks.0.depthwise.0.weight_scale"], inits[2]["blocks.0.depthwise.0.weight_scale"]
    assert not np.array_equal(small, big[:len(small)])
    # a negative gamma is a negative scale of that channel (its weights are not negated)
    for init in inits:
        assert init["blocks.0.expand.0.weight_scale"][NEGATIVE[1]] < 0
        assert (np.delete(init["blocks.0.expand.0.weight_scale"], NEGATIVE[1]) > 0).all()


def test_int8_reference_follows_the_float_subnetwork_as_closely_as_ordinary_ptq(family, tmp_path):
    """Folding BatchNorm into the scales of shared int8 weights costs little against folding it into
    the weights (post-training quantization of the configuration alone); a wrong fold costs far more."""
    net, subnets = family
    shared = net.shared_tensors()
    q = quantize_shared(shared)
    x = CALIBRATION[:8]
    for k, sub in enumerate(subnets):
        path = tmp_path / f"c{k}.onnx"
        torch.onnx.export(sub, (torch.zeros(1, *SPEC.input_shape),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"])
        with torch.no_grad():
            ref = sub(torch.from_numpy(x)).numpy()
        steps = []
        for model in (ReferenceModel(quantize_subnetwork(sub, shared, q, SPEC.input_shape, CALIBRATION)),
                      ReferenceModel(quantize_model(path, CALIBRATION))):
            got = np.concatenate([model.run(xi[None])[0] for xi in x])
            steps.append(np.abs(got - ref).max() / model.graph.tensors[model.graph.outputs[0]].scale)
        assert steps[0] <= 2 * steps[1] + 2, steps


def test_bundle_stores_each_int8_weight_once_and_only_requantization_per_configuration(bundle):
    out, m = bundle
    assert m["precision"] == "int8"
    weights = (out / "model_weights.c").read_text()
    arrays = re.findall(r"^const (\w+) (model_\w+)\[(\d+)\]", weights, re.M)
    shared = {name: (ctype, int(n)) for ctype, name, n in arrays if name.startswith("model_shared_")}
    assert {"model_shared_stem_weight", "model_shared_blocks_0_expand_weight", "model_shared_blocks_0_depthwise_weight",
            "model_shared_fc_weight"} <= set(shared)
    assert all(ctype == "int8_t" for ctype, _ in shared.values())
    # the largest configuration reads every shared tensor whole: 5x5 depthwise, all channels
    assert shared["model_shared_blocks_0_depthwise_weight"][1] == 24 * 25
    private = [(ctype, name) for ctype, name, _ in arrays if not name.startswith("model_shared_")]
    assert private and all(ctype == "int32_t" for ctype, _ in private)   # biases, multipliers, shifts
    assert m["weights_bytes"] == m["shared_weights_bytes"] + m["private_weights_bytes"]
    assert m["weights_bytes"] < m["separate_weights_bytes"]


def test_manifest_and_header_give_the_int8_input_and_each_configuration_its_output_quantization(bundle):
    out, m = bundle
    (inp,), (outp,) = m["inputs"], m["outputs"]
    assert inp["dtype"] == outp["dtype"] == "int8" and inp["scale"] > 0
    scales = [c["outputs"][0]["scale"] for c in m["configs"]]
    assert len(set(scales)) == 3 and all(s > 0 for s in scales)
    header = (out / "model.h").read_text()
    assert "int model_run(const int8_t *input, int8_t *output, uint8_t *arena);" in header
    assert "#define MODEL_INPUT_TYPE int8_t" in header and "float model_output_scale(int k);" in header
    source = (out / "model.c").read_text()
    assert re.search(r"model_arena_sizes\[MODEL_NUM_CONFIGS\] = \{(\d+)u, (\d+)u, (\d+)u\}", source).groups() == \
        tuple(str(c["arena_bytes"]) for c in m["configs"])
    assert "static int8_t input[MODEL_INPUT_SIZE];" in (out / "examples" / "switch.c").read_text()
    # the run-time policy prices the int8 kernels (the int8 cost surrogate of cortex-m4), not the
    # float32 estimates it was given
    cycles = [c["cycles"] for c in m["configs"]]
    assert m["cost_unit"] == INT8_COST_UNIT and cycles != [100, 200, 300] and 0 < cycles[0] < cycles[1] < cycles[2]
    # `tvmnas run --config k` reads configuration k's output with k's quantization
    q = np.array([3.0, -7.0])
    for k, c in enumerate(m["configs"]):
        np.testing.assert_array_equal(bundle_output(q, m, raw=False, config=k),
                                      dequantize_array(q, c["outputs"][0]["scale"], c["outputs"][0]["zero_point"]))


def _run_bit_exact(family, out, m, target_name, tmp_path):
    net, subnets = family
    shared = net.shared_tensors()
    q = quantize_shared(shared)
    refs = [ReferenceModel(quantize_subnetwork(s, shared, q, SPEC.input_shape, CALIBRATION)) for s in subnets]
    inp = m["inputs"][0]
    x = _samples(4, 5)
    xq = [quantize_array(xi, inp["scale"], inp["zero_point"]) for xi in x]
    configs = [0, 1, 2, 2, 1, 0, 1, 0, 2, 0, 2, 1]
    inputs = [xq[i % len(xq)] for i in range(len(configs))]
    target = load_target(target_name)
    elf = build(out, target, tmp_path / target_name)
    result = run(elf, target, [v.astype(np.float32) for v in inputs], configs=configs, timeout_s=120)
    assert result.configs == configs
    for k, v, y, xi in zip(configs, inputs, result.outputs, [x[i % len(x)] for i in range(len(configs))]):
        expected = refs[k].run_int8(v[None])[0].ravel()
        np.testing.assert_array_equal(y.astype(np.int64), expected.astype(np.int64))   # 0 LSB
        with torch.no_grad():
            ref = subnets[k](torch.from_numpy(xi[None])).numpy().ravel()
        top2 = np.sort(ref)[-2:]
        if top2[1] - top2[0] > 8 * m["configs"][k]["outputs"][0]["scale"]:   # not a near tie in float
            assert int(np.argmax(y)) == int(np.argmax(ref))


@pytest.mark.slow
@pytest.mark.ci
def test_qemu_cortex_m4_every_configuration_bit_exact_with_the_integer_reference(family, bundle, tmp_path):
    out, m = bundle
    # SIMD micro-kernels where a weight slice is contiguous in its shared array (the stem's first
    # output channels, every layer of the largest configuration), scalar kernels elsewhere
    source = (out / "model.c").read_text()
    assert m["int8_kernels"] == "simd" and "tvmnas_s8_conv(" in source
    body = source.split("static int model_run_c2(")[1].split("\n}\n")[0]
    bodies = dict(re.findall(r"^static __attribute__\(\(noinline, noclone\)\) void (\w+)\((.*?)^}", source, re.M | re.S))
    simd = {f for f, text in bodies.items() if "tvmnas_s8_" in text}
    assert simd and any(re.search(rf"\b{f}\(", body) for f in simd)
    # the smallest configuration's block 0 expand conv reads 4 of the 8 input channels: strided, scalar
    scalar = {f for f in bodies if "conv2d" in f} - simd
    c0 = source.split("static int model_run_c0(")[1].split("\n}\n")[0]
    assert any(re.search(rf"\b{f}\(\w+, model_shared_blocks_0_expand_weight", c0) for f in scalar)
    _run_bit_exact(family, out, m, "cortex-m4", tmp_path)


@pytest.mark.slow
def test_qemu_cortex_m0_every_configuration_bit_exact_with_the_integer_reference(family, tmp_path):
    net, subnets = family
    out = tmp_path / "m0"
    m = compile_dynamic(subnets, net.shared_tensors(), SPEC.input_shape, load_target("cortex-m0"), out,
                        precision="int8", calibration=CALIBRATION).manifest
    assert m["int8_kernels"] == "scalar" and "tvmnas_s8_" not in (out / "model.c").read_text()
    _run_bit_exact(family, out, m, "cortex-m0", tmp_path)


def test_a_view_is_contiguous_only_where_the_later_dimensions_are_whole():
    assert WeightView("w", (4, 3, 3, 3), (0, 0, 0, 0), (8, 3, 3, 3)).contiguous          # first output channels
    assert WeightView("w", (1, 1, 2, 5), (3, 0, 1, 0), (8, 1, 5, 5)).contiguous          # rows of one channel
    assert not WeightView("w", (4, 2, 1, 1), (0, 0, 0, 0), (8, 4, 1, 1)).contiguous      # fewer input channels
    assert not WeightView("w", (4, 1, 3, 3), (0, 0, 1, 1), (8, 1, 5, 5)).contiguous      # a centred window


@pytest.mark.parametrize("precision, calibration, expected", [
    ("fp16", None, "precision must be one of float32, int8, not 'fp16'"),
    ("int8", None, "precision int8 needs calibration data"),
    ("float32", CALIBRATION, "calibration data is only used with precision int8"),
    ("int8", CALIBRATION[:, :, :4], "calibration array has shape (16, 1, 4, 8); expected (N, 1, 8, 8), N >= 1"),
    ("int8", "missing.npy", "calibration file 'missing.npy' does not exist"),
])
def test_bad_precision_or_calibration_is_one_error_and_no_output(family, tmp_path, precision, calibration, expected):
    net, subnets = family
    with pytest.raises(TvmnasError, match=re.escape(expected)):
        compile_dynamic(subnets[:1], net.shared_tensors(), SPEC.input_shape, load_target("cortex-m4"),
                        tmp_path / "out", precision=precision, calibration=calibration)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_budget_is_checked_against_the_int8_build(family, bundle, tmp_path):
    net, subnets = family
    _, m = bundle
    tight = dataclasses.replace(load_target("cortex-m4"), flash_bytes=m["flash_bytes"] - 1)
    with pytest.raises(BudgetExceededError, match=f"{m['flash_bytes']:,} bytes"):
        compile_dynamic(subnets, net.shared_tensors(), SPEC.input_shape, tight, tmp_path / "out",
                        accuracies=[0.5, 0.6, 0.7], cycles=[100, 200, 300], precision="int8", calibration=CALIBRATION)
    assert not (tmp_path / "out").exists()


def test_a_batchnorm_channel_with_zero_gain_is_refused_naming_it(family):
    net, subnets = family
    sub = extract_subnet(net, smallest(SPEC))
    with torch.no_grad():
        sub.blocks[0].depthwise[1].weight[2] = 0.0
    shared = net.shared_tensors()
    with pytest.raises(QuantizationError, match=r"layer 'blocks\.0\.depthwise\.0' channel 2: .* is 0"):
        quantize_subnetwork(sub, shared, quantize_shared(shared), SPEC.input_shape, CALIBRATION)


def test_cli_refuses_an_unknown_precision_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tvmnas", "dynamic", "compile", str(tmp_path), "--precision", "fp16",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "not 'fp16'" in lines[0] and "--precision" in lines[0], proc.stderr
    assert not (tmp_path / "o").exists()
