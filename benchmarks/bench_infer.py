"""Differentiable inference: neosx.infer vs relaxed (value+grad) and pyhf numpy hypotest (forward).

Three figures of merit, each as a function of the signal and background yields ``(s, b)``,
are differentiated with ``jax.jit(jax.value_and_grad(f, argnums=(0, 1)))`` in float64:

- ``cls``: median expected CLs of mu = 1 (background-only Asimov data, q~_mu / q_mu: the two
  coincide for the median expected value);
- ``z0``: median expected discovery significance Z0 = sqrt(q0) (signal+background Asimov data);
- ``sigma_mu``: sigma(mu) from the inverse Fisher information (Hessian of the NLL) at the
  signal+background Asimov point.

Implementations:

- ``neosx``: ``neosx.infer.expected_cls(model, 1.0, yields=...)``,
  ``neosx.infer.discovery_significance(model, yields=...)``,
  ``neosx.infer.poi_uncertainty(model, 1.0, yields=...)`` on ``HistFactory(spec)``, the yields
  (nominal signal, nominal background and every histosys ``hi_data`` / ``lo_data``) overridden
  by traced arrays built from ``(s, b)``.
- ``relaxed`` (relaxed 0.4.0, the anchor): ``relaxed.infer.hypotest(1.0, ..., test_stat="q",
  expected_pars=background-only pars)``, ``-ndtri(relaxed.infer.hypotest(0.0, ...,
  test_stat="q0", expected_pars=s+b pars))`` and ``relaxed.cramer_rao_uncert(...)["mu"]``.
  relaxed has no model builder; it takes any pytree with ``logpdf(pars: dict, data)``. pyhf
  0.7.6 cannot build a histosys model from traced yields on JAX 0.10: with
  ``pyhf.set_backend("jax", default=True)`` (as neos did) its histosys builder calls
  ``jnp.concatenate`` on Python lists ("concatenate requires ndarray or scalar arguments, got
  <class 'list'>"); with the numpy default backend the builder converts the tracers to numpy
  (``TracerArrayConversionError``). So the relaxed side uses
  :func:`_relaxed_model_class`: an ``equinox.Module`` that writes pyhf's likelihood for this
  model out in ``jax.numpy`` (Poisson main term, code4p histosys interpolation, unit-Gaussian
  constraints), the way relaxed's own examples define models. Each relaxed case checks it
  against pyhf's numpy ``Model.logpdf`` at random parameter points (reported below the tables).
  Parameters are ``{"mu": (), "alpha": (K,)}`` (one vector for the K nuisance parameters,
  cheaper for jaxopt than K scalar leaves); inits and bounds are pyhf's (mu 1 in [0, 10],
  alpha 0 in [-5, 5]); fits use relaxed's defaults (jaxopt LBFGSB, maxiter 500, tol 1e-6,
  implicit differentiation). Like neosx, relaxed is given the generating parameters as the
  free fit (``expected_pars``), so both run one constrained fit per figure of merit.
- ``pyhf`` (forward only, numpy backend): ``pyhf.infer.hypotest(1.0, asimov_bkg, model,
  test_stat="qtilde", return_expected_set=True)`` (median expected CLs), and
  ``pyhf.infer.hypotest(0.0, asimov_sb, model, test_stat="q0")`` (p0, Z0 = isf(p0)). These are
  the full hypotests a pyhf user calls (five and four fits respectively, with SLSQP). pyhf has
  no sigma(mu) without iminuit, so that row has no pyhf time; its value is checked against the
  Hessian of pyhf's jax-backend ``Model.logpdf`` (untimed).

**relaxed 0.4.0 fix.** ``relaxed.mle.fixed_poi_fit`` sets the POI inside the fit objective with
``pars[poi_name] = poi_value``: it mutates the parameter dict jaxopt passes in, adding a key, and
jaxopt 0.8.5's zoom line search (``tree_add_scalar_mul``) then fails with "ValueError: pytree
structure error: different numbers of pytree children ... the symmetric difference on key sets
is mu". The fixed function (built by :func:`_fixed_poi_fit_factory`) is relaxed's, decorator and
body, with that one line replaced by ``pars = {**pars, poi_name: poi_value}`` (a new dict);
:func:`patch_relaxed` installs it as ``relaxed.infer.fixed_poi_fit`` (the name ``hypotest``
looks up) and ``relaxed.mle.fixed_poi_fit`` at run time. site-packages is not modified.

**Model** (one channel ``SR``, B bins, K nuisance parameters, built as a pyhf spec dict by
:func:`build_spec`): bin centres ``x_i = (i + 0.5) / B``; signal (normfactor ``mu``) a Gaussian
bump ``exp(-(x - 0.7)^2 / (2 * 0.15^2))`` scaled to 40 events in total; background
``exp(-2 x)`` scaled to 1000 events. The background has K histosys modifiers ``np0 ... np{K-1}``
and nothing else, so the model has exactly K nuisance parameters (K + 1 parameters): ``np{k}``
moves bin ``i`` by +10 % (``hi_data``) / -10 % (``lo_data``) if ``i = k (mod min(B, K))`` and
leaves it unchanged otherwise. With K = 1 it shifts every bin; with K <= B the K modifiers
shift disjoint interleaved subsets covering all bins; with K > B each bin is shifted by several
modifiers (every modifier shifts exactly one bin).

Each (implementation, figure of merit, B, K) runs in a fresh Python process, so the first call
(trace + XLA compile + one run) is what a user would wait for; the steady state is the median of
at least 3 calls and at least 0.5 s of calls, each ended with ``block_until_ready``, taken in
batches of 50 in turn with batches of the per-call floor (:func:`_floor_function`). For ``cls``
and ``z0`` the neosx child also times the jitted forward function alone, for the forward-vs-
forward ratio with pyhf. JAX's asynchronous CPU dispatch is switched off by default (as in
``bench_histfactory.py``; ``--async-dispatch`` keeps it). ``--jit-option KEY=VALUE`` passes an
XLA compiler option to every ``jax.jit`` of a case, neosx's and relaxed's alike (e.g.
``xla_cpu_use_fusion_emitters=false``, XLA's older loop emitters, which compile faster).

relaxed is no dependency of neosx; run this in the benchmark environment (see README.md)::

    ../bench-venv/bin/python benchmarks/bench_infer.py --quick      # smoke test
    ../bench-venv/bin/python benchmarks/bench_infer.py > /tmp/bench_infer_full.md

Without relaxed installed the script still runs; its columns read ``n/a``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from _machine import machine_lines

MIN_REPEATS = 3
MIN_TOTAL_S = 0.5
FLOOR_BATCH = 50  # calls per batch when a median and its floor are timed in turn
FULL_BINS = (2, 10, 50)
FULL_NPS = (1, 5, 20)
QUICK_CASES = ((2, 1), (10, 5))
METRICS = ("cls", "z0", "sigma_mu")
IMPLS = ("neosx", "relaxed", "pyhf")
METRIC_TITLES = {
    "cls": "Expected CLs (mu = 1)",
    "z0": "Discovery significance Z0",
    "sigma_mu": "sigma(mu) (inverse Fisher information, Asimov mu = 1)",
}
SIGNAL_EVENTS = 40.0
BACKGROUND_EVENTS = 1000.0
SHIFT = 0.1
TARGET_RELAXED = 2.0
TARGET_PYHF = 100.0
_MIB = 2**20


# --------------------------------------------------------------------------- the model


def nominal_yields(n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Signal (Gaussian bump, 40 events) and background (falling exponential, 1000 events)."""
    x = (np.arange(n_bins) + 0.5) / n_bins
    signal = np.exp(-0.5 * ((x - 0.7) / 0.15) ** 2)
    background = np.exp(-2.0 * x)
    return (
        SIGNAL_EVENTS * signal / signal.sum(),
        BACKGROUND_EVENTS * background / background.sum(),
    )


