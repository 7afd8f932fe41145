"""Global-minimum fits (neosx.infer._solver's restarts) on non-convex likelihoods.

The models: two channels of two bins, a signal x ``mu`` and a background with one histosys
``alpha`` shared by both channels whose up and down templates lie on the same side of the
nominal in each channel (above in one, below in the other), with histosys interpolation
code4p (smooth, negative curvature at alpha = 0 where the data pull) or code0 (piecewise
linear, a kink at alpha = 0 that no Hessian shows). The likelihood then has two minima in
alpha. The Newton fit from pyhf's init alone (``offsets=None``, what neosx did before the
restarts) stops in the higher one on each model here: the "local" figures below.

References: a brute-force minimum (a dense (alpha, mu) grid, refined from its best point by
L-BFGS-B in scipy), pyhf 0.7.6's fit and hypotest (numpy backend, SLSQP), which find the
global minimum on these models, and central finite differences in float64.

Measured on this machine (neosx NLL - grid minimum; CLs at mu = 1):
    code4p A: local alpha = -0.521 (NLL +1.381), global alpha = +0.486, mu = 0; CLs
        0.02929 (pyhf 0.02929), from the local fit 0.181.
    code4p B: local (alpha, mu) = (0.068, 1.902) (NLL +4.69), global (-0.721, 2.951).
    code0 A: local (-0.545, 0.314) (NLL +0.911), global (0.569, 0.260); CLs 0.10724
        (pyhf 0.10724), local 0.181.
    code0 B: local (-0.194, 0.997) (NLL +1.889), global (0.480, 0.403); CLs 0.36192
        (pyhf 0.36192), local 0.560.
    code0 C: local (-0.144, 0.731) (NLL +0.366), global (0.209, 0.680); CLs 0.27838
        (pyhf 0.27838), local 0.312.
    |NLL - grid minimum| <= 1e-9 on all; gradients vs central differences <= 1e-7 relative.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest
import scipy.optimize

import neosx.infer as infer
from neosx.histfactory import HistFactory
from neosx.infer import _solver
from neosx.infer.fit import fit_solution

pytestmark = [
    # pyhf 0.7.6 validates with jsonschema.RefResolver, deprecated in jsonschema 4.18.
    pytest.mark.filterwarnings("ignore:jsonschema.RefResolver is deprecated:DeprecationWarning"),
]

NLL_ATOL = 1e-6  # the fit's NLL against the brute-force minimum
PARS_ATOL = 1e-4  # best-fit parameters against the brute-force minimiser
PYHF_PARS_ATOL = 1e-3  # ... and against pyhf's (SLSQP stops ~1e-4 away along a flat mu)
CLS_ATOL = 1e-4  # observed CLs against pyhf (its SLSQP tolerance)
GRAD_RTOL = 1e-5  # gradients against central differences of neosx's own functions


class Case(NamedTuple):
    code: str
    signal: list[list[float]]
    background: list[list[float]]
    up: list[list[float]]
    down: list[list[float]]
    observed: list[list[float]]
    wrong_alpha: float  # where the fit from the init alone stops (the higher minimum)


CASES = {
    "code4p_A": Case(
        "code4p", [[6.7, 4.4], [7.1, 2.8]], [[34.1, 41.7], [37.1, 24.9]],
        [[52.0, 62.9], [26.9, 1.2]], [[54.8, 66.2], [30.6, 11.9]],
        [[35.0, 51.0], [32.0, 14.0]], -0.521,
    ),
    "code4p_B": Case(
        "code4p", [[6.3, 5.5], [1.3, 1.9]], [[41.0, 54.2], [37.3, 20.1]],
        [[21.5, 48.6], [43.9, 28.7]], [[25.0, 33.0], [44.3, 35.9]],
        [[47.0, 57.0], [46.0, 38.0]], 0.068,
    ),
    "code0_A": Case(
        "code0", [[9.3, 8.1], [1.1, 3.7]], [[20.4, 53.1], [24.4, 22.3]],
        [[8.1, 43.8], [27.5, 33.3]], [[10.0, 39.1], [26.6, 27.7]],
        [[14.0, 56.0], [21.0, 32.0]], -0.545,
    ),
    "code0_B": Case(
        "code0", [[4.3, 6.9], [3.0, 1.2]], [[32.9, 51.2], [53.5, 34.0]],
        [[54.4, 54.4], [39.5, 26.1]], [[45.0, 58.3], [30.9, 25.0]],
        [[56.0, 41.0], [56.0, 37.0]], -0.194,
    ),
    "code0_C": Case(
        "code0", [[8.1, 7.1], [9.5, 3.7]], [[39.8, 51.5], [44.4, 53.9]],
        [[61.2, 73.3], [21.6, 42.7]], [[62.7, 60.6], [28.7, 29.4]],
        [[51.0, 60.0], [44.0, 59.0]], -0.144,
    ),
}
# where CLs at mu = 1 is not 1; two of them (~15 s each) only in the slow suite
CLS_CASES = (
    "code4p_A", "code0_B",
    *(pytest.param(name, marks=pytest.mark.slow) for name in ("code0_A", "code0_C")),
)


def spec(case: Case) -> dict[str, Any]:
    return {"channels": [
        {"name": f"ch{c}", "samples": [
            {"name": "signal", "data": case.signal[c],
             "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
            {"name": "background", "data": case.background[c],
             "modifiers": [{"name": "alpha", "type": "histosys",
                            "data": {"hi_data": case.up[c], "lo_data": case.down[c]}}]},
        ]}
        for c in range(2)
    ]}


def settings(case: Case) -> dict[str, dict[str, str]]:
    return {"histosys": {"interpcode": case.code}, "normsys": {"interpcode": "code4"}}


@functools.cache
def built(name: str) -> tuple[HistFactory, pyhf.pdf.Model, np.ndarray]:
    case = CASES[name]
    model = HistFactory(spec(case), modifier_settings=settings(case))
    reference = pyhf.Model(spec(case), poi_name="mu", modifier_settings=settings(case))
    data = np.concatenate([np.ravel(case.observed), reference.config.auxdata])
    return model, reference, data


@functools.cache
def brute_force(name: str) -> tuple[np.ndarray, float]:
    """The NLL's minimiser and minimum: a dense (alpha, mu) grid over the bounds (points
    with a negative rate are NaN there and skipped), refined from its best point."""
    model, _, data = built(name)
    data = jnp.asarray(data)
    nll = jax.jit(lambda p: -model.log_likelihood_ratio(p, data))
    bounds = np.asarray(model.config.suggested_bounds)
    alpha_index, mu_index = model.config.par_order.index("alpha"), model.config.poi_index
    alphas = np.linspace(*bounds[alpha_index], 401)
    mus = np.linspace(*bounds[mu_index], 401)
    grid = np.zeros((alphas.size * mus.size, 2))
    grid[:, alpha_index] = np.repeat(alphas, mus.size)
    grid[:, mu_index] = np.tile(mus, alphas.size)
    values = np.asarray(jax.vmap(nll)(jnp.asarray(grid)))
    best = grid[np.nanargmin(values)]

    def finite(p: np.ndarray) -> float:
        value = float(nll(jnp.asarray(p)))
        return value if np.isfinite(value) else 1e10

    refined = scipy.optimize.minimize(
        finite, best, method="L-BFGS-B", bounds=bounds,
        options={"ftol": 1e-15, "gtol": 1e-11, "maxiter": 1000},
    )
    assert refined.fun <= np.nanmin(values) + 1e-12
    return refined.x, float(refined.fun)


def local_fit(name: str) -> _solver.Solution:
    """The Newton fit from the init alone (no restarts): what neosx returned before."""
    model, _, data = built(name)
    data = jnp.asarray(data)

    def nll(pars: jax.Array, data: jax.Array) -> jax.Array:
        return -model.log_likelihood_ratio(pars, data)

    init = jnp.asarray(model.config.suggested_init)
    return _solver.minimize(
        nll, init, model.config.suggested_bounds, np.zeros(model.config.npars, bool), data
    )


@pytest.mark.parametrize("name", CASES)
def test_fit_from_the_init_alone_stops_in_the_higher_minimum(name: str) -> None:
    """The reproduction: without restarts the fit converges, to the wrong minimum."""
    model, _, _ = built(name)
    local = local_fit(name)
    _, minimum = brute_force(name)
    assert bool(local.converged)
    alpha = float(local.pars[model.config.par_order.index("alpha")])
    assert alpha == pytest.approx(CASES[name].wrong_alpha, abs=2e-3)
    assert float(local.value) - minimum > 0.3


@pytest.mark.parametrize("name", CASES)
def test_fit_reaches_the_brute_force_minimum(name: str) -> None:
    model, reference, data = built(name)
    solution = fit_solution(model, jnp.asarray(data))
    pars, minimum = brute_force(name)
    assert bool(solution.converged)
    assert bool(solution.searched)
    assert int(solution.start) > 0  # a restart won
    assert abs(float(solution.value) - minimum) < NLL_ATOL
    np.testing.assert_allclose(solution.pars, pars, atol=PARS_ATOL)
    # pyhf's SLSQP finds it too (the references agree)
    np.testing.assert_allclose(pyhf.infer.mle.fit(data, reference), pars, atol=PYHF_PARS_ATOL)
    # the public fit returns the same point
    np.testing.assert_allclose(infer.fit(model, data), solution.pars, atol=1e-12)


@pytest.mark.parametrize("name", CLS_CASES)
def test_observed_cls_equals_pyhf(name: str) -> None:
    model, reference, data = built(name)
    expected = float(pyhf.infer.hypotest(1.0, data, reference, test_stat="qtilde"))
    cls = float(infer.hypotest(1.0, jnp.asarray(data), model))
    assert cls == pytest.approx(expected, abs=CLS_ATOL)


def _yields(name: str, scale: jax.Array) -> dict[str, dict[str, jax.Array]]:
    """The spec's yields with the signal and background of channel 0 scaled."""
    case = CASES[name]
    return {"ch0": {"signal": scale[0] * jnp.asarray(case.signal[0]),
                    "background": scale[1] * jnp.asarray(case.background[0])}}


