"""MCULowering: the Relax pass sequence that turns an imported network into fused TIR kernels."""

from __future__ import annotations

import tvm
from tvm import relax

from .fold_batch_norm import FoldBatchNorm
from .split_to_slices import SplitToSlices


def MCULowering() -> tvm.transform.Pass:  # noqa: N802  (TVM pass naming)
    """Fold constants and BatchNorm, legalize every operator to TIR, and fuse.

    Expects: a Relax module with bound constant weights (from `from_exported_program` or
    `from_onnx`), static shapes, float32.
    Guarantees: `main` holds only `call_tir` bindings to PrimFuncs (one per fused kernel) and the
    output tuple; operators LegalizeOps cannot lower stay as Relax calls (the caller reports them).
    """
    return tvm.transform.Sequential(
        [
            relax.transform.FoldConstant(),
            FoldBatchNorm(),
            SplitToSlices(),
            relax.transform.DecomposeOpsForInference(),
            relax.transform.FoldConstant(),
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
            relax.transform.DeadCodeElimination(),
        ],
        name="MCULowering",
    )
