"""NumPy overrides of the fused kernels: the same arithmetic as ``fused.py`` in as few passes as
NumPy allows (ufuncs with ``out=``, in place, one scratch buffer). Methods not overridden here
(cross-entropy, BatchNorm, RMSprop, Adagrad) use the reference, which is already few-pass on NumPy.

Large elementwise kernels (bias + activation and its backward, the LSTM cell, the SGD and Adam
steps) are split over row chunks of their leading axis on nnx's thread pool
(:func:`nnx_backends.threads.parallel_rows`, sized by ``nnx.set_num_threads``); reductions are
done whole afterwards, so the results are bit-identical for every thread count.
"""

from __future__ import annotations

import math

import numpy as np

from . import fused as F
from . import host_kernels as hk
from .addresses import addr
from .numpy_recurrent import NumpyRecurrentCells
from .threads import MIN_PARALLEL_ELEMENTS, get_num_threads, parallel_rows


def _sigmoid_(x: np.ndarray) -> np.ndarray:
    """In-place logistic function (``0.5 * tanh(x / 2) + 0.5``: stable, three passes)."""
    x *= 0.5
    np.tanh(x, out=x)
    x *= 0.5
    x += 0.5
    return x


class NumpyFused(NumpyRecurrentCells):
    """Mixed into the NumPy adapter."""

    def vecdot(self, a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.einsum("...i,...i->...", np.moveaxis(a, axis, -1), np.moveaxis(b, axis, -1))

    def fast_activations(self):
        return ("relu", "sigmoid") if hk.kernels() is not None else ()

    def fast_cross_entropy(self):
        return True

    def cross_entropy_forward(self, logits, target, weight=None, *, ignore_index=-100, label_smoothing=0.0,
                              reduction="mean"):
        """The plain case (float (N, C) logits, (N,) targets, no class weights, no smoothing) as one
        host-kernel task forward and one backward (``nnx_ce_fwd`` / ``nnx_ce_bwd``, rows split over
        the C pool when large), else with NumPy's in-place passes and one gather; the reference's
        arithmetic (the row sums of exponentials in double in the kernel). Measured on the MLP
        benchmark's 128 x 10, the loss module forward + backward: the generic path 58 us, the NumPy
        passes 47 us, the kernel 39 us, 32 us with the cheaper target and dtype checks (2-vCPU AMD
        EPYC VM). Every other case: the reference."""
        if (weight is not None or label_smoothing or type(logits) is not np.ndarray or logits.ndim != 2
                or logits.dtype not in (np.float32, np.float64) or type(target) is not np.ndarray
                or target.shape != logits.shape[:1] or reduction not in ("mean", "sum", "none")):
            return super().cross_entropy_forward(logits, target, weight, ignore_index=ignore_index,
                                                 label_smoothing=label_smoothing, reduction=reduction)
        lib = hk.kernels()
        if lib is not None and logits.flags.c_contiguous and logits.shape[1] and target.dtype.kind in "iu":
            return _ce_task_forward(lib, logits, target, int(ignore_index), reduction)
        logp = np.subtract(logits, logits.max(axis=1, keepdims=True))
        e = np.exp(logp)
        logp -= np.log(e.sum(axis=1, keepdims=True))
        valid = target != ignore_index
        safe = np.where(valid, target, 0).astype(target.dtype, copy=False)
        wy = valid.astype(logits.dtype)
        picked = logp[np.arange(target.shape[0]), safe]
        loss = np.negative(wy)
        loss *= np.where(valid, picked, 0)
        denom = np.sum(wy)
        out = loss if reduction == "none" else np.sum(loss) if reduction == "sum" else np.sum(loss) / denom
        return out, (logp, wy, safe, denom)

    def cross_entropy_backward(self, grad, saved, target, weight=None, *, ignore_index=-100, label_smoothing=0.0,
                               reduction="mean"):
        logp = saved[0]
        if weight is not None or label_smoothing or type(logp) is not np.ndarray or logp.ndim != 2:
            return super().cross_entropy_backward(grad, saved, target, weight, ignore_index=ignore_index,
                                                  label_smoothing=label_smoothing, reduction=reduction)
        _, wy, safe, denom = saved[:4]
        if len(saved) == 5:  # the host kernel's forward: safe holds the targets as they are
            d = _ce_task_backward(logp, safe, int(ignore_index), denom, grad, reduction)
            if d is not None:
                return d
            safe = np.where(safe != ignore_index, safe, 0)
        d = np.exp(logp)
        d[np.arange(safe.shape[0]), safe] -= 1.0
        d *= wy[:, None]
        if reduction == "none":
            return d * np.expand_dims(grad, axis=-1)
        return d * (grad / denom if reduction == "mean" else grad)

    def bias_act_forward(self, x, bias, act, *, out=None):
        if act == "tanh" and x.ndim == 2 and x.size < MIN_PARALLEL_ELEMENTS:  # a recurrent time step: no layers
            z = out
            if z is None:
                z = np.empty(x.shape, dtype=x.dtype if bias is None else np.result_type(x, bias))
            if bias is not None:
                np.add(x, bias, out=z)
                return np.tanh(z, out=z), z
            return np.tanh(x, out=z), z
        if act in ("relu", "tanh", "sigmoid") and x.ndim >= 1:
            z = out
            if z is None:
                z = np.empty(x.shape, dtype=np.result_type(x, bias) if bias is not None else x.dtype)
            x2, z2 = _rows(x), _rows(z)
            if act == "relu" and _relu_task(x2, bias, z2):
                return z, z
            if x.ndim == 2 and (z.size < MIN_PARALLEL_ELEMENTS or get_num_threads() <= 1):
                _bias_act_rows(x, bias, z, act)  # one chunk (a recurrent time step): no closure
                return z, z
            bias2 = _rows(bias) if bias is not None and bias.ndim > 1 else None  # a full addend (B, H)

            def work(lo: int, hi: int) -> None:
                _bias_act_rows(x2[lo:hi], bias if bias2 is None else bias2[lo:hi], z2[lo:hi], act)

            parallel_rows(work, z2.shape[0], z.size)
            return z, z
        if act == "gelu_tanh" and x.ndim >= 1:
            z = x if bias is None else x + bias
            y = np.empty(z.shape, dtype=z.dtype) if out is None else out
            z2, y2 = _rows(z), _rows(y)
            parallel_rows(lambda lo, hi: _gelu_tanh_rows(z2[lo:hi], y2[lo:hi]), z2.shape[0], z.size)
            return y, z
        y, saved = F.bias_act_forward(np, x, bias, act, self.erf)
        if out is None:
            return y, saved
        out[...] = y
        return out, (out if saved is y else saved)

    def channel_sum(self, x):
        """The host kernel on nnx's C pool, split by channels (``chan_sum``: each plane summed in
        vector lanes, the planes in float64); NumPy's sum where it does not apply. Measured on the
        2-vCPU Zen 5 VM, LeNet-5's bias gradients (64, 6, 28, 28) and (64, 16, 10, 10): NumPy 44 and
        28 us, the kernel 18 and 11 us on one thread, 10 and 8 us on two."""
        lib = hk.kernels()
        if lib is None or x.ndim < 3 or not hk.supports(x) or x.size == 0:
            return super().channel_sum(x)
        n, c = x.shape[:2]
        out = np.empty(c, dtype=x.dtype)
        lib.run("chan_sum", x.dtype, (addr(x), n, c, x.size // max(1, n * c), addr(out)), c, x.size)
        return out

    def bias_act_backward(self, dy, saved, act, has_bias=True, *, out=None):
        if (act == "tanh" and not has_bias and dy.ndim == 2 and dy.shape == saved.shape
                and dy.size < MIN_PARALLEL_ELEMENTS):  # a recurrent time step: no layers
            dz = out if out is not None else np.empty(dy.shape, dtype=np.result_type(dy, saved))
            np.multiply(saved, saved, out=dz)  # dz may be saved itself
            np.subtract(1.0, dz, out=dz)
            dz *= dy
            return dz, None
        if act in ("relu", "tanh", "sigmoid") and dy.ndim >= 1 and dy.shape == saved.shape:
            dz = np.empty(dy.shape, dtype=np.result_type(dy, saved)) if out is None else out
            if act == "relu" and _relu_backward_task(dy, saved, dz, fresh=out is None):
                pass
            elif dy.ndim == 2 and (dz.size < MIN_PARALLEL_ELEMENTS or get_num_threads() <= 1):
                _act_backward_rows(dy, saved, dz, act)  # one chunk (a recurrent time step): no closure
            else:
                dy2, s2, dz2 = _rows(dy), _rows(saved), _rows(dz)
                parallel_rows(lambda lo, hi: _act_backward_rows(dy2[lo:hi], s2[lo:hi], dz2[lo:hi], act),
                              dz2.shape[0], dz.size)
        elif act == "gelu_tanh" and dy.ndim >= 1 and dy.shape == saved.shape and out is None:
            dz = np.empty(dy.shape, dtype=np.result_type(dy, saved))
            dy2, s2, dz2 = _rows(dy), _rows(saved), _rows(dz)
            parallel_rows(lambda lo, hi: _gelu_tanh_backward_rows(dy2[lo:hi], s2[lo:hi], dz2[lo:hi]), dz2.shape[0],
                          dz.size)
        else:
            dz = F.act_backward(np, dy, saved, act, self.erf)
            if out is not None:
                out[...] = dz
                dz = out
        return dz, (dz.reshape(-1, dz.shape[-1]).sum(axis=0) if has_bias else None)

    def shift_add(self, out, cols, offsets, run, lo=0):
        lib = hk.kernels()
        n = cols.shape[0] if cols.ndim == 5 else -1
        if (lib is None or out.ndim != 4 or n < 0 or not hk.supports(out, cols) or not out.flags.writeable
                or cols.shape != (n, out.shape[1], len(offsets), out.shape[2], run) or not 0 <= lo <= out.shape[0] - n
                or min(offsets, default=0) < 0 or max(offsets, default=0) + run > out.shape[3]
                or np.may_share_memory(out, cols)):
            return super().shift_add(out, cols, offsets, run, lo)
        g, cg, length = out.shape[1:]
        off = np.ascontiguousarray(offsets, dtype=np.int64)
        lib.run("shift_add", out.dtype, (addr(out) + lo * g * cg * length * out.itemsize, addr(cols), g,
                                         len(offsets), cg, length, run, addr(off)), n, cols.size)
        return out

    def adam_step_(self, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, lr, beta1, beta2, eps, step,
                   weight_decay=0.0, decoupled=False):
        arrays = [param, grad, exp_avg, exp_avg_sq] + ([] if max_exp_avg_sq is None else [max_exp_avg_sq])
        flats = _flat_views(arrays)
        if flats is None:
            _adam_step_flat(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr=lr, beta1=beta1, beta2=beta2,
                            eps=eps, step=step, weight_decay=weight_decay, decoupled=decoupled)
            return

        def work(lo: int, hi: int) -> None:
            _adam_step_flat(*(f[lo:hi] for f in flats[:4]), None if len(flats) == 4 else flats[4][lo:hi], lr=lr,
                            beta1=beta1, beta2=beta2, eps=eps, step=step, weight_decay=weight_decay,
                            decoupled=decoupled)

        parallel_rows(work, flats[0].shape[0], flats[0].shape[0])

    def multi_tensor_kinds(self):
        return ("adam", "sgd") if hk.kernels() is not None else ()

    def sgd_multi_step_(self, params, grads, bufs, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
                        nesterov=False, first=False):
        # One C-pool run for the group (tensors checked first, nothing written unless all pass), else per tensor.
        kw = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                  first=first)
        if not _sgd_multi(params, grads, bufs, **kw):
            super().sgd_multi_step_(params, grads, bufs, **kw)

    def adam_multi_step_(self, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs=None, *, lr, beta1, beta2,
                         eps, step, weight_decay=0.0, decoupled=False):
        # One C-pool run for the group (tensors checked first, nothing written unless all pass), else per tensor.
        if max_exp_avg_sqs is not None or not _adam_multi(params, grads, exp_avgs, exp_avg_sqs, lr=lr, beta1=beta1,
                                                          beta2=beta2, eps=eps, step=step,
                                                          weight_decay=weight_decay, decoupled=decoupled):
            super().adam_multi_step_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, lr=lr, beta1=beta1,
                                     beta2=beta2, eps=eps, step=step, weight_decay=weight_decay, decoupled=decoupled)

    def adam_update_(self, param, grad, exp_avg, exp_avg_sq, *, lr, beta1, beta2, eps,
                     bias_correction1, bias_correction2, max_exp_avg_sq=None):
        # In place, one scratch buffer a chunk, large arrays split over nnx's threads; returns the arrays.
        if max_exp_avg_sq is not None:  # AMSGrad: the generic in-place update
            from .base import Backend

            return Backend.adam_update_(self, param, grad, exp_avg, exp_avg_sq, lr=lr, beta1=beta1, beta2=beta2,
                                        eps=eps, bias_correction1=bias_correction1,
                                        bias_correction2=bias_correction2, max_exp_avg_sq=max_exp_avg_sq)
        flats = _flat_views([param, grad, exp_avg, exp_avg_sq])
        kw = {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps, "bc1": bias_correction1, "bc2": bias_correction2}
        if flats is None:
            _adam_update_flat(param, grad, exp_avg, exp_avg_sq, **kw)
            return param, exp_avg, exp_avg_sq, None
        p, g, m, v = flats
        if _adam_kernel(p, g, m, v, **kw):  # the kernel splits itself
            return param, exp_avg, exp_avg_sq, None
        parallel_rows(lambda lo, hi: _adam_update_flat(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], **kw),
                      p.shape[0], p.shape[0])
        return param, exp_avg, exp_avg_sq, None

    def sgd_step_(self, param, grad, buf, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                  first=False):
        kw = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
              "nesterov": nesterov, "first": first}
        flats = _flat_views([param, grad] + ([buf] if momentum else []))
        if flats is None:
            _sgd_flat(param, grad, buf, **kw)
            return
        p, g = flats[0], flats[1]
        b = flats[2] if momentum else None
        parallel_rows(lambda lo, hi: _sgd_flat(p[lo:hi], g[lo:hi], None if b is None else b[lo:hi], **kw),
                      p.shape[0], p.shape[0])

    def grad_norm(self, flat):
        flat = flat.reshape(-1)
        acc = flat if flat.dtype != np.float16 else flat.astype(np.float32)
        return np.sqrt(np.asarray(np.dot(acc, acc)))


