"""NumPy row kernels of the recurrent cells (LSTM, GRU): the arithmetic of ``fused.py`` laid out
for NumPy's fast paths.

A step works on ``(B, G*H)`` rows whose gates are column blocks; an elementwise ufunc on such a
block (a strided ``(B, H)`` view), or with a broadcast per-column vector, runs 2-3 times slower
than on a contiguous array of the same size, because NumPy loops row by row outside its
contiguous SIMD loop. So the kernels compute into contiguous temporaries (the LSTM on a
gate-major ``(4, B, H)`` copy: one transposing copy in, one out) with scalar constants, and write
each result into its (possibly strided) destination once, as the last step; a destination that
aliases an input (the time loop's shared buffer, ``out=``) is written after that input was read.
Each function fills rows ``[lo, hi)`` only, so :func:`nnx_backends.threads.parallel_rows` can
split them over threads.

Sigmoid is ``0.5 * tanh(x / 2) + 0.5`` (stable, SIMD tanh); the LSTM's four gates are one tanh
pass, with scalar passes on the i, f, o planes around it.
"""

from __future__ import annotations

import threading

import numpy as np

from . import threads as T

_LOCAL = threading.local()


def _scratch(slot: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A scratch array of this thread, reused from call to call (contents undefined): the kernels'
    temporaries stop costing fresh memory (page faults, allocator trims) at every time step."""
    try:
        pool = _LOCAL.pool
    except AttributeError:
        pool = _LOCAL.pool = {}
    key = (slot, shape, dtype)
    buf = pool.get(key)
    if buf is None:
        if len(pool) > 32:
            pool.clear()
        buf = pool[key] = np.empty(shape, dtype=dtype)
    return buf


def _gate_major(a: np.ndarray, gates: int, hid: int) -> np.ndarray:
    """``(N, G*H)`` rows seen as ``(G, N, H)`` (a view: each gate's block a strided ``(N, H)`` plane)."""
    v = a.reshape(a.shape[0], gates, hid)
    if a.size and not np.may_share_memory(v, a):  # rows whose last axis is not unit-stride: no view
        raise ValueError(f"recurrent cell kernel: expected rows with a unit-stride last axis, got strides {a.strides}")
    return v.transpose(1, 0, 2)


def lstm_forward_rows(gates: np.ndarray, c_prev: np.ndarray, act: np.ndarray, h: np.ndarray, c: np.ndarray,
                      hid: int) -> None:
    """``act = [i, f, g, o, tanh(c)]``, ``c = f c_prev + i g``, ``h = o tanh(c)`` (rows of ``(N, 4H)`` gates).

    ``act`` may alias ``gates`` (the time loop's shared buffer): ``gates`` is read first. The work
    runs on a gate-major copy ``(4, N, H)`` (one transposing pass in, one out), so that every pass
    over one gate is over contiguous memory."""
    a = _scratch("a4", (4, gates.shape[0], hid), gates.dtype)
    np.copyto(a, _gate_major(gates, 4, hid))
    # sigmoid(x) = tanh(x / 2) / 2 + 1/2 for i, f and o; one tanh pass over all four gates
    sig = (a[0:2], a[3:4])
    for s in sig:
        s *= 0.5
    np.tanh(a, out=a)
    for s in sig:
        s *= 0.5
        s += 0.5
    i, f, g, o = a
    np.multiply(f, c_prev, out=c)
    tc = np.multiply(i, g, out=_scratch("tc", c.shape, c.dtype))
    c += tc
    np.tanh(c, out=tc)
    np.multiply(o, tc, out=h)
    np.copyto(_gate_major(act[:, :4 * hid], 4, hid), a)
    act[:, 4 * hid:] = tc


def lstm_backward_rows(act: np.ndarray, c_prev: np.ndarray, dh: np.ndarray, dc: np.ndarray | None,
                       d: np.ndarray, dct: np.ndarray, hid: int) -> None:
    """``d`` = gradients of the four gate pre-activations; ``dct`` = gradient of ``c_prev``.

    ``d`` may alias ``act[:, :4H]`` (the time loop's shared buffer): ``act`` is read in full before
    the one write into ``d``, the last pass. Works on gate-major copies, as the forward."""
    n = act.shape[0]
    a = _scratch("a4", (4, n, hid), d.dtype)
    np.copyto(a, _gate_major(act[:, :4 * hid], 4, hid))
    i, f, g, o = a
    tc = _scratch("tc", dh.shape, d.dtype)
    np.copyto(tc, act[:, 4 * hid:])
    dcn = np.multiply(tc, tc, out=_scratch("dcn", dh.shape, d.dtype))  # gradient of the new cell state
    np.subtract(1.0, dcn, out=dcn)
    dcn *= o
    dcn *= dh
    if dc is not None:
        dcn += dc
    # what multiplies each gate's derivative: (dc' g, dc' c_prev, dc' i, dh tanh(c'))
    partner = _scratch("partner", (4, n, hid), d.dtype)
    np.multiply(dcn, g, out=partner[0])
    np.multiply(dcn, c_prev, out=partner[1])
    np.multiply(dcn, i, out=partner[2])
    np.multiply(dh, tc, out=partner[3])
    np.multiply(dcn, f, out=dct)
    # derivatives of the activations: a(1 - a) (the sigmoids), then 1 - g^2 for g
    deriv = np.subtract(1.0, a, out=_scratch("deriv", (4, n, hid), d.dtype))
    deriv *= a
    np.multiply(g, g, out=deriv[2])
    np.subtract(1.0, deriv[2], out=deriv[2])
    partner *= deriv
    np.copyto(_gate_major(d, 4, hid), partner)


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
    """``dgx = (dr, dz, dn)``, ``dgh = (dr, dz, dn r)`` (pre-activation gradients), ``dh_direct = dh z``.

    ``dgx`` may alias ``act[:, :3H]`` (the time loop's shared buffer): it is written last."""
    two = 2 * hid
    r, z, n, hn = act[:, :hid], act[:, hid:two], act[:, two:3 * hid], act[:, 3 * hid:]
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
    dgh[:, :hid] = dr
    dgh[:, hid:two] = dz
    np.multiply(dn, r, out=dgh[:, two:])
    np.multiply(dh, z, out=dh_direct)
    dgx[:, :two] = dgh[:, :two]
    dgx[:, two:] = dn


def _rows(a: np.ndarray) -> np.ndarray:
    """``a`` as rows ``(prod(leading), last)`` (a view for C-contiguous arrays; 0-d/1-d: one row)."""
    if a.ndim == 0:
        return a.reshape(1, 1)
    return a.reshape(-1, a.shape[-1]) if a.ndim != 2 else a


def _one_chunk(first: np.ndarray, *others: np.ndarray | None) -> bool:
    """True when a kernel runs as one call on the caller's thread over 2-D arrays (the common case
    of a time step: no closure, no row views); ``first`` is the largest array."""
    if first.size >= T.MIN_PARALLEL_ELEMENTS and T.get_num_threads() > 1:
        return False
    if first.ndim != 2:
        return False
    for a in others:
        if a is not None and a.ndim != 2:
            return False
    return True


class NumpyRecurrentCells:
    """The recurrent cell kernels of the NumPy adapter (mixed into ``NumpyFused``): the row kernels
    above, split over nnx's thread pool for large batches."""

    def lstm_cell_forward(self, gates, c_prev, *, out=None):
        hid = c_prev.shape[-1]
        act = np.empty(gates.shape[:-1] + (5 * hid,), dtype=gates.dtype) if out is None else out
        h = np.empty(c_prev.shape, dtype=np.result_type(gates, c_prev))
        c = np.empty_like(h)
        if _one_chunk(act, gates, c_prev):
            lstm_forward_rows(gates, c_prev, act, h, c, hid)
            return h, c, act
        g2, cp2, a2, h2, c2 = _rows(gates), _rows(c_prev), _rows(act), _rows(h), _rows(c)

        def work(lo: int, hi: int) -> None:
            lstm_forward_rows(g2[lo:hi], cp2[lo:hi], a2[lo:hi], h2[lo:hi], c2[lo:hi], hid)

        T.parallel_rows(work, a2.shape[0], act.size)
        return h, c, act

    def lstm_cell_backward(self, act, c_prev, dh, dc, *, out=None):
        hid = c_prev.shape[-1]
        d = np.empty(act.shape[:-1] + (4 * hid,), dtype=act.dtype) if out is None else out
        dct = np.empty(c_prev.shape, dtype=act.dtype)
        if _one_chunk(act, c_prev, dh, dc):
            lstm_backward_rows(act, c_prev, dh, dc, d, dct, hid)
            return d, dct
        a2, cp2, dh2, d2, dct2 = _rows(act), _rows(c_prev), _rows(dh), _rows(d), _rows(dct)
        dc2 = _rows(dc) if dc is not None else None

        def work(lo: int, hi: int) -> None:
            lstm_backward_rows(a2[lo:hi], cp2[lo:hi], dh2[lo:hi], None if dc2 is None else dc2[lo:hi],
                               d2[lo:hi], dct2[lo:hi], hid)

        T.parallel_rows(work, a2.shape[0], act.size)
        return d, dct

    def gru_cell_forward(self, gx, gh, h_prev, b_hn=None, *, out=None):
        hid = h_prev.shape[-1]
        h = np.empty(h_prev.shape, dtype=np.result_type(gx, gh, h_prev))
        act = np.empty(gx.shape[:-1] + (4 * hid,), dtype=np.result_type(gx, gh)) if out is None else out
        if _one_chunk(act, gx, gh, h_prev):
            gru_forward_rows(gx, gh, h_prev, b_hn, h, act, hid)
            return h, act
        gx2, gh2, hp2, h2, a2 = _rows(gx), _rows(gh), _rows(h_prev), _rows(h), _rows(act)

        def work(lo: int, hi: int) -> None:
            gru_forward_rows(gx2[lo:hi], gh2[lo:hi], hp2[lo:hi], b_hn, h2[lo:hi], a2[lo:hi], hid)

        T.parallel_rows(work, a2.shape[0], act.size)
        return h, act

    def gru_cell_backward(self, act, h_prev, dh, *, out=None, out_gh=None):
        hid = h_prev.shape[-1]
        dtype = np.result_type(act, h_prev, dh)
        dgx = np.empty(act.shape[:-1] + (3 * hid,), dtype=dtype) if out is None else out
        dgh = np.empty(act.shape[:-1] + (3 * hid,), dtype=dtype) if out_gh is None else out_gh
        dh_direct = np.empty(dh.shape, dtype=dtype)
        if _one_chunk(act, h_prev, dh):
            gru_backward_rows(act, h_prev, dh, dgx, dgh, dh_direct, hid)
            return dgx, dgh, dh_direct
        a2, hp2, dh2, dgx2, dgh2, dd2 = _rows(act), _rows(h_prev), _rows(dh), _rows(dgx), _rows(dgh), _rows(dh_direct)

        def work(lo: int, hi: int) -> None:
            gru_backward_rows(a2[lo:hi], hp2[lo:hi], dh2[lo:hi], dgx2[lo:hi], dgh2[lo:hi], dd2[lo:hi], hid)

        T.parallel_rows(work, a2.shape[0], act.size)
        return dgx, dgh, dh_direct
