"""The numbers of a post-fit report: cabinetry's fit, impacts and yields, pyhf's CLs scan.

Everything is computed by cabinetry and pyhf themselves on the analysis' pyhf workspace
(numpy backend): the maximum-likelihood fit (``cabinetry.fit.fit``, iminuit with Hesse
uncertainties), the impact ranking on the POI (the four fits per nuisance parameter of
``cabinetry.fit.ranking``, each made with ``cabinetry.fit.fit``), the pre- and post-fit
yields (``cabinetry.model_utils.prediction``) and CLs against mu with its expected band
(``pyhf.infer.intervals.upper_limits.upper_limit`` on a grid, Minuit's fits). The data
fitted are the workspace's observations: for a neosx workspace, the background-only Asimov
expectation (see :meth:`neosx.Analysis.workspace`).

Every fit has Minuit's own budget of function calls (:data:`MAX_CALLS`), and the CLs scan
has :data:`SCAN_POINTS` points inside the POI's bounds, so a report takes a bounded time on
any workspace; a fit that does not converge within its budget fails its stage, recorded
with the reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import cabinetry
import iminuit
import numpy as np
import pyhf
import scipy.optimize

from neosx.config import EvaluationConfig
from neosx.evaluate import pyhf_numpy

__all__ = [
    "DATA_FITTED",
    "MAX_CALLS",
    "SCAN_POINTS",
    "analysis_report",
    "captured",
    "fit_bounds",
    "fit_results",
]

DATA_FITTED = (
    "the workspace's observations: the background-only Asimov expectation of the hard "
    "analysis on the test events (mu = 0, every nuisance parameter at its nominal value) with "
    "the nominal auxiliary data, so mu_hat = 0 and the pulls are 0 up to the fit's tolerance; "
    "the uncertainties, constraints and impacts are the expected ones"
)
"""What the report's fits are fitted to (written into every report)."""

SCAN_POINTS = 31
"""mu values of the CLs scan (the Brazil band), from 0 to 1.25 x the +2 sigma expected limit
(at most the POI's upper bound)."""

MAX_CALLS: int | None = None
"""Minuit's budget of function calls per fit (MIGRAD's ``ncall``, for each of iminuit's up to
5 MIGRAD / SIMPLEX attempts), for cabinetry's fits and pyhf's CLs scan alike. None: Minuit's
own, ``200 + 100 n + 5 n**2`` for ``n`` free parameters, as cabinetry's fits have by default.

Not pyhf's default (100 000): where a MIGRAD step lands where a bin's expectation is
negative (-2 ln L is NaN; a histosys whose up and down variations differ by a factor 40
interpolates to negative yields inside its +-1 sigma), MIGRAD goes on with NaN parameters
until its budget is spent, then iminuit restarts it from the last valid point and it
converges, to the same minimum whatever the budget: 100 000 wasted calls (8 s on a
2-parameter model) for each of the two unconditional fits of each of the 31 points of the
scan."""

MAX_MESSAGES = 20
"""Distinct messages of cabinetry, iminuit and warnings kept in a report."""


@contextlib.contextmanager
def captured(messages: Counter[str]) -> Iterator[None]:
    """Keep cabinetry's and iminuit's output off the terminal; count its messages.

    cabinetry's log records of level WARNING and above, Python warnings, and what Minuit
    prints from C++ on the process' standard output (cabinetry switches its print level
    on) go into ``messages``; cabinetry's INFO records are dropped. iminuit's global print
    level is restored afterwards.

    Args:
        messages: Counts of the messages, updated in place.
    """
    logger = logging.getLogger("cabinetry")
    handler = _Collect(messages)
    saved = logger.level, logger.propagate
    print_level = iminuit.Minuit.print_level.fget(None)  # a global of iminuit, not per object
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        with tempfile.TemporaryFile() as sink, warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            sys.stdout.flush()
            stdout = os.dup(1)
            os.dup2(sink.fileno(), 1)
            try:
                yield
            finally:
                _flush_c_stdout()
                os.dup2(stdout, 1)
                os.close(stdout)
                sink.seek(0)
                lines = sink.read().decode(errors="replace").splitlines()
                messages.update(_NUMBERS.sub("[...]", ln.strip()) for ln in lines if ln.strip())
                messages.update(f"{w.category.__name__}: {w.message}" for w in seen)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        iminuit.Minuit.print_level.fset(None, print_level)


def _flush_c_stdout() -> None:
    """Flush what C and C++ (Minuit) buffered for standard output (where libc is found)."""
    with contextlib.suppress(OSError, TypeError, AttributeError):
        ctypes.CDLL(None).fflush(None)

