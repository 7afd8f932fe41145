"""Parameter uncertainties of neosx.infer against Minuit's HESSE (iminuit), on pyhf's NLL.

Minuit minimises pyhf's negative log-likelihood (numpy backend, ``-model.logpdf``) within the
suggested bounds: ``errordef = 0.5`` (``Minuit.LIKELIHOOD``: the objective is the NLL, not
``2 NLL``), strategy 2, ``tol = 1e-5`` (EDM goal 1e-8). HESSE then runs at Minuit's minimum
with the limits released: with limits, iminuit reports a bounded parameter's error from its
internal, sine-mapped coordinate and its covariance through that map's Jacobian, which inside
the bounds differ from the curvature by up to 3e-3
(:func:`test_pyhf_minuit_errors_are_the_limit_mapped_ones`) and at a bound mean nothing
(sbottom's POI at 0: "error" 0.71, covariance 1.3e-10, against a curvature of 1.16). HESSE's
own iteration of each second derivative's step is tightened (HESSE_*): with strategy 2's
settings it stops once a second derivative moves by < 2 % (or its step by < 10 %), and was
1.1e-3 to 8.6e-3 off the exact covariance on the Asimov cases here.

Agreement is asserted to RTOL = 1e-3: sigma of each parameter relative, covariance elements
relative to ``sqrt(C_ii C_jj)``; best-fit parameters to PARS_TOL = 1e-3 of their sigma. On
the Asimov data at mu = 1 the Fisher information (:func:`neosx.infer.covariance`,
:func:`neosx.infer.poi_uncertainty`) is compared with HESSE on those data. Two Asimov
covariances get a looser bound, where HESSE's finite differences are that far off (its
mixed derivatives are forward differences, first order in the step): each case is also
checked against Richardson-extrapolated central differences of pyhf's NLL to FD_RTOL = 1e-5.
On ttbar HESSE fails (strict xfail); pyhf's jax-backend autodiff Hessian is the reference.

Measured (max over parameters; sigma / covariance / parameters in sigma):
    histosys (#2269's model) 2.8e-4 / 5.7e-4 / 7e-6, Asimov 5.9e-4 / 1.2e-3; mu fixed 2e-6;
    shapesys_normsys 2.6e-5 / 5.2e-5 / 3e-6, Asimov 2.2e-4 / 4.9e-4; POI at 0 1.7e-4 / 3.3e-4;
    staterror_cr 2.8e-5 / 5.5e-5 / 1e-6, Asimov 2.3e-5 / 4.6e-5;
    displaced leptons, POI fixed at 0: 1.5e-7 / 3.1e-7 / 5e-7, Asimov 5.5e-6 / 2.0e-5;
    sbottom (POI at its bound 0) 9.5e-5 / 2.4e-4 / 2e-5, Asimov 3.4e-4 / 2.1e-3;
    ttbar: against pyhf's autodiff 6e-12 / 1.3e-11; HESSE sigma(ttbarXsec) 0.002-0.028 for
    0.0424.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest
from iminuit import Minuit

import neosx.infer as infer
from neosx.histfactory import HistFactory
from neosx.infer.fisher import FitCovariance, fit_covariance, fit_poi_uncertainty

pytestmark = [
    # pyhf 0.7.6 validates with jsonschema.RefResolver, deprecated in jsonschema 4.18.
    pytest.mark.filterwarnings("ignore:jsonschema.RefResolver is deprecated:DeprecationWarning"),
]

WORKSPACES = Path("/work/shared/data/workspaces")
RTOL = 1e-3  # sigma and covariance against HESSE
PARS_TOL = 1e-3  # best-fit parameters against Minuit's, in units of their sigma
MINUIT_TOL = 1e-5
HESSE_STEP_TOLERANCE = 1e-3  # strategy 2's: 0.1
HESSE_G2_TOLERANCE = 1e-4  # strategy 2's: 0.02
HESSE_CYCLES = 50  # strategy 2's: 7
FD_RTOL = 1e-5  # covariance against a Richardson-extrapolated finite-difference Hessian


@pytest.fixture(autouse=True)
def _numpy_backend() -> Iterator[None]:
    pyhf.set_backend("numpy")
    yield
    pyhf.set_backend("numpy")


class Hesse(NamedTuple):
    """Minuit's minimum and HESSE's covariance (zero rows / columns on fixed parameters)."""

    pars: np.ndarray
    covariance: np.ndarray
    minuit: Minuit


def minuit_hesse(
    reference: pyhf.pdf.Model, data: np.ndarray, *, fixed: Mapping[str, float] | None = None,
    init: np.ndarray | None = None, migrad: bool = True,
) -> Hesse:
    """MIGRAD within the bounds from ``init`` (default the suggested init; skipped if not
    ``migrad``), then HESSE with the limits released, on pyhf's NLL."""
    start = np.array(reference.config.suggested_init() if init is None else init, dtype=float)
    fixed_mask = np.array(reference.config.suggested_fixed(), dtype=bool)
    for name, value in (fixed or {}).items():
        index = reference.config.par_slice(name).start
        start[index], fixed_mask[index] = value, True

    def nll(pars: np.ndarray) -> float:
        return -reference.logpdf(pars, data)[0]

    minuit = Minuit(nll, start, name=reference.config.par_names)
    minuit.errordef = Minuit.LIKELIHOOD
    minuit.limits = reference.config.suggested_bounds()
    minuit.fixed = fixed_mask
    minuit.strategy = 2
    minuit.tol = MINUIT_TOL
    if migrad:
        minuit.migrad()
        assert minuit.valid, minuit.fmin
    for name in reference.config.par_names:
        minuit.limits[name] = (-np.inf, np.inf)
    minuit.strategy.hessian_step_tolerance = HESSE_STEP_TOLERANCE
    minuit.strategy.hessian_g2_tolerance = HESSE_G2_TOLERANCE
    minuit.strategy.hessian_ncycles = HESSE_CYCLES
    minuit.hesse()
    return Hesse(np.asarray(minuit.values), np.asarray(minuit.covariance), minuit)


