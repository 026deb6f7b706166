"""Whole-network cycle prediction with a surrogate, in the JSON shape of `tvmnas profile`."""

from __future__ import annotations

from typing import Any

from tvmnas.compiler import lower_model
from tvmnas.cost.surrogate import CostSurrogate
from tvmnas.frontend import ModelSource, import_model
from tvmnas.passes import kernel_features

CYCLES_NOTE = "predicted by the surrogate"


def predict_model_json(model: ModelSource, surrogate: CostSurrogate, *,
                       input_shape: tuple[int, ...] | None = None, optimize: str = "speed") -> dict[str, Any]:
    """Lower `model` as the compiler does (built for `optimize`) and price every kernel call:
    {target, instructions (null), cycles, cycles_note, macs, kernels: [{index, name, macs, instructions
    (null), cycles}]}."""
    from tvmnas.measure.profiler import count_macs

    lowered, graph = lower_model(import_model(model, input_shape), optimize=optimize)
    macs = count_macs(lowered, graph)
    features = {name: kernel_features(lowered[name]) for name in sorted({c.kernel for c in graph.calls})}
    names = sorted(features)
    predicted = dict(zip(names, surrogate.predict([features[n] for n in names])))
    kernels = [
        {"index": c.index, "name": c.kernel, "macs": int(m), "instructions": None,
         "cycles": int(round(float(predicted[c.kernel])))}
        for c, m in zip(graph.calls, macs)
    ]
    return {
        "target": surrogate.target,
        "instructions": None,
        "cycles": int(sum(k["cycles"] for k in kernels)),
        "cycles_note": CYCLES_NOTE,
        "cycles_are": "an estimate of the timing-table cycles the profiler would report",
        "macs": int(sum(macs)),
        "kernels": kernels,
    }
