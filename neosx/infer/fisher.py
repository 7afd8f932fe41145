"""Parameter uncertainties: the expected ones (Fisher information on Asimov data, INFERNO)
and the observed ones (inverse Hessian at the best fit to the data, Minuit's HESSE).

For Poisson and Gaussian terms the Hessian of the negative log-likelihood on Asimov data,
at the parameters that generated them, is the expected Fisher information; its inverse
(over the non-fixed parameters) is the covariance the analysis would measure. It is built
from first derivatives only: ``I = J^T diag(1 / lambda) J + C``, with ``J`` the Jacobian of
the expected main rates ``lambda`` (the Poisson terms' second-derivative part vanishes where
the data equal the rates) and ``C`` the diagonal information of the constraint terms (each
depends on one parameter: ``1 / sigma**2`` for a Gaussian, ``tau / gamma`` for a Poisson
constraint, :meth:`~neosx.histfactory.HistFactory.constraint_information`). No second
derivative is taken, so the gradient of sigma(mu) w.r.t. the yields is second order.

On observed data (:func:`fit_covariance`, :func:`fit_poi_uncertainty`) the covariance is
the inverse of the exact (autodiff) Hessian of the NLL at the best fit, over the free
parameters: what Minuit's HESSE estimates by finite differences (with ``errordef = 0.5``
for an NLL, 1 for ``2 NLL``), and what the two methods share on Asimov data at their
generating point.

References:
    P. de Castro, T. Dorigo, "INFERNO: Inference-Aware Neural Optimisation",
    arXiv:1806.04743.
    F. James, "MINUIT Tutorial: Function Minimization", CERN (1972), sec. 7 (errors from
    the second-derivative matrix).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from neosx.histfactory import HistFactory
from neosx.histfactory._checks import checked_data
from neosx.infer._newton import (
    free_block,
    jacobi_scale,
    onto_bounds,
    positive_definite_solve,
    value_grad_hessian,
)
from neosx.infer.cls import asimov_pars
from neosx.infer.fit import _fixed_layout, checked, fit_causes, fit_solution, require_float64
from neosx.infer.teststat import checked_mu, poi_name

__all__ = [
    "FitCovariance", "covariance", "fisher_information", "fit_covariance",
    "fit_poi_uncertainty", "poi_uncertainty",
]


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


class FitCovariance(NamedTuple):
    """The best fit to the data and the covariance of its parameters (:func:`fit_covariance`).

    Attributes:
        pars: (npars,) best-fit parameters, ordered as ``model.config.par_names``.
        covariance: (npars, npars) inverse Hessian of the NLL at ``pars`` over the free
            parameters; zero rows and columns on fixed ones; NaN everywhere where that
            Hessian is not positive definite.
        at_bound: (npars,) bool: the free parameters the fit left on a bound of theirs,
            the gradient pushing against it (e.g. the POI at 0 when the data lie below the
            background).
    """

    pars: jax.Array
    covariance: jax.Array
    at_bound: jax.Array

    @property
    def uncertainties(self) -> jax.Array:
        """(npars,) ``sqrt(diag(covariance))``: sigma of each parameter (0 if fixed)."""
        return jnp.sqrt(jnp.diagonal(self.covariance))


def _fit_hessian(
    model: HistFactory, data: ArrayLike, yields: Any,
    fixed: Mapping[str, ArrayLike] | None, init: ArrayLike | None,
) -> tuple[jax.Array, jax.Array, jax.Array, np.ndarray, jax.Array]:
    """``(pars, scaled, scale, free, at_bound)`` at the best fit: the NLL's Hessian ``H``
    Jacobi-scaled on the free block (``scaled = D H D``, the identity on fixed rows and
    columns, ``D = diag(scale)``, so ``H_FF^-1 = D scaled^-1 D``), the static mask of free
    parameters and the free parameters held on a bound (as the solver decides it)."""
    require_float64()
    data = checked_data(model.config, data)
    prepared = model.prepare(yields)
    solution = fit_solution(model, data, yields=prepared, fixed=fixed, init=init)
    causes = fit_causes(model, data, yields, fixed=fixed, init=init)
    pars = checked(solution.pars, solution.converged, "fit", causes)
    fixed_mask, _ = _fixed_layout(model, fixed)

    def nll(p: jax.Array, args: tuple) -> jax.Array:
        return -model.log_likelihood_ratio(p, *args)

    _, grad, hess = value_grad_hessian(nll, pars, (jnp.asarray(data, jnp.float64), prepared))
    scale = jacobi_scale(hess, fixed_mask)
    bounds = jnp.asarray(model.config.suggested_bounds, jnp.float64)
    onto_lower, onto_upper = onto_bounds(
        pars, jnp.where(fixed_mask, 0.0, grad), scale, bounds[:, 0], bounds[:, 1]
    )
    free = ~fixed_mask
    scaled = free_block(hess * scale[:, None] * scale[None, :], jnp.asarray(free))
    return pars, scaled, scale, free, onto_lower | onto_upper


def fit_covariance(
    model: HistFactory,
    data: ArrayLike,
    *,
    yields: Any = None,
    fixed: Mapping[str, ArrayLike] | None = None,
    init: ArrayLike | None = None,
) -> FitCovariance:
    """The MLE (or a constrained fit) and the covariance of its parameters: Minuit's HESSE.

    The covariance is ``H_FF^-1``, the inverse of the Hessian of the negative log-likelihood
    at the best fit over the free parameters F (the Hessian is exact, by autodiff; HESSE's
    is a finite-difference estimate of the same matrix, with ``errordef = 0.5`` for the NLL
    or 1 for ``2 NLL``). Parameters held fixed (by the measurement or by ``fixed``) get zero
    rows and columns: the covariance of the others *given* them, as Minuit's with those
    parameters fixed (not the rows of the full inverse, which would profile them).

    Bounds: like HESSE and pyhf's autodiff Hessian, the matrix ignores them. A parameter
    the fit left on a bound (``FitCovariance.at_bound``; its gradient is then not 0) keeps
    its row: the curvature there, as if the bound were absent. Where that makes the Hessian
    indefinite (the POI at 0 with no curvature in it, e.g. zero events observed where only
    the signal's systematics move the rates) the covariance is NaN; pass the parameter in
    ``fixed`` at its bound for the covariance of the others given it. (Minuit, run with the
    bound as a limit, reports for such a parameter the error of its internal, sine-mapped
    coordinate transformed back: neither this curvature nor anything comparable.)

    Args:
        model: The likelihood.
        data: Main counts followed by auxiliary data (pyhf's layout), or the main counts.
        yields: Optional yields override; the result is differentiable w.r.t. it (the best
            fit by the implicit function theorem, as :func:`~neosx.infer.fit.fit`).
        fixed: ``{parameter name: value}`` held constant in addition to the measurement's
            fixed parameters (values may be traced).
        init: (npars,) starting point of the fit; default the suggested init.

    Returns:
        A :class:`FitCovariance` ``(pars, covariance, at_bound)``; ``.uncertainties`` is
        sigma of each parameter. NaN under ``jit`` if the fit did not converge.

    Raises:
        FitError: the fit did not converge (eager calls).
        ValueError: invalid ``data``, ``fixed``, ``init`` or ``yields`` (as
            :func:`~neosx.infer.fit.fit`).

    Example:
        >>> best = nx.infer.fit_covariance(model, data)  # doctest: +SKIP
        >>> sigma_mu = best.uncertainties[model.config.poi_index]  # doctest: +SKIP
    """
    pars, scaled, scale, free, at_bound = _fit_hessian(model, data, yields, fixed, init)
    identity = jnp.eye(scaled.shape[0], dtype=scaled.dtype)
    inverse = jax.vmap(positive_definite_solve, in_axes=(None, 0))(scaled, identity)
    inverse = 0.5 * (inverse + inverse.T) * scale[:, None] * scale[None, :]
    covariance = jnp.where(free[:, None] & free[None, :], inverse, 0.0)
    return FitCovariance(pars, covariance, at_bound)


def fit_poi_uncertainty(
    model: HistFactory,
    data: ArrayLike,
    *,
    yields: Any = None,
    fixed: Mapping[str, ArrayLike] | None = None,
    init: ArrayLike | None = None,
) -> jax.Array:
    """sigma(mu) at the best fit to ``data``: ``sqrt((H_FF^-1)_mu,mu)``, Minuit HESSE's error.

    As :func:`fit_covariance`'s ``uncertainties[poi_index]``, with one positive-definite
    solve for the POI's column instead of the full inverse, and the reverse-mode rule of
    :func:`poi_uncertainty` (no further solve). Profiled over all free nuisance parameters;
    NaN where the Hessian is not positive definite (see :func:`fit_covariance` on bounds).

    Args:
        model: The likelihood (with a POI).
        data: Main counts followed by auxiliary data, or the main counts only.
        yields: Optional yields override; differentiable (reverse mode).
        fixed: Further parameters held constant; not the POI.
        init: (npars,) starting point of the fit.

    Returns:
        Scalar sigma(mu).

    Raises:
        ValueError: the model has no POI, or the POI is fixed; invalid inputs (as
            :func:`fit_covariance`).
        FitError: the fit did not converge (eager calls).
    """
    poi = poi_name(model)
    index = model.config.poi_index
    if poi in (fixed or {}) or model.config.suggested_fixed[index]:
        raise ValueError(f"the POI {poi!r} is fixed: its uncertainty is 0 by construction")
    _, scaled, scale, _, _ = _fit_hessian(model, data, yields, fixed, init)
    return scale[index] * jnp.sqrt(_variance(scaled, index))
