"""Checkpoints: a search or training killed after an epoch resumes to exactly the uninterrupted result;
second-order and Gumbel options run."""

import csv

import pytest
import torch

from tvmnas.data import load_dataset
from tvmnas.errors import TvmnasError
from tvmnas.search.architect import Architect
from tvmnas.search.chain_supernet import ChainSupernet
from tvmnas.search.cost import CostTerm, MacCostModel
from tvmnas.search.search import CHECKPOINT_NAME, LOG_NAME, SearchConfig, search

torch.set_num_threads(1)


class Killed(Exception):
    """Stands in for the process being killed right after a checkpoint."""


def _kill_after(epoch_to_die: int):
    def callback(epoch: int, row: dict) -> None:
        if epoch == epoch_to_die:
            raise Killed()
    return callback


@pytest.mark.parametrize("space", ["chain", "darts"])
def test_resumed_search_equals_uninterrupted(space, tmp_path):
    data = load_dataset("digits", limit_train=96, limit_test=16)
    config = SearchConfig(space=space, epochs=2, batch_size=32, cost_weight=1.0, gumbel=True, seed=5)
    whole = search(data, tmp_path / "whole", config)
    with pytest.raises(Killed):
        search(data, tmp_path / "split", config, on_epoch_end=_kill_after(0))
    assert (tmp_path / "split" / CHECKPOINT_NAME).is_file()
    resumed = search(data, tmp_path / "split", config)
    assert resumed.genotype == whole.genotype
    assert resumed.history == whole.history
    a = torch.load(tmp_path / "whole" / CHECKPOINT_NAME, weights_only=False)["model"]
    b = torch.load(tmp_path / "split" / CHECKPOINT_NAME, weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with open(tmp_path / "split" / LOG_NAME) as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1]


def test_resume_with_other_settings_is_refused(tmp_path):
    data = load_dataset("digits", limit_train=64, limit_test=16)
    search(data, tmp_path, SearchConfig(space="chain", epochs=1, batch_size=32))
    with pytest.raises(TvmnasError, match="other settings"):
        search(data, tmp_path, SearchConfig(space="chain", epochs=1, batch_size=32, cost_weight=2.0))


def test_second_order_step_differs_from_first_order():
    data = load_dataset("digits", limit_train=64)
    x, y = torch.from_numpy(data.train_x[:32]), torch.from_numpy(data.train_y[:32])
    xv, yv = torch.from_numpy(data.train_x[32:64]), torch.from_numpy(data.train_y[32:64])
    grads = {}
    for order in (False, True):
        torch.manual_seed(0)
        net = ChainSupernet((1, 8, 8), 10, layers=((8, 1), (8, 1)))
        arch = Architect(net, CostTerm(net.cost_slots(), MacCostModel()), cost_weight=0.0, second_order=order,
                         unrolled_lr=0.5)
        step = arch.step(x, y, xv, yv)
        assert step.cross_entropy > 0
        grads[order] = net.alpha_layers.grad.clone()
        assert all(p.grad is None for p in net.weight_parameters())
    assert torch.isfinite(grads[True]).all()
    assert not torch.allclose(grads[False], grads[True])


def test_partial_channel_darts_search_runs(tmp_path):
    data = load_dataset("digits", limit_train=64, limit_test=16)
    result = search(data, tmp_path, SearchConfig(space="darts", epochs=1, batch_size=32, partial_channels=2))
    assert result.genotype.space == "darts" and result.genotype.channels == 8
