"""The figures and yield tables of a post-fit report, drawn from its JSON by cabinetry and pyhf.

The pulls, the impact ranking and the pre- / post-fit data/MC plots are cabinetry's
(``cabinetry.visualize``), rebuilt from the numbers of the report; the yield tables are
cabinetry's (``cabinetry.tabulate.yields``); the CLs scan is pyhf's Brazil band
(``pyhf.contrib.viz.brazil.plot_results``). cabinetry draws with pyplot and sets its own
style globally: each figure is drawn inside its own ``matplotlib.rc_context`` (the Brazil band
in mplhep's ATLAS style, as :mod:`neosx.plot`) and closed once written.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import cabinetry
import matplotlib as mpl
import matplotlib.pyplot as plt
import mplhep
import numpy as np
import pyhf
import pyhf.contrib.viz.brazil
from matplotlib import style
from matplotlib.figure import Figure

from neosx.evaluate import pyhf_numpy
from neosx.report.fit import captured, fit_results
from neosx.runfolder import atomic_write

__all__ = ["report_figures", "write_figures", "yields_table"]

Record = Mapping[str, Any]
KINDS = {"prefit": "pre-fit", "postfit": "post-fit"}
"""Report key -> cabinetry's label of a model prediction."""


def report_figures(
    report: Record, model_data: tuple[pyhf.Model, Any] | None
) -> Iterator[tuple[str, Callable[[], Figure | None]]]:
    """The figures of one report, as ``(name, build)``; build returns None to skip one.

    Names: ``pulls``, ``ranking``, ``yields_<region>_prefit`` / ``_postfit`` (only with the
    workspace, whose model cabinetry's data/MC plot needs), ``brazil``. Sections missing
    from the report (a failed stage) give no figure.

    Args:
        report: A report (:func:`neosx.report.analysis_report`).
        model_data: cabinetry's ``(model, data)`` of the workspace it was computed from
            (:func:`_model_and_data`), or None.
    """
    if "fit" in report:
        yield "pulls", lambda: _pulls(report)
    if "ranking" in report:
        yield "ranking", lambda: _ranking(report)
    if "yields" in report and model_data is not None:
        for region in report["yields"]["regions"]:
            for kind in KINDS:
                yield (f"yields_{region}_{kind}",
                       lambda r=region, k=kind: _data_mc(report, model_data, r, k))
    if "brazil" in report:
        yield "brazil", lambda: _brazil(report["brazil"])


def write_figures(
    report: Record, workspace: Mapping[str, Any] | None, stem: Path, dpi: int
) -> list[Path]:
    """Write the figures of one report and its yield tables.

    Args:
        report: The report.
        workspace: The pyhf workspace it was computed from, or None.
        stem: Path prefix, e.g. ``RUN/report/optimised``.
        dpi: Resolution of the PNG files.

    Returns:
        The files written (``<stem>_<name>.png``, ``<stem>_yields.txt``).
    """
    written = []
    messages: Counter[str] = Counter()
    model_data = None
    if "yields" in report and workspace is not None:  # one model for every figure and table
        with captured(messages), pyhf_numpy():
            model_data = _model_and_data(workspace)
    for name, build in report_figures(report, model_data):
        look = style.context(mplhep.style.ATLAS) if name == "brazil" else mpl.rc_context()
        with look, captured(messages), pyhf_numpy():
            figure = build()
            if figure is None:
                continue
            path = stem.with_name(f"{stem.name}_{name}.png")
            try:
                atomic_write(path, lambda h, f=figure: f.savefig(h, format="png", dpi=dpi),
                             binary=True)
            finally:
                plt.close(figure)
        written.append(path)
    if model_data is not None:
        path = stem.with_name(f"{stem.name}_yields.txt")
        text = yields_table(report, model_data)
        atomic_write(path, lambda handle: handle.write(text))
        written.append(path)
    return written


def _prediction(report: Record, model: pyhf.Model, kind: str) -> Any:
    """cabinetry's ``ModelPrediction`` of ``kind`` (prefit / postfit) from the report."""
    regions = report["yields"]["regions"]
    samples = [*model.config.samples, "total"]
    per_region = [regions[region][kind] for region in model.config.channels]
    return cabinetry.model_utils.ModelPrediction(
        model,
        [[entry[s]["yields"] for s in model.config.samples] for entry in per_region],
        [[entry[s]["uncertainty"] for s in samples] for entry in per_region],
        [[entry[s]["sum_uncertainty"] for s in samples] for entry in per_region],
        KINDS[kind],
    )


def _model_and_data(workspace: Mapping[str, Any]) -> tuple[pyhf.Model, list[float]]:
    """cabinetry's model and data of a workspace (built once per report)."""
    return cabinetry.model_utils.model_and_data(dict(workspace))


