"""Maximum-likelihood fits of a :class:`~neosx.histfactory.HistFactory` model.

Free (MLE) and constrained fits (parameters fixed by the measurement or by the caller,
e.g. the POI at a tested value), within the model's bounds, by projected Newton with the
exact Hessian; where the likelihood shows itself non-convex (e.g. a histosys whose up and
down variations lie on the same side of the nominal), restarted from each constrained
nuisance parameter at +-1 sigma, from the first minimum mirrored through the start and along
its direction of least curvature, keeping the lowest minimum; gradients w.r.t. data, yields
and fixed values by the implicit function theorem at that minimum (:mod:`neosx.infer._solver`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from neosx.histfactory import HistFactory
from neosx.histfactory._checks import check_within_bounds, checked_data, checked_shape, is_traced
from neosx.infer._solver import Solution, minimize

__all__ = [
    "FitError", "checked", "fit", "fit_causes", "fit_solution", "require_float64",
    "restart_offsets",
]


class FitError(RuntimeError):
    """A fit did not converge (raised in eager mode; under jit the parameters are NaN).

    The message names the likely cause where one is found (see
    :meth:`~neosx.histfactory.HistFactory.diagnose`): non-finite yields, a normsys factor
    <= 0, negative expected rates or data, an empty bin holding data, ...
    """


def require_float64() -> None:
    """Raise if JAX computes in float32: CLs and limits are meaningless in single precision."""
    if jnp.zeros(()).dtype != jnp.float64:
        raise RuntimeError(
            "neosx.infer needs float64: call jax.config.update('jax_enable_x64', True) "
            "before any JAX computation"
        )


def _fixed_layout(
    model: HistFactory, fixed: Mapping[str, ArrayLike] | None
) -> tuple[np.ndarray, list[tuple[slice, ArrayLike]]]:
    """Static mask of fixed parameters (measurement's + caller's) and the caller's values,
    checked: a scalar or one value per parameter of the set, within its bounds (concrete)."""
    config = model.config
    mask = np.array(config.suggested_fixed, dtype=bool)
    values = []
    for name, value in (fixed or {}).items():
        if name not in config.par_slices:
            raise ValueError(
                f"fixed parameter {name!r} is not in the model; parameters: {config.par_order}"
            )
        where = config.par_slices[name]
        value = checked_shape(f"fixed[{name!r}]", value, ((), (where.stop - where.start,)))
        check_within_bounds(
            f"fixed[{name!r}]", value, config.suggested_bounds[where], config.par_names[where]
        )
        mask[where] = True
        values.append((where, value))
    return mask, values


def _start(model: HistFactory, init: ArrayLike | None, values: list) -> jax.Array:
    """The fit's start: ``init`` (checked: (npars,), within the bounds) or the suggested
    init, with the fixed values written in."""
    config = model.config
    if init is not None:
        init = checked_shape("init", init, ((config.npars,),))
        check_within_bounds("init", init, config.suggested_bounds, config.par_names)
    start = jnp.asarray(config.suggested_init if init is None else init, jnp.float64)
    for where, value in values:
        start = start.at[where].set(jnp.asarray(value, jnp.float64))
    return start


def restart_offsets(
    model: HistFactory, start: jax.Array, mask: np.ndarray, yields: Any
) -> tuple[jax.Array, jax.Array]:
    """``(offsets (S, npars), kink_offsets (K, npars))`` of a fit's global search: one row
    per constrained parameter that is not fixed, one constraint width (``1 /
    sqrt(information)`` at ``start``, following the yields) on that parameter, zero
    elsewhere; the kink rows are those of the parameters whose interpolation has a kink at
    0 (:attr:`HistFactory.kinked_parameters`). The constrained set is static: the
    parameters with a constraint term at the spec's yields."""
    config = model.config
    with jax.ensure_compile_time_eval():
        constrained = np.asarray(model.constraint_information(config.suggested_init)) > 0
    (indices,) = np.nonzero(constrained & ~mask)
    widths = jax.lax.rsqrt(model.constraint_information(start, yields)[indices])
    offsets = jnp.zeros((indices.size, config.npars), jnp.float64)
    offsets = offsets.at[np.arange(indices.size), indices].set(widths)
    kinked = np.isin(indices, model.kinked_parameters)
    return offsets, offsets[np.nonzero(kinked)[0]]


