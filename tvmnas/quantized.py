"""int8 models in the compile path: a float model quantized on request (tvmnas.quant.quantize),
QDQ graphs rewritten to integer kernels (passes/quantize_to_integer.py), and the float <-> int8
conversion of a bundle's input and output with the scale and zero point its manifest gives."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from tvmnas.errors import TvmnasError
from tvmnas.passes.quantize_to_integer import QuantizeToInteger, QuantParams, io_quantization


def has_quantize(mod: tvm.IRModule) -> bool:
    """Whether `main` quantizes anything (a QDQ model) rather than being float throughout."""
    quantize = tvm.ir.Op.get("relax.quantize")
    found = []

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and expr.op.same_as(quantize):
            found.append(expr)

    relax.analysis.post_order_visit(mod["main"], visit)
    return bool(found)


def integer_model(mod: tvm.IRModule) -> tuple[tvm.IRModule, dict[str, QuantParams] | None]:
    """A QDQ model rewritten to integer kernels, with the quantization of its int8 input and output;
    a float model unchanged, with None."""
    if not has_quantize(mod):
        return mod, None
    return QuantizeToInteger()(mod), io_quantization(mod)


PRECISIONS = ("int8",)


def quantize_for_compile(model, quantize: str | None, calibration) -> "onnx.ModelProto | None":  # noqa: F821
    """The QDQ model `compile_model(..., quantize="int8", calibration=X)` compiles (None without
    quantize); the quantizer's own errors name a missing or wrongly shaped calibration array.
    Errors name the settings in words (settings=(...)); the CLI prints its flags for them."""
    if quantize is None:
        if calibration is not None:
            raise TvmnasError("the calibration input is only used with quantize='int8'",
                              settings=("calibration", "quantize"))
        return None
    if quantize not in PRECISIONS:
        raise TvmnasError(f"quantize={quantize!r} is not a supported precision (quantize='int8')",
                          settings=("quantize",))
    if calibration is None:
        raise TvmnasError("quantize='int8' needs calibration data: the calibration input (a .npy of float samples "
                          "shaped like the model input, N first)", settings=("quantize", "calibration"))
    from tvmnas.quant.quantize import quantize_model

    return quantize_model(model, calibration)


COST_CALIBRATION_SEED = 0
COST_CALIBRATION_SAMPLES = 8


def as_int8_source(model, input_shape: tuple[int, ...] | None, work_dir) -> "str | Path":  # noqa: F821
    """The int8 build of `model` for pricing it (profile, cost data, cost prediction): a float model
    quantized on seeded standard-normal calibration samples (cycles do not depend on the scales),
    written as QDQ ONNX into `work_dir`; a model that is already quantized (QDQ ONNX, int8 .tflite,
    a PT2E .pt2) is returned as it is."""
    from pathlib import Path

    import onnx
    import torch

    from tvmnas.frontend import import_model
    from tvmnas.quant.quantize import quantize_model

    work_dir = Path(work_dir)
    if isinstance(model, torch.nn.Module):
        if input_shape is None:
            raise TvmnasError("pricing a torch module as int8 needs its input shape", settings=("input_shape",))
        from tvmnas.model_file import export_onnx

        model = export_onnx(model.eval(), input_shape, work_dir / "float.onnx")
    mod = import_model(model, input_shape)
    if has_quantize(mod):
        return model
    shape = [int(d) for d in mod["main"].params[0].ty.shape.values]
    calibration = np.random.default_rng(COST_CALIBRATION_SEED).standard_normal(
        (COST_CALIBRATION_SAMPLES, *shape[1:])).astype(np.float32)
    out = work_dir / "int8.onnx"
    onnx.save(quantize_model(model, calibration), str(out))
    return out


def quantize_array(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """float32 -> int8 as ONNX QuantizeLinear: round half to even, add the zero point, saturate."""
    q = np.rint(np.asarray(x, np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize_array(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """int8 -> float32: scale * (q - zero_point)."""
    return (np.float32(scale) * (np.asarray(q).astype(np.float32) - np.float32(zero_point))).astype(np.float32)


def _io_quant(spec: dict) -> tuple[float, int] | None:
    return (spec["scale"], spec["zero_point"]) if spec.get("dtype") == "int8" and "scale" in spec else None


def bundle_input(x: np.ndarray, manifest: dict, raw: bool) -> np.ndarray:
    """The values the harness passes to model_run: float32 unchanged for a float input; for an int8
    input the quantized values (or, with raw, the given integers, checked to be int8)."""
    spec = manifest["inputs"][0]
    if spec.get("dtype", "float32") != "int8":
        if raw:
            raise TvmnasError(f"raw input is for int8 bundles; input '{spec['name']}' is {spec.get('dtype')}",
                              settings=("raw",))
        return x
    if raw:
        if np.any(x != np.rint(x)) or x.min() < -128 or x.max() > 127:
            raise TvmnasError(f"raw input must hold int8 values (integers in [-128, 127]) for '{spec['name']}', "
                              f"got values in [{x.min():g}, {x.max():g}]", settings=("raw",))
        return x.astype(np.float32)
    quant = _io_quant(spec)
    if quant is None:
        raise TvmnasError(f"int8 input '{spec['name']}' has no scale and zero_point in the manifest: pass raw input",
                          settings=("raw",))
    return quantize_array(x, *quant).astype(np.float32)


def bundle_output(y: np.ndarray, manifest: dict, raw: bool, config: int | None = None) -> np.ndarray:
    """The output array to write: float32 (an int8 output dequantized) or, with raw, int8. An int8
    dynamic bundle quantizes each configuration's output its own way (manifest configs[k].outputs;
    `config` None is the bundle's default configuration, 0)."""
    spec = manifest["outputs"][0]
    configs = manifest.get("configs", [])
    k = 0 if config is None else config
    if 0 <= k < len(configs):
        spec = configs[k].get("outputs", [spec])[0]
    if spec.get("dtype", "float32") != "int8":
        return y
    if raw:
        return y.astype(np.int8)
    quant = _io_quant(spec)
    return y.astype(np.int8) if quant is None else dequantize_array(y, *quant)
