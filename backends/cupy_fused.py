"""CuPy implementations of the fused kernels: one kernel launch each (two or three for BatchNorm
and a reduced loss). Kernels are built from the sources in ``cuda_kernels.py`` on first use and
cached per name; CuPy compiles each once per dtype and caches the binary on disk.

Nothing here reads a value back to the host: the cross-entropy's mean denominator and the class
weights' sum stay on the device.
"""

from __future__ import annotations

import math
from typing import Any

from . import cuda_kernels as K
from .fused_api import FusedOps

_EW: dict[str, Any] = {}
_RED: dict[str, Any] = {}
_MODULE: list[Any] = []


def elementwise(cp: Any, name: str) -> Any:
    """The ``cupy.ElementwiseKernel`` of ``cuda_kernels.ELEMENTWISE[name]`` (built once)."""
    k = _EW.get(name)
    if k is None:
        ins, outs, body = K.ELEMENTWISE[name]
        k = _EW[name] = cp.ElementwiseKernel(ins, outs, body, f"nnx_{name}", preamble=K.PREAMBLE)
    return k


def row_kernel(cp: Any, name: str, dtype: Any) -> Any:
    """A row kernel of ``cuda_kernels.ROW_KERNELS`` instantiated for ``dtype``."""
    if not _MODULE:
        exprs = [f"{n}<{K.cuda_type(t)}>" for n in K.ROW_KERNEL_NAMES for t in ("float16", "float32", "float64")]
        code = "#include <cupy/float16.cuh>\n" + K.PREAMBLE + K.ROW_KERNELS
        _MODULE.append(cp.RawModule(code=code, options=("-std=c++17",), name_expressions=exprs))
    return _MODULE[0].get_function(f"{name}<{K.cuda_type(str(cp.dtype(dtype)))}>")


def _row_block(n: int) -> int:
    """Threads per row of the block-per-row kernels: a power of two (their tree sums), 32 to 256."""
    b = 32
    while b < 256 and b < n:
        b *= 2
    return b


_MULTI: dict[tuple[str, str], Any] = {}


def multi_tensor_kernel(cp: Any, name: str, dtype: Any) -> Any:
    """The ``RawKernel`` of ``cuda_kernels.multi_tensor_source(name)`` for ``dtype`` (built once)."""
    key = (name, str(cp.dtype(dtype)))
    k = _MULTI.get(key)
    if k is None:
        k = _MULTI[key] = cp.RawKernel(K.multi_tensor_source(name, key[1]), f"nnx_multi_{name}",
                                       options=("-std=c++17",))
    return k


def _reduction(cp: Any, name: str) -> Any:
    k = _RED.get(name)
    if k is None:
        if name == "sqnorm":
            ins, outs, mapx, red, post, ident = K.SQNORM
            k = cp.ReductionKernel(ins, outs, mapx, red, post, ident, "nnx_sqnorm", reduce_type="float64")
        elif name == "vecdot":
            k = cp.ReductionKernel("T a, T b", "T y", "a * b", "a + b", "y = a", "0", "nnx_vecdot")
        else:
            k = cp.ReductionKernel("T x, int64 lo, int64 hi", "int32 y", "(x < lo || x >= hi) ? 1 : 0",
                                   "max(a, b)", "y = a", "0", "nnx_out_of_range")
        _RED[name] = k
    return k


def _cols(a: Any, n: int, k: int) -> list[Any]:
    return [a[..., j * n:(j + 1) * n] for j in range(k)]


