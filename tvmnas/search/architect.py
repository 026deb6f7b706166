"""The architecture step of the bilevel optimisation: alphas descend the validation loss plus the
weighted hardware cost, first-order (default) or through one unrolled weight step (second order)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from tvmnas.search.cost import CostTerm


@dataclass(frozen=True)
class ArchStep:
    """Figures of one architecture step."""

    loss: float
    cross_entropy: float
    cost: float
    penalty: float


class Architect:
    """Owns the alpha optimiser (Adam, as in DARTS) and computes the architecture gradient.

    loss = CE(val) + cost_weight * normalised expected cost + budget hinge penalty.
    second_order: the DARTS unrolled gradient, differentiating CE(val) through
    w' = w - unrolled_lr * grad_w CE(train) exactly (double backward) instead of finite differences.
    """

    def __init__(self, model: nn.Module, cost_term: CostTerm, *, cost_weight: float, lr: float = 3e-3,
                 weight_decay: float = 1e-3, second_order: bool = False, unrolled_lr: float = 0.05):
        self.model = model
        self.cost_term = cost_term
        self.cost_weight = cost_weight
        self.second_order = second_order
        self.unrolled_lr = unrolled_lr
        self.optimizer = torch.optim.Adam(
            list(model.arch_parameters().values()), lr=lr, betas=(0.5, 0.999), weight_decay=weight_decay
        )

    def step(self, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor,
             y_val: torch.Tensor) -> ArchStep:
        """One Adam step on the alphas; weight gradients it leaves behind are cleared."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.second_order:
            logits = self._unrolled_logits(x_train, y_train, x_val)
        else:
            logits = self.model(x_val)
        ce = F.cross_entropy(logits, y_val)
        cost, penalty = self.cost_term.loss(self.model.arch_logits())
        loss = ce + self.cost_weight * cost + penalty
        loss.backward()
        self.optimizer.step()
        for p in self.model.weight_parameters():
            p.grad = None
        return ArchStep(*(float(t.detach()) for t in (loss, ce, cost, penalty)))

    def _unrolled_logits(self, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor) -> torch.Tensor:
        names = [n for n, _ in self.model.named_parameters() if not n.startswith("alpha_")]
        params = dict(self.model.named_parameters())
        weights = {n: params[n] for n in names}
        train_loss = F.cross_entropy(functional_call(self.model, weights, (x_train,)), y_train)
        grads = torch.autograd.grad(train_loss, list(weights.values()), create_graph=True, allow_unused=True)
        unrolled = {
            n: (w if g is None else w - self.unrolled_lr * g) for (n, w), g in zip(weights.items(), grads)
        }
        return functional_call(self.model, unrolled, (x_val,))
