"""Tests of neosx.infer.intervals: upper limits, CLs scans and profile-likelihood scans.

The reference is pyhf 0.7.6 (numpy backend) with its scipy optimiser at ``tolerance=1e-14``:
at its default tolerance (SLSQP ``ftol`` 1e-6) its CLs carry noise ~1e-5, which moves a limit
by up to 1.6e-5 relative (shapesys, the deficit); tightened, its limits and neosx's agree to
3e-8. Its limits are
``toms748_scan`` solved to ``rtol=1e-10`` (``upper_limit`` is that scan at ``rtol=1e-4``).

Measured on this machine (max over the two datasets; relative differences of the limits,
absolute of CLs and q):
    limits, observed / expected: normsys 8e-10 / 1.1e-8 (q: 1.4e-9 / 1.1e-8), shapesys
    2.2e-9 / 1.0e-8, histosys 2.2e-9 / 8.4e-9, two_channel 1.7e-9 / 6.6e-9; displaced
    leptons (POI bound widened to 40) 7.7e-9 / 3.3e-8.
    cls_scan vs pyhf hypotest: <= 9.3e-9; profile_scan vs pyhf fits: <= 1e-10.
    Gradients of the six limits vs central differences (step 1e-4 relative): <= 1.4e-6
    relative, the differences' noise (the roots are solved to |F| <= 1e-10).

Compiling one neosx quantity for one model costs several seconds on two busy cores, so the
jitted functions are built once per model (cached) and called with traced data and yields.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest

import neosx.infer as infer
from neosx.histfactory import HistFactory
from neosx.infer.fit import FitError

pytestmark = [
    # pyhf 0.7.6 validates with jsonschema.RefResolver, deprecated in jsonschema 4.18.
    pytest.mark.filterwarnings("ignore:jsonschema.RefResolver is deprecated:DeprecationWarning"),
]

LIMIT_RTOL = 1e-4  # limits against pyhf's
CLS_ATOL = 1e-6  # CLs against pyhf's hypotest
Q_ATOL = 1e-6  # profile-likelihood q against pyhf's fits
GRAD_RTOL = 1e-5  # gradients against central differences of neosx's own limits
FD_STEP = 1e-4  # relative stencil step on the yields (the roots are solved to |F| <= 1e-10)
CL = 0.95
WORKSPACES = Path("/work/shared/data/workspaces")


@contextlib.contextmanager
def tight_pyhf() -> Iterator[None]:
    """pyhf's numpy backend with its scipy optimiser at tolerance 1e-14, restored after."""
    previous = pyhf.get_backend()
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-14))
    try:
        yield
    finally:
        pyhf.set_backend(*previous)


@pytest.fixture(scope="module", autouse=True)
def _release_caches() -> Iterator[None]:
    """Models and compiled functions are cached across this module's tests, then dropped."""
    yield
    for cached in (small_case, displaced_leptons, jitted_limits, jitted_cls_scan,
                   jitted_profile_scan, jitted_jacobians):
        cached.cache_clear()


# ---------------------------------------------------------------------------------------------
# Models, data and pyhf references
# ---------------------------------------------------------------------------------------------

MU = {"name": "mu", "type": "normfactor", "data": None}
SIGNAL, BKG = [6.0, 9.0], [40.0, 30.0]
# observed main counts of the signal region: an excess (mu_hat ~ 0.7) and a deficit (mu_hat 0)
OBSERVED = ([47.0, 41.0], [35.0, 27.0])
CR_OBSERVED = ([118.0, 104.0], [124.0, 97.0])


def _sample(name: str, data: list[float], modifiers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "data": list(data), "modifiers": modifiers}


