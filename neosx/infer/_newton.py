"""One bounded fit by projected Newton (the local solver of :mod:`neosx.infer._solver`).

Solver: Newton steps with the exact Hessian on the free, inactive parameters (parameters
pushed against a bound, and nearer to it than their own Newton step, are moved onto it), the
Hessian Jacobi-scaled before the solve so that constraints of very different widths (a
shapesys of relative width 2e-6 next to a normfactor) are treated alike and then solved as
positive definite (elimination for up to ``UNROLLED_SOLVE_SIZE`` = 4 parameters, Cholesky
above; by eigendecomposition only where it is not positive definite), and a backtracking
line search that tries the full Newton step first and otherwise halves it, one trial at a
time, until the Armijo test passes. All of it is one ``lax.while_loop`` (the backtracking a
loop inside it): no unrolling, so compile time does not grow with the iteration count.

The line search evaluates one trial point at a time, not its 16 step sizes as one batch,
because of how XLA's CPU runtime executes a program: a sequence of operations (a loop body,
a branch) runs in order on the calling thread only if every buffer it touches is at most
512 bytes; otherwise its independent operations are dispatched to the thread pool, and on a
small model the hand-offs cost more than the arithmetic. A batch of 16 trial points made the
buffers of the whole Newton loop too large for that even on the smallest models: expected-CLs
value+grad at 10 bins and one nuisance parameter took 0.127 ms with it, 0.055 ms without.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "LocalFit", "Objective", "Solution", "checked_symmetric_solve", "free_block", "jacobi_scale",
    "newton_fit", "onto_bounds", "positive_definite_solve", "symmetric_solve", "value_grad_hessian",
]

Objective = Callable[[jax.Array, Any], jax.Array]

MAX_ITERATIONS = 100
LINE_SEARCH_STEPS = 16  # step sizes 1, 1/2, ..., 2^-15, tried in turn
DECREMENT_TOLERANCE = 1e-20
"""Stop once the Newton decrement g^T H^-1 g (twice the predicted NLL gain) is below this
(relative to max(1, |f|)): the quadratic convergence makes the last step land at round-off."""
ARMIJO = 1e-4
UNROLLED_SOLVE_SIZE = 4
"""Systems of at most this many parameters are solved by elimination written out in
``jax.numpy`` (fused with the surrounding arithmetic), larger ones by LAPACK's Cholesky: for
the few-parameter fits of a training step the three LAPACK calls cost more than the solve."""


class Solution(NamedTuple):
    """Result of :func:`minimize`.

    Attributes:
        pars: (n,) the minimiser (NaN everywhere if the solver did not converge).
        value: objective at the minimiser.
        converged: True if the Newton decrement fell below tolerance within the budget.
        iterations: Newton iterations used (by the fit that won).
        start: Which start the minimiser came from: 0 the given init, ``1 ... 2S`` the
            offset starts (``init + offsets[k]`` is ``1 + k``, ``init - offsets[k]`` is
            ``1 + S + k``), ``2S + 1, 2S + 2`` the first solution mirrored through the init
            (once and twice as far), ``2S + 3, 2S + 4`` the first solution plus / minus its
            direction of least curvature (see :func:`~neosx.infer._global.global_solve`).
            Always 0 without ``offsets``.
        searched: True if the restarts ran (the first fit's neighbourhood was not convex).
    """

    pars: jax.Array
    value: jax.Array
    converged: jax.Array
    iterations: jax.Array
    start: jax.Array
    searched: jax.Array


def jacobi_scale(hess: jax.Array, fixed: np.ndarray) -> jax.Array:
    """``1 / sqrt(|H_ii|)`` of the non-fixed parameters (1 for fixed ones and zero curvature)."""
    diag = jnp.abs(jnp.diagonal(hess))
    return 1.0 / jnp.sqrt(jnp.where(~fixed & (diag > 0), diag, 1.0))


def onto_bounds(
    pars: jax.Array, grad: jax.Array, scale: jax.Array, lower: jax.Array, upper: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Parameters held on their lower / upper bound (Bertsekas' epsilon-active set): pushed
    against it by the gradient and nearer to it than their own diagonal Newton step,
    ``scale**2 |grad|``. Pass a gradient that is 0 on fixed parameters."""
    reach = scale**2 * jnp.abs(grad)
    return (grad > 0) & (pars - lower <= reach), (grad < 0) & (upper - pars <= reach)


def free_block(matrix: jax.Array, free: jax.Array) -> jax.Array:
    """``matrix`` on the free x free block, the identity on fixed / active rows and columns."""
    mask = free[:, None] & free[None, :]
    return jnp.where(mask, matrix, jnp.eye(matrix.shape[0], dtype=matrix.dtype))


def _elimination_solve(matrix: jax.Array, rhs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(matrix^-1 rhs, every pivot > 0)`` by Gauss-Jordan elimination without pivoting,
    one step per column of a small matrix of static size.

    For a symmetric matrix the pivots are the diagonal of its LDL^T factorisation, so all are
    positive exactly when the matrix is positive definite, and elimination without pivoting
    is then as stable as Cholesky.
    """
    size = matrix.shape[0]
    augmented = jnp.concatenate([matrix, rhs[:, None]], axis=1)
    row = jnp.arange(size)[:, None]
    definite = jnp.asarray(True)
    for k in range(size):
        pivot = augmented[k, k]
        definite = definite & (pivot > 0)
        pivot_row = augmented[k] / pivot
        eliminated = augmented - augmented[:, k : k + 1] * pivot_row
        augmented = jnp.where(row == k, pivot_row, eliminated)
    return augmented[:, size], definite


def positive_definite_solve(matrix: jax.Array, rhs: jax.Array) -> jax.Array:
    """``matrix^-1 rhs`` for a symmetric positive-definite (n, n) ``matrix`` and (n,) ``rhs``;
    NaN where ``matrix`` is not positive definite.

    Elimination written out for n <= :data:`UNROLLED_SOLVE_SIZE`, Cholesky (LAPACK) above.
    """
    if matrix.shape[0] > UNROLLED_SOLVE_SIZE:
        return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(matrix), rhs)
    solution, definite = _elimination_solve(matrix, rhs)
    return jnp.where(definite, solution, jnp.nan)


def symmetric_solve(matrix: jax.Array, rhs: jax.Array) -> jax.Array:
    """``matrix^-1 rhs`` for a symmetric ``matrix`` (see :func:`checked_symmetric_solve`)."""
    return checked_symmetric_solve(matrix, rhs)[0]


def checked_symmetric_solve(matrix: jax.Array, rhs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(matrix^-1 rhs, matrix is positive definite)`` for a symmetric ``matrix``: solved
    as positive definite where it is (at and near a minimum: nearly always), by its
    eigendecomposition where it is not (an indefinite Hessian's Newton step may still
    descend).

    The fallback runs only when needed, in a ``lax.cond``. It is one LAPACK call (``syevd``);
    an LU solve would add a loop of its own that turns the pivots into a permutation, in
    every copy of the solve in the program.
    """
    solution = positive_definite_solve(matrix, rhs)

    def eigen_solve() -> jax.Array:
        values, vectors = jnp.linalg.eigh(matrix)
        return vectors @ ((vectors.T @ rhs) / values)

    definite = jnp.all(jnp.isfinite(solution))
    return jax.lax.cond(definite, lambda: solution, eigen_solve), definite


def _newton_direction(
    hess: jax.Array, grad: jax.Array, pars: jax.Array, lower: jax.Array, upper: jax.Array,
    fixed: np.ndarray,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Projected Newton direction (zero on fixed parameters), the Newton decrement, and
    whether the Hessian is positive definite on the free, inactive parameters.

    A parameter pushed against a bound by the gradient, and nearer to it than its own
    (diagonal) Newton step would go, is moved onto the bound: its direction is the distance
    to it. The others take the Newton step of the problem with those held (Bertsekas'
    epsilon-active set). Freeing only the parameters exactly on a bound is not enough: a POI
    at 1e-17 after a step that stopped short of 0 then gets a Newton component through the
    bound, the line search clips it at every trial step, and the clipped direction need not
    descend at all (the sbottom workspace's free fit stalled so on one host).
    """
    g = jnp.where(fixed, 0.0, grad)
    scale = jacobi_scale(hess, fixed)
    onto_lower, onto_upper = onto_bounds(pars, g, scale, lower, upper)
    free = ~fixed & ~onto_lower & ~onto_upper
    scaled = free_block(hess * scale[:, None] * scale[None, :], free)
    g_free = jnp.where(free, g, 0.0)
    # zero off the free parameters: there the system is the identity and its rhs 0
    solution, definite = checked_symmetric_solve(scaled, scale * g_free)
    step = -scale * solution
    to_bound = jnp.where(onto_lower, lower - pars, jnp.where(onto_upper, upper - pars, 0.0))
    step = step + to_bound
    decrement = -jnp.dot(g, step)
    bad = ~jnp.all(jnp.isfinite(step)) | ~(decrement > 0)
    # not a descent direction (indefinite Hessian far from the minimum): scaled gradient
    fallback = -scale**2 * g_free + to_bound
    step = jnp.where(bad, fallback, step)
    decrement = jnp.where(bad, -jnp.dot(g, fallback), decrement)
    return step, decrement, definite


def value_grad_hessian(
    objective: Objective, pars: jax.Array, args: Any
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Value, gradient and Hessian in one forward-over-reverse pass (the first two are the
    primal outputs of the Hessian's columns)."""

    def column(tangent: jax.Array) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
        primal, (_, hess_column) = jax.jvp(
            lambda p: jax.value_and_grad(objective)(p, args), (pars,), (tangent,)
        )
        return primal, hess_column

    (values, grads), hess = jax.vmap(column)(jnp.eye(pars.shape[0], dtype=pars.dtype))
    return values[0], grads[0], hess


class LocalFit(NamedTuple):
    """One Newton fit: its solution, the gradient and Hessian there, and whether that Hessian
    is not positive definite on the free parameters off the bounds (a saddle point)."""

    solution: Solution
    grad: jax.Array
    hess: jax.Array
    indefinite: jax.Array


def newton_fit(
    objective: Objective, init: jax.Array, lower: jax.Array, upper: jax.Array,
    fixed: np.ndarray, args: Any,
) -> LocalFit:
    """One Newton fit from ``init``.

    Converged: the Newton decrement at the solution is <= 1e-20 (relative to max(1, |f|)),
    so the next Newton step would move the parameters by ~1e-10 of their uncertainties.
    Each pass of the loop evaluates value, gradient and Hessian once, at its current point,
    and tests convergence before it steps: a fit that starts at its minimum (the free fit to
    Asimov data) takes no step, none is spent on a last step at round-off, and the program
    holds one copy of the Hessian (evaluating the start point before the loop as well made
    the first call of expected-CLs value+grad 0.2-0.35 s slower). Keeping the start point's
    value, gradient and Hessian in the loop's state for the global search (instead of
    evaluating them there, where needed) made the fit 10-15x slower at 11 parameters.
    """

    def acceptable(
        pars: jax.Array, f: jax.Array, g: jax.Array, trial: jax.Array, f_trial: jax.Array
    ) -> jax.Array:
        predicted = (trial - pars) @ g
        return (f_trial <= f + ARMIJO * predicted) & jnp.isfinite(f_trial)

    def line_search(
        pars: jax.Array, f: jax.Array, g: jax.Array, direction: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        # the full Newton step first (accepted at every step near the minimum), then half of
        # it, and so on, until the Armijo test passes; if none does, the lowest point
        def untried(carry: tuple) -> jax.Array:
            k, _, _, accepted = carry
            return (k < LINE_SEARCH_STEPS) & ~accepted

        def halve(carry: tuple) -> tuple:
            k, best, f_best, _ = carry
            trial = jnp.clip(pars + 0.5**k * direction, lower, upper)
            f_trial = objective(trial, args)
            accepted = acceptable(pars, f, g, trial, f_trial)
            lower_f = accepted | (f_trial < f_best)
            best = jnp.where(lower_f, trial, best)
            f_best = jnp.where(lower_f, f_trial, f_best)
            return k + 1, best, f_best, accepted

        start = (jnp.asarray(0), pars, jnp.asarray(jnp.inf, f.dtype), jnp.asarray(False))
        _, best, f_best, _ = jax.lax.while_loop(untried, halve, start)
        return best, f_best

    def body(state: tuple) -> tuple:
        pars, _, _, _, steps, _, _, _ = state
        f, g, hess = value_grad_hessian(objective, pars, args)
        direction, decrement, definite = _newton_direction(hess, g, pars, lower, upper, fixed)
        converged = decrement <= DECREMENT_TOLERANCE * jnp.maximum(1.0, jnp.abs(f))
        stop = converged | (steps >= MAX_ITERATIONS)
        candidate, f_candidate = jax.lax.cond(
            stop, lambda: (pars, f), lambda: line_search(pars, f, g, direction)
        )
        improved = ~stop & (f_candidate < f)
        # no step lowers f: converged if the decrement is already tiny (round-off), else
        # failed (a stalled line search is not convergence)
        stalled_at = decrement <= 1e-10 * jnp.maximum(1.0, jnp.abs(f))
        success = converged | (~stop & ~improved & stalled_at)
        new_pars = jnp.where(improved, candidate, pars)
        return new_pars, f, g, hess, steps + improved, ~improved, success, ~definite

    pars0 = jnp.clip(init, lower, upper)
    n = pars0.shape[0]
    zero = jnp.zeros((), pars0.dtype)
    state = (pars0, zero, jnp.zeros(n, pars0.dtype), jnp.zeros((n, n), pars0.dtype),
             jnp.asarray(0), jnp.asarray(False), jnp.asarray(False), jnp.asarray(False))
    pars, f, grad, hess, iterations, _, success, indefinite = jax.lax.while_loop(
        lambda state: ~state[5], body, state
    )
    solution = Solution(pars, f, success, iterations, jnp.asarray(0), jnp.asarray(False))
    return LocalFit(solution, grad, hess, indefinite)
