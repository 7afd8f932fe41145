"""neosx.cut / neosx.window against the logistic formula and the exact step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

import neosx as nx

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("keep", ["above", "below"])
def test_cut_matches_logistic(keep):
    x = RNG.normal(20.0, 10.0, 1000)
    sign = 1.0 if keep == "above" else -1.0
    got = nx.cut(x, 25.0, slope=0.3, keep=keep)
    np.testing.assert_allclose(got, special.expit(sign * 0.3 * (x - 25.0)), rtol=1e-14)


def test_hard_cut_is_a_partition_like_numpy_bins():
    x = np.array([-1.0, 0.0, 1.0, 2.0, 2.0, 3.0])
    above = nx.cut(x, 2.0, hard=True)
    below = nx.cut(x, 2.0, keep="below", hard=True)
    np.testing.assert_array_equal(above, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(above + below, np.ones(6))
    assert above.dtype == jnp.asarray(x).dtype and above.shape == x.shape


def test_cut_converges_to_step_with_slope():
    x = RNG.uniform(-1, 1, 1000)
    x = x[np.abs(x) > 1e-3]
    step = (x >= 0).astype(float)
    errors = [float(jnp.max(jnp.abs(nx.cut(x, 0.0, slope=s) - step))) for s in (1e1, 1e3, 1e5)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-10


def test_window_is_product_of_cuts_and_hard_indicator():
    x = RNG.uniform(-2, 3, 500)
    got = nx.window(x, 0.0, 1.0, slope=4.0)
    np.testing.assert_allclose(got, special.expit(4 * x) * special.expit(4 * (1 - x)), rtol=1e-14)
    np.testing.assert_array_equal(nx.window(x, 0.0, 1.0, hard=True), (x >= 0) & (x < 1))


def test_straight_through_forward_exact_backward_logistic():
    x = jnp.asarray(RNG.normal(0, 1, 200))
    st_value = nx.cut(x, 0.2, slope=2.0, straight_through=True)
    np.testing.assert_array_equal(st_value, nx.cut(x, 0.2, hard=True))
    g_st = jax.grad(lambda t: jnp.sum(nx.cut(x, t, slope=2.0, straight_through=True)))(0.2)
    g_soft = jax.grad(lambda t: jnp.sum(nx.cut(x, t, slope=2.0)))(0.2)
    assert float(g_st) == pytest.approx(float(g_soft), rel=1e-14)


def test_multivariable_selection_gradient_matches_finite_differences():
    """A 2-D selection (pT > a, |eta| window) as a product of cuts: d(efficiency)/d(thresholds)."""
    pt = jnp.asarray(RNG.exponential(30.0, 2000))
    eta = jnp.asarray(RNG.normal(0, 1.5, 2000))

    def efficiency(thresholds):
        pt_cut, eta_max = thresholds
        weights = nx.cut(pt, pt_cut, slope=0.2) * nx.window(eta, -eta_max, eta_max, slope=3.0)
        return jnp.mean(weights)

    t = jnp.array([25.0, 2.0])
    grad = jax.grad(efficiency)(t)
    for i in range(2):
        e = jnp.zeros(2).at[i].set(1e-5)
        fd = (efficiency(t + e) - efficiency(t - e)) / 2e-5
        assert float(grad[i]) == pytest.approx(float(fd), rel=1e-6)


def test_cut_vmap_jit_any_shape():
    x = jnp.asarray(RNG.normal(size=(4, 3, 5)))
    thresholds = jnp.linspace(-1, 1, 4)
    got = jax.jit(jax.vmap(lambda x, t: nx.cut(x, t, slope=2.0)))(x, thresholds)
    assert got.shape == (4, 3, 5)
    np.testing.assert_allclose(got[2], nx.cut(x[2], thresholds[2], slope=2.0), rtol=1e-15)


def test_cut_errors():
    with pytest.raises(ValueError, match=r"keep must be one of .* got keep='left'"):
        nx.cut(np.ones(3), 0.0, keep="left")
    with pytest.raises(ValueError, match=r"slope must be > 0, got slope=0\.0"):
        nx.cut(np.ones(3), 0.0, slope=0.0)
    with pytest.raises(ValueError, match=r"slope must be > 0, got slope=-2"):
        nx.window(np.ones(3), 0.0, 1.0, slope=-2)