def _spec(name: str) -> dict[str, Any]:
    norm = {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.92}}
    if name == "normsys":
        bkg = [norm]
    elif name == "histosys":
        bkg = [{"name": "jes", "type": "histosys",
                "data": {"hi_data": [43.0, 31.0], "lo_data": [38.0, 28.5]}}]
    elif name == "shapesys":
        return pyhf.simplemodels.uncorrelated_background(
            signal=SIGNAL, bkg=BKG, bkg_uncertainty=[4.0, 5.0]).spec
    else:
        assert name == "two_channel"
        mu_bkg = {"name": "mu_bkg", "type": "normfactor", "data": None}
        return {"channels": [
            {"name": "CR", "samples": [_sample("signal", [0.5, 1.0], [MU]),
                                       _sample("bkg", [120.0, 100.0], [mu_bkg, norm])]},
            {"name": "SR", "samples": [_sample("signal", SIGNAL, [MU]),
                                       _sample("bkg", BKG, [mu_bkg, norm])]},
        ]}
    return {"channels": [{"name": "SR", "samples": [_sample("signal", SIGNAL, [MU]),
                                                    _sample("bkg", BKG, bkg)]}]}


class Case(NamedTuple):
    """A model as pyhf and neosx see it, its spec and its observed datasets (main + aux)."""

    spec: dict[str, Any]
    reference: pyhf.pdf.Model
    model: HistFactory
    observed: tuple[np.ndarray, ...]


@functools.cache
def small_case(name: str) -> Case:
    spec = _spec(name)
    with tight_pyhf():
        reference = pyhf.Model(copy.deepcopy(spec), poi_name="mu")
    observed = []
    for sr, cr in zip(OBSERVED, CR_OBSERVED, strict=True):
        main = [cr if channel == "CR" else sr for channel in reference.config.channels]
        observed.append(np.concatenate([*main, reference.config.auxdata]))
    return Case(spec, reference, HistFactory(spec), tuple(observed))


@functools.cache
def displaced_leptons(poi_upper: float) -> Case:
    """ATLAS SUSY-2018-14 (13 parameters, zero observed events) with the POI's upper bound
    ``poi_upper`` (the workspace's is 10, below its +1 and +2 sigma expected limits)."""
    path = (WORKSPACES / "atlas_susy_2018_14_displaced_leptons"
            / "SRee_SRmm_SRem_with_signal_Slep_1000_10.json")
    spec = json.loads(path.read_text())
    (poi,) = [p for p in spec["measurements"][0]["config"]["parameters"]
              if p["name"] == "mu_Sig"]
    poi["bounds"] = [[0.0, poi_upper]]
    with tight_pyhf():
        workspace = pyhf.Workspace(spec)
        reference = workspace.model()
    data = np.asarray(workspace.data(reference), dtype=float)
    return Case(spec, reference, HistFactory(reference), (data,))


def pyhf_limits(reference: pyhf.pdf.Model, data: np.ndarray,
                test_stat: str = "qtilde") -> tuple[float, np.ndarray]:
    """pyhf's observed and (5,) expected limits at CL, TOMS 748 to rtol 1e-10 (tight fits).

    The scan starts at 0.1: at 0 pyhf's CLs is 0 / 0 on some models."""
    upper = reference.config.suggested_bounds()[reference.config.poi_index][1]
    with tight_pyhf():
        observed, expected = pyhf.infer.intervals.upper_limits.toms748_scan(
            data, reference, 0.1, upper, level=1 - CL, atol=1e-12, rtol=1e-10,
            test_stat=test_stat)
    return float(observed), np.asarray(expected, dtype=float)


def pyhf_hypotest(reference: pyhf.pdf.Model, data: np.ndarray, mu: float) -> np.ndarray:
    """pyhf's (observed CLs, 5 expected) at ``mu`` (tight fits), as one (6,) array."""
    with tight_pyhf():
        observed, expected = pyhf.infer.hypotest(mu, data, reference, return_expected_set=True)
    return np.array([float(observed), *np.asarray(expected, dtype=float)])


def pyhf_q(reference: pyhf.pdf.Model, data: np.ndarray, fixed: dict[str, float]) -> float:
    """``2 (NLL(fixed) - NLL(free))`` from pyhf's fits (tight): ``fixed_poi_fit`` for the POI
    alone, else ``fit`` with ``fixed_params``."""
    config = reference.config
    with tight_pyhf():
        _, free = pyhf.infer.mle.fit(data, reference, return_fitted_val=True)
        if list(fixed) == [config.poi_name]:
            _, constrained = pyhf.infer.mle.fixed_poi_fit(
                fixed[config.poi_name], data, reference, return_fitted_val=True)
        else:
            init = np.asarray(config.suggested_init(), dtype=float)
            mask = list(config.suggested_fixed())
            for name, value in fixed.items():
                init[config.par_slice(name)] = value
                mask[config.par_slice(name).start] = True
            _, constrained = pyhf.infer.mle.fit(data, reference, init_pars=init.tolist(),
                                                fixed_params=mask, return_fitted_val=True)
    return float(constrained - free)


