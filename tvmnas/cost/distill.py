"""DistilledCostModel: the surrogate turned into a differentiable cost for the search.

Two parts, both fitted to the XGBoost surrogate (not to measurements):
- a lookup table of exact surrogate cycles per LayerSpec (the layer lowered through TVM, each
  kernel call priced by the surrogate, summed), for the fixed shapes of a search space;
- a small MLP over continuous layer features (log2 channels in/out, log2 resolution, kernel,
  stride, expand, dilation, plus the op as a one-hot) predicting log cycles, so that the cost has
  gradients with respect to widths and resolution.
`layer_cost(spec)` returns the table value when the spec is tabulated (value exact, gradients
from the MLP), else the MLP. It implements tvmnas.search.cost.CostModel.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from tvmnas.cost.gzip_text import gzip_bytes, read_text, replace_bytes
from tvmnas.cost.surrogate import DATA_DIR, CostSurrogate, load_surrogate
from tvmnas.errors import CostModelError
from tvmnas.passes.kernel_features import FEATURE_NAMES
from tvmnas.search.cost import LayerCost, MacCostModel
from tvmnas.search.layer_spec import LayerSpec
from tvmnas.search.ops import CHAIN_PRIMITIVES, FIXED_OPS, PRIMITIVES, chain_op_shape

OPS_VOCAB: tuple[str, ...] = tuple(
    [p for p in PRIMITIVES if p not in ("none", "skip_connect")] + [p for p in CHAIN_PRIMITIVES if p != "skip"]
    + ["skip_connect"] + sorted(FIXED_OPS)
)
FREE_OPS = ("none", "skip")  # cost nothing (skip_connect at stride 2 is a factorized reduce and does)
CONTINUOUS = ("log2_c_in", "log2_c_out", "log2_h", "log2_w", "stride", "kernel", "expand", "dilation")
FORMAT = "tvmnas-distilled-cost"
FORMAT_VERSION = 1


def spec_kernel_features(spec: LayerSpec) -> list[dict[str, float]]:
    """Kernel features of every kernel call of the layer a spec describes, lowered alone through TVM."""
    from tvmnas.compiler import lower_model
    from tvmnas.frontend import import_model
    from tvmnas.passes import kernel_features
    from tvmnas.search.ops import build_layer

    torch.manual_seed(0)
    module = build_layer(spec).eval()
    lowered, graph = lower_model(import_model(module, (1, spec.c_in, spec.h, spec.w)))
    cache: dict[str, dict[str, float]] = {}
    out = []
    for call in graph.calls:
        if call.kernel not in cache:
            cache[call.kernel] = kernel_features(lowered[call.kernel])
        out.append(cache[call.kernel])
    return out


def continuous_features(c_in: torch.Tensor, c_out: torch.Tensor, h: torch.Tensor, w: torch.Tensor, stride: float,
                        kernel: float, expand: float, dilation: float) -> torch.Tensor:
    """The MLP's continuous inputs; channels and resolution may be float tensors with gradients."""
    def t(x) -> torch.Tensor:
        return x.float() if isinstance(x, torch.Tensor) else torch.tensor(float(x))

    return torch.stack([torch.log2(t(c_in)), torch.log2(t(c_out)), torch.log2(t(h)), torch.log2(t(w)),
                        t(stride), t(kernel), t(expand), t(dilation)])


