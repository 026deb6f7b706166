"""Recurrent keyword-spotting networks (LSTM, GRU, RNN) of the test zoo, with seeded weights.

Each takes one MFCC-like input of 1 x steps x features, runs a recurrent stack and classifies from
the last step: from the output sequence at index steps-1 (a positive index) or from the returned
final hidden state, so both importer paths (sequence and h_n) are exercised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tvmnas.rnn_kernels import RecurrentLayer

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class RecurrentKWS(nn.Module):
    """recurrent stack -> last step -> dense classifier."""

    def __init__(self, cell: str, steps: int, features: int, hidden: int, classes: int = 12, *,
                 layers: int = 1, bidirectional: bool = False, batch_first: bool = True,
                 head: str = "sequence") -> None:
        super().__init__()
        self.steps = steps
        self.batch_first = batch_first
        self.head = head
        self.rnn = CELLS[cell](features, hidden, num_layers=layers, bidirectional=bidirectional,
                               batch_first=batch_first)
        directions = 2 if bidirectional else 1
        self.last_state = layers * directions - 1  # h_n row of the top layer's last direction
        self.classifier = nn.Linear(hidden * (directions if head == "sequence" else 1), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = x if self.batch_first else x.transpose(0, 1)
        y, state = self.rnn(seq)
        if self.head == "state":
            h_n = state[0] if isinstance(state, tuple) else state
            return self.classifier(h_n[self.last_state])
        last = y[:, self.steps - 1, :] if self.batch_first else y[self.steps - 1]
        return self.classifier(last)


@dataclass(frozen=True)
class RecurrentEntry:
    """One named network: its constructor arguments and input shape."""

    name: str
    cell: str
    hidden: int
    layers: int = 1
    bidirectional: bool = False
    batch_first: bool = True
    head: str = "sequence"
    steps: int = 49
    features: int = 10

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, self.steps, self.features)

    def build(self, seed: int = 0) -> RecurrentKWS:
        """The eval-mode network with weights drawn from `seed`."""
        torch.manual_seed(seed)
        return RecurrentKWS(self.cell, self.steps, self.features, self.hidden, layers=self.layers,
                            bidirectional=self.bidirectional, batch_first=self.batch_first,
                            head=self.head).eval()

    def sample_input(self, seed: int = 0) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(self.input_shape, generator=gen, dtype=torch.float32)

    def recurrent_macs(self) -> int:
        """MACs of the gate matrix-vector products: per layer T * D * G*H * (I + H) (see rnn_kernels)."""
        kind = {"lstm": "lstm", "gru": "gru", "rnn": "rnn_tanh"}[self.cell]
        d = 2 if self.bidirectional else 1
        inputs = [self.features] + [d * self.hidden] * (self.layers - 1)
        return sum(RecurrentLayer(kind, self.steps, i, self.hidden, d).macs for i in inputs)


KWS_MODELS = {
    e.name: e
    for e in (
        RecurrentEntry("lstm_kws", "lstm", 64),
        RecurrentEntry("gru_kws", "gru", 64, head="state"),
        RecurrentEntry("bilstm_kws", "lstm", 64, bidirectional=True),
        RecurrentEntry("gru2_kws", "gru", 64, layers=2, batch_first=False),
    )
}