def _ce_task_forward(lib, z: np.ndarray, target: np.ndarray, ignore_index: int, reduction: str):
    """Cross-entropy forward by the ``ce_fwd`` task: ``(loss, saved)`` as the NumPy passes return
    them, ``saved`` with the int64 targets and a fifth entry that marks the kernel's layout."""
    n, c = z.shape
    t = target if target.dtype == np.int64 and target.flags.c_contiguous else target.astype(np.int64)
    logp = np.empty_like(z)
    loss = np.empty(n, dtype=z.dtype)
    wy = np.empty(n, dtype=z.dtype)
    lib.run("ce_fwd", z.dtype, (addr(z), addr(t), c, ignore_index, addr(logp), addr(loss), addr(wy)), n, z.size)
    denom = np.sum(wy)
    out = loss if reduction == "none" else np.sum(loss) if reduction == "sum" else np.sum(loss) / denom
    return out, (logp, wy, t, denom, "ce_fwd")


def _ce_task_backward(logp: np.ndarray, t: np.ndarray, ignore_index: int, denom, grad, reduction: str):
    """Its backward by the ``ce_bwd`` task; None where the incoming gradient's dtype or shape would
    change the result's type (the NumPy passes then broadcast as NumPy does)."""
    lib = hk.kernels()
    g = grad if type(grad) is np.ndarray else np.asarray(grad)
    if lib is None or g.dtype != logp.dtype:
        return None
    n, c = logp.shape
    if reduction == "none":
        if g.shape != (n,):
            return None
        g = np.ascontiguousarray(g)
        rows, scale = addr(g), 0.0
    else:
        if g.ndim:
            return None
        rows, scale = 0, float(g / denom if reduction == "mean" else g)  # rounded to the dtype first
    d = np.empty_like(logp)
    lib.run("ce_bwd", logp.dtype, (addr(logp), addr(t), c, ignore_index, rows, *hk.words(scale), addr(d)), n,
            logp.size)
    return d


