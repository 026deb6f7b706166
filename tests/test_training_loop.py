"""The shared epoch loop: torch's cosine schedule gives the learning rates of the closed form, a killed
run resumes to exactly the uninterrupted one (generic loop and dynamic super-network training), and a
checkpoint of other settings is refused."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tvmnas.data import load_dataset
from tvmnas.data.arrays import batches
from tvmnas.dynamic.supernet import StageSpec, SupernetSpec
from tvmnas.dynamic.train import CHECKPOINT_FILE, LOG_FILE, SupernetTrainConfig, train_supernet
from tvmnas.errors import TvmnasError
from tvmnas.training.loop import Checkpointing, EpochLoop

from test_search_resume import Killed, _kill_after

torch.set_num_threads(1)

SPEC = SupernetSpec((1, 8, 8), 10, 8, (StageSpec(8, 1, 1), StageSpec(12, 1, 2)), width_fractions=(0.5, 1.0),
                    kernels=(3,), expands=(2,))


def _linear_run(out_dir, *, epochs=4, per_step_lr=False, settings=None, on_epoch_end=None, lr_min=0.01):
    """A tiny classifier trained by EpochLoop on random data: (model, history, steps per epoch)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    y = rng.integers(0, 3, 40).astype(np.int64)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.3), nn.Linear(8, 3))  # dropout: the torch RNG matters
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    ck = Checkpointing(out_dir, "ck.pt", settings or {"run": 1}, "log.csv", ("epoch", "lr", "loss"))
    loop = EpochLoop(model, optimizer, epochs, 4, 5.0, lr_min=lr_min, per_step_lr=per_step_lr, checkpointing=ck)
    losses: list[float] = []

    def step(batch):
        loss = F.cross_entropy(model(batch[0]), batch[1])
        loss.backward()
        losses.append(float(loss.detach()))
        return {"loss": losses[-1]}

    history = loop.run(lambda epoch: batches(x, y, 10, shuffle_seed=epoch), step,
                       lambda epoch: {"loss": sum(losses[-4:]) / 4}, on_epoch_end=on_epoch_end)
    return model, history, loop


@pytest.mark.parametrize("per_step_lr", [False, True])
def test_learning_rates_follow_the_cosine_closed_form(per_step_lr, tmp_path):
    epochs, steps, lr, lr_min = 4, 4, 0.2, 0.01
    _, history, loop = _linear_run(tmp_path, epochs=epochs, per_step_lr=per_step_lr, lr_min=lr_min)
    t_max, per = (epochs * steps, steps) if per_step_lr else (epochs, 1)
    want = [lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * e * per / t_max)) for e in range(epochs)]
    assert [row["lr"] for row in history] == pytest.approx(want, rel=1e-12)
    assert loop.lr == pytest.approx(lr_min, rel=1e-12)  # annealed all the way down after the last step


def test_interrupted_loop_resumes_to_the_uninterrupted_weights(tmp_path):
    whole, whole_history, _ = _linear_run(tmp_path / "whole")
    with pytest.raises(Killed):
        _linear_run(tmp_path / "split", on_epoch_end=_kill_after(1))
    resumed, resumed_history, _ = _linear_run(tmp_path / "split")
    assert resumed_history == whole_history
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    with open(tmp_path / "split" / "log.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2, 3]


def test_loop_refuses_a_checkpoint_of_other_settings(tmp_path):
    _linear_run(tmp_path, epochs=1)
    with pytest.raises(TvmnasError, match="other settings"):
        _linear_run(tmp_path, epochs=1, settings={"run": 2})


def test_resumed_supernet_training_equals_uninterrupted(tmp_path):
    data = load_dataset("digits", limit_train=160, limit_test=32)
    config = SupernetTrainConfig(epochs=2, batch_size=32, holdout=32, random_subnets=1, seed=4)
    whole, whole_metrics = train_supernet(data, tmp_path / "whole", config, spec=SPEC)
    with pytest.raises(Killed):
        train_supernet(data, tmp_path / "split", config, spec=SPEC, on_epoch_end=_kill_after(0))
    assert (tmp_path / "split" / CHECKPOINT_FILE).is_file()
    resumed, resumed_metrics = train_supernet(data, tmp_path / "split", config, spec=SPEC)
    a, b = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed_metrics == whole_metrics
    assert (tmp_path / "split" / LOG_FILE).read_text() == (tmp_path / "whole" / LOG_FILE).read_text()
    with pytest.raises(TvmnasError, match="other settings"):
        train_supernet(data, tmp_path / "split", SupernetTrainConfig(epochs=3, batch_size=32, holdout=32), spec=SPEC)
