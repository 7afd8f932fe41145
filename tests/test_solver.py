"""The projected-Newton solver (neosx.infer._solver) on functions with known minima.

The statistics tests exercise it through real likelihoods; these pin down the paths a
likelihood rarely takes: a full Newton step that overshoots (the backtracking line search),
a start where the Hessian is not positive definite, an active bound and a start a hair
above one, the implicit gradient of the minimiser, a start at the minimum and an exhausted
iteration budget; and the linear solves, both ways (elimination up to UNROLLED_SOLVE_SIZE
parameters, LAPACK above), against numpy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neosx.infer import _newton
from neosx.infer._solver import minimize, positive_definite_solve

WIDE = np.array([[-100.0, 100.0], [-100.0, 100.0]])


def hyperbolic(x: jax.Array, centre: jax.Array) -> jax.Array:
    """sum sqrt(1 + (x - centre)^2): the Newton step from u = x - centre goes to -u^3."""
    return jnp.sum(jnp.sqrt(1.0 + (x - centre) ** 2))


def test_overshooting_newton_step_is_backtracked() -> None:
    """From 3 away the full Newton step lands 27 away; the line search must halve it."""
    centre = jnp.array([0.5, -1.0])
    solution = minimize(hyperbolic, centre + 3.0, WIDE, np.zeros(2, bool), centre)
    assert bool(solution.converged)
    np.testing.assert_allclose(solution.pars, centre, atol=1e-9)
    assert float(solution.value) == pytest.approx(2.0, abs=1e-12)
    # the undamped iteration u -> -u^3 diverges; a damped one converges in a few steps
    assert 2 <= int(solution.iterations) <= 20


def test_implicit_gradient_of_the_minimiser() -> None:
    """x*(centre) = centre, so d x* / d centre is the identity (implicit differentiation)."""
    centre = jnp.array([0.5, -1.0])

    def argmin(c: jax.Array) -> jax.Array:
        return minimize(hyperbolic, c + 3.0, WIDE, np.zeros(2, bool), c).pars

    np.testing.assert_allclose(jax.jacobian(argmin)(centre), np.eye(2), atol=1e-9)


def double_well(x: jax.Array, tilt: jax.Array) -> jax.Array:
    """x^4 / 4 - x^2 / 2 + tilt x: concave near 0, minima near -1 and +1."""
    return jnp.sum(x**4 / 4 - x**2 / 2 + tilt * x)


def test_start_where_hessian_is_not_positive_definite() -> None:
    """At x = 0.05 the curvature is -1: the fit must still descend to a minimum."""
    tilt = jnp.array(0.1)
    solution = minimize(double_well, jnp.array([0.05]), WIDE[:1], np.zeros(1, bool), tilt)
    assert bool(solution.converged)
    x = float(solution.pars[0])
    assert abs(x**3 - x + 0.1) < 1e-10  # stationary
    assert 3 * x**2 - 1 > 0  # a minimum, not the maximum near 0.1


def test_active_bound_and_fixed_parameter() -> None:
    """(x0 - 5)^2 + (x1 - 1)^2 with x0 <= 2 and x1 fixed at 3: the solution is (2, 3)."""

    def bowl(x: jax.Array, target: jax.Array) -> jax.Array:
        return jnp.sum((x - target) ** 2)

    bounds = np.array([[0.0, 2.0], [-10.0, 10.0]])
    fixed = np.array([False, True])
    solution = minimize(bowl, jnp.array([1.0, 3.0]), bounds, fixed, jnp.array([5.0, 1.0]))
    assert bool(solution.converged)
    np.testing.assert_allclose(solution.pars, [2.0, 3.0], atol=1e-12)
    # on the active bound the minimiser does not move with the target
    grad = jax.grad(
        lambda t: minimize(bowl, jnp.array([1.0, 3.0]), bounds, fixed, t).pars[0]
    )(jnp.array([5.0, 1.0]))
    np.testing.assert_allclose(grad, [0.0, 0.0], atol=1e-12)


def coupled_bowl(x: jax.Array, centre: jax.Array) -> jax.Array:
    """0.5 (x - c)^T A (x - c) with A = [[1, 0.9], [0.9, 1]]: strongly coupled parameters."""
    u = x - centre
    return 0.5 * (u[0] ** 2 + 1.8 * u[0] * u[1] + u[1] ** 2)


def test_parameter_a_hair_above_its_bound_is_moved_onto_it() -> None:
    """From (1e-17, 0) with x0 >= 0 and c = (-1, 0.5), the gradient (0.55, 0.4) pushes x0
    through its bound, and the unconstrained Newton step's x1 part alone goes uphill: with
    x0 clipped at every trial step the line search cannot descend. The solution is on the
    bound, x0 = 0, x1 = 0.5 - 0.9 = -0.4 (there the gradient on x0 is 0.19 > 0)."""
    bounds = np.array([[0.0, 10.0], [-10.0, 10.0]])
    centre = jnp.array([-1.0, 0.5])
    start = jnp.array([1e-17, 0.0])
    solution = minimize(coupled_bowl, start, bounds, np.zeros(2, bool), centre)
    assert bool(solution.converged)
    np.testing.assert_allclose(solution.pars, [0.0, -0.4], atol=1e-12)


def test_start_at_the_minimum_takes_no_step() -> None:
    """Started at its minimum (as the free fit to Asimov data is), the fit converges at once."""
    centre = jnp.array([0.5, -1.0])
    solution = minimize(hyperbolic, centre, WIDE, np.zeros(2, bool), centre)
    assert bool(solution.converged)
    assert int(solution.iterations) == 0
    np.testing.assert_array_equal(solution.pars, centre)
    assert float(solution.value) == 2.0


def test_iteration_budget_exhausted_is_not_converged(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a budget of one step, a fit that needs several reports that it did not converge."""
    monkeypatch.setattr(_newton, "MAX_ITERATIONS", 1)
    centre = jnp.array([0.5, -1.0])
    solution = minimize(hyperbolic, centre + 3.0, WIDE, np.zeros(2, bool), centre)
    assert not bool(solution.converged)
    assert int(solution.iterations) == 1
    assert float(solution.value) < float(hyperbolic(centre + 3.0, centre))  # it did step