# ---------------------------------------------------------------------------- row kernels
def _relu_task(x: np.ndarray, bias: np.ndarray | None, z: np.ndarray) -> bool:
    """``z = relu(x + bias)`` over rows by the host kernel on nnx's C pool; False (nothing done)
    where the kernel does not apply (no kernels, other dtypes or layouts, a full-size addend)."""
    lib = hk.kernels()
    if (lib is None or x.ndim != 2 or not (hk.supports(x, z, bias) if bias is not None else hk.supports(x, z))
            or x.shape != z.shape or (bias is not None and bias.shape != (x.shape[1],)) or not hk.writable_over(z, x)):
        return False
    lib.run("bias_relu_fwd", x.dtype, (addr(x), hk.ptr(bias), x.shape[1], addr(z)), x.shape[0], x.size)
    return True


def _relu_backward_task(g: np.ndarray, y: np.ndarray, d: np.ndarray, fresh: bool = False) -> bool:
    """``d = g * (y > 0)`` by the host kernel on nnx's C pool, split by elements; False where it
    does not apply. ``fresh``: ``d`` was just allocated (it overlaps nothing: no check)."""
    lib = hk.kernels()
    if (lib is None or not hk.supports(g, y, d) or not g.shape == y.shape == d.shape
            or not (fresh or hk.writable_over(d, g, y))):
        return False
    lib.run("relu_bwd", g.dtype, (addr(g), addr(y), addr(d)), g.size, g.size)
    return True