def _central_differences(fn: Any, x: np.ndarray, step: float = 1e-4) -> np.ndarray:
    # the fitted parameters carry ~1e-10 of round-off from the Newton stop: steps of 1e-4
    # keep it below 1e-6 of the differences, the truncation error is ~1e-8
    return np.array([
        (float(fn(jnp.asarray(x + step * e))) - float(fn(jnp.asarray(x - step * e))))
        / (2 * step)
        for e in np.eye(x.size)
    ])


@pytest.mark.parametrize("name", ["code4p_A", "code0_B"])
def test_gradients_at_the_chosen_minimum_equal_central_differences(name: str) -> None:
    """The implicit gradient is taken at the winning restart's solution: it equals the
    central differences of the global minimum (the local one moves differently)."""
    model, _, data = built(name)
    data = jnp.asarray(data)
    alpha = model.config.par_order.index("alpha")

    @jax.jit
    def best_alpha_and_nll(scale: jax.Array) -> jax.Array:
        solution = fit_solution(model, data, yields=_yields(name, scale))
        return solution.pars[alpha] + solution.value

    @jax.jit
    def cls(scale: jax.Array) -> jax.Array:
        return infer.hypotest(1.0, data, model, yields=_yields(name, scale))

    x = np.array([1.0, 1.0])
    for fn in (best_alpha_and_nll, cls):
        gradient = np.asarray(jax.grad(fn)(jnp.asarray(x)))
        # atol: a component that is 0 (mu_hat on its bound) gets the differences' noise,
        # the fits' ~1e-10 round-off over the step
        np.testing.assert_allclose(gradient, _central_differences(fn, x), rtol=GRAD_RTOL,
                                   atol=1e-6)


