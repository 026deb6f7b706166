"""Held-out accuracy of cost predictors, and the two baselines the learned model is judged against.

- MacLinear: cycles = a x MACs + b, least squares on relative error over the fit kernels (the
  MicroNets proxy: latency linear in operation count).
- PerOpLUT: median cycles per MAC (per output element where a kernel has no MACs) for each
  (operator class, kernel size, stride), falling back to the operator class: a plain lookup table.
Held out by kernel: kernels of the 'eval' networks whose hash never occurs in a 'fit' network.
Held out by network: every 'eval' network, predicted as the sum of its kernel calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np
from scipy.stats import spearmanr

from tvmnas.measure.store import ProfileDB
from tvmnas.passes.kernel_features import OP_CLASSES


class KernelPredictor(Protocol):
    """Anything that predicts cycles for a list of kernel feature dicts."""

    def predict(self, features: Sequence[dict[str, float]]) -> np.ndarray: ...


def _macs(f: dict[str, float]) -> float:
    return float(np.expm1(f["log_macs"]))


def _out_elems(f: dict[str, float]) -> float:
    return float(np.expm1(f["log_bytes_out"])) / 4.0


def _op(f: dict[str, float]) -> str:
    return next((c for c in OP_CLASSES if f[f"class_{c}"] > 0.5), "elementwise")


class MacLinear:
    """cycles = a x MACs + b (least squares on relative error, a, b >= 0)."""

    name = "MACs-linear"

    def __init__(self, a: float, b: float):
        self.a, self.b = a, b

    @classmethod
    def fit(cls, rows: Sequence[dict[str, Any]]) -> "MacLinear":
        from scipy.optimize import nnls

        x = np.array([[_macs(r["features"]), 1.0] for r in rows])
        y = np.array([float(r["cycles"]) for r in rows])
        (a, b), _ = nnls(x / y[:, None], np.ones(len(y)))
        return cls(float(a), float(b))

    def predict(self, features: Sequence[dict[str, float]]) -> np.ndarray:
        return np.array([self.a * _macs(f) + self.b for f in features])


class PerOpLUT:
    """Median cycles per unit (MAC, or output element without MACs) per operator key."""

    name = "per-op LUT"

    def __init__(self, table: dict[str, float]):
        self.table = table

    @staticmethod
    def _keys(f: dict[str, float]) -> tuple[str, str]:
        op = _op(f)
        return f"{op}/k{int(f['kernel_h'])}x{int(f['kernel_w'])}/s{int(f['stride'])}", op

    @staticmethod
    def _units(f: dict[str, float]) -> float:
        m = _macs(f)
        return m if m > 0 else max(_out_elems(f), 1.0)

    @classmethod
    def fit(cls, rows: Sequence[dict[str, Any]]) -> "PerOpLUT":
        groups: dict[str, list[float]] = {}
        for r in rows:
            ratio = float(r["cycles"]) / cls._units(r["features"])
            for key in cls._keys(r["features"]):
                groups.setdefault(key, []).append(ratio)
        all_ratios = [float(r["cycles"]) / cls._units(r["features"]) for r in rows]
        table = {k: float(np.median(v)) for k, v in groups.items()}
        table["*"] = float(np.median(all_ratios))
        return cls(table)

    def predict(self, features: Sequence[dict[str, float]]) -> np.ndarray:
        out = []
        for f in features:
            fine, coarse = self._keys(f)
            ratio = self.table.get(fine, self.table.get(coarse, self.table["*"]))
            out.append(ratio * self._units(f))
        return np.array(out)


@dataclass(frozen=True)
class Accuracy:
    """How close predictions are to measurements."""

    n: int
    within_10pct: float      # fraction with |pred/meas - 1| <= 0.10
    within_20pct: float
    spearman: float
    mape: float              # mean |pred/meas - 1|
    r2_log: float            # R^2 of log cycles

    def row(self) -> dict[str, float]:
        """Plain dict for JSON."""
        return {"n": self.n, "within_10pct": self.within_10pct, "within_20pct": self.within_20pct,
                "spearman": self.spearman, "mape": self.mape, "r2_log": self.r2_log}


def accuracy(predicted: np.ndarray, measured: np.ndarray) -> Accuracy:
    """Accuracy figures of `predicted` against `measured` (both cycles, same order)."""
    p = np.asarray(predicted, dtype=np.float64)
    m = np.asarray(measured, dtype=np.float64)
    rel = np.abs(p / m - 1.0)
    lp, lm = np.log(np.maximum(p, 1.0)), np.log(m)
    r2 = 1.0 - float(np.sum((lp - lm) ** 2)) / max(float(np.sum((lm - lm.mean()) ** 2)), 1e-12)
    rho = float(spearmanr(p, m).statistic) if len(m) > 1 else float("nan")
    return Accuracy(len(m), float(np.mean(rel <= 0.10)), float(np.mean(rel <= 0.20)), rho, float(np.mean(rel)), r2)


def held_out_kernels(db: ProfileDB, target: str, precision: str) -> list[dict[str, Any]]:
    """Kernel rows of the eval networks whose kernel never appears among the fit networks."""
    seen = {r["hash"] for r in db.kernel_rows(target, precision, split="fit")}
    return [r for r in db.kernel_rows(target, precision, split="eval") if r["hash"] not in seen]


def network_totals(db: ProfileDB, target: str, precision: str,
                   predict: Callable[[list[dict[str, float]]], np.ndarray],
                   split: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """(predicted, measured) whole-network cycles: predicted = sum of per-call predictions."""
    features = {h: json.loads(f.features) for h, f in db.features(precision).items()}
    predicted, measured = [], []
    for net in db.networks(target, precision, split):
        predicted.append(float(np.sum(predict([features[h] for _, h, _, _ in net.call_list]))))
        measured.append(float(net.cycles))
    return np.array(predicted), np.array(measured)


def cross_val_predictions(rows: Sequence[dict[str, Any]], target: str, *, folds: int = 5, seed: int = 0,
                          rounds: int | None = None, precision: str = "float32") -> dict[str, np.ndarray]:
    """Held out by kernel within the fit data: k folds over distinct kernels (each row is one kernel);
    every model is refitted on the other folds (the surrogate as one of `precision` kernels). Each
    predictor's held-out prediction of every row."""
    from tvmnas.cost.surrogate import XGB_ROUNDS, CostSurrogate

    order = np.random.default_rng(seed).permutation(len(rows))
    fold_of = np.empty(len(rows), dtype=int)
    fold_of[order] = np.arange(len(rows)) % folds
    preds = {"surrogate": np.zeros(len(rows)), "MACs-linear": np.zeros(len(rows)), "per-op LUT": np.zeros(len(rows))}
    for k in range(folds):
        train = [rows[i] for i in range(len(rows)) if fold_of[i] != k]
        test_idx = [i for i in range(len(rows)) if fold_of[i] == k]
        feats = [rows[i]["features"] for i in test_idx]
        models = {"surrogate": CostSurrogate.fit(train, target, rounds=rounds or XGB_ROUNDS, precision=precision),
                  "MACs-linear": MacLinear.fit(train), "per-op LUT": PerOpLUT.fit(train)}
        for name, model in models.items():
            preds[name][test_idx] = model.predict(feats)
    return preds


