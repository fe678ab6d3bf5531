"""array-api-strict adapter: the standard and nothing else.

Every extension here is the pure-standard (or host-side) fallback of :class:`Backend`. Running
the whole test suite on this backend proves that nnx itself uses only the standard, which is how
the CuPy code path stays honest on machines without a GPU. It offers the library's extra devices
(``"device1"``, ``"device2"``) so that device-mismatch handling is tested too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Backend


def probe() -> str | None:
    try:
        import array_api_strict  # noqa: F401
    except ImportError:
        return "array-api-strict is not installed (pip install 'nnx-backprop[strict]')"
    return None


class ArrayApiStrictBackend(Backend):
    name = "array_api_strict"
    host_memory = True

    def __init__(self, device: Any = None) -> None:
        super().__init__()
        import array_api_strict as xp

        self.xp = xp
        self.array_type = xp._array_object.Array
        if device is None or device == "cpu":
            self.device = xp.Device("CPU_DEVICE")
        elif isinstance(device, str):
            self.device = xp.Device(device)
        else:
            self.device = device

    @property
    def device_name(self) -> str:
        return str(self.device).split("'")[1] if "'" in str(self.device) else str(self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        # array-api-strict refuses the buffer protocol; move to its CPU device, then DLPack.
        if x.device != self.xp.Device("CPU_DEVICE"):
            x = self.xp.asarray(x, device=self.xp.Device("CPU_DEVICE"))
        return np.from_dlpack(x).copy()
