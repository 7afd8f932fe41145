"""A scan's results: ``scan.csv`` (one row per job) and each figure against each axis.

The rows are read from the run folders (``run.json``, ``summary.json``) and the jobs'
outcomes; the figures are the hard ones of ``summary.json`` (pyhf on the test events) for
the optimised and the baseline analysis. A plot ``plots/<figure>_vs_<axis>.png`` shows the
mean of a figure over the jobs that differ only in ``seed`` at each value of the axis, with
their minimum and maximum as the error bar; one line per analysis and per combination of
the other axes.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mplhep
import numpy as np
from matplotlib import style
from matplotlib.figure import Figure

from neosx.scan.execute import Outcome
from neosx.scan.spec import UNSAFE, Job, Scan, override_text

__all__ = ["FIGURES", "job_rows", "plot_scan", "write_csv"]

FIGURES = {"cls": "median expected CLs", "z0": "expected Z0", "upper_limit": "expected μ_up"}
"""The hard figures of ``summary.json`` reported per analysis, with their axis labels."""

ANALYSES = ("optimised", "baseline")
"""The analyses whose figures are reported."""

SEED = "seed"
"""The axis that the plots average over."""

DPI = 120


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _value_text(key: str, value: Any) -> str:
    """An override's value as written on the command line (``z0``, ``0.05``, ``[4, 4]``)."""
    return override_text(key, value).partition("=")[2]


def _figure(summary: Mapping[str, Any], analysis: str, figure: str) -> float | None:
    value = summary.get(analysis, {}).get(figure)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def job_row(job: Job, axes: Sequence[str], outcome: Outcome) -> dict[str, Any]:
    """One row of ``scan.csv``: the job's overrides, status, wall time, figures, error."""
    info = _read_json(job.run_dir / "run.json")
    completed = outcome.status == "completed"
    summary = _read_json(job.run_dir / "summary.json") if completed else {}
    walls = info.get("wall_s", {})
    row: dict[str, Any] = {"job": job.name}
    row |= {key: _value_text(key, job.values[key]) if key in job.values else "" for key in axes}
    row |= {
        "status": outcome.status,
        "action": outcome.action,
        "wall_s": round(sum(walls.values()), 3) if isinstance(walls, dict) and walls else None,
    }
    for analysis in ANALYSES:
        row |= {f"{analysis}_{f}": _figure(summary, analysis, f) for f in FIGURES}
    return row | {"error": outcome.error, "run_dir": str(job.run_dir)}


def job_rows(scan: Scan, outcomes: Mapping[str, Outcome]) -> list[dict[str, Any]]:
    """The rows of ``scan.csv``, in the scan's job order."""
    return [job_row(job, scan.axes, outcomes[job.name]) for job in scan.jobs]


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``rows`` (same keys each) as CSV; a missing figure is an empty cell."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return path


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _series(
    scan: Scan, rows: Sequence[Mapping[str, Any]], axis: str, column: str
) -> dict[str, dict[Any, list[float]]]:
    """``{series label: {axis value: [figure of each seed]}}`` of the completed jobs."""
    others = [key for key in scan.axes if key not in (axis, SEED)]
    series: dict[str, dict[Any, list[float]]] = {}
    for job, row in zip(scan.jobs, rows, strict=True):
        if axis not in job.values or row[column] is None:
            continue
        label = ", ".join(f"{key}={row[key]}" for key in others if row[key] != "")
        points = series.setdefault(label, {})
        points.setdefault(_hashable(job.values[axis]), []).append(row[column])
    return series


def _hashable(value: Any) -> Any:
    return value if isinstance(value, int | float | str | bool) or value is None else str(value)


def _draw(scan: Scan, rows: Sequence[Mapping[str, Any]], axis: str, figure: str) -> Figure | None:
    """The plot of ``figure`` against ``axis`` (None when no completed job has both)."""
    lines = {a: _series(scan, rows, axis, f"{a}_{figure}") for a in ANALYSES}
    values = list(dict.fromkeys(x for s in lines.values() for p in s.values() for x in p))
    if not values:
        return None
    numeric = _numeric(values)
    position = {x: x if numeric else i for i, x in enumerate(values)}
    fig = Figure(figsize=(6.5, 5.0))
    ax = fig.subplots()
    for analysis, series in lines.items():
        for label, points in series.items():
            xs = sorted(points, key=lambda x: position[x])
            mean = np.array([np.mean(points[x]) for x in xs])
            low = mean - np.array([min(points[x]) for x in xs])
            high = np.array([max(points[x]) for x in xs]) - mean
            ax.errorbar(
                [position[x] for x in xs], mean, yerr=[low, high], marker="o", capsize=3,
                linestyle="none" if axis == SEED else "-",
                label=f"{analysis}, {label}" if label else analysis,
            )
    if not numeric or axis == SEED:
        ticks = sorted(position.values())
        ax.set_xticks(ticks, [str(x) for x in sorted(values, key=lambda x: position[x])])
    ax.margins(x=0.1)
    if figure == "cls":
        ax.set_yscale("log")
    spread = "mean, min-max over seeds" if SEED in scan.axes and axis != SEED else None
    ax.set_xlabel(axis)
    ax.set_ylabel(FIGURES[figure])
    ax.legend(fontsize="small", title=spread, title_fontsize="small")
    fig.tight_layout()
    return fig


def plot_scan(scan: Scan, rows: Sequence[Mapping[str, Any]]) -> list[Path]:
    """Write ``<out>/plots/<figure>_vs_<axis>.png`` for each figure and scanned axis.

    Returns:
        The paths written (a plot without any completed job is skipped).
    """
    written = []
    with style.context(mplhep.style.ATLAS):
        for axis in scan.axes:
            for figure in FIGURES:
                drawn = _draw(scan, rows, axis, figure)
                if drawn is None:
                    continue
                path = scan.out / "plots" / f"{figure}_vs_{UNSAFE.sub('_', axis)}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                drawn.savefig(path, dpi=DPI)
                written.append(path)
    return written