class CupyFused:
    """Mixed into the CuPy adapter (``self._cp`` is the cupy module, ``self.device`` the GPU)."""

    _cp: Any
    device: Any

    def vecdot(self, a, b, axis=-1):
        with self.device:
            return _reduction(self._cp, "vecdot")(a, b, axis=axis)

    def index_in_range(self, index, low, high, flag=None):
        cp = self._cp
        with self.device:
            bad = _reduction(cp, "range")(index, int(low), int(high))
            return bad if flag is None else cp.maximum(flag, bad, out=flag)

    def bias_act_forward(self, x, bias, act, *, out=None):
        cp = self._cp
        if act not in K.ACT_FWD:
            raise ValueError(f"bias_act: unknown activation {act!r}; expected one of {tuple(K.ACT_FWD)}")
        with self.device:
            b = bias if bias is not None else x.dtype.type(0)
            y = cp.empty_like(x) if out is None else out
            if act in K.NEEDS_INPUT:
                z = cp.empty_like(x)
                elementwise(cp, f"bias_{act}_fwd")(x, b, y, z)
                return y, z
            elementwise(cp, f"bias_{act}_fwd")(x, b, y)
            return y, y

    def bias_act_backward(self, dy, saved, act, has_bias=True, *, out=None):
        cp = self._cp
        with self.device:
            dx = elementwise(cp, f"act_{act}_bwd")(dy, saved, *(() if out is None else (out,)))
            return dx, (dx.reshape(-1, dx.shape[-1]).sum(axis=0) if has_bias else None)

    def lstm_cell_forward(self, gates, c_prev, *, out=None):
        cp = self._cp
        hid = c_prev.shape[-1]
        with self.device:
            act = cp.empty(gates.shape[:-1] + (5 * hid,), dtype=gates.dtype) if out is None else out
            c = cp.empty_like(c_prev)
            h = cp.empty_like(c_prev)
            elementwise(cp, "lstm_fwd")(*_cols(gates, hid, 4), c_prev, *_cols(act, hid, 5), c, h)
            return h, c, act

    def lstm_cell_backward(self, act, c_prev, dh, dc, *, out=None):
        cp = self._cp
        hid = c_prev.shape[-1]
        with self.device:
            d = cp.empty(act.shape[:-1] + (4 * hid,), dtype=act.dtype) if out is None else out
            dcp = cp.empty_like(c_prev)
            dc = dc if dc is not None else act.dtype.type(0)
            elementwise(cp, "lstm_bwd")(*_cols(act, hid, 5), c_prev, dh, dc, *_cols(d, hid, 4), dcp)
            return d, dcp

    def gru_cell_forward(self, gx, gh, h_prev, b_hn=None, *, out=None):
        cp = self._cp
        hid = h_prev.shape[-1]
        with self.device:
            act = cp.empty(gx.shape[:-1] + (4 * hid,), dtype=gx.dtype) if out is None else out
            h = cp.empty_like(h_prev)
            bn = b_hn if b_hn is not None else gx.dtype.type(0)
            elementwise(cp, "gru_fwd")(*_cols(gx, hid, 3), *_cols(gh, hid, 3), bn, h_prev, *_cols(act, hid, 4), h)
            return h, act

    def gru_cell_backward(self, act, h_prev, dh, *, out=None, out_gh=None):
        cp = self._cp
        hid = h_prev.shape[-1]
        with self.device:
            dgx = cp.empty(act.shape[:-1] + (3 * hid,), dtype=act.dtype) if out is None else out
            dgh = cp.empty(act.shape[:-1] + (3 * hid,), dtype=act.dtype) if out_gh is None else out_gh
            dhp = cp.empty_like(h_prev)
            elementwise(cp, "gru_bwd")(*_cols(act, hid, 4), h_prev, dh, *_cols(dgx, hid, 3), *_cols(dgh, hid, 3), dhp)
            return dgx, dgh, dhp

    def cross_entropy_forward(self, logits, target, weight=None, *, ignore_index=-100, label_smoothing=0.0,
                              reduction="mean"):
        cp = self._cp
        rows, cols = logits.shape
        with self.device:
            logits = cp.ascontiguousarray(logits)
            target = cp.ascontiguousarray(target.astype(cp.int64, copy=False))
            loss, wy, lse = (cp.empty((rows,), dtype=logits.dtype) for _ in range(3))
            w = weight if weight is not None else logits
            row_kernel(cp, "nnx_ce_fwd", logits.dtype)(
                ((rows + 127) // 128,), (128,),
                (logits, target, w, int(weight is not None), rows, cols, int(ignore_index), float(label_smoothing),
                 loss, wy, lse))
            denom = wy.sum() if reduction == "mean" else None
            out = loss if reduction == "none" else (loss.sum() if reduction == "sum" else loss.sum() / denom)
            return out, (logits, lse, denom)

    def cross_entropy_backward(self, grad, saved, target, weight=None, *, ignore_index=-100, label_smoothing=0.0,
                               reduction="mean"):
        cp = self._cp
        logits, lse, denom = saved
        rows, cols = logits.shape
        with self.device:
            target = cp.ascontiguousarray(target.astype(cp.int64, copy=False))
            grad = cp.asarray(grad, dtype=logits.dtype)
            wsum = weight.sum() if (weight is not None and label_smoothing) else logits
            d = cp.empty_like(logits)
            row_kernel(cp, "nnx_ce_bwd", logits.dtype)(
                ((rows + 127) // 128,), (128,),
                (logits, lse, target, weight if weight is not None else logits, int(weight is not None), wsum,
                 rows, cols, int(ignore_index), float(label_smoothing), grad, int(reduction == "none"),
                 denom if denom is not None else logits, int(reduction == "mean"), d))
            return d

    def batch_norm_stats(self, x):
        cp = self._cp
        n, c, length = x.shape
        with self.device:
            x = cp.ascontiguousarray(x)
            mean, var = cp.empty((c,), dtype=x.dtype), cp.empty((c,), dtype=x.dtype)
            row_kernel(cp, "nnx_bn_reduce", x.dtype)((c,), (256,), (x, x, x, n, c, length, 0, mean, var))
            return mean, var

    def batch_norm_forward(self, x, mean, var, weight, bias, eps):
        cp = self._cp
        one = x.dtype.type(1)
        with self.device:
            invstd = elementwise(cp, "bn_invstd")(var, float(eps))
            w = weight[:, None] if weight is not None else one
            b = bias[:, None] if bias is not None else x.dtype.type(0)
            y = elementwise(cp, "bn_norm")(x, mean[:, None], invstd[:, None], w, b)
            return y, invstd

    def batch_norm_backward(self, dy, x, mean, invstd, weight):
        cp = self._cp
        n, c, length = x.shape
        with self.device:
            x, dy = cp.ascontiguousarray(x), cp.ascontiguousarray(dy)
            sdy, sdxm = cp.empty((c,), dtype=x.dtype), cp.empty((c,), dtype=x.dtype)
            row_kernel(cp, "nnx_bn_reduce", x.dtype)((c,), (256,), (x, dy, mean, n, c, length, 1, sdy, sdxm))
            w = weight[:, None] if weight is not None else x.dtype.type(1)
            dx = elementwise(cp, "bn_bwd_dx")(dy, x, mean[:, None], invstd[:, None], w, sdy[:, None],
                                               sdxm[:, None], float(n * length))
            return dx, sdxm * invstd, sdy

    def softmax_cols_forward(self, s):
        cp = self._cp
        lead, rows, cols = s.shape[:-2], s.shape[-2], s.shape[-1]
        batches = math.prod(lead)
        with self.device:
            s = cp.ascontiguousarray(s)
            p = cp.empty_like(s)
            lse = cp.empty((*lead, 1, cols), dtype=s.dtype)
            n = batches * cols
            row_kernel(cp, "nnx_softmax_cols_fwd", s.dtype)(((n + 127) // 128,), (128,),
                                                            (s, batches, rows, cols, p, lse))
            return p, lse

    def softmax_cols_backward(self, dp, p):
        cp = self._cp
        rows, cols = p.shape[-2], p.shape[-1]
        batches = math.prod(p.shape[:-2])
        with self.device:
            dp, p = cp.ascontiguousarray(dp), cp.ascontiguousarray(p)
            ds = cp.empty_like(p)
            n = batches * cols
            row_kernel(cp, "nnx_softmax_cols_bwd", p.dtype)(((n + 127) // 128,), (128,),
                                                            (dp, p, batches, rows, cols, ds))
            return ds

    def layer_norm_rows_forward(self, x, weight, bias, eps):
        cp = self._cp
        rows, n = x.shape
        with self.device:
            x = cp.ascontiguousarray(x)
            y, xhat = cp.empty_like(x), cp.empty_like(x)
            invstd = cp.empty((rows, 1), dtype=x.dtype)
            row_kernel(cp, "nnx_ln_fwd", x.dtype)(
                (rows,), (_row_block(n),),
                (x, weight if weight is not None else x, bias if bias is not None else x, int(weight is not None),
                 int(bias is not None), n, float(eps), y, xhat, invstd))
            return y, xhat, invstd

    def layer_norm_rows_backward(self, dy, xhat, invstd, weight, has_bias, input_grad):
        cp = self._cp
        rows, n = xhat.shape
        with self.device:
            dy = cp.ascontiguousarray(dy)
            dweight = (dy * xhat).sum(axis=0) if weight is not None else None
            dbias = dy.sum(axis=0) if has_bias else None
            if not input_grad:
                return None, dweight, dbias
            dx = cp.empty_like(xhat)
            row_kernel(cp, "nnx_ln_bwd", xhat.dtype)(
                (rows,), (_row_block(n),),
                (dy, xhat, invstd, weight if weight is not None else dy, int(weight is not None), n, dx))
            return dx, dweight, dbias

    # ------------------------------------------------------------------ convolution gather / scatter
    def im2col(self, x, kernel, stride, dilation, pads, out, fill=0.0):
        cp = self._cp
        n, c, h, w = x.shape
        (kh, kw), (oh, ow) = kernel, out
        with self.device:
            x = cp.ascontiguousarray(x)
            cols = cp.empty((n, c * kh * kw, oh * ow), dtype=x.dtype)
            total = cols.size
            row_kernel(cp, "nnx_im2col", x.dtype)(
                ((total + 255) // 256,), (256,),
                (x, total, h, w, oh, ow, kh, kw, *stride, *dilation, *pads, float(fill), cols))
            return cols

    def col2im(self, cols, shape, kernel, stride, dilation, pads, out):
        cp = self._cp
        n, c, h, w = shape
        (kh, kw), (oh, ow) = kernel, out
        with self.device:
            cols = cp.ascontiguousarray(cols)
            dx = cp.empty((n, c, h, w), dtype=cols.dtype)
            total = dx.size
            row_kernel(cp, "nnx_col2im", cols.dtype)(
                ((total + 255) // 256,), (256,),
                (cols, total, h, w, oh, ow, kh, kw, *stride, *dilation, *pads, dx))
            return dx

    # ------------------------------------------------------------------ optimizers
    def adam_step_(self, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, lr, beta1, beta2, eps, step,
                   weight_decay=0.0, decoupled=False):
        bc1 = 1.0 - beta1 ** step
        bc2 = 1.0 - beta2 ** step
        args = (grad, lr, beta1, beta2, eps, bc1, 1.0 / bc2 ** 0.5, weight_decay, int(decoupled))
        with self.device:
            if max_exp_avg_sq is None:
                elementwise(self._cp, "adam")(*args, param, exp_avg, exp_avg_sq)
            else:
                elementwise(self._cp, "adam_amsgrad")(*args, param, exp_avg, exp_avg_sq, max_exp_avg_sq)

    def adam_update_(self, param, grad, exp_avg, exp_avg_sq, *, lr, beta1, beta2, eps,
                     bias_correction1, bias_correction2, max_exp_avg_sq=None):
        if max_exp_avg_sq is not None:  # AMSGrad: the generic in-place update (a few kernels)
            from .base import Backend

            return Backend.adam_update_(self, param, grad, exp_avg, exp_avg_sq, lr=lr, beta1=beta1, beta2=beta2,
                                        eps=eps, bias_correction1=bias_correction1,
                                        bias_correction2=bias_correction2, max_exp_avg_sq=max_exp_avg_sq)
        with self.device:
            elementwise(self._cp, "adam")(grad, lr, beta1, beta2, eps, bias_correction1,
                                          1.0 / bias_correction2 ** 0.5, 0.0, 0, param, exp_avg, exp_avg_sq)
        return param, exp_avg, exp_avg_sq, None

    def sgd_step_(self, param, grad, buf, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                  first=False):
        with self.device:
            if momentum:
                elementwise(self._cp, "sgd_momentum")(grad, lr, momentum, dampening, weight_decay, int(nesterov),
                                                      int(first), param, buf)
            else:
                elementwise(self._cp, "sgd")(grad, lr, weight_decay, param)

    def _multi_tensor(self, name, arrays, scalars):
        """Launch the multi-tensor kernel ``name`` over lists of tensors (``arrays``: one list per array
        argument of the elementwise kernel, in its order). Returns False (nothing launched) when the
        tensors are not all contiguous and of one dtype: the caller then steps them one by one."""
        import numpy as np

        first = arrays[0]
        dtype = first[0].dtype
        if any(a.dtype != dtype or not a.flags.c_contiguous for arrs in arrays for a in arrs):
            return False
        k = len(first)
        table = np.empty(k + 1 + len(arrays) * k, dtype=np.int64)
        table[0] = 0
        np.cumsum([a.size for a in first], out=table[1:k + 1])
        for i, arrs in enumerate(arrays):
            table[k + 1 + i * k:k + 1 + (i + 1) * k] = [a.data.ptr for a in arrs]
        total = int(table[k])
        if total == 0:
            return True
        cp = self._cp
        with self.device:
            device_table = cp.asarray(table)  # one host-to-device copy; the pool frees it in stream order
            blocks = min((total + 255) // 256, 65535)
            multi_tensor_kernel(cp, name, dtype)((blocks,), (256,), (device_table, np.int32(k), np.int64(total),
                                                                     *scalars))
        return True

    def sgd_multi_step_(self, params, grads, bufs, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
                        nesterov=False, first=False):
        import numpy as np

        f = np.float64
        if momentum:
            done = self._multi_tensor("sgd_momentum", [grads, params, bufs],
                                      (f(lr), f(momentum), f(dampening), f(weight_decay), np.int32(nesterov),
                                       np.int32(first)))
        else:
            done = self._multi_tensor("sgd", [grads, params], (f(lr), f(weight_decay)))
        if not done:
            FusedOps.sgd_multi_step_(self, params, grads, bufs, lr=lr, momentum=momentum, dampening=dampening,
                                     weight_decay=weight_decay, nesterov=nesterov, first=first)

    def adam_multi_step_(self, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs=None, *, lr, beta1, beta2,
                         eps, step, weight_decay=0.0, decoupled=False):
        import numpy as np

        f = np.float64
        bc1, bc2 = 1.0 - beta1 ** step, 1.0 - beta2 ** step
        scalars = (f(lr), f(beta1), f(beta2), f(eps), f(bc1), f(1.0 / bc2 ** 0.5), f(weight_decay), np.int32(decoupled))
        if max_exp_avg_sqs is None:
            done = self._multi_tensor("adam", [grads, params, exp_avgs, exp_avg_sqs], scalars)
        else:
            done = self._multi_tensor("adam_amsgrad", [grads, params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs], scalars)
        if not done:
            FusedOps.adam_multi_step_(self, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, lr=lr, beta1=beta1,
                                      beta2=beta2, eps=eps, step=step, weight_decay=weight_decay, decoupled=decoupled)

    def rmsprop_step_(self, param, grad, square_avg, buf=None, *, lr, alpha=0.99, eps=1e-8, weight_decay=0.0,
                      momentum=0.0):
        with self.device:
            if momentum:
                elementwise(self._cp, "rmsprop_momentum")(grad, lr, alpha, eps, weight_decay, momentum, param,
                                                          square_avg, buf)
            else:
                elementwise(self._cp, "rmsprop")(grad, lr, alpha, eps, weight_decay, param, square_avg)

    def adagrad_step_(self, param, grad, state_sum, *, lr, step, lr_decay=0.0, weight_decay=0.0, eps=1e-10):
        with self.device:
            elementwise(self._cp, "adagrad")(grad, lr / (1.0 + (step - 1) * lr_decay), weight_decay, eps, param,
                                             state_sum)

    def grad_norm(self, flat):
        with self.device:
            return _reduction(self._cp, "sqnorm")(flat.reshape(-1))
