"""The CIFAR-10 search benchmark prices a genotype from the rows the derivation chose, in both spaces."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import search_cifar  # noqa: E402

from tvmnas.search.search import build_supernet  # noqa: E402


@pytest.mark.parametrize("space", ["chain", "darts"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_genotype_choices_are_the_rows_the_derivation_chose(space: str, seed: int) -> None:
    args = argparse.Namespace(space=space, target="cortex-m4", search_epochs=1, batch_size=8, seed=0, arch_lr=0.01)
    net = build_supernet(search_cifar.search_config(args, 0.0), (3, 32, 32), 10)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for alpha in net.arch_parameters().values():
            alpha.copy_(torch.randn(alpha.shape, generator=gen))
    genotype, choices = net.derive()
    assert search_cifar.genotype_choices(genotype) == {k: dict(v) for k, v in choices.items()}


def test_spearman_takes_ties_at_their_mean_rank() -> None:
    # pools and skips all have 0 MACs: tied ranks, not an arbitrary order among them
    assert search_cifar._spearman([0, 0, 5, 9], [0, 7, 8, 9]) == pytest.approx(0.9486833, abs=1e-6)
    assert search_cifar._spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
