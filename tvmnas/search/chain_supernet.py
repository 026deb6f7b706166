"""The chain supernet: stem -> inverted-residual layers, each a weighted choice of kernel 3/5/7 x
expand 1/3/6 (or 'skip' where the shape is unchanged) -> optional 1x1 head -> classifier."""

from __future__ import annotations

import torch
from torch import nn

from tvmnas.search.cost import CostSlot
from tvmnas.search.genotype import ChainLayer, Genotype
from tvmnas.search.layer_spec import LayerSpec
from tvmnas.search.ops import CHAIN_OPS, CHAIN_PRIMITIVES, Classifier, ConvBN, chain_op_shape
from tvmnas.search.sampling import MASKED_LOGIT, mixing_weights

# (out_channels, stride) per layer before the width multiplier: small enough for 8x8 digits
DEFAULT_CHAIN_LAYERS: tuple[tuple[int, int], ...] = ((8, 1), (16, 2), (16, 1), (16, 1))


def scale_channels(channels: int, width_mult: float) -> int:
    """Channels times the width multiplier, rounded, at least 1."""
    return max(1, int(round(channels * width_mult)))


class ChoiceLayer(nn.Module):
    """All allowed candidates of one chain layer, mixed by one row of weights."""

    def __init__(self, c_in: int, c_out: int, stride: int, allowed: list[str]):
        super().__init__()
        self.allowed = allowed
        self.index = [CHAIN_PRIMITIVES.index(name) for name in allowed]
        self.ops = nn.ModuleList(CHAIN_OPS[name](c_in, c_out, stride) for name in allowed)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(weights[i] * op(x) for i, op in zip(self.index, self.ops))


class ChainSupernet(nn.Module):
    """Single-path MCU space. Layers that change shape are not skippable; alpha 'layers' has one row per layer."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, *,
                 layers: tuple[tuple[int, int], ...] = DEFAULT_CHAIN_LAYERS, stem_channels: int = 8,
                 width_mult: float = 1.0, head_channels: int = 0, gumbel: bool = False, tau: float = 1.0):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.gumbel = gumbel
        self.tau = tau
        c_in, h, w = input_shape
        c = scale_channels(stem_channels, width_mult)
        self.stem_channels = c
        self.stem = ConvBN(c_in, c, 3, act=True)
        self._slots: list[CostSlot] = [CostSlot((LayerSpec("conv_bn_relu6", c_in, c, h, w, 1, kernel=3),))]
        self.plan: list[tuple[int, int]] = []
        mask = torch.zeros(len(layers), len(CHAIN_PRIMITIVES))
        self.choices = nn.ModuleList()
        for row, (c_out_base, stride) in enumerate(layers):
            c_out = scale_channels(c_out_base, width_mult)
            allowed = [n for n in CHAIN_PRIMITIVES if n != "skip" or (stride == 1 and c == c_out)]
            for k, name in enumerate(CHAIN_PRIMITIVES):
                if name not in allowed:
                    mask[row, k] = MASKED_LOGIT
            self.choices.append(ChoiceLayer(c, c_out, stride, allowed))
            specs = tuple(
                LayerSpec(name, c, c_out, h, w, stride, kernel=chain_op_shape(name)[0], expand=chain_op_shape(name)[1])
                for name in CHAIN_PRIMITIVES
            )
            self._slots.append(CostSlot(specs, "layers", row))
            self.plan.append((c_out, stride))
            c, h, w = c_out, -(-h // stride), -(-w // stride)
        self.head_channels = head_channels
        if head_channels:
            self.head: nn.Module = ConvBN(c, head_channels, 1, act=True)
            self._slots.append(CostSlot((LayerSpec("conv_bn_relu6", c, head_channels, h, w, 1, kernel=1),)))
            c = head_channels
        else:
            self.head = nn.Identity()
        self.classifier = Classifier(c, num_classes)
        self._slots.append(CostSlot((LayerSpec("classifier", c, num_classes, h, w),)))
        self.register_buffer("alpha_mask", mask)
        self.alpha_layers = nn.Parameter(1e-3 * torch.randn(len(layers), len(CHAIN_PRIMITIVES)))

    def arch_parameters(self) -> dict[str, nn.Parameter]:
        """The architecture parameters by name."""
        return {"layers": self.alpha_layers}

    def arch_logits(self) -> dict[str, torch.Tensor]:
        """Alphas with disallowed candidates masked out."""
        return {"layers": self.alpha_layers + self.alpha_mask}

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the alphas."""
        return [p for n, p in self.named_parameters() if not n.startswith("alpha_")]

    def cost_slots(self) -> list[CostSlot]:
        """The network as cost slots, in execution order."""
        return list(self._slots)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = mixing_weights(self.arch_logits()["layers"], gumbel=self.gumbel, tau=self.tau,
                                 training=self.training)
        x = self.stem(x)
        for row, layer in enumerate(self.choices):
            x = layer(x, weights[row])
        x = self.head(x)
        return self.classifier(x)

    def derive(self) -> tuple[Genotype, dict[str, dict[int, int]]]:
        """Per layer the candidate with the largest weight; returns the genotype and the choices."""
        logits = self.arch_logits()["layers"].detach()
        chosen = {row: int(torch.argmax(logits[row])) for row in range(logits.shape[0])}
        layers = tuple(
            ChainLayer(CHAIN_PRIMITIVES[k], c_out, stride)
            for (row, k), (c_out, stride) in zip(sorted(chosen.items()), self.plan)
        )
        genotype = Genotype(
            space="chain",
            input_shape=self.input_shape,  # type: ignore[arg-type]
            num_classes=self.num_classes,
            channels=self.stem_channels,
            layers=layers,
            head_channels=self.head_channels,
        )
        return genotype, {"layers": chosen}
