"""`select_subnets`: K configurations from a trained super-network, optionally fine-tuned together."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tvmnas.dynamic.select as select_module
from tvmnas.data import load_dataset
from tvmnas.dynamic.select import (
    Candidate,
    CostEstimator,
    candidate_configs,
    evaluate_candidates,
    held_out_accuracy,
    load_selection,
    select_subnets,
)
from tvmnas.dynamic.subnet import extract_subnet
from tvmnas.dynamic.supernet import DynamicSupernet, StageSpec, SupernetSpec
from tvmnas.dynamic.train import SupernetTrainConfig, split, train_supernet
from tvmnas.executor import LocalExecutor, make_executor
from tvmnas.search.cost import count_module
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


# --------------------------------------------------------------------------- on the executor seam


def _net(sup: Path) -> DynamicSupernet:
    net = DynamicSupernet(SPEC)
    net.load_state_dict(torch.load(sup / "supernet.pt", weights_only=True))
    return net


def _sequential_candidates(net, configs, calib_x, holdout_x, holdout_y, estimator, *, calibration_batches=8,
                           executor=None):
    """The evaluation as one loop over the one shared network, each config recalibrating it in turn."""
    out = []
    for config in configs:
        acc = held_out_accuracy(net, config, calib_x, holdout_x, holdout_y, calibration_batches)
        sub = extract_subnet(net, config)
        counts = count_module(sub, SPEC.input_shape)
        out.append(Candidate(config, acc, estimator.cycles(sub, SPEC.input_shape), counts.params,
                             4 * counts.act_elems))
    return out


def test_candidates_are_the_same_inline_on_two_workers_and_in_one_shared_loop(trained) -> None:
    sup, data, config = trained
    parts = split(data, config.holdout, config.seed)
    configs = candidate_configs(SPEC, 6, 1)
    estimator = CostEstimator(load_target("cortex-m4"), "mac")
    args = (configs, parts.train_x, parts.holdout_x, parts.holdout_y, estimator)
    net = _net(sup)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    inline = evaluate_candidates(net, *args)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the driver's net is untouched
    on_two = evaluate_candidates(net, *args, executor=LocalExecutor(2))
    shared_loop = _sequential_candidates(_net(sup), *args)
    assert [c.config for c in inline] == configs
    assert inline == on_two == shared_loop
    assert len({c.holdout_acc for c in inline}) > 1  # the configs really differ


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("finetune_epochs", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_the_selection_folder_is_the_one_a_shared_loop_writes(trained, tmp_path: Path, monkeypatch,
                                                              finetune_epochs: int) -> None:
    sup, data, config = trained
    run = dict(k=2, candidates=4, holdout=config.holdout, seed=config.seed, cost_model="mac",
               finetune_epochs=finetune_epochs, train_config=config)
    target = load_target("cortex-m4")
    inline_net, two_net = _net(sup), _net(sup)
    select_subnets(inline_net, data, target, tmp_path / "inline", **run)
    select_subnets(two_net, data, target, tmp_path / "two", executor=LocalExecutor(2), **run)
    with monkeypatch.context() as m:
        m.setattr(select_module, "evaluate_candidates", _sequential_candidates)
        loop_net = _net(sup)
        select_subnets(loop_net, data, target, tmp_path / "loop", **run)
    # supernet.pt included: it carries the BatchNorm statistics the evaluation leaves in the network
    assert _files(tmp_path / "inline") == _files(tmp_path / "loop") == _files(tmp_path / "two")
    for net in (inline_net, two_net):
        assert all(torch.equal(loop_net.state_dict()[k], v) for k, v in net.state_dict().items())


@pytest.mark.slow
def test_the_selection_on_ray_is_the_one_made_inline(trained, tmp_path: Path) -> None:
    sup, data, config = trained
    run = dict(k=2, candidates=3, holdout=config.holdout, seed=config.seed, cost_model="mac")
    target = load_target("cortex-m4")
    select_subnets(_net(sup), data, target, tmp_path / "inline", **run)
    select_subnets(_net(sup), data, target, tmp_path / "ray", executor=make_executor("ray", 2), **run)
    assert _files(tmp_path / "ray") == _files(tmp_path / "inline")
