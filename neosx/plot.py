"""Plots of a run folder: the training history and the final hard evaluation.

:func:`plot_run` only reads the run's ``metrics.jsonl`` (training, hard-evaluation and stop
records, one JSON object a line) and ``evaluation.json`` (the final histograms, cut thresholds
and pyhf figures of each analysis), and writes PNG files under ``run_dir / "plots"``.

Figures are built as :class:`matplotlib.figure.Figure` objects, outside pyplot's figure
registry, so any backend works and nothing is left open; the mplhep ATLAS style is applied
for the duration of the call only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import mplhep
import numpy as np
from matplotlib import style
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from neosx.report import plot_reports

__all__ = ["plot_run"]

DPI = 120
"""Resolution of the PNG files written."""

ANALYSIS_ORDER = ("initial", "optimised", "baseline")
"""Known analysis labels come first, in this order; others follow in order of appearance."""

MAX_COLUMNS = 3
"""Panels per row of a multi-panel figure."""

VARIATION_COLOURS = ("black", "dimgrey", "darkviolet", "darkgreen", "darkred", "navy")
"""Line colours of the histosys variations, apart from the stacked samples' fill colours."""

HEADROOM = 1.4
"""The y range of a histogram panel is this many times its automatic one, room for a legend."""

Record = Mapping[str, Any]


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write the run's plots under ``run_dir / "plots"`` and return their paths.

    Plots whose inputs are missing are skipped: without ``evaluation.json`` only the
    metrics plots (loss, objectives, CLs history) are written, without ``metrics.jsonl``
    only the evaluation plots, and ``cuts.png`` only when the analysis has cuts. The
    post-fit reports (``report/<analysis>.json``) are drawn into ``report/`` by
    :func:`neosx.report.plot_reports`.

    Args:
        run_dir: The run folder, holding ``metrics.jsonl`` and/or ``evaluation.json``.

    Returns:
        The paths of the files written, in the order written.

    Raises:
        FileNotFoundError: If the folder holds neither ``metrics.jsonl`` nor
            ``evaluation.json``.
    """
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.jsonl"
    evaluation_path = run_dir / "evaluation.json"
    if not metrics_path.is_file() and not evaluation_path.is_file():
        raise FileNotFoundError(f"{run_dir} holds neither metrics.jsonl nor evaluation.json")
    records = _read_metrics(metrics_path) if metrics_path.is_file() else []
    evaluation = json.loads(evaluation_path.read_text()) if evaluation_path.is_file() else {}

    training = _by_analysis(records, "loss")
    hard = _by_analysis(records, "hard")
    stops = _by_analysis(records, "stopped")
    analyses = {
        label: evaluation["analyses"][label] for label in _ordered(evaluation.get("analyses", {}))
    }
    colours = _colours([*training, *hard, *stops, *analyses])

    builders: list[tuple[str, Callable[[], Figure | None]]] = [
        ("loss.png", partial(_loss_figure, training, stops, colours)),
        ("objectives.png", partial(_objectives_figure, training, colours)),
        ("cls.png", partial(_cls_figure, training, hard, analyses, colours)),
        ("histograms.png", partial(_histograms_figure, evaluation, analyses)),
        ("cuts.png", partial(_cuts_figure, _cuts(evaluation), _thresholds(analyses), colours)),
        ("figures.png", partial(_figures_figure, analyses, colours)),
    ]
    out_dir = run_dir / "plots"
    written = []
    with style.context(mplhep.style.ATLAS):
        for name, build in builders:
            figure = build()
            if figure is None:
                continue
            out_dir.mkdir(exist_ok=True)
            figure.savefig(out_dir / name, dpi=DPI)
            written.append(out_dir / name)
    return written + plot_reports(run_dir, dpi=DPI)


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, skipping blank lines.

    Args:
        path: The file.

    Returns:
        One dict a record, in file order.
    """
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _ordered(labels: Iterable[str]) -> list[str]:
    """Unique analysis labels, the known ones first in ``ANALYSIS_ORDER``.

    Args:
        labels: Labels, possibly repeated.

    Returns:
        The unique labels; unknown ones keep their order of first appearance.
    """
    rank = {label: index for index, label in enumerate(ANALYSIS_ORDER)}
    return sorted(dict.fromkeys(labels), key=lambda label: rank.get(label, len(rank)))