def shift_mask(n_bins: int, n_nps: int) -> np.ndarray:
    """(K, B) 0/1 matrix: nuisance parameter k shifts bin i iff i = k (mod min(B, K))."""
    period = min(n_bins, n_nps)
    bins, nps = np.arange(n_bins)[None, :], np.arange(n_nps)[:, None]
    return ((bins - nps) % period == 0).astype(np.float64)


def np_names(n_nps: int) -> list[str]:
    return [f"np{k}" for k in range(n_nps)]


def build_spec(n_bins: int, n_nps: int) -> dict[str, Any]:
    """The pyhf spec: signal x mu, background with ``n_nps`` histosys modifiers (±10 %)."""
    signal, background = nominal_yields(n_bins)
    mask = shift_mask(n_bins, n_nps)
    histosys = [
        {
            "name": name,
            "type": "histosys",
            "data": {
                "hi_data": (background * (1.0 + SHIFT * row)).tolist(),
                "lo_data": (background * (1.0 - SHIFT * row)).tolist(),
            },
        }
        for name, row in zip(np_names(n_nps), mask, strict=True)
    ]
    return {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": signal.tolist(),
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {"name": "background", "data": background.tolist(), "modifiers": histosys},
                ],
            }
        ]
    }


# --------------------------------------------------------------------------- relaxed