def _bias_act_rows(x: np.ndarray, bias: np.ndarray | None, z: np.ndarray, act: str) -> None:
    """``z = act(x + bias)`` for relu, tanh, sigmoid (``z`` may be ``x`` itself)."""
    if act == "relu" and x.ndim == 2:
        lib = hk.kernels()
        if lib is not None and (hk.supports(x, z, bias) if bias is not None else hk.supports(x, z)) \
                and x.shape == z.shape and (bias is None or bias.shape == (x.shape[1],)) and hk.writable_over(z, x):
            lib.fn("nnx_bias_relu_fwd", x.dtype)(addr(x), hk.ptr(bias), x.shape[0], x.shape[1], addr(z))
            return
    if act == "sigmoid":
        lib = hk.kernels()
        if lib is not None and hk.supports(x, z) and x.shape == z.shape and hk.writable_over(z, x):
            src = x
            if bias is not None:
                np.add(x, bias, out=z)
                src = z
            lib.fn("nnx_sigmoid", z.dtype)(addr(src), z.size, addr(z))  # one pass, not three
            return
    if bias is not None:
        np.add(x, bias, out=z)
    elif z is not x:
        np.copyto(z, x)
    if act == "relu":
        np.maximum(z, 0, out=z)
    elif act == "tanh":
        np.tanh(z, out=z)
    else:
        _sigmoid_(z)


