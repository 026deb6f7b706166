"""How architecture logits become mixing weights: softmax, or Gumbel-softmax samples in training."""

from __future__ import annotations

import torch
import torch.nn.functional as F

MASKED_LOGIT = -1.0e4  # added to logits of candidates a slot does not allow; softmax gives exactly 0


def mixing_weights(logits: torch.Tensor, *, gumbel: bool, tau: float, training: bool) -> torch.Tensor:
    """Rows of weights summing to 1: Gumbel-softmax(tau) when gumbel and training, else softmax."""
    if gumbel and training:
        return F.gumbel_softmax(logits, tau=tau, hard=False, dim=-1)
    return torch.softmax(logits, dim=-1)
