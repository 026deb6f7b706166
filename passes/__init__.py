"""TVM passes and analyses for microcontroller deployment, usable in any TVM 0.27 flow."""

from .call_graph import CallGraph, KernelCall, TensorInfo, extract_call_graph
from .fold_batch_norm import FoldBatchNorm
from .lower_tir import LowerTIRForC
from .mcu_pipeline import MCULowering
from .split_to_slices import SplitToSlices
from .plan_arena import ArenaBuffer, ArenaPlan, lower_bound, plan_arena

__all__ = [
    "ArenaBuffer",
    "ArenaPlan",
    "CallGraph",
    "FoldBatchNorm",
    "KernelCall",
    "LowerTIRForC",
    "MCULowering",
    "SplitToSlices",
    "TensorInfo",
    "extract_call_graph",
    "lower_bound",
    "plan_arena",
]
