"""TVM passes and analyses for microcontroller deployment, usable in any TVM 0.27 flow."""

from .call_graph import CallGraph, KernelCall, TensorInfo, extract_call_graph
from .fold_batch_norm import FoldBatchNorm
from .lower_tir import LowerTIRForC
from .mcu_pipeline import MCULowering
from .mcu_schedule import ScheduleForMCU
from .split_to_slices import SplitToSlices
from .wrap_negative_indices import WrapNegativeIndices
from .plan_arena import (ArenaBuffer, ArenaPlan, graph_buffers, in_place_aliases, lower_bound, plan_arena,
                         stock_storage_bytes)
from .kernel_features import FEATURE_NAMES, extract_kernel_features, feature_vector, kernel_features, kernel_hash, kernel_macs
from .annotate_cost import AnnotateCost, predicted_cycles
from .memory_estimate import EstimateMemory, MemoryEstimate, estimate_memory

__all__ = [
    "AnnotateCost",
    "EstimateMemory",
    "FEATURE_NAMES",
    "MemoryEstimate",
    "estimate_memory",
    "predicted_cycles",
    "extract_kernel_features",
    "feature_vector",
    "kernel_features",
    "kernel_hash",
    "kernel_macs",
    "ArenaBuffer",
    "ArenaPlan",
    "CallGraph",
    "FoldBatchNorm",
    "KernelCall",
    "LowerTIRForC",
    "MCULowering",
    "SplitToSlices",
    "ScheduleForMCU",
    "TensorInfo",
    "WrapNegativeIndices",
    "extract_call_graph",
    "graph_buffers",
    "in_place_aliases",
    "lower_bound",
    "plan_arena",
    "stock_storage_bytes",
]
from .share_weights import ReadSharedWeights, SharedWeightLayout, StridedWeightView, WeightView, share_weights  # noqa: E402

__all__ += ["ReadSharedWeights", "SharedWeightLayout", "StridedWeightView", "WeightView", "share_weights"]
from .quantize_to_integer import QuantizeToInteger, QuantParams, io_quantization  # noqa: E402

__all__ += ["QuantizeToInteger", "QuantParams", "io_quantization"]
from .int8_simd import SIMD_C, UseSIMDKernels, uses_simd  # noqa: E402

__all__ += ["SIMD_C", "UseSIMDKernels", "uses_simd"]
from .in_place import AnnotateInPlace, in_place_pairs  # noqa: E402

__all__ += ["AnnotateInPlace", "in_place_pairs"]
