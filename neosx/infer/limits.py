"""Discovery significance and upper limits from Asimov data, differentiable.

``Z0 = sqrt(q0)`` on the signal+background Asimov data (median discovery significance).
The expected upper limit at confidence ``cl`` is the ``mu`` at which the median expected
CLs, ``2 Phi(-sqrt(q~_mu,A))``, equals ``1 - cl``: a root of
``sqrt(q~_mu,A) - Phi^-1(1 - (1 - cl)/2)``, found by safeguarded Newton (the slope comes
from the profiled likelihood, ``d q_A / d mu = 2 dNLL/dmu`` at the constrained fit) and
differentiated implicitly: ``d mu_up = -(dF/dyields) / (dF/dmu)``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from scipy.special import ndtri

from neosx.histfactory import HistFactory
from neosx.infer._solver import root
from neosx.infer.cls import profiled_asimov_q
from neosx.infer.fisher import poi_uncertainty
from neosx.infer.fit import checked, require_float64
from neosx.infer.teststat import checked_mu, sqrt_q

__all__ = ["discovery_significance", "expected_upper_limit"]


def discovery_significance(model: HistFactory, *, yields: Any = None) -> jax.Array:
    """Median expected discovery significance Z0 of the signal (mu = 1) over background.

    Args:
        model: The likelihood.
        yields: Optional yields override; differentiable.

    Returns:
        Scalar Z0 = sqrt(q0) on the signal+background Asimov data.

    Raises:
        ValueError: The POI's bounds exclude 0 or 1; invalid ``yields`` (see
            :meth:`~neosx.histfactory.HistFactory.prepare`).
        FitError: (eager) the Asimov fit did not converge.
    """
    require_float64()
    checked_mu(model, 0.0, "the background-only mu")
    checked_mu(model, 1.0, "the signal's mu")
    q0 = profiled_asimov_q(model, 0.0, 1.0, yields)
    return sqrt_q(q0)


def expected_upper_limit(model: HistFactory, cl: float = 0.95, *, yields: Any = None) -> jax.Array:
    """Median expected upper limit on mu at confidence ``cl`` (CLs, q~_mu, asymptotics).

    Args:
        model: The likelihood (POI lower bound 0).
        cl: Confidence level, e.g. 0.95.
        yields: Optional yields override; the limit is differentiable w.r.t. it.

    Returns:
        Scalar mu_up.

    Raises:
        ValueError: ``cl`` outside (0, 1); the POI's bounds exclude 0; invalid ``yields``
            (see :meth:`~neosx.histfactory.HistFactory.prepare`).
        FitError: (eager) the root was not found within the POI bounds.
    """
    if not 0.0 < cl < 1.0:
        raise ValueError(f"cl must be in (0, 1), got cl={cl}")
    require_float64()
    checked_mu(model, 0.0, "the background-only mu")
    yields = model.prepare(yields)
    target = float(ndtri(1.0 - (1.0 - cl) / 2.0))
    index = model.config.poi_index
    low, high = (float(v) for v in model.config.suggested_bounds[index])

    def excess(mu: jax.Array, yields: Any) -> jax.Array:
        return sqrt_q(profiled_asimov_q(model, mu, 0.0, yields)) - target

    # sqrt(q_A) ~ mu / sigma(mu): start from the Fisher estimate
    sigma = jax.lax.stop_gradient(poi_uncertainty(model, 0.0, yields=yields))
    start = jnp.clip(target * sigma, low + 1e-6 * (high - low), high)
    mu_up, converged = root(excess, start, jnp.asarray(max(low, 0.0)), jnp.asarray(high), yields)

    def causes() -> tuple[str, ...]:
        return (f"the limit may lie above the POI's upper bound {high}",)

    return checked(mu_up, converged, "upper-limit root", causes)
