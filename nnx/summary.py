"""``nnx.summary``: a table of a model's layers, output shapes and parameter counts."""

from __future__ import annotations

from typing import Any

from .backend import get_default_dtype
from .grad_mode import no_grad
from .module import Module


def summary(model: Module, input_shape: tuple[int, ...] | None = None, batch_size: int = 1, dtype: str | None = None,
            print_fn: Any = print, *, input_size: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Run one forward pass on zeros and print a table of layers, output shapes and parameter counts.

    Two ways to give the input's shape:

    - ``input_shape`` **without** the batch dimension (Keras' form): the input is
      ``(batch_size, *input_shape)``, e.g. ``nnx.summary(model, (1, 28, 28))``;
    - ``input_size=`` **with** the batch dimension (torchinfo's form), e.g.
      ``nnx.summary(model, input_size=(16, 1, 28, 28))``.

    Returns ``{"layers": [(name, type, output_shape, n_params)], "total_params": int,
    "trainable_params": int}``. Nothing is recorded for backward and the model's mode is kept.
    """
    if (input_shape is None) == (input_size is None):
        raise TypeError("summary: give either input_shape (without the batch dimension) or input_size= (with it, "
                        "as torchinfo), not both and not neither")
    shape = tuple(input_size) if input_size is not None else (batch_size, *input_shape)
    b = model.backend
    x = b.xp.zeros(shape, dtype=b.dtype(dtype or _param_dtype(model)), device=b.device)
    rows: list[tuple[str, str, tuple, int]] = []
    removers = []
    for name, m in model.named_modules():
        if m is model and list(model.children()):
            continue

        def hook(mod: Module, inputs: tuple, out: Any, name: str = name) -> None:
            shape = tuple(out.shape) if hasattr(out, "shape") else tuple(
                tuple(o.shape) for o in out if hasattr(o, "shape"))
            n = sum(p.size for p in mod.parameters(recurse=False))
            rows.append((name or type(mod).__name__, type(mod).__name__, shape, n))

        removers.append(m.register_forward_hook(hook))
    try:
        with no_grad():
            model(x)
    except (ValueError, TypeError) as e:
        form = ("input_size=, which includes the batch dimension" if input_size is not None
                else "input_shape, which excludes the batch dimension (the input was (batch_size, *input_shape))")
        raise ValueError(f"summary: the forward pass on an input of shape {shape} failed; it was built from {form}. "
                         f"The model said: {e}") from e
    finally:
        for r in removers:
            r()
    total = sum(p.size for p in model.parameters())
    trainable = sum(p.size for p in model.parameters() if p.requires_grad)
    w = max([len(r[0]) + len(r[1]) + 3 for r in rows] + [20])
    lines = [f"{'Layer (type)':<{w}}  {'Output shape':<24}{'Param #':>12}", "=" * (w + 38)]
    for name, typ, shape, n in rows:
        lines.append(f"{name + ' (' + typ + ')':<{w}}  {str(shape):<24}{n:>12,}")
    lines += ["=" * (w + 38), f"Total params: {total:,}", f"Trainable params: {trainable:,}",
              f"Non-trainable params: {total - trainable:,}"]
    if print_fn is not None:
        print_fn("\n".join(lines))
    return {"layers": rows, "total_params": total, "trainable_params": trainable}


def _param_dtype(model: Module) -> str:
    for p in model.parameters():
        from nnx_backends import Backend

        return Backend.dtype_name(p.dtype)
    return get_default_dtype()
