"""CostSurrogate fit / predict / save / load, the baselines and the accuracy figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tvmnas.cost.evaluate import MacLinear, PerOpLUT, accuracy, cross_validate
from tvmnas.cost.surrogate import CostSurrogate, load_surrogate
from tvmnas.errors import CostModelError
from tvmnas.passes import FEATURE_NAMES


def synthetic_rows(n: int, seed: int) -> list[dict]:
    """Kernels whose cycles are 3 per MAC plus 2 per output element plus 400 per call, x1.3 for 5x5 kernels."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        macs = float(rng.integers(1_000, 2_000_000))
        outs = float(rng.integers(64, 20_000))
        k = int(rng.choice([1, 3, 5]))
        f = {name: 0.0 for name in FEATURE_NAMES}
        f.update({"log_macs": math.log1p(macs), "log_main_out_elems": math.log1p(outs), "n_blocks": 3.0,
                  "kernel_h": k, "kernel_w": k, "stride": 1.0, "class_conv": 1.0, "log_bytes_out": math.log1p(4 * outs)})
        cycles = (3 * macs + 2 * outs + 400) * (1.3 if k == 5 else 1.0)
        rows.append({"hash": f"h{seed}-{i}", "name": f"k{i}", "features": f, "macs": macs, "cycles": cycles})
    return rows


@pytest.fixture(scope="module")
def fitted() -> CostSurrogate:
    return CostSurrogate.fit(synthetic_rows(300, 0), "cortex-m4", rounds=300)


def test_surrogate_predicts_held_out_kernels_within_ten_percent(fitted: CostSurrogate) -> None:
    rows = synthetic_rows(100, 1)
    acc = accuracy(fitted.predict([r["features"] for r in rows]), np.array([r["cycles"] for r in rows]))
    assert acc.within_10pct >= 0.95
    assert acc.spearman >= 0.98


