"""Small attention and token-mixing nets in timm's structure: a tiny ViT (CLS token first or last),
a MobileViT block net, a ConvNeXt block net, an MLP-Mixer and a CNN with attention pooling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvBnAct, InvertedResidual


class Attention(nn.Module):
    """Multi-head self-attention as timm writes it: one qkv linear, reshape and permute to heads,
    unbind, scaled q @ k^T, softmax, @ v, merge heads, projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        x = attn @ v
        x = x.transpose(1, 2).reshape(b, n, c)
        x = self.proj(x)
        return x


class Mlp(nn.Module):
    """Linear, GELU, linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        x = self.act(x)
        x = self.fc2(x)
        return x


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


class VisionTransformer(nn.Module):
    """Tiny ViT on 32x32: 8x8 patches (16 tokens), dim 64, 2 heads, 2 blocks, learned position
    embedding, a CLS token prepended (read back as x[:, 0]) or appended (read back as x[:, -1])."""

    def __init__(self, cls_last: bool = False, num_classes: int = 10, dim: int = 64, depth: int = 2,
                 patch: int = 8, img: int = 32) -> None:
        super().__init__()
        self.cls_last = cls_last
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, (img // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, 2) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((x, cls) if self.cls_last else (cls, x), dim=1)
        x = x + self.pos_embed
        x = self.blocks(x)
        x = self.norm(x)
        x = x[:, -1] if self.cls_last else x[:, 0]
        x = self.head(x)
        return x


def vit_cls_first() -> nn.Module:
    """Tiny ViT, CLS token prepended and read as x[:, 0]."""
    return VisionTransformer(cls_last=False)


def vit_cls_last() -> nn.Module:
    """Tiny ViT, CLS token appended and read as x[:, -1] (a negative index in a select)."""
    return VisionTransformer(cls_last=True)


class MobileViTBlock(nn.Module):
    """MobileViT block: local 3x3 + 1x1 convs, unfold into 2x2 patches, transformer over patches,
    fold back, 1x1 conv, concat with the input, 3x3 fusion conv (timm's MobileVitBlock)."""

    def __init__(self, c: int, dim: int, depth: int = 1, patch: int = 2) -> None:
        super().__init__()
        self.patch = patch
        self.conv_kxk = ConvBnAct(c, c, 3, act=nn.SiLU)
        self.conv_1x1 = nn.Conv2d(c, dim, 1, bias=False)
        self.transformer = nn.Sequential(*[Block(dim, 2) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.conv_proj = ConvBnAct(dim, c, 1, act=nn.SiLU)
        self.conv_fusion = ConvBnAct(2 * c, c, 3, act=nn.SiLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_kxk(x)
        x = self.conv_1x1(x)
        b, d, h, w = x.shape
        p = self.patch
        nh, nw = h // p, w // p
        # unfold: (b, d, nh*p, nw*p) -> (b*p*p, nh*nw, d)
        x = x.reshape(b * d * nh, p, nw, p).transpose(1, 2)
        x = x.reshape(b, d, nh * nw, p * p).transpose(1, 3).reshape(b * p * p, nh * nw, d)
        x = self.transformer(x)
        x = self.norm(x)
        # fold back
        x = x.contiguous().view(b, p * p, nh * nw, d).transpose(1, 3).reshape(b * d * nh, nw, p, p)
        x = x.transpose(1, 2).reshape(b, d, nh * p, nw * p)
        x = self.conv_proj(x)
        x = self.conv_fusion(torch.cat((shortcut, x), dim=1))
        return x


class MobileViT(nn.Module):
    """MobileViT-XXS-like net on 64x64: stem, MV2 blocks, two MobileViT blocks, 1x1 conv, pool, linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = ConvBnAct(3, 16, 3, 2, act=nn.SiLU)
        self.stages = nn.Sequential(
            InvertedResidual(16, 16, 3, 1, 2, nn.SiLU),
            InvertedResidual(16, 24, 3, 2, 2, nn.SiLU),
            InvertedResidual(24, 32, 3, 2, 2, nn.SiLU),
            MobileViTBlock(32, 48),
            InvertedResidual(32, 48, 3, 2, 2, nn.SiLU),
            MobileViTBlock(48, 64),
        )
        self.final_conv = ConvBnAct(48, 192, 1, act=nn.SiLU)
        self.fc = nn.Linear(192, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.stages(x)
        x = self.final_conv(x)
        x = x.mean((2, 3))
        x = self.fc(x)
        return x


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of an NCHW tensor (permute, normalise, permute back; timm's LayerNorm2d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7, channels-last LayerNorm, 4x linear, GELU, linear, layer scale, residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.gamma = nn.Parameter(torch.rand(dim) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_dw(x)
        x = x.permute(0, 2, 3, 1)
        x = self.norm(x)
        x = self.mlp(x)
        x = x * self.gamma
        x = x.permute(0, 3, 1, 2)
        return x + shortcut


class ConvNeXt(nn.Module):
    """ConvNeXt-style net on 32x32: 4x4 stride-4 stem + LayerNorm2d, stages 16-32-64 of one block with
    LayerNorm2d + 2x2 stride-2 downsampling, global pool, LayerNorm, linear."""

    def __init__(self, num_classes: int = 10, dims=(16, 32, 64)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6))
        stages = []
        for i, d in enumerate(dims):
            if i:
                stages += [LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], d, 2, 2)]
            stages.append(ConvNeXtBlock(d))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.fc = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.stages(x)
        x = x.mean((2, 3))
        x = self.norm(x)
        x = self.fc(x)
        return x


class MixerBlock(nn.Module):
    """MLP-Mixer block: token-mixing MLP across the transposed token axis, then channel-mixing MLP."""

    def __init__(self, tokens: int, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mlp_tokens = Mlp(tokens, 2 * tokens)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp_channels = Mlp(dim, 2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mlp_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        x = x + self.mlp_channels(self.norm2(x))
        return x


class MlpMixer(nn.Module):
    """MLP-Mixer on 32x32: 4x4 patches (64 tokens), dim 32, two mixer blocks, LayerNorm, token mean, linear."""

    def __init__(self, num_classes: int = 10, dim: int = 32, patch: int = 4, img: int = 32) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, patch, patch)
        tokens = (img // patch) ** 2
        self.blocks = nn.Sequential(MixerBlock(tokens, dim), MixerBlock(tokens, dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).flatten(2).transpose(1, 2)
        x = self.blocks(x)
        x = self.norm(x)
        x = x.mean(dim=1)
        x = self.head(x)
        return x


class AttentionPoolNet(nn.Module):
    """CNN with attention pooling instead of average pooling: a learned query scores each spatial
    token (softmax over positions) and the tokens are summed with those weights, then a linear layer."""

    def __init__(self, num_classes: int = 10, dim: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(ConvBnAct(3, 16, 3, 2), ConvBnAct(16, dim, 3, 2), ConvBnAct(dim, dim, 3))
        self.key = nn.Linear(dim, dim)
        self.query = nn.Parameter(torch.randn(dim) * dim ** -0.5)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        tokens = x.flatten(2).transpose(1, 2)  # (b, hw, dim)
        scores = self.key(tokens) @ self.query  # (b, hw)
        weights = scores.softmax(dim=1).unsqueeze(-1)
        pooled = (weights * tokens).sum(dim=1)
        x = self.fc(pooled)
        return x