def _fixed_poi_fit_factory() -> Callable[..., Any]:
    """relaxed 0.4.0's ``relaxed.mle.fixed_poi_fit`` with its one-line fix (module docstring)."""
    from equinox import filter_jit
    from relaxed.mle import _minimize

    @filter_jit
    def fixed_poi_fit(
        data,
        model,
        poi_value,
        poi_name,
        init_pars,
        bounds=None,
        method="LBFGSB",
        maxiter=500,
        tol=1e-6,
        other_settings=None,
    ):
        def fit_objective(pars, model, data):
            pars = {**pars, poi_name: poi_value}  # relaxed 0.4.0: pars[poi_name] = poi_value
            return -model.logpdf(data=data, pars=pars)

        res = _minimize(
            fit_objective=fit_objective,
            model=model,
            data=data,
            init_pars=init_pars,
            bounds=bounds,
            method=method,
            maxiter=maxiter,
            tol=tol,
            other_settings=other_settings,
        )
        res[poi_name] = poi_value
        return res

    return fixed_poi_fit


def patch_relaxed() -> None:
    """Install the fixed ``fixed_poi_fit`` where relaxed's ``hypotest`` looks it up."""
    import inspect

    import relaxed
    import relaxed.infer
    import relaxed.mle

    source = inspect.getsource(relaxed.mle.fixed_poi_fit)
    if "pars[poi_name] = poi_value" not in source:
        print(
            f"note: relaxed {relaxed.__version__}'s fixed_poi_fit no longer mutates its "
            "parameters; patching it anyway with the 0.4.0 copy",
            file=sys.stderr,
        )
    fixed = _fixed_poi_fit_factory()
    relaxed.infer.fixed_poi_fit = fixed
    relaxed.mle.fixed_poi_fit = fixed


def _relaxed_model_class() -> type:
    """An ``equinox.Module`` with pyhf's likelihood of :func:`build_spec` (for relaxed)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import gammaln, xlogy

    class HistosysModel(eqx.Module):
        """Signal x mu + background with K histosys (code4p), unit-Gaussian constraints.

        ``pars = {"mu": (), "alpha": (K,)}``; ``data = (main (B,), auxdata (K,))``.
        """

        signal: jax.Array
        background: jax.Array
        hi: jax.Array  # (K, B)
        lo: jax.Array  # (K, B)

        def expected_main(self, pars: dict[str, jax.Array]) -> jax.Array:
            alpha = jnp.reshape(pars["alpha"], (-1, 1))
            delta_up = self.hi - self.background
            delta_dn = self.background - self.lo
            # pyhf's code4p: linear beyond |alpha| = 1, a 6th-order polynomial inside
            s = 0.5 * (delta_up + delta_dn)
            a = 0.0625 * (delta_up - delta_dn)
            inside = alpha * (s + alpha * a * (15.0 + alpha**2 * (3.0 * alpha**2 - 10.0)))
            delta = jnp.where(
                alpha > 1.0, delta_up * alpha, jnp.where(alpha < -1.0, delta_dn * alpha, inside)
            )
            return pars["mu"] * self.signal + self.background + jnp.sum(delta, axis=0)

        def logpdf(self, pars: dict[str, jax.Array], data: tuple) -> jax.Array:
            main, aux = data
            rate = self.expected_main(pars)
            alpha = jnp.reshape(pars["alpha"], (-1,))
            poisson = jnp.sum(xlogy(main, rate) - rate - gammaln(main + 1.0))
            gauss = jnp.sum(-0.5 * (aux - alpha) ** 2 - 0.5 * jnp.log(2.0 * jnp.pi))
            return poisson + gauss

    return HistosysModel


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One benchmark point, sent to the child process as JSON."""

    impl: str
    metric: str
    bins: int
    nps: int


@dataclass
class Measurement:
    """What a child reports (times in seconds)."""

    value: float
    first_call_s: float | None = None
    median_s: float | None = None
    repeats: int = 0
    grad: list[float] = field(default_factory=list)
    fwd_median_s: float | None = None
    logpdf_check: float | None = None
    floor_s: float | None = None


Outcome = Measurement | str
"""A measurement, or why there is none: ``"timeout"``, ``"error"``."""


def _steady(function: Callable[[], Any], block: Callable[[Any], Any]) -> tuple[float, int]:
    """Median seconds per call over ≥ MIN_REPEATS calls and ≥ MIN_TOTAL_S seconds."""
    times: list[float] = []
    while len(times) < MIN_REPEATS or sum(times) < MIN_TOTAL_S:
        start = time.perf_counter()
        block(function())
        times.append(time.perf_counter() - start)
    return float(np.median(times)), len(times)