@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_save_load_round_trip_predicts_identically(fitted: CostSurrogate, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"s{suffix}"
    fitted.save(path)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == suffix.endswith(".gz")
    again = CostSurrogate.load(path, "cortex-m4")
    feats = [r["features"] for r in synthetic_rows(20, 2)]
    assert np.array_equal(fitted.predict(feats), again.predict(feats))
    fitted.save(tmp_path / f"s2{suffix}")
    assert path.read_bytes() == (tmp_path / f"s2{suffix}").read_bytes()


def test_fitting_is_deterministic() -> None:
    rows = synthetic_rows(60, 3)
    a = CostSurrogate.fit(rows, "cortex-m7", rounds=50)
    b = CostSurrogate.fit(rows, "cortex-m7", rounds=50)
    feats = [r["features"] for r in rows]
    assert np.array_equal(a.predict(feats), b.predict(feats))


def test_load_rejects_other_target_missing_file_and_foreign_json(fitted: CostSurrogate, tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    fitted.save(path)
    with pytest.raises(CostModelError, match="cortex-m4, not cortex-m7"):
        CostSurrogate.load(path, "cortex-m7")
    with pytest.raises(CostModelError, match="does not exist"):
        CostSurrogate.load(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CostModelError, match="is not a tvmnas-cost-surrogate file"):
        CostSurrogate.load(tmp_path / "other.json")
    (tmp_path / "broken.json.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(CostModelError, match="is not JSON"):
        CostSurrogate.load(tmp_path / "broken.json.gz")


def test_too_few_kernels_is_a_named_error() -> None:
    with pytest.raises(CostModelError, match="too few"):
        CostSurrogate.fit(synthetic_rows(5, 4), "cortex-m4")


def test_baselines_fit_their_own_model() -> None:
    rows = synthetic_rows(200, 5)
    lin = MacLinear.fit(rows)
    assert 2.5 < lin.a < 4.5
    lut = PerOpLUT.fit(rows)
    assert lut.table["conv/k5x5/s1"] > lut.table["conv/k3x3/s1"]


def test_cross_validation_reports_every_predictor() -> None:
    res = cross_validate(synthetic_rows(60, 6), "cortex-m4", folds=3, rounds=50)
    assert set(res) == {"surrogate", "MACs-linear", "per-op LUT"}
    assert all(r["n"] == 60 for r in res.values())


def test_accuracy_figures() -> None:
    acc = accuracy(np.array([100.0, 215.0, 290.0]), np.array([100.0, 200.0, 300.0]))
    assert acc.within_10pct == pytest.approx(1.0)
    assert acc.within_20pct == 1.0
    assert acc.spearman == pytest.approx(1.0)
    assert acc.mape == pytest.approx((0 + 0.075 + 1 / 30) / 3)


@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m7"])
def test_shipped_surrogates_rank_the_kernels_they_were_fitted_on(target: str) -> None:
    from scipy.stats import spearmanr

    from tvmnas.cost.surrogate import DATA_DIR, profiles_name
    from tvmnas.measure.store import open_profiles

    surrogate = load_surrogate(target)
    assert surrogate.target == target
    with open_profiles(DATA_DIR / profiles_name()) as db:
        rows = db.kernel_rows(target, "float32", split="fit")
    assert surrogate.meta["kernels"] == len(rows)
    pred = surrogate.predict([r["features"] for r in rows])
    assert np.all(pred > 0)
    assert spearmanr(pred, [r["cycles"] for r in rows]).statistic > 0.95


def test_missing_shipped_surrogate_names_the_target() -> None:
    with pytest.raises(CostModelError, match="no pre-fitted cost surrogate for target cortex-m0"):
        load_surrogate("cortex-m0")


def test_int8_surrogates_are_their_own_files_and_named_in_errors() -> None:
    from tvmnas.cost.surrogate import shipped_targets

    assert shipped_targets() == ["cortex-m4", "cortex-m7"]  # the int8 files are not float32 targets
    assert set(shipped_targets("int8")) >= {"cortex-m4", "cortex-m7", "cortex-m33"}
    surrogate = load_surrogate("cortex-m33", "int8")
    assert (surrogate.target, surrogate.precision) == ("cortex-m33", "int8")
    assert load_surrogate("cortex-m4").precision == "float32"
    with pytest.raises(CostModelError, match="no pre-fitted int8 cost surrogate for target cortex-m0 "
                                             r"\(shipped for int8: cortex-m33, cortex-m4, cortex-m7"):
        load_surrogate("cortex-m0", "int8")
    with pytest.raises(CostModelError, match="no pre-fitted cost surrogate for target cortex-m33 "):
        load_surrogate("cortex-m33")


def test_a_surrogate_file_keeps_its_precision(tmp_path: Path) -> None:
    from tvmnas.passes import FEATURE_NAMES

    rows = [{"features": {**dict.fromkeys(FEATURE_NAMES, 0.0), "log_macs": float(i)}, "cycles": 100.0 * (i + 1)}
            for i in range(12)]
    CostSurrogate.fit(rows, "cortex-m4", rounds=5, precision="int8").save(tmp_path / "s.json")
    assert CostSurrogate.load(tmp_path / "s.json").precision == "int8"
    with pytest.raises(CostModelError, match="prices int8 kernels, not float32"):
        CostSurrogate.load(tmp_path / "s.json", "cortex-m4", "float32")


def test_an_int8_surrogate_reads_the_integer_features(tmp_path: Path) -> None:
    """Two int8 kernels alike in every float32 feature, one rescaling with a rounding shift: the int8
    surrogate (fitted on INT8_FEATURE_NAMES, kept in its file) tells them apart; a float32 one
    keeps FEATURE_NAMES."""
    from tvmnas.passes.kernel_features import INT8_FEATURE_NAMES

    rows = []
    for i, r in enumerate(synthetic_rows(200, 7)):
        rounding = float(i % 2)
        r["features"] = {**dict.fromkeys(INT8_FEATURE_NAMES, 0.0), **r["features"],
                         "int8_per_out_requant_round": rounding, "int8_log_requant_round": rounding * 5.0}
        r["cycles"] *= 1.0 + 0.5 * rounding
        rows.append(r)
    CostSurrogate.fit(rows, "cortex-m4", rounds=100, precision="int8").save(tmp_path / "s.json")
    model = CostSurrogate.load(tmp_path / "s.json", "cortex-m4", "int8")
    assert json.loads((tmp_path / "s.json").read_text())["feature_names"] == list(INT8_FEATURE_NAMES)
    plain, rounding = rows[0]["features"], {**rows[0]["features"], "int8_per_out_requant_round": 1.0,
                                            "int8_log_requant_round": 5.0}
    assert model.predict_one(rounding) > 1.3 * model.predict_one(plain)
    assert CostSurrogate.fit(synthetic_rows(20, 8), "cortex-m4", rounds=5).to_dict()["feature_names"] == list(FEATURE_NAMES)