def fit_solution(
    model: HistFactory,
    data: ArrayLike,
    *,
    yields: Any = None,
    fixed: Mapping[str, ArrayLike] | None = None,
    init: ArrayLike | None = None,
) -> Solution:
    """Like :func:`fit`, returning the full :class:`~neosx.infer._solver.Solution`.

    ``Solution.value`` is the minimised ``-model.log_likelihood_ratio`` (the negative
    log-likelihood up to a function of data and yields), differentiable w.r.t. data, yields
    and the fixed values; differences of it between fits are exact likelihood ratios.
    ``Solution.start`` says which start the minimum came from (0: ``init``; ``k + 1`` and
    ``S + k + 1``: the k-th unfixed constrained parameter of :func:`restart_offsets` at
    +1 and -1 sigma; above ``2 S``: the mirrored and curvature restarts of
    :func:`~neosx.infer._solver.minimize`), ``Solution.searched`` whether restarts ran.
    """
    require_float64()
    yields = model.prepare(yields)
    mask, values = _fixed_layout(model, fixed)
    start = _start(model, init, values)

    def nll(pars: jax.Array, args: tuple) -> jax.Array:
        data, yields, start = args
        return -model.log_likelihood_ratio(jnp.where(mask, start, pars), data, yields)

    bounds = jnp.asarray(model.config.suggested_bounds, jnp.float64)
    data = jnp.asarray(data, jnp.float64)
    offsets, kink_offsets = restart_offsets(model, start, mask, yields)
    solution = minimize(nll, start, bounds, mask, (data, yields, start), offsets, kink_offsets)
    pars = jnp.where(mask, start, solution.pars)
    return solution._replace(pars=pars)


def fit(
    model: HistFactory,
    data: ArrayLike,
    *,
    yields: Any = None,
    fixed: Mapping[str, ArrayLike] | None = None,
    init: ArrayLike | None = None,
) -> jax.Array:
    """Best-fit parameters: the MLE, or a constrained fit with some parameters fixed.

    Args:
        model: The likelihood.
        data: Main counts followed by auxiliary data (pyhf's layout), or the main counts only.
        yields: Optional yields override (see :class:`~neosx.histfactory.HistFactory`);
            the fit is differentiable w.r.t. it.
        fixed: ``{parameter name: value}`` held constant in addition to the measurement's
            fixed parameters, e.g. ``{"mu": 1.0}`` (values may be traced).
        init: (npars,) starting point; default the model's suggested init.

    Returns:
        (npars,) best-fit parameters, ordered as ``model.config.par_names``. NaN if the fit
        did not converge under ``jit``.

    Raises:
        FitError: the fit did not converge (eager calls); the message names the likely cause.
        ValueError: ``data``, ``init``, ``fixed`` or ``yields`` do not fit the model (shapes;
            names), or, where concrete, hold invalid values: data not finite or negative
            main counts, ``init`` or fixed values outside the bounds, invalid yields (see
            :meth:`~neosx.histfactory.HistFactory.prepare`).
        RuntimeError: JAX is not in float64 mode.

    Example:
        >>> best = nx.infer.fit(model, data, fixed={"mu": 0.0})  # doctest: +SKIP
    """
    data = checked_data(model.config, data)
    solution = fit_solution(model, data, yields=yields, fixed=fixed, init=init)
    causes = fit_causes(model, data, yields, fixed=fixed, init=init)
    return checked(solution.pars, solution.converged, "fit", causes)


def fit_causes(
    model: HistFactory, data: ArrayLike, yields: Any, *,
    fixed: Mapping[str, ArrayLike] | None = None, init: ArrayLike | None = None,
) -> Callable[[], Sequence[str]]:
    """What :func:`checked` reports if a fit fails: the causes that the likelihood is
    undefined at the fit's start point (:meth:`~neosx.histfactory.HistFactory.diagnose`)."""

    def causes() -> Sequence[str]:
        start = _start(model, init, _fixed_layout(model, fixed)[1])
        return model.diagnose(start, data, yields)

    return causes


def checked(
    value: jax.Array, converged: jax.Array, what: str,
    causes: Callable[[], Sequence[str]] = tuple,
) -> jax.Array:
    """NaN where a solve did not converge; raise :class:`FitError` if that is known eagerly.

    Args:
        value: The solve's result.
        converged: Whether it converged.
        what: The solve, for the message (e.g. ``"fit"``).
        causes: Called on failure (eager only) for the likely causes to name.
    """
    if not is_traced(converged) and not bool(converged):
        found = "; ".join(causes()) or (
            "none found in the inputs (the likelihood is finite at the start point; the "
            "minimum may be flat or lie beyond a bound)"
        )
        raise FitError(
            f"{what} did not converge: the Newton iterations stalled or ran out; likely "
            f"cause: {found}"
        )
    return jnp.where(converged, value, jnp.nan)
