"""The fused-kernel methods of every adapter, with the pure-standard math as the fallback.

:class:`FusedOps` is mixed into :class:`~nnx_backends.base.Backend`. Each method is one device
kernel on CuPy (``cupy.py`` + ``cuda_kernels.py``), a few in-place passes on NumPy
(``numpy_fused.py``), and the readable reference in ``fused.py`` / ``fused_train.py`` elsewhere.
The launch meter (``nnx.count_launches``) counts one call of any of these as one launch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from . import fused as F
from . import fused_train as T
from . import im2col as C
from . import norm as N
from . import softmax as SM
from . import winograd as WG

Array = Any

#: adapter methods that are one device kernel each (what the launch meter counts as 1)
FUSED_METHODS = (
    "bias_act_forward", "bias_act_backward", "lstm_cell_forward", "lstm_cell_backward",
    "gru_cell_forward", "gru_cell_backward", "cross_entropy_forward", "cross_entropy_backward",
    "batch_norm_stats", "batch_norm_forward", "batch_norm_backward", "sgd_step_", "adam_step_",
    "adam_update_", "rmsprop_step_", "adagrad_step_", "grad_norm", "vecdot", "index_in_range",
    "im2col", "col2im", "sgd_multi_step_", "adam_multi_step_", "softmax_cols_forward", "softmax_cols_backward",
)


class FusedOps:
    """Fused kernels; see ``fused.py`` and ``fused_train.py`` for the meaning of each argument."""

    xp: Any

    def erf(self, x: Array) -> Array:  # pragma: no cover - defined by Backend
        raise NotImplementedError

    # ------------------------------------------------------------------ device placement
    @contextlib.contextmanager
    def device_context(self) -> Iterator[None]:
        """Run the block with this backend's device current (a no-op where arrays carry their device).

        CuPy (through array-api-compat) ignores ``device=`` in ``zeros``/``empty``/``arange``/...;
        code that creates temporaries on a non-default GPU runs inside this context.
        """
        yield

    # ------------------------------------------------------------------ reductions
    def vecdot(self, a: Array, b: Array, axis: int = -1) -> Array:
        """``sum(a * b, axis=axis)`` as one reduction (``xp.vecdot`` is a batched tiny GEMM on CuPy)."""
        return self.xp.sum(a * b, axis=axis)

    def index_in_range(self, index: Array, low: int, high: int, flag: Array | None = None) -> Array:
        """Record on the device whether every entry of ``index`` lies in ``[low, high)``, without
        reading anything back: returns a 0-d int32 ``flag`` that is non-zero once any batch was out
        of range (pass the returned flag back in to accumulate over steps). Read it at a log step
        with :meth:`raise_if_flagged`. ``ignore`` values must be mapped into range by the caller."""
        xp = self.xp
        bad = xp.astype(xp.any((index < low) | (index >= high)), xp.int32)
        return bad if flag is None else xp.maximum(flag, bad)

    def raise_if_flagged(self, flag: Array, what: str) -> None:
        """Read a flag of :meth:`index_in_range` (one small device-to-host copy) and raise
        ``IndexError`` naming ``what`` when it is set."""
        if int(self.to_numpy(flag)) != 0:  # type: ignore[attr-defined]
            raise IndexError(f"{what}: an index was out of range in a batch since the last check")

    # ------------------------------------------------------------------ layers
    # The recurrent cell kernels and bias + activation take an optional keyword-only ``out``: the
    # destination of their main result (``act`` of the forwards, the gate gradients of the
    # backwards), possibly a strided view of a larger buffer and possibly aliasing the kernel's own
    # ``act`` / ``saved`` input (the time loop's shared per-step buffer): every kernel reads its
    # inputs before it writes ``out``. The result returned is ``out`` itself. Mutable libraries
    # only (the time loop passes it on mutable host-memory libraries); here, the reference is
    # computed then copied into ``out``.
    def _into(self, out: Array | None, value: Array, name: str) -> Array:
        if out is None:
            return value
        if not getattr(self, "mutable", True):
            raise TypeError(f"{name}: out= needs a mutable array library; {self!r} is immutable")
        out[...] = value
        return out

    def bias_act_forward(self, x: Array, bias: Array | None, act: str, *,
                         out: Array | None = None) -> tuple[Array, Array]:
        """``act(x + bias)``; returns ``(y, saved)`` (``y`` written into ``out`` when given)."""
        y, saved = F.bias_act_forward(self.xp, x, bias, act, self.erf)
        if out is None:
            return y, saved
        return self._into(out, y, "bias_act_forward"), (out if saved is y else saved)

    def channel_sum(self, x: Array) -> Array:
        """``x`` ``(N, C, *spatial)`` summed over every axis but the channels, ``(C,)``: a
        convolution's bias gradient."""
        return self.xp.sum(x, axis=(0, *range(2, x.ndim)))

    def bias_act_backward(self, dy: Array, saved: Array, act: str, has_bias: bool = True, *,
                          out: Array | None = None) -> tuple[Array, Any]:
        """``(dx, dbias)`` of :meth:`bias_act_forward` (``dx`` into ``out``, which may be ``saved``)."""
        dx, db = F.bias_act_backward(self.xp, dy, saved, act, has_bias, self.erf)
        return self._into(out, dx, "bias_act_backward"), db

    def lstm_cell_forward(self, gates: Array, c_prev: Array, *,
                          out: Array | None = None) -> tuple[Array, Array, Array]:
        """``(h, c, act)`` of one LSTM step from pre-activation gates ``(N, 4H)`` (``act`` ``(N, 5H)``
        written into ``out`` when given)."""
        h, c, act = F.lstm_cell_forward(self.xp, gates, c_prev)
        return h, c, self._into(out, act, "lstm_cell_forward")

    def lstm_cell_backward(self, act: Array, c_prev: Array, dh: Array, dc: Array | None, *,
                           out: Array | None = None) -> tuple[Array, Array]:
        """``(dgates, dc_prev)`` of one LSTM step (``dgates`` ``(N, 4H)`` into ``out``, which may
        alias ``act[..., :4H]``)."""
        d, dc_prev = F.lstm_cell_backward(self.xp, act, c_prev, dh, dc)
        return self._into(out, d, "lstm_cell_backward"), dc_prev

    def gru_cell_forward(self, gx: Array, gh: Array, h_prev: Array, b_hn: Array | None = None, *,
                         out: Array | None = None) -> tuple[Array, Array]:
        """``(h, act)`` of one GRU step (PyTorch's formulation; ``act`` ``(N, 4H)`` into ``out``)."""
        h, act = F.gru_cell_forward(self.xp, gx, gh, h_prev, b_hn)
        return h, self._into(out, act, "gru_cell_forward")

    def gru_cell_backward(self, act: Array, h_prev: Array, dh: Array, *, out: Array | None = None,
                          out_gh: Array | None = None) -> tuple[Array, Array, Array]:
        """``(dgx, dgh, dh_prev_direct)`` of one GRU step (``dgx`` into ``out``, which may alias
        ``act[..., :3H]``; ``dgh`` into ``out_gh``)."""
        dgx, dgh, dh_direct = F.gru_cell_backward(self.xp, act, h_prev, dh)
        return self._into(out, dgx, "gru_cell_backward"), self._into(out_gh, dgh, "gru_cell_backward"), dh_direct

    def cross_entropy_forward(self, logits: Array, target: Array, weight: Array | None = None, **kw: Any) -> tuple:
        """``(loss, saved)`` of log-softmax + NLL (``ignore_index``, ``label_smoothing``, ``reduction``)."""
        return T.cross_entropy_forward(self.xp, logits, target, weight, **kw)

    def cross_entropy_backward(self, grad: Array, saved: tuple, target: Array, weight: Array | None = None,
                               **kw: Any) -> Array:
        """Gradient of :meth:`cross_entropy_forward` with respect to the logits."""
        return T.cross_entropy_backward(self.xp, grad, saved, target, weight, **kw)

    def fast_cross_entropy(self) -> bool:
        """True where :meth:`cross_entropy_forward` / ``_backward`` are this host-memory adapter's
        own fast kernels, so that the CPU-shaped cross-entropy of class indices takes them too."""
        return False

    def multi_tensor_kinds(self) -> tuple[str, ...]:
        """Optimizers (``"adam"``, ``"sgd"``) whose ``*_multi_step_`` this host-memory adapter runs as
        one kernel for a parameter group, so that they take it on the CPU-shaped path too (NumPy
        with its host kernels: Adam and SGD). Device backends take every one anyway."""
        return ()

    def fast_activations(self) -> tuple[str, ...]:
        """Activations this host-memory adapter runs through :meth:`bias_act_forward` /
        ``_backward`` as fused kernels, so that the activation ops take them instead of their
        standard passes (NumPy with its host kernels: ReLU). Device backends take them anyway."""
        return ()

    def fast_batch_norm(self) -> bool:
        """Whether this host-memory adapter runs :meth:`batch_norm_stats` / ``_forward`` / ``_backward``
        as fused kernels, so that training-mode BatchNorm takes them instead of its whole-array
        passes (NumPy with its host kernels). Device backends take them anyway."""
        return False

    def batch_norm_stats(self, x: Array) -> tuple[Array, Array]:
        """Per-channel ``(mean, biased var)`` of ``(N, C, L)``."""
        return T.batch_norm_stats(self.xp, x)

    def batch_norm_forward(self, x: Array, mean: Array, var: Array, weight: Array | None, bias: Array | None,
                           eps: float) -> tuple[Array, Array]:
        """``(y, invstd)`` of the normalisation on ``(N, C, L)``."""
        return T.batch_norm_forward(self.xp, x, mean, var, weight, bias, eps)

    def batch_norm_backward(self, dy: Array, x: Array, mean: Array, invstd: Array,
                            weight: Array | None) -> tuple[Array, Array, Array]:
        """``(dx, dweight, dbias)`` of training-mode BatchNorm on ``(N, C, L)``."""
        return T.batch_norm_backward(self.xp, dy, x, mean, invstd, weight)

    # ------------------------------------------------------------------ convolution gather / scatter
    def softmax_cols_forward(self, s: Array) -> tuple[Array, Array]:
        """Softmax down each column of ``s`` ``(..., S, L)``: ``(p, lse)`` (``softmax.py``); ``s`` is consumed."""
        return SM.softmax_cols_forward(self.xp, s)

    def softmax_cols_backward(self, dp: Array, p: Array) -> Array:
        """Gradient of :meth:`softmax_cols_forward` from dL/dp; ``dp`` is consumed."""
        return SM.softmax_cols_backward(self.xp, dp, p, self.vecdot)

    def layer_norm_rows_forward(self, x: Array, weight: Array | None, bias: Array | None,
                                eps: float) -> tuple[Array, Array, Array]:
        """Layer normalisation of each row of ``x`` ``(rows, n)``: ``(y, xhat, invstd)`` (``norm.py``)."""
        return N.layer_norm_rows_forward(self.xp, x, weight, bias, eps, self.vecdot)

    def layer_norm_rows_backward(self, dy: Array, xhat: Array, invstd: Array, weight: Array | None,
                                 has_bias: bool, input_grad: bool) -> tuple[Array | None, Any, Any]:
        """``(dx, dweight, dbias)`` of :meth:`layer_norm_rows_forward` (``dx`` None without ``input_grad``)."""
        return N.layer_norm_rows_backward(self.xp, dy, xhat, invstd, weight, has_bias, input_grad, self.vecdot)

    def im2col(self, x: Array, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
               pads: tuple[int, int], out: tuple[int, int], fill: float = 0.0) -> Array:
        """``(N, C*kh*kw, OH*OW)`` convolution windows of ``x (N, C, H, W)`` with an implicit
        padding of ``pads = (top, left)`` that reads as ``fill``, rows ordered ``(c, a, b)``
        (see ``im2col.py``)."""
        return C.im2col(self, x, kernel, stride, dilation, pads, out, fill)

    def col2im(self, cols: Array, shape: tuple[int, int, int, int], kernel: tuple[int, int],
               stride: tuple[int, int], dilation: tuple[int, int], pads: tuple[int, int],
               out: tuple[int, int]) -> Array:
        """Adjoint of :meth:`im2col`: ``cols (N, C*kh*kw, OH*OW)`` summed onto an image of ``shape``."""
        return C.col2im(self, cols, shape, kernel, stride, dilation, pads, out)

    def recurrent_scan(self, cell: str, x: Array, h0: Array, c0: Array | None, w_hh: Array) -> bool:
        """Whether this adapter runs the whole time loop of one direction of a recurrent layer as
        one call (``recurrent_scan_forward`` / ``recurrent_scan_backward``, NumPy with its host
        kernels) for ``cell`` (``"LSTM"``, ``"GRU"``, ``"RNN_TANH"``, ``"RNN_RELU"``), the input
        ``x (T, B, I)``, the initial states and ``w_hh``. Elsewhere (and for masked or projected
        layers) ``nnx/functional/recurrent.py`` runs its loop of per-step methods, the reference."""
        return False

    def fast_direct_conv(self) -> bool:
        """Whether this host-memory adapter runs :meth:`conv2d_direct` / ``_weight_grad`` as fused
        kernels, so that convolutions with few taps per output take them (the rule of
        ``nnx/functional/_direct_conv.py``; NumPy with its host kernels)."""
        return False

    def conv2d_direct(self, x: Array, weight: Array, bias: Array | None, pads: tuple[int, int],
                      out: tuple[int, int]) -> Array:
        """Stride-1 convolution of ``x (N, C, H, W)`` with ``weight (O, C, kh, kw)`` and an implicit
        zero padding of ``pads = (top, left)`` (negative: rows/columns cropped), ``bias`` ``(O,)`` or
        None: ``(N, O, *out)``. Reference: :meth:`im2col` and one batched product."""
        xp = self.xp
        n, o = x.shape[0], weight.shape[0]
        kernel = (weight.shape[2], weight.shape[3])
        if min(pads) < 0:  # crop first: im2col pads only
            x = x[:, :, max(0, -pads[0]):, max(0, -pads[1]):]
            pads = (max(0, pads[0]), max(0, pads[1]))
        cols = self.im2col(x, kernel, (1, 1), (1, 1), pads, out)
        y = xp.matmul(xp.reshape(weight, (o, -1)), cols)
        if bias is not None:
            y = y + xp.reshape(bias, (1, o, 1))
        return xp.reshape(y, (n, o, out[0], out[1]))

    def conv2d_direct_weight_grad(self, x: Array, dy: Array, kernel: tuple[int, int], pads: tuple[int, int]) -> Array:
        """The weight gradient ``(O, C, kh, kw)`` of :meth:`conv2d_direct` for ``dy (N, O, OH, OW)``.
        Reference: :meth:`im2col` and one batched product summed over the batch."""
        xp = self.xp
        n, o, oh, ow = dy.shape
        cols = self.im2col(x, kernel, (1, 1), (1, 1), pads, (oh, ow))
        dw = xp.sum(xp.matmul(xp.reshape(dy, (n, o, oh * ow)), xp.matrix_transpose(cols)), axis=0)
        return xp.reshape(dw, (o, x.shape[1], kernel[0], kernel[1]))

    def fast_gemm_conv(self) -> bool:
        """Whether this host-memory adapter runs :meth:`conv2d_gemm` / ``_backward`` as fused
        kernels on its own thread pool, so that stride-1 convolutions the Winograd and direct
        paths leave take them (``nnx/functional/_gemm_conv.py``; NumPy with its host kernels and
        OpenBLAS)."""
        return False

    def conv2d_gemm(self, x: Array, weight: Array, bias: Array | None, pads: tuple[int, int],
                    out: tuple[int, int]) -> Array:
        """Stride-1 convolution of ``x (N, C, H, W)`` with ``weight (O, C, kh, kw)``, a zero padding
        of ``pads = (top, left)`` (``>= 0``; bottom and right follow from ``out``) and ``bias``
        ``(O,)`` or None: ``(N, O, *out)``. Reference: :meth:`conv2d_direct`'s (im2col, one product)."""
        return FusedOps.conv2d_direct(self, x, weight, bias, pads, out)

    def conv2d_gemm_backward(self, x: Array, weight: Array, dy: Array, pads: tuple[int, int],
                             input_grad: bool = True) -> tuple[Array | None, Array]:
        """``(dx or None, dweight)`` of :meth:`conv2d_gemm` for ``dy (N, O, OH, OW)`` (the bias
        gradient is the caller's sum of ``dy``). Reference: :meth:`conv2d_direct_weight_grad`'s
        product, and ``W^T dy`` summed back by :meth:`col2im`."""
        xp = self.xp
        n, o, oh, ow = dy.shape
        kh, kw = weight.shape[2], weight.shape[3]
        dweight = FusedOps.conv2d_direct_weight_grad(self, x, dy, (kh, kw), pads)
        dx = None
        if input_grad:
            dcols = xp.matmul(xp.matrix_transpose(xp.reshape(weight, (o, -1))), xp.reshape(dy, (n, o, oh * ow)))
            dx = self.col2im(dcols, tuple(x.shape), (kh, kw), (1, 1), (1, 1), pads, (oh, ow))
        return dx, dweight

    def fast_max_pool(self) -> bool:
        """Whether this host-memory adapter runs :meth:`max_pool2d_forward` / ``_backward`` as fused
        kernels, so that max pooling takes them instead of its separable whole-array passes
        (NumPy with its host kernels). Device backends take them anyway."""
        return False

    def max_pool2d_forward(self, x: Array, kernel: tuple[int, int], stride: tuple[int, int],
                           dilation: tuple[int, int], pads: tuple[int, int], out: tuple[int, int]) -> tuple[Array, Any]:
        """Max pooling of ``x (N, C, H, W)`` with an implicit ``-inf`` padding of ``pads = (top,
        left)``: ``(y (N, C, OH, OW), saved)``, ``saved`` for :meth:`max_pool2d_backward` only.
        Reference: the windows gathered by :meth:`im2col`, ``max`` and ``argmax`` (the first
        maximum, as PyTorch) over the taps; ``saved`` is the argmax."""
        xp = self.xp
        n, c = x.shape[0], x.shape[1]
        kk, length = kernel[0] * kernel[1], out[0] * out[1]
        cols = xp.reshape(self.im2col(x, kernel, stride, dilation, pads, out, -float("inf")), (n, c, kk, length))
        idx = xp.argmax(cols, axis=2)
        return xp.reshape(xp.max(cols, axis=2), (n, c, out[0], out[1])), idx

    def max_pool2d_backward(self, dy: Array, saved: Any, shape: tuple[int, int, int, int], kernel: tuple[int, int],
                            stride: tuple[int, int], dilation: tuple[int, int], pads: tuple[int, int],
                            out: tuple[int, int]) -> Array:
        """``dx`` of :meth:`max_pool2d_forward`: each ``dy`` to its window's maximum, summed where
        windows overlap. Reference: ``dy`` routed to the argmax tap (``where``), the taps summed
        back by :meth:`col2im`."""
        xp = self.xp
        n, c = shape[0], shape[1]
        kk, length = kernel[0] * kernel[1], out[0] * out[1]
        taps = xp.reshape(xp.arange(kk, dtype=saved.dtype, device=self.device_of(dy)), (1, 1, kk, 1))
        routed = xp.where(taps == xp.reshape(saved, (n, c, 1, length)), xp.reshape(dy, (n, c, 1, length)), 0.0)
        return self.col2im(xp.reshape(routed, (n, c * kk, length)), shape, kernel, stride, dilation, pads, out)

    def fast_winograd_tiles(self) -> tuple[int, ...]:
        """Winograd output tile sizes whose transforms this adapter runs as fused kernels (the
        automatic rule of ``nnx/functional/winograd.py`` picks Winograd only for these); the
        reference's strided standard passes are slower than im2col on every shape measured."""
        return ()

    def winograd_filter_transform(self, weight: Array, m: int, flip: bool = False) -> Array:
        """Winograd F(m x m, 3 x 3) filter tiles ``G w G^T`` of ``weight (O, C, 3, 3)``: ``(a*a, O,
        C)``; with ``flip``, those of the input gradient's filter, ``(a*a, C, O)`` (``winograd.py``)."""
        return WG.filter_transform(self, weight, m, flip)

    def winograd_filter_grad(self, du: Array, m: int) -> Array:
        """``G^T dU G`` of ``du (a*a, O, C)``: the gradient ``(O, C, 3, 3)`` of the filter whose
        tiles :meth:`winograd_filter_transform` made (``winograd.py``)."""
        return WG.filter_grad(self, du, m)

    def winograd_input_transform(self, x: Array, m: int, top: int, left: int, th: int, tw: int) -> Array:
        """Winograd F(m x m, 3 x 3) input tiles ``B^T d B`` of ``x (N, C, H, W)``, implicitly
        zero-padded by ``top``/``left`` and up to whole tiles: ``(a*a, C, N*th*tw)`` (``winograd.py``)."""
        return WG.input_transform(self, x, m, top, left, th, tw)

    def winograd_output_transform(self, mm: Array, m: int, n: int, th: int, tw: int, oh: int, ow: int) -> Array:
        """``A^T M A`` of ``mm (a*a, O, N*th*tw)`` into ``(N, O, oh, ow)`` (``winograd.py``)."""
        return WG.output_transform(self, mm, m, n, th, tw, oh, ow)

    def winograd_conv(self, x: Array, u: Array, m: int, top: int, left: int, th: int, tw: int, oh: int,
                      ow: int) -> Array:
        """The core of a Winograd convolution: ``x (N, C, H, W)`` with the transformed filter
        ``u (a*a, O, C)`` into ``(N, O, oh, ow)`` -- input transform, one GEMM per tile position,
        output transform (``nnx/functional/winograd.py``)."""
        v = self.winograd_input_transform(x, m, top, left, th, tw)
        mm = self.matmul(u, v)
        del v
        return self.winograd_output_transform(mm, m, x.shape[0], th, tw, oh, ow)

    def winograd_dy_transform(self, dy: Array, m: int, th: int, tw: int) -> Array:
        """The adjoint of :meth:`winograd_output_transform`: ``A dY A^T`` per output tile of
        ``dy (N, O, oh, ow)``, ``(a*a, O, N*th*tw)`` (``winograd.py``)."""
        return WG.dy_transform(self, dy, m, th, tw)

    # ------------------------------------------------------------------ optimizers (flat buffers)
    # The ``*_step_`` methods update their arguments in place: they are for mutable libraries, where
    # the optimizers' device-shaped path calls them (``Optimizer._update_group``); on an immutable
    # library the optimizers take their per-parameter path, which stores every result it computes.
    def sgd_step_(self, param: Array, grad: Array, buf: Array | None, **kw: Any) -> None:
        """SGD (momentum, dampening, nesterov, weight decay) in place."""
        T.sgd_step_(self.xp, param, grad, buf, **kw)

    def adam_step_(self, param: Array, grad: Array, exp_avg: Array, exp_avg_sq: Array,
                   max_exp_avg_sq: Array | None = None, **kw: Any) -> None:
        """Adam / AdamW (``decoupled=True``) / amsgrad (``max_exp_avg_sq`` given) in place."""
        T.adam_step_(self.xp, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, **kw)

    def sgd_multi_step_(self, params: list, grads: list, bufs: list | None, **kw: Any) -> None:
        """:meth:`sgd_step_` on every tensor of a group at once (one kernel on CuPy); ``bufs`` None
        without momentum. Mutable backends only, like every ``*_step_``."""
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            self.sgd_step_(p, g, bufs[i] if bufs is not None else None, **kw)

    def adam_multi_step_(self, params: list, grads: list, exp_avgs: list, exp_avg_sqs: list,
                         max_exp_avg_sqs: list | None = None, **kw: Any) -> None:
        """:meth:`adam_step_` on every tensor of a group at once (one kernel on CuPy)."""
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            self.adam_step_(p, g, exp_avgs[i], exp_avg_sqs[i],
                            max_exp_avg_sqs[i] if max_exp_avg_sqs is not None else None, **kw)

    def rmsprop_step_(self, param: Array, grad: Array, square_avg: Array, buf: Array | None = None,
                      **kw: Any) -> None:
        """RMSprop (not centered) in place."""
        T.rmsprop_step_(self.xp, param, grad, square_avg, buf, **kw)

    def adagrad_step_(self, param: Array, grad: Array, state_sum: Array, **kw: Any) -> None:
        """Adagrad in place."""
        T.adagrad_step_(self.xp, param, grad, state_sum, **kw)

    def grad_norm(self, flat: Array) -> Array:
        """2-norm of a flat buffer as a 0-d array (one reduction)."""
        return T.grad_norm(self.xp, flat)
