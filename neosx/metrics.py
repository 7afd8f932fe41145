"""Closed-form figures of merit for counting experiments.

References:
    G. Cowan, K. Cranmer, E. Gross, O. Vitells, "Asymptotic formulae for likelihood-based
    tests of new physics", arXiv:1007.1727 (Eq. 97); G. Cowan, "Discovery sensitivity for a
    counting experiment with background uncertainty" (2012).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = ["asimov_significance", "s_over_sqrt_b"]

B_FLOOR = 1e-12
"""Backgrounds are floored here (in events) so that b -> 0 gives a large, finite number
with a finite gradient instead of inf / NaN."""


def _safe_sqrt(x: jax.Array) -> jax.Array:
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def s_over_sqrt_b(s: ArrayLike, b: ArrayLike) -> jax.Array:
    """``s / sqrt(b)``, elementwise, with ``b`` floored at ``B_FLOOR``.

    Args:
        s: Expected signal events (any shape). b: expected background events (broadcastable).

    Returns:
        The naive significance; sum its squares over bins to combine independent bins.

    Example:
        >>> float(s_over_sqrt_b(10.0, 100.0))
        1.0
    """
    return jnp.asarray(s) / jnp.sqrt(jnp.maximum(jnp.asarray(b), B_FLOOR))


def asimov_significance(
    s: ArrayLike, b: ArrayLike, sigma_b: ArrayLike | None = None
) -> jax.Array:
    """Median discovery significance of a counting experiment (Cowan's Asimov formula).

    Without a background uncertainty: ``Z = sqrt(2 ((s + b) ln(1 + s/b) - s))``. With an
    absolute uncertainty ``sigma_b`` on ``b`` (profiled, Gaussian-approximated auxiliary
    measurement):
    ``Z = sqrt(2 ((s+b) ln[(s+b)(b+v) / (b^2+(s+b)v)] - (b^2/v) ln[1 + v s / (b(b+v))]))``
    with ``v = sigma_b^2``; ``sigma_b -> 0`` recovers the first form.

    Args:
        s: Expected signal events (any shape, >= 0).
        b: Expected background events, broadcastable; floored at ``B_FLOOR``.
        sigma_b: Absolute background uncertainty (events), broadcastable, or None.

    Returns:
        Z (elementwise); combine independent bins as ``sqrt(sum(Z**2))``.

    Example:
        >>> round(float(asimov_significance(10.0, 100.0)), 4)
        0.9834
    """
    s = jnp.asarray(s)
    b = jnp.maximum(jnp.asarray(b), B_FLOOR)
    plain = 2.0 * ((s + b) * jnp.log1p(s / b) - s)
    if sigma_b is None:
        return _safe_sqrt(plain)
    v = jnp.asarray(sigma_b) ** 2
    has_v = v > 0
    v_safe = jnp.where(has_v, v, 1.0)
    term_sb = (s + b) * jnp.log1p(s * b / (b**2 + (s + b) * v_safe))
    term_b = b**2 / v_safe * jnp.log1p(v_safe * s / (b * (b + v_safe)))
    return _safe_sqrt(jnp.where(has_v, 2.0 * (term_sb - term_b), plain))
