"""A study from configuration to run folder: train, evaluate hard, export, plot.

A run folder holds everything needed to reproduce and inspect a result::

    config.yaml          the resolved configuration (after --set overrides)
    run.json             neosx and package versions, seed, command, status, wall times
    metrics.jsonl        one record per logged training step (and hard evaluations)
    checkpoints/<analysis>/step_XXXXXXX.npz
    evaluation.json      hard histograms, edges, cuts and pyhf figures per analysis
    summary.json         {"optimised": {cls, cls_band, z0, upper_limit, ...}, "baseline": ...}
    workspaces/<analysis>.json   pyhf workspaces of the hard analyses
    plots/*.png

The analyses are ``initial`` (the untrained starting point), ``optimised`` (trained on the
study's objective) and ``baseline`` (the same observable trained on BCE, by default).
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import jax
import yaml

from neosx.config import StudyConfig, load_config
from neosx.data import load_events
from neosx.evaluate import hard_histograms, hard_workspace, pyhf_figures
from neosx.infer.fit import require_float64
from neosx.pipeline import Analysis, Params
from neosx.train import latest_checkpoint, load_checkpoint, make_optimizer, train_analysis

__all__ = [
    "RunError",
    "RunResult",
    "evaluate_run",
    "export_workspace",
    "load_run",
    "run_study",
    "trained_params",
]

PACKAGES = ("neosx", "jax", "jaxlib", "optax", "pyhf", "numpy", "scipy", "pydantic")


class RunError(RuntimeError):
    """A run folder cannot be created, resumed or read (the message says why)."""


class RunResult(NamedTuple):
    """What :func:`run_study` produced.

    Attributes:
        run_dir: The run folder.
        status: ``"completed"`` or ``"stopped"`` (non-finite values in training).
        message: Why it stopped (empty when completed).
        summary: The hard figures per analysis (``summary.json``); empty when stopped.
    """

    run_dir: Path
    status: str
    message: str
    summary: dict[str, Any]


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")


def _prepare(run_dir: Path, overwrite: bool) -> None:
    """Create an empty run folder; an existing one is replaced only with ``overwrite``."""
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise RunError(
                f"run folder {run_dir} exists; pass --overwrite to replace it or "
                f"--resume {run_dir} to continue it"
            )
        if not (run_dir / "run.json").is_file():
            raise RunError(
                f"{run_dir} is not a neosx run folder (no run.json); refusing to overwrite it"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def load_run(run_dir: str | Path) -> tuple[StudyConfig, dict[str, Any]]:
    """The configuration of a run folder.

    Raises:
        RunError: The folder is not a neosx run folder.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise RunError(f"{run_dir} is not a neosx run folder (no config.yaml)")
    config, raw = load_config(run_dir / "config.yaml")
    return config, raw


def trained_params(analysis: Analysis, run_dir: Path, label: str) -> Params:
    """The parameters of the latest checkpoint of ``label``.

    Raises:
        RunError: No checkpoint of that analysis.
    """
    path = latest_checkpoint(run_dir / "checkpoints" / label)
    if path is None:
        raise RunError(f"{run_dir}: no checkpoint of the '{label}' analysis")
    params = analysis.initial_params()
    optimizer = make_optimizer(analysis.config.training.optimizer, analysis.config.training.steps)
    _, params, _ = load_checkpoint(path, (params, optimizer.init(params)))
    return params


def _labels(config: StudyConfig) -> tuple[str, ...]:
    return ("optimised", "baseline") if config.baseline.enabled else ("optimised",)


def _record(analysis: Analysis, params: Params, events: Mapping[str, Any]) -> dict[str, Any]:
    """Hard histograms, edges, cut thresholds and pyhf figures of one analysis."""
    histograms = hard_histograms(analysis, params, events)
    workspace = analysis.workspace(histograms)
    return {
        "edges": [float(e) for e in analysis.edges(params)],
        "cuts": [float(t) for t in analysis.thresholds(params)],
        "histograms": jax.tree.map(lambda a: a.tolist(), histograms)[analysis.config.channel],
        "figures": pyhf_figures(workspace, analysis.config.evaluation),
        "workspace": workspace,
    }


def evaluate_run(run_dir: str | Path) -> dict[str, Any]:
    """Evaluate every analysis of a run hard with pyhf; write the results.

    Writes ``evaluation.json``, ``summary.json`` and ``workspaces/<analysis>.json``.

    Returns:
        The summary ``{analysis: {"cls", "cls_band", "z0", "upper_limit", ...}}``.
    """
    run_dir = Path(run_dir)
    config, _ = load_run(run_dir)
    test_events = load_events(config.data, "test", config.seed)
    return _evaluate(Analysis.from_config(config), run_dir, test_events)