def _random_symmetric(size: int, rng: np.random.Generator, definite: bool) -> np.ndarray:
    """A symmetric matrix with eigenvalues over 8 orders of magnitude (like a Hessian with
    constraints of very different widths), all positive or one negative."""
    q, _ = np.linalg.qr(rng.normal(size=(size, size)))
    eigenvalues = np.logspace(-4, 4, size)
    if not definite:
        eigenvalues[size // 2] *= -1.0
    return (q * eigenvalues) @ q.T


@pytest.mark.parametrize("size", [1, 2, 5, _newton.UNROLLED_SOLVE_SIZE, 9, 21])
def test_positive_definite_solve_matches_numpy(size: int) -> None:
    rng = np.random.default_rng(size)
    matrix, rhs = _random_symmetric(size, rng, definite=True), rng.normal(size=size)
    expected = np.linalg.solve(matrix, rhs)
    solve = jax.jit(positive_definite_solve)
    # condition number 1e8: float64 leaves ~1e-8 of relative accuracy, whichever method
    scale = np.abs(expected).max()
    np.testing.assert_allclose(solve(matrix, rhs), expected, rtol=1e-7, atol=1e-7 * scale)
    if size > 1:
        indefinite = _random_symmetric(size, rng, definite=False)
        assert np.all(np.isnan(solve(indefinite, rhs)))
        # the Newton step's solve falls back to the eigendecomposition there
        fallback = jax.jit(_newton.symmetric_solve)(indefinite, rhs)
        expected = np.linalg.solve(indefinite, rhs)
        scale = np.abs(expected).max()
        np.testing.assert_allclose(fallback, expected, rtol=1e-7, atol=1e-7 * scale)


def test_offsets_restart_a_fit_stuck_in_the_higher_well() -> None:
    """With the tilt the double well's minimum near +1 is the higher one: the fit from 0.9
    alone stays there; with restarts (start 0.9 -+ 1.5, and the curvature directions) the
    fit ends in the lower well near -1, and the implicit gradient is taken there."""
    tilt = jnp.array(0.1)
    init = jnp.array([0.9])
    local = minimize(double_well, init, WIDE[:1], np.zeros(1, bool), tilt)
    assert float(local.pars[0]) > 0
    offsets = jnp.array([[1.5]])
    found = minimize(double_well, init, WIDE[:1], np.zeros(1, bool), tilt, offsets)
    x = float(found.pars[0])
    assert bool(found.converged) and bool(found.searched)
    assert x < 0 and abs(x**3 - x + 0.1) < 1e-10
    assert float(found.value) < float(local.value)
    assert int(found.start) == 2  # init - offsets[0]
    # x*(tilt) solves x^3 - x + tilt = 0: dx*/dtilt = -1 / (3 x^2 - 1)
    slope = jax.grad(
        lambda t: minimize(double_well, init, WIDE[:1], np.zeros(1, bool), t, offsets).pars[0]
    )(tilt)
    assert float(slope) == pytest.approx(-1.0 / (3 * x**2 - 1), rel=1e-9)


def test_offsets_on_a_convex_objective_cost_one_fit() -> None:
    """The convexity test passes on a convex bowl: no restart runs, the init wins."""
    centre = jnp.array([0.5, -1.0])
    solution = minimize(hyperbolic, centre + 3.0, WIDE, np.zeros(2, bool), centre,
                        jnp.eye(2))
    assert bool(solution.converged) and not bool(solution.searched)
    assert int(solution.start) == 0
    np.testing.assert_allclose(solution.pars, centre, atol=1e-9)
