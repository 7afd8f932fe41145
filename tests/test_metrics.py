"""Closed-form significances against direct formulas and the profile likelihood."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import neosx as nx
from neosx import infer
from neosx.histfactory import HistFactory


def cowan(s, b, sigma=None):
    if sigma is None:
        return np.sqrt(2 * ((s + b) * np.log(1 + s / b) - s))
    v = sigma**2
    return np.sqrt(
        2 * ((s + b) * np.log((s + b) * (b + v) / (b**2 + (s + b) * v))
             - b**2 / v * np.log(1 + v * s / (b * (b + v))))
    )


@pytest.mark.parametrize(("s", "b", "sigma"), [(10, 100, None), (5, 2, None), (10, 100, 10),
                                                (3, 50, 0.5), (20, 5, 4)])
def test_asimov_significance_matches_formula(s, b, sigma):
    sigma_b = None if sigma is None else float(sigma)
    got = nx.metrics.asimov_significance(float(s), float(b), sigma_b)
    # 1e-10: the reference's log of a ratio near 1 loses ~1e-11 that log1p keeps
    assert float(got) == pytest.approx(cowan(s, b, sigma), rel=1e-10)


def test_asimov_significance_equals_profile_likelihood_z0():
    """One bin, signal strength only: q0 on the s+b Asimov data is Cowan's formula exactly."""
    spec = {"channels": [{"name": "SR", "samples": [
        {"name": "sig", "data": [7.0], "modifiers": [{"name": "mu", "type": "normfactor",
                                                     "data": None}]},
        {"name": "bkg", "data": [30.0], "modifiers": []}]}]}
    z0 = infer.discovery_significance(HistFactory(spec))
    assert float(z0) == pytest.approx(cowan(7.0, 30.0), rel=1e-8)


def test_limits_are_safe():
    assert float(nx.metrics.asimov_significance(1.0, 1.0, 1e-200)) == pytest.approx(
        cowan(1.0, 1.0), rel=1e-12)
    for fn in (nx.metrics.s_over_sqrt_b, nx.metrics.asimov_significance):
        value, grad = jax.value_and_grad(fn, argnums=(0, 1))(1.0, 0.0)
        assert np.isfinite(float(value)) and all(np.isfinite(float(g)) for g in grad)
    assert float(nx.metrics.asimov_significance(0.0, 10.0)) == 0.0
    assert float(jax.grad(nx.metrics.asimov_significance)(0.0, 10.0)) == 0.0


def test_gradients_match_finite_differences():
    for sigma in (None, 3.0):
        def f(s, b, sigma=sigma):
            return nx.metrics.asimov_significance(s, b, sigma)

        gs, gb = jax.grad(f, argnums=(0, 1))(8.0, 40.0)
        eps = 1e-3  # s, b ~ 10: truncation ~1e-9 relative, round-off far below
        fd_s = float(f(8 + eps, 40.0) - f(8 - eps, 40.0)) / 2 / eps
        fd_b = float(f(8.0, 40 + eps) - f(8.0, 40 - eps)) / 2 / eps
        assert float(gs) == pytest.approx(fd_s, rel=1e-7)
        assert float(gb) == pytest.approx(fd_b, rel=1e-7)
    s, b = jnp.array([1.0, 4.0]), jnp.array([4.0, 16.0])
    np.testing.assert_allclose(nx.metrics.s_over_sqrt_b(s, b), [0.5, 1.0], rtol=1e-15)
