"""Tests of neosx.infer.toys: toy-based hypotests against pyhf's ToyCalculator and exact sums.

Every toy-based number is a tail fraction of N pseudo-experiments, so each is compared with
its reference within SIGMAS = 4 binomial standard deviations, computed here:

- CLs+b, CLb (fractions p of N toys): ``sigma^2 = p (1 - p) (1/N + 1/N_ref)``, with
  ``1/N_ref = 0`` for an exact reference and p the reference value (clipped to [1/N, 1 - 1/N]);
  CLs = CLs+b / CLb (independent toy sets): ``sigma_CLs / CLs = sqrt((sigma_sb / CLs+b)^2 +
  (sigma_b / CLb)^2)``.
- the expected set, the ``p = Phi(-n)`` quantiles of the per-toy CLs (q0: CLs+b) of the
  background-only toys: the rank of a sample quantile has the binomial error
  ``delta = sqrt(p (1 - p) (1/N + 1/N_ref))``, so the reference must lie within the
  quantiles at ``p -+ 4 delta`` of the per-toy distribution, widened by 4 binomial
  errors of the CLs+b estimated at that toy (CLs+b ~ band * p, divided by CLb ~ p).

pyhf 0.7.6 (numpy backend) is the reference; its ``numpy_backend.percentile`` passes
``interpolation=`` to numpy 2, which removed it, so the tests give it numpy's ``method=``
(same linear interpolation). pyhf's toys cost ~80 ms each on the displaced-leptons workspace
and ~2.4 s on sbottom, so the default suite compares with pyhf numbers pinned from a run with
``numpy.random.seed(0)`` (PYHF_PINNED); the slow test ``test_pinned_pyhf_numbers_are_pyhfs``
recomputes them with pyhf and requires equality. The counting experiment's reference is exact:
direct sums of Poisson probabilities over the counts whose statistic passes.

Measured (seed 0), |difference| / allowed tolerance: counting experiment <= 0.33 (CLs+b, CLb,
CLs); displaced leptons vs pyhf <= 0.36 (CLs 0.190 vs 0.170, CLs+b 0.084 vs 0.080, CLb 0.443 vs
0.471), expected set neosx [0.085 0.129 0.193 0.217 0.446], pyhf [0.095 0.132 0.175 0.199 0.449].
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest
import scipy.stats
from pyhf.tensor import numpy_backend

import neosx.infer as infer
from neosx.histfactory import HistFactory
from neosx.infer.toys import TIE_TOLERANCE, sample_toys

pytestmark = [
    pytest.mark.filterwarnings("ignore:jsonschema.RefResolver is deprecated:DeprecationWarning"),
]

SIGMAS = 4.0
PERCENTILES = 100.0 * scipy.stats.norm.cdf([-2.0, -1.0, 0.0, 1.0, 2.0])  # pyhf's band order
WORKSPACES = Path("/work/shared/data/workspaces")


@pytest.fixture(autouse=True)
def _pyhf_numpy_percentile(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyhf's numpy backend with numpy 2's ``percentile(method=...)`` (see the docstring)."""
    pyhf.set_backend("numpy")

    def percentile(self: Any, tensor: Any, q: Any, axis: Any = None,
                   interpolation: str = "linear") -> Any:
        return np.percentile(tensor, q, axis=axis, method=interpolation)

    monkeypatch.setattr(numpy_backend.numpy_backend, "percentile", percentile)


@pytest.fixture(scope="module", autouse=True)
def _release_caches() -> Iterator[None]:
    yield
    for cached in (counting_model, jitted_counting, displaced_leptons, sbottom, jitted_toys):
        cached.cache_clear()


# ---------------------------------------------------------------------------------------------
# statistical comparisons
# ---------------------------------------------------------------------------------------------


def inverse_sizes(ntoys: int, reference_ntoys: float) -> float:
    return 1.0 / ntoys + 1.0 / reference_ntoys


def binomial_sigma(p: float, ntoys: int, reference_ntoys: float) -> float:
    p = min(max(p, 1.0 / ntoys), 1.0 - 1.0 / ntoys)
    return float(np.sqrt(p * (1.0 - p) * inverse_sizes(ntoys, reference_ntoys)))


