"""Random networks of both search spaces (chain and DARTS) at MCU sizes, for fitting and evaluating
cost models. Seeded: the same seed gives the same genotypes on every machine."""

from __future__ import annotations

import random

from tvmnas.search.genotype import CellEdge, CellGenotype, ChainLayer, Genotype
from tvmnas.search.ops import CHAIN_PRIMITIVES, PRIMITIVES

INPUT_SHAPES: tuple[tuple[int, int, int], ...] = ((1, 8, 8), (3, 16, 16), (3, 24, 24), (3, 32, 32))
CHAIN_WIDTHS = (4, 8, 12, 16, 24, 32, 48)
DARTS_WIDTHS = (4, 6, 8)


def random_chain_genotype(rng: random.Random, num_classes: int = 10) -> Genotype:
    """Stem width, 2-5 inverted-residual layers (op, width, stride) and an optional head, at random."""
    shape = rng.choice(INPUT_SHAPES)
    stem = rng.choice(CHAIN_WIDTHS[:4])
    c, h = stem, shape[1]
    layers = []
    for _ in range(rng.randint(2, 5)):
        stride = 2 if h > 4 and rng.random() < 0.4 else 1
        width = rng.choice([w for w in CHAIN_WIDTHS if w >= c // 2])
        ops = [op for op in CHAIN_PRIMITIVES if op != "skip" or (stride == 1 and width == c)]
        layers.append(ChainLayer(rng.choice(ops), width, stride))
        h = -(-h // stride)
        c = width
    return Genotype(space="chain", input_shape=shape, num_classes=num_classes, channels=stem,
                    layers=tuple(layers), head_channels=rng.choice((0, 0, 32, 64)))


def _random_cell(rng: random.Random, nodes: int) -> CellGenotype:
    ops = [p for p in PRIMITIVES if p != "none"]
    edges = []
    for i in range(nodes):
        for source in sorted(rng.sample(range(2 + i), 2)):
            edges.append(CellEdge(rng.choice(ops), source))
    return CellGenotype(tuple(edges), tuple(range(2, 2 + nodes)))


def random_darts_genotype(rng: random.Random, num_classes: int = 10) -> Genotype:
    """Initial width, 2-3 cells (reductions at 1/3 and 2/3 of the depth) and random normal/reduce cells."""
    cells = rng.randint(2, 3)
    return Genotype(
        space="darts",
        input_shape=rng.choice(INPUT_SHAPES),
        num_classes=num_classes,
        channels=rng.choice(DARTS_WIDTHS),
        cells=cells,
        stem_multiplier=3,
        reduction_cells=tuple(sorted({cells // 3, 2 * cells // 3})),
        normal=_random_cell(rng, 4),
        reduce=_random_cell(rng, 4),
    )


def random_genotypes(count: int, seed: int) -> list[Genotype]:
    """`count` genotypes alternating chain and DARTS, from one seeded generator."""
    rng = random.Random(seed)
    return [random_chain_genotype(rng) if i % 2 == 0 else random_darts_genotype(rng) for i in range(count)]


def interleave(fit: list[Genotype], evaluate: list[Genotype]) -> list[tuple[str, str, Genotype]]:
    """(name, split, genotype) jobs alternating fit and eval networks, so a partial run has both."""
    jobs = []
    for i in range(max(len(fit), len(evaluate))):
        if i < len(fit):
            jobs.append((f"fit{i:02d}", "fit", fit[i]))
        if i < len(evaluate):
            jobs.append((f"eval{i:02d}", "eval", evaluate[i]))
    return jobs