_NUMBERS = re.compile(r"\[[^\]]*\]")
"""Parameter values in Minuit's messages (``FCN result is NaN for [ 0.1 -2 ]``), counted as one."""


class _Collect(logging.Handler):
    def __init__(self, messages: Counter[str]) -> None:
        super().__init__(logging.WARNING)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        self.messages[f"cabinetry: {record.getMessage()}"] += 1


def fit_bounds(model: pyhf.Model) -> list[tuple[float, float]]:
    """The parameter bounds of the report's fits: the model's, the POI's lower one lowered.

    On background-only data mu_hat = 0 would lie on the workspace's lower bound, where
    Hesse's uncertainty and the impacts are meaningless; the POI may go down to where a
    bin's expectation (the other parameters nominal) reaches zero, ``-min(b / s)``.

    Args:
        model: The pyhf model (numpy backend).

    Returns:
        ``[(low, high)]`` in the model's parameter order.
    """
    bounds = [tuple(map(float, bound)) for bound in model.config.suggested_bounds()]
    poi = model.config.poi_index
    pars = np.asarray(cabinetry.model_utils.asimov_parameters(model), dtype=float)
    pars[poi] = 0.0
    background = np.asarray(model.expected_actualdata(pars))
    pars[poi] = 1.0
    signal = np.asarray(model.expected_actualdata(pars)) - background
    if (signal > 0).any():
        lowest = -float(np.min(background[signal > 0] / signal[signal > 0]))
        bounds[poi] = (min(bounds[poi][0], lowest), bounds[poi][1])
    return bounds