def cross_validate(rows: Sequence[dict[str, Any]], target: str, *, folds: int = 5, seed: int = 0,
                   rounds: int | None = None, precision: str = "float32") -> dict[str, dict[str, Any]]:
    """Accuracy per predictor over all held-out predictions of cross_val_predictions."""
    meas = np.array([float(r["cycles"]) for r in rows])
    preds = cross_val_predictions(rows, target, folds=folds, seed=seed, rounds=rounds, precision=precision)
    return {name: accuracy(p, meas).row() for name, p in preds.items()}


def kernel_kind(f: dict[str, float]) -> str:
    """The operator class of a kernel's features, with ' (micro-kernel)' for a conv, depthwise or dense
    kernel that calls a C micro-kernel (no loop runs in its own code: passes.kernel_features reads
    it from the call)."""
    op = _op(f)
    loops = f["log_exec_loop_iters"] + f["log_exec_unrolled_iters"]
    return f"{op} (micro-kernel)" if op in ("conv", "depthwise", "matmul") and loops == 0 else op


def accuracy_by_kind(rows: Sequence[dict[str, Any]], predicted: np.ndarray) -> dict[str, dict[str, Any]]:
    """Accuracy of `predicted` (one per row) per kernel kind (kernel_kind), with each kind's share of
    the rows' cycles."""
    kinds = [kernel_kind(r["features"]) for r in rows]
    meas = np.array([float(r["cycles"]) for r in rows])
    out = {}
    for kind in sorted(set(kinds)):
        idx = [i for i, k in enumerate(kinds) if k == kind]
        out[kind] = {**accuracy(np.asarray(predicted)[idx], meas[idx]).row(),
                     "cycle_share": float(meas[idx].sum() / meas.sum())}
    return out
