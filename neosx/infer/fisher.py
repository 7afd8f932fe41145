"""Parameter uncertainties from the Fisher information at the Asimov point (INFERNO).

For Poisson and Gaussian terms the Hessian of the negative log-likelihood on Asimov data,
at the parameters that generated them, is the expected Fisher information; its inverse
(over the non-fixed parameters) is the covariance the analysis would measure. It is built
from first derivatives only: ``I = J^T diag(1 / lambda) J + C``, with ``J`` the Jacobian of
the expected main rates ``lambda`` (the Poisson terms' second-derivative part vanishes where
the data equal the rates) and ``C`` the diagonal information of the constraint terms (each
depends on one parameter: ``1 / sigma**2`` for a Gaussian, ``tau / gamma`` for a Poisson
constraint, :meth:`~neosx.histfactory.HistFactory.constraint_information`). No second
derivative is taken, so the gradient of sigma(mu) w.r.t. the yields is second order.

References:
    P. de Castro, T. Dorigo, "INFERNO: Inference-Aware Neural Optimisation",
    arXiv:1806.04743.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from neosx.histfactory import HistFactory
from neosx.infer._solver import free_block, positive_definite_solve
from neosx.infer.cls import asimov_pars
from neosx.infer.fit import require_float64
from neosx.infer.teststat import checked_mu

__all__ = ["covariance", "fisher_information", "poi_uncertainty"]


def fisher_information(
    model: HistFactory, mu: ArrayLike = 1.0, *, yields: Any = None
) -> tuple[jax.Array, np.ndarray]:
    """Expected Fisher information on the Asimov data at ``mu`` (nuisances at their init).

    Args:
        model: The likelihood.
        mu: POI value at which the Asimov data are generated.
        yields: Optional yields override; differentiable.

    Returns:
        ``(information, free)``: the (npars, npars) matrix, with the identity on the rows
        and columns of fixed parameters, and the (npars,) mask of free parameters.

    Raises:
        ValueError: ``mu`` not a scalar or (concrete) outside the POI's bounds; invalid
            ``yields`` (see :meth:`~neosx.histfactory.HistFactory.prepare`).
    """
    require_float64()
    mu = checked_mu(model, mu)
    yields = model.prepare(yields)
    pars = asimov_pars(model, mu)

    def rates(p: jax.Array) -> jax.Array:
        return model.expected_data(p, yields=yields, include_auxdata=False)

    lam, tangent_out = jax.linearize(rates, pars)
    jac = jax.vmap(tangent_out, out_axes=1)(jnp.eye(pars.shape[0], dtype=pars.dtype))
    weight = jnp.where(lam > 0, 1.0 / jnp.where(lam > 0, lam, 1.0), 0.0)  # empty bins: no info
    main = jac.T @ (weight[:, None] * jac)
    constraints = model.constraint_information(pars, yields)
    free = ~np.asarray(model.config.suggested_fixed, dtype=bool)
    return free_block(main + jnp.diag(constraints), jnp.asarray(free)), free


def covariance(model: HistFactory, mu: ArrayLike = 1.0, *, yields: Any = None) -> jax.Array:
    """Covariance of the parameters, the inverse Fisher information on the Asimov data at ``mu``.

    Args:
        model: The likelihood.
        mu: POI value at which the Asimov data are generated (nuisances at their init).
        yields: Optional yields override; differentiable.

    Returns:
        (npars, npars) covariance; rows and columns of fixed parameters are zero.
    """
    information, free = fisher_information(model, mu, yields=yields)
    inverse = jnp.linalg.inv(information)
    return jnp.where(free[:, None] & free[None, :], inverse, 0.0)


def _covariance_column(information: jax.Array, index: int) -> jax.Array:
    """Column ``index`` of the inverse of a symmetric positive-definite matrix."""
    unit = jnp.zeros(information.shape[0], information.dtype).at[index].set(1.0)
    return positive_definite_solve(information, unit)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _variance(information: jax.Array, index: int) -> jax.Array:
    """``(I^-1)[index, index]``, with the reverse-mode rule ``d = -c c^T``, ``c = I^-1 e``.

    Differentiating the solve instead (for a large model Cholesky's factorisation and both
    triangular solves: five more LAPACK calls and their transposes) costs more; the closed
    form needs no further solve.
    """
    return _covariance_column(information, index)[index]


def _variance_fwd(information: jax.Array, index: int) -> tuple[jax.Array, jax.Array]:
    column = _covariance_column(information, index)
    return column[index], column


def _variance_bwd(index: int, column: jax.Array, cotangent: jax.Array) -> tuple[jax.Array]:
    return (-cotangent * jnp.outer(column, column),)


_variance.defvjp(_variance_fwd, _variance_bwd)


def poi_uncertainty(model: HistFactory, mu: ArrayLike = 1.0, *, yields: Any = None) -> jax.Array:
    """Expected uncertainty sigma(mu) on the signal strength, from the Fisher information.

    One positive-definite solve for the POI's column ``c`` of the covariance (the information matrix
    is symmetric positive definite), not a full inverse; the gradient w.r.t. the information
    is ``-c c^T / (2 sigma)``, with no further solve.

    Args:
        model: The likelihood.
        mu: Signal strength of the Asimov data (default 1: the signal is there).
        yields: Optional yields override; differentiable (reverse mode).

    Returns:
        Scalar sigma(mu) (profiled over all free nuisance parameters).
    """
    information, _ = fisher_information(model, mu, yields=yields)
    return jnp.sqrt(_variance(information, model.config.poi_index))