def _act_backward_rows(g: np.ndarray, sv: np.ndarray, d: np.ndarray, act: str) -> None:
    """``d = g * act'`` from the saved output ``sv`` of relu, tanh, sigmoid; ``d`` may be ``sv``
    itself (the recurrent time loop's shared buffer)."""
    if act == "relu":
        lib = hk.kernels()
        if lib is not None and hk.supports(g, sv, d) and g.shape == sv.shape == d.shape and hk.writable_over(d, g, sv):
            lib.fn("nnx_relu_bwd", g.dtype)(addr(g), addr(sv), g.size, addr(d))  # one pass
        else:
            np.multiply(g, sv > 0, out=d)
    elif act == "tanh":
        np.multiply(sv, sv, out=d)
        np.subtract(1.0, d, out=d)
        d *= g
    elif d is sv or np.may_share_memory(d, sv):
        np.multiply(sv, np.subtract(1.0, sv), out=d)
        d *= g
    else:
        np.subtract(1.0, sv, out=d)
        d *= sv
        d *= g


def _rows(a: np.ndarray) -> np.ndarray:
    """``a`` as rows ``(prod(leading), last)`` (a view for C-contiguous arrays; 0-d/1-d: one row)."""
    if a.ndim == 0:
        return a.reshape(1, 1)
    return a.reshape(-1, a.shape[-1]) if a.ndim != 2 else a


_C = math.sqrt(2.0 / math.pi)  # GELU's tanh form: 0.5 z (1 + tanh(C (z + A z^3)))
_A = 0.044715


def _gelu_tanh_rows(z: np.ndarray, y: np.ndarray) -> None:
    """``y = 0.5 z (1 + tanh(z (C + C A z^2)))`` in place in ``y`` (seven passes, no temporary)."""
    np.multiply(z, z, out=y)
    y *= _C * _A
    y += _C
    y *= z
    np.tanh(y, out=y)
    y += 1.0
    y *= z
    y *= 0.5


def _gelu_tanh_backward_rows(dy: np.ndarray, z: np.ndarray, d: np.ndarray) -> None:
    """``d = dy (0.5 (1 + t) + 0.5 z (1 - t^2) C (1 + 3 A z^2))``, ``t = tanh(C (z + A z^3))``."""
    t = np.multiply(z, z)
    np.multiply(t, 3.0 * _C * _A, out=d)
    d += _C
    d *= z
    d *= 0.5  # 0.5 z C (1 + 3 A z^2)
    t *= _C * _A
    t += _C
    t *= z
    np.tanh(t, out=t)
    u = np.multiply(t, t)
    np.subtract(1.0, u, out=u)
    d *= u
    t += 1.0
    t *= 0.5
    d += t
    d *= dy


