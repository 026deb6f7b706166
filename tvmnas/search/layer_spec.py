"""LayerSpec: the shape-level description of one candidate or fixed layer that a cost model prices."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayerSpec:
    """One layer as the cost model sees it: op name (a key of OPS, CHAIN_OPS or FIXED_OPS) and shapes.

    For DARTS ops c_in == c_out; for chain ops kernel/expand are read from the op name but kept
    here too so that a learned cost model gets them as plain features.
    """

    op: str
    c_in: int
    c_out: int
    h: int
    w: int
    stride: int = 1
    kernel: int = 1
    expand: int = 1
    dilation: int = 1

    @property
    def out_hw(self) -> tuple[int, int]:
        """Output height and width (stride rounds up, as the padded convs and pools do)."""
        return -(-self.h // self.stride), -(-self.w // self.stride)