def _steady_with_floor(
    function: Callable[[], Any], floor: Callable[[], Any], block: Callable[[Any], Any]
) -> tuple[float, int, float]:
    """(median s, calls, floor median s): batches of FLOOR_BATCH calls of ``function`` and of
    ``floor`` in turn, until ``function`` has ≥ MIN_REPEATS calls and ≥ MIN_TOTAL_S seconds,
    so that a drift of the machine's speed during the measurement hits both alike."""
    times: list[float] = []
    floor_times: list[float] = []
    while len(times) < MIN_REPEATS or sum(times) < MIN_TOTAL_S:
        for target, timed in ((function, times), (floor, floor_times)):
            for _ in range(FLOOR_BATCH):
                start = time.perf_counter()
                block(target())
                timed.append(time.perf_counter() - start)
    return float(np.median(times)), len(times), float(np.median(floor_times))


def _time_jax(function: Callable[..., Any], *args: Any) -> tuple[Any, float, float, int]:
    """(result, first-call s, median s, repeats) of a jitted function."""
    import jax

    start = time.perf_counter()
    result = jax.block_until_ready(function(*args))
    first = time.perf_counter() - start
    median, repeats = _steady(lambda: function(*args), jax.block_until_ready)
    return result, first, median, repeats


def _neosx_objective(case: Case) -> Callable[..., Any]:
    import jax.numpy as jnp

    import neosx.infer as infer
    from neosx.histfactory import HistFactory

    model = HistFactory(build_spec(case.bins, case.nps))
    mask = jnp.asarray(shift_mask(case.bins, case.nps))
    names = np_names(case.nps)

    def yields(s: Any, b: Any) -> dict[str, Any]:
        # the (K, B) variations in one operation each, as the relaxed side builds them
        hi, lo = b * (1.0 + SHIFT * mask), b * (1.0 - SHIFT * mask)
        histosys = {name: {"hi_data": hi[k], "lo_data": lo[k]} for k, name in enumerate(names)}
        return {"SR": {"signal": s, "background": {"data": b, "histosys": histosys}}}

    if case.metric == "cls":
        return lambda s, b: infer.expected_cls(model, 1.0, yields=yields(s, b))
    if case.metric == "z0":
        return lambda s, b: infer.discovery_significance(model, yields=yields(s, b))
    return lambda s, b: infer.poi_uncertainty(model, 1.0, yields=yields(s, b))


def _relaxed_objective(case: Case) -> Callable[..., Any]:
    import jax.numpy as jnp
    import relaxed
    from jax.scipy.special import ndtri

    patch_relaxed()
    model_class = _relaxed_model_class()
    mask = jnp.asarray(shift_mask(case.bins, case.nps))
    n_nps = case.nps
    init = {"mu": jnp.asarray(1.0), "alpha": jnp.zeros(n_nps)}
    bounds = {"mu": (0.0, 10.0), "alpha": (-5.0, 5.0)}

    def setup(s: Any, b: Any, mu: float) -> tuple[Any, dict[str, Any], tuple]:
        model = model_class(s, b, b * (1.0 + SHIFT * mask), b * (1.0 - SHIFT * mask))
        pars = {"mu": jnp.asarray(mu), "alpha": jnp.zeros(n_nps)}
        return model, pars, (model.expected_main(pars), jnp.zeros(n_nps))

    def cls(s: Any, b: Any) -> Any:
        model, bonly, asimov = setup(s, b, 0.0)
        return relaxed.infer.hypotest(
            1.0,
            asimov,
            model,
            init_pars=init,
            bounds=bounds,
            test_stat="q",
            expected_pars=bonly,
        )

    def z0(s: Any, b: Any) -> Any:
        model, splusb, asimov = setup(s, b, 1.0)
        p0 = relaxed.infer.hypotest(
            0.0,
            asimov,
            model,
            init_pars=init,
            bounds=bounds,
            test_stat="q0",
            expected_pars=splusb,
        )
        return -ndtri(p0)

    def sigma_mu(s: Any, b: Any) -> Any:
        model, splusb, asimov = setup(s, b, 1.0)
        return relaxed.cramer_rao_uncert(model, splusb, asimov)["mu"]

    return {"cls": cls, "z0": z0, "sigma_mu": sigma_mu}[case.metric]


