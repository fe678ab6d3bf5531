"""NumPy overrides of the fused kernels: the same arithmetic as ``fused.py`` in as few passes as
NumPy allows (ufuncs with ``out=``, in place, one scratch buffer). Methods not overridden here
(cross-entropy, BatchNorm, RMSprop, Adagrad) use the reference, which is already few-pass on NumPy.
"""

from __future__ import annotations

import math

import numpy as np

from . import fused as F


def _sigmoid_(x: np.ndarray) -> np.ndarray:
    """In-place logistic function (``0.5 * tanh(x / 2) + 0.5``: stable, three passes)."""
    x *= 0.5
    np.tanh(x, out=x)
    x *= 0.5
    x += 0.5
    return x


class NumpyFused:
    """Mixed into the NumPy adapter."""

    def vecdot(self, a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.einsum("...i,...i->...", np.moveaxis(a, axis, -1), np.moveaxis(b, axis, -1))

    def bias_act_forward(self, x, bias, act):
        if act in ("relu", "tanh", "sigmoid"):
            z = np.add(x, bias) if bias is not None else np.array(x, copy=True)
            if act == "relu":
                np.maximum(z, 0, out=z)
            elif act == "tanh":
                np.tanh(z, out=z)
            else:
                _sigmoid_(z)
            return z, z
        return F.bias_act_forward(np, x, bias, act, self.erf)

    def bias_act_backward(self, dy, saved, act, has_bias=True):
        if act == "relu":
            dz = np.multiply(dy, saved > 0)
        elif act == "tanh":
            dz = np.multiply(saved, saved)
            np.subtract(1.0, dz, out=dz)
            dz *= dy
        elif act == "sigmoid":
            dz = np.subtract(1.0, saved)
            dz *= saved
            dz *= dy
        else:
            dz = F.act_backward(np, dy, saved, act, self.erf)
        return dz, (dz.reshape(-1, dz.shape[-1]).sum(axis=0) if has_bias else None)

    def lstm_cell_forward(self, gates, c_prev):
        hid = c_prev.shape[-1]
        act = np.empty(gates.shape[:-1] + (5 * hid,), dtype=gates.dtype)
        act[..., :4 * hid] = gates
        _sigmoid_(act[..., :2 * hid])
        np.tanh(act[..., 2 * hid:3 * hid], out=act[..., 2 * hid:3 * hid])
        _sigmoid_(act[..., 3 * hid:4 * hid])
        i, f, g, o, tc = (act[..., k * hid:(k + 1) * hid] for k in range(5))
        c = np.multiply(f, c_prev)
        np.multiply(i, g, out=tc)
        c += tc
        np.tanh(c, out=tc)
        return np.multiply(o, tc), c, act

    def lstm_cell_backward(self, act, c_prev, dh, dc):
        hid = c_prev.shape[-1]
        i, f, g, o, tc = (act[..., k * hid:(k + 1) * hid] for k in range(5))
        d = np.empty(act.shape[:-1] + (4 * hid,), dtype=act.dtype)
        di, df, dg, do = (d[..., k * hid:(k + 1) * hid] for k in range(4))
        dct = np.multiply(tc, tc)
        np.subtract(1.0, dct, out=dct)
        dct *= o
        dct *= dh
        if dc is not None:
            dct += dc
        np.subtract(1.0, o, out=do)
        do *= o
        do *= tc
        do *= dh
        np.subtract(1.0, i, out=di)
        di *= i
        di *= g
        di *= dct
        np.subtract(1.0, f, out=df)
        df *= f
        df *= c_prev
        df *= dct
        np.multiply(g, g, out=dg)
        np.subtract(1.0, dg, out=dg)
        dg *= i
        dg *= dct
        dct *= f
        return d, dct

    def adam_step_(self, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, lr, beta1, beta2, eps, step,
                   weight_decay=0.0, decoupled=False):
        if weight_decay and decoupled:
            param *= 1.0 - lr * weight_decay
        elif weight_decay:
            grad = grad + weight_decay * param
        bc1 = 1.0 - beta1 ** step
        bc2 = 1.0 - beta2 ** step
        self.adam_update_(param, grad, exp_avg, exp_avg_sq, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                          bias_correction1=bc1, bias_correction2=bc2, max_exp_avg_sq=max_exp_avg_sq)

    def adam_update_(self, param, grad, exp_avg, exp_avg_sq, *, lr, beta1, beta2, eps,
                     bias_correction1, bias_correction2, max_exp_avg_sq=None):
        # Same arithmetic as the standard fallback, in place, with one scratch buffer and no temporaries.
        exp_avg *= beta1
        exp_avg += (1.0 - beta1) * grad
        scratch = np.multiply(grad, grad)
        exp_avg_sq *= beta2
        scratch *= 1.0 - beta2
        exp_avg_sq += scratch
        v = exp_avg_sq
        if max_exp_avg_sq is not None:
            v = np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        np.sqrt(v, out=scratch)
        scratch *= 1.0 / math.sqrt(bias_correction2)
        scratch += eps
        np.divide(exp_avg, scratch, out=scratch)
        scratch *= lr / bias_correction1
        param -= scratch
        return param, exp_avg, exp_avg_sq, max_exp_avg_sq

    def sgd_step_(self, param, grad, buf, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                  first=False):
        g = np.add(grad, weight_decay * param) if weight_decay else grad
        if momentum:
            if first:
                np.copyto(buf, g)
            else:
                buf *= momentum
                buf += (1.0 - dampening) * g
            g = np.add(g, momentum * buf) if nesterov else buf
        param -= lr * g

    def grad_norm(self, flat):
        flat = flat.reshape(-1)
        acc = flat if flat.dtype != np.float16 else flat.astype(np.float32)
        return np.sqrt(np.asarray(np.dot(acc, acc)))
