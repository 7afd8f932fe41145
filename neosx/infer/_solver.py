"""Bounded minimisation by projected Newton, differentiated by the implicit function theorem.

This is the one place that knows how fits are solved and differentiated, so it can move to
``jax.lax.custom_root`` or optimistix without touching the statistics built on it.

The local fit is :mod:`neosx.infer._newton`, the search for the global minimum around it
:mod:`neosx.infer._global`; here the two become one differentiable ``minimize``.

Gradient: at the solution the free gradient vanishes, ``g_F(theta*, args) = 0``; so
``d theta*_F = -H_FF^{-1} dg_F``. The ``custom_vjp`` backward pass solves ``H_FF u = bar``
and pulls ``-u`` back through ``g_F`` with respect to ``args`` (data, yields, fixed values).
Parameters on an active bound have zero derivative.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from neosx.infer._global import global_solve
from neosx.infer._newton import (
    Objective,
    Solution,
    free_block,
    jacobi_scale,
    newton_fit,
    onto_bounds,
    positive_definite_solve,
    symmetric_solve,
)

__all__ = ["Solution", "free_block", "minimize", "positive_definite_solve", "root"]


def _fit(
    objective: Objective, init: jax.Array, lower: jax.Array, upper: jax.Array,
    fixed: np.ndarray, offsets: tuple[jax.Array, jax.Array] | None, args: Any,
) -> tuple[Solution, jax.Array, jax.Array]:
    """:func:`~neosx.infer._global.global_solve`, or without ``offsets`` the single fit from
    ``init``."""
    if offsets is None:
        local = newton_fit(objective, init, lower, upper, fixed, args)
        return local.solution, local.grad, local.hess
    return global_solve(objective, init, lower, upper, fixed, *offsets, args)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 4))
def _minimize(
    objective: Objective, init: jax.Array, lower: jax.Array, upper: jax.Array,
    fixed: tuple[bool, ...], offsets: tuple[jax.Array, jax.Array] | None, args: Any,
) -> Solution:
    return _fit(objective, init, lower, upper, np.asarray(fixed), offsets, args)[0]


def _minimize_fwd(
    objective: Objective, init: jax.Array, lower: jax.Array, upper: jax.Array,
    fixed: tuple[bool, ...], offsets: tuple[jax.Array, jax.Array] | None, args: Any,
) -> tuple[Solution, tuple]:
    solution, grad, hess = _fit(objective, init, lower, upper, np.asarray(fixed), offsets, args)
    # the implicit gradient is taken at the winning fit's solution, with its own Hessian
    return solution, (solution.pars, grad, hess, lower, upper, offsets, args)


def _minimize_bwd(
    objective: Objective, fixed: tuple[bool, ...], residuals: tuple, cotangent: Solution
) -> tuple:
    pars, g, hess, lower, upper, offsets, args = residuals
    fixed = np.asarray(fixed)
    # the parameters the solver held on a bound have zero derivative
    onto_lower, onto_upper = onto_bounds(
        pars, jnp.where(fixed, 0.0, g), jacobi_scale(hess, fixed), lower, upper
    )
    free = ~fixed & ~onto_lower & ~onto_upper
    bar = jnp.where(free, cotangent.pars, 0.0)
    u = symmetric_solve(free_block(hess, free), bar)
    u = jnp.where(free, u, 0.0)
    # d theta*_F / d args = -H_FF^-1 d g_F / d args; the value's own derivative is d f / d args:
    # both pulled back through one reverse pass of (f, g)
    _, pull = jax.vjp(lambda a: jax.value_and_grad(objective)(pars, a), args)
    (args_bar,) = pull((cotangent.value, -u))
    zeros = jnp.zeros_like(pars)
    return (zeros, jnp.zeros_like(lower), jnp.zeros_like(upper),
            jax.tree.map(jnp.zeros_like, offsets), args_bar)


_minimize.defvjp(_minimize_fwd, _minimize_bwd)


def minimize(
    objective: Objective,
    init: jax.Array,
    bounds: jax.Array,
    fixed: np.ndarray,
    args: Any,
    offsets: jax.Array | None = None,
    kink_offsets: jax.Array | None = None,
) -> Solution:
    """Minimise ``objective(pars, args)`` within bounds, differentiable w.r.t. ``args``.

    Without ``offsets``: one projected-Newton fit from ``init`` (a local minimum). With
    ``offsets``: a search for the global minimum that costs one fit where the objective
    looks convex: the fit from ``init`` first, then, only where it finds evidence of a
    second minimum (no convergence, a saddle, a concave section or kink about ``init``, a
    probe below the tangent plane at the solution), fits from ``init +- offsets[k]``, from
    the first solution mirrored through ``init`` and along its direction of least
    curvature, one after the other; the lowest wins (``Solution.start`` says which; see
    :func:`~neosx.infer._global.global_solve`).

    Args:
        objective: Pure function ``(pars (n,), args pytree) -> scalar`` (e.g. an NLL). Fixed
            parameters take their values from ``init``: pass them through ``args`` and write
            them into ``pars`` inside the objective if their values must be differentiable.
        init: (n,) starting point (clipped into the bounds).
        bounds: (n, 2) lower and upper bounds.
        fixed: (n,) static bool mask of parameters held at ``init``.
        args: pytree of arrays the objective depends on (data, yields, fixed values).
        offsets: (S, n) displacements of the restarts (zero on fixed parameters), e.g. one
            constraint width per nuisance parameter; S may be 0 (only the mirrored and
            curvature restarts). None: no search.
        kink_offsets: (K, n) directions in which the objective may have a kink at ``init``
            (e.g. a width along each parameter of a piecewise-linear interpolation), probed
            at ``KINK_PROBE`` of their length; default none. Only with ``offsets``.

    Returns:
        A :class:`Solution`. Gradients w.r.t. ``args`` come from the implicit function
        theorem at the (winning) solution (no iterations are differentiated).
    """
    bounds = jnp.asarray(bounds, init.dtype)
    fixed_tuple = tuple(bool(v) for v in np.asarray(fixed))
    if offsets is not None:
        kinks = jnp.zeros((0, init.size)) if kink_offsets is None else kink_offsets
        offsets = tuple(
            jax.lax.stop_gradient(jnp.asarray(o, init.dtype).reshape(-1, init.size))
            for o in (offsets, kinks)
        )
    return _minimize(objective, init, bounds[:, 0], bounds[:, 1], fixed_tuple, offsets, args)


ROOT_ITERATIONS = 40
ROOT_TOLERANCE = 1e-10


def _newton_root(fn: Callable[[jax.Array, Any], jax.Array], x0: jax.Array,
                 lower: jax.Array, upper: jax.Array, args: Any) -> tuple[jax.Array, jax.Array]:
    value_and_slope = jax.value_and_grad(fn)

    def cond(state: tuple) -> jax.Array:
        _, r, _, _, iteration = state
        return (iteration < ROOT_ITERATIONS) & (jnp.abs(r) > ROOT_TOLERANCE)

    def body(state: tuple) -> tuple:
        x, r, slope, (lo, hi), iteration = state
        # keep a bracket [lo, hi] (fn increasing); Newton steps leaving it are bisected
        lo = jnp.where(r < 0, x, lo)
        hi = jnp.where(r > 0, x, hi)
        newton = x - r / slope
        inside = (newton > lo) & (newton < hi) & jnp.isfinite(newton)
        x_new = jnp.where(inside, newton, 0.5 * (lo + hi))
        r_new, slope_new = value_and_slope(x_new, args)
        return x_new, r_new, slope_new, (lo, hi), iteration + 1

    r0, slope0 = value_and_slope(x0, args)
    state = (x0, r0, slope0, (lower, upper), jnp.asarray(0))
    x, r, _, _, _ = jax.lax.while_loop(cond, body, state)
    return x, jnp.abs(r) <= ROOT_TOLERANCE


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def root(fn: Callable[[jax.Array, Any], jax.Array], x0: jax.Array, lower: jax.Array,
         upper: jax.Array, args: Any) -> tuple[jax.Array, jax.Array]:
    """Root of an increasing scalar function ``fn(x, args)`` in [lower, upper].

    Safeguarded Newton (bisection when a step leaves the bracket). Differentiable w.r.t.
    ``args`` by the implicit function theorem: ``dx*/dargs = -(dfn/dargs) / (dfn/dx)``.

    Returns:
        ``(x, converged)``.
    """
    return _newton_root(fn, x0, lower, upper, args)


def _root_fwd(fn: Callable, x0: jax.Array, lower: jax.Array, upper: jax.Array,
              args: Any) -> tuple:
    x, converged = _newton_root(fn, x0, lower, upper, args)
    return (x, converged), (x, x0, lower, upper, args)


def _root_bwd(fn: Callable, residuals: tuple, cotangent: tuple) -> tuple:
    x, x0, lower, upper, args = residuals
    slope = jax.grad(fn)(x, args)
    _, pull = jax.vjp(lambda a: fn(x, a), args)
    (args_bar,) = pull(-cotangent[0] / slope)
    return jnp.zeros_like(x0), jnp.zeros_like(lower), jnp.zeros_like(upper), args_bar


root.defvjp(_root_fwd, _root_bwd)
