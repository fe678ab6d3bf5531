"""JAX adapter: an Array API library whose arrays are immutable.

``jax.numpy`` follows the Array API standard, but its arrays cannot be written in place:
``x[i] = v`` raises and ``x += v`` makes a new array and rebinds the name. nnx therefore routes
every write through the adapter (:meth:`Backend.at_set`, :meth:`Backend.at_add`, ...) and every
optimizer stores the arrays it computes; this backend proves that, as the suite runs on it.

Creating the backend turns on JAX's 64-bit mode (``jax_enable_x64``), process-wide, so that
float64 models and gradient checks work; nnx's default dtype stays float32. Random numbers
are drawn on the host (NumPy's PCG64) and copied to the device, as in the base adapter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Backend


def probe() -> str | None:
    try:
        import jax  # noqa: F401
        import jax.numpy  # noqa: F401
    except ImportError:
        return "JAX is not installed (pip install 'nnx-backprop[jax]')"
    return None


class JaxBackend(Backend):
    name = "jax"
    mutable = False

    def __init__(self, device: Any = None) -> None:
        super().__init__()
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)
        self._jax = jax
        self.xp = jnp
        self.array_type = jax.Array
        if device is None or isinstance(device, str):
            platform, _, index = (device or "cpu").partition(":")
            try:
                self.device = jax.devices(platform)[int(index or 0)]
            except (RuntimeError, IndexError) as exc:
                from .base import BackendUnavailable

                raise BackendUnavailable(f"backend 'jax': no device {device!r} ({exc})") from None
        else:
            self.device = device
        self.host_memory = self.device.platform == "cpu"

    @property
    def device_name(self) -> str:
        return f"{self.device.platform}:{self.device.id}"

    def device_of(self, x: Any) -> Any:
        if isinstance(x, self._jax.core.Tracer):  # inside jax.jit: placed by the compiled step
            return self.device
        return next(iter(x.devices()))

    def asarray(self, obj: Any, dtype: Any = None, copy: bool | None = None) -> Any:
        if dtype is not None:
            dtype = self.dtype(dtype)
        return self._jax.device_put(self.xp.asarray(obj, dtype=dtype, copy=copy), self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def synchronize(self) -> None:
        # JAX dispatches asynchronously; effects_barrier() only waits for side effects, so wait for
        # every live array of this device (the results of all dispatched computations)
        jax = self._jax
        jax.effects_barrier()
        jax.block_until_ready([a for a in jax.live_arrays() if self.device in a.devices()])

    def scatter_add(self, target: Any, indices: Any, values: Any) -> Any:
        return target.at[indices].add(values)

    def erf(self, x: Any) -> Any:
        import jax.scipy.special

        return jax.scipy.special.erf(x)
