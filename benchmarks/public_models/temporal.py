"""1-D temporal nets and recurrent keyword-spotting models: a causal TCN (F.pad, classify from the
last step x[:, :, -1]), a 1-D CNN for activity recognition, TC-ResNet for keyword spotting, a
WaveNet-style gated dilated stack, and GRU / LSTM / bidirectional-GRU keyword models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TemporalBlock(nn.Module):
    """TCN residual block: two causal dilated convs (left padding with F.pad), ReLU, 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, dilation=dilation)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, dilation=dilation)
        self.downsample = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x)
        x = torch.relu(self.conv1(F.pad(x, (self.pad, 0))))
        x = torch.relu(self.conv2(F.pad(x, (self.pad, 0))))
        return torch.relu(x + shortcut)


class TCN(nn.Module):
    """Causal TCN on 4 channels x 64 steps: four blocks with dilations 1-2-4-8, linear on the last step."""

    def __init__(self, c_in: int = 4, width: int = 16, classes: int = 5) -> None:
        super().__init__()
        self.blocks = nn.Sequential(TemporalBlock(c_in, width, 3, 1), TemporalBlock(width, width, 3, 2),
                                    TemporalBlock(width, width, 3, 4), TemporalBlock(width, width, 3, 8))
        self.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(x)
        return self.fc(x[:, :, -1])


class HarCnn1d(nn.Module):
    """1-D CNN for human activity recognition on 3-axis accelerometer windows (3 x 128): three
    conv-BN-ReLU-maxpool stages, global average pool, linear to 6 activities."""

    def __init__(self, classes: int = 6) -> None:
        super().__init__()
        layers, c = [], 3
        for w in (16, 32, 64):
            layers += [nn.Conv1d(c, w, 5, padding=2, bias=False), nn.BatchNorm1d(w), nn.ReLU(), nn.MaxPool1d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.pool(x).flatten(1)
        return self.fc(x)


class TcResBlock(nn.Module):
    """TC-ResNet block: two temporal 9-tap convs with BN (the first strided), 1x1 strided shortcut, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_out, 9, stride, 4, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, 9, 1, 4, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.shortcut = nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm1d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return torch.relu(x + shortcut)


class TcResNet8(nn.Module):
    """TC-ResNet8 keyword spotting on 40 MFCC channels x 49 frames (frequency as channels): 3-tap stem,
    three residual blocks 24-32-48, global average pool, linear to 12 keywords."""

    def __init__(self, n_mfcc: int = 40, classes: int = 12) -> None:
        super().__init__()
        self.stem = nn.Conv1d(n_mfcc, 16, 3, padding=1, bias=False)
        self.blocks = nn.Sequential(TcResBlock(16, 24, 2), TcResBlock(24, 32, 2), TcResBlock(32, 48, 2))
        self.fc = nn.Linear(48, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.blocks(x)
        x = x.mean(dim=2)
        return self.fc(x)


class WaveNetBlock(nn.Module):
    """Gated dilated causal conv (tanh x sigmoid), 1x1 residual and 1x1 skip outputs."""

    def __init__(self, c: int, dilation: int) -> None:
        super().__init__()
        self.pad = dilation
        self.filter = nn.Conv1d(c, c, 2, dilation=dilation)
        self.gate = nn.Conv1d(c, c, 2, dilation=dilation)
        self.res = nn.Conv1d(c, c, 1)
        self.skip = nn.Conv1d(c, c, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.pad(x, (self.pad, 0))
        h = torch.tanh(self.filter(h)) * torch.sigmoid(self.gate(h))
        return x + self.res(h), self.skip(h)


class WaveNet(nn.Module):
    """WaveNet-style classifier on 1 x 128 samples: 1x1 input conv, gated blocks with dilations 1..16,
    summed skips, ReLU, 1x1 conv, mean over time, linear."""

    def __init__(self, c: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.inp = nn.Conv1d(1, c, 1)
        self.blocks = nn.ModuleList([WaveNetBlock(c, d) for d in (1, 2, 4, 8, 16)])
        self.post = nn.Conv1d(c, c, 1)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        skips = 0
        for block in self.blocks:
            x, s = block(x)
            skips = skips + s
        x = self.post(torch.relu(skips))
        return self.fc(x.mean(dim=2))


class RecurrentKws(nn.Module):
    """Recurrent keyword spotter on 49 frames x 10 MFCC (batch first): one recurrent layer, linear on
    the last time step's output."""

    def __init__(self, cell: str = "gru", hidden: int = 32, bidirectional: bool = False, n_in: int = 10,
                 classes: int = 12) -> None:
        super().__init__()
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.rnn = rnn(n_in, hidden, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.rnn(x)
        return self.fc(x[:, -1])


def kws_gru() -> nn.Module:
    """GRU keyword spotter (49x10 MFCC, hidden 32)."""
    return RecurrentKws("gru")


def kws_lstm() -> nn.Module:
    """LSTM keyword spotter (49x10 MFCC, hidden 32)."""
    return RecurrentKws("lstm")


def har_bigru() -> nn.Module:
    """Bidirectional GRU activity recogniser on 64 steps x 6 IMU channels (hidden 16)."""
    return RecurrentKws("gru", hidden=16, bidirectional=True, n_in=6, classes=6)