def nominal_yields(spec: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    return {c["name"]: {s["name"]: np.asarray(s["data"], dtype=float) for s in c["samples"]}
            for c in spec["channels"]}


def yield_entries(yields: dict[str, dict[str, np.ndarray]]) -> Iterator[tuple[str, str, int]]:
    """``(channel, sample, bin)`` of every nominal yield."""
    for channel, samples in yields.items():
        for sample, nominal in samples.items():
            for i in range(nominal.size):
                yield channel, sample, i


def central_difference(f: Callable, yields: dict, channel: str, sample: str, i: int) -> np.ndarray:
    """``(f(y + h) - f(y - h)) / 2h`` in one yield, ``h = FD_STEP`` times its value."""
    step = FD_STEP * yields[channel][sample][i]
    shifted = []
    for sign in (1.0, -1.0):
        moved = copy.deepcopy(yields)
        moved[channel][sample][i] += sign * step
        shifted.append(np.asarray(f(moved)))
    return (shifted[0] - shifted[1]) / (2 * step)


def max_rel(actual: Any, desired: Any) -> float:
    actual, desired = np.asarray(actual, dtype=float), np.asarray(desired, dtype=float)
    return float(np.max(np.abs(actual - desired) / np.abs(desired)))


# ---------------------------------------------------------------------------------------------
# jitted neosx functions, compiled once per model
# ---------------------------------------------------------------------------------------------


def _stacked(model: HistFactory, test_stat: str = "qtilde") -> Callable:
    """``(data, yields) -> (6,)`` observed then expected limits."""

    def limits(data: jax.Array, yields: Any) -> jax.Array:
        observed, expected = infer.upper_limit(data, model, CL, test_stat=test_stat,
                                               yields=yields)
        return jnp.concatenate([observed[None], expected])

    return limits


@functools.cache
def jitted_limits(model: HistFactory, test_stat: str = "qtilde") -> Callable:
    return jax.jit(_stacked(model, test_stat))


@functools.cache
def jitted_jacobians(model: HistFactory) -> Callable:
    """``(datasets (k, ndata), yields) -> (jacobians w.r.t. yields, (k, 6) limits)``, one vmap."""
    limits = _stacked(model)

    def with_limits(data: jax.Array, yields: Any) -> tuple[jax.Array, jax.Array]:
        value = limits(data, yields)
        return value, value

    jacobian = jax.jacrev(with_limits, argnums=1, has_aux=True)
    return jax.jit(jax.vmap(jacobian, in_axes=(0, None)))


@functools.cache
def jitted_cls_scan(model: HistFactory) -> Callable:
    return jax.jit(lambda mu, data: infer.cls_scan(mu, data, model))


@functools.cache
def jitted_profile_scan(model: HistFactory, names: tuple[str, ...]) -> Callable:
    return jax.jit(lambda data, *values: infer.profile_scan(
        data, model, dict(zip(names, values, strict=True))))


# ---------------------------------------------------------------------------------------------
# 1. Upper limits against pyhf
# ---------------------------------------------------------------------------------------------


def test_upper_limits_and_their_gradients_match_pyhf_and_finite_differences() -> None:
    """The contract test, one compiled program: vmap over datasets of (limits, Jacobian).

    The six limits (pyhf's order) on an excess and a deficit equal pyhf's to 1e-4; their
    Jacobian w.r.t. every yield (implicit function theorem) equals central differences of
    the limits to GRAD_RTOL; new data and yields never recompile.
    """
    spec, reference, model, observed = small_case("normsys")
    yields = nominal_yields(spec)
    batch = jitted_jacobians(model)
    data = np.stack(observed)
    jacobians, limits = batch(data, yields)
    for k, dataset in enumerate(observed):
        expected_observed, expected = pyhf_limits(reference, dataset)
        assert max_rel(limits[k, 0], expected_observed) < LIMIT_RTOL  # measured 8e-10
        assert max_rel(limits[k, 1:], expected) < LIMIT_RTOL  # measured 1.1e-8
        assert np.all(np.diff(limits[k, 1:]) > 0)  # -2 sigma ... +2 sigma: ascending
    for channel, sample, i in yield_entries(yields):
        differences = central_difference(lambda y: batch(data, y)[1], yields, channel, sample, i)
        grad = np.asarray(jacobians[channel][sample])[:, :, i]
        # measured <= 1.4e-6 relative
        np.testing.assert_allclose(grad, differences, rtol=GRAD_RTOL,
                                   err_msg=f"d/d {channel}/{sample}[{i}]")
    assert batch._cache_size() == 1


@pytest.mark.slow
@pytest.mark.parametrize(("name", "test_stat"), [
    ("normsys", "qtilde"), ("shapesys", "qtilde"), ("histosys", "qtilde"),
    ("two_channel", "qtilde"), ("normsys", "q"),
])
def test_upper_limit_matches_pyhf(name: str, test_stat: str) -> None:
    """:func:`upper_limit` jitted alone (no gradient, no vmap) equals pyhf's to 1e-4."""
    spec, reference, model, observed = small_case(name)
    limits = jitted_limits(model, test_stat)
    for data in observed:
        ours = np.asarray(limits(data, nominal_yields(spec)))
        expected_observed, expected = pyhf_limits(reference, data, test_stat)
        assert max_rel(ours[0], expected_observed) < LIMIT_RTOL  # measured <= 2.2e-9
        assert max_rel(ours[1:], expected) < LIMIT_RTOL  # measured <= 1.1e-8
        assert np.all(np.diff(ours[1:]) > 0)
        if name == "normsys" and test_stat == "qtilde":  # the vmapped program's limits
            batched = jitted_jacobians(model)(np.stack(observed), nominal_yields(spec))[1]
            np.testing.assert_allclose(batched, [limits(d, nominal_yields(spec))
                                                 for d in observed], rtol=1e-10)
    assert limits._cache_size() == 1


@pytest.mark.slow
def test_displaced_leptons_limits_match_pyhf() -> None:
    """A published workspace (zero observed events); the POI bound widened to 40 so that all
    five expected limits (up to 24) lie inside it, as pyhf's scan needs."""
    _, reference, model, (data,) = displaced_leptons(40.0)
    ours = np.asarray(jitted_limits(model)(data, None))
    expected_observed, expected = pyhf_limits(reference, data)
    assert max_rel(ours[0], expected_observed) < LIMIT_RTOL  # measured 7.7e-9
    assert max_rel(ours[1:], expected) < LIMIT_RTOL  # measured 3.3e-8
    # at the workspace's own bound 10 the +1 and +2 sigma limits (13.3, 24.0) lie beyond it:
    # NaN under jit, the others unchanged
    narrow = np.asarray(jitted_limits(displaced_leptons(10.0).model)(data, None))
    np.testing.assert_allclose(narrow[:4], ours[:4], rtol=1e-9)
    assert np.all(np.isnan(narrow[4:]))


@pytest.mark.slow
def test_limit_beyond_the_poi_bound_raises_eagerly() -> None:
    """The deficit's +1 and +2 sigma limits (1.80, 2.48) lie above a POI bound of 1.5."""
    spec = {**_spec("normsys"), "parameters": [{"name": "mu", "bounds": [[0.0, 1.5]]}]}
    model = HistFactory(spec, poi_name="mu")
    with pytest.raises(FitError, match=r"likely cause: the expected \(\+1 sigma\), expected "
                                       r"\(\+2 sigma\) limits may lie above the POI's upper "
                                       r"bound 1\.5"):
        infer.upper_limit(small_case("normsys").observed[1], model)


# ---------------------------------------------------------------------------------------------
# 2. CLs scans against pyhf's hypotest, and at the limits
# ---------------------------------------------------------------------------------------------


def test_cls_scan_matches_pyhf_hypotest_and_crosses_at_the_limits() -> None:
    """At each mu, observed CLs and the band equal pyhf's hypotest (1e-6); at the limits of
    :func:`upper_limit` the observed CLs and each band member equal 1 - CL (1e-9)."""
    spec, reference, model, observed = small_case("normsys")
    scan = jitted_cls_scan(model)
    mu_values = np.array([0.25, 0.5, 1.0, 1.5, 2.0, 3.0])
    for data in observed:
        cls, band = scan(mu_values, data)
        assert cls.shape == (6,) and band.shape == (6, 5)
        ours = np.concatenate([np.asarray(cls)[:, None], np.asarray(band)], axis=1)
        theirs = np.array([pyhf_hypotest(reference, data, mu) for mu in mu_values])
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=CLS_ATOL)  # measured <= 9.3e-9
    _, limits = jitted_jacobians(model)(np.stack(observed), nominal_yields(spec))
    for data, at_limits in zip(observed, np.asarray(limits), strict=True):
        cls, band = scan(at_limits, data)
        assert float(cls[0]) == pytest.approx(1 - CL, abs=1e-9)
        np.testing.assert_allclose(np.diagonal(np.asarray(band)[1:]), 1 - CL, rtol=0, atol=1e-9)
    assert scan._cache_size() == 1


