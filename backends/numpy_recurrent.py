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

Where the host kernels are built (``host_kernels.py``), a step is one pass of ``host_kernels.c``
instead (its vectorised exp/tanh inlined into the cell: 2x faster forward, 4x backward at a
benchmark's ``(64, 128)``); these row functions then remain the fallback and the layout reference.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from . import host_kernels as HK
from . import threads as T
from .addresses import addr

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


def _ld(a: np.ndarray | None) -> int | None:
    """The row stride in elements of a 2-D float32/float64 ndarray whose last axis is unit-stride
    (what the cell kernels take), else None."""
    if type(a) is not np.ndarray or a.ndim != 2 or a.dtype not in (np.float32, np.float64):
        return None
    s0, s1 = a.strides
    if (s1 != a.itemsize and a.shape[1] > 1) or s0 < 0 or s0 % a.itemsize:
        return None
    return s0 // a.itemsize


def _in_place_or_apart(out: np.ndarray, inp: np.ndarray) -> bool:
    """``out`` may be written by a cell kernel while ``inp`` is read: the rows start at the same
    element with the same stride (each element read before it is written), or they do not overlap."""
    return (not np.may_share_memory(out, inp)
            or (addr(out) == addr(inp) and out.strides[0] == inp.strides[0]))


def _cell_kernel(name: str, arrays: tuple, widths: tuple, outputs: tuple, *, in_place: tuple = (),
                 apart: tuple = ()) -> Any:
    """The C cell kernel ``name`` for these arrays and their row strides, or None (the NumPy rows
    run). Taken when every array is 2-D rows of one float dtype, ``len(arrays[0])`` rows each and
    ``widths[i]`` columns; the ``outputs`` are writeable; an output that aliases an input does so in
    place (``in_place``: (output, input) pairs) and the other pairs in ``apart`` do not overlap."""
    lib = HK.kernels()
    if lib is None:
        return None
    dt, rows = arrays[0].dtype, arrays[0].shape[0] if arrays[0].ndim == 2 else -1
    lds = []
    for a, w in zip(arrays, widths[:len(arrays)], strict=True):
        ld = _ld(a)
        if ld is None or a.dtype != dt or a.shape != (rows, w):
            return None
        lds.append(ld)
    if not all(o.flags.writeable for o in outputs) or not all(_in_place_or_apart(o, i) for o, i in in_place):
        return None
    if any(np.may_share_memory(o, i) for o, i in apart):
        return None
    return lib.fn(name, dt), lds


def _row_ptr(a: np.ndarray, ld: int, lo: int) -> int:
    return addr(a) + lo * ld * a.itemsize


class NumpyRecurrentCells:
    """The recurrent cell kernels of the NumPy adapter (mixed into ``NumpyFused``): the row kernels
    above, split over nnx's thread pool for large batches."""

    def lstm_cell_forward(self, gates, c_prev, *, out=None):
        hid = c_prev.shape[-1]
        act = np.empty(gates.shape[:-1] + (5 * hid,), dtype=gates.dtype) if out is None else out
        h = np.empty(c_prev.shape, dtype=np.result_type(gates, c_prev))
        c = np.empty_like(h)
        k = _cell_kernel("nnx_lstm_fwd", (gates, c_prev, act, h, c), (4 * hid, hid, 5 * hid, hid, hid), (act,),
                         in_place=((act, gates),), apart=((act, c_prev),))
        if k is not None:
            fn, (lg, lcp, la, lh, lc) = k

            def kernel(lo: int, hi: int) -> None:
                fn(_row_ptr(gates, lg, lo), lg, _row_ptr(c_prev, lcp, lo), lcp, hi - lo, hid,
                   _row_ptr(act, la, lo), la, _row_ptr(h, lh, lo), lh, _row_ptr(c, lc, lo), lc)

            T.parallel_rows(kernel, act.shape[0], act.size)
            return h, c, act
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
        k = _cell_kernel("nnx_lstm_bwd", (act, c_prev, dh, d, dct) + ((dc,) if dc is not None else ()),
                         (5 * hid, hid, hid, 4 * hid, hid, hid), (d,), in_place=((d, act),),
                         apart=((d, c_prev), (d, dh)) + (((d, dc),) if dc is not None else ()))
        if k is not None:
            fn, (la, lcp, ldh, ld, lct, *ldc) = k

            def kernel(lo: int, hi: int) -> None:
                fn(_row_ptr(act, la, lo), la, _row_ptr(c_prev, lcp, lo), lcp, _row_ptr(dh, ldh, lo), ldh,
                   None if dc is None else _row_ptr(dc, ldc[0], lo), ldc[0] if ldc else 0, hi - lo, hid,
                   _row_ptr(d, ld, lo), ld, _row_ptr(dct, lct, lo), lct)

            T.parallel_rows(kernel, act.shape[0], act.size)
            return d, dct
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
        bias_ok = b_hn is None or (type(b_hn) is np.ndarray and b_hn.dtype == act.dtype and b_hn.shape == (hid,)
                                   and b_hn.flags.c_contiguous and not np.may_share_memory(b_hn, act))
        k = _cell_kernel("nnx_gru_fwd", (gx, gh, h_prev, h, act), (3 * hid, 3 * hid, hid, hid, 4 * hid), (act,),
                         in_place=((act, gx),), apart=((act, gh), (act, h_prev))) if bias_ok else None
        if k is not None:
            fn, (lx, lgh, lhp, lh, la) = k

            def kernel(lo: int, hi: int) -> None:
                fn(_row_ptr(gx, lx, lo), lx, _row_ptr(gh, lgh, lo), lgh, _row_ptr(h_prev, lhp, lo), lhp,
                   HK.ptr(b_hn), hi - lo, hid, _row_ptr(h, lh, lo), lh, _row_ptr(act, la, lo), la)

            T.parallel_rows(kernel, act.shape[0], act.size)
            return h, act
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
        k = _cell_kernel("nnx_gru_bwd", (act, h_prev, dh, dgx, dgh, dh_direct),
                         (4 * hid, hid, hid, 3 * hid, 3 * hid, hid), (dgx, dgh), in_place=((dgx, act),),
                         apart=((dgh, act), (dgh, dgx), (dgh, h_prev), (dgh, dh), (dgx, h_prev), (dgx, dh)))
        if k is not None:
            fn, (la, lhp, ldh, lx, lgh, ldd) = k

            def kernel(lo: int, hi: int) -> None:
                fn(_row_ptr(act, la, lo), la, _row_ptr(h_prev, lhp, lo), lhp, _row_ptr(dh, ldh, lo), ldh, hi - lo,
                   hid, _row_ptr(dgx, lx, lo), lx, _row_ptr(dgh, lgh, lo), lgh, _row_ptr(dh_direct, ldd, lo), ldd)

            T.parallel_rows(kernel, act.shape[0], act.size)
            return dgx, dgh, dh_direct
        if _one_chunk(act, h_prev, dh):
            gru_backward_rows(act, h_prev, dh, dgx, dgh, dh_direct, hid)
            return dgx, dgh, dh_direct
        a2, hp2, dh2, dgx2, dgh2, dd2 = _rows(act), _rows(h_prev), _rows(dh), _rows(dgx), _rows(dgh), _rows(dh_direct)

        def work(lo: int, hi: int) -> None:
            gru_backward_rows(a2[lo:hi], hp2[lo:hi], dh2[lo:hi], dgx2[lo:hi], dgh2[lo:hi], dd2[lo:hi], hid)

        T.parallel_rows(work, a2.shape[0], act.size)
        return dgx, dgh, dh_direct

    # ------------------------------------------------------------------ whole time loops
    def recurrent_scan(self, cell, x, h0, c0, w_hh):
        """True where ``host_kernels.c`` runs this direction's time loop in one call: the kernels
        are built, NumPy's BLAS is an OpenBLAS whose ``cblas_?gemm`` they can call
        (:func:`threads.cblas_gemm`), and every array is a float32 or float64 ndarray of one dtype."""
        gemm = T.cblas_gemm()
        if cell not in _SCAN_CELLS or HK.kernels() is None or gemm is None:
            return False
        dt = x.dtype
        if dt not in (np.float32, np.float64) or x.ndim != 3:
            return False
        if any(type(a) is not np.ndarray or a.dtype != dt for a in (x, h0, w_hh) + ((c0,) if c0 is not None else ())):
            return False
        steps, batch, hid = x.shape[0], x.shape[1], w_hh.shape[1]
        if not steps or not batch or not hid:
            return False
        return gemm[2] or max(batch, 5 * hid) < 2**31  # int indices where that BLAS is LP64

    def recurrent_scan_forward(self, cell, buf, h0, c0, w_hh, b_hn, reverse, out, h_prev, c_prev):
        """The forward time loop of ``nnx/functional/recurrent_loop.py`` for one direction, in C:
        ``buf (T, B, S*H)`` holds each step's input projection in its first ``G*H`` columns and
        takes each step's saved activations; ``out``, ``h_prev`` (and, LSTM, ``c_prev``), each
        ``(T, B, H)``, take every step's output, state before it and cell state before it.
        Returns the final ``(h, c)`` (``c`` None but for the LSTM). All arrays of ``buf``'s dtype
        and contiguous, but ``h_prev``, whose rows may be the first ``H`` columns of wider ones;
        see :meth:`recurrent_scan`."""
        lib, (sgemm, dgemm, ilp64) = HK.kernels(), T.cblas_gemm()
        dt = buf.dtype
        gemm = sgemm if dt == np.float32 else dgemm
        steps, batch, hid = buf.shape[0], buf.shape[1], w_hh.shape[1]
        w_hhT = np.ascontiguousarray(w_hh.T)  # row-major: OpenBLAS's h W_hh^T is 1.25x faster than on the view
        h0 = np.ascontiguousarray(h0)
        h_n = np.empty((batch, hid), dtype=dt)
        head = (gemm, ilp64, steps, batch, hid, int(reverse))
        work = steps * batch * hid * w_hh.shape[0]  # the recurrent products' multiply-adds
        parts = _scan_parts(batch)
        if cell == "LSTM":
            c_n = np.empty((batch, hid), dtype=dt)
            c0 = np.ascontiguousarray(c0)  # bound to a name: a temporary's address would outlive it
            lib.run("lstm_scan_fwd", dt, (*head, addr(buf), addr(w_hhT), addr(h0),
                                          addr(c0), addr(out), addr(h_prev),
                                          _steps_ld(h_prev), addr(c_prev), addr(h_n), addr(c_n)),
                    batch, work, parts)
            return h_n, c_n
        if cell == "GRU":
            gh = _scratch("scan_gh", (batch, 3 * hid), dt)
            bias = None if b_hn is None else np.ascontiguousarray(b_hn, dtype=dt)
            lib.run("gru_scan_fwd", dt, (*head, addr(buf), addr(w_hhT), HK.ptr(bias), addr(h0),
                                         addr(out), addr(h_prev), _steps_ld(h_prev), addr(h_n),
                                         addr(gh)), batch, work, parts)
            return h_n, None
        lib.run("rnn_scan_fwd", dt, (*head, int(cell == "RNN_RELU"), addr(buf), addr(w_hhT), addr(h0),
                                     addr(out), addr(h_prev), _steps_ld(h_prev), addr(h_n)),
                batch, work, parts)
        return h_n, None

    def recurrent_scan_backward(self, cell, buf, w_hh, h_prev, c_prev, dout, dh_n, dc_n, reverse, dgh):
        """Differentiate :meth:`recurrent_scan_forward`: each step's saved activations in ``buf``
        become its gate gradients (the GRU's recurrent-part gradients go to ``dgh (T, B, 3H)``);
        ``dout (T, B, H)``, ``dh_n``, ``dc_n`` may be None. Returns ``(dh0, dc0)`` (``dc0`` None
        but for the LSTM)."""
        lib, (sgemm, dgemm, ilp64) = HK.kernels(), T.cblas_gemm()
        dt = buf.dtype
        gemm = sgemm if dt == np.float32 else dgemm
        steps, batch, hid = buf.shape[0], buf.shape[1], w_hh.shape[1]
        w_hh = np.ascontiguousarray(w_hh)
        dh = np.zeros((batch, hid), dtype=dt) if dh_n is None else np.array(dh_n, dtype=dt, order="C")
        dout = None if dout is None else np.ascontiguousarray(dout, dtype=dt)
        head = (gemm, ilp64, steps, batch, hid, int(reverse))
        work = steps * batch * hid * w_hh.shape[0]
        parts = _scan_parts(batch)
        tmp = _scratch("scan_tmp", (batch, hid), dt)
        if cell == "LSTM":
            dc = np.empty((batch, hid), dtype=dt) if dc_n is None else np.array(dc_n, dtype=dt, order="C")
            lib.run("lstm_scan_bwd", dt, (*head, addr(buf), addr(w_hh), addr(c_prev), HK.ptr(dout),
                                          addr(dh), addr(dc), int(dc_n is not None), addr(tmp)),
                    batch, work, parts)
            return dh, dc
        if cell == "GRU":
            lib.run("gru_scan_bwd", dt, (*head, addr(buf), addr(w_hh), addr(h_prev),
                                         _steps_ld(h_prev), HK.ptr(dout), addr(dgh), addr(dh),
                                         addr(tmp)), batch, work, parts)
            return dh, None
        lib.run("rnn_scan_bwd", dt, (*head, int(cell == "RNN_RELU"), addr(buf), addr(w_hh), HK.ptr(dout),
                                     addr(dh)), batch, work, parts)
        return dh, None


def _steps_ld(a: np.ndarray) -> int:
    """The row stride, in elements, of ``(T, B, H)`` steps whose rows may be the first columns of
    wider ones (``(T, B, ld)`` rows with unit-stride columns and no gaps between steps)."""
    isz = a.itemsize
    ld = a.strides[1] // isz
    if a.strides != (a.shape[1] * ld * isz, ld * isz, isz) or ld < a.shape[2]:
        raise ValueError(f"recurrent_scan: expected (T, B, H) steps of whole rows, got shape {a.shape} "
                         f"and strides {a.strides}")
    return ld


#: the cells whose time loops ``host_kernels.c`` runs
_SCAN_CELLS = frozenset({"LSTM", "GRU", "RNN_TANH", "RNN_RELU"})

#: Batch rows per thread at least, when a time loop is split by rows over nnx's C pool: each
#: step's GEMM runs on a thread's rows, and a GEMM of a few rows runs far below the BLAS's speed
#: (measured, float32 (B, 128) @ (128, 512) at one thread: 64 rows 59.6 us, 32 rows 36.6 us).
MIN_SCAN_ROWS = 16


def _scan_parts(batch: int) -> int:
    """Threads for a time loop over ``batch`` rows: nnx's thread count, at most one per
    :data:`MIN_SCAN_ROWS` rows."""
    return max(1, min(T.get_num_threads(), batch // MIN_SCAN_ROWS))