def _flat_views(arrays: list) -> list | None:
    """1-D views of same-size C-contiguous arrays (writes through them reach the arrays), else None."""
    size = arrays[0].size
    if not all(isinstance(a, np.ndarray) and a.flags.c_contiguous and a.size == size for a in arrays):
        return None
    return [a.reshape(-1) for a in arrays]


def _adam_step_flat(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, lr, beta1, beta2, eps, step,
                    weight_decay, decoupled) -> None:
    if weight_decay and decoupled:
        param *= 1.0 - lr * weight_decay
    elif weight_decay:
        grad = grad + weight_decay * param
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    if max_exp_avg_sq is None:
        _adam_update_flat(param, grad, exp_avg, exp_avg_sq, lr=lr, beta1=beta1, beta2=beta2, eps=eps, bc1=bc1,
                          bc2=bc2)
        return
    exp_avg *= beta1
    exp_avg += (1.0 - beta1) * grad
    scratch = np.multiply(grad, grad)
    scratch *= 1.0 - beta2
    exp_avg_sq *= beta2
    exp_avg_sq += scratch
    np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
    np.sqrt(max_exp_avg_sq, out=scratch)
    scratch *= 1.0 / math.sqrt(bc2)
    scratch += eps
    np.divide(exp_avg, scratch, out=scratch)
    scratch *= lr / bc1
    param -= scratch


def _adam_kernel(param, grad, exp_avg, exp_avg_sq, *, lr, beta1, beta2, eps, bc1, bc2) -> bool:
    """Adam's update as one pass of the host kernel on nnx's C pool; False (nothing done) where it
    does not apply (no kernels, other dtypes or layouts, overlapping arrays). It takes 1-d
    contiguous arrays (``_flat_views``), so overlap is a test of address ranges, made on the
    addresses the kernel takes (per parameter 4 address reads and 6 comparisons instead of 6
    ``may_share_memory`` calls on top of the reads)."""
    lib = hk.kernels()
    if lib is None or type(param) is not np.ndarray or param.ndim != 1 or not param.flags.writeable:
        return False
    dt, n = param.dtype, param.shape[0]
    if dt not in (np.float32, np.float64):
        return False
    arrays = (param, grad, exp_avg, exp_avg_sq)
    for a in arrays:
        if type(a) is not np.ndarray or a.dtype != dt or a.ndim != 1 or a.shape[0] != n or not a.flags.c_contiguous:
            return False
    ptrs = [addr(a) for a in arrays]
    span = n * param.itemsize
    if n and any(abs(ptrs[i] - ptrs[j]) < span for i in range(4) for j in range(i + 1, 4)):
        return False  # two of them share memory: each is read and written by one pass
    lib.run("adam", dt, (*ptrs, *hk.words(beta1, beta2, eps, lr / bc1, 1.0 / math.sqrt(bc2))), n, n)
    return True


def _group_table(dt: np.dtype, tensors, written: tuple[bool, ...]) -> tuple[list, list, int] | None:
    """The addresses of a parameter group's arrays for a ``*_multi`` task: ``tensors`` holds per
    tensor a tuple of arrays (None for one it does not have, address 0), ``written[i]`` whether the
    i-th is written. ``(ptrs, offs, total)``: the addresses tensor by tensor, each tensor's first
    element in the group's concatenation (then the total), and that total; None where an array is
    not a C-contiguous ndarray of dtype ``dt`` and its tensor's size (writable where written) or
    any two of the group's arrays share memory (each is read and written by one pass)."""
    ptrs, offs, spans, total = [], [0], [], 0
    for arrays in tensors:
        n = arrays[0].size
        for a, w in zip(arrays, written, strict=True):
            if a is None:
                ptrs.append(0)
                continue
            if (type(a) is not np.ndarray or a.dtype != dt or a.size != n or not a.flags.c_contiguous
                    or (w and not a.flags.writeable)):
                return None
            q = addr(a)
            ptrs.append(q)
            if n:
                spans.append((q, q + n * dt.itemsize))
        total += n
        offs.append(total)
    spans.sort()
    if any(spans[i][1] > spans[i + 1][0] for i in range(len(spans) - 1)):
        return None
    return ptrs, offs, total