@pytest.mark.slow
def test_cls_scan_matches_pyhf_on_displaced_leptons() -> None:
    _, reference, model, (data,) = displaced_leptons(10.0)
    mu_values = np.array([1.0, 4.0, 8.0])
    cls, band = jitted_cls_scan(model)(mu_values, data)
    ours = np.concatenate([np.asarray(cls)[:, None], np.asarray(band)], axis=1)
    theirs = np.array([pyhf_hypotest(reference, data, mu) for mu in mu_values])
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=CLS_ATOL)


# ---------------------------------------------------------------------------------------------
# 3. Profile-likelihood scans against pyhf's fits
# ---------------------------------------------------------------------------------------------


def _check_profile(name: str, parameters: dict[str, np.ndarray]) -> None:
    """q on the grid equals pyhf's fit differences (1e-6); q = 0 at the best fit (1e-10)."""
    _, reference, model, observed = small_case(name)
    names = tuple(parameters)
    scan = jitted_profile_scan(model, names)
    for data in observed:
        result = scan(data, *parameters.values())
        assert result.q.shape == tuple(v.size for v in parameters.values())
        for index in np.ndindex(result.q.shape):
            fixed = {n: float(g[index]) for n, g in zip(names, result.grid, strict=True)}
            assert float(result.q[index]) == pytest.approx(
                pyhf_q(reference, data, fixed), abs=Q_ATOL), fixed  # measured <= 1e-10
        # the best fit, put on the grid (same shapes: no recompilation), has q = 0
        best = {n: result.best[model.config.par_slices[n].start] for n in names}
        values = [np.asarray(v).copy() for v in parameters.values()]
        for v, n in zip(values, names, strict=True):
            v[1] = best[n]
        at_best = scan(data, *values)
        assert float(at_best.q[(1,) * len(names)]) == pytest.approx(0.0, abs=1e-10)
        assert np.all(np.asarray(at_best.q) >= 0)
    assert scan._cache_size() == 1


