"""CostSurrogate: per-target XGBoost regressor of log cycles per fused kernel, from kernel features.

The prediction is prior x correction: a non-negative linear model of cycles over raw counts
(operations the kernel's C code executes, MACs, loads, padding and element-wise iterations),
fitted on relative error, gives the base margin; XGBoost fits log(cycles) - log(prior) on all
features. The prior carries the scaling with size, so the trees only learn per-shape efficiency
(unrolling, strides, kernel sizes) and extrapolate to larger kernels sensibly. Each boosting
round grows several trees on different row and column samples and averages them
(num_parallel_tree in XGB_PARAMS), which lowers the variance of the correction on the thousand
or so kernels it is fitted on. Cycles are the profiler's timing-table estimate. Surrogate files
are JSON, gzipped when the name ends in .gz.

A surrogate prices one precision on one target: float32 kernels, or the kernels of int8 builds
(surrogate-<target>-int8.json.gz next to surrogate-<target>.json.gz; float32 files carry no
precision field, so they stay as they were written). An int8 surrogate is fitted on
INT8_FEATURE_NAMES (FEATURE_NAMES and the integer features of passes/integer_features) and its
prior also over the executed integer operations; a float32 one on FEATURE_NAMES, as before.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tvmnas.cost.gzip_text import gzip_bytes, read_text, replace_bytes
from tvmnas.errors import CostModelError
from tvmnas.passes.integer_features import INTEGER_COUNTS
from tvmnas.passes.kernel_features import FLAT_COUNTS, feature_names

FORMAT = "tvmnas-cost-surrogate"
FORMAT_VERSION = 1
DATA_DIR = Path(__file__).resolve().parent / "data"
# raw counts the linear prior is fitted over (exp(log1p feature) - 1), plus a constant per call:
# operations the printed C executes (loop trips, loads, stores, float and index arithmetic) and
# the block-level counts of the computation
PRIOR_FEATURES = (*(f"log_exec_{c}" for c in FLAT_COUNTS),
                  "log_macs", "log_valid_macs", "log_padded_macs", "log_loads_reduce", "log_loads_elementwise",
                  "log_flops", "log_compares", "log_iters_pad", "log_iters_spatial", "log_loop_entries",
                  "log_main_out_elems", "n_blocks")
# int8 kernels: also the executed integer operations (passes/integer_features)
INT8_PRIOR_FEATURES = (*PRIOR_FEATURES, *(f"int8_log_{c}" for c in INTEGER_COUNTS))
XGB_PARAMS: dict[str, Any] = {
    "objective": "reg:squarederror",
    "max_depth": 4,
    "eta": 0.05,
    "subsample": 0.9,
    "colsample_bytree": 0.8,
    "min_child_weight": 1.0,
    "lambda": 1.0,
    "nthread": 1,
    "seed": 0,
    "tree_method": "exact",
    "num_parallel_tree": 5,
}
XGB_ROUNDS = 600
PRECISIONS = ("float32", "int8")


def surrogate_name(target: str, precision: str = "float32") -> str:
    """File name of the surrogate of `target` for `precision` in the package data."""
    return f"surrogate-{target}.json.gz" if precision == "float32" else f"surrogate-{target}-{precision}.json.gz"


def profiles_name(precision: str = "float32") -> str:
    """File name of the profile store dump of `precision` in the package data (the profiled networks)."""
    return "profiles.jsonl.gz" if precision == "float32" else f"profiles-{precision}.jsonl.gz"


def prior_features(precision: str = "float32") -> tuple[str, ...]:
    """The counts the linear prior of a `precision` surrogate is fitted over."""
    return PRIOR_FEATURES if precision == "float32" else INT8_PRIOR_FEATURES


def _value(f: dict[str, float], name: str) -> float:
    """A feature of `f`; an integer feature is 0 for a kernel without int8 parameters (a float island
    of an int8 build: passes.kernel_features gives it the float32 features alone)."""
    return f.get(name, 0.0) if name.startswith("int8_") else f[name]


def feature_matrix(features: Sequence[dict[str, float]], precision: str = "float32") -> np.ndarray:
    """Rows of the `precision` feature layout's values (float32; float32: FEATURE_NAMES)."""
    names = feature_names(precision)
    return np.array([[_value(f, n) for n in names] for f in features], dtype=np.float32).reshape(-1, len(names))


def _prior_design(features: Sequence[dict[str, float]], precision: str = "float32") -> np.ndarray:
    names = prior_features(precision)
    cols = []
    for f in features:
        row = [math.expm1(_value(f, n)) if n.startswith(("log_", "int8_log_")) else _value(f, n) for n in names]
        cols.append(row + [1.0])
    return np.array(cols, dtype=np.float64).reshape(-1, len(names) + 1)


