"""LowerTIRForC: lower scheduled TIR PrimFuncs to flat loops that print as plain C."""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx


def LowerTIRForC() -> tvm.transform.Pass:  # noqa: N802  (TVM pass naming)
    """The lowering half of TVM's default s_tir pipeline, stopped before the packed API.

    Expects: PrimFuncs as LegalizeOps/FuseTIR (and optionally a schedule) leave them.
    Guarantees: blocks removed, buffers flattened to 1-D, int32 indices, loops simplified; no
    MakePackedAPI, no AnnotateEntryFunc, no LowerTVMBuiltin, so no runtime calls appear.
    Buffers the function needs internally stay as AllocBuffer statements (kernel scratch).
    """
    return tvm.transform.Sequential(
        [
            s_tir.transform.CanonicalizeLoop(),
            s_tir.transform.LowerCrossThreadReduction(),
            s_tir.transform.LowerInitBlock(),
            s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
            s_tir.transform.ConvertBlocksToOpaque(),
            s_tir.transform.CompactBufferAllocation(),
            s_tir.transform.LowerMatchBuffer(),
            s_tir.transform.StmtSimplify(),
            s_tir.transform.LowerOpaqueBlock(),
            tirx.transform.FlattenBuffer(),
            tirx.transform.NarrowDataType(32),
            s_tir.transform.LoopPartition(),
            tirx.transform.VectorizeLoop(False),
            tirx.transform.StorageRewrite(),
            tirx.transform.UnrollLoop(),
            tirx.transform.StmtSimplify(),
            tirx.transform.RemoveNoOp(),
            s_tir.transform.RewriteUnsafeSelect(),
            tirx.transform.CommonSubexprElim(),
        ],
        name="LowerTIRForC",
    )