def test_profile_scan_of_the_poi_matches_pyhf() -> None:
    _check_profile("normsys", {"mu": np.array([0.0, 0.5, 1.0, 2.0, 3.5])})


@pytest.mark.slow
def test_profile_scan_2d_matches_pyhf() -> None:
    """(mu, bkg_norm) on a 3 x 3 grid: the nuisance fixed by pyhf's ``fixed_params``."""
    _check_profile("normsys", {"mu": np.array([0.0, 1.0, 2.5]),
                               "bkg_norm": np.array([-1.5, 0.0, 1.0])})


@pytest.mark.slow
def test_profile_scan_of_a_nuisance_matches_pyhf() -> None:
    _check_profile("two_channel", {"mu_bkg": np.array([0.8, 0.95, 1.0, 1.1])})


# ---------------------------------------------------------------------------------------------
# 4. Gradients of the scans w.r.t. the yields
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_scan_gradients_match_finite_differences() -> None:
    """d CLs and d q (cls_scan, profile_scan) w.r.t. the yields and the scanned values: fits'
    NLLs differentiated at their minima (envelope theorem), the Asimov data implicitly."""
    spec, _, model, (data, _) = small_case("normsys")
    yields = nominal_yields(spec)
    mu_values = np.array([0.5, 2.0])

    def quantities(yields: Any, mu_values: jax.Array) -> jax.Array:
        cls, band = infer.cls_scan(mu_values, data, model, yields=yields)
        q = infer.profile_scan(data, model, {"mu": mu_values}, yields=yields).q
        return jnp.concatenate([cls, band.ravel(), q])

    values = jax.jit(quantities)
    grads, by_mu = jax.jit(jax.jacrev(quantities, argnums=(0, 1)))(yields, mu_values)
    for channel, sample, i in yield_entries(yields):
        differences = central_difference(lambda y: values(y, mu_values), yields,
                                         channel, sample, i)
        np.testing.assert_allclose(np.asarray(grads[channel][sample])[:, i], differences,
                                   rtol=GRAD_RTOL, atol=1e-9, err_msg=f"{sample}[{i}]")
    for k, mu in enumerate(mu_values):
        step = FD_STEP * mu
        up, down = mu_values.copy(), mu_values.copy()
        up[k] += step
        down[k] -= step
        differences = (np.asarray(values(yields, up)) - np.asarray(values(yields, down))) / (
            2 * step)
        np.testing.assert_allclose(np.asarray(by_mu)[:, k], differences, rtol=GRAD_RTOL,
                                   atol=1e-9, err_msg=f"d/d mu[{k}]")


