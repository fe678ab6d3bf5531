"""PyTorch adapter: a second real backend with devices (``"cpu"``, ``"cuda:0"``).

nnx does its own backprop, so tensors are plain arrays here: autograd is never used. The
namespace is ``array_api_compat.torch``; random numbers come from a ``torch.Generator`` on the
backend's device.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Backend


def probe() -> str | None:
    try:
        import array_api_compat.torch  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return "PyTorch is not installed (pip install torch)"
    return None


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, device: Any = None) -> None:
        super().__init__()
        import array_api_compat.torch as xp
        import torch

        self._torch = torch
        self.xp = xp
        self.array_type = torch.Tensor
        dev = torch.device("cpu" if device is None else device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            from .base import BackendUnavailable

            raise BackendUnavailable("backend 'torch': CUDA device requested but torch.cuda.is_available() is False")
        self.device = dev
        self.host_memory = dev.type == "cpu"
        self._gen = torch.Generator(device=dev)
        self._gen.seed()

    def asarray(self, obj: Any, dtype: Any = None, copy: bool | None = None) -> Any:
        torch = self._torch
        if isinstance(obj, np.ndarray) and any(s < 0 for s in obj.strides):
            obj = np.ascontiguousarray(obj)  # torch refuses negative strides (x[::-1]); this copy is needed anyway
        # torch.asarray honours copy=True for NumPy arrays too (as_tensor would share their memory)
        return torch.asarray(obj, dtype=self.dtype(dtype) if dtype is not None else None, device=self.device,
                             copy=copy)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()

    def launch_meter(self) -> Any:
        """Count the ATen operators dispatched inside the block (views and allocations excluded)."""
        from .counting import torch_meter

        return torch_meter()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self._torch.cuda.synchronize(self.device)

    def manual_seed(self, seed: int) -> None:
        super().manual_seed(seed)
        self._gen.manual_seed(seed)

    def get_rng_state(self) -> dict:
        return {"kind": "torch", "state": self._gen.get_state().tolist()}

    def set_rng_state(self, state: dict) -> None:
        if state.get("kind") != "torch":
            raise ValueError(f"backend 'torch': cannot restore RNG state of kind {state.get('kind')!r}")
        self._gen.set_state(self._torch.tensor(state["state"], dtype=self._torch.uint8))

    def uniform(self, shape, low, high, dtype):
        out = self._torch.empty(tuple(shape), dtype=self.dtype(dtype), device=self.device)
        return out.uniform_(low, high, generator=self._gen)

    def normal(self, shape, mean, std, dtype):
        out = self._torch.empty(tuple(shape), dtype=self.dtype(dtype), device=self.device)
        return out.normal_(mean, std, generator=self._gen)

    def bernoulli(self, shape, p, dtype):
        out = self._torch.empty(tuple(shape), dtype=self.dtype(dtype), device=self.device)
        return out.bernoulli_(p, generator=self._gen)

    def permutation(self, n):
        return self._torch.randperm(n, generator=self._gen, device=self.device)

    def randint(self, shape, low, high):
        return self._torch.randint(low, high, tuple(shape), generator=self._gen, device=self.device)

    def scatter_add(self, target, indices, values):
        return target.index_add_(0, indices, values)

    def erf(self, x):
        return self._torch.erf(x)

    def sliding_windows(self, x, window, axes):
        # Tensor.unfold appends each window dimension last, in order: NumPy's sliding_window_view layout
        for axis, size in zip(axes, window, strict=True):
            x = x.unfold(axis, size, 1)
        return x

    def _torch_geometry(self, shape, kernel, stride, dilation, pads, out):
        """True when torch's ``unfold``/``fold`` (symmetric padding) give exactly ``out`` windows."""
        return all((size + 2 * p - d * (k - 1) - 1) // s + 1 == o
                   for size, k, s, d, p, o in zip(shape[2:], kernel, stride, dilation, pads, out, strict=True))

    def im2col(self, x, kernel, stride, dilation, pads, out, fill=0.0):
        # one kernel (torch.nn.functional.unfold) where its symmetric zero padding fits
        if fill != 0.0 or x.ndim != 4 or not self._torch_geometry(x.shape, kernel, stride, dilation, pads, out):
            return super().im2col(x, kernel, stride, dilation, pads, out, fill)
        return self._torch.nn.functional.unfold(x, kernel, dilation=dilation, padding=pads, stride=stride)

    def col2im(self, cols, shape, kernel, stride, dilation, pads, out):
        if not self._torch_geometry(shape, kernel, stride, dilation, pads, out):
            return super().col2im(cols, shape, kernel, stride, dilation, pads, out)
        return self._torch.nn.functional.fold(cols, tuple(shape[2:]), kernel, dilation=dilation, padding=pads,
                                              stride=stride)