def _by_analysis(records: Sequence[Record], key: str) -> dict[str, list[Record]]:
    """The records holding ``key``, grouped by analysis label and sorted by step.

    Args:
        records: All metrics records.
        key: The key that marks the kind of record (``"loss"``, ``"hard"``, ``"stopped"``).

    Returns:
        ``{label: records}`` with the labels in :func:`_ordered` order.
    """
    selected = [record for record in records if key in record]
    return {
        label: sorted(
            (record for record in selected if record["analysis"] == label),
            key=lambda record: record["step"],
        )
        for label in _ordered(record["analysis"] for record in selected)
    }


def _colours(labels: Iterable[str]) -> dict[str, str]:
    """One colour of the style's cycle per analysis label, the same in every plot.

    Args:
        labels: Analysis labels, possibly repeated.

    Returns:
        ``{label: "CN"}``.
    """
    return {label: f"C{index}" for index, label in enumerate(_ordered(labels))}


def _as_float(value: Any) -> float:
    """A JSON number as a float, ``null`` as NaN.

    Args:
        value: The number or None.

    Returns:
        The float.
    """
    return math.nan if value is None else float(value)


def _series(
    records: Sequence[Record], value: Callable[[Record], Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Steps and one value of a list of records.

    Args:
        records: The records.
        value: Picks the value out of a record.

    Returns:
        ``(steps, values)`` as float arrays, NaN where a value is null.
    """
    steps = np.array([record["step"] for record in records], dtype=float)
    values = np.array([_as_float(value(record)) for record in records])
    return steps, values


def _band_errors(centre: float, band: Any, sigma: int) -> tuple[float, float]:
    """Distances from a median to the ends of its +-``sigma`` expected band.

    Args:
        centre: The median.
        band: The five-point band (-2, -1, 0, +1, +2 sigma, either order), or None.
        sigma: 1 or 2.

    Returns:
        ``(below, above)``, both >= 0; ``(0, 0)`` without a valid band.
    """
    values = np.asarray(band, dtype=float)
    if values.shape != (5,) or not np.isfinite(values).all():
        return 0.0, 0.0
    ends = values[[2 - sigma, 2 + sigma]]
    return max(centre - ends.min(), 0.0), max(ends.max() - centre, 0.0)


def _figure(panels: int, width: float = 6.0, height: float = 5.0) -> tuple[Figure, list[Axes]]:
    """A figure with ``panels`` axes, at most ``MAX_COLUMNS`` a row.

    Args:
        panels: Number of axes (>= 1).
        width: Width of one panel (inches).
        height: Height of one panel (inches).

    Returns:
        The figure and its axes, row by row.
    """
    columns = min(panels, MAX_COLUMNS)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    axes = list(figure.subplots(rows, columns, squeeze=False).ravel())
    for unused in axes[panels:]:
        figure.delaxes(unused)
    return figure, axes[:panels]


def _legend(ax: Axes, **kwargs: Any) -> None:
    """Draw the legend of an axes if anything in it is labelled.

    Args:
        ax: The axes.
        **kwargs: Passed to :meth:`Axes.legend`.
    """
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", **kwargs)


def _step_axis(ax: Axes, ylabel: str) -> None:
    """Label a history panel, with a margin so that points on the first or last step show.

    Args:
        ax: The axes.
        ylabel: The y axis label.
    """
    ax.margins(x=0.03)
    ax.set(xlabel="step", ylabel=ylabel)


def _plot_history(ax: Axes, steps: np.ndarray, values: np.ndarray, **kwargs: Any) -> None:
    """A value against step, as a line, or as a marker when there is a single point.

    Args:
        ax: The axes.
        steps: The steps.
        values: The values.
        **kwargs: Passed to :meth:`Axes.plot`.
    """
    ax.plot(steps, values, marker="o" if steps.size == 1 else "", **kwargs)


def _loss_figure(
    training: Mapping[str, Sequence[Record]],
    stops: Mapping[str, Sequence[Record]],
    colours: Mapping[str, str],
) -> Figure | None:
    """The training loss against step, one line per analysis, early stops marked.

    Args:
        training: Training records by analysis.
        stops: Stop records by analysis.
        colours: Colour of each analysis.

    Returns:
        The figure, or None without training records.
    """
    if not training:
        return None
    figure, [ax] = _figure(1)
    for label, records in training.items():
        _plot_history(ax, *_series(records, lambda r: r["loss"]), color=colours[label], label=label)
    for label, records in stops.items():
        for record in records:
            ax.axvline(record["step"], color=colours[label], ls=":", label=f"{label} stopped")
    _step_axis(ax, "loss")
    _legend(ax)
    return figure


def _objectives_figure(
    training: Mapping[str, Sequence[Record]], colours: Mapping[str, str]
) -> Figure | None:
    """Each objective figure against step, one panel per objective name.

    Args:
        training: Training records by analysis.
        colours: Colour of each analysis.

    Returns:
        The figure, or None when no record holds an objective.
    """
    names = list(
        dict.fromkeys(
            name
            for records in training.values()
            for record in records
            for name in record.get("objectives", {})
        )
    )
    if not names:
        return None
    figure, axes = _figure(len(names))
    for ax, name in zip(axes, names, strict=True):
        for label, records in training.items():
            having = [record for record in records if name in record.get("objectives", {})]
            if having:
                steps, values = _series(having, lambda r, key=name: r["objectives"][key])
                _plot_history(ax, steps, values, color=colours[label], label=label)
        _step_axis(ax, name)
        _legend(ax)
    return figure


def _cls_figure(
    training: Mapping[str, Sequence[Record]],
    hard: Mapping[str, Sequence[Record]],
    analyses: Mapping[str, Record],
    colours: Mapping[str, str],
) -> Figure | None:
    """CLs against step: soft (training) and hard (pyhf) values, and the final hard CLs.

    Only positive values are drawn (log scale); the hard points carry their +-1 sigma band.

    Args:
        training: Training records by analysis.
        hard: Hard-evaluation records by analysis.
        analyses: The analyses of ``evaluation.json``.
        colours: Colour of each analysis.

    Returns:
        The figure, or None when there is no positive CLs to draw.
    """
    figure, [ax] = _figure(1)
    for label, records in training.items():
        having = [record for record in records if "cls" in record.get("objectives", {})]
        steps, values = _series(having, lambda r: r["objectives"]["cls"])
        keep = values > 0
        if keep.any():
            _plot_history(
                ax, steps[keep], values[keep], color=colours[label], label=f"{label} (soft)"
            )
    for label, records in hard.items():
        steps, values = _series(records, lambda r: r["hard"].get("cls"))
        keep = values > 0
        if keep.any():
            errors = [
                _band_errors(value, record["hard"].get("cls_band"), 1)
                for value, record, kept in zip(values, records, keep, strict=True)
                if kept
            ]
            ax.errorbar(
                steps[keep],
                values[keep],
                yerr=np.transpose(errors),
                fmt="o",
                capsize=3,
                color=colours[label],
                label=f"{label} (hard)",
            )
    for label, analysis in analyses.items():
        final = _as_float(analysis.get("figures", {}).get("cls"))
        if final > 0:
            ax.axhline(final, color=colours[label], ls="--", label=f"{label} final")
    if not ax.get_legend_handles_labels()[0]:
        return None
    ax.set_yscale("log")
    _step_axis(ax, "CLs")
    _legend(ax)
    return figure


def _cuts(evaluation: Record) -> list[Record]:
    """Every region's cuts, one list (``feature``, ``keep``, ``region``)."""
    regions = evaluation.get("regions", [])
    return [
        cut | {"region": region["name"]} if len(regions) > 1 else cut
        for region in regions for cut in region.get("cuts", [])
    ]


def _thresholds(analyses: Mapping[str, Record]) -> dict[str, Record]:
    """Each analysis with its cut thresholds of every region in one ``cuts`` list."""
    return {
        label: {"cuts": [t for r in analysis.get("regions", {}).values() for t in r["cuts"]]}
        for label, analysis in analyses.items()
    }


def _histograms_figure(evaluation: Record, analyses: Mapping[str, Record]) -> Figure | None:
    """The final histograms of each analysis in each region (one panel per analysis and
    region): stacked backgrounds with the signal on top.

    Args:
        evaluation: The contents of ``evaluation.json``.
        analyses: Its analyses, in plotting order.

    Returns:
        The figure, or None without analyses.
    """
    if not analyses:
        return None
    roles = {sample["name"]: sample.get("role") for sample in evaluation.get("samples", [])}
    regions = evaluation.get("regions", [])
    panels = [(label, a, region) for label, a in analyses.items() for region in regions]
    if not panels:
        return None
    figure, axes = _figure(len(panels))
    for ax, (label, analysis, region) in zip(axes, panels, strict=True):
        _draw_stack(ax, analysis.get("regions", {}).get(region["name"], {}), roles)
        cls = _as_float(analysis.get("figures", {}).get("cls"))
        title = f"{label}: CLs = {cls:.3g}" if math.isfinite(cls) else label
        ax.set_title(f"{title} ({region['name']})" if len(regions) > 1 else title)
        observable = region.get("observable", "score")
        xlabel = {"score": "observable", "count": "selected events"}.get(observable, observable)
        ax.set(xlabel=f"{region['name']} {xlabel}", ylabel="events / bin")
        ax.set_ylim(0, HEADROOM * max(ax.get_ylim()[1], 1e-9))
        _legend(ax, loc="upper right")
    return figure


def _draw_stack(ax: Axes, analysis: Record, roles: Mapping[str, str | None]) -> None:
    """Stack of one analysis' histograms, its MC statistical band and histosys variations.

    Backgrounds are stacked first and signals on top. Each histosys modifier is drawn as the
    total stack with every sample it affects moved to its up (or down) template. The
    ``staterror`` ``sumw2`` of all samples give a hatched band around the total.

    Args:
        ax: The axes.
        analysis: One analysis of ``evaluation.json`` (``edges`` and ``histograms``).
        roles: ``{sample: role}``; samples not listed count as backgrounds.
    """
    histograms = analysis.get("histograms", {})
    names = sorted(histograms, key=lambda name: roles.get(name) == "signal")
    if not names or "edges" not in analysis:
        return
    edges = np.asarray(analysis["edges"], dtype=float)
    nominal = {name: np.asarray(histograms[name]["data"], dtype=float) for name in names}
    mplhep.histplot(
        [nominal[name] for name in names],
        edges,
        stack=True,
        histtype="fill",
        label=names,
        ax=ax,
        flow="none",
    )
    total = np.sum(list(nominal.values()), axis=0)
    sumw2 = [
        np.asarray(staterror["sumw2"], dtype=float)
        for name in names
        for kind in ("staterror", "shapesys")
        for staterror in histograms[name].get(kind, {}).values()
    ]
    if sumw2:
        error = np.sqrt(np.sum(sumw2, axis=0))
        ax.stairs(
            total + error,
            edges,
            baseline=total - error,
            fill=True,
            facecolor="none",
            edgecolor="grey",
            hatch="///",
            linewidth=0,
            label="MC stat. unc.",
        )
    systematics = list(
        dict.fromkeys(
            modifier for name in names for modifier in histograms[name].get("histosys", {})
        )
    )
    for index, modifier in enumerate(systematics):
        colour = VARIATION_COLOURS[index % len(VARIATION_COLOURS)]
        for side, label in (("hi_data", f"{modifier} $\\pm1\\sigma$"), ("lo_data", None)):
            shifted = total + sum(
                np.asarray(histograms[name]["histosys"][modifier][side], dtype=float)
                - nominal[name]
                for name in names
                if modifier in histograms[name].get("histosys", {})
            )
            ax.stairs(shifted, edges, color=colour, ls="--", label=label)


def _cuts_figure(
    cuts: Sequence[Record], analyses: Mapping[str, Record], colours: Mapping[str, str]
) -> Figure | None:
    """The cut thresholds of each analysis, one panel per cut.

    Args:
        cuts: The cut descriptions of ``evaluation.json`` (``feature``, ``keep``).
        analyses: The analyses, each with a ``cuts`` list of thresholds.
        colours: Colour of each analysis.

    Returns:
        The figure, or None without cuts or analyses.
    """
    if not cuts or not analyses:
        return None
    figure, axes = _figure(len(cuts), width=4.5, height=4.0)
    for index, (ax, cut) in enumerate(zip(axes, cuts, strict=True)):
        for position, (label, analysis) in enumerate(analyses.items()):
            thresholds = analysis.get("cuts", [])
            if index < len(thresholds):
                values = np.ravel(np.asarray(thresholds[index], dtype=float))
                ax.plot(np.full(values.size, position), values, "o", color=colours[label])
        _categorical_axis(ax, list(analyses))
        where = f"{cut['region']}: " if "region" in cut else ""
        ax.set(ylabel="threshold", title=f"{where}{cut['feature']} (keep {cut['keep']})")
    return figure


def _figures_figure(analyses: Mapping[str, Record], colours: Mapping[str, str]) -> Figure | None:
    """The hard figures of each analysis: CLs and upper limit with their bands, and Z0.

    Bands are drawn as error bars, thick for +-1 sigma and thin for +-2 sigma.

    Args:
        analyses: The analyses of ``evaluation.json``, each with ``figures``.
        colours: Colour of each analysis.

    Returns:
        The figure, or None without analyses.
    """
    if not analyses:
        return None
    panels = (
        ("cls", "cls_band", "expected CLs", True),
        ("z0", None, "expected $Z_0$", False),
        ("upper_limit", "upper_limit_band", r"expected upper limit on $\mu$", False),
    )
    figure, axes = _figure(len(panels), width=4.5, height=4.5)
    for ax, (key, band_key, title, log) in zip(axes, panels, strict=True):
        for position, (label, analysis) in enumerate(analyses.items()):
            figures = analysis.get("figures", {})
            centre = _as_float(figures.get(key))
            if not math.isfinite(centre) or (log and centre <= 0):
                continue
            if band_key is not None:
                for sigma, width in ((2, 1.0), (1, 3.0)):
                    below, above = _band_errors(centre, figures.get(band_key), sigma)
                    ax.errorbar(
                        position,
                        centre,
                        yerr=[[below], [above]],
                        fmt="none",
                        elinewidth=width,
                        ecolor=colours[label],
                    )
            ax.plot(position, centre, "o", color=colours[label])
        if log and ax.has_data():
            ax.set_yscale("log")
        _categorical_axis(ax, list(analyses))
        ax.set_title(title)
    return figure


def _categorical_axis(ax: Axes, labels: Sequence[str]) -> None:
    """Label the x axis with analysis names at positions 0, 1, ...

    Args:
        ax: The axes.
        labels: The names.
    """
    ax.set_xticks(range(len(labels)), labels)
    ax.tick_params(axis="x", which="minor", bottom=False, top=False)
    ax.set_xlim(-0.5, len(labels) - 0.5)
