"""`select_subnets`: K configurations from a trained super-network, optionally fine-tuned together."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tvmnas.data import load_dataset
from tvmnas.dynamic.select import load_selection, select_subnets
from tvmnas.dynamic.supernet import DynamicSupernet, StageSpec, SupernetSpec
from tvmnas.dynamic.train import SupernetTrainConfig, train_supernet
from tvmnas.targets import load_target

SPEC = SupernetSpec((1, 8, 8), 10, 8, (StageSpec(8, 1, 1), StageSpec(12, 1, 2)), width_fractions=(0.5, 1.0),
                    kernels=(3,), expands=(2,))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, object, SupernetTrainConfig]:
    torch.set_num_threads(1)
    data = load_dataset("digits", limit_train=360, limit_test=60)
    config = SupernetTrainConfig(epochs=1, holdout=60, batch_size=32)
    out = tmp_path_factory.mktemp("sup")
    train_supernet(data, out, config, spec=SPEC)
    return out, data, config


def _select(trained, out: Path, finetune_epochs: int) -> dict:
    sup, data, config = trained
    net = DynamicSupernet(SPEC)
    net.load_state_dict(torch.load(sup / "supernet.pt", weights_only=True))
    return select_subnets(net, data, load_target("cortex-m4"), out, k=2, candidates=4, holdout=config.holdout,
                          seed=config.seed, cost_model="mac", finetune_epochs=finetune_epochs, train_config=config)


def test_finetuning_changes_the_shared_weights_and_remeasures_the_chosen(trained, tmp_path: Path) -> None:
    plain = _select(trained, tmp_path / "plain", 0)
    tuned = _select(trained, tmp_path / "tuned", 2)
    assert json.loads((tmp_path / "tuned" / "selection.json").read_text())["finetune_epochs"] == 2
    # same choice (made before fine-tuning), new held-out accuracies, new weights
    assert [c["config"] for c in plain["configs"]] == [c["config"] for c in tuned["configs"]]
    a, b = load_selection(tmp_path / "plain"), load_selection(tmp_path / "tuned")
    assert set(a.shared) == set(b.shared)
    assert any(not (a.shared[n] == b.shared[n]).all() for n in a.shared)
    for entry in tuned["configs"]:
        assert 0.0 <= entry["holdout_acc"] <= 1.0