def _check_relaxed_likelihood(case: Case) -> float:
    """Largest |logpdf difference| of the relaxed-side model vs pyhf numpy at random points."""
    import jax.numpy as jnp
    import pyhf

    pyhf.set_backend("numpy")
    spec = build_spec(case.bins, case.nps)
    reference = pyhf.Model(spec, poi_name="mu")
    signal, background = nominal_yields(case.bins)
    mask = shift_mask(case.bins, case.nps)
    model = _relaxed_model_class()(
        jnp.asarray(signal),
        jnp.asarray(background),
        jnp.asarray(background * (1.0 + SHIFT * mask)),
        jnp.asarray(background * (1.0 - SHIFT * mask)),
    )
    rng = np.random.default_rng(1)
    config = reference.config
    worst = 0.0
    for _ in range(5):
        mu, alpha = rng.uniform(0.0, 3.0), rng.uniform(-2.0, 2.0, case.nps)
        aux = rng.normal(0.0, 1.0, case.nps)
        by_name = {"mu": mu} | dict(zip(np_names(case.nps), alpha, strict=True))
        pars = np.zeros(config.npars)
        for name, where in ((n, config.par_slice(n)) for n in config.par_order):
            pars[where] = by_name[name]
        aux_by_name = dict(zip(np_names(case.nps), aux, strict=True))
        main = reference.expected_data(pars, include_auxdata=False) * rng.uniform(0.8, 1.2)
        data = np.concatenate([main, [aux_by_name[n] for n in config.auxdata_order]])
        ours = model.logpdf(
            {"mu": jnp.asarray(mu), "alpha": jnp.asarray(alpha)},
            (jnp.asarray(main), jnp.asarray(aux)),
        )
        worst = max(worst, abs(float(ours) - float(reference.logpdf(pars, data)[0])))
    return worst


def _pyhf_case(case: Case) -> Measurement:
    import pyhf
    from scipy.stats import norm

    spec = build_spec(case.bins, case.nps)
    if case.metric == "sigma_mu":  # untimed reference: Hessian of pyhf's jax-backend logpdf
        import jax
        import jax.numpy as jnp

        pyhf.set_backend("jax")
        model = pyhf.Model(spec, poi_name="mu")
        pars = jnp.asarray(model.config.suggested_init(), jnp.float64)
        data = model.expected_data(pars)
        hess = jax.hessian(lambda p: model.logpdf(p, data)[0])(pars)
        covariance = jnp.linalg.inv(-hess)
        index = model.config.poi_index
        return Measurement(value=float(jnp.sqrt(covariance[index, index])))

    pyhf.set_backend("numpy")
    model = pyhf.Model(spec, poi_name="mu")
    pars = np.asarray(model.config.suggested_init(), np.float64)
    if case.metric == "cls":
        pars[model.config.poi_index] = 0.0
        data = model.expected_data(pars)

        def run() -> Any:
            return pyhf.infer.hypotest(
                1.0, data, model, test_stat="qtilde", return_expected_set=True
            )

        value = lambda result: float(result[1][2])  # noqa: E731
    else:
        pars[model.config.poi_index] = 1.0
        data = model.expected_data(pars)

        def run() -> Any:
            return pyhf.infer.hypotest(0.0, data, model, test_stat="q0")

        value = lambda result: float(norm.isf(float(result)))  # noqa: E731
    start = time.perf_counter()
    result = run()
    first = time.perf_counter() - start
    median, repeats = _steady(run, lambda r: r)
    return Measurement(value=value(result), first_call_s=first, median_s=median, repeats=repeats)


def run_case(case: Case, async_dispatch: bool, jit_options: dict[str, Any]) -> Measurement:
    """Measure one case in this process (the child side); ``jit_options`` are XLA compiler
    options passed to every ``jax.jit`` of the case (neosx's and relaxed's alike)."""
    warnings.filterwarnings("ignore", message="jsonschema.RefResolver is deprecated")
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_cpu_enable_async_dispatch", async_dispatch)
    if case.impl == "pyhf":
        return _pyhf_case(case)
    objective = (_neosx_objective if case.impl == "neosx" else _relaxed_objective)(case)
    signal, background = nominal_yields(case.bins)
    s, b = jax.device_put(jnp.asarray(signal)), jax.device_put(jnp.asarray(background))
    value_and_grad = jax.jit(
        jax.value_and_grad(objective, argnums=(0, 1)), compiler_options=jit_options or None
    )
    start = time.perf_counter()
    value, grads = jax.block_until_ready(value_and_grad(s, b))
    first = time.perf_counter() - start
    # compiled after that first call, which must include JAX's one-time start-up
    trivial = _floor_function(jit_options)
    jax.block_until_ready(trivial(s, b))
    median, repeats, floor = _steady_with_floor(
        lambda: value_and_grad(s, b), lambda: trivial(s, b), jax.block_until_ready
    )
    result = Measurement(
        value=float(value),
        first_call_s=first,
        median_s=median,
        repeats=repeats,
        grad=[float(g) for g in np.concatenate([np.asarray(grads[0]), np.asarray(grads[1])])],
        floor_s=floor,
    )
    if case.impl == "neosx" and case.metric != "sigma_mu":
        forward = jax.jit(objective, compiler_options=jit_options or None)
        _, _, result.fwd_median_s, _ = _time_jax(forward, s, b)
    if case.impl == "relaxed":
        result.logpdf_check = _check_relaxed_likelihood(case)
    return result


