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
from neosx.infer.fit import checked, fit_solution, require_float64

__all__ = ["TEST_STATISTICS", "TestStat", "poi_name", "sqrt_q", "test_statistic"]

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
    """
    require_float64()
    if test_stat not in TEST_STATISTICS:
        raise ValueError(f"test_stat must be one of {TEST_STATISTICS}, got {test_stat!r}")
    poi = poi_name(model)
    yields = model.prepare(yields)
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
    return checked(q, converged, f"{test_stat} fits"), mu_hat