def _run_group(lib, name: str, dt: np.dtype, table: tuple[list, list, int], n_tensors: int, *words: int) -> None:
    """Task ``name`` over a group: its address and offset tables, the tensor count, one slice of
    every tensor per thread (slice ``r`` of all of them on part ``r``: a gradient is updated on the
    core whose product just wrote that part of it), then ``words``."""
    ptrs, offs, total = table
    tab = np.array(ptrs, dtype=np.int64)
    off = np.array(offs, dtype=np.int64)
    slices = get_num_threads()
    lib.run(name, dt, (addr(tab), addr(off), n_tensors, slices, *words), slices, total, slices)


def _adam_multi(params, grads, exp_avgs, exp_avg_sqs, *, lr, beta1, beta2, eps, step, weight_decay,
                decoupled) -> bool:
    """Adam on a group of tensors as one ``adam_multi`` task; False, nothing written, where it does
    not apply (no kernels, dtypes other than float32/float64, and :func:`_group_table`'s cases). Per
    tensor the arithmetic of :func:`_adam_kernel`."""
    lib = hk.kernels()
    if lib is None or not params or params[0].dtype not in (np.float32, np.float64):
        return False
    dt = params[0].dtype
    table = _group_table(dt, zip(params, grads, exp_avgs, exp_avg_sqs, strict=True), (True, False, True, True))
    if table is None:
        return False
    if weight_decay:
        if decoupled:
            for p in params:
                p *= 1.0 - lr * weight_decay
        else:
            grads = [g + weight_decay * p for g, p in zip(grads, params, strict=True)]
            table[0][1::4] = [addr(g) for g in grads]
    bc1, bc2 = 1.0 - beta1 ** step, 1.0 - beta2 ** step
    _run_group(lib, "adam_multi", dt, table, len(params), *hk.words(beta1, beta2, eps, lr / bc1, 1.0 / math.sqrt(bc2)))
    return True


def _sgd_multi(params, grads, bufs, *, lr, momentum, dampening, weight_decay, nesterov, first) -> bool:
    """SGD on a group of tensors as one ``sgd_multi`` task (``nnx_sgd``: ``fused_train.sgd_step_``'s
    arithmetic per element); False, nothing written, where it does not apply (as
    :func:`_adam_multi`; ``bufs`` None without momentum)."""
    lib = hk.kernels()
    if (lib is None or not params or params[0].dtype not in (np.float32, np.float64)
            or (momentum and bufs is None)):
        return False
    dt = params[0].dtype
    rows = zip(params, grads, bufs if momentum else [None] * len(params), strict=True)
    table = _group_table(dt, rows, (True, False, True))
    if table is None:
        return False
    _run_group(lib, "sgd_multi", dt, table, len(params), *hk.words(lr, momentum, dampening, weight_decay),
               int(bool(nesterov)), int(bool(first)))
    return True


def _adam_update_flat(param, grad, exp_avg, exp_avg_sq, *, lr, beta1, beta2, eps, bc1, bc2) -> None:
    # Same arithmetic as the standard fallback: one pass of the host kernel, else NumPy passes with
    # one scratch buffer and no other temporaries.
    if _adam_kernel(param, grad, exp_avg, exp_avg_sq, lr=lr, beta1=beta1, beta2=beta2, eps=eps, bc1=bc1, bc2=bc2):
        return
    exp_avg *= beta1
    exp_avg += (1.0 - beta1) * grad
    scratch = np.multiply(grad, grad)
    exp_avg_sq *= beta2
    scratch *= 1.0 - beta2
    exp_avg_sq += scratch
    np.sqrt(exp_avg_sq, out=scratch)
    scratch *= 1.0 / math.sqrt(bc2)
    scratch += eps
    np.divide(exp_avg, scratch, out=scratch)
    scratch *= lr / bc1
    param -= scratch


def _sgd_flat(param, grad, buf, *, lr, momentum, dampening, weight_decay, nesterov, first) -> None:
    g = np.add(grad, weight_decay * param) if weight_decay else grad
    if momentum:
        if first:
            np.copyto(buf, g)
        else:
            buf *= momentum
            buf += (1.0 - dampening) * g
        g = np.add(g, momentum * buf) if nesterov else buf
    param -= lr * g
