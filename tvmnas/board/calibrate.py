"""Fitting a core's timing table to kernels measured on a board, and the calibrated target it yields.

Each measured kernel has its emulated instruction mix (tvmnas.board.features, recorded in the
firmware's kernels.json). The fit finds non-negative weights w (cycles per instruction class,
per register moved, per taken branch, per pipelined load saved, per address stall, per data read
from flash) minimising the relative error sum_k ((x_k . w) / y_k - 1)^2 over the measured cycles
y_k, plus a small pull of every weight towards the shipped table's value, so a class the set
barely exercises keeps its datasheet figure instead of an arbitrary one. Features that carry less
than MIN_SHARE of the set's estimated cycles are not fitted (they keep the shipped weight).

Board lines exclude the marker call (the firmware subtracts a measured mark); the emulator build
adds an empty marker's three instructions back, so for cycles the mix of an empty marker call
(EMPTY_MARK) is taken off each kernel's features before fitting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from tvmnas.board.features import FLASH_READS, PIPELINED, LinearTiming, linear_from_table
from tvmnas.board.measurements import Measurement, MeasurementsError
from tvmnas.measure.cycles import TimingTable

EMPTY_MARK = {"n:alu": 1.0, "n:call": 1.0, "n:branch": 1.0, "taken": 2.0}  # movs r0,#k; bl mark; bx lr
MIN_SHARE = 0.005
PRIOR_STRENGTH = 1e-5
MIN_KERNELS = 12


@dataclass
class Fit:
    """A fitted linear timing model and how well it explains the measurements."""

    timing: LinearTiming
    fitted: list[str]
    kernels: int
    residuals: list[float]  # relative error per kernel, (predicted / measured - 1)
    base: LinearTiming
    shares: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        r = np.abs(np.array(self.residuals))
        return {"kernels": self.kernels, "fitted_features": self.fitted,
                "median_abs_error": round(float(np.median(r)), 4), "max_abs_error": round(float(r.max()), 4),
                "within_5pct": round(float(np.mean(r <= 0.05)), 4)}


def kernel_features(measurements: Sequence[Measurement], kernels: Mapping[str, Mapping[str, Any]],
                    source: str) -> list[dict[str, float]]:
    """The instruction mix of each measured kernel from the firmware's kernels.json entries (by id);
    a kernel the set does not have, or one under another name, is refused naming its line."""
    out = []
    for m in measurements:
        entry = kernels.get(m.id)
        if entry is None or entry["name"] != m.name:
            raise MeasurementsError(
                f"line {m.line}: kernel {m.id} '{m.name}' is not in the calibration set {source} "
                f"(measured with another firmware?)")
        if "features" not in entry:
            raise MeasurementsError(f"calibration set {source} has no instruction mix for kernel {m.id}: "
                                    f"write it with `tvmnas cost calibration-set`")
        feats = dict(entry["features"])
        if m.unit == "cycles":
            for k, v in EMPTY_MARK.items():
                feats[k] = feats.get(k, 0.0) - v
        out.append(feats)
    return out


def fit_timing(features: Sequence[Mapping[str, float]], measured: Sequence[float], base: TimingTable, *,
               prior_strength: float = PRIOR_STRENGTH, min_share: float = MIN_SHARE) -> Fit:
    """Fit non-negative feature weights to measured cycles (see the module docstring)."""
    from scipy.optimize import lsq_linear

    n = len(features)
    base_lin = linear_from_table(base)
    names = sorted({k for f in features for k in f if f[k]})
    y = np.asarray(measured, dtype=np.float64)
    x = np.array([[f.get(k, 0.0) for k in names] for f in features], dtype=np.float64).reshape(n, len(names))
    w0 = np.array([base_lin.weights.get(k, base_lin.default if k.startswith("n:") else 0.0) for k in names])
    est = np.abs(x * w0).sum(axis=0)
    shares = est / max(est.sum(), 1e-12)
    fit_mask = np.array([k == FLASH_READS or s >= min_share for k, s in zip(names, shares)], dtype=bool)
    k_min = max(MIN_KERNELS, int(fit_mask.sum()) + 4)
    if n < k_min:
        raise MeasurementsError(f"{n} measured kernels are too few to fit {int(fit_mask.sum())} timing weights "
                                f"(need at least {k_min})")
    fixed = x[:, ~fit_mask] @ w0[~fit_mask]
    a = x[:, fit_mask] / y[:, None]
    b = 1.0 - fixed / y
    scale = np.maximum(w0[fit_mask], 1.0)
    reg = np.sqrt(prior_strength * n) * np.diag(1.0 / scale)
    a_all = np.vstack([a, reg])
    b_all = np.concatenate([b, reg @ w0[fit_mask]])
    sol = lsq_linear(a_all, b_all, bounds=(0.0, np.inf), method="bvls")
    w = w0.copy()
    w[fit_mask] = sol.x
    weights = dict(base_lin.weights)
    weights.update({k: float(v) for k, v in zip(names, w)})
    timing = LinearTiming(base.core, weights, base_lin.default)
    pred = x @ w
    return Fit(timing, [k for k, m in zip(names, fit_mask) if m], n, list(pred / y - 1.0), base_lin,
               {k: float(s) for k, s in zip(names, shares)})


def timing_table_json(fit: Fit, base_json: dict[str, Any], *, board: str, source: str) -> dict[str, Any]:
    """The fitted weights in the layout of targets/timing/<core>.json (dual issue dropped: the
    board's cycles carry it), with a memory_regions entry for reads from flash."""
    w = fit.timing.weights
    doc = json.loads(json.dumps(base_json))
    doc["source"] = f"fitted to {fit.kernels} kernels measured on {board} ({source}); base: {base_json['source']}"
    doc["limits"] = ("Linear fit of per-class weights to measured kernels; data-dependent effects average out "
                     "over the calibration set. " + base_json.get("limits", ""))
    doc.pop("dual_issue", None)
    for cls, entry in doc["classes"].items():
        entry["cycles"] = round(w.get(f"n:{cls}", entry["cycles"]), 4)
        if "per_register" in entry:
            entry["per_register"] = round(w.get(f"w:{cls}", entry["per_register"]), 4)
        entry["ref"] = f"fitted ({entry['ref']})" if f"n:{cls}" in fit.fitted else entry["ref"]
    doc["unknown_cycles"] = round(w.get("n:unknown", doc.get("unknown_cycles", 1)), 4)
    doc["branch_taken_penalty"] = {"cycles": round(w["taken"], 4), "ref": "fitted"}
    if "loop_end_taken_penalty" in doc:
        doc["loop_end_taken_penalty"] = {"cycles": round(w["taken_loop_end"], 4), "ref": "fitted"}
    pipe = doc.get("load_pipelining") or {"after": ["load", "store"], "classes": ["load"]}
    doc["load_pipelining"] = {**pipe, "cycles_saved": round(w.get(PIPELINED, 0.0), 4), "ref": "fitted"}
    doc["address_dependency_stall"] = {"cycles": round(w.get("stall", 0.0), 4), "ref": "fitted"}
    doc["memory_regions"] = {"flash_read": {"cycles": round(w.get(FLASH_READS, 0.0), 4),
                                            "ref": "fitted: extra cycles per data read from flash (.rodata, literal pools)"}}
    doc["calibration"] = fit.summary()
    return doc


__all__ = ["EMPTY_MARK", "Fit", "MIN_KERNELS", "fit_timing", "kernel_features", "timing_table_json"]
