"""Lambda sweep: Pareto front selection, JSON + plot output, and (slow) cycles measured on QEMU."""

import json
from dataclasses import replace

import pytest
import torch

from tvmnas.data import load_dataset
from tvmnas.executor import InlineExecutor
from tvmnas.search.search import SearchConfig
from tvmnas.search.sweep import SweepPoint, pareto_front, sweep
from tvmnas.train import TrainConfig

torch.set_num_threads(1)


def _point(lam: float, acc: float, cycles: float, ok: bool = True) -> SweepPoint:
    return SweepPoint(lam, acc, cycles, "MAC proxy", None, 0, 0, None, None, ok, "")


def test_pareto_front_keeps_only_non_dominated_within_budget():
    points = [_point(0, 0.9, 100), _point(1, 0.8, 50), _point(2, 0.7, 60), _point(3, 0.95, 10, ok=False),
              _point(4, 0.8, 50)]
    assert pareto_front(points) == [1, 4, 0] or pareto_front(points) == [4, 1, 0]
    assert 2 not in pareto_front(points) and 3 not in pareto_front(points)


def test_sweep_without_measurement_writes_front_and_plot(tmp_path):
    data = load_dataset("digits", limit_train=64, limit_test=32)
    points = sweep(data, tmp_path, [0.0, 20.0], SearchConfig(space="chain", epochs=1, batch_size=32),
                   TrainConfig(epochs=1, batch_size=32), measure=False)
    assert [p.cost_weight for p in points] == [0.0, 20.0]
    assert points[1].cycles < points[0].cycles and points[0].cycles_source == "MAC proxy"
    record = json.loads((tmp_path / "pareto.json").read_text())
    assert record["front"] and len(record["points"]) == 2
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    assert (tmp_path / "lambda_20" / "train" / "model.onnx").is_file()


@pytest.mark.slow
@pytest.mark.ci
def test_sweep_measures_cycles_on_the_emulator(tmp_path):
    data = load_dataset("digits", limit_train=64, limit_test=32)
    points = sweep(data, tmp_path, [1.0], SearchConfig(space="chain", epochs=1, batch_size=32, target="cortex-m4"),
                   TrainConfig(epochs=1, batch_size=32), measure=True)
    p = points[0]
    assert p.instructions is not None and p.instructions > p.macs  # at least one instruction per MAC
    assert p.cycles >= p.instructions and p.cycles_source == "estimate, emulated on cortex-m4"
    assert p.arena_bytes is not None and p.flash_bytes is not None and p.flash_bytes > p.param_bytes


class _ElsewhereExecutor(InlineExecutor):
    """Runs each task here, but like a cluster's workers it claims not to see the driver's files."""

    shares_files = False


def test_arms_on_workers_without_the_drivers_files_give_the_same_points_and_files(tmp_path):
    data = load_dataset("digits", limit_train=64, limit_test=32)
    settings = ([0.0, 20.0], SearchConfig(space="chain", epochs=1, batch_size=32), TrainConfig(epochs=1, batch_size=32))
    here = sweep(data, tmp_path / "here", *settings, measure=False)
    away = sweep(data, tmp_path / "away", *settings, measure=False, executor=_ElsewhereExecutor())
    assert [replace(p, run_dir="") for p in away] == [replace(p, run_dir="") for p in here]
    assert [p.run_dir for p in away] == [str(tmp_path / "away" / "lambda_0"), str(tmp_path / "away" / "lambda_20")]

    def files(root):
        return sorted(str(f.relative_to(root)) for f in root.rglob("*") if f.is_file())

    assert files(tmp_path / "away") == files(tmp_path / "here")
    assert (tmp_path / "away" / "lambda_20" / "train" / "model.onnx").is_file()
