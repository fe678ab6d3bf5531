"""3-D convolution (``conv3d``), forward + backward, as ``kd`` 2-D convolutions.

``y[:, :, od] = sum_a conv2d(x[:, :, od*sd + a*dd], weight[:, :, a])``: for each depth tap ``a`` of
the kernel, the depth slices it reads (one strided slice of the depth-padded input) are folded into
the batch, ``(N*OD, C, H, W)``, and convolved with the 2-D kernel ``weight[:, :, a]`` by
:func:`.convolution.conv2d_forward`; the ``kd`` results are summed. So a 3-D convolution takes
every path of the 2-D one (the device-shaped one on GPUs, ``at_add`` writes on immutable
libraries). The backward runs the ``kd`` 2-D backwards: the weight gradient is their stack along
the depth axis of the kernel, the input gradient their sum written back onto the depth slices
(``at_add``; one strided slice per tap, so the positions inside one write are distinct).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nnx_backends as backends

from ._validation import ntuple
from ._windows import output_sizes
from .convolution import _check_operands, conv2d_forward, conv_padding

Array = Any
Backward = Callable[..., tuple[Any, tuple]]

__all__ = ["conv3d", "conv3d_forward"]


def _depth_pad(xp: Any, x: Array, front: int, back: int) -> Array:
    """``x`` with ``front``/``back`` zero depth slices (axis 2) added."""
    if front == back == 0:
        return x
    n, c, _, h, w = x.shape
    parts = [xp.zeros((n, c, k, h, w), dtype=x.dtype, device=backends.device_of(x)) for k in (front, back)]
    return xp.concat([parts[0], x, parts[1]], axis=2)


def conv3d_forward(x: Array, weight: Array, bias: Array | None = None, stride: Any = 1, padding: Any = 0,
                   dilation: Any = 1, groups: int = 1, *, where: str = "conv3d") -> tuple[Array, Backward]:
    """3-D cross-correlation (``torch.nn.functional.conv3d``), NCDHW.

    Shapes: ``x`` ``(N, C, D, H, W)``, ``weight`` ``(O, C/groups, kd, kh, kw)``, ``bias`` ``(O,)``;
    output ``(N, O, OD, OH, OW)``. ``padding`` is an int, a triple, ``"valid"`` or ``"same"``
    (stride 1; the extra element at the end, as PyTorch). ``backward(dy, input_grad=True)`` returns
    ``(dx, (dweight, dbias))``.

    >>> import nnx
    >>> x, w = nnx.asarray([[[[[1.0] * 3] * 3] * 3]]), nnx.asarray([[[[[1.0] * 2] * 2] * 2]])
    >>> y, back = conv3d_forward(x, w)
    >>> tuple(y.shape), float(nnx.to_numpy(y)[0, 0, 0, 0, 0])
    ((1, 1, 2, 2, 2), 8.0)
    """
    b = backends.backend_of(x)
    xp = b.xp
    stride_ = ntuple(where, "stride", stride, 3)
    dilation_ = ntuple(where, "dilation", dilation, 3)
    padding_ = conv_padding(where, padding, stride_, n=3)
    _check_operands(where, x, weight, groups, "(N, C, D, H, W)")
    kernel = tuple(weight.shape[2:])
    if padding_ == "same":
        total = dilation_[0] * (kernel[0] - 1)
        front, back = total // 2, total - total // 2
        pad2: Any = "same"
    else:
        p = (0, 0, 0) if padding_ == "valid" else padding_
        front = back = p[0]
        pad2 = (p[1], p[2])
    if isinstance(pad2, tuple):
        output_sizes(where, x, kernel, stride_, (2 * front, 2 * pad2[0], 2 * pad2[1]), dilation_)
    else:
        output_sizes(where, x, kernel, stride_, tuple(d * (k - 1) for k, d in zip(kernel, dilation_, strict=True)),
                     dilation_)
    n, c, depth, h, w = x.shape
    o = weight.shape[0]
    sd, dd = stride_[0], dilation_[0]
    xd = _depth_pad(xp, x, front, back)
    od = (depth + front + back - dd * (kernel[0] - 1) - 1) // sd + 1
    taps = [slice(a * dd, a * dd + sd * (od - 1) + 1, sd) for a in range(kernel[0])]
    y2 = None
    backs = []
    for a, sl in enumerate(taps):
        slab = xp.reshape(xp.permute_dims(xd[:, :, sl, ...], (0, 2, 1, 3, 4)), (n * od, c, h, w))
        ya, back_a = conv2d_forward(slab, weight[:, :, a, ...], None, stride_[1:], pad2, dilation_[1:], groups,
                                    where=where)
        backs.append(back_a)
        y2 = ya if y2 is None else y2 + ya
    oh, ow = y2.shape[2], y2.shape[3]
    y = xp.permute_dims(xp.reshape(y2, (n, od, o, oh, ow)), (0, 2, 1, 3, 4))
    if bias is not None:
        y = y + xp.reshape(bias, (1, o, 1, 1, 1))
    padded_depth = depth + front + back

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        dy2 = xp.reshape(xp.permute_dims(dy, (0, 2, 1, 3, 4)), (n * od, o, oh, ow))
        dws = []
        dxd = xp.zeros((n, c, padded_depth, h, w), dtype=dy.dtype, device=b.device_of(dy)) if input_grad else None
        for sl, back_a in zip(taps, backs, strict=True):
            dslab, (dwa, _) = back_a(dy2, input_grad)
            dws.append(dwa)
            if input_grad:
                part = xp.permute_dims(xp.reshape(dslab, (n, od, c, h, w)), (0, 2, 1, 3, 4))
                dxd = b.at_add(dxd, (slice(None), slice(None), sl, ...), part)
        dweight = xp.stack(dws, axis=2)
        dbias = b.channel_sum(dy) if bias is not None else None
        dx = None
        if input_grad:
            dx = dxd if padded_depth == depth else dxd[:, :, front:front + depth, ...]
        return dx, (dweight, dbias)

    return y, backward


def conv3d(x: Array, weight: Array, bias: Array | None = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Array:
    """Functional form of :func:`conv3d_forward` (as ``torch.nn.functional.conv3d``)."""
    return conv3d_forward(x, weight, bias, stride, padding, dilation, groups)[0]