def yields_table(report: Record, model_data: tuple[pyhf.Model, Any]) -> str:
    """The pre- and post-fit yield tables of a report (text, cabinetry's tables).

    Args:
        report: A report with a ``yields`` section.
        model_data: cabinetry's ``(model, data)`` of the workspace it was computed from.
    """
    parts = [f"Yields of the {report.get('analysis', '')} analysis. Data: {report['data']}."]
    model, data = model_data
    with captured(Counter()), pyhf_numpy(), tempfile.TemporaryDirectory() as folder:
        for kind, label in KINDS.items():
            cabinetry.tabulate.yields(
                _prediction(report, model, kind), data, per_bin=True, per_channel=True,
                table_folder=folder, table_format="simple", save_tables=True,
            )
            for what in ("bin", "channel"):
                path = Path(folder) / f"yields_per_{what}_{label}.txt"
                title = "per bin" if what == "bin" else "per region"
                parts += ["", f"{label} yields {title}:", "", path.read_text().rstrip("\n")]
    return "\n".join(parts) + "\n"


def _normalised(report: Record) -> cabinetry.fit.FitResults:
    """The fit with every constrained parameter as its pull +- its constraint.

    cabinetry's pull and ranking plots draw the best fit and uncertainty as they are, on an
    axis labelled (best - pre) / pre_unc: right for Gaussian parameters centred at 0, not for
    ``lumi``, ``staterror`` or ``shapesys`` (centred at 1). Unconstrained parameters are NaN.
    """
    results = fit_results(report["fit"])
    parameters = report["fit"]["parameters"]
    return results._replace(
        bestfit=np.array([_nan(p["pull"]) for p in parameters]),
        uncertainty=np.array([_nan(p["constraint"]) for p in parameters]),
    )


def _nan(value: float | None) -> float:
    return np.nan if value is None else float(value)


def _pulls(report: Record) -> Figure | None:
    """cabinetry's pull plot of the constrained parameters."""
    parameters = report["fit"]["parameters"]
    unconstrained = [p["name"] for p in parameters if p["pull"] is None]
    if len(unconstrained) == len(parameters):
        return None
    return cabinetry.visualize.pulls(
        _normalised(report), exclude=unconstrained, close_figure=False, save_figure=False
    )


def _ranking(report: Record) -> Figure | None:
    """cabinetry's impact ranking (largest post-fit impact on the POI first)."""
    impacts = report["ranking"]
    if not impacts:
        return None
    pulls = _normalised(report)
    index = {name: i for i, name in enumerate(pulls.labels)}
    rows = [index[p["name"]] for p in impacts]
    keys = ("prefit_up", "prefit_down", "postfit_up", "postfit_down")
    results = cabinetry.fit.RankingResults(
        bestfit=pulls.bestfit[rows], uncertainty=pulls.uncertainty[rows],
        labels=[p["name"] for p in impacts],
        **{key: np.array([p[key] for p in impacts], dtype=float) for key in keys},
    )
    return cabinetry.visualize.ranking(results, close_figure=False, save_figure=False)


def _data_mc(
    report: Record, model_data: tuple[pyhf.Model, Any], region: str, kind: str
) -> Figure:
    """cabinetry's data/MC plot of one region, pre- or post-fit."""
    model, data = model_data
    regions = report["yields"]["regions"]
    config = {"Regions": [
        {"Name": name, "Binning": entry["edges"], "Variable": "observable"}
        if "edges" in entry else {"Name": name}
        for name, entry in regions.items()
    ]}
    [drawn] = cabinetry.visualize.data_mc(
        _prediction(report, model, kind), data, config=config, channels=[region],
        close_figure=False, save_figure=False,
    )
    return drawn["figure"]


def _brazil(brazil: Record) -> Figure:
    """pyhf's Brazil band of CLs against mu, with the upper limits marked."""
    figure = Figure(figsize=(6.0, 5.0), layout="constrained")
    ax = figure.subplots()
    tests = [(obs, band) for obs, band in zip(
        brazil["cls_observed"], brazil["cls_expected"], strict=True)]
    pyhf.contrib.viz.brazil.plot_results(
        np.asarray(brazil["mu"]), tests, test_size=round(brazil["test_size"], 12), ax=ax
    )
    observed, expected = brazil["observed_limit"], brazil["expected_limits"][2]
    ax.axvline(observed, color="black", lw=1,
               label=rf"observed $\mu_{{up}}$ = {observed:.3g}")
    ax.axvline(expected, color="black", ls="--", lw=1,
               label=rf"expected $\mu_{{up}}$ = {expected:.3g}")
    ax.set(xlabel=r"$\mu$", ylabel=r"$\mathrm{CL}_s$", ylim=(0, 1.05))
    ax.legend(fontsize="small")
    return figure
