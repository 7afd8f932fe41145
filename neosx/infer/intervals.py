"""Upper limits from CLs (observed and expected), CLs scans and profile-likelihood scans.

CLs of the POI value ``mu`` is pyhf's asymptotic one (:func:`~neosx.infer.cls.hypotest`):
``q_mu`` (or ``q~_mu``) on the data, ``q_mu,A`` on the background-only Asimov data of the fit
with ``mu = 0``. The free and background-only fits and the Asimov data are computed once; each
``mu`` costs the two fits with the POI fixed, in one ``vmap`` over (data, Asimov data) (the
free fit to the Asimov data is exact: its generating point). A fit's NLL is differentiated at
its minimum, where its derivatives w.r.t. ``mu`` and the yields are the likelihood's own at
the fitted parameters (envelope theorem); only the Asimov data differentiate a fit (implicit).

An upper limit is a root of ``CLs(mu) = 1 - cl``: the observed one of ``-Phi^-1(CLs(mu)) +
Phi^-1(1 - cl)``, the expected one at ``n`` sigma of ``sqrt(q_mu,A) - t_n``, ``t_n = -n -
Phi^-1((1 - cl) Phi(-n))`` (the expected CLs ``Phi(-(n + sqrt(q_mu,A))) / Phi(-n)`` solved for
``sqrt(q_mu,A)``); both increasing, nearly linear in ``mu``. They are found by Newton steps
kept inside a bracket, from the Fisher estimate of ``sigma(mu)``, and differentiated by the
implicit function theorem, ``d mu_up = -(dF / d yields) / (dF / d mu)``.

References:
    G. Cowan, K. Cranmer, E. Gross, O. Vitells, Asymptotic formulae for likelihood-based
    tests of new physics, Eur. Phys. J. C 71 (2011) 1554, arXiv:1007.1727.
    A. L. Read, Presentation of search results: the CLs technique, J. Phys. G 28 (2002) 2693.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri
from jax.typing import ArrayLike
from scipy import special

from neosx.histfactory import HistFactory
from neosx.histfactory._checks import check_within_bounds, checked_data, is_traced
from neosx.infer._roots import bracketed_root
from neosx.infer.cls import N_SIGMA, asymptotic_cls, asymptotic_expected
from neosx.infer.fisher import poi_uncertainty
from neosx.infer.fit import checked, fit_causes, fit_solution, require_float64
from neosx.infer.teststat import checked_mu, poi_name, sqrt_q

__all__ = ["LIMIT_TEST_STATISTICS", "ProfileScan", "cls_scan", "profile_scan", "upper_limit"]

LIMIT_TEST_STATISTICS: tuple[str, ...] = ("qtilde", "q")
"""The test statistics of :func:`upper_limit` and :func:`cls_scan` (``q0`` tests no ``mu``)."""


def _nll(model: HistFactory, pars: jax.Array, data: jax.Array, yields: Any) -> jax.Array:
    """The fits' objective; at a fit's minimiser (held constant) the minimum, with its
    derivatives w.r.t. data, yields and the fixed values (envelope theorem)."""
    return -model.log_likelihood_ratio(pars, data, yields)


def _fitted(model: HistFactory, data: jax.Array, yields: Any,
            fixed: Mapping[str, jax.Array] | None = None,
            init: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """``(pars, converged)`` of :func:`~neosx.infer.fit.fit_solution`, not differentiated;
    the suggested init where it failed (a start for further fits)."""
    solution = fit_solution(model, data, yields=yields, fixed=fixed, init=init)
    init = jnp.asarray(model.config.suggested_init, jnp.float64)
    pars = jnp.where(solution.converged, solution.pars, init)
    return jax.lax.stop_gradient((pars, solution.converged))


class _Reference(NamedTuple):
    """What every ``mu`` shares: (2, ndata) data and Asimov data, (2, npars) the free and
    background-only fits (the starts at each ``mu``), the free NLL and POI, convergence."""

    data: jax.Array
    starts: jax.Array
    free_value: jax.Array
    mu_hat: jax.Array
    converged: jax.Array


def _reference(model: HistFactory, data: jax.Array, yields: Any) -> _Reference:
    """The free and the background-only (``mu = 0``) fits to ``data`` (checked), and the
    Asimov data of the latter (differentiable: implicit function theorem)."""
    if data.shape[0] == model.config.nmaindata:
        data = jnp.concatenate([data, model.auxdata(yields)])
    free, free_converged = _fitted(model, data, yields)
    background = fit_solution(model, data, yields=yields, fixed={poi_name(model): 0.0})
    asimov = model.expected_data(background.pars, yields=yields, include_auxdata=True)
    init = jnp.asarray(model.config.suggested_init, jnp.float64)
    start = jax.lax.stop_gradient(jnp.where(background.converged, background.pars, init))
    return _Reference(jnp.stack([data, asimov]), jnp.stack([free, start]),
                      _nll(model, free, data, yields),
                      free[model.config.poi_index], free_converged & background.converged)


def _fixed_poi_fits(mu: jax.Array, model: HistFactory, yields: Any,
                    ref: _Reference) -> tuple[jax.Array, jax.Array]:
    """(2, npars) parameters and (2,) convergence of the fits to the data and to the Asimov
    data with the POI fixed at ``mu`` (not differentiated)."""
    fixed = {poi_name(model): jax.lax.stop_gradient(mu)}
    return jax.vmap(lambda d, s: _fitted(model, d, yields, fixed, s))(ref.data, ref.starts)


def _statistics(
    mu: jax.Array, pars: jax.Array, model: HistFactory, yields: Any, ref: _Reference
) -> tuple[jax.Array, jax.Array]:
    """``(q_mu, q_mu,A)`` at the (2, npars) fits of :func:`_fixed_poi_fits`, differentiable
    w.r.t. ``mu``, yields and ``ref``; ``q_mu`` is 0 where ``mu_hat > mu``, ``q_mu,A`` where
    ``mu < 0`` (the Asimov data's ``mu_hat`` is 0)."""
    pars = pars.at[:, model.config.poi_index].set(mu)
    values = jax.vmap(lambda p, d: _nll(model, p, d, yields))(pars, ref.data)
    q = jnp.where(ref.mu_hat > mu, 0.0, jnp.maximum(2.0 * (values[0] - ref.free_value), 0.0))
    return q, jnp.where(mu < 0.0, 0.0, jnp.maximum(2.0 * values[1], 0.0))


def _checked_cls_inputs(model: HistFactory, test_stat: str) -> None:
    """Raise unless float64 is on, ``test_stat`` tests a ``mu`` and the POI's bounds hold 0."""
    require_float64()
    if test_stat not in LIMIT_TEST_STATISTICS:
        raise ValueError(
            f"test_stat must be one of {LIMIT_TEST_STATISTICS} for CLs of mu, got {test_stat!r}"
        )
    checked_mu(model, 0.0, "the background-only mu")


def _checked_grid(name: str, values: ArrayLike, bounds: np.ndarray, label: str) -> jax.Array:
    """``values`` as a float64 array, checked to be 1-D, not empty and (concrete) within the
    (2,) ``bounds`` of the parameter ``label``."""
    array = jnp.asarray(values, jnp.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {tuple(array.shape)}")
    check_within_bounds(name, array, np.tile(bounds, (array.size, 1)), (label,) * array.size)
    return array


def cls_scan(
    mu_values: ArrayLike, data: ArrayLike, model: HistFactory, *, test_stat: str = "qtilde",
    yields: Any = None,
) -> tuple[jax.Array, jax.Array]:
    """Observed CLs and the expected band at each of ``mu_values`` (what a Brazil plot draws).

    Equal to :func:`~neosx.infer.cls.hypotest` with ``return_expected_set=True`` at each
    ``mu``; the fits that do not depend on ``mu`` run once, the others in one ``vmap``.

    Args:
        mu_values: (n,) POI values tested, within the POI's bounds.
        data: Observed main counts then auxiliary data (pyhf's layout), or the main counts.
        model: The likelihood (a POI whose bounds include 0).
        test_stat: ``"qtilde"`` (default) or ``"q"``.
        yields: Optional yields override; differentiable.

    Returns:
        ``(observed (n,), expected (n, 5))``: CLs, and the expected CLs at +2, +1, 0, -1, -2
        sigma of the background-only test statistic (pyhf's order: smallest CLs first).
        NaN where a fit did not converge under ``jit``.

    Raises:
        ValueError: ``mu_values`` not a non-empty 1-D array or (concrete) outside the POI's
            bounds; unknown ``test_stat``; the POI's bounds exclude 0; invalid ``data`` or
            ``yields`` (see :func:`~neosx.infer.fit`).
        FitError: (eager) a fit did not converge.

    Example:
        >>> mu = jnp.linspace(0.0, 3.0, 31)
        >>> observed, band = nx.infer.cls_scan(mu, data, model)  # doctest: +SKIP
    """
    _checked_cls_inputs(model, test_stat)
    bounds = model.config.suggested_bounds[model.config.poi_index]
    mu_values = _checked_grid("mu_values", mu_values, bounds, poi_name(model))
    yields = model.prepare(yields)
    data = jnp.asarray(checked_data(model.config, data), jnp.float64)
    ref = _reference(model, data, yields)

    def at(mu: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        pars, converged = _fixed_poi_fits(mu, model, yields, ref)
        return *_statistics(mu, pars, model, yields, ref), jnp.all(converged)

    q, qa, converged = jax.vmap(at)(mu_values)
    converged = jnp.all(converged) & ref.converged
    causes = fit_causes(model, data, yields)
    observed = checked(asymptotic_cls(q, qa, test_stat), converged, "CLs-scan fits", causes)
    return observed, checked(asymptotic_expected(qa), converged, "CLs-scan fits", causes)


def upper_limit(
    data: ArrayLike, model: HistFactory, cl: float = 0.95, *, test_stat: str = "qtilde",
    yields: Any = None,
) -> tuple[jax.Array, jax.Array]:
    """Observed and expected CLs upper limits on the POI at confidence ``cl`` (asymptotics).

    The exact roots of ``CLs(mu) = 1 - cl`` (observed) and of the expected CLs at each
    n-sigma quantile (as ``pyhf.infer.intervals.upper_limits.upper_limit(data, model,
    level=1 - cl)``, which brackets them on a scan and refines them by TOMS 748), within the
    POI's bounds; differentiable w.r.t. ``yields`` (implicit function theorem).

    Args:
        data: Observed main counts then auxiliary data (pyhf's layout), or the main counts.
        model: The likelihood (a POI whose bounds include 0).
        cl: Confidence level in (0, 1), e.g. 0.95 (pyhf's ``level = 1 - cl``); a Python
            float (static under ``jit``).
        test_stat: ``"qtilde"`` (default) or ``"q"``.
        yields: Optional yields override; the limits are differentiable w.r.t. it.

    Returns:
        ``(observed, expected)``: the observed limit (scalar) and (5,) expected limits, in
        pyhf's order: the roots of the expected CLs at +2, +1, 0, -1, -2 sigma, i.e. the
        limits at -2, -1, 0 (median), +1, +2 sigma of the background-only expectation
        (ascending). In units of the POI. NaN where a root was not found under ``jit``.

    Raises:
        ValueError: ``cl`` outside (0, 1); unknown ``test_stat``; the POI's bounds exclude 0;
            invalid ``data`` or ``yields`` (see :func:`~neosx.infer.fit`).
        FitError: (eager) a fit failed, or a limit lies above the POI's upper bound.

    Example:
        >>> observed, expected = nx.infer.upper_limit(data, model, 0.95)  # doctest: +SKIP
    """
    if not 0.0 < cl < 1.0:
        raise ValueError(f"cl must be in (0, 1), got cl={cl}")
    _checked_cls_inputs(model, test_stat)
    yields = model.prepare(yields)
    data = jnp.asarray(checked_data(model.config, data), jnp.float64)
    ref = _reference(model, data, yields)

    def solve(mu: jax.Array, args: tuple) -> tuple[jax.Array, jax.Array]:
        _, _, yields, ref = args
        pars, converged = _fixed_poi_fits(mu, model, yields, ref)
        return pars, jnp.all(converged)

    def excess(mu: jax.Array, pars: jax.Array, args: tuple) -> jax.Array:
        # the observed lane: -Phi^-1(CLs(mu)) - target; the expected: sqrt(q_mu,A) - t_n
        observed, target, yields, ref = args
        q, qa = _statistics(mu, pars, model, yields, ref)
        cls = jnp.clip(asymptotic_cls(q, qa, test_stat), 1e-300, 1.0 - 1e-16)  # Phi^-1 finite
        return jnp.where(observed, -ndtri(cls), sqrt_q(qa)) - target

    alpha, n = 1.0 - cl, np.asarray(N_SIGMA)
    targets = jnp.asarray([-special.ndtri(alpha), *(-n - special.ndtri(alpha * special.ndtr(-n)))])
    observed = jnp.arange(targets.size) == 0
    low, high = (float(v) for v in model.config.suggested_bounds[model.config.poi_index])
    lower, upper = jnp.asarray(max(low, 0.0)), jnp.asarray(high)
    # sqrt(q) ~ mu / sigma, sigma from the Fisher information; the observed limit starts at
    # the median expected one, shifted by an excess
    sigma = jax.lax.stop_gradient(poi_uncertainty(model, 0.0, yields=yields))
    sigma = jnp.where(jnp.isfinite(sigma) & (sigma > 0), sigma, 0.1 * (upper - lower))
    shift = jnp.where(observed, jax.lax.stop_gradient(jnp.maximum(ref.mu_hat, 0.0)), 0.0)
    scale = jnp.where(observed, targets[3], targets)
    starts = jnp.clip(shift + scale * sigma, lower + 1e-6 * (upper - lower), upper)
    limits, converged = jax.lax.map(lambda a: bracketed_root(
        solve, excess, a[2], lower, upper, (a[0], a[1], yields, ref)), (observed, targets, starts))
    converged = converged & ref.converged
    limits = jnp.where(converged, limits, jnp.nan)
    if not is_traced(converged):
        names = ("observed", *(f"expected ({-k:+g} sigma)" if k else "median" for k in N_SIGMA))
        failed = [name for name, ok in zip(names, np.asarray(converged), strict=True) if not ok]

        def causes() -> tuple[str, ...]:
            return (*fit_causes(model, data, yields)(), f"the {', '.join(failed)} limit"
                    f"{'s' * (len(failed) > 1)} may lie above the POI's upper bound {high}")

        checked(limits, jnp.all(converged), "upper-limit root", causes)
    return limits[0], limits[1:]


class ProfileScan(NamedTuple):
    """Result of :func:`profile_scan`.

    Attributes:
        grid: One array per scanned parameter (in the order given), each of ``q``'s shape:
            the parameter's value at each grid point (``meshgrid`` with ``indexing="ij"``).
        q: ``-2 ln [L(fixed, profiled) / L(global maximum)]`` at each grid point: (n,) for one
            parameter, (n1, n2) for two; >= 0, 0 at the best fit.
        best: (npars,) the global best-fit parameters (``model.config.par_names`` order).
    """

    grid: tuple[jax.Array, ...]
    q: jax.Array
    best: jax.Array


def _checked_scan_parameters(
    model: HistFactory, parameters: Mapping[str, ArrayLike]
) -> tuple[tuple[str, ...], list[jax.Array]]:
    """The names and (n_k,) values of a profile scan, checked: one or two known scalar
    parameters, each with a non-empty 1-D array of values within its bounds (concrete)."""
    config = model.config
    if not 1 <= len(parameters) <= 2:
        raise ValueError(
            f"profile_scan scans 1 or 2 parameters, got {len(parameters)}: {list(parameters)}")
    values = []
    for name, grid in parameters.items():
        if name not in config.par_slices:
            raise ValueError(f"parameters: {name!r} is not a parameter of the model; "
                             f"parameters: {config.par_order}")
        where = config.par_slices[name]
        if where.stop - where.start != 1:
            raise ValueError(f"parameters: {name!r} has {where.stop - where.start} components; "
                             "profile_scan scans scalar parameters")
        bounds = config.suggested_bounds[where.start]
        values.append(_checked_grid(f"parameters[{name!r}]", grid, bounds, name))
    return tuple(parameters), values


def profile_scan(
    data: ArrayLike, model: HistFactory, parameters: Mapping[str, ArrayLike], *,
    yields: Any = None,
) -> ProfileScan:
    """Profile-likelihood scan, ``q = 2 (NLL(fixed) - NLL(global minimum))``, on a 1-D or 2-D grid.

    Each grid point is a fit with the scanned parameters fixed there and every other free
    parameter profiled (global search as :func:`~neosx.infer.fit`), all points in one
    ``vmap``; ``q`` is ``-2 ln`` of the profile-likelihood ratio, whose ``q = 1`` (1-D) or
    ``q = 2.30`` (2-D) contour is the 68% CL interval or region in the asymptotic limit.

    Args:
        data: Observed main counts then auxiliary data (pyhf's layout), or the main counts.
        model: The likelihood.
        parameters: ``{name: (n_k,) values}`` for one or two scalar parameters (the POI or
            any nuisance parameter), the values within the parameter's bounds.
        yields: Optional yields override; ``q`` is differentiable w.r.t. it (and the values).

    Returns:
        A :class:`ProfileScan`: the grid, ``q`` of shape (n,) or (n1, n2), the best fit.
        NaN in ``q`` where a fit did not converge under ``jit``.

    Raises:
        ValueError: Not 1 or 2 parameters; an unknown or multi-component parameter; values
            not a non-empty 1-D array or (concrete) outside the bounds; invalid ``data`` or
            ``yields`` (see :func:`~neosx.infer.fit`).
        FitError: (eager) a fit did not converge.

    Example:
        >>> grid = {"mu": jnp.linspace(0.0, 2.0, 21)}
        >>> scan = nx.infer.profile_scan(data, model, grid)  # doctest: +SKIP
    """
    require_float64()
    names, values = _checked_scan_parameters(model, parameters)
    yields = model.prepare(yields)
    data = jnp.asarray(checked_data(model.config, data), jnp.float64)
    grid = tuple(jnp.meshgrid(*values, indexing="ij"))
    points = jnp.stack([g.ravel() for g in grid], axis=-1)
    best, best_converged = _fitted(model, data, yields)

    def constrained(point: jax.Array) -> tuple[jax.Array, jax.Array]:
        fixed = dict(zip(names, jax.lax.stop_gradient(point), strict=True))
        return _fitted(model, data, yields, fixed, best)

    pars, converged = jax.vmap(constrained)(points)
    indices = np.array([model.config.par_slices[name].start for name in names])
    pars = pars.at[:, indices].set(points)  # q differentiable w.r.t. the grid values
    nll = jax.vmap(lambda p: _nll(model, p, data, yields))(pars)
    q = jnp.maximum(2.0 * (nll - _nll(model, best, data, yields)), 0.0).reshape(grid[0].shape)
    converged = jnp.all(converged) & best_converged
    q = checked(q, converged, "profile-scan fits", fit_causes(model, data, yields))
    return ProfileScan(grid, q, jnp.where(best_converged, best, jnp.nan))