def analysis_report(
    workspace: Mapping[str, Any],
    evaluation: EvaluationConfig,
    *,
    mu_max: float | None = None,
    edges: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """The post-fit report of one pyhf workspace, as JSON-ready data.

    Sections, computed in this order (a failure keeps the ones before it and is recorded
    as ``status: "failed"``, the ``stage`` and the ``reason``):

    - ``fit``: every parameter's pre-fit value and uncertainty, best fit and Hesse
      uncertainty, pull ``(best - pre) / pre_unc`` and constraint ``unc / pre_unc``
      (``None`` for unconstrained parameters); the correlation matrix; ``-2 ln L``.
    - ``ranking``: the impact of each nuisance parameter on the POI (pre-fit and post-fit,
      up and down; the variations that had to be clipped to the parameter's bounds in
      ``clipped``), largest post-fit impact first.
    - ``yields``: per region, the pre-fit (every parameter at its initial value, the POI at
      ``prefit_poi``) and post-fit yield and uncertainty of every sample and of their total,
      per bin and summed, and the data.
    - ``brazil``: observed and expected (5 quantiles, -2 ... +2 sigma) CLs on a mu grid and
      the upper limits interpolated on it; ``capped`` if the grid stops at the POI's upper
      bound before ``mu_max``.

    Each fit has Minuit's budget of function calls (:data:`MAX_CALLS`).

    Args:
        workspace: A pyhf workspace (JSON mapping), one measurement.
        evaluation: Confidence level and test statistic of the CLs scan.
        mu_max: End of the mu grid; default: 1.25 x pyhf's +2 sigma expected upper limit.
        edges: ``{region: bin edges}`` for the data/MC plots, used where they fit.

    Returns:
        ``{"status": "ok" | "failed", "data": DATA_FITTED, "poi", "bounds", "fit",
        "ranking", "yields", "brazil", "time_s", "messages"}``.
    """
    report: dict[str, Any] = {"status": "ok", "data": DATA_FITTED, "time_s": {}}
    messages: Counter[str] = Counter()
    stage = "model"
    try:
        with captured(messages), pyhf_numpy():
            model, data = cabinetry.model_utils.model_and_data(dict(workspace))
            bounds = fit_bounds(model)
            report |= {"poi": model.config.poi_name, "bounds": bounds}
            stages = (
                ("fit", lambda: _fit(model, data, bounds)),
                ("ranking", lambda: _ranking(model, data, report["fit"], bounds)),
                ("yields", lambda: _yields(model, data, report["fit"], edges or {})),
                ("brazil", lambda: _brazil(model, data, evaluation, mu_max)),
            )
            for stage, compute in stages:
                began = time.perf_counter()
                report[stage] = compute()
                report["time_s"][stage] = time.perf_counter() - began
    except Exception as error:  # a failed fit is data about this analysis
        reason = " ".join(str(error).split()) or "(no message)"
        if isinstance(error, pyhf.exceptions.FailedMinimization):
            reason += f" (Minuit's budget per fit: {_budget()} function calls)"
        report |= {"status": "failed", "stage": stage,
                   "reason": f"{type(error).__name__}: {reason}"}
    report["messages"] = [
        {"message": text, "count": count} for text, count in messages.most_common(MAX_MESSAGES)
    ]
    return report


def _budget() -> str:
    """:data:`MAX_CALLS` in words."""
    return "200 + 100 n + 5 n^2 (n free parameters)" if MAX_CALLS is None else str(MAX_CALLS)


def fit_results(fit: Mapping[str, Any]) -> cabinetry.fit.FitResults:
    """cabinetry's ``FitResults`` of a report's ``fit`` section."""
    parameters = fit["parameters"]
    return cabinetry.fit.FitResults(
        bestfit=np.array([p["bestfit"] for p in parameters], dtype=float),
        uncertainty=np.array([p["uncertainty"] for p in parameters], dtype=float),
        labels=[p["name"] for p in parameters],
        corr_mat=np.array(fit["correlation"], dtype=float),
        best_twice_nll=float(fit["twice_nll"]),
    )


def _fit(model: pyhf.Model, data: list[float], bounds: list[tuple[float, float]]) -> dict:
    result = cabinetry.fit.fit(model, data, par_bounds=bounds, maxiter=MAX_CALLS)
    prefit = np.asarray(cabinetry.model_utils.asimov_parameters(model), dtype=float)
    prefit_unc = np.asarray(cabinetry.model_utils.prefit_uncertainties(model), dtype=float)
    parameters = []
    for index, name in enumerate(result.labels):
        best, unc, sigma = result.bestfit[index], result.uncertainty[index], prefit_unc[index]
        constrained = sigma > 0
        parameters.append({
            "name": name,
            "prefit": float(prefit[index]),
            "prefit_uncertainty": float(sigma),
            "bestfit": float(best),
            "uncertainty": float(unc),
            "pull": float((best - prefit[index]) / sigma) if constrained else None,
            "constraint": float(unc / sigma) if constrained else None,
        })
    return {
        "parameters": parameters,
        "correlation": np.asarray(result.corr_mat, dtype=float).tolist(),
        "twice_nll": float(result.best_twice_nll),
    }


def _ranking(
    model: pyhf.Model, data: list[float], fit: Mapping[str, Any],
    bounds: list[tuple[float, float]],
) -> list[dict[str, Any]]:
    """The impacts of ``cabinetry.fit.ranking``, each variation kept inside its bounds.

    The same fits as cabinetry's (the parameter fixed at best fit +- its pre- or post-fit
    uncertainty, the others refitted from their initial values), but cabinetry 0.6 fails when
    a variation leaves the parameter's bounds (a Poisson-constrained ``shapesys`` parameter
    with a relative uncertainty of 100 %: scikit-hep/cabinetry#490); such a variation is
    clipped to the bound, as #490 proposes, and named in ``clipped``.
    """
    result = fit_results(fit)
    poi = model.config.poi_index
    prefit_unc = cabinetry.model_utils.prefit_uncertainties(model)
    impacts = []
    for i, name in enumerate(result.labels):
        if i == poi:
            continue
        best = float(result.bestfit[i])
        entry: dict[str, Any] = {"name": name, "bestfit": best,
                                 "uncertainty": float(result.uncertainty[i]), "clipped": []}
        for key, sigma in (("prefit_up", prefit_unc[i]), ("prefit_down", -prefit_unc[i]),
                           ("postfit_up", result.uncertainty[i]),
                           ("postfit_down", -result.uncertainty[i])):
            varied = float(np.clip(best + sigma, *bounds[i]))
            if varied != best + sigma:
                entry["clipped"].append(key)
            if varied == best:  # unconstrained (no pre-fit uncertainty) or fixed
                entry[key] = 0.0
                continue
            init, fixed = model.config.suggested_init(), model.config.suggested_fixed()
            init[i], fixed[i] = varied, True
            shifted = cabinetry.fit.fit(
                model, data, init_pars=init, fix_pars=fixed, par_bounds=bounds,
                maxiter=MAX_CALLS,
            )
            entry[key] = float(shifted.bestfit[poi] - result.bestfit[poi])
        impacts.append(entry)
    return sorted(impacts, key=lambda p: -max(abs(p["postfit_up"]), abs(p["postfit_down"])))


def _yields(
    model: pyhf.Model, data: list[float], fit: Mapping[str, Any],
    edges: Mapping[str, Sequence[float]],
) -> dict[str, Any]:
    predictions = {
        "prefit": cabinetry.model_utils.prediction(model),
        "postfit": cabinetry.model_utils.prediction(model, fit_results=fit_results(fit)),
    }
    observed = np.asarray(data[: model.config.nmaindata], dtype=float)
    samples = [*model.config.samples, "total"]
    regions = {}
    for c, region in enumerate(model.config.channels):
        entry: dict[str, Any] = {
            "data": observed[model.config.channel_slices[region]].tolist(),
        }
        bins = len(entry["data"])
        if region in edges and len(edges[region]) == bins + 1:
            entry["edges"] = [float(e) for e in edges[region]]
        for kind, prediction in predictions.items():
            per_sample = np.asarray(prediction.model_yields[c], dtype=float)
            yields = np.vstack([per_sample, per_sample.sum(axis=0)])
            stdev = np.asarray(prediction.total_stdev_model_bins[c], dtype=float)
            summed = np.asarray(prediction.total_stdev_model_channels[c], dtype=float)
            entry[kind] = {
                sample: {
                    "yields": yields[s].tolist(),
                    "uncertainty": stdev[s].tolist(),
                    "sum": float(yields[s].sum()),
                    "sum_uncertainty": float(summed[s]),
                }
                for s, sample in enumerate(samples)
            }
        regions[region] = entry
    prefit_poi = float(model.config.suggested_init()[model.config.poi_index])
    return {"samples": list(model.config.samples), "prefit_poi": prefit_poi, "regions": regions}


def _brazil(
    model: pyhf.Model, data: list[float], evaluation: EvaluationConfig, mu_max: float | None
) -> dict[str, Any]:
    """pyhf's CLs scan, its fits made by Minuit (as cabinetry's limits; on a 27-parameter model
    4-5x faster than scipy's SLSQP, CLs equal to 1e-4 relative), within :data:`MAX_CALLS`.

    The grid ends at ``mu_max`` (default: 1.25 x pyhf's +2 sigma expected limit) or at the
    POI's upper bound if that is lower (``capped``); a limit beyond the grid's end is pyhf's
    interpolation there: the grid's end.
    """
    level = 1.0 - evaluation.cl
    kwargs = {"level": level, "test_stat": evaluation.test_stat}
    high = float(model.config.suggested_bounds()[model.config.poi_index][1])
    tensorlib, optimizer = pyhf.get_backend()
    pyhf.set_backend(tensorlib, pyhf.optimize.minuit_optimizer(verbose=0, maxiter=MAX_CALLS))
    try:
        if mu_max is None or not np.isfinite(mu_max) or mu_max <= 0:
            mu_max = 1.25 * _expected_limit(model, data, high, **kwargs)
        capped = bool(mu_max > high)
        scan = np.linspace(0.0, min(mu_max, high), SCAN_POINTS)
        observed, expected, (_, results) = pyhf.infer.intervals.upper_limits.upper_limit(
            data, model, scan=scan, return_results=True, **kwargs
        )
    finally:
        pyhf.set_backend(tensorlib, optimizer)
    return {
        "optimizer": "minuit",
        "test_size": level,
        "test_stat": evaluation.test_stat,
        "mu": scan.tolist(),
        "capped": capped,
        "cls_observed": [float(np.ravel(obs)[0]) for obs, _ in results],
        "cls_expected": [[float(v) for v in np.ravel(band)] for _, band in results],
        "observed_limit": float(observed),
        "expected_limits": [float(v) for v in np.ravel(expected)],
    }


def _expected_limit(
    model: pyhf.Model, data: list[float], high: float, *, level: float, test_stat: str
) -> float:
    """pyhf's +2 sigma expected upper limit (to 1e-3 relative), or ``high`` if it lies beyond.

    pyhf's own search (``upper_limit`` without a scan) doubles the end of its bracket until
    every CLs there is below ``level``, without end on a model without sensitivity, then
    finds the 6 limits to 1e-4; here mu doubles from 1 up to ``high`` (the POI's upper
    bound) at most, then scipy's TOMS 748 (as pyhf's) finds the +2 sigma one in the bracket.
    """

    def excess(mu: float) -> float:  # the +2 sigma expected CLs less the test size
        _, band = pyhf.infer.hypotest(
            mu, data, model, test_stat=test_stat, return_expected_set=True
        )
        return float(np.ravel(band[-1])[0]) - level

    mu = min(1.0, high)
    while not excess(mu) < 0.0:  # NaN included: on to the bound
        if mu >= high:
            return high
        mu = min(2.0 * mu, high)
    return float(scipy.optimize.toms748(excess, 0.0, mu, rtol=1e-3, maxiter=100))
