"""Check an import against its source framework before anything else touches the module.

TVM's importers can translate an operator wrongly without an error (TVM 0.27 read `x[:, -1]`
out of bounds). The imported Relax module is built for the host with TVM's own LLVM back end and
run on one seeded input next to the source framework (PyTorch for a torch module or `.pt2`,
onnxruntime for `.onnx`). It runs before the MCU passes, so a disagreement blames the importer.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from tvmnas.errors import ImportCheckError
from tvmnas.frontend import ImportedModel
from tvmnas.input_shapes import Notice, stderr_notice

IMPORT_CHECK_TOLERANCE = 1e-4
"""Largest accepted max-abs difference, as a fraction of the output's scale (its max abs value).

The project's own acceptance bound for compiled C against PyTorch/onnxruntime (tests,
benchmarks): an import that is already further off cannot pass it. Float32 reassociation between
two correct implementations stays far below it (1e-7 to 4e-6 of the scale on the 14 zoo networks,
both routes),
while importer faults show up at the order of the scale itself (the negative-index fault: 2.1x).
"""

QUANTIZED_TOLERANCE = 5e-2
"""The same bound for a model holding quantize/dequantize (QDQ, PT2E): TVM computes them in
float32 and onnxruntime/PyTorch in integers, so a value on a rounding boundary may land one
quantization step apart (1/127 of the scale for int8, more once it propagates); importer faults
are still of the order of the scale."""

SEED = 0

HOST_TARGET = {"kind": "llvm", "opt-level": 0}
"""LLVM without optimisation: building is most of the check's time (-O3 took 7x longer on a
MobileNetV2 for no benefit to a single run of small kernels)."""


def check_import(
    imported: ImportedModel, tolerance: float | None = None, seed: int = SEED, notice: Notice = stderr_notice
) -> bool:
    """Run `imported.mod` on the host and its source framework on the same seeded input; raise
    ImportCheckError naming the first output whose shape differs or whose max abs difference
    exceeds `tolerance` x that output's scale (default: IMPORT_CHECK_TOLERANCE, or
    QUANTIZED_TOLERANCE for a model with quantize/dequantize operators).

    A valid model that the source framework itself cannot run (onnxruntime has no kernel for every
    ONNX attribute, e.g. LSTM layout 1) cannot be checked: `notice` says so in one line and the
    check returns False instead of refusing the model. True when the check ran and passed."""
    if tolerance is None:
        tolerance = QUANTIZED_TOLERANCE if is_quantized(imported.mod) else IMPORT_CHECK_TOLERANCE
    inputs = seeded_inputs(imported.mod, seed)
    got = run_on_host(imported.mod, inputs)
    try:
        want = imported.reference(inputs)
    except Exception as err:  # onnxruntime and torch raise their own types
        lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
        reason = (lines[0] if lines else type(err).__name__)[:200]
        notice(f"note: import check skipped: {imported.framework} cannot run the model: {reason}")
        return False
    if len(got) != len(want):
        raise ImportCheckError(
            f"import check: the imported model has {len(got)} outputs, {imported.framework} gives {len(want)}"
        )
    for i, (y, ref) in enumerate(zip(got, want)):
        name = imported.output_names[i] if i < len(imported.output_names) else str(i)
        label = f"output {i} '{name}'"
        if tuple(y.shape) != tuple(ref.shape):
            raise ImportCheckError(
                f"import check: {label} has shape {tuple(y.shape)} after import but {tuple(ref.shape)} "
                f"in {imported.framework}; the importer mistranslated the model (import_check=False skips this check)"
            )
        err, where, scale = max_difference(y, ref)
        if not err <= tolerance * scale:
            share = f"{err / scale:.3g}x" if scale > 0 else "all"
            raise ImportCheckError(
                f"import check: {label} differs from {imported.framework} by {err:.3g} at index {where} "
                f"({share} of the output's scale {scale:.3g}, tolerance {tolerance:g}) on a seeded input; "
                f"the importer mistranslated the model (import_check=False skips this check)"
            )
    return True


def is_quantized(mod: tvm.IRModule) -> bool:
    """Whether `main` calls relax quantize or dequantize (a QDQ or PT2E model)."""
    ops = {"relax.quantize", "relax.dequantize"}
    return any(
        getattr(getattr(b.value, "op", None), "name", None) in ops
        for block in mod["main"].body.blocks for b in block.bindings
    )


def seeded_inputs(mod: tvm.IRModule, seed: int = SEED) -> list[np.ndarray]:
    """One input per parameter of `main`: standard normal floats, or 0/1 for integer inputs."""
    rng = np.random.default_rng(seed)
    inputs = []
    for param in mod["main"].params:
        ty = param.ty
        shape = tuple(int(d) for d in ty.shape.values)
        dtype = str(ty.dtype)
        if dtype.startswith(("int", "uint", "bool")):
            inputs.append(rng.integers(0, 2, size=shape).astype(dtype))
        else:
            inputs.append(rng.standard_normal(shape).astype(dtype))
    return inputs


def run_on_host(mod: tvm.IRModule, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Outputs of `mod` built with TVM's LLVM back end and run by the Relax VM, flattened."""
    try:
        executable = relax.build(mod, target=tvm.target.Target(HOST_TARGET))
        vm = relax.VirtualMachine(executable, tvm.cpu())
        out = vm["main"](*(tvm.runtime.tensor(x) for x in inputs))
    except Exception as err:  # TVM raises its own error types and ValueError/TypeError alike
        lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
        reason = lines[-1] if lines else type(err).__name__
        raise ImportCheckError(
            f"import check: the imported model does not run on the host (TVM LLVM): {reason[:200]} "
            f"(import_check=False skips this check)"
        ) from None
    return _flatten(out)


def _flatten(value) -> list[np.ndarray]:
    if hasattr(value, "numpy"):
        return [value.numpy()]
    return [a for item in value for a in _flatten(item)]


def max_difference(y: np.ndarray, ref: np.ndarray) -> tuple[float, tuple[int, ...], float]:
    """(max abs difference, index of it, output scale = max abs finite reference value).

    Positions where both are NaN, or both the same infinity, agree; a NaN or infinity on one side
    only is an infinite difference."""
    y = y.astype(np.float64)
    ref = ref.astype(np.float64)
    same = (np.isnan(y) & np.isnan(ref)) | (np.isinf(y) & (y == ref))
    diff = np.where(same, 0.0, np.abs(y - ref))
    diff = np.where(np.isnan(diff), np.inf, diff)
    finite = np.abs(ref[np.isfinite(ref)])
    scale = float(finite.max()) if finite.size else 0.0
    if diff.size == 0:
        return 0.0, (), scale
    flat = int(np.argmax(diff))
    return float(diff.flat[flat]), tuple(int(i) for i in np.unravel_index(flat, diff.shape)), scale