def _floor_function(jit_options: dict[str, Any]) -> Callable[..., Any]:
    """A jitted value+grad with the same arguments and outputs as the measured ones (a scalar
    and the two gradients) that does almost no arithmetic, ``s . b``: its time per call is
    JAX's dispatch and the harness's ``block_until_ready``, which every timed call pays."""
    import jax
    import jax.numpy as jnp

    return jax.jit(
        jax.value_and_grad(lambda s, b: jnp.vdot(s, b), argnums=(0, 1)),
        compiler_options=jit_options or None,
    )


def _jit_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["key=value", ...]`` as compiler options: true/false become booleans, integers ints."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        value: Any = {"true": True, "false": False}.get(text.lower(), text)
        if isinstance(value, str) and value.lstrip("-").isdigit():
            value = int(value)
        options[key] = value
    return options


def _run_child(
    case: Case, timeout_s: float, async_dispatch: bool, jit_options: Sequence[str]
) -> Outcome:
    """Run one case in a fresh interpreter, killing it past the time limit."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--case",
        json.dumps(asdict(case)),
        *(["--async-dispatch"] if async_dispatch else []),
        *(f"--jit-option={option}" for option in jit_options),
    ]
    try:
        child = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return "timeout"
    if child.returncode == 0:
        return Measurement(**json.loads(child.stdout.strip().splitlines()[-1]))
    print(
        f"  {case.impl} {case.metric} failed (exit {child.returncode}):\n{child.stderr[-3000:]}",
        file=sys.stderr,
    )
    return "error"


def _unavailable(impl: str) -> str | None:
    """Why an implementation cannot run in this environment, or None if it can."""
    module = {"neosx": "neosx.infer", "relaxed": "relaxed", "pyhf": "pyhf"}[impl]
    try:
        __import__(module)
    except ImportError as error:
        return f"{type(error).__name__}: {error}"
    return None


# --------------------------------------------------------------------------- report


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _header_lines(args: argparse.Namespace, skipped: dict[str, str]) -> list[str]:
    versions = ", ".join(
        f"{p} {_version(p)}" for p in ("neosx", "relaxed", "pyhf", "jaxopt", "equinox")
    )
    notes = "".join(f"; {impl} not run ({why})" for impl, why in skipped.items())
    dispatch = "async (JAX default)" if args.async_dispatch else "synchronous"
    return [
        "## Differentiable inference: value+grad w.r.t. the signal and background yields\n",
        f"- command: `{shlex.join(['python', *sys.argv])}`",
        *machine_lines(),
        f"- versions: {versions}{notes}; float64; JAX CPU dispatch: {dispatch}",
        f"- model: 1 channel, B bins; signal x mu ({SIGNAL_EVENTS:g} events, Gaussian bump);"
        f" background ({BACKGROUND_EVENTS:g} events, falling) with K histosys np0..np{{K-1}}:"
        f" np k shifts bin i by ±{SHIFT:.0%} iff i = k (mod min(B, K)); K + 1 parameters",
        "- neosx / relaxed: `jax.jit(jax.value_and_grad(f, argnums=(s, b)))`; 'compile s' ="
        " first call (trace + compile + run), fresh process per case; 'ms' = median steady-state"
        f" call (≥ {MIN_REPEATS} calls and ≥ {MIN_TOTAL_S} s); relaxed 0.4.0 with the one-line"
        " fixed_poi_fit fix and a jnp HistFactory module (see the script's docstring)",
        "- pyhf: numpy backend, forward only: `hypotest(1, asimov_bkg, qtilde,"
        " return_expected_set=True)` (median expected CLs) / `hypotest(0, asimov_sb, q0)` (Z0 ="
        " isf(p0)); 'pyhf/neosx' divides by the neosx value+grad time, 'pyhf/neosx fwd' by the"
        " jitted neosx forward time; sigma(mu): pyhf value from the Hessian of its jax-backend"
        " logpdf (untimed)",
        "- 'above floor': relaxed/neosx after subtracting from each median the per-call floor"
        " measured in the same process, in batches of calls taken in turn with the function's"
        " (a jitted value+grad of `s . b` with the same arguments and outputs: dispatch and"
        " `block_until_ready`)",
        f"- limit {args.timeout:g} s per case\n",
    ]


def _fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    milliseconds = seconds * 1e3
    return f"{milliseconds:.3g}" if milliseconds < 1e3 else f"{milliseconds:,.0f}"


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or denominator is None or denominator <= 0:
        return "n/a"
    return f"{numerator / denominator:.1f}x"


def _get(outcome: Outcome | None, attr: str) -> Any:
    return getattr(outcome, attr) if isinstance(outcome, Measurement) else None


def _grad_diff(a: Outcome | None, b: Outcome | None) -> float | None:
    ga, gb = np.asarray(_get(a, "grad") or []), np.asarray(_get(b, "grad") or [])
    if ga.size == 0 or ga.shape != gb.shape:
        return None
    scale = max(float(np.max(np.abs(ga))), 1e-300)
    return float(np.max(np.abs(ga - gb))) / scale


def _above_floor(outcome: Outcome | None) -> float | None:
    """Median value+grad time minus the same process's per-call floor (see _floor_function)."""
    median, floor = _get(outcome, "median_s"), _get(outcome, "floor_s")
    return None if median is None or floor is None else median - floor


