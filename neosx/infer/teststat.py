"""Profile-likelihood test statistics, as pyhf defines them (Cowan et al., arXiv:1007.1727).

``t_mu = -2 ln[L(mu, theta_hat_hat) / L(mu_hat, theta_hat)]`` clipped at 0; ``q_mu`` and
``q~_mu`` are ``t_mu`` set to 0 when ``mu_hat > mu`` (the tilde comes from the POI's lower
bound 0, as in pyhf); ``q0`` is ``t_0`` set to 0 when ``mu_hat < 0``.
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from neosx.histfactory import HistFactory
from neosx.histfactory._checks import check_within_bounds, checked_data, checked_shape
from neosx.infer.fit import checked, fit_causes, fit_solution, require_float64

__all__ = [
    "TEST_STATISTICS", "TestStat", "checked_mu", "checked_test_stat", "poi_name", "sqrt_q",
    "statistic", "test_statistic",
]

TestStat = Literal["qtilde", "q", "q0"]
TEST_STATISTICS: tuple[str, ...] = ("qtilde", "q", "q0")


def sqrt_q(q: jax.Array) -> jax.Array:
    """``sqrt(q)`` of a test statistic, floored at 1e-300 so the gradient stays finite at 0."""
    return jnp.sqrt(jnp.maximum(q, 1e-300))


def poi_name(model: HistFactory) -> str:
    """The model's parameter of interest, or a ValueError if it has none."""
    if model.config.poi_name is None:
        raise ValueError("the model has no parameter of interest (poi_name); set one")
    return model.config.poi_name


def checked_mu(model: HistFactory, mu: ArrayLike, name: str = "mu") -> ArrayLike:
    """``mu`` checked to be a scalar and, where concrete, within the POI's bounds.

    pyhf refuses to fix the POI outside its bounds (``fit initialization parameter ...
    lies outside of its bounds``); neosx says so before any fit.

    Raises:
        ValueError: e.g. ``"mu has shape (2,), expected ()"``, ``"mu = 20.0 (parameter
            'mu') is outside its bounds [0.0, 10.0]"``; or the model has no POI.
    """
    poi = poi_name(model)
    mu = checked_shape(name, mu, ((),))
    index = model.config.poi_index
    check_within_bounds(name, mu, model.config.suggested_bounds[index : index + 1], (poi,))
    return mu


def checked_test_stat(test_stat: str) -> None:
    """Raise unless ``test_stat`` is one of :data:`TEST_STATISTICS`."""
    if test_stat not in TEST_STATISTICS:
        raise ValueError(f"test_stat must be one of {TEST_STATISTICS}, got {test_stat!r}")


def test_statistic(
    mu: ArrayLike, data: ArrayLike, model: HistFactory, *, test_stat: TestStat = "qtilde",
    yields: Any = None,
) -> tuple[jax.Array, jax.Array]:
    """The test statistic at POI value ``mu`` and the best-fit POI ``mu_hat``.

    Args:
        mu: Tested POI value (ignored for ``"q0"``, which tests 0).
        data: Main counts then auxiliary data.
        model: The likelihood.
        test_stat: ``"qtilde"``, ``"q"`` or ``"q0"``.
        yields: Optional yields override.

    Returns:
        ``(q, mu_hat)``; both differentiable w.r.t. ``mu``, ``data`` and ``yields``.

    Raises:
        ValueError: Unknown ``test_stat``; ``mu`` not a scalar or (concrete) outside the
            POI's bounds; ``data`` or ``yields`` invalid (see :func:`~neosx.infer.fit`).
        FitError: (eager) a fit did not converge.
    """
    require_float64()
    checked_test_stat(test_stat)
    mu = checked_mu(model, 0.0 if test_stat == "q0" else mu)  # q0 tests 0
    return statistic(mu, checked_data(model.config, data), model, test_stat, model.prepare(yields))


def statistic(
    mu: ArrayLike, data: ArrayLike, model: HistFactory, test_stat: TestStat, yields: Any
) -> tuple[jax.Array, jax.Array]:
    """:func:`test_statistic` without checks of its inputs (for callers that checked them)."""
    poi = poi_name(model)
    mu = jnp.asarray(0.0 if test_stat == "q0" else mu, jnp.float64)
    constrained = fit_solution(model, data, yields=yields, fixed={poi: mu})
    free = fit_solution(model, data, yields=yields)
    converged = constrained.converged & free.converged
    mu_hat = free.pars[model.config.poi_index]
    t = jnp.maximum(2.0 * (constrained.value - free.value), 0.0)
    if test_stat == "q0":
        q = jnp.where(mu_hat < 0.0, 0.0, t)
    else:
        q = jnp.where(mu_hat > mu, 0.0, t)
    causes = fit_causes(model, data, yields, fixed={poi: mu})
    return checked(q, converged, f"{test_stat} fits", causes), mu_hat