# ---------------------------------------------------------------------------------------------
# 5. Inputs checked before tracing
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("call", "message"), [
    (lambda m, d: infer.upper_limit(d, m, 1.0), r"cl must be in \(0, 1\), got cl=1.0"),
    (lambda m, d: infer.upper_limit(d, m, 0.0), r"cl must be in \(0, 1\), got cl=0.0"),
    (lambda m, d: infer.upper_limit(d, m, test_stat="q0"),
     r"test_stat must be one of \('qtilde', 'q'\) for CLs of mu, got 'q0'"),
    (lambda m, d: infer.upper_limit(d[:1], m),
     r"data has shape \(1,\), expected \(3,\) or \(2,\)"),
    (lambda m, d: infer.cls_scan([], d, m),
     r"mu_values must be a non-empty 1-D array, got shape \(0,\)"),
    (lambda m, d: infer.cls_scan([[1.0, 2.0]], d, m),
     r"mu_values must be a non-empty 1-D array, got shape \(1, 2\)"),
    (lambda m, d: infer.cls_scan([1.0, 11.0], d, m),
     r"mu_values\[1\] = 11.0 \(parameter 'mu'\) is outside its bounds \[0.0, 10.0\]"),
    (lambda m, d: infer.profile_scan(d, m, {"nu": [1.0]}),
     r"parameters: 'nu' is not a parameter of the model; parameters: \('mu', 'bkg_norm'\)"),
    (lambda m, d: infer.profile_scan(d, m, {"bkg_norm": [0.0, -6.0]}),
     r"parameters\['bkg_norm'\]\[1\] = -6.0 \(parameter 'bkg_norm'\) is outside its bounds "
     r"\[-5.0, 5.0\]"),
    (lambda m, d: infer.profile_scan(d, m, {"mu": 1.0}),
     r"parameters\['mu'\] must be a non-empty 1-D array, got shape \(\)"),
    (lambda m, d: infer.profile_scan(d, m, {"mu": [1.0], "bkg_norm": [0.0], "x": [0.0]}),
     r"profile_scan scans 1 or 2 parameters, got 3: \['mu', 'bkg_norm', 'x'\]"),
    (lambda m, d: infer.profile_scan(d, m, {}), r"profile_scan scans 1 or 2 parameters, got 0"),
])
def test_bad_inputs_raise_before_tracing(call: Callable, message: str) -> None:
    _, _, model, (data, _) = small_case("normsys")
    with pytest.raises(ValueError, match=message):
        call(model, data)


def test_multi_component_parameter_is_refused() -> None:
    _, _, model, (data, _) = small_case("shapesys")
    with pytest.raises(ValueError, match=r"parameters: 'uncorr_bkguncrt' has 2 components; "
                                         r"profile_scan scans scalar parameters"):
        infer.profile_scan(data, model, {"uncorr_bkguncrt": [1.0]})