def assert_tails_agree(result: infer.ToyResult, cls: float, clsb: float, clb: float,
                       ntoys: int, reference_ntoys: float) -> list[float]:
    """CLs+b, CLb and CLs within SIGMAS binomial errors; returns |difference| / tolerance."""
    sigma_sb = binomial_sigma(clsb, ntoys, reference_ntoys)
    sigma_b = binomial_sigma(clb, ntoys, reference_ntoys)
    sigma_s = cls * np.hypot(sigma_sb / max(clsb, 1.0 / ntoys), sigma_b / max(clb, 1.0 / ntoys))
    pulls = []
    for name, value, expected, sigma in (("CLsb", result.clsb, clsb, sigma_sb),
                                         ("CLb", result.clb, clb, sigma_b),
                                         ("CLs", result.cls, cls, sigma_s)):
        pull = abs(float(value) - expected) / (SIGMAS * sigma)
        assert pull <= 1.0, f"{name} = {float(value)}, reference {expected} +- {SIGMAS} x {sigma}"
        pulls.append(pull)
    return pulls


def per_toy_pvalues(q_sb: np.ndarray, q_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(CLs, CLs+b) of each background-only toy, by direct counting (pyhf's ``pvalue``)."""
    threshold = q_b - TIE_TOLERANCE * np.maximum(1.0, np.abs(q_b))
    clsb = np.mean(q_sb[None, :] >= threshold[:, None], axis=1)
    clb = np.mean(q_b[None, :] >= threshold[:, None], axis=1)
    return clsb / clb, clsb


def assert_band_within(band: np.ndarray, quantile: Callable[[float], float], ratio: bool,
                       ntoys: int, reference_ntoys: float) -> None:
    """Each ``band[k]`` within the quantiles of a per-toy distribution at ``p -+ SIGMAS
    delta`` (``quantile(p)``), widened by SIGMAS errors of the CLs+b at that toy."""
    for k, p in enumerate(PERCENTILES / 100.0):
        delta = SIGMAS * np.sqrt(p * (1.0 - p) * inverse_sizes(ntoys, reference_ntoys))
        low, high = quantile(max(p - delta, 0.0)), quantile(min(p + delta, 1.0))
        clsb = band[k] * p if ratio else band[k]
        epsilon = SIGMAS * binomial_sigma(min(clsb, 1.0), ntoys, reference_ntoys)
        epsilon /= p if ratio else 1.0
        assert low - epsilon <= band[k] <= high + epsilon, (
            f"band[{k}] (p = {p:.4f}) = {band[k]}, allowed [{low - epsilon}, {high + epsilon}]"
        )


def sample_quantile(values: np.ndarray) -> Callable[[float], float]:
    return lambda p: float(np.percentile(values, 100.0 * p, method="linear"))


# ---------------------------------------------------------------------------------------------
# 1. A counting experiment: one bin, no nuisance parameter, exact p-values by Poisson sums
# ---------------------------------------------------------------------------------------------

SIGNAL, BACKGROUND = 6.0, 10.0
N_EXACT = 4000
N_MAX = 120  # Poisson(60) (the largest rate, at the POI's upper bound 10) has ~1e-9 above


@functools.cache
def counting_model() -> HistFactory:
    return HistFactory({"channels": [{"name": "SR", "samples": [
        {"name": "sig", "data": [SIGNAL],
         "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
        {"name": "bkg", "data": [BACKGROUND], "modifiers": []}]}]})


@functools.cache
def jitted_counting(test_stat: str) -> Callable:
    model = counting_model()
    return jax.jit(lambda mu, data, key: infer.toy_hypotest(
        mu, data, model, test_stat=test_stat, ntoys=N_EXACT, seed=key))


def exact_statistic(n: np.ndarray, mu: float, test_stat: str) -> np.ndarray:
    """q~_mu (= q_mu: the POI's lower bound is 0) or q0 of counts n, in closed form."""
    def nll(rate: np.ndarray | float) -> np.ndarray:
        return rate - scipy.special.xlogy(n, rate)

    mu = 0.0 if test_stat == "q0" else mu
    mu_hat = np.clip((n - BACKGROUND) / SIGNAL, 0.0, 10.0)
    t = np.maximum(2.0 * (nll(mu * SIGNAL + BACKGROUND) - nll(mu_hat * SIGNAL + BACKGROUND)), 0)
    return t if test_stat == "q0" else np.where(mu_hat > mu, 0.0, t)


def exact_reference(n_obs: float, mu: float, test_stat: str) -> tuple[float, float, float, Any]:
    """(CLs, CLs+b, CLb, quantile function of the per-toy p-value of background-only toys)."""
    n = np.arange(N_MAX + 1.0)
    q = exact_statistic(n, mu, test_stat)
    mu_sb, mu_b = (0.0, 1.0) if test_stat == "q0" else (mu, 0.0)
    p_sb = scipy.stats.poisson.pmf(n, mu_sb * SIGNAL + BACKGROUND)
    p_b = scipy.stats.poisson.pmf(n, mu_b * SIGNAL + BACKGROUND)

    def tail(probabilities: np.ndarray, value: float) -> float:
        return float(np.sum(probabilities[q >= value - 1e-12 * max(1.0, abs(value))]))

    q_obs = float(exact_statistic(np.asarray(n_obs), mu, test_stat))
    clsb, clb = tail(p_sb, q_obs), tail(p_b, q_obs)
    per_toy = np.array([tail(p_sb, v) / (1.0 if test_stat == "q0" else tail(p_b, v)) for v in q])
    order = np.argsort(per_toy, kind="stable")
    cumulative = np.cumsum(p_b[order])

    def quantile(p: float) -> float:
        return float(per_toy[order][min(np.searchsorted(cumulative, p), order.size - 1)])

    return clsb / clb, clsb, clb, quantile


@pytest.mark.parametrize(("test_stat", "mu", "n_obs"), [
    ("qtilde", 1.0, 9.0),   # CLs 0.0946 = 0.0433 / 0.4579
    ("qtilde", 2.0, 13.0),  # CLs 0.0321 = 0.0278 / 0.8645
    ("q0", 0.0, 17.0),      # p0 = CLs+b 0.0270
])
def test_counting_experiment_matches_exact_poisson_sums(
    test_stat: str, mu: float, n_obs: float
) -> None:
    """Counts only: every toy with the observed count ties with the observed statistic."""
    result = jitted_counting(test_stat)(mu, jnp.asarray([n_obs]), jax.random.key(0))
    cls, clsb, clb, quantile = exact_reference(n_obs, mu, test_stat)
    assert float(result.q_obs) == pytest.approx(
        float(exact_statistic(np.asarray(n_obs), mu, test_stat)), abs=1e-9)
    assert_tails_agree(result, cls, clsb, clb, N_EXACT, np.inf)
    band = np.asarray(result.expected_clsb if test_stat == "q0" else result.expected_cls)
    assert_band_within(band, quantile, test_stat != "q0", N_EXACT, np.inf)


def test_exact_reference_can_fail() -> None:
    """The comparison rejects a calculator off by one count (CLs+b summed over n < n_obs)."""
    result = jitted_counting("qtilde")(1.0, jnp.asarray([9.0]), jax.random.key(0))
    cls, _, clb, _ = exact_reference(9.0, 1.0, "qtilde")
    strict_clsb = float(scipy.stats.poisson.cdf(8, SIGNAL + BACKGROUND))  # ties dropped
    with pytest.raises(AssertionError):
        assert_tails_agree(result, cls, strict_clsb, clb, N_EXACT, np.inf)


# ---------------------------------------------------------------------------------------------
# 2. The sampler: pyhf's constraint terms (Gaussian around theta, Poisson around gamma tau)
# ---------------------------------------------------------------------------------------------


def test_toys_follow_the_constraint_terms_as_pyhfs_sampler() -> None:
    spec = {"channels": [{"name": "SR", "samples": [
        {"name": "sig", "data": [5.0, 8.0],
         "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
        {"name": "bkg", "data": [50.0, 30.0], "modifiers": [
            {"name": "norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
            {"name": "stat", "type": "staterror", "data": [3.0, 4.0]},
            {"name": "shape", "type": "shapesys", "data": [5.0, 6.0]}]}]}]}
    model = HistFactory(spec)
    reference = model.pyhf_model
    pars = np.asarray(reference.config.suggested_init(), float)
    for name, value in (("mu", 1.3), ("norm", 0.4), ("stat", [1.05, 0.97]),
                        ("shape", [1.1, 0.9])):
        pars[reference.config.par_slice(name)] = value
    ntoys = 20000
    toys = np.asarray(jax.jit(lambda key: sample_toys(model, pars, key, ntoys))(
        jax.random.key(3)))
    np.random.seed(3)  # noqa: NPY002 (pyhf samples from numpy's global state)
    expected_toys = np.asarray(reference.make_pdf(pyhf.tensorlib.astensor(pars)).sample((ntoys,)))
    assert toys.shape == expected_toys.shape
    mean = np.asarray(reference.expected_data(pars))
    # the Poisson entries (main counts, shapesys) are integers of variance = mean; the Gaussian
    # ones (normsys, staterror) have the constraint widths
    gaussian = np.zeros(mean.size, bool)
    offset = reference.config.nmaindata
    for name in reference.config.auxdata_order:
        paramset = reference.config.param_set(name)
        if paramset.pdf_type == "normal":
            gaussian[offset : offset + paramset.n_parameters] = True
        offset += paramset.n_parameters
    width = np.sqrt(mean)
    width[gaussian] = np.concatenate([
        reference.config.param_set(n).width() for n in reference.config.auxdata_order
        if reference.config.param_set(n).pdf_type == "normal"])
    assert np.all(toys[:, ~gaussian] == np.round(toys[:, ~gaussian]))
    for sample in (toys, expected_toys):  # neosx's, and pyhf's to show the test is right
        assert np.all(np.abs(sample.mean(axis=0) - mean) <= 5 * width / np.sqrt(ntoys))
        assert np.all(np.abs(sample.std(axis=0) - width) <= 5 * width / np.sqrt(2 * ntoys))


# ---------------------------------------------------------------------------------------------
# 3. Published workspaces against pyhf's ToyCalculator
# ---------------------------------------------------------------------------------------------

# pyhf.infer.hypotest(mu, data, model, calctype="toybased", ntoys=ntoys, return_tail_probs=True,
# return_expected_set=True) after numpy.random.seed(0) (pyhf 0.7.6, numpy backend); recomputed
# by test_pinned_pyhf_numbers_are_pyhfs
PYHF_PINNED: dict[str, dict[str, Any]] = {
    "displaced_leptons": {"mu": 5.0, "ntoys": 1000, "cls": 0.16985138004246286, "clsb": 0.08,
                          "clb": 0.471, "band": [0.09523809523809525, 0.13221326266539957,
                                                 0.17473496261577948, 0.19869567566678822,
                                                 0.44930119252489603]},
    "sbottom": {"mu": 1.0, "ntoys": 100, "cls": 0.23684210526315788, "clsb": 0.09, "clb": 0.38,
                "band": [0.0852444171068182, 0.17572089548874678, 0.4498193496587716,
                         0.665076388815636, 1.0]},
}
N_NEOSX = {"displaced_leptons": 2000, "sbottom": 100}


@functools.cache
def displaced_leptons() -> tuple[pyhf.pdf.Model, HistFactory, np.ndarray]:
    pyhf.set_backend("numpy")
    folder = WORKSPACES / "atlas_susy_2018_14_displaced_leptons"
    workspace = pyhf.Workspace(json.loads(
        (folder / "SRee_SRmm_SRem_with_signal_Slep_1000_10.json").read_text()))
    reference = workspace.model()
    return reference, HistFactory(reference), np.asarray(workspace.data(reference), float)


@functools.cache
def sbottom() -> tuple[pyhf.pdf.Model, HistFactory, np.ndarray]:
    pyhf.set_backend("numpy")
    folder = WORKSPACES / "atlas_susy_2018_31_sbottom_regionA"
    workspace = pyhf.Workspace(json.loads((folder / "RegionA_BkgOnly.json").read_text()))
    patch = json.loads((folder / "RegionA_patch.sbottom_1300_205_60.json").read_text())
    reference = workspace.model(patches=[patch])
    return reference, HistFactory(reference), np.asarray(workspace.data(reference), float)


WORKSPACE_CASES = {"displaced_leptons": displaced_leptons, "sbottom": sbottom}


@functools.cache
def jitted_toys(model: HistFactory, ntoys: int) -> Callable:
    return jax.jit(lambda mu, data, key: infer.toy_hypotest(mu, data, model, ntoys=ntoys,
                                                            seed=key))


def pyhf_toys(name: str) -> dict[str, Any]:
    reference, _, data = WORKSPACE_CASES[name]()
    pinned = PYHF_PINNED[name]
    np.random.seed(0)  # noqa: NPY002 (pyhf samples from numpy's global state)
    cls, (clsb, clb), band = pyhf.infer.hypotest(
        pinned["mu"], data, reference, calctype="toybased", ntoys=pinned["ntoys"],
        return_tail_probs=True, return_expected_set=True, track_progress=False)
    return {"mu": pinned["mu"], "ntoys": pinned["ntoys"], "cls": float(cls),
            "clsb": float(clsb), "clb": float(clb), "band": [float(b) for b in band]}


def check_against_pyhf(name: str) -> None:
    _, model, data = WORKSPACE_CASES[name]()
    pinned, ntoys = PYHF_PINNED[name], N_NEOSX[name]
    result = jitted_toys(model, ntoys)(pinned["mu"], data, jax.random.key(0))
    assert_tails_agree(result, pinned["cls"], pinned["clsb"], pinned["clb"], ntoys,
                       pinned["ntoys"])
    per_toy_cls, per_toy_clsb = per_toy_pvalues(np.asarray(result.q_sb), np.asarray(result.q_b))
    assert_band_within(np.asarray(pinned["band"]), sample_quantile(per_toy_cls), True, ntoys,
                       pinned["ntoys"])
    # neosx's own band and tails are those of its toys' statistics, counted directly
    np.testing.assert_allclose(result.expected_cls, np.percentile(per_toy_cls, PERCENTILES),
                               rtol=1e-12, atol=0)
    np.testing.assert_allclose(result.expected_clsb, np.percentile(per_toy_clsb, PERCENTILES),
                               rtol=1e-12, atol=0)
    assert float(result.clsb) == np.mean(np.asarray(result.q_sb) >= float(result.q_obs))


def test_displaced_leptons_matches_pyhf() -> None:
    """13 parameters, zero observed events; Gaussian auxiliary data only."""
    check_against_pyhf("displaced_leptons")


@pytest.mark.slow
def test_sbottom_matches_pyhf() -> None:
    """64 parameters (histosys, normsys, staterror, lumi)."""
    check_against_pyhf("sbottom")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PYHF_PINNED))
def test_pinned_pyhf_numbers_are_pyhfs(name: str) -> None:
    """~3 min (displaced leptons) and ~20 min (sbottom) of pyhf fits."""
    computed = pyhf_toys(name)
    pinned = PYHF_PINNED[name]
    for key in ("cls", "clsb", "clb", "band"):
        np.testing.assert_allclose(computed[key], pinned[key], rtol=1e-9, atol=1e-12,
                                   err_msg=key)


# ---------------------------------------------------------------------------------------------
# 4. jit, vmap, seeds and the hypotest dispatch
# ---------------------------------------------------------------------------------------------


def test_jit_vmap_seeds_and_hypotest_dispatch() -> None:
    model, data = counting_model(), jnp.asarray([9.0])
    single = jitted_counting("qtilde")
    keys = jax.random.split(jax.random.key(1))
    batched = jax.jit(jax.vmap(lambda key: infer.hypotest(
        1.0, data, model, calctype="toybased", ntoys=N_EXACT, seed=key,
        return_expected_set=True)))(keys)
    for k in range(2):
        one = single(1.0, data, keys[k])
        np.testing.assert_array_equal(batched[0][k], one.cls)
        np.testing.assert_array_equal(batched[1][k], one.expected_cls)
    assert float(batched[0][0]) != float(batched[0][1])  # different seeds, different toys
    single(2.0, data, keys[0])
    assert single._cache_size() == 1
    # an int seed is jax.random.key(seed); a raw key is the typed key of its data
    from neosx.infer.toys import checked_seed
    for seed in (0, np.int64(0), jax.random.PRNGKey(0), jnp.asarray(0)):
        np.testing.assert_array_equal(jax.random.key_data(checked_seed(seed)),
                                      jax.random.key_data(jax.random.key(0)))


# ---------------------------------------------------------------------------------------------
# 5. Bad input: one-line ValueErrors before any fit (also under jit)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"ntoys": 0}, r"ntoys must be an int >= 1, got 0"),
    ({"ntoys": 2.5}, r"ntoys must be an int >= 1, got 2.5"),
    ({"ntoys": True}, r"ntoys must be an int >= 1, got True"),
    ({"ntoys": "10"}, r"ntoys must be an int >= 1, got '10'"),
    ({"seed": 1.5}, r"seed must be an int or a jax PRNG key, got 1.5"),
    ({"seed": None}, r"seed must be an int or a jax PRNG key, got None"),
    ({"seed": np.zeros(3, np.uint32)}, r"seed must be an int or a jax PRNG key"),
    ({"calctype": "toys"}, r"calctype must be one of \('asymptotics', 'toybased'\), got 'toys'"),
    ({"test_stat": "qq"}, r"test_stat must be one of \('qtilde', 'q', 'q0'\), got 'qq'"),
])
def test_bad_input_is_refused_before_tracing(kwargs: dict[str, Any], message: str) -> None:
    model, data = counting_model(), np.asarray([9.0])
    options = {"calctype": "toybased", **kwargs}
    with pytest.raises(ValueError, match=message):
        infer.hypotest(1.0, data, model, **options)
    with pytest.raises(ValueError, match=message):
        jax.jit(lambda mu: infer.hypotest(mu, data, model, **options))(1.0)
