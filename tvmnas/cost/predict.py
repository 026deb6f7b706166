"""Whole-network cycle prediction with a surrogate, in the JSON shape of `tvmnas profile`."""

from __future__ import annotations

from typing import Any

from tvmnas.cost.surrogate import CostSurrogate
from tvmnas.errors import CostModelError
from tvmnas.frontend import ModelSource
from tvmnas.passes import kernel_features

CYCLES_NOTE = "predicted by the surrogate"


def predict_model_json(model: ModelSource, surrogate: CostSurrogate, *,
                       input_shape: tuple[int, ...] | None = None, optimize: str = "speed",
                       precision: str | None = None, simd: bool = False) -> dict[str, Any]:
    """Lower `model` as the compiler does (built for `optimize`; precision="int8" prices a float
    model as its int8 build, whose conv / dense kernels call the SIMD micro-kernels with simd=True,
    as on cores with the DSP extension) and price every kernel call with `surrogate`, which must
    price that precision: {target, precision, instructions (null), cycles, cycles_note, macs,
    kernels: [{index, name, macs, instructions (null), cycles}]}."""
    from tvmnas.measure.profiler import lower_network

    network = lower_network(model, input_shape=input_shape, optimize=optimize,
                            simd=simd, precision=precision)
    if network.precision != surrogate.precision:
        raise CostModelError(f"the model's build is {network.precision} but the {surrogate.target} surrogate prices "
                             f"{surrogate.precision} kernels (the precision and the surrogate must match)",
                             settings=("precision",))
    graph, lowered = network.graph, network.lowered
    features = {name: kernel_features(lowered[name]) for name in sorted({c.kernel for c in graph.calls})}
    names = sorted(features)
    predicted = dict(zip(names, surrogate.predict([features[n] for n in names])))
    kernels = [
        {"index": c.index, "name": c.kernel, "macs": int(m), "instructions": None,
         "cycles": int(round(float(predicted[c.kernel])))}
        for c, m in zip(graph.calls, network.macs)
    ]
    return {
        "target": surrogate.target,
        "precision": network.precision,
        "instructions": None,
        "cycles": int(sum(k["cycles"] for k in kernels)),
        "cycles_note": CYCLES_NOTE,
        "cycles_are": "an estimate of the timing-table cycles the profiler would report",
        "macs": int(sum(network.macs)),
        "kernels": kernels,
    }
