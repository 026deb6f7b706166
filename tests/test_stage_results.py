"""The pipeline's stages hand each other typed results that record and summarise as the same JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tvmnas.pipeline import Stages, StageLog
from tvmnas.stage_results import SearchResult, TrainResult, VerifyResult

SEARCH_KEYS = {"genotype_path", "genotype", "cost_unit", "cost", "violations", "search_val_accuracy", "cost_weight"}
SWEEP_KEYS = SEARCH_KEYS | {"model_dir", "points", "front", "chosen"}
VERIFY_KEYS = {"images", "source", "classes_agree", "max_abs_logit_diff", "mean_abs_logit_diff", "logit_tolerance",
               "emulated_accuracy", "reference_accuracy", "instructions_min", "instructions_max", "passed"}
INT8_VERIFY_KEYS = VERIFY_KEYS | {"precision", "max_lsb_diff_pytorch", "max_lsb_diff_reference", "int8_tolerance",
                                  "output_scale", "output_zero_point"}


def _search(**sweep) -> SearchResult:
    return SearchResult("w/genotype.json", "chain[...]", "MACs", {"macs": 10}, [], 0.5, 0.25, **sweep)


def _verify(**int8) -> VerifyResult:
    return VerifyResult(48, "first 48 images", 48, 1e-5, 1e-6, 1e-3, 0.9, 0.9, 100, 120, True, **int8)


def test_a_search_records_the_keys_it_always_had_and_a_sweep_adds_its_points() -> None:
    assert set(_search().to_json()) == SEARCH_KEYS
    swept = _search(model_dir="w/train", points=[{"cost_weight": 0.0}], front=[0], chosen=0)
    assert set(swept.to_json()) == SWEEP_KEYS
    assert SearchResult.from_json(json.loads(json.dumps(swept.to_json()))) == swept
    assert SearchResult.from_json(_search().to_json()).model_dir is None


def test_verify_records_the_int8_keys_only_in_an_int8_run() -> None:
    assert set(_verify().to_json()) == VERIFY_KEYS
    int8 = _verify(precision="int8", max_lsb_diff_pytorch=1, max_lsb_diff_reference=0, int8_tolerance=1,
                   output_scale=0.1, output_zero_point=-3)
    assert set(int8.to_json()) == INT8_VERIFY_KEYS
    assert VerifyResult.from_json(int8.to_json()) == int8


def test_a_record_missing_a_field_is_refused() -> None:
    with pytest.raises(KeyError, match="metrics"):
        TrainResult.from_json({"model_dir": "w/train"})


def test_a_skipped_stage_returns_the_typed_result_it_recorded(tmp_path: Path) -> None:
    calls = []

    def train() -> TrainResult:
        calls.append("train")
        (tmp_path / "metrics.json").write_text("{}")
        return TrainResult(str(tmp_path), {"test_accuracy": 0.75})

    def run() -> TrainResult:
        return Stages(tmp_path, StageLog(False)).run("train", "train", train, lambda r: "ok",
                                                     lambda r: [Path(r.model_dir) / "metrics.json"], kind=TrainResult)

    first, again = run(), run()
    assert calls == ["train"] and again == first and isinstance(again, TrainResult)
    record = json.loads((tmp_path / "work" / "stages" / "train.json").read_text())
    assert record["result"] == {"model_dir": str(tmp_path), "metrics": {"test_accuracy": 0.75}}
