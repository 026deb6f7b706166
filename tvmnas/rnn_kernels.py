"""Recurrent layer kernels (LSTM, GRU, Elman RNN) as TIR PrimFuncs that loop over time themselves.

One PrimFunc computes a whole layer, every direction and every time step, so the generated C
calls one function per layer instead of one kernel per step. The recurrent state lives in the
kernel's state outputs (`Hn`, `Cn`), which the arena planner places like any tensor; the gate
pre-activations of one step live in a scratch buffer the planner places too.

Layout (ONNX's, batch 1, which also covers PyTorch's: the batch axis of size 1 is dropped):
  X  (T, I)            the input sequence
  W  (D, G*H, I)       input weights per direction, gate blocks of H rows as `order` places them
  R  (D, G*H, H)       recurrent weights
  B  (D, 2*G*H)        input bias then recurrent bias
  H0 (D, H), C0 (D, H) initial hidden (and cell) state
  Y  (T, D*H)          the hidden state of every step, directions side by side
  Hn (D, H), Cn (D, H) the final states (for a reverse direction: after its step at t = 0)
G is 4 for LSTM, 3 for GRU, 1 for RNN. Equations as ONNX and PyTorch define them; the GRU applies
its reset gate after the recurrent product (PyTorch's only form, ONNX linear_before_reset=1) or to
the state before it (ONNX's default, linear_before_reset=0).
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import tirx
from tvm.script import tirx as T

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}

# Gate block order of the weights: (LSTM input, forget, cell, output) and (GRU reset, update, new)
TORCH_ORDER = {"lstm": (0, 1, 2, 3), "gru": (0, 1, 2), "rnn_tanh": (0,), "rnn_relu": (0,)}
ROW_TILE = 8  # gate rows per register tile of the matrix-vector products
ONNX_ORDER = {"lstm": (0, 2, 3, 1), "gru": (1, 0, 2), "rnn_tanh": (0,), "rnn_relu": (0,)}


@dataclass(frozen=True)
class RecurrentLayer:
    """What one recurrent kernel computes.

    kind: "lstm", "gru", "rnn_tanh" or "rnn_relu"; steps T, input_size I, hidden_size H;
    directions D (1 or 2); reverse: a single direction that runs from t = T-1 down to 0;
    order: where each gate's block of H rows sits in W, R and B (TORCH_ORDER or ONNX_ORDER);
    linear_before_reset (GRU): True applies the reset gate to R_n h + Rb_n (PyTorch, ONNX's 1),
    False to h before the product (ONNX's default 0).
    """

    kind: str
    steps: int
    input_size: int
    hidden_size: int
    directions: int = 1
    reverse: bool = False
    order: tuple[int, ...] = (0,)
    linear_before_reset: bool = True

    @property
    def gates(self) -> int:
        return GATES[self.kind]

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the gate matrix-vector products: T * D * G*H * (I + H)."""
        return self.steps * self.directions * self.gates * self.hidden_size * (self.input_size + self.hidden_size)


def recurrent_kernel(layer: RecurrentLayer) -> tirx.PrimFunc:
    """The PrimFunc of one layer (see the module docstring for its parameters)."""
    builders = {"lstm": _lstm, "gru": _gru, "rnn_tanh": _rnn, "rnn_relu": _rnn}
    func = builders[layer.kind](layer)
    # opaque: FuseOps leaves the kernel alone; the MCU schedules do not apply to it
    return func.with_attr("op_pattern", 8).with_attr("tvmnas.recurrent", layer.kind)


def _row_tile(rows: int) -> int:
    """Gate rows computed together: each input and state element is loaded once per tile."""
    return next(t for t in (ROW_TILE, 4, 2, 1) if rows % t == 0)


def _lstm(layer: RecurrentLayer) -> tirx.PrimFunc:
    n_t, n_i, n_h, n_d = layer.steps, layer.input_size, layer.hidden_size, layer.directions
    n_g = 4 * n_h
    rev0 = 1 if layer.reverse else 0
    tile = _row_tile(n_g)
    gi, gf, gc, go = (k * n_h for k in layer.order)

    @T.prim_func(private=True, check_well_formed=False)
    def lstm_layer(
        X: T.Buffer((n_t, n_i), "float32"),
        W: T.Buffer((n_d, n_g, n_i), "float32"),
        R: T.Buffer((n_d, n_g, n_h), "float32"),
        B: T.Buffer((n_d, 2 * n_g), "float32"),
        H0: T.Buffer((n_d, n_h), "float32"),
        C0: T.Buffer((n_d, n_h), "float32"),
        Y: T.Buffer((n_t, n_d * n_h), "float32"),
        Hn: T.Buffer((n_d, n_h), "float32"),
        Cn: T.Buffer((n_d, n_h), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            gates = T.alloc_buffer((n_g,), "float32")
            acc = T.alloc_buffer((tile,), "float32")
            for d in range(n_d):
                for j in range(n_h):
                    Hn[d, j] = H0[d, j]
                    Cn[d, j] = C0[d, j]
                for t in range(n_t):
                    for ro in range(n_g // tile):
                        for i in T.unroll(tile):
                            acc[i] = B[d, ro * tile + i] + B[d, n_g + ro * tile + i]
                        for k in range(n_i):
                            for i in T.unroll(tile):
                                acc[i] = acc[i] + W[d, ro * tile + i, k] * X[t + (d + rev0) * (n_t - 1 - 2 * t), k]
                        for k in range(n_h):
                            for i in T.unroll(tile):
                                acc[i] = acc[i] + R[d, ro * tile + i, k] * Hn[d, k]
                        for i in T.unroll(tile):
                            gates[ro * tile + i] = acc[i]
                    for j in range(n_h):
                        Cn[d, j] = T.sigmoid(gates[gf + j]) * Cn[d, j] + T.sigmoid(gates[gi + j]) * T.tanh(gates[gc + j])
                        Hn[d, j] = T.sigmoid(gates[go + j]) * T.tanh(Cn[d, j])
                        Y[t + (d + rev0) * (n_t - 1 - 2 * t), d * n_h + j] = Hn[d, j]

    return lstm_layer


def _gru(layer: RecurrentLayer) -> tirx.PrimFunc:
    n_t, n_i, n_h, n_d = layer.steps, layer.input_size, layer.hidden_size, layer.directions
    n_g = 3 * n_h
    rev0 = 1 if layer.reverse else 0
    gr, gz, gn = (k * n_h for k in layer.order)
    lbr = layer.linear_before_reset
    assert lbr or gn == 2 * n_h, "reset-before-linear needs the new-gate block last"
    tile = _row_tile(n_g) if lbr else _row_tile(n_h)
    n_rec = n_g if lbr else 2 * n_h  # recurrent rows computed from h itself

    @T.prim_func(private=True, check_well_formed=False)
    def gru_layer(
        X: T.Buffer((n_t, n_i), "float32"),
        W: T.Buffer((n_d, n_g, n_i), "float32"),
        R: T.Buffer((n_d, n_g, n_h), "float32"),
        B: T.Buffer((n_d, 2 * n_g), "float32"),
        H0: T.Buffer((n_d, n_h), "float32"),
        Y: T.Buffer((n_t, n_d * n_h), "float32"),
        Hn: T.Buffer((n_d, n_h), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            gx = T.alloc_buffer((n_g,), "float32")
            gh = T.alloc_buffer((n_g,), "float32")
            acc = T.alloc_buffer((tile,), "float32")
            for d in range(n_d):
                for j in range(n_h):
                    Hn[d, j] = H0[d, j]
                for t in range(n_t):
                    for ro in range(n_g // tile):
                        for i in T.unroll(tile):
                            acc[i] = B[d, ro * tile + i]
                        for k in range(n_i):
                            for i in T.unroll(tile):
                                acc[i] = acc[i] + W[d, ro * tile + i, k] * X[t + (d + rev0) * (n_t - 1 - 2 * t), k]
                        for i in T.unroll(tile):
                            gx[ro * tile + i] = acc[i]
                    for ro in range(n_rec // tile):
                        for i in T.unroll(tile):
                            acc[i] = B[d, n_g + ro * tile + i]
                        for k in range(n_h):
                            for i in T.unroll(tile):
                                acc[i] = acc[i] + R[d, ro * tile + i, k] * Hn[d, k]
                        for i in T.unroll(tile):
                            gh[ro * tile + i] = acc[i]
                    if lbr:
                        for j in range(n_h):
                            Hn[d, j] = (
                                T.float32(1) - T.sigmoid(gx[gz + j] + gh[gz + j])
                            ) * T.tanh(gx[gn + j] + T.sigmoid(gx[gr + j] + gh[gr + j]) * gh[gn + j]) + T.sigmoid(
                                gx[gz + j] + gh[gz + j]
                            ) * Hn[d, j]
                            Y[t + (d + rev0) * (n_t - 1 - 2 * t), d * n_h + j] = Hn[d, j]
                    else:
                        # the new gate's recurrent product takes r * h: r first, into gx's r block
                        for j in range(n_h):
                            gx[gr + j] = T.sigmoid(gx[gr + j] + gh[gr + j]) * Hn[d, j]
                        for ro in range(n_h // tile):
                            for i in T.unroll(tile):
                                acc[i] = B[d, n_g + gn + ro * tile + i]
                            for k in range(n_h):
                                for i in T.unroll(tile):
                                    acc[i] = acc[i] + R[d, gn + ro * tile + i, k] * gx[gr + k]
                            for i in T.unroll(tile):
                                gh[gn + ro * tile + i] = acc[i]
                        for j in range(n_h):
                            Hn[d, j] = (
                                T.float32(1) - T.sigmoid(gx[gz + j] + gh[gz + j])
                            ) * T.tanh(gx[gn + j] + gh[gn + j]) + T.sigmoid(gx[gz + j] + gh[gz + j]) * Hn[d, j]
                            Y[t + (d + rev0) * (n_t - 1 - 2 * t), d * n_h + j] = Hn[d, j]

    return gru_layer


def _rnn(layer: RecurrentLayer) -> tirx.PrimFunc:
    n_t, n_i, n_h, n_d = layer.steps, layer.input_size, layer.hidden_size, layer.directions
    rev0 = 1 if layer.reverse else 0
    tile = _row_tile(n_h)
    relu = layer.kind == "rnn_relu"

    @T.prim_func(private=True, check_well_formed=False)
    def rnn_layer(
        X: T.Buffer((n_t, n_i), "float32"),
        W: T.Buffer((n_d, n_h, n_i), "float32"),
        R: T.Buffer((n_d, n_h, n_h), "float32"),
        B: T.Buffer((n_d, 2 * n_h), "float32"),
        H0: T.Buffer((n_d, n_h), "float32"),
        Y: T.Buffer((n_t, n_d * n_h), "float32"),
        Hn: T.Buffer((n_d, n_h), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            gates = T.alloc_buffer((n_h,), "float32")
            acc = T.alloc_buffer((tile,), "float32")
            for d in range(n_d):
                for j in range(n_h):
                    Hn[d, j] = H0[d, j]
                for t in range(n_t):
                    for ro in range(n_h // tile):
                        for i in T.unroll(tile):
                            acc[i] = B[d, ro * tile + i] + B[d, n_h + ro * tile + i]
                        for k in range(n_i):
                            for i in T.unroll(tile):
                                acc[i] = acc[i] + W[d, ro * tile + i, k] * X[t + (d + rev0) * (n_t - 1 - 2 * t), k]
                        for k in range(n_h):
                            for i in T.unroll(tile):
                                acc[i] = acc[i] + R[d, ro * tile + i, k] * Hn[d, k]
                        for i in T.unroll(tile):
                            gates[ro * tile + i] = acc[i]
                    for j in range(n_h):
                        if relu:
                            Hn[d, j] = T.max(gates[j], T.float32(0))
                        else:
                            Hn[d, j] = T.tanh(gates[j])
                        Y[t + (d + rev0) * (n_t - 1 - 2 * t), d * n_h + j] = Hn[d, j]

    return rnn_layer
