"""The post-fit reports of a run folder: ``RUN/report/<analysis>.json`` and its figures.

Each analysis with a workspace gets ``report/<analysis>.json`` (:func:`analysis_report`,
strict JSON, in the manifest); an analysis whose hard evaluation failed gets a report with
``status: "failed"``. ``neosx plot`` adds ``report/<analysis>_<figure>.png`` and
``report/<analysis>_yields.txt``; a new report removes the figures of the one it replaces. A
report remembers the digest of its workspace, so that an evaluation that changes the
workspace without recomputing the report (``neosx run --resume``) removes it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from neosx.config import EvaluationConfig
from neosx.report.fit import analysis_report
from neosx.report.plots import write_figures
from neosx.runfolder import dumps, write_json

__all__ = ["REPORT_DIR", "discard_stale_reports", "plot_reports", "read_reports", "write_reports"]

REPORT_DIR = "report"
"""Folder of the reports inside a run folder."""


def _digest(workspace: Mapping[str, Any]) -> str:
    return hashlib.sha256(dumps(workspace, sort_keys=True).encode()).hexdigest()


def write_reports(
    run_dir: Path,
    workspaces: Mapping[str, Mapping[str, Any] | None],
    records: Mapping[str, Mapping[str, Any]],
    evaluation: EvaluationConfig,
) -> dict[str, Path]:
    """Compute and write the report of each analysis (``report/<analysis>.json``).

    Args:
        run_dir: The run folder (locked by the caller).
        workspaces: ``{analysis: pyhf workspace}``, None where the hard evaluation failed
            (``workspaces/<analysis>.json`` as written by :func:`neosx.evaluate_run`).
        records: The analyses' hard-evaluation records (``evaluation.json``): their
            expected upper limits set the mu range of the CLs scan, their edges the bins
            of the data/MC plots.
        evaluation: Confidence level and test statistic.

    Returns:
        ``{analysis: path of its report}``.
    """
    written = {}
    for label, workspace in workspaces.items():
        record = records.get(label, {})
        if workspace is None:
            report = {"status": "failed", "stage": "workspace",
                      "reason": "no workspace: the hard evaluation failed (see summary.json)"}
        else:
            band = record.get("figures", {}).get("upper_limit_band") or [None]
            finite = [v for v in band if isinstance(v, float)]
            report = analysis_report(
                workspace, evaluation,
                mu_max=1.25 * max(finite) if finite else None,
                edges=_pyhf_edges(record),
            )
            report = {"analysis": label, "workspace": f"workspaces/{label}.json",
                      "workspace_digest": _digest(workspace)} | report
        _remove(_files_of(run_dir, label))  # the figures of an earlier report
        written[label] = write_json(run_dir, f"{REPORT_DIR}/{label}.json",
                                    {"analysis": label} | report)
    return written


def _pyhf_edges(record: Mapping[str, Any]) -> dict[str, list[float]]:
    """The bin edges of each region of a hard-evaluation record, after pyhf's bin merging."""
    merged = record.get("figures", {}).get("merged_bins", {})
    edges = {}
    for region, entry in record.get("regions", {}).items():
        groups = merged.get(region)
        edges[region] = entry["edges"] if groups is None else [
            *(entry["edges"][group[0]] for group in groups), entry["edges"][groups[-1][-1] + 1]
        ]
    return edges


def read_reports(run_dir: Path) -> dict[str, dict[str, Any]]:
    """``{analysis: report}`` of the reports in ``run_dir / "report"`` (none: empty)."""
    folder = Path(run_dir) / REPORT_DIR
    paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
    return {path.stem: json.loads(path.read_text()) for path in paths}


def _files_of(run_dir: Path, label: str) -> list[Path]:
    folder = run_dir / REPORT_DIR
    return [folder / f"{label}.json", *folder.glob(f"{label}_*.png"),
            folder / f"{label}_yields.txt"]


def discard_stale_reports(
    run_dir: Path, workspaces: Mapping[str, Mapping[str, Any] | None]
) -> list[Path]:
    """Remove the reports (and their figures) of analyses whose workspace changed.

    Args:
        run_dir: The run folder (locked by the caller).
        workspaces: The analyses' current workspaces (None where evaluation failed).

    Returns:
        The files removed.
    """
    removed = []
    for label, report in read_reports(run_dir).items():
        workspace = workspaces.get(label)
        if workspace is None or report.get("workspace_digest") != _digest(workspace):
            removed += _remove(_files_of(run_dir, label))
    return removed


def _remove(paths: list[Path]) -> list[Path]:
    """Remove the files among ``paths`` that exist; return them."""
    removed = [path for path in paths if path.is_file()]
    for path in removed:
        path.unlink()
    return removed


def plot_reports(run_dir: str | Path, *, dpi: int = 120) -> list[Path]:
    """Draw the figures and yield tables of every report of a run folder.

    Args:
        run_dir: The run folder.
        dpi: Resolution of the PNG files.

    Returns:
        The files written (``report/<analysis>_{pulls,ranking,yields_<region>_prefit,
        yields_<region>_postfit,brazil}.png``, ``report/<analysis>_yields.txt``).
    """
    run_dir = Path(run_dir)
    written = []
    for label, report in read_reports(run_dir).items():
        path = run_dir / report.get("workspace", f"workspaces/{label}.json")
        workspace = json.loads(path.read_text()) if path.is_file() else None
        written += write_figures(report, workspace, run_dir / REPORT_DIR / label, dpi)
    return written
