"""Retraining: both spaces end to end on digits (search -> genotype.json -> train -> .pt2/.onnx that
reload and match torch), training resume, clear errors."""

import json
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tvmnas.data import load_dataset
from tvmnas.errors import DatasetError
from tvmnas.search.genotype import Genotype
from tvmnas.search.search import SearchConfig, search
from tvmnas.train import CHECKPOINT_NAME, TrainConfig, train

torch.set_num_threads(1)


def _check_exports(out_dir, model, input_shape):
    x = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(42))
    model.eval()
    with torch.no_grad():
        want = model(x).numpy()
        got_pt2 = torch.export.load(out_dir / "model.pt2").module()(x).numpy()
    session = ort.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    got_onnx = session.run(None, {"input": x.numpy()})[0]
    assert got_pt2.shape == want.shape == got_onnx.shape == (1, 10)
    np.testing.assert_allclose(got_pt2, want, atol=1e-5)
    np.testing.assert_allclose(got_onnx, want, atol=1e-4)


@pytest.mark.ci
@pytest.mark.parametrize("space", ["darts", "chain"])
def test_search_train_export_end_to_end(space, tmp_path):
    data = load_dataset("digits", limit_train=384)
    search(data, tmp_path / "search", SearchConfig(space=space, epochs=1, batch_size=32, cost_weight=0.5))
    genotype = Genotype.load(tmp_path / "search" / "genotype.json")
    result = train(genotype, data, tmp_path / "train", TrainConfig(epochs=2, batch_size=32))
    out = tmp_path / "train"
    for name in ("model.pt2", "model.onnx", "metrics.json", "train_log.csv", "genotype.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["space"] == space and metrics["budget_ok"] is True
    assert metrics["test_accuracy"] > 0.2  # ten classes: chance is 0.1
    assert metrics["export"]["max_abs_diff_onnx"] < 1e-4
    _check_exports(out, result.model, data.input_shape)


def test_resumed_training_equals_uninterrupted(tmp_path):
    data = load_dataset("digits", limit_train=96, limit_test=32)
    torch.manual_seed(0)
    from tvmnas.search.chain_supernet import ChainSupernet
    genotype = ChainSupernet((1, 8, 8), 10).derive()[0]
    config = TrainConfig(epochs=3, batch_size=32)
    whole = train(genotype, data, tmp_path / "whole", config)

    def die(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt()

    with pytest.raises(KeyboardInterrupt):
        train(genotype, data, tmp_path / "split", config, on_epoch_end=die)
    assert (tmp_path / "split" / CHECKPOINT_NAME).is_file()
    resumed = train(genotype, data, tmp_path / "split", config)
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metrics["test_accuracy"] == whole.metrics["test_accuracy"]


def test_over_budget_flag_reaches_metrics(tmp_path):
    from tvmnas.search.cost import Budgets

    data = load_dataset("digits", limit_train=64, limit_test=16)
    result = search(data, tmp_path / "s", SearchConfig(space="chain", epochs=1, batch_size=32,
                                                       budgets=Budgets(sram_bytes=64)))
    assert not result.within_budget
    trained = train(Genotype.load(tmp_path / "s" / "genotype.json"), data, tmp_path / "t",
                    TrainConfig(epochs=1, batch_size=32))
    assert trained.metrics["budget_ok"] is False
    assert "SRAM (peak activation bytes)" in trained.metrics["violations"][0]


def test_genotype_for_other_data_is_one_clear_error(tmp_path):
    from tvmnas.search.genotype import ChainLayer

    genotype = Genotype("chain", (3, 32, 32), 10, 8, layers=(ChainLayer("mb_k3_e1", 8, 1),))
    with pytest.raises(DatasetError, match=r"genotype expects input \(3, 32, 32\)"):
        train(genotype, load_dataset("digits"), tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_cli_train_missing_genotype_exits_with_one_line(tmp_path, capsys, monkeypatch):
    from tvmnas.cli import main

    monkeypatch.setattr(sys, "argv", ["tvmnas", "train", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 1
    assert capsys.readouterr().err.strip() == f"error: genotype file '{tmp_path / 'nope.json'}' does not exist"
    assert not (tmp_path / "o").exists()


def test_cli_search_then_train(tmp_path, capsys, monkeypatch):
    from tvmnas.cli import main

    common = ["--limit-train", "96", "--batch-size", "32", "--no-progress"]
    monkeypatch.setattr(sys, "argv", ["tvmnas", "search", "--space", "chain", "--target", "cortex-m0", "--epochs",
                                      "1", "--cost-weight", "1", "--out", str(tmp_path / "s"), *common])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 0
    found = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert found["budget_ok"] is True and found["cost_unit"] == "MAC proxy"
    monkeypatch.setattr(sys, "argv", ["tvmnas", "train", found["genotype"], "--epochs", "1",
                                      "--out", str(tmp_path / "t"), *common])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert trained["macs"] == found["cycles"] and trained["param_bytes"] == found["param_bytes"]
    assert (tmp_path / "t" / "model.onnx").is_file() and (tmp_path / "t" / "model.pt2").is_file()


def test_cli_search_unknown_target_leaves_no_output(tmp_path, capsys, monkeypatch):
    from tvmnas.cli import main

    monkeypatch.setattr(sys, "argv", ["tvmnas", "search", "--target", "pdp-11", "--out", str(tmp_path / "s")])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 1
    assert "pdp-11" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "s").exists()
