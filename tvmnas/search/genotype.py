"""Genotype: the searched architecture as a plain value that prints, round-trips through JSON
exactly and turns into a networkx graph. Retraining and compiling take only this value."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import networkx as nx

from tvmnas.errors import GenotypeError
from tvmnas.search.ops import CHAIN_OPS, OPS

SPACES = ("darts", "chain")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CellEdge:
    """One input of a DARTS cell node: op applied to state `source` (0, 1 = cell inputs; 2.. = nodes)."""

    op: str
    source: int


@dataclass(frozen=True)
class CellGenotype:
    """A DARTS cell: two edges per intermediate node in node order, and the nodes concatenated."""

    edges: tuple[CellEdge, ...]
    concat: tuple[int, ...]

    @property
    def nodes(self) -> int:
        """Number of intermediate nodes."""
        return len(self.edges) // 2


@dataclass(frozen=True)
class ChainLayer:
    """One layer of the chain space: its op ('mb_k5_e3', 'skip'), output channels and stride."""

    op: str
    out_channels: int
    stride: int


@dataclass(frozen=True)
class Genotype:
    """A discrete architecture of either space, with the macro settings needed to rebuild it.

    space 'darts': channels (initial C), cells, stem_multiplier, reduction_cells, normal, reduce.
    space 'chain': channels (stem width), layers, head_channels (0 = no 1x1 head conv).
    extra: provenance written by the search (target, cost model, exact cost, budget status); it is
    saved and reloaded but takes no part in equality.
    """

    space: str
    input_shape: tuple[int, int, int]
    num_classes: int
    channels: int
    cells: int = 0
    stem_multiplier: int = 3
    reduction_cells: tuple[int, ...] = ()
    normal: CellGenotype | None = None
    reduce: CellGenotype | None = None
    layers: tuple[ChainLayer, ...] = ()
    head_channels: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise GenotypeError(f"unknown search space '{self.space}' (expected one of {', '.join(SPACES)})")
        if self.space == "darts":
            if self.normal is None or self.reduce is None or self.cells < 1:
                raise GenotypeError("darts genotype needs 'normal', 'reduce' and cells >= 1")
            for cell in (self.normal, self.reduce):
                for edge in cell.edges:
                    if edge.op not in OPS or edge.op == "none":
                        raise GenotypeError(f"darts genotype uses unknown or empty op '{edge.op}'")
        else:
            if not self.layers:
                raise GenotypeError("chain genotype needs at least one layer")
            for layer in self.layers:
                if layer.op not in CHAIN_OPS:
                    raise GenotypeError(f"chain genotype uses unknown op '{layer.op}'")

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; only the fields of this genotype's space are written."""
        d = asdict(self)
        d["format_version"] = FORMAT_VERSION
        keep = {"darts": ("cells", "stem_multiplier", "reduction_cells", "normal", "reduce"),
                "chain": ("layers", "head_channels")}[self.space]
        for name in ("cells", "stem_multiplier", "reduction_cells", "normal", "reduce", "layers",
                     "head_channels"):
            if name not in keep:
                d.pop(name)
        return d

    def to_json(self) -> str:
        """Deterministic JSON text (sorted keys, two-space indent)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Genotype":
        """Inverse of to_dict; unknown keys are an error, not ignored."""
        d = dict(d)
        version = d.pop("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise GenotypeError(f"genotype format_version {version} is not supported (expected {FORMAT_VERSION})")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise GenotypeError(f"genotype has unknown keys: {', '.join(unknown)}")
        try:
            for name in ("normal", "reduce"):
                if d.get(name) is not None:
                    cell = d[name]
                    d[name] = CellGenotype(
                        edges=tuple(CellEdge(str(e["op"]), int(e["source"])) for e in cell["edges"]),
                        concat=tuple(int(i) for i in cell["concat"]),
                    )
            if "layers" in d:
                d["layers"] = tuple(
                    ChainLayer(str(x["op"]), int(x["out_channels"]), int(x["stride"])) for x in d["layers"]
                )
            d["input_shape"] = tuple(int(v) for v in d["input_shape"])
            if "reduction_cells" in d:
                d["reduction_cells"] = tuple(int(v) for v in d["reduction_cells"])
            return cls(**d)
        except (KeyError, TypeError, ValueError) as err:
            raise GenotypeError(f"malformed genotype: {err!r}") from err

    @classmethod
    def from_json(cls, text: str) -> "Genotype":
        """Parse genotype JSON text."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise GenotypeError(f"genotype is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise GenotypeError("genotype JSON must be an object")
        return cls.from_dict(data)

    def save(self, path: Path) -> None:
        """Write genotype JSON to `path`."""
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: Path) -> "Genotype":
        """Read a genotype.json file."""
        path = Path(path)
        if not path.is_file():
            raise GenotypeError(f"genotype file '{path}' does not exist")
        return cls.from_json(path.read_text())

    # ------------------------------------------------------------------ graph

    def to_networkx(self) -> nx.DiGraph:
        """The architecture as a DiGraph: nodes are tensors, edges carry the op that computes them.

        darts: one subgraph per cell kind ('normal/...', 'reduce/...'), inputs 'c_k-2', 'c_k-1',
        nodes 'n0'.., output 'out' (concat edges have op 'concat'). chain: a path
        'input' -> 'stem' -> 'l0' -> ... -> 'classifier'.
        """
        g = nx.DiGraph(space=self.space, num_classes=self.num_classes, channels=self.channels)
        if self.space == "darts":
            assert self.normal is not None and self.reduce is not None
            for kind, cell in (("normal", self.normal), ("reduce", self.reduce)):
                names = [f"{kind}/c_k-2", f"{kind}/c_k-1"] + [f"{kind}/n{i}" for i in range(cell.nodes)]
                g.add_nodes_from(names)
                for i, edge in enumerate(cell.edges):
                    g.add_edge(names[edge.source], names[2 + i // 2], op=edge.op)
                for j in cell.concat:
                    g.add_edge(names[j], f"{kind}/out", op="concat")
        else:
            prev = "stem"
            g.add_edge("input", "stem", op="conv_bn_relu6", out_channels=self.channels, stride=1)
            for i, layer in enumerate(self.layers):
                g.add_edge(prev, f"l{i}", op=layer.op, out_channels=layer.out_channels, stride=layer.stride)
                prev = f"l{i}"
            g.add_edge(prev, "classifier", op="classifier", out_channels=self.num_classes, stride=1)
        return g

    def __str__(self) -> str:
        if self.space == "darts":
            assert self.normal is not None and self.reduce is not None
            def cell(c: CellGenotype) -> str:
                return ", ".join(f"{e.op}<-{e.source}" for e in c.edges) + f" | concat {list(c.concat)}"
            return (f"Genotype(darts, C={self.channels}, cells={self.cells}, "
                    f"normal=[{cell(self.normal)}], reduce=[{cell(self.reduce)}])")
        layers = ", ".join(f"{x.op}/{x.out_channels}/s{x.stride}" for x in self.layers)
        return f"Genotype(chain, stem={self.channels}, layers=[{layers}])"