def test_restarts_batch_under_jit_and_vmap() -> None:
    """One compiled program fits a batch of datasets, each to its own global minimum."""
    model, _, data = built("code4p_A")
    batch = jnp.stack([jnp.asarray(data), jnp.asarray(data) + jnp.array([2.0, 0, 0, 0, 0])])
    solutions = jax.jit(jax.vmap(lambda d: fit_solution(model, d)))(batch)
    for row, solution in zip(batch, zip(*solutions, strict=True), strict=True):
        single = fit_solution(model, row)
        assert float(solution[1]) == pytest.approx(float(single.value), abs=1e-10)
        np.testing.assert_allclose(solution[0], single.pars, atol=1e-9)
    assert bool(jnp.all(solutions.converged))


def test_convex_model_skips_the_restarts() -> None:
    """A model with ordinary (opposite-side) histosys passes the convexity test: one fit,
    the init wins."""
    case = CASES["code4p_A"]
    convex = case._replace(up=(np.asarray(case.background) * 1.1).tolist(),
                           down=(np.asarray(case.background) * 0.9).tolist())
    model = HistFactory(spec(convex), modifier_settings=settings(convex))
    data = jnp.concatenate([jnp.asarray(np.ravel(convex.observed)), jnp.zeros(1)])
    for fixed in (None, {"mu": 1.0}):
        solution = fit_solution(model, data, fixed=fixed)
        assert bool(solution.converged)
        assert not bool(solution.searched)
        assert int(solution.start) == 0
