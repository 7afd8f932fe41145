"""Soft event selection: logistic relaxations of threshold cuts.

A hard cut keeps an event (weight 1) or drops it (weight 0). Its relaxation replaces the
step by a logistic function of slope ``slope`` (in inverse units of ``x``), so the selection
efficiency becomes a smooth function of the threshold. ``hard=True`` gives back the exact
step with the same shape and dtype, so one analysis function serves training and the exact
evaluation. ``straight_through=True`` returns the exact step in the forward pass and the
logistic gradient in the backward pass.

Multi-variable selections are products of cuts, e.g. a 2-D signal region::

    w = nx.cut(pt, 25.0, slope=0.5) * nx.window(eta, -2.5, 2.5, slope=4.0)

References:
    L. Heinrich, N. Simpson, "neos: End-to-End-Optimised Summary Statistics for High Energy
    Physics", arXiv:2203.05570.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = ["cut", "window"]

Keep = Literal["above", "below"]
_KEEP_SIGN = {"above": 1.0, "below": -1.0}


def _check_slope(slope: ArrayLike) -> None:
    if isinstance(slope, jax.core.Tracer):
        return
    if not np.all(np.asarray(slope) > 0):
        raise ValueError(f"cut slope must be > 0, got slope={slope!r}")


def _float_array(x: ArrayLike) -> jax.Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def cut(
    x: ArrayLike,
    threshold: ArrayLike,
    *,
    slope: ArrayLike = 1.0,
    keep: Keep = "above",
    hard: bool = False,
    straight_through: bool = False,
) -> jax.Array:
    """Selection weight of a threshold cut, relaxed to a logistic step.

    ``keep="above"`` keeps events with ``x >= threshold``: the soft weight is
    ``sigmoid(slope * (x - threshold))``; ``keep="below"`` keeps ``x < threshold`` with
    ``sigmoid(slope * (threshold - x))``. The two hard regions partition the real line
    exactly, like the bins of :func:`numpy.histogram`.

    Args:
        x: Feature values of any shape (units of the feature, e.g. GeV).
        threshold: Cut position, broadcastable against ``x`` (same units); trainable.
        slope: Steepness of the logistic in inverse units of ``x`` (``> 0``). The weight
            rises from 0.12 to 0.88 over ``4 / slope``. Larger is closer to the hard cut.
        keep: ``"above"`` or ``"below"``: which side of the threshold is selected.
        hard: If True, return the exact step (0. or 1.) instead of the logistic.
        straight_through: If True (and ``hard`` is False), the forward value is the exact
            step while the gradient is that of the logistic.

    Returns:
        Weights in [0, 1] with the broadcast shape of ``x`` and ``threshold`` and the
        floating dtype of ``x``.

    Raises:
        ValueError: unknown ``keep`` or a non-positive concrete ``slope``.

    Example:
        >>> import jax.numpy as jnp, neosx as nx
        >>> nx.cut(jnp.array([0.0, 1.0, 2.0]), 1.0, slope=100.0).round(3)
        Array([0. , 0.5, 1. ], dtype=float32)
    """
    if keep not in _KEEP_SIGN:
        raise ValueError(f"cut keep must be one of {sorted(_KEEP_SIGN)}, got keep={keep!r}")
    _check_slope(slope)
    x = _float_array(x)
    threshold = jnp.asarray(threshold, dtype=x.dtype)
    if keep == "above":
        step = (x >= threshold).astype(x.dtype)
    else:
        step = (x < threshold).astype(x.dtype)
    if hard:
        return step
    soft = jax.nn.sigmoid(_KEEP_SIGN[keep] * slope * (x - threshold)).astype(x.dtype)
    if straight_through:
        # soft - soft is exactly 0 in the forward pass, so the value is exactly the step.
        return soft - jax.lax.stop_gradient(soft) + step
    return soft


def window(
    x: ArrayLike,
    low: ArrayLike,
    high: ArrayLike,
    *,
    slope: ArrayLike = 1.0,
    hard: bool = False,
    straight_through: bool = False,
) -> jax.Array:
    """Selection weight of a window ``low <= x < high``: the product of two cuts.

    Args:
        x: Feature values of any shape.
        low: Lower edge of the window (trainable), broadcastable against ``x``.
        high: Upper edge of the window (trainable), broadcastable against ``x``.
        slope: Steepness of both logistic edges in inverse units of ``x`` (``> 0``).
        hard: If True, the exact indicator of ``low <= x < high``.
        straight_through: Exact indicator forward, logistic gradient backward.

    Returns:
        Weights in [0, 1] with the broadcast shape of the inputs.

    Raises:
        ValueError: a non-positive concrete ``slope``.

    Example:
        >>> import jax.numpy as jnp, neosx as nx
        >>> nx.window(jnp.array([-1.0, 0.5, 2.0]), 0.0, 1.0, hard=True)
        Array([0., 1., 0.], dtype=float32)
    """
    opts = {"slope": slope, "hard": hard, "straight_through": straight_through}
    return cut(x, low, keep="above", **opts) * cut(x, high, keep="below", **opts)
