"""NumPy row kernels of the recurrent cells (LSTM, GRU): the arithmetic of ``fused.py`` laid out
for NumPy's fast paths.

A step works on ``(B, G*H)`` rows whose gates are column blocks; an elementwise ufunc on such a
block (a strided ``(B, H)`` view) runs 2-3 times slower than on a contiguous array of the same
size, because NumPy leaves its contiguous SIMD loop. So every kernel here computes into fresh
contiguous temporaries, does the gate-wide work (the sigmoid/tanh of all gates, their
derivatives) as one pass over whole rows with per-column scale/shift vectors, and writes each
result block into its strided destination once, as the last step. Each function fills rows
``[lo, hi)`` only, so :func:`nnx_backends.threads.parallel_rows` can split them over threads.

Sigmoid is ``0.5 * tanh(x / 2) + 0.5`` (stable, SIMD tanh); the LSTM's four gates are one pass:
``tanh(z * s) * s + t`` with ``s = (1/2, 1/2, 1, 1/2)`` and ``t = (1/2, 1/2, 0, 1/2)`` per gate.
"""

from __future__ import annotations

import threading

import numpy as np

_VECTORS: dict = {}
_LOCAL = threading.local()


def _scratch(slot: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A scratch array of this thread, reused from call to call (contents undefined): the kernels'
    temporaries stop costing fresh memory (page faults, allocator trims) at every time step."""
    pool = getattr(_LOCAL, "pool", None)
    if pool is None:
        pool = _LOCAL.pool = {}
    key = (slot, shape, np.dtype(dtype).str)
    buf = pool.get(key)
    if buf is None:
        if len(pool) > 32:
            pool.clear()
        buf = pool[key] = np.empty(shape, dtype=dtype)
    return buf


def _gate_vector(values: tuple[float, ...], hid: int, dtype: np.dtype) -> np.ndarray:
    """``values[k]`` repeated ``hid`` times for each gate ``k``, cached per (values, hid, dtype)."""
    key = (values, hid, np.dtype(dtype).str)
    vec = _VECTORS.get(key)
    if vec is None:
        if len(_VECTORS) > 64:
            _VECTORS.clear()
        vec = _VECTORS[key] = np.repeat(np.asarray(values, dtype=dtype), hid)
    return vec


def lstm_forward_rows(gates: np.ndarray, c_prev: np.ndarray, act: np.ndarray, h: np.ndarray, c: np.ndarray,
                      hid: int) -> None:
    """``act = [i, f, g, o, tanh(c)]``, ``c = f c_prev + i g``, ``h = o tanh(c)`` (rows of ``(N, 4H)`` gates)."""
    scale = _gate_vector((0.5, 0.5, 1.0, 0.5), hid, gates.dtype)
    z = np.multiply(gates, scale, out=_scratch("z", gates.shape, gates.dtype))
    np.tanh(z, out=z)
    z *= scale
    z += _gate_vector((0.5, 0.5, 0.0, 0.5), hid, gates.dtype)
    act[:, :4 * hid] = z
    i, f, g, o = (z[:, k * hid:(k + 1) * hid] for k in range(4))
    np.multiply(f, c_prev, out=c)
    tc = np.multiply(i, g)
    c += tc
    np.tanh(c, out=tc)
    np.multiply(o, tc, out=h)
    act[:, 4 * hid:] = tc


def lstm_backward_rows(act: np.ndarray, c_prev: np.ndarray, dh: np.ndarray, dc: np.ndarray | None,
                       d: np.ndarray, dct: np.ndarray, hid: int) -> None:
    """``d`` = gradients of the four gate pre-activations; ``dct`` = gradient of ``c_prev``."""
    i, f, g, o, tc = (act[:, k * hid:(k + 1) * hid] for k in range(5))
    dcn = np.multiply(tc, tc)                 # gradient of the new cell state
    np.subtract(1.0, dcn, out=dcn)
    dcn *= o
    dcn *= dh
    if dc is not None:
        dcn += dc
    # what multiplies each gate's derivative: (dc' g, dc' c_prev, dc' i, dh tanh(c'))
    partner = _scratch("partner", d.shape, d.dtype)
    for k, (u, v) in enumerate(((dcn, g), (dcn, c_prev), (dcn, i), (dh, tc))):
        np.multiply(u, v, out=partner[:, k * hid:(k + 1) * hid])
    a = act[:, :4 * hid]
    # derivatives of the activations in one pass: a(1 - a) for the sigmoids, 1 - a^2 for tanh
    deriv = np.subtract(_gate_vector((1.0, 1.0, 0.0, 1.0), hid, d.dtype), a, out=_scratch("deriv", d.shape, d.dtype))
    deriv *= a
    deriv += _gate_vector((0.0, 0.0, 1.0, 0.0), hid, d.dtype)
    np.multiply(deriv, partner, out=d)
    np.multiply(dcn, f, out=dct)


def gru_forward_rows(gx: np.ndarray, gh: np.ndarray, h_prev: np.ndarray, b_hn: np.ndarray | None,
                     h: np.ndarray, act: np.ndarray, hid: int) -> None:
    """``act = [r, z, n, gh_n (+ b_hn)]``, ``h = n + z (h_prev - n)`` (rows of ``(N, 3H)`` ``gx``, ``gh``)."""
    two = 2 * hid
    rz = np.add(gx[:, :two], gh[:, :two])
    rz *= 0.5
    np.tanh(rz, out=rz)
    rz *= 0.5
    rz += 0.5
    hn = np.add(gh[:, two:], b_hn) if b_hn is not None else np.copy(gh[:, two:])
    n = np.multiply(rz[:, :hid], hn)
    n += gx[:, two:]
    np.tanh(n, out=n)
    np.subtract(h_prev, n, out=h)
    h *= rz[:, hid:]
    h += n
    act[:, :two] = rz
    act[:, two:3 * hid] = n
    act[:, 3 * hid:] = hn


def gru_backward_rows(act: np.ndarray, h_prev: np.ndarray, dh: np.ndarray, dgx: np.ndarray, dgh: np.ndarray,
                      dh_direct: np.ndarray, hid: int) -> None:
    """``dgx = (dr, dz, dn)``, ``dgh = (dr, dz, dn r)`` (pre-activation gradients), ``dh_direct = dh z``."""
    r, z, n, hn = (act[:, k * hid:(k + 1) * hid] for k in range(4))
    two = 2 * hid
    zz = np.subtract(1.0, z)                  # 1 - z, then z (1 - z)
    dn = np.multiply(n, n)
    np.subtract(1.0, dn, out=dn)
    dn *= zz
    dn *= dh
    zz *= z
    dz = np.subtract(h_prev, n)
    dz *= dh
    dz *= zz
    dr = np.subtract(1.0, r)
    dr *= r
    dr *= hn
    dr *= dn
    dgx[:, :hid] = dr
    dgx[:, hid:two] = dz
    dgx[:, two:] = dn
    dgh[:, :two] = dgx[:, :two]
    np.multiply(dn, r, out=dgh[:, two:])
    np.multiply(dh, z, out=dh_direct)