class CostSurrogate:
    """Predicts estimated cycles of fused kernels on one target (see the module docstring)."""

    def __init__(self, target: str, prior_coef: np.ndarray, booster, meta: dict[str, Any] | None = None,
                 precision: str = "float32"):
        self.target = target
        self.precision = precision
        self.prior_coef = np.asarray(prior_coef, dtype=np.float64)
        self.booster = booster
        self.meta = dict(meta or {})

    # ------------------------------------------------------------------ fit / predict

    @classmethod
    def fit(cls, rows: Sequence[dict[str, Any]], target: str, *, rounds: int = XGB_ROUNDS,
            precision: str = "float32") -> "CostSurrogate":
        """Fit on kernel rows ({'features', 'cycles', ...}, as ProfileDB.kernel_rows gives them) of
        kernels of `precision`."""
        import xgboost as xgb
        from scipy.optimize import nnls

        if len(rows) < 10:
            raise CostModelError(f"{target}: {len(rows)} profiled kernels are too few to fit a surrogate (need 10)")
        feats = [r["features"] for r in rows]
        y = np.array([float(r["cycles"]) for r in rows])
        design = _prior_design(feats, precision)
        coef, _ = nnls(design / y[:, None], np.ones(len(y)))  # relative-error least squares, coefficients >= 0
        prior = np.maximum(design @ coef, 1.0)
        dtrain = xgb.DMatrix(feature_matrix(feats, precision), label=np.log(y), base_margin=np.log(prior),
                             feature_names=list(feature_names(precision)))
        booster = xgb.train(XGB_PARAMS, dtrain, num_boost_round=rounds)
        digest = hashlib.sha1(json.dumps(sorted(r["hash"] for r in rows if "hash" in r)).encode()).hexdigest()[:16]
        meta = {"kernels": len(rows), "kernel_set": digest, "rounds": rounds,
                "cycles_are": "estimate from the core's timing table over exact emulated instructions"}
        return cls(target, coef, booster, meta, precision)

    def prior(self, features: Sequence[dict[str, float]]) -> np.ndarray:
        """The linear prior alone (cycles)."""
        return np.maximum(_prior_design(features, self.precision) @ self.prior_coef, 1.0)

    def predict(self, features: Sequence[dict[str, float]]) -> np.ndarray:
        """Predicted cycles, one per feature dict."""
        import xgboost as xgb

        if not features:
            return np.zeros(0)
        dm = xgb.DMatrix(feature_matrix(features, self.precision), base_margin=np.log(self.prior(features)),
                         feature_names=list(feature_names(self.precision)))
        return np.exp(self.booster.predict(dm).astype(np.float64))

    def predict_one(self, features: dict[str, float]) -> float:
        """Predicted cycles of one kernel."""
        return float(self.predict([features])[0])

    __call__ = predict_one

    # ------------------------------------------------------------------ files

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: target, feature layout, prior, the XGBoost model as JSON."""
        raw = bytes(self.booster.save_raw("json")).decode()
        doc = {"format": FORMAT, "version": FORMAT_VERSION, "target": self.target,
               "feature_names": list(feature_names(self.precision)),
               "prior_features": list(prior_features(self.precision)),
               "prior_coef": [float(c) for c in self.prior_coef], "meta": self.meta, "xgboost": json.loads(raw)}
        if self.precision != "float32":
            doc["precision"] = self.precision
        return doc

    def save(self, path: Path) -> None:
        """Write the surrogate as one JSON file (gzipped, reproducibly, when `path` ends in .gz)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")) + "\n"
        replace_bytes(path, gzip_bytes(text) if Path(path).name.endswith(".gz") else text.encode())

    @classmethod
    def load(cls, path: Path, target: str | None = None, precision: str | None = None) -> "CostSurrogate":
        """Read a file written by save(); checks format, feature layout and (if given) the target and
        the precision."""
        import xgboost as xgb

        path = Path(path)
        if not path.is_file():
            raise CostModelError(f"cost surrogate file '{path}' does not exist")
        try:
            doc = json.loads(read_text(path))
        except ValueError as err:  # broken gzip, not UTF-8, not JSON
            raise CostModelError(f"cost surrogate file '{path}' is not JSON: {err}") from err
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != FORMAT_VERSION:
            raise CostModelError(f"'{path}' is not a {FORMAT} file of version {FORMAT_VERSION}")
        have = doc.get("precision", "float32")
        if have not in PRECISIONS or (doc["feature_names"] != list(feature_names(have))
                                      or doc["prior_features"] != list(prior_features(have))):
            raise CostModelError(f"cost surrogate '{path}' was fitted on another kernel feature layout: refit it")
        if target is not None and doc["target"] != target:
            raise CostModelError(f"cost surrogate '{path}' is for target {doc['target']}, not {target}")
        if precision is not None and have != precision:
            raise CostModelError(f"cost surrogate '{path}' prices {have} kernels, not {precision}")
        booster = xgb.Booster(params={"nthread": 1})
        booster.load_model(bytearray(json.dumps(doc["xgboost"]).encode()))
        return cls(doc["target"], np.array(doc["prior_coef"]), booster, doc.get("meta"), have)


def shipped_targets(precision: str = "float32") -> list[str]:
    """Targets with a pre-fitted surrogate for `precision` in the package data."""
    names = [p.name.removeprefix("surrogate-").removesuffix(".json.gz") for p in DATA_DIR.glob("surrogate-*.json.gz")]
    if precision == "float32":
        return sorted(n for n in names if not any(n.endswith(f"-{q}") for q in PRECISIONS[1:]))
    return sorted(n.removesuffix(f"-{precision}") for n in names if n.endswith(f"-{precision}"))


def check_precision(precision: str) -> None:
    """Refuse a precision no surrogate prices (one line naming it)."""
    if precision not in PRECISIONS:
        raise CostModelError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")


def load_surrogate(target: str, precision: str = "float32") -> CostSurrogate:
    """The pre-fitted surrogate shipped for `target` and `precision` (or, float32, refitted for a
    calibrated user target)."""
    check_precision(precision)
    path = DATA_DIR / surrogate_name(target, precision)
    if not path.is_file() and precision == "float32":
        from tvmnas.board.user_targets import SURROGATE, user_file

        path = user_file(target, SURROGATE) or path
    if not path.is_file():
        have = ", ".join(shipped_targets(precision)) or "none"
        kind, shipped = ("", "shipped") if precision == "float32" else (f"{precision} ", f"shipped for {precision}")
        raise CostModelError(f"no pre-fitted {kind}cost surrogate for target {target} ({shipped}: {have}); "
                             "fit one with 'tvmnas cost fit'")
    return CostSurrogate.load(path, target, precision)
