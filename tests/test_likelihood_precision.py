"""Precision of the HistFactory logpdf against mpmath at 50 digits, where pyhf's float64 is
not exact: Poisson terms with counts and rates up to 1e12, and shapesys constraints with
``tau`` from 1 to 1e12 (relative uncertainties from 1 to 1e-6).

The references are computed here, independently of neosx and pyhf, from the formula
(pyhf 0.7's conventions): main terms ``n log(lam) - lam - lgamma(n + 1)`` with ``lam``
the sum over samples of nominal times factors (``mu`` for the normfactor, ``gamma_b``
for the shapesys), and Poisson constraints ``tau log(gamma tau) - gamma tau -
lgamma(tau + 1)`` with ``tau = (nominal / uncertainty)**2`` as auxiliary datum and rate
factor. The yields are chosen so that every ``tau`` is exact in float64, and the
reference sees the same float64 inputs as neosx.

Pinned tolerances: 1e-12 relative on the logpdf (measured: <= 4e-16), 1e-13 on single
Poisson terms (measured: <= 4e-15, relative to max(1, |value|)); gradients equal central
finite differences in float64 and mpmath's derivative.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest

from neosx.histfactory import HistFactory

mp = pytest.importorskip("mpmath")
mp.mp.dps = 50

pytestmark = pytest.mark.filterwarnings(
    "ignore:jsonschema.RefResolver is deprecated:DeprecationWarning"
)

RTOL = 1e-12
RATIO_RTOL = 1e-10  # log_likelihood_ratio (the fits' objective: n (log1p(u) - u) per bin)
#: ``sqrt(tau)``: tau = 1, 1e2, ..., 1e12.
SQRT_TAUS = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6]
#: The shapesys uncertainty of bin 1 (bin 2: twice it); nominal = sqrt(tau) * it, exactly.
UNCERTAINTY = 0.0625


@pytest.fixture(autouse=True)
def _numpy_backend() -> None:
    pyhf.set_backend("numpy")


def shapesys_spec(sqrt_tau: float) -> dict[str, Any]:
    """Signal (normfactor mu) on a background with a shapesys of ``tau = sqrt_tau**2`` in
    both bins (relative uncertainty ``1 / sqrt_tau``)."""
    background = [sqrt_tau * UNCERTAINTY, 2.0 * sqrt_tau * UNCERTAINTY]
    return {
        "channels": [{
            "name": "SR",
            "samples": [
                {"name": "signal", "data": [5.0, 3.0],
                 "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
                {"name": "background", "data": background,
                 "modifiers": [{"name": "mc", "type": "shapesys",
                                "data": [UNCERTAINTY, 2.0 * UNCERTAINTY]}]},
            ],
        }],
        "observations": [{"name": "SR", "data": [0.0, 0.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def reference(spec: dict[str, Any], names: list[str], pars: np.ndarray, main: np.ndarray,
              aux: np.ndarray, relative: bool = False) -> Any:
    """The exact logpdf (or log-likelihood ratio to the saturated model) in mpmath."""
    value = {name: [mp.mpf(x) for x in np.atleast_1d(pars[where])] for where, name in names}
    (channel,) = spec["channels"]
    n_bins = len(channel["samples"][0]["data"])
    rates = [mp.mpf(0)] * n_bins
    constraints = []
    for sample in channel["samples"]:
        factor = [mp.mpf(1)] * n_bins
        for modifier in sample["modifiers"]:
            if modifier["type"] == "normfactor":
                factor = [f * value[modifier["name"]][0] for f in factor]
            elif modifier["type"] == "shapesys":
                gammas = value[modifier["name"]]
                factor = [f * g for f, g in zip(factor, gammas, strict=True)]
                taus = [(mp.mpf(b) / mp.mpf(u)) ** 2
                        for b, u in zip(sample["data"], modifier["data"], strict=True)]
                constraints += [(t, g * t) for t, g in zip(taus, gammas, strict=True)]
        rates = [r + mp.mpf(y) * f for r, y, f in zip(rates, sample["data"], factor, strict=True)]
    observed_aux = [mp.mpf(float(a)) for a in aux]
    assert [float(t) for t, _ in constraints] == list(aux)  # the datum is tau, exactly
    terms = list(zip((mp.mpf(float(n)) for n in main), rates, strict=True))
    terms += [(a, rate) for a, (_, rate) in zip(observed_aux, constraints, strict=True)]
    return mp.fsum(log_poisson(n, lam, relative) for n, lam in terms)


def log_poisson(n: Any, lam: Any, relative: bool = False) -> Any:
    """``log Pois(n | lam)`` (continuous), or its ratio to ``log Pois(n | n)``."""
    if relative:
        return (n * mp.log(lam / n) if n else 0) + n - lam
    return (n * mp.log(lam) if n else 0) - lam - mp.loggamma(n + 1)


def model_and_names(spec: dict[str, Any]) -> tuple[HistFactory, Any, list[tuple[slice, str]]]:
    model = HistFactory(spec)
    pyhf_model = pyhf.Workspace(spec).model()
    assert list(model.config.par_order) == list(pyhf_model.config.par_order)
    names = [(pyhf_model.config.par_slice(name), name) for name in pyhf_model.config.par_order]
    return model, pyhf_model, names


def points(model: HistFactory, names: list[tuple[slice, str]]) -> list[np.ndarray]:
    """The suggested init, and points away from it (gamma - 1 from 1e-7 to 0.3)."""
    init = np.asarray(model.config.suggested_init, dtype=float)
    out = [init]
    for mu, offsets in [(0.0, (1e-7, -2e-7)), (2.5, (1e-4, 3e-3)), (1.0, (-0.02, 0.3))]:
        pars = init.copy()
        for where, name in names:
            if name == "mu":
                pars[where] = mu
            else:
                pars[where] = 1.0 + np.asarray(offsets)
        out.append(pars)
    return out


@pytest.mark.parametrize("sqrt_tau", SQRT_TAUS)
def test_shapesys_logpdf_equals_mpmath_from_tau_1_to_1e12(sqrt_tau: float) -> None:
    """Observed data: the expected rates at the init, rounded down, and the expected
    auxiliary data; at tau = 1e12, pyhf is 1e-4 to 1e-3 off, neosx <= 4e-16."""
    spec = shapesys_spec(sqrt_tau)
    model, pyhf_model, names = model_and_names(spec)
    init = np.asarray(model.config.suggested_init, dtype=float)
    main = np.floor(np.asarray(model.expected_data(init))[:2])
    aux = np.asarray(model.config.auxdata, dtype=float)
    data = np.concatenate([main, aux])
    logpdf = jax.jit(model.logpdf)
    ratio = jax.jit(model.log_likelihood_ratio)
    for pars in points(model, names):
        exact = reference(spec, names, pars, main, aux)
        got = float(logpdf(pars, data))
        assert abs(got - exact) <= RTOL * abs(exact), (pars, got, float(exact))
        exact_ratio = reference(spec, names, pars, main, aux, relative=True)
        got_ratio = float(ratio(pars, data))
        # the fits' ratio to the saturated model: exact to ulps of |rate - n| per term
        assert abs(got_ratio - exact_ratio) <= RATIO_RTOL * abs(exact_ratio) + 1e-14
        pyhf_value = float(pyhf_model.logpdf(pars, data)[0])
        if abs(pyhf_value - exact) <= 1e-10 * abs(exact):  # where pyhf is exact, it agrees
            assert got == pytest.approx(pyhf_value, rel=1e-8)
    if sqrt_tau == 1e6:  # the case is one pyhf's float64 does not resolve
        pyhf_value = float(pyhf_model.logpdf(init, data)[0])
        exact = reference(spec, names, init, main, aux)
        assert abs(pyhf_value - exact) > 1e-6 * abs(exact)


def test_main_terms_equal_mpmath_for_counts_and_rates_up_to_1e12() -> None:
    """One sample scaled by mu, rates from 1e-3 to 1e12 and counts from 0 to 1e12, at mu
    = 1 (some counts equal to their rates) and around it."""
    rates = [1e-3, 0.7, 3.0, 30.0, 1e3, 1e6, 1e9, 1e12, 1e12, 1e12, 1e12, 5e11, 2.0, 1e12]
    counts = [0.0, 0.0, 3.0, 31.0, 1e3 + 0.5, 1e6 + 1e3, 1e9, 1e12, 1e12 + 1e6, 1e12 - 3e5,
              0.0, 1e12, 1e12, 7.0]
    spec = {
        "channels": [{"name": "SR", "samples": [{
            "name": "s", "data": rates,
            "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]}]}],
        "observations": [{"name": "SR", "data": counts}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }
    model, pyhf_model, names = model_and_names(spec)
    main = np.asarray(counts)
    logpdf = jax.jit(model.logpdf)
    for mu in [1.0, 1.0 + 1e-9, 1.0 - 1e-6, 1.0 + 1e-3, 0.5, 3.0]:
        pars = np.array([mu])
        exact = reference(spec, names, pars, main, np.zeros(0))
        got = float(logpdf(pars, main))
        assert abs(got - exact) <= RTOL * abs(exact), (mu, got, float(exact))
        pyhf_value = float(pyhf_model.logpdf(pars, main)[0])
        if abs(pyhf_value - exact) <= 1e-10 * abs(exact):
            assert got == pytest.approx(pyhf_value, rel=1e-8)


def test_single_poisson_terms_equal_mpmath() -> None:
    """Every Poisson term on a grid of counts and rates from 0 to 1e15 (ratios 1e-27 to
    1e27, and rates within 1e-12 to 30 % of the count): 1e-13 relative to max(1, |value|);
    the fits' ratio to the saturated term, ``n (log1p(u) - u)``, to 1e-13 relative plus a
    few ulps of ``|rate - n|`` (what it loses where the two terms nearly cancel)."""
    from neosx.histfactory.likelihood import _poisson_sum

    values = [0.0, 1e-12, 1e-8, 0.3, 1.0, 2.5, 8.0, 9.0, 30.0, 1e3, 1e6, 1e9, 1e12, 1e15]
    pairs = {(n, lam) for n in values for lam in values[1:]}
    for n in values:
        for factor in [1 + 1e-12, 1 + 1e-7, 1 - 1e-3, 1.06, 0.94, 1.11, 0.89, 1.3, 0.7]:
            pairs.add((n, n * factor))
        pairs |= {(n, n + 1.0), (n, n + 9.0), (n, n + 5.0 * np.sqrt(n))}
    pairs.add((0.0, 0.0))
    n, lam = (np.asarray(x) for x in zip(*sorted(pairs), strict=True))
    terms = jax.jit(jax.vmap(lambda n, lam, relative: _poisson_sum(n[None], lam[None], relative),
                             in_axes=(0, 0, None)), static_argnums=2)
    got, got_ratio = np.asarray(terms(n, lam, False)), np.asarray(terms(n, lam, True))
    for i in range(n.size):
        exact = log_poisson(mp.mpf(n[i]), mp.mpf(lam[i]))
        assert abs(got[i] - exact) <= 1e-13 * max(1.0, abs(exact)), (n[i], lam[i])
        if n[i] > 0:
            exact = log_poisson(mp.mpf(n[i]), mp.mpf(lam[i]), relative=True)
            bound = 1e-13 * abs(exact) + 1e-15 * abs(lam[i] - n[i]) + 1e-300
            assert abs(got_ratio[i] - exact) <= bound, (n[i], lam[i])
    zero = int(np.flatnonzero((n == 0) & (lam == 0))[0])
    assert abs(got[zero]) <= 1e-14 and got_ratio[zero] == 0.0


@pytest.mark.parametrize("sqrt_tau", [100.0, 1e6])
def test_gradients_equal_finite_differences_and_mpmath(sqrt_tau: float) -> None:
    """Away from the init (at tau = 1e12 the logpdf varies by 1e8 per unit of gamma)."""
    spec = shapesys_spec(sqrt_tau)
    model, _, names = model_and_names(spec)
    init = np.asarray(model.config.suggested_init, dtype=float)
    main = np.floor(np.asarray(model.expected_data(init))[:2])
    aux = np.asarray(model.config.auxdata, dtype=float)
    data = np.concatenate([main, aux])
    pars = points(model, names)[2]
    grad = np.asarray(jax.jit(jax.grad(model.logpdf))(jnp.asarray(pars), data))
    logpdf = jax.jit(model.logpdf)
    mu = model.config.par_slice("mu").start
    for i in range(pars.size):
        step = 1e-4 if i == mu else 1e-3 / sqrt_tau
        up, down = pars.copy(), pars.copy()
        up[i] += step
        down[i] -= step
        value = float(logpdf(pars, data))
        finite = (float(logpdf(up, data)) - float(logpdf(down, data))) / (up[i] - down[i])
        round_off = 50 * np.finfo(float).eps * abs(value) / step
        assert abs(grad[i] - finite) <= 1e-6 * abs(finite) + round_off, (i, grad[i], finite)

        def along(x: Any, i: int = i) -> Any:
            moved = pars.astype(object)
            moved[i] = x
            return reference(spec, names, moved, main, aux)

        exact = mp.diff(along, mp.mpf(float(pars[i])))
        assert abs(grad[i] - exact) <= 1e-10 * max(1.0, abs(exact)), (i, grad[i], float(exact))