class CostMLP(nn.Module):
    """log cycles from (op one-hot, normalised continuous layer features)."""

    def __init__(self, hidden: int = 64):
        super().__init__()
        self.register_buffer("mean", torch.zeros(len(CONTINUOUS)))
        self.register_buffer("std", torch.ones(len(CONTINUOUS)))
        self.register_buffer("y_mean", torch.zeros(()))
        self.register_buffer("y_std", torch.ones(()))
        self.net = nn.Sequential(
            nn.Linear(len(OPS_VOCAB) + len(CONTINUOUS), hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, op_index: torch.Tensor, cont: torch.Tensor) -> torch.Tensor:
        onehot = nn.functional.one_hot(op_index, len(OPS_VOCAB)).float()
        x = torch.cat([onehot, (cont - self.mean) / self.std], dim=-1)
        return self.net(x).squeeze(-1) * self.y_std + self.y_mean


def _spec_inputs(spec: LayerSpec) -> tuple[int, torch.Tensor]:
    kernel, expand = spec.kernel, spec.expand
    if spec.op in CHAIN_PRIMITIVES and spec.op != "skip":
        kernel, expand = chain_op_shape(spec.op)
    return OPS_VOCAB.index(spec.op), continuous_features(spec.c_in, spec.c_out, spec.h, spec.w, spec.stride,
                                                           kernel, expand, spec.dilation)


def _is_free(spec: LayerSpec) -> bool:
    return spec.op in FREE_OPS or (spec.op == "skip_connect" and spec.stride == 1)


class DistilledCostModel:
    """A CostModel (tvmnas.search.cost) pricing layers in surrogate-predicted cycles on one target."""

    unit = "estimated cycles (distilled surrogate)"

    def __init__(self, target: str, mlp: CostMLP, *, surrogate: CostSurrogate | None = None,
                 table: dict[LayerSpec, float] | None = None, exact: bool = False, digest: str = ""):
        self.target = target
        self.digest = digest  # of the file it was loaded from: tells two fits apart
        self.name = f"distilled:{target}"
        self.mlp = mlp.eval()
        self.surrogate = surrogate
        self.table: dict[LayerSpec, float] = dict(table or {})
        self.exact = exact
        self._counts = MacCostModel()

    # ------------------------------------------------------------------ pricing

    def mlp_cycles(self, op: str, c_in, c_out, h, w, *, stride: int = 1, kernel: int = 1, expand: int = 1,
                   dilation: int = 1) -> torch.Tensor:
        """MLP cycles; c_in, c_out, h, w may be float tensors (gradients flow to them)."""
        if op in CHAIN_PRIMITIVES and op != "skip":
            kernel, expand = chain_op_shape(op)
        cont = continuous_features(c_in, c_out, h, w, stride, kernel, expand, dilation)
        return torch.exp(self.mlp(torch.tensor(OPS_VOCAB.index(op)), cont))

    def tabulate(self, specs: Sequence[LayerSpec]) -> None:
        """Exact surrogate cycles for each spec (lowered through TVM once each) into the table."""
        if self.surrogate is None:
            raise CostModelError(f"{self.name}: tabulating exact costs needs the surrogate")
        for spec in dict.fromkeys(specs):
            if spec not in self.table and not _is_free(spec):
                self.table[spec] = float(np.sum(self.surrogate.predict(spec_kernel_features(spec))))

    def cycles(self, spec: LayerSpec) -> torch.Tensor:
        """Cycles of one layer: table value (MLP gradients) if tabulated, else the MLP."""
        if _is_free(spec):
            return torch.zeros(())
        if spec not in self.table and self.exact and self.surrogate is not None:
            self.tabulate([spec])
        op_index, cont = _spec_inputs(spec)
        mlp = torch.exp(self.mlp(torch.tensor(op_index), cont))
        if spec in self.table:
            return self.table[spec] * mlp / mlp.detach()
        return mlp

    def layer_cost(self, spec: LayerSpec) -> LayerCost:
        """Cycles as above; parameter and activation bytes counted exactly (float32)."""
        count = self._counts.count(spec)
        return LayerCost(
            cycles=self.cycles(spec),
            param_bytes=torch.tensor(float(count.params * 4)),
            act_bytes=torch.tensor(float(count.act_elems * 4)),
        )

    # ------------------------------------------------------------------ files

    def save(self, path: Path) -> None:
        """MLP weights, target and the exact table in one torch file (tensors and plain values only)."""
        torch.save({"format": FORMAT, "version": FORMAT_VERSION, "target": self.target, "ops": list(OPS_VOCAB),
                    "state": self.mlp.state_dict(),
                    "table": [[asdict(s), c] for s, c in sorted(self.table.items(), key=lambda kv: repr(kv[0]))]},
                   Path(path))

    @classmethod
    def load(cls, path: Path, *, surrogate: CostSurrogate | None = None, exact: bool = False) -> "DistilledCostModel":
        """Read a file written by save()."""
        path = Path(path)
        if not path.is_file():
            raise CostModelError(f"distilled cost file '{path}' does not exist")
        raw = path.read_bytes()  # read once: loaded and digested
        doc = torch.load(io.BytesIO(raw), weights_only=True)
        if doc.get("format") != FORMAT or doc.get("version") != FORMAT_VERSION or doc.get("ops") != list(OPS_VOCAB):
            raise CostModelError(f"'{path}' is not a {FORMAT} file of version {FORMAT_VERSION} with this op vocabulary")
        mlp = CostMLP()
        mlp.load_state_dict(doc["state"])
        table = {LayerSpec(**s): float(c) for s, c in doc["table"]}
        digest = hashlib.sha1(raw).hexdigest()[:12]
        return cls(doc["target"], mlp, surrogate=surrogate, table=table, exact=exact, digest=digest)

    @classmethod
    def shipped(cls, target: str, *, exact: bool = False) -> "DistilledCostModel":
        """The pre-distilled model for `target` from the package data (with its surrogate)."""
        path = DATA_DIR / f"distilled-{target}.pt"
        if not path.is_file():
            from tvmnas.board.user_targets import DISTILLED, user_file

            path = user_file(target, DISTILLED) or path
        if not path.is_file():
            raise CostModelError(f"no distilled cost model shipped for target {target}; run scripts/fit_cost_models.py")
        return cls.load(path, surrogate=load_surrogate(target), exact=exact)


# ---------------------------------------------------------------------- distillation set


def random_specs(count: int, seed: int) -> list[LayerSpec]:
    """Layer specs covering both spaces at MCU sizes (seeded): chain blocks, DARTS ops, fixed layers."""
    rng = random.Random(seed)
    widths = (4, 6, 8, 12, 16, 24, 32, 48)
    darts_ops = [p for p in PRIMITIVES if p not in ("none",)]
    chain_ops = [p for p in CHAIN_PRIMITIVES if p != "skip"]
    specs: list[LayerSpec] = []
    while len(specs) < count:
        hw = rng.choice((4, 8, 12, 16, 24, 32))
        stride = rng.choice((1, 1, 2))
        kind = rng.random()
        if kind < 0.45:
            op = rng.choice(chain_ops)
            k, e = chain_op_shape(op)
            spec = LayerSpec(op, rng.choice(widths), rng.choice(widths), hw, hw, stride, kernel=k, expand=e)
        elif kind < 0.85:
            op = rng.choice(darts_ops)
            c = rng.choice(widths[:6])
            k = 5 if "5x5" in op else 3
            if op == "skip_connect":
                stride, k = 2, 1
            spec = LayerSpec(op, c, c, hw, hw, stride, kernel=k, dilation=2 if op.startswith("dil") else 1)
        else:
            op = rng.choice(("conv_bn", "conv_bn_relu6", "relu_conv_bn"))
            k = rng.choice((1, 3))
            spec = LayerSpec(op, rng.choice((1, 3) + widths), rng.choice(widths), hw, hw, stride, kernel=k)
        if spec not in specs:
            specs.append(spec)
    return specs


def head_specs() -> list[LayerSpec]:
    """Classifier and factorized-reduce layers at a few sizes (random_specs does not draw them)."""
    out = [LayerSpec("classifier", c, 10, hw, hw) for c in (16, 64, 128) for hw in (1, 4, 8)]
    out += [LayerSpec("factorized_reduce", c, 2 * c, hw, hw, 2) for c in (8, 24) for hw in (8, 16, 32)]
    return out


def featurise_specs(specs: Sequence[LayerSpec], path: Path | None = None,
                    progress: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> list[dict[str, Any]]:
    """[{spec, kernels: [features per call]}] for each spec; cached in `path` (gzipped JSON) if given."""
    done: dict[str, dict[str, Any]] = {}
    if path is not None and Path(path).is_file():
        # entries lowered under another feature layout are lowered again
        done = {json.dumps(e["spec"], sort_keys=True): e for e in json.loads(read_text(path))
                if all(set(k) == set(FEATURE_NAMES) for k in e["kernels"])}
    out = []
    for i, spec in enumerate(specs):
        key = json.dumps(asdict(spec), sort_keys=True)
        if key not in done:
            done[key] = {"spec": asdict(spec), "kernels": spec_kernel_features(spec)}
            progress(f"[{i + 1}/{len(specs)}] lowered {spec}")
            if path is not None:
                replace_bytes(path, gzip_bytes(json.dumps(
                    sorted(done.values(), key=lambda e: json.dumps(e["spec"], sort_keys=True)),
                    sort_keys=True, separators=(",", ":"))))
        out.append(done[key])
    return out


def _r2(pred: np.ndarray, true: np.ndarray) -> float:
    return 1.0 - float(np.sum((pred - true) ** 2)) / max(float(np.sum((true - true.mean()) ** 2)), 1e-12)


def fit_mlp(specs: Sequence[LayerSpec], log_cycles: np.ndarray, *, steps: int = 1500, seed: int = 0) -> CostMLP:
    """Full-batch Adam on squared error of log cycles (seeded, deterministic on CPU)."""
    torch.manual_seed(seed)
    mlp = CostMLP()
    idx = torch.tensor([_spec_inputs(s)[0] for s in specs])
    cont = torch.stack([_spec_inputs(s)[1] for s in specs])
    y = torch.tensor(log_cycles, dtype=torch.float32)
    mlp.mean.copy_(cont.mean(0))
    mlp.std.copy_(cont.std(0).clamp_min(1e-3))
    mlp.y_mean.copy_(y.mean())
    mlp.y_std.copy_(y.std().clamp_min(1e-3))
    opt = torch.optim.Adam(mlp.parameters(), lr=3e-3, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.mean((mlp(idx, cont) - y) ** 2)
        loss.backward()
        opt.step()
        sched.step()
    return mlp.eval()


def distill(surrogate: CostSurrogate, featurised: Sequence[dict[str, Any]], *, holdout: float = 0.2,
            seed: int = 0) -> tuple[DistilledCostModel, dict[str, float]]:
    """Fit the MLP to the surrogate's layer cycles; report R^2 (log cycles) and Spearman on held-out specs.

    The returned model's table holds the surrogate's exact value for every featurised spec.
    """
    from scipy.stats import spearmanr

    specs = [LayerSpec(**e["spec"]) for e in featurised]
    cycles = np.array([float(np.sum(surrogate.predict(e["kernels"]))) for e in featurised])
    order = list(range(len(specs)))
    random.Random(seed).shuffle(order)
    n_test = max(1, int(len(specs) * holdout))
    test, train = order[:n_test], order[n_test:]
    mlp = fit_mlp([specs[i] for i in train], np.log(cycles[train]), seed=seed)
    model = DistilledCostModel(surrogate.target, mlp, surrogate=surrogate)
    with torch.no_grad():
        pred = np.array([float(model.mlp_cycles(specs[i].op, specs[i].c_in, specs[i].c_out, specs[i].h, specs[i].w,
                                                stride=specs[i].stride, kernel=specs[i].kernel,
                                                expand=specs[i].expand, dilation=specs[i].dilation)) for i in test])
    true = cycles[test]
    report = {"specs_train": len(train), "specs_test": len(test), "r2": _r2(np.log(pred), np.log(true)),
              "r2_linear": _r2(pred, true), "spearman": float(spearmanr(pred, true).statistic),
              "within_10pct": float(np.mean(np.abs(pred / true - 1) <= 0.10)),
              "within_20pct": float(np.mean(np.abs(pred / true - 1) <= 0.20))}
    model.table = {s: float(c) for s, c in zip(specs, cycles)}
    return model, report


__all__ = ["CostMLP", "DistilledCostModel", "distill", "featurise_specs", "fit_mlp", "head_specs", "random_specs",
           "spec_kernel_features"]