def assert_hesse_accurate(hesse: Hesse) -> None:
    fmin = hesse.minuit.fmin
    assert fmin.has_accurate_covar and fmin.has_posdef_covar and not fmin.has_made_posdef_covar


def relative_covariance(covariance: np.ndarray, reference: np.ndarray) -> float:
    """max |C - R|_ij / sqrt(R_ii R_jj) over the free parameters (R_ii > 0)."""
    free = np.diagonal(reference) > 0
    sigma = np.sqrt(np.diagonal(reference)[free])
    difference = (covariance - reference)[np.ix_(free, free)]
    return float(np.max(np.abs(difference) / np.outer(sigma, sigma)))


def relative_sigma(sigma: Any, reference: np.ndarray) -> float:
    sigma, free = np.asarray(sigma), reference > 0
    return float(np.max(np.abs(sigma[free] / reference[free] - 1.0)))


def richardson_hessian(reference: pyhf.pdf.Model, data: np.ndarray, pars: np.ndarray,
                       free: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """The Hessian of pyhf's NLL over the ``free`` parameters by central differences (four
    points per element), Richardson-extrapolated from ``steps`` and ``steps / 2``: an
    independent reference with truncation error O(step**4)."""
    index = np.flatnonzero(free)

    def nll(shift: np.ndarray) -> float:
        point = np.array(pars, dtype=float)
        point[index] += shift
        return -reference.logpdf(point, data)[0]

    def central(h: np.ndarray) -> np.ndarray:
        n = index.size
        unit = np.diag(h)
        hessian = np.empty((n, n))
        for i in range(n):
            hessian[i, i] = (nll(unit[i]) - 2 * nll(np.zeros(n)) + nll(-unit[i])) / h[i] ** 2
            for j in range(i):
                hessian[i, j] = hessian[j, i] = (
                    nll(unit[i] + unit[j]) - nll(unit[i] - unit[j])
                    - nll(unit[j] - unit[i]) + nll(-unit[i] - unit[j])
                ) / (4 * h[i] * h[j])
        return hessian

    return (4 * central(steps / 2) - central(steps)) / 3


def assert_equals_finite_differences(
    covariance: Any, pars: Any, reference: pyhf.pdf.Model, data: np.ndarray
) -> None:
    """``covariance`` at ``pars`` against the inverse of :func:`richardson_hessian` (steps of
    1e-2 sigma), to FD_RTOL."""
    covariance = np.asarray(covariance)
    free = np.diagonal(covariance) > 0
    sigma = np.sqrt(np.diagonal(covariance)[free])
    numeric = np.zeros_like(covariance)
    hessian = richardson_hessian(reference, data, np.asarray(pars), free, 1e-2 * sigma)
    numeric[np.ix_(free, free)] = np.linalg.inv(hessian)
    assert relative_covariance(covariance, numeric) < FD_RTOL


def assert_agrees_with_hesse(
    best: FitCovariance, hesse: Hesse, covariance_rtol: float = RTOL
) -> None:
    sigma = np.sqrt(np.diagonal(hesse.covariance))
    covariance = np.asarray(best.covariance)
    assert np.all(np.isfinite(covariance))
    np.testing.assert_array_equal(covariance[sigma == 0], 0.0)  # fixed rows
    assert relative_sigma(best.uncertainties, sigma) < RTOL
    assert relative_covariance(covariance, hesse.covariance) < covariance_rtol
    free = sigma > 0
    pulls = np.abs(np.asarray(best.pars) - hesse.pars)[free] / sigma[free]
    assert np.max(pulls) < PARS_TOL


# ---------------------------------------------------------------------------- small models


def _sample(name: str, data: list[float], *modifiers: dict) -> dict:
    return {"name": name, "data": data, "modifiers": list(modifiers)}


MU = {"name": "mu", "type": "normfactor", "data": None}

SMALL: dict[str, tuple[dict, list[float]]] = {
    # pyhf's test_optim model (#2269): one code4p histosys, two bins
    "histosys": (
        {"channels": [{"name": "SR", "samples": [
            _sample("signal", [30.0, 95.0], MU),
            _sample("background", [100.0, 150.0], {"name": "bkg_norm", "type": "histosys",
                    "data": {"lo_data": [98.0, 100.0], "hi_data": [102.0, 190.0]}}),
        ]}]},
        [120.0, 180.0],
    ),
    # Poisson-constrained gammas (shapesys) and a code4 normsys
    "shapesys_normsys": (
        {"channels": [{"name": "SR", "samples": [
            _sample("signal", [5.0, 10.0, 15.0], MU),
            _sample("background", [50.0, 40.0, 25.0],
                    {"name": "bkg_shape", "type": "shapesys", "data": [5.0, 4.0, 5.0]},
                    {"name": "bkg_xsec", "type": "normsys", "data": {"hi": 1.1, "lo": 0.92}}),
        ]}]},
        [62.0, 47.0, 36.0],
    ),
    # two channels; Gaussian gammas (staterror), a free background normalisation in the CR
    "staterror_cr": (
        {"channels": [
            {"name": "SR", "samples": [
                _sample("signal", [4.0, 8.0], MU),
                _sample("background", [30.0, 20.0],
                        {"name": "k_bkg", "type": "normfactor", "data": None},
                        {"name": "stat_SR", "type": "staterror", "data": [3.0, 2.5]}),
            ]},
            {"name": "CR", "samples": [
                _sample("signal", [0.5], MU),
                _sample("background", [200.0],
                        {"name": "k_bkg", "type": "normfactor", "data": None},
                        {"name": "stat_CR", "type": "staterror", "data": [6.0]}),
            ]},
        ]},
        [212.0, 38.0, 31.0],  # pyhf orders the channels by name: CR, SR
    ),
}


@functools.cache
def small_model(name: str) -> tuple[pyhf.pdf.Model, HistFactory, np.ndarray]:
    spec, main = SMALL[name]
    reference = pyhf.Model(spec, poi_name="mu")
    return reference, HistFactory(spec), np.asarray([*main, *reference.config.auxdata])


@functools.cache
def _compiled_fit_covariance(model: HistFactory, names: tuple[str, ...]) -> Any:
    def run(data: jax.Array, values: tuple[jax.Array, ...]) -> FitCovariance:
        return fit_covariance(model, data, fixed=dict(zip(names, values, strict=True)))

    return jax.jit(run)


def neosx_fit(
    model: HistFactory, data: np.ndarray, fixed: Mapping[str, float] | None = None
) -> FitCovariance:
    """:func:`fit_covariance`, compiled once per model and set of fixed parameters (a
    compilation costs seconds, more than a call)."""
    names = tuple(fixed or {})
    values = tuple(jnp.asarray((fixed or {})[name], jnp.float64) for name in names)
    return _compiled_fit_covariance(model, names)(jnp.asarray(data), values)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_observed_covariance_equals_hesse(name: str) -> None:
    reference, model, data = small_model(name)
    best = neosx_fit(model, data)
    hesse = minuit_hesse(reference, data)
    assert_hesse_accurate(hesse)
    assert not np.any(best.at_bound)
    assert_agrees_with_hesse(best, hesse)
    assert_equals_finite_differences(best.covariance, best.pars, reference, data)


def test_fit_poi_uncertainty_refuses_a_fixed_poi() -> None:
    _, model, data = small_model("histosys")
    with pytest.raises(ValueError, match="the POI 'mu' is fixed"):
        fit_poi_uncertainty(model, data, fixed={"mu": 1.0})


def test_constrained_fit_covariance_is_conditional_as_minuits() -> None:
    """The POI fixed at 1 (pyhf's test_optim, #2269): the covariance of the others given it."""
    reference, model, data = small_model("histosys")
    best = neosx_fit(model, data, {"mu": 1.0})
    hesse = minuit_hesse(reference, data, fixed={"mu": 1.0})
    assert_hesse_accurate(hesse)
    assert_agrees_with_hesse(best, hesse)
    index = model.config.par_names.index("bkg_norm")
    assert float(best.uncertainties[index]) == pytest.approx(0.264316, rel=1e-5)
    assert float(best.uncertainties[model.config.poi_index]) == 0.0


def test_pr2269_autodiff_formula_profiles_the_fixed_poi() -> None:
    """pyhf PR #2269's autodiff covariance, ``inv(-hessian(logpdf))`` over *all* parameters
    (fixed ones included, their rows zeroed afterwards), on pyhf's jax backend: at the free
    fit it is neosx's (and HESSE's); at the fit with mu fixed it is the covariance with mu
    profiled at that point, 0.669 for bkg_norm against the conditional 0.264 (Minuit's)."""
    _, model, data = small_model("histosys")
    free_fit = neosx_fit(model, data)
    constrained = neosx_fit(model, data, {"mu": 1.0})
    pyhf.set_backend("jax")
    jax_model = pyhf.Model(SMALL["histosys"][0], poi_name="mu")

    @jax.jit
    def pr_covariance(pars: jax.Array) -> jax.Array:
        hessian = jax.hessian(lambda p: jax_model.logpdf(p, jnp.asarray(data))[0])(pars)
        return jnp.linalg.inv(-hessian)

    at_free = np.asarray(pr_covariance(free_fit.pars))
    assert relative_covariance(at_free, np.asarray(free_fit.covariance)) < 1e-9
    at_fixed = np.asarray(pr_covariance(constrained.pars))
    index = model.config.par_names.index("bkg_norm")
    # the PR's pinned value, at SciPy's fit (1e-6 from neosx's)
    assert np.sqrt(at_fixed[index, index]) == pytest.approx(0.6693815171034548, rel=1e-5)
    assert np.sqrt(at_fixed[index, index]) > 2.5 * float(constrained.uncertainties[index])


def test_pyhf_minuit_errors_are_the_limit_mapped_ones() -> None:
    """pyhf's ``fit(..., return_uncertainties=True)`` with Minuit reports ``Minuit.errors``
    with the bounds as limits: 0.29 % below the curvature's sigma for bkg_norm."""
    reference, model, data = small_model("histosys")
    pyhf.set_backend("numpy", pyhf.optimize.minuit_optimizer(strategy=2, tolerance=MINUIT_TOL))
    result = np.asarray(pyhf.infer.mle.fit(data, reference, return_uncertainties=True))
    sigma = np.asarray(neosx_fit(model, data).uncertainties)
    index = model.config.par_names.index("bkg_norm")
    assert result[index, 1] / sigma[index] - 1.0 == pytest.approx(-2.9e-3, abs=3e-4)


def test_poi_at_bound_keeps_its_curvature() -> None:
    """Data below the background: the POI's MLE is its bound 0 (``at_bound``); its row is
    the curvature there, as HESSE's with the limit released."""
    reference, model, _ = small_model("shapesys_normsys")
    data = np.asarray([44.0, 33.0, 21.0, *reference.config.auxdata])
    best = neosx_fit(model, data)
    poi = model.config.poi_index
    assert float(best.pars[poi]) == 0.0
    np.testing.assert_array_equal(best.at_bound, np.arange(model.config.npars) == poi)
    hesse = minuit_hesse(reference, data)
    assert hesse.pars[poi] < 1e-6
    assert_agrees_with_hesse(best, hesse)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_asimov_fisher_equals_hesse(name: str) -> None:
    reference, model, _ = small_model(name)
    # HESSE's own error on this strongly non-quadratic histosys: 1.2e-3 (the exact Hessian
    # agrees with the finite-difference one to FD_RTOL)
    assert_asimov_fisher_equals_hesse(
        reference, model, covariance_rtol=2.5e-3 if name == "histosys" else RTOL
    )


def assert_asimov_fisher_equals_hesse(
    reference: pyhf.pdf.Model, model: HistFactory, covariance_rtol: float = RTOL
) -> None:
    """HESSE on pyhf's Asimov data at mu = 1 (nuisances at their init), after MIGRAD from the
    init (which must stay there: it is the exact MLE), against the Fisher information; and
    that against finite differences."""
    pars = np.asarray(reference.config.suggested_init(), dtype=float)
    pars[reference.config.poi_index] = 1.0
    data = np.asarray(reference.expected_data(pars))
    hesse = minuit_hesse(reference, data, init=pars)
    assert_hesse_accurate(hesse)
    sigma = np.sqrt(np.diagonal(hesse.covariance))
    free = sigma > 0
    assert np.max(np.abs(hesse.pars - pars)[free] / sigma[free]) < PARS_TOL
    fisher = np.asarray(infer.covariance(model, 1.0))
    assert relative_sigma(np.sqrt(np.diagonal(fisher)), sigma) < RTOL
    assert relative_covariance(fisher, hesse.covariance) < covariance_rtol
    poi = reference.config.poi_index
    assert float(infer.poi_uncertainty(model, 1.0)) == pytest.approx(sigma[poi], rel=RTOL)
    assert_equals_finite_differences(fisher, pars, reference, data)


def test_fit_poi_uncertainty_and_gradients() -> None:
    """sigma(mu) by :func:`fit_poi_uncertainty` (one solve) is fit_covariance's and HESSE's;
    its gradient and that of corr(mu, bkg_xsec) (fit_covariance) w.r.t. the signal yields,
    implicit through the fit and then through the Hessian at its solution, equal central
    differences."""
    reference, model, data = small_model("shapesys_normsys")
    signal = np.asarray(SMALL["shapesys_normsys"][0]["channels"][0]["samples"][0]["data"])
    poi = model.config.poi_index

    def quantities(s: jax.Array) -> tuple[jax.Array, jax.Array]:
        yields = {"SR": {"signal": s}}
        cov = fit_covariance(model, data, yields=yields).covariance
        values = jnp.stack([
            fit_poi_uncertainty(model, data, yields=yields),
            cov[0, 1] / jnp.sqrt(cov[0, 0] * cov[1, 1]),
        ])
        return values, jnp.append(values, jnp.sqrt(cov[poi, poi]))

    jacobian_and_values = jax.jit(jax.jacrev(quantities, has_aux=True))
    jacobian, values = jacobian_and_values(signal)
    assert float(values[0]) == pytest.approx(float(values[2]), rel=1e-10)
    hesse = minuit_hesse(reference, data)
    assert float(values[0]) == pytest.approx(np.sqrt(hesse.covariance[poi, poi]), rel=RTOL)

    step = 1e-3 * signal  # the fits' convergence (~1e-10) is the noise floor of smaller steps
    numeric = np.stack([
        (np.asarray(jacobian_and_values(signal + step[k] * e)[1][:2])
         - np.asarray(jacobian_and_values(signal - step[k] * e)[1][:2])) / (2 * step[k])
        for k, e in enumerate(np.eye(signal.size))
    ], axis=1)
    assert np.all(np.abs(numeric) > 1e-4)
    np.testing.assert_allclose(jacobian, numeric, rtol=2e-5)


# ---------------------------------------------------------------------- published workspaces


def load(name: str) -> tuple[pyhf.pdf.Model, np.ndarray]:
    """The published workspace's pyhf model (sbottom with its signal patch) and its data."""
    if name == "displaced_leptons":
        path = (
            WORKSPACES
            / "atlas_susy_2018_14_displaced_leptons/SRee_SRmm_SRem_with_signal_Slep_1000_10.json"
        )
        workspace = pyhf.Workspace(json.loads(path.read_text()))
        reference = workspace.model()
    elif name == "sbottom":
        folder = WORKSPACES / "atlas_susy_2018_31_sbottom_regionA"
        workspace = pyhf.Workspace(json.loads((folder / "RegionA_BkgOnly.json").read_text()))
        patch = json.loads((folder / "RegionA_patch.sbottom_1300_205_60.json").read_text())
        reference = workspace.model(patches=[patch])
    else:
        path = WORKSPACES / "ttbar_ljets_xsec_inclusive/ttbar_ljets_xsec_inclusive_pruned.json"
        workspace = pyhf.Workspace(json.loads(path.read_text()))
        reference = workspace.model()
    return reference, np.asarray(workspace.data(reference))


@functools.cache
def workspace(name: str) -> tuple[pyhf.pdf.Model, HistFactory, np.ndarray]:
    pyhf.set_backend("numpy")
    reference, data = load(name)
    return reference, HistFactory(reference), data


@pytest.mark.slow
def test_displaced_leptons_poi_at_bound_without_curvature() -> None:
    """No events observed: the POI's MLE is 0 with no curvature in it (1.5e-7) against its
    cross terms with the signal systematics, so the Hessian is indefinite: the covariance is
    NaN, as HESSE's without limits is not positive definite. With the POI fixed at 0 both give
    the covariance of the nuisance parameters, and agree."""
    reference, model, data = workspace("displaced_leptons")
    poi = model.config.poi_index
    best = neosx_fit(model, data)
    assert float(best.pars[poi]) == 0.0 and bool(best.at_bound[poi])
    assert np.all(np.isnan(np.asarray(best.covariance)))
    hesse = minuit_hesse(reference, data)
    assert hesse.pars[poi] < 1e-6
    assert not hesse.minuit.fmin.has_posdef_covar

    name = model.config.poi_name
    best = neosx_fit(model, data, {name: 0.0})
    hesse = minuit_hesse(reference, data, fixed={name: 0.0})
    assert_hesse_accurate(hesse)
    assert_agrees_with_hesse(best, hesse)


def test_displaced_leptons_asimov_fisher_equals_hesse() -> None:
    reference, model, _ = workspace("displaced_leptons")
    assert_asimov_fisher_equals_hesse(reference, model)


@pytest.mark.slow
def test_sbottom_observed_covariance_equals_hesse() -> None:
    """The POI at its bound 0 (``at_bound``), the Hessian positive definite there: HESSE with
    the limits released gives the same matrix (sigma(mu) = 1.164)."""
    reference, model, data = workspace("sbottom")
    best = neosx_fit(model, data)
    poi = model.config.poi_index
    assert float(best.pars[poi]) == 0.0 and bool(best.at_bound[poi])
    hesse = minuit_hesse(reference, data)
    assert hesse.pars[poi] < 1e-6
    assert_agrees_with_hesse(best, hesse)
    assert_equals_finite_differences(best.covariance, best.pars, reference, data)
    assert float(fit_poi_uncertainty(model, data)) == pytest.approx(1.16432, rel=1e-5)


@pytest.mark.slow
def test_sbottom_asimov_fisher_equals_hesse() -> None:
    reference, model, _ = workspace("sbottom")
    # HESSE's own error here: 2.1e-3 on the correlations (ttbar_Gen, ttbar_PS: second
    # derivatives by central differences are 8 % off at 0.3 sigma, 9e-4 at 0.03 sigma)
    assert_asimov_fisher_equals_hesse(reference, model, covariance_rtol=4e-3)


def pyhf_jax_hessian(name: str, data: np.ndarray, pars: Any) -> np.ndarray:
    """The Hessian of pyhf's NLL on its jax backend by autodiff: an implementation of the
    likelihood independent of neosx's (pyhf PR #2269's ``fisher_cov`` inverts it)."""
    pyhf.set_backend("jax")
    reference, _ = load(name)
    hessian = jax.jit(jax.hessian(lambda p: -reference.logpdf(p, jnp.asarray(data))[0]))
    return np.asarray(hessian(jnp.asarray(pars)))


def inverse_on(hessian: np.ndarray, free: np.ndarray) -> np.ndarray:
    """The inverse of the free x free block, zero elsewhere."""
    covariance = np.zeros_like(hessian)
    covariance[np.ix_(free, free)] = np.linalg.inv(hessian[np.ix_(free, free)])
    return covariance


@pytest.mark.slow
def test_ttbar_covariance_equals_independent_hessians() -> None:
    """131 free parameters, nearly degenerate (the Jacobi-scaled Hessian has condition number
    4.5e5; sigma(ttbarXsec) is 94 times its conditional sigma), on which HESSE fails (next
    test). The references: pyhf's own autodiff Hessian (jax backend) and Richardson-
    extrapolated central differences of pyhf's numpy NLL with steps of half a conditional
    sigma, whose round-off (4e-9 in an NLL of 147 made of terms of 2e5) limits them to ~1e-3
    along the degenerate direction (max deviation from neosx, sigma / covariance: 3.9e-4 /
    7.7e-4 at these steps; 2.1e-4 / 1.1e-3 at 1 sigma, 1.2e-3 / 2.4e-3 at 0.3, 2.8e-3 / 5.6e-3
    at 0.1: converging on neosx's as the round-off shrinks). On the Asimov data at mu = 1 the
    Fisher covariance equals the autodiff one."""
    reference, model, data = workspace("ttbar")
    best = neosx_fit(model, data)
    assert not np.any(best.at_bound)
    covariance = np.asarray(best.covariance)
    free = np.diagonal(covariance) > 0
    assert free.sum() == model.config.npars - 1
    hessian = pyhf_jax_hessian("ttbar", data, best.pars)
    assert relative_covariance(covariance, inverse_on(hessian, free)) < 1e-9
    pyhf.set_backend("numpy")
    steps = 0.5 / np.sqrt(np.diagonal(hessian)[free])
    numeric = np.zeros_like(covariance)
    numeric[np.ix_(free, free)] = np.linalg.inv(
        richardson_hessian(reference, data, np.asarray(best.pars), free, steps)
    )
    assert relative_sigma(best.uncertainties, np.sqrt(np.diagonal(numeric))) < 1e-3
    assert relative_covariance(covariance, numeric) < 2e-3

    pars = np.asarray(reference.config.suggested_init(), dtype=float)
    pars[reference.config.poi_index] = 1.0
    asimov = np.asarray(reference.expected_data(pars))
    fisher = np.asarray(infer.covariance(model, 1.0))
    autodiff = inverse_on(pyhf_jax_hessian("ttbar", asimov, pars), free)
    assert relative_covariance(fisher, autodiff) < 1e-9


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="HESSE's second derivatives are ~5 % off on ttbar")
def test_ttbar_hesse_agrees() -> None:
    """HESSE at neosx's MLE (MIGRAD from the init takes 180k calls, 3-6 min, and stops above
    its EDM goal). Its steps start from a numerical gradient taken where the NLL's round-off
    (4e-9) dominates; its second derivatives of the best-measured parameters (ttbarXsec, the
    staterror gammas) come out ~5 % high, and the near-degenerate matrix (forced positive
    definite) turns that into sigma(ttbarXsec) = 0.0020 against 0.0424 (0.0019 to 0.028
    after MIGRAD, by settings). Strict: if a later iminuit gets this right, the test says so."""
    reference, model, data = workspace("ttbar")
    best = neosx_fit(model, data)
    hesse = minuit_hesse(reference, data, init=np.asarray(best.pars), migrad=False)
    assert_agrees_with_hesse(best, hesse)
