"""Fake quantization for quantization-aware training, with the scheme of tvmnas.quant.quantize.

Forward, each function gives the value the int8 deployment holds (on the quantization grid);
backward, the straight-through estimator (gradient 1 inside the representable range, 0 outside for
activations; 1 for weights and biases). Scales are not learned: an activation's come from its
tracked (min, max) range through :func:`tvmnas.quant.quantize.activation_qparams`, a weight's from
its per-channel ``max|w| / 127``, a bias's from ``input_scale * weight_scale[c]``, so QAT and
post-training quantization choose scales and zero points one way.

Rounding as the int8 path rounds: activations as ONNX QuantizeLinear (half to even: torch.round),
weights and biases as TFLite (half away from zero).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tvmnas.quant.quantize import activation_qparams


def round_away(x: torch.Tensor) -> torch.Tensor:
    """Round halves away from zero (``TfLiteRound``), as the quantizer rounds weights and biases."""
    return torch.sign(x) * torch.floor(torch.abs(x) + 0.5)


def fake_quant_activation(x: torch.Tensor, scale: float, zero_point: int,
                          clamp: tuple[int, int] = (-128, 127)) -> torch.Tensor:
    """``scale * (clip(round(x / scale) + zp, clamp) - zp)``; gradient 1 inside the clamp, 0 outside."""
    lo, hi = (clamp[0] - zero_point) * scale, (clamp[1] - zero_point) * scale
    inside = torch.clamp(x, lo, hi)
    q = torch.clamp(torch.round(x / scale) + zero_point, clamp[0], clamp[1])
    return inside + ((q - zero_point) * scale - inside).detach()


def weight_scale(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel (axis 0) symmetric scales ``max|w[c]| / 127`` (1 for an all-zero channel)."""
    amax = w.detach().abs().reshape(w.shape[0], -1).amax(dim=1)
    return torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """Per-channel symmetric int8 weights in [-127, 127], dequantized; straight-through gradient."""
    scale = weight_scale(w).reshape(-1, *([1] * (w.dim() - 1)))
    q = torch.clamp(round_away(w / scale), -127, 127)
    return w + (q * scale - w).detach()


def fake_quant_bias(b: torch.Tensor, in_scale: float, w_scale: torch.Tensor) -> torch.Tensor:
    """The int32 bias (scale ``in_scale * w_scale[c]``, zero point 0), dequantized; straight-through."""
    scale = (in_scale * w_scale).detach()
    return b + (round_away(b / scale) * scale - b).detach()


class ActivationQuant(nn.Module):
    """One int8 activation tensor: its (min, max) range and the fake quantization it implies.

    `observe` (a state, not a setting): 'calibrate' widens the range to every value seen (the
    post-training choice, used to start QAT from a trained float network), 'ema' moves it towards
    each training batch's range by `momentum`, 'frozen' keeps it. `enabled` False passes values
    through unquantized (calibration runs the float network).
    """

    def __init__(self, momentum: float = 0.01) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("lo", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("hi", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("seen", torch.tensor(False))
        self.observe = "ema"
        self.enabled = True

    def range(self) -> tuple[float, float]:
        """The tracked (min, max), as the quantizer's `ranges` take them."""
        return float(self.lo), float(self.hi)

    def qparams(self) -> tuple[np.float32, int]:
        """(scale, zero point) of the tracked range, by the quantizer's own rule."""
        return activation_qparams(*self.range())

    def update(self, x: torch.Tensor) -> None:
        """Track x's range according to `observe` (training batches and calibration only)."""
        lo, hi = float(x.detach().min()), float(x.detach().max())
        if self.observe == "frozen":
            return
        if not bool(self.seen):
            self.lo.fill_(lo)
            self.hi.fill_(hi)
            self.seen.fill_(True)
        elif self.observe == "calibrate":
            self.lo.fill_(min(float(self.lo), lo))
            self.hi.fill_(max(float(self.hi), hi))
        else:
            self.lo.add_(self.momentum * (lo - float(self.lo)))
            self.hi.add_(self.momentum * (hi - float(self.hi)))

    def forward(self, x: torch.Tensor, clamp: tuple[int, int] | None = None) -> torch.Tensor:
        """x fake-quantized with this tensor's parameters (tracking its range first when training or
        calibrating); `clamp` narrows the int8 range (a fused ReLU / ReLU6)."""
        if self.training or self.observe == "calibrate":
            self.update(x)
        if not self.enabled:
            return x
        scale, zp = self.qparams()
        return fake_quant_activation(x, float(scale), zp, clamp or (-128, 127))
