"""Maximum-likelihood fits of a :class:`~neosx.histfactory.HistFactory` model.

Free (MLE) and constrained fits (parameters fixed by the measurement or by the caller,
e.g. the POI at a tested value), within the model's bounds, by projected Newton with the
exact Hessian; gradients w.r.t. data, yields and fixed values by the implicit function
theorem (:mod:`neosx.infer._solver`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from neosx.histfactory import HistFactory
from neosx.infer._solver import Solution, minimize

__all__ = ["FitError", "fit", "fit_solution", "require_float64"]


class FitError(RuntimeError):
    """A fit did not converge (raised in eager mode; under jit the parameters are NaN)."""


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
    """Static mask of fixed parameters (measurement's + caller's) and the caller's values."""
    config = model.config
    mask = np.array(config.suggested_fixed, dtype=bool)
    values = []
    for name, value in (fixed or {}).items():
        if name not in config.par_slices:
            raise ValueError(
                f"fixed parameter {name!r} is not in the model; parameters: {config.par_order}"
            )
        where = config.par_slices[name]
        mask[where] = True
        values.append((where, value))
    return mask, values


def _start(model: HistFactory, init: ArrayLike | None, values: list) -> jax.Array:
    start = jnp.asarray(model.config.suggested_init if init is None else init, jnp.float64)
    for where, value in values:
        start = start.at[where].set(jnp.asarray(value, jnp.float64))
    return start


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
    solution = minimize(nll, start, bounds, mask, (data, yields, start))
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
        FitError: the fit did not converge (eager calls).
        ValueError: an unknown parameter in ``fixed``.
        RuntimeError: JAX is not in float64 mode.

    Example:
        >>> best = nx.infer.fit(model, data, fixed={"mu": 0.0})  # doctest: +SKIP
    """
    solution = fit_solution(model, data, yields=yields, fixed=fixed, init=init)
    return checked(solution.pars, solution.converged, "fit")


def checked(value: jax.Array, converged: jax.Array, what: str) -> jax.Array:
    """NaN where a solve did not converge; raise :class:`FitError` if that is known eagerly."""
    if not isinstance(converged, jax.core.Tracer) and not bool(converged):
        raise FitError(f"{what} did not converge: the Newton iterations stalled or ran out")
    return jnp.where(converged, value, jnp.nan)