def _floor_ratio(relaxed: Outcome | None, neosx: Outcome | None) -> str:
    """relaxed/neosx above the floor; 'at floor' where neosx's median is within its floor."""
    above = _above_floor(neosx)
    if above is not None and above <= 0:
        return "at floor"
    return _ratio(_above_floor(relaxed), above)


def _abs_diff(a: Outcome | None, b: Outcome | None) -> float | None:
    va, vb = _get(a, "value"), _get(b, "value")
    return None if va is None or vb is None else abs(va - vb)


def _sci(number: float | None) -> str:
    if number is None:
        return "n/a"
    return "nan" if math.isnan(number) else f"{number:.1e}"


def _cell(outcome: Outcome | None, attr: str, fmt: Callable[[Any], str]) -> str:
    if isinstance(outcome, str):
        return outcome
    value = _get(outcome, attr)
    return "n/a" if value is None else fmt(value)


Results = dict[tuple[str, int, int], dict[str, Outcome]]


def format_table(metric: str, results: Results, grid: Sequence[tuple[int, int]]) -> list[str]:
    header = [
        "bins",
        "NPs",
        "neosx compile s",
        "neosx ms",
        "relaxed compile s",
        "relaxed ms",
        "relaxed/neosx",
        "above floor",
        "pyhf ms (fwd)",
        "pyhf/neosx",
        "neosx fwd ms",
        "pyhf/neosx fwd",
        "value (neosx)",
        "\\|Δ\\| vs pyhf",
        "\\|Δ\\| relaxed",
        "rel. Δ∇ relaxed",
    ]
    lines = [
        f"### {METRIC_TITLES[metric]}\n",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for bins, nps in grid:
        row = results.get((metric, bins, nps), {})
        neosx, relaxed, pyhf = row.get("neosx"), row.get("relaxed"), row.get("pyhf")
        cells = [
            str(bins),
            str(nps),
            _cell(neosx, "first_call_s", lambda v: f"{v:.2f}"),
            _cell(neosx, "median_s", _fmt_ms),
            _cell(relaxed, "first_call_s", lambda v: f"{v:.2f}"),
            _cell(relaxed, "median_s", _fmt_ms),
            _ratio(_get(relaxed, "median_s"), _get(neosx, "median_s")),
            _floor_ratio(relaxed, neosx),
            _cell(pyhf, "median_s", _fmt_ms),
            _ratio(_get(pyhf, "median_s"), _get(neosx, "median_s")),
            _cell(neosx, "fwd_median_s", _fmt_ms),
            _ratio(_get(pyhf, "median_s"), _get(neosx, "fwd_median_s")),
            _cell(neosx, "value", lambda v: f"{v:.6g}"),
            _sci(_abs_diff(neosx, pyhf)),
            _sci(_abs_diff(neosx, relaxed)),
            _sci(_grad_diff(neosx, relaxed)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _targets(metric: str, results: Results, grid: Sequence[tuple[int, int]]) -> list[str]:
    def median(impl: str) -> Callable[[dict[str, Outcome]], float | None]:
        return lambda row: _get(row.get(impl), "median_s")

    def forward(row: dict[str, Outcome]) -> float | None:
        return _get(row.get("neosx"), "fwd_median_s")

    def above_floor(impl: str) -> Callable[[dict[str, Outcome]], float | None]:
        return lambda row: _above_floor(row.get(impl))

    checks = [
        ("relaxed / neosx (value+grad)", TARGET_RELAXED, median("relaxed"), median("neosx")),
        (
            "the same, each above its per-call floor",
            TARGET_RELAXED,
            above_floor("relaxed"),
            above_floor("neosx"),
        ),
    ]
    if metric != "sigma_mu":
        checks += [
            ("pyhf forward / neosx value+grad", TARGET_PYHF, median("pyhf"), median("neosx")),
            ("pyhf forward / neosx forward", TARGET_PYHF, median("pyhf"), forward),
        ]
    lines = []
    for label, target, numerator, denominator in checks:
        ratios, at_floor = {}, []
        for bins, nps in grid:
            row = results.get((metric, bins, nps), {})
            num, den = numerator(row), denominator(row)
            if num is not None and den is not None and den <= 0:
                at_floor.append(f"B={bins} K={nps}")  # neosx within its per-call floor
            elif num is not None and den:
                ratios[(bins, nps)] = num / den
        if not ratios and not at_floor:
            lines.append(f"- {label}: not measured")
            continue
        misses = [f"B={b} K={k}: {r:.1f}x" for (b, k), r in ratios.items() if r < target]
        measured = len(ratios) + len(at_floor)
        spread = (
            f" (min {min(ratios.values()):.1f}x, max {max(ratios.values()):.1f}x)" if ratios else ""
        )
        lines.append(
            f"- {label} ≥ {target:g}x: met on {measured - len(misses)} of {measured} rows"
            + spread
            + (f"; below target: {', '.join(misses)}" if misses else "")
            + (f"; neosx within its floor: {', '.join(at_floor)}" if at_floor else "")
        )
    return lines


def _accuracy_lines(results: Results) -> list[str]:
    checks = [
        _get(row.get("relaxed"), "logpdf_check")
        for row in results.values()
        if _get(row.get("relaxed"), "logpdf_check") is not None
    ]
    lines = []
    if checks:
        lines.append(
            "- relaxed-side likelihood (jnp module) vs pyhf numpy `Model.logpdf` at 5 random"
            f" points per case: max |Δ logpdf| = {max(checks):.1e}"
        )
    failed = [
        f"{metric} B={bins} K={nps} {impl}: {outcome}"
        for (metric, bins, nps), row in results.items()
        for impl, outcome in row.items()
        if isinstance(outcome, str)
    ]
    if failed:
        lines.append("- not measured: " + "; ".join(failed))
    return lines


# --------------------------------------------------------------------------- driver


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: (bins, NPs) in {QUICK_CASES}",
    )
    parser.add_argument("--bins", type=int, nargs="+", help=f"bin counts (default {FULL_BINS})")
    parser.add_argument("--nps", type=int, nargs="+", help=f"NP counts (default {FULL_NPS})")
    parser.add_argument(
        "--metrics",
        nargs="+",
        choices=METRICS,
        default=list(METRICS),
        help="figures of merit (default all)",
    )
    parser.add_argument(
        "--impls",
        nargs="+",
        choices=IMPLS,
        default=list(IMPLS),
        help="implementations (default all)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds per case (default 600)"
    )
    parser.add_argument(
        "--async-dispatch", action="store_true", help="keep JAX's default async CPU dispatch"
    )
    parser.add_argument(
        "--jit-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="XLA compiler option for every jax.jit of a case, e.g. "
        "xla_cpu_use_fusion_emitters=false (repeatable)",
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("bins", "nps"):
        if any(n < 1 for n in getattr(args, name) or ()):
            parser.error(f"--{name} must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the grid (or, with the internal ``--case``, one case) and print the report."""
    args = _parse_args(argv)
    if args.case is not None:
        case = Case(**json.loads(args.case))
        options = _jit_options(args.jit_option)
        print(json.dumps(asdict(run_case(case, args.async_dispatch, options))))
        return

    if args.quick and not (args.bins or args.nps):
        grid = list(QUICK_CASES)
    else:
        grid = [(b, k) for b in args.bins or FULL_BINS for k in args.nps or FULL_NPS]
    skipped = {impl: why for impl in args.impls if (why := _unavailable(impl))}
    for impl, why in skipped.items():
        print(f"note: {impl} is not importable here, its columns read n/a ({why})", file=sys.stderr)
    header = _header_lines(args, skipped)
    cases = [
        Case(impl, metric, bins, nps)
        for bins, nps in grid
        for metric in args.metrics
        for impl in args.impls
        if impl not in skipped
    ]
    results: Results = {}
    for index, case in enumerate(cases, start=1):
        print(
            f"[{index}/{len(cases)}] {case.impl} {case.metric} B={case.bins} K={case.nps}",
            end=" ... ",
            file=sys.stderr,
            flush=True,
        )
        outcome = _run_child(case, args.timeout, args.async_dispatch, args.jit_option)
        results.setdefault((case.metric, case.bins, case.nps), {})[case.impl] = outcome
        if isinstance(outcome, Measurement):
            text = f"value {outcome.value:.6g}"
            if outcome.median_s is not None:
                text += f", {_fmt_ms(outcome.median_s)} ms"
            if outcome.first_call_s is not None:
                text += f", first call {outcome.first_call_s:.2f} s"
        else:
            text = outcome
        print(text, file=sys.stderr, flush=True)

    lines = header
    for metric in args.metrics:
        lines += [*format_table(metric, results, grid), "", *_targets(metric, results, grid), ""]
    lines += ["### Checks\n", *_accuracy_lines(results)]
    print(*lines, sep="\n")


if __name__ == "__main__":
    main()
