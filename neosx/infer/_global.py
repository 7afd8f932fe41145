"""The search for the global minimum of a possibly non-convex objective: restarts of the
Newton fit of :mod:`neosx.infer._newton` where the first fit finds the objective non-convex
(e.g. a histosys whose up and down variations lie on the same side of the nominal), the
lowest minimum kept."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from neosx.infer._newton import (
    LocalFit,
    Objective,
    Solution,
    free_block,
    jacobi_scale,
    newton_fit,
)

__all__ = ["KINK_PROBE", "global_solve"]

KINK_PROBE = 1e-5
"""The near probes of the global search's convexity test, as a fraction of the kink
offsets (constraint widths): a kink of the objective at the start with a slope change of s
(per width) puts one of them ``KINK_PROBE * s`` below the tangent plane, a smooth curvature
c only ``KINK_PROBE**2 * c / 2``, below the test's tolerance (1e-8): a smooth negative
curvature at the start, common in a CLs fit at mu = 1 to background-only data, is no
evidence of a second minimum by itself."""


def _softest_direction(hess: jax.Array, fixed: np.ndarray) -> jax.Array:
    """The eigenvector of least curvature of the Jacobi-scaled Hessian on the non-fixed
    parameters, in the parameters' units (one unit in the scaled metric: roughly one
    standard deviation of the local curvature); zero on fixed parameters."""
    scale = jacobi_scale(hess, fixed)
    scaled = free_block(hess * scale[:, None] * scale[None, :], jnp.asarray(~fixed))
    # the fixed rows are decoupled unit eigenvalues: lift them above every free eigenvalue
    # (past the Gershgorin bound) so that the least one is free
    lift = 1.0 + jnp.sum(jnp.abs(scaled))
    _, vectors = jnp.linalg.eigh(scaled + jnp.diag(jnp.where(fixed, lift, 0.0)))
    return jnp.where(fixed, 0.0, scale * vectors[:, 0])


def global_solve(
    objective: Objective, init: jax.Array, lower: jax.Array, upper: jax.Array,
    fixed: np.ndarray, offsets: jax.Array, kink_offsets: jax.Array, args: Any,
) -> tuple[Solution, jax.Array, jax.Array]:
    """The lowest of several Newton fits, with the gradient and Hessian at it.

    The fit from ``init`` runs first. Restarts run only where it finds evidence of a second
    minimum: a probe point below the tangent plane at the start or at the solution
    (impossible for a convex objective). The probes are ``init +- offsets[k]``, ``init +-
    KINK_PROBE * kink_offsets[k]`` (a concave kink at the start, such as histosys code0's at
    alpha = 0, which no Hessian shows) and the first solution mirrored through the init
    (once and twice as far). Evidence restarts from the mirrored points and from the first
    solution plus and minus its direction of least curvature, and from the offsets that the
    probes below point to: an offset probe's own, both offsets of a kink probe's parameter
    (on a model with many kinked parameters, such as a toy of a published workspace, a
    handful of restarts instead of two per parameter). A first fit that did not converge or
    ended where the Hessian is not positive definite runs every restart. The lowest
    converged fit wins; a restart must be lower than the best so far by more than round-off
    to replace it.

    All fits are passes of one ``lax.while_loop`` around one copy of :func:`newton_fit` (a
    second, batched copy for the restarts doubled the compile time), so the restarts run
    one after the other, and not at all on a convex-looking problem.
    """
    n_offsets = offsets.shape[0]
    x0 = jnp.clip(init, lower, upper)
    starts = jnp.clip(jnp.concatenate([x0[None], x0 + offsets, x0 - offsets]), lower, upper)
    near = KINK_PROBE * kink_offsets
    probes = jnp.clip(x0 + jnp.concatenate([offsets, -offsets, near, -near]), lower, upper)
    # one point at a time: a batch's buffers would move the program onto XLA's thread pool
    f_probes = jax.vmap(lambda p: objective(p, args))(probes)
    f0, g0 = jax.value_and_grad(objective)(x0, args)
    n_starts = 1 + 2 * n_offsets + 4
    # the parameter each offset and each kink probe moves (one non-zero entry per row)
    offset_par = jnp.argmax(jnp.abs(offsets), axis=1)
    kink_par = jnp.argmax(jnp.abs(kink_offsets), axis=1)

    def evidence(first: LocalFit) -> jax.Array:
        """(n_starts,) which starts to run: the init; where any probe refutes convexity (a
        point below a tangent plane at the start or at the solution, which a convex function
        never has), the mirrored and curvature starts, and the offset starts the probes
        point to (an offset probe its own, a kink probe both of its parameter); every start
        where the first fit did not converge or ended on a saddle."""
        x_hat, f_hat = first.solution.pars, first.solution.value
        tolerance = 1e-8 * jnp.maximum(1.0, jnp.abs(f_hat))
        away = x_hat - x0
        mirrored = jnp.clip(jnp.stack([x0 - away, x0 - 2.0 * away]), lower, upper)
        points = jnp.concatenate([probes, mirrored])
        values = jnp.concatenate([f_probes, jax.lax.map(lambda p: objective(p, args), mirrored)])
        below = (values < f0 + (points - x0) @ g0 - tolerance) | (
            values < f_hat + (points - x_hat) @ first.grad - tolerance
        )
        n_kinks = kink_offsets.shape[0]
        plus, minus = below[:n_offsets], below[n_offsets : 2 * n_offsets]
        kinked = below[2 * n_offsets : 2 * n_offsets + n_kinks] | below[
            2 * n_offsets + n_kinks : 2 * (n_offsets + n_kinks)]
        at_kink = jnp.any(kinked[:, None] & (kink_par[:, None] == offset_par[None, :]), axis=0)
        axes = jnp.concatenate([plus | at_kink, minus | at_kink])
        everything = first.indefinite | ~first.solution.converged
        suspect = everything | jnp.any(below)
        return jnp.concatenate([jnp.ones(1, bool), axes | everything, jnp.full(4, suspect)])

    def curvature_starts(first: LocalFit) -> jax.Array:
        # the first solution mirrored through the start (once and twice as far: the basin
        # on the other side), and the solution plus / minus its direction of least curvature
        x_hat = first.solution.pars
        soft = _softest_direction(first.hess, fixed)
        away = x_hat - x0
        return jnp.clip(jnp.stack([x0 - away, x0 - 2.0 * away, x_hat + soft, x_hat - soft]),
                        lower, upper)

    def untried(carry: tuple) -> jax.Array:
        k, _, n_run, _, _ = carry
        return (k == 0) | (k < n_run)

    def attempt(carry: tuple) -> tuple:
        k, best, n_run, order, curvature = carry
        index = order[k]
        start = jnp.where(index <= 2 * n_offsets, starts[jnp.minimum(index, 2 * n_offsets)],
                          curvature[jnp.clip(index - 2 * n_offsets - 1, 0, 3)])
        local = newton_fit(objective, start, lower, upper, fixed, args)
        first = k == 0

        def plan() -> tuple:
            flags = evidence(local)
            # the starts with evidence first (in their order), the others never run
            return (jnp.sum(flags), jnp.argsort(~flags, stable=True).astype(order.dtype),
                    curvature_starts(local))

        n_run, order, curvature = jax.lax.cond(first, plan, lambda: (n_run, order, curvature))
        searched = n_run > 1
        solution, _, _ = best
        margin = 1e-9 * jnp.maximum(1.0, jnp.abs(solution.value))
        lower_f = local.solution.converged & (
            ~solution.converged | (local.solution.value < solution.value - margin)
        )
        take = first | lower_f
        found = (local.solution._replace(start=index), local.grad, local.hess)
        best = jax.tree.map(lambda new, old: jnp.where(take, new, old), found, best)
        return k + 1, (best[0]._replace(searched=searched), *best[1:]), n_run, order, curvature

    n = x0.shape[0]
    empty = Solution(x0, jnp.asarray(jnp.inf, x0.dtype), jnp.asarray(False), jnp.asarray(0),
                     jnp.asarray(0), jnp.asarray(False))
    carry = (jnp.asarray(0), (empty, jnp.zeros(n, x0.dtype), jnp.zeros((n, n), x0.dtype)),
             jnp.asarray(1), jnp.arange(n_starts), jnp.zeros((4, n), x0.dtype))
    _, best, _, _, _ = jax.lax.while_loop(untried, attempt, carry)
    return best
