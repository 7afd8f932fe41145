"""A root of an increasing function of minimisers, by Newton steps kept inside a bracket,
differentiated implicitly (the upper limits of :mod:`neosx.infer.intervals`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["ROOT_ITERATIONS", "ROOT_TOLERANCE", "bracketed_root"]

ROOT_ITERATIONS = 60
ROOT_TOLERANCE = 1e-10
"""A limit is accepted where ``|F(mu)| <= ROOT_TOLERANCE``, in units of ``sqrt(q)``: ``mu``
within ~1e-10 of its standard deviation."""


_Solve = Callable[[jax.Array, Any], tuple[Any, jax.Array]]
_Excess = Callable[[jax.Array, Any, Any], jax.Array]


def _bracketed_newton(
    solve: _Solve, excess: _Excess, x0: jax.Array, lower: jax.Array, upper: jax.Array, args: Any
) -> tuple[jax.Array, Any, jax.Array, jax.Array]:
    """``(x, inner, slope, converged)``: a root of the increasing ``F(x) = excess(x, inner(x),
    args)`` in [lower, upper], ``inner(x), ok = solve(x, args)`` the minimisers that ``F``
    depends on, stationary so that ``F' = d excess / d x`` at fixed ``inner`` (envelope
    theorem). Newton steps are kept inside the bracket of the signs seen so far: a step that
    leaves it, or is not finite, is a bisection, or tries ``upper`` if ``F`` was not yet seen
    positive (a root beyond ``upper`` then ends the search); one evaluation per pass."""

    def searching(state: tuple) -> jax.Array:
        x, r, _, _, lo, hi, _, iteration = state
        beyond = (r < 0) & (x >= upper)  # no root within the bounds
        return (iteration == 0) | ((iteration <= ROOT_ITERATIONS) & (jnp.abs(r) > ROOT_TOLERANCE)
                                   & (lo < hi) & ~beyond)

    def step(state: tuple) -> tuple:
        x, r, slope, _, lo, hi, seen_above, iteration = state
        lo = jnp.where(r < 0, x, lo)  # r is NaN before the first evaluation
        hi = jnp.where(r > 0, x, hi)
        seen_above = seen_above | (r > 0)
        newton = x - r / slope
        inside = (newton > lo) & (newton < hi) & jnp.isfinite(newton)
        outside = jnp.where((newton >= hi) & ~seen_above, upper, 0.5 * (lo + hi))
        x = jnp.where(iteration == 0, x, jnp.where(inside, newton, outside))
        inner, ok = solve(x, args)
        r, slope = jax.jvp(lambda x: excess(x, inner, args), (x,), (jnp.ones_like(x),))
        return x, jnp.where(ok, r, jnp.nan), slope, inner, lo, hi, seen_above, iteration + 1

    shapes = jax.eval_shape(solve, x0, args)[0]
    inner = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    nan = jnp.full_like(x0, jnp.nan)
    state = (x0, nan, nan, inner, lower, upper, jnp.asarray(False), jnp.asarray(0))
    x, r, slope, inner, *_ = jax.lax.while_loop(searching, step, state)
    return x, inner, slope, jnp.abs(r) <= ROOT_TOLERANCE


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def bracketed_root(
    solve: _Solve, excess: _Excess, x0: jax.Array, lower: jax.Array, upper: jax.Array, args: Any
) -> tuple[jax.Array, jax.Array]:
    """``(x, converged)`` of :func:`_bracketed_newton`; ``dx / d args = -(d excess / d args)
    / F'(x)`` at the root's minimisers (implicit function theorem; no solve differentiated)."""
    x, _, _, converged = _bracketed_newton(solve, excess, x0, lower, upper, args)
    return x, converged


def _bracketed_root_fwd(
    solve: _Solve, excess: _Excess, x0: jax.Array, lower: jax.Array, upper: jax.Array, args: Any
) -> tuple[tuple[jax.Array, jax.Array], tuple]:
    x, inner, slope, converged = _bracketed_newton(solve, excess, x0, lower, upper, args)
    return (x, converged), (x, inner, slope, args)


def _bracketed_root_bwd(
    solve: _Solve, excess: _Excess, residuals: tuple, cotangent: tuple
) -> tuple:
    x, inner, slope, args = residuals
    _, pull = jax.vjp(lambda a: excess(x, inner, a), args)
    (args_bar,) = pull(-cotangent[0] / slope)
    zero = jnp.zeros_like(x)
    return zero, zero, zero, args_bar


bracketed_root.defvjp(_bracketed_root_fwd, _bracketed_root_bwd)
