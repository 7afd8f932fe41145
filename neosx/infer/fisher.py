"""Parameter uncertainties from the Fisher information at the Asimov point (INFERNO).

For Poisson and Gaussian terms the Hessian of the negative log-likelihood on Asimov data,
at the parameters that generated them, is the expected Fisher information; its inverse
(over the non-fixed parameters) is the covariance the analysis would measure.

References:
    P. de Castro, T. Dorigo, "INFERNO: Inference-Aware Neural Optimisation",
    arXiv:1806.04743.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from neosx.histfactory import HistFactory
from neosx.infer._solver import free_block
from neosx.infer.cls import asimov_data
from neosx.infer.fit import require_float64
from neosx.infer.teststat import poi_name

__all__ = ["covariance", "poi_uncertainty"]


def covariance(model: HistFactory, mu: ArrayLike = 1.0, *, yields: Any = None) -> jax.Array:
    """Covariance of the parameters, the inverse Fisher information on the Asimov data at ``mu``.

    Args:
        model: The likelihood.
        mu: POI value at which the Asimov data are generated (nuisances at their init).
        yields: Optional yields override; differentiable.

    Returns:
        (npars, npars) covariance; rows and columns of fixed parameters are zero.
    """
    require_float64()
    poi_name(model)
    data, pars = asimov_data(model, mu, yields)
    hess = jax.hessian(lambda p: -model.log_likelihood_ratio(p, data, yields))(pars)
    free = ~np.asarray(model.config.suggested_fixed, dtype=bool)
    inverse = jnp.linalg.inv(free_block(hess, jnp.asarray(free)))
    return jnp.where(free[:, None] & free[None, :], inverse, 0.0)


def poi_uncertainty(model: HistFactory, mu: ArrayLike = 1.0, *, yields: Any = None) -> jax.Array:
    """Expected uncertainty sigma(mu) on the signal strength, from the Fisher information.

    Args:
        model: The likelihood.
        mu: Signal strength of the Asimov data (default 1: the signal is there).
        yields: Optional yields override; differentiable.

    Returns:
        Scalar sigma(mu) (profiled over all free nuisance parameters).
    """
    index = model.config.poi_index
    return jnp.sqrt(covariance(model, mu, yields=yields)[index, index])
