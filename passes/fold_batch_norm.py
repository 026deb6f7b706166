"""FoldBatchNorm: fold inference BatchNorm into the convolution that feeds it."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, is_tuple_get_item, rewrite_call, wildcard

from .module_update import replace_functions


def _array(const) -> np.ndarray:
    return const.value.numpy()


@tvm.transform.module_pass(opt_level=0, name="FoldBatchNorm")
class FoldBatchNorm:
    """Fold `batch_norm(conv2d(x, W) [+ b])[0]` into `conv2d(x, W') + b'` with new constants.

    Expects: a Relax module whose weights are bound constants (as `from_exported_program` and
    `from_onnx` produce) and on which `FoldConstant` has run, so a bias reshape is a constant.
    Matches the shape torch.export produces (conv2d -> add(bias) -> batch_norm -> [0]) and the
    bias-free one (conv2d -> batch_norm -> [0]); NCHW data, OIHW kernels, any groups.
    Guarantees: every matched BatchNorm is gone; W' = W * gamma / sqrt(var + eps) per output
    channel and b' = (b - mean) * gamma / sqrt(var + eps) + beta, computed in float64 and stored
    as float32. Anything else (BN after a non-conv, non-constant statistics) is left untouched.
    """

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        data, weight, bias = wildcard(), is_const(), is_const()
        conv = is_op("relax.nn.conv2d")(data, weight)
        conv_bias = is_op("relax.add")(conv, bias)
        gamma, beta, mean, var = is_const(), is_const(), is_const(), is_const()
        norm = is_op("relax.nn.batch_norm")(conv_bias | conv, gamma, beta, mean, var)
        pattern = is_tuple_get_item(norm, 0)

        def rewrite(expr: relax.Expr, m: dict) -> relax.Expr:
            call = m[conv]
            if call.attrs.data_layout != "NCHW" or call.attrs.kernel_layout != "OIHW" or m[norm].attrs.axis != 1:
                return expr
            w = _array(m[weight]).astype(np.float64)
            scale = _array(m[gamma]).astype(np.float64) / np.sqrt(
                _array(m[var]).astype(np.float64) + float(m[norm].attrs.epsilon)
            )
            b = _array(m[bias]).reshape(-1).astype(np.float64) if bias in m else np.zeros(w.shape[0])
            if b.shape[0] != w.shape[0]:
                return expr
            new_w = (w * scale[:, None, None, None]).astype(np.float32)
            new_b = ((b - _array(m[mean])) * scale + _array(m[beta])).astype(np.float32)
            a = call.attrs
            folded = relax.op.nn.conv2d(
                m[data], relax.const(new_w), a.strides, a.padding, a.dilation, a.groups,
                a.data_layout, a.kernel_layout, a.out_layout, a.out_dtype,
            )
            return relax.op.add(folded, relax.const(new_b.reshape(1, -1, 1, 1)))

        updates = {}
        for gv, func in mod.functions.items():
            if isinstance(func, relax.Function):
                updates[gv] = rewrite_call(pattern, rewrite, func)
        return relax.transform.DeadCodeElimination()(replace_functions(mod, updates))