def _evaluate(
    analysis: Analysis, run_dir: Path, test_events: Mapping[str, Any]
) -> dict[str, Any]:
    """:func:`evaluate_run` with the analysis and the test events already at hand."""
    config = analysis.config
    params = {"initial": analysis.initial_params()}
    params |= {label: trained_params(analysis, run_dir, label) for label in _labels(config)}
    records = {label: _record(analysis, p, test_events) for label, p in params.items()}
    for label, record in records.items():
        _write_json(run_dir / "workspaces" / f"{label}.json", record.pop("workspace"))
    _write_json(
        run_dir / "evaluation.json",
        {
            "channel": config.channel,
            "samples": [{"name": s.name, "role": s.role} for s in config.samples],
            "cuts": [{"feature": c.feature, "keep": c.keep} for c in config.cuts],
            "test_events": config.data.test_events,
            "analyses": records,
        },
    )
    summary = {label: record["figures"] for label, record in records.items()}
    _write_json(run_dir / "summary.json", summary)
    return summary


def export_workspace(
    run_dir: str | Path, path: str | Path, *, analysis: str = "optimised", overwrite: bool = False
) -> Path:
    """Write the pyhf workspace of a run's hard analysis (``pyhf cls`` accepts it).

    The workspace is rebuilt from the run's checkpoint and test events, so it is exactly
    the analysis that ``summary.json`` reports.

    Raises:
        RunError: Unknown analysis label, or ``path`` exists and ``overwrite`` is False.
    """
    run_dir, path = Path(run_dir), Path(path)
    if path.exists() and not overwrite:
        raise RunError(f"{path} exists; pass --overwrite to replace it")
    config, _ = load_run(run_dir)
    labels = ("initial", *_labels(config))
    if analysis not in labels:
        raise RunError(f"unknown analysis {analysis!r}; this run has {list(labels)}")
    built = Analysis.from_config(config)
    if analysis == "initial":
        params = built.initial_params()
    else:
        params = trained_params(built, run_dir, analysis)
    events = load_events(config.data, "test", config.seed)
    _write_json(path, hard_workspace(built, params, events))
    return path


def run_study(
    config: StudyConfig,
    raw: Mapping[str, Any],
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    command: Sequence[str] | None = None,
) -> RunResult:
    """Train the optimised and baseline analyses, evaluate them hard, write the run folder.

    Args:
        config: The validated study.
        raw: Its resolved mapping (stored as ``config.yaml``).
        run_dir: The run folder.
        resume: Continue the run in ``run_dir`` from its checkpoints.
        overwrite: Replace an existing run folder.
        progress: Show progress bars.
        command: The command line, for ``run.json``.

    Returns:
        :class:`RunResult`.

    Raises:
        RunError: The folder exists (without ``overwrite`` / ``resume``) or cannot be
            resumed.
        RuntimeError: JAX's float64 mode is off (statistics need it).
    """
    require_float64()
    run_dir = Path(run_dir)
    if resume:
        if not (run_dir / "run.json").is_file():
            raise RunError(f"cannot resume {run_dir}: not a neosx run folder (no run.json)")
        info = json.loads((run_dir / "run.json").read_text())
    else:
        _prepare(run_dir, overwrite)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(dict(raw), sort_keys=False))
        info = {
            "study": config.name,
            "seed": config.seed,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": _versions(),
            "wall_s": {},
        }
    info |= {"command": list(command or sys.argv), "status": "running", "message": ""}
    _write_json(run_dir / "run.json", info)

    train_events = load_events(config.data, "train", config.seed)
    test_events = load_events(config.data, "test", config.seed)
    analysis = Analysis.from_config(config, train_events)

    def hard(params: Params) -> dict[str, Any]:
        return pyhf_figures(hard_workspace(analysis, params, test_events), config.evaluation)

    objectives = {"optimised": config.training.objective, "baseline": config.baseline.objective}
    steps = {"optimised": config.training.steps, "baseline": config.baseline.steps}
    for label in _labels(config):
        began = time.perf_counter()
        result = train_analysis(
            analysis,
            train_events,
            objective=objectives[label],
            training=config.training,
            evaluation=config.evaluation,
            seed=config.seed,
            run_dir=run_dir,
            label=label,
            steps=steps[label],
            resume=resume,
            progress=progress,
            hard_evaluation=hard,
        )
        info["wall_s"][label] = info["wall_s"].get(label, 0.0) + time.perf_counter() - began
        if result.status != "completed":
            info |= {"status": "stopped", "message": result.message}
            _write_json(run_dir / "run.json", info)
            return RunResult(run_dir, "stopped", result.message, {})
        _write_json(run_dir / "run.json", info)

    began = time.perf_counter()
    summary = _evaluate(analysis, run_dir, test_events)
    info["wall_s"]["evaluation"] = time.perf_counter() - began
    from neosx.plot import plot_run

    plot_run(run_dir)
    info["status"] = "completed"
    _write_json(run_dir / "run.json", info)
    return RunResult(run_dir, "completed", "", summary)
