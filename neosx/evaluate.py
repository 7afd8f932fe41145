"""Hard evaluation: the trained analysis as a real cut-and-count analysis, judged by pyhf.

The analysis runs with ``hard=True`` on the held-out test events (step cuts, exact
histograms), its histograms become a ``pyhf.Workspace``, and **pyhf itself** (numpy backend,
scipy optimiser) gives the figures reported: the median expected CLs and its +-1, 2 sigma
band, the expected discovery significance Z0, and the median expected upper limit on mu.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np
import pyhf
from scipy.stats import norm

from neosx.analysis import Analysis, Params
from neosx.config import EvaluationConfig, StudyConfig

__all__ = [
    "evaluate_analysis",
    "evaluation_record",
    "failed_evaluations",
    "hard_figures",
    "hard_histograms",
    "hard_workspace",
    "pyhf_figures",
    "pyhf_numpy",
]


@contextlib.contextmanager
def pyhf_numpy() -> Iterator[None]:
    """pyhf's numpy backend with the scipy optimiser, restoring the previous backend after."""
    previous = pyhf.get_backend()
    pyhf.set_backend("numpy", "scipy")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="jsonschema.RefResolver is deprecated")
            yield
    finally:
        pyhf.set_backend(*previous)


def hard_histograms(
    analysis: Analysis, params: Params, events: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """The exact histograms of the analysis (expected events), as nested NumPy arrays.

    Args:
        analysis: The analysis.
        params: Its (trained) parameters.
        events: ``{event_set: (N, F)}`` test events.

    Returns:
        The yields in :meth:`Analysis.outputs` format, every array a ``numpy.ndarray``.
    """
    batch = {name: jax.numpy.asarray(array) for name, array in events.items()}
    yields = analysis(params, batch, hard=True)
    return jax.tree.map(np.asarray, yields)


def hard_workspace(
    analysis: Analysis, params: Params, events: Mapping[str, Any]
) -> dict[str, Any]:
    """The pyhf workspace of the hard analysis on ``events`` (see :meth:`Analysis.workspace`)."""
    return analysis.workspace(hard_histograms(analysis, params, events))[0]


def pyhf_figures(
    workspace: Mapping[str, Any], evaluation: EvaluationConfig, poi: str | None = None
) -> dict[str, Any]:
    """Expected CLs (median and band), Z0 and the expected upper limit, computed by pyhf.

    Args:
        workspace: A workspace whose observations are the background-only expectation
            (as :meth:`Analysis.workspace` writes it).
        evaluation: mu tested, confidence level, test statistic.
        poi: The POI they are about, on its background-only Asimov data (the other POIs at
            1, free in the fits); default: the measurement's, on the workspace's
            observations.

    Returns:
        ``{"cls": float, "cls_band": [5 floats, +2 sigma ... -2 sigma], "z0": float,
        "upper_limit": float, "upper_limit_band": [5 floats]}``.

    Raises:
        pyhf.exceptions.FailedMinimization: pyhf's fit failed.
    """
    with pyhf_numpy():
        ws = pyhf.Workspace(dict(workspace))
        if poi is None:
            model = ws.model()
            data = ws.data(model)
        else:  # its background-only Asimov data: the other POIs at their nominal 1
            model = ws.model(poi_name=poi)
            pars = np.asarray(model.config.suggested_init())
            pars[model.config.poi_index] = 0.0
            data = model.expected_data(pars)
        _, band = pyhf.infer.hypotest(
            evaluation.mu, data, model, test_stat=evaluation.test_stat,
            return_expected_set=True,
        )
        pars = np.asarray(model.config.suggested_init())
        pars[model.config.poi_index] = 1.0
        signal_plus_background = model.expected_data(pars)
        p0 = pyhf.infer.hypotest(0.0, signal_plus_background, model, test_stat="q0")
        _, limits = pyhf.infer.intervals.upper_limits.upper_limit(
            data, model, level=1.0 - evaluation.cl, test_stat=evaluation.test_stat
        )
    band = [float(v) for v in np.ravel(band)]
    return {
        "cls": band[2],
        "cls_band": band,
        "z0": float(norm.isf(float(p0))),
        "upper_limit": float(np.ravel(limits)[2]),
        "upper_limit_band": [float(v) for v in np.ravel(limits)],
    }


def hard_figures(
    analysis: Analysis, histograms: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """pyhf's figures of hard histograms and their workspace.

    Returns:
        ``(figures, workspace)``: the figures of the study's POI (:func:`pyhf_figures`),
        with several POIs ``figures["pois"]`` those of each other POI, and
        ``figures["merged_bins"]`` the bins merged for pyhf per region, if any. A failure
        of the workspace or of pyhf's fits is returned as ``({"status": "failed", "reason":
        ...}, None)`` instead of raised, so that the other analyses are still reported and
        nothing trained is lost.
    """
    config = analysis.config
    try:
        workspace, merged = analysis.workspace(histograms)
        figures = pyhf_figures(workspace, config.evaluation)
        if len(config.pois) > 1:
            figures["pois"] = {
                poi: pyhf_figures(workspace, config.evaluation, poi) for poi in config.pois[1:]
            }
    except Exception as error:  # pyhf's optimiser failing is data about this analysis
        reason = " ".join(str(error).split()) or "(no message)"
        return {"status": "failed", "reason": f"{type(error).__name__}: {reason}"}, None
    return (figures | {"merged_bins": merged} if merged else figures), workspace


def evaluate_analysis(
    analysis: Analysis, params: Params, events: Mapping[str, Any]
) -> dict[str, Any]:
    """One analysis evaluated hard: per region its edges, cut thresholds and histograms;
    pyhf's figures; the workspace (absent if the evaluation failed)."""
    histograms = hard_histograms(analysis, params, events)
    regions = {
        region.name: {
            "edges": [float(e) for e in region.edges(params["regions"][region.name])],
            "cuts": [float(t) for t in region.thresholds(params["regions"][region.name])],
            "histograms": jax.tree.map(lambda a: a.tolist(), histograms[region.name]),
        }
        for region in analysis.regions
    }
    figures, workspace = hard_figures(analysis, histograms)
    entry: dict[str, Any] = {"regions": regions, "figures": figures}
    return entry if workspace is None else entry | {"workspace": workspace}


def evaluation_record(config: StudyConfig, records: Mapping[str, Any]) -> dict[str, Any]:
    """The contents of ``evaluation.json``: the regions, samples and each analysis' record."""
    regions = []
    for region in config.analysis_regions:
        observable = region.observable
        regions.append({
            "name": region.name,
            "preselection": region.preselection,
            "observable": observable if isinstance(observable, str) else observable.feature,
            "cuts": [{"feature": c.feature, "keep": c.keep} for c in region.cuts],
        })
    return {
        "regions": regions,
        "samples": [{"name": s.name, "role": s.role} for s in config.samples],
        "test_events": config.data.test_events,
        "analyses": dict(records),
    }


def failed_evaluations(summary: Mapping[str, Any]) -> str:
    """One line naming each analysis whose hard evaluation failed and why ("" if none)."""
    return "; ".join(
        f"hard evaluation of {label} failed: {figures['reason']}"
        for label, figures in summary.items()
        if figures.get("status") == "failed"
    )
