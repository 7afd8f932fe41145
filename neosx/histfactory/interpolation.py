"""HistFactory interpolation codes, as pure vectorised functions of the nuisance parameter.

* normsys codes (``code1``, ``code4``) map ``alpha`` and the relative down / up
  normalisations ``lo``, ``hi`` (the spec's ``{"lo": ..., "hi": ...}``) to a multiplicative
  **factor**, element-wise; each is split into coefficients of ``lo``, ``hi`` alone
  (computed once per set of yields) and the factor as a function of ``alpha`` and them.
* histosys codes (``code0``, ``code4p``) are linear in the variations, so they are written as
  two **weights** of ``alpha`` alone: the additive delta to the nominal yield is
  ``w_up(alpha) * (hi - nom) + w_down(alpha) * (nom - lo)``. The kernel then sums all
  histosys of a sample-bin with two matrix-vector products.

The formulas, including which side the boundaries ``alpha = 0, ±1`` fall on, are pyhf 0.7's
(``pyhf/interpolators/code*.py``); powers are written ``exp(alpha * log(x))``.

References:
    K. Cranmer et al., "HistFactory: A tool for creating statistical models for use with
    RooFit and RooStats", CERN-OPEN-2012-016 (2012).
    pyhf documentation, "Interpolation codes", https://pyhf.readthedocs.io/.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import Array

__all__ = ["HISTOSYS_CODES", "NORMSYS_CODES", "NormsysCode"]

# Inverse of the 6x6 system fixing the code-4 polynomial coefficients a_1..a_6 from the
# value, first and second derivative of the exponential branches at alpha = ±alpha0, for
# pyhf's alpha0 = 1 (pyhf/interpolators/code4.py, ``A_inverse``).
_CODE4_A_INVERSE = np.array(
    [
        [15.0 / 16, -15.0 / 16, -7.0 / 16, -7.0 / 16, 1.0 / 16, -1.0 / 16],
        [3.0 / 2, 3.0 / 2, -9.0 / 16, 9.0 / 16, 1.0 / 16, 1.0 / 16],
        [-5.0 / 8, 5.0 / 8, 5.0 / 8, 5.0 / 8, -1.0 / 8, 1.0 / 8],
        [-3.0 / 2, -3.0 / 2, 7.0 / 8, -7.0 / 8, -1.0 / 8, -1.0 / 8],
        [3.0 / 16, -3.0 / 16, -3.0 / 16, -3.0 / 16, 1.0 / 16, -1.0 / 16],
        [1.0 / 2, 1.0 / 2, -5.0 / 16, 5.0 / 16, 1.0 / 16, 1.0 / 16],
    ]
)


class NormsysCode(NamedTuple):
    """A normsys interpolation code, split into its yields part and its parameter part.

    The coefficients depend only on the relative normalisations, so a fit computes them once
    and evaluates only :attr:`factor` at each step.

    Attributes:
        coefficients: ``(lo, hi) -> (k, *shape)`` array of the code's coefficients.
        factor: ``(alpha, coefficients) -> factor``, ``alpha`` broadcastable with ``shape``.
    """

    coefficients: Callable[[Array, Array], Array]
    factor: Callable[[Array, Array], Array]


def _code1_coefficients(lo: Array, hi: Array) -> Array:
    """``log(hi)`` and ``-log(lo)``: the exponents of the two branches."""
    return jnp.stack([jnp.log(hi), -jnp.log(lo)])


def _code1_factor(alpha: Array, coefficients: Array) -> Array:
    """Piecewise-exponential normalisation factor (HistFactory code 1).

    ``hi**alpha`` for ``alpha > 0`` and ``lo**(-alpha)`` otherwise.

    Example:
        >>> c = _code1_coefficients(jnp.array(0.9), jnp.array(1.1))
        >>> round(float(_code1_factor(jnp.array(2.0), c)), 12)
        1.21
    """
    return jnp.exp(alpha * jnp.where(alpha > 0, coefficients[0], coefficients[1]))


def _code4_coefficients(lo: Array, hi: Array) -> Array:
    """``log(hi)``, ``-log(lo)`` and the polynomial coefficients ``a_1 .. a_6``.

    The ``a_i`` fix value, first and second derivative of the polynomial to those of the
    exponential branches at ``alpha = ±1``.
    """
    log_hi, log_lo = jnp.log(hi), jnp.log(lo)
    rhs = jnp.stack([hi - 1.0, lo - 1.0, log_hi * hi, -log_lo * lo, log_hi**2 * hi, log_lo**2 * lo])
    polynomial = jnp.tensordot(jnp.asarray(_CODE4_A_INVERSE), rhs, axes=1)
    return jnp.concatenate([jnp.stack([log_hi, -log_lo]), polynomial])


def _code4_factor(alpha: Array, coefficients: Array) -> Array:
    """Polynomial-interpolated, exponentially extrapolated normalisation factor (code 4).

    For ``|alpha| < 1`` a degree-6 polynomial ``1 + sum_i a_i alpha**i``; outside,
    ``hi**alpha`` (``alpha >= 1``) and ``lo**(-alpha)`` (``alpha <= -1``).

    Example:
        >>> c = _code4_coefficients(jnp.array(0.9), jnp.array(1.1))
        >>> round(float(_code4_factor(jnp.array(0.5), c)), 12)
        1.049314915427
    """
    polynomial = jnp.zeros(jnp.broadcast_shapes(alpha.shape, coefficients.shape[1:]))
    for a_i in coefficients[:1:-1]:
        polynomial = (polynomial + a_i) * alpha
    outside = jnp.exp(alpha * jnp.where(alpha >= 1.0, coefficients[0], coefficients[1]))
    return jnp.where((alpha > -1.0) & (alpha < 1.0), 1.0 + polynomial, outside)


def histosys_code0(alpha: Array) -> tuple[Array, Array]:
    """Piecewise-linear shape variation (HistFactory code 0), as up / down weights.

    The delta is ``alpha * (hi - nom)`` for ``alpha > 0`` and ``alpha * (nom - lo)``
    otherwise.

    Args:
        alpha: Nuisance parameter values, any shape.

    Returns:
        ``(w_up, w_down)``, each of the shape of ``alpha``.

    Example:
        >>> [float(w) for w in histosys_code0(jnp.array(-0.5))]
        [0.0, -0.5]
    """
    positive = alpha > 0
    return jnp.where(positive, alpha, 0.0), jnp.where(positive, 0.0, alpha)


def histosys_code4p(alpha: Array) -> tuple[Array, Array]:
    """Piecewise-linear shape variation with a polynomial inside ``|alpha| <= 1`` (code 4p).

    Outside ``[-1, 1]`` as code 0; inside, ``alpha * S + alpha**2 (15 - 10 alpha**2 +
    3 alpha**4) * A`` with ``S = (up + down) / 2``, ``A = (up - down) / 16``, ``up = hi - nom``
    and ``down = nom - lo``: continuous with continuous first and second derivatives.

    Args:
        alpha: Nuisance parameter values, any shape.

    Returns:
        ``(w_up, w_down)``, each of the shape of ``alpha``.

    Example:
        >>> [float(w) for w in histosys_code4p(jnp.array(0.5))]
        [0.4482421875, 0.0517578125]
    """
    alpha_sq = alpha**2
    antisymmetric = 0.0625 * alpha_sq * (alpha_sq * (alpha_sq * 3.0 - 10.0) + 15.0)
    inside_up, inside_down = 0.5 * alpha + antisymmetric, 0.5 * alpha - antisymmetric
    w_up = jnp.where(alpha > 1.0, alpha, jnp.where(alpha < -1.0, 0.0, inside_up))
    w_down = jnp.where(alpha > 1.0, 0.0, jnp.where(alpha < -1.0, alpha, inside_down))
    return w_up, w_down


#: normsys interpolation codes by pyhf's name (``modifier_settings["normsys"]["interpcode"]``).
NORMSYS_CODES: dict[str, NormsysCode] = {
    "code1": NormsysCode(_code1_coefficients, _code1_factor),
    "code4": NormsysCode(_code4_coefficients, _code4_factor),
}

#: histosys interpolation codes by pyhf's name (``modifier_settings["histosys"]["interpcode"]``).
HISTOSYS_CODES: dict[str, Callable[[Array], tuple[Array, Array]]] = {
    "code0": histosys_code0,
    "code4p": histosys_code4p,
}
