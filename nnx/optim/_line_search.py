"""Strong-Wolfe line search for :class:`nnx.optim.LBFGS`, ported from ``torch.optim.lbfgs``
(itself after minFunc). Scalars are Python floats; ``d``, ``g`` are flat backend vectors."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def cubic_interpolate(x1: float, f1: float, g1: float, x2: float, f2: float, g2: float,
                      bounds: tuple[float, float] | None = None) -> float:
    """Minimiser of the cubic through (x1, f1, g1), (x2, f2, g2), clamped to ``bounds``."""
    xmin_bound, xmax_bound = bounds if bounds is not None else ((x1, x2) if x1 <= x2 else (x2, x1))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 ** 2 - g1 * g2
    if d2_square >= 0:
        d2 = math.sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _bracket_phase(obj_func, x, t, d, f, g, gtd, c1, c2, max_ls, dot):  # noqa: ANN001, ANN202
    f_new, g_new = obj_func(x, t, d)
    evals = 1
    gtd_new = dot(g_new, d)
    t_prev, f_prev, g_prev, gtd_prev = 0.0, f, g, gtd
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            return [t_prev, t], [f_prev, f_new], [g_prev, g_new], [gtd_prev, gtd_new], False, ls_iter, evals
        if abs(gtd_new) <= -c2 * gtd:
            return [t], [f_new], [g_new], [gtd_new], True, ls_iter, evals
        if gtd_new >= 0:
            return [t_prev, t], [f_prev, f_new], [g_prev, g_new], [gtd_prev, gtd_new], False, ls_iter, evals
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new, gtd_new
        f_new, g_new = obj_func(x, t, d)
        evals += 1
        gtd_new = dot(g_new, d)
        ls_iter += 1
    # torch keeps [gtd_prev, gtd_new] from before the loop's last iteration here; the zoom phase never
    # runs in that case (ls_iter == max_ls), so only bracket, values and gradients matter.
    return [0.0, t], [f, f_new], [g, g_new], [gtd, gtd_new], False, ls_iter, evals


def strong_wolfe(obj_func: Callable[[Any, float, Any], tuple[float, Any]], x: Any, t: float, d: Any, f: float,
                 g: Any, gtd: float, dot: Callable[[Any, Any], float], d_norm: float, c1: float = 1e-4,
                 c2: float = 0.9, tolerance_change: float = 1e-9, max_ls: int = 25) -> tuple[float, Any, float, int]:
    """Return ``(f_new, g_new, t, evaluations)`` for a step ``t`` along ``d`` meeting the strong Wolfe conditions."""
    bracket, bracket_f, bracket_g, bracket_gtd, done, ls_iter, evals = _bracket_phase(
        obj_func, x, t, d, f, g, gtd, c1, c2, max_ls, dot)
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) else min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = obj_func(x, t, d)
        evals += 1
        gtd_new = dot(g_new, d)
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            bracket[high_pos], bracket_f[high_pos], bracket_g[high_pos], bracket_gtd[high_pos] = (
                t, f_new, g_new, gtd_new)
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos], bracket_g[low_pos], bracket_gtd[low_pos] = t, f_new, g_new, gtd_new
    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], evals
