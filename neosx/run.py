"""A study from configuration to run folder: train, evaluate hard, export, plot.

A run folder holds everything needed to reproduce and inspect a result::

    config.yaml          the resolved configuration (after --set overrides)
    run.json             neosx and package versions, seed, command (and those of resumes),
                         status (running / completed / stopped / interrupted / failed),
                         message, wall times accumulated over resumes
    metrics.jsonl        one record per logged training step (and hard evaluations)
    checkpoints/<analysis>/step_XXXXXXX.npz
    evaluation.json      hard histograms, edges, cuts and pyhf figures per analysis
    summary.json         {"optimised": {cls, cls_band, z0, upper_limit, ...}, "baseline": ...}
    workspaces/<analysis>.json   pyhf workspaces of the hard analyses
    report/<analysis>.json       post-fit report (cabinetry; ``neosx evaluate``, ``run --report``)
    report/<analysis>_*.png, _yields.txt   its figures and yield tables (``neosx plot``)
    plots/*.png
    manifest.json        every file above that neosx wrote (``--overwrite`` removes only those)

One process writes into a run folder at a time (a lock; see :mod:`neosx.runfolder`). The
analyses are ``initial`` (the untrained starting point), ``optimised`` (trained on the
study's objective) and ``baseline`` (the same observable trained on BCE, by default).
Whatever happens after training (pyhf failing on a hard analysis, an interrupt) keeps
the checkpoints, so ``neosx evaluate`` can redo the evaluation.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from neosx.analysis import Analysis, Params
from neosx.config import StudyConfig, load_config
from neosx.data import load_events
from neosx.evaluate import (
    evaluate_analysis,
    evaluation_record,
    failed_evaluations,
    hard_figures,
    hard_histograms,
    hard_workspace,
)
from neosx.infer.fit import require_float64
from neosx.runfolder import (
    LOCK,
    RunError,
    atomic_write,
    clear,
    locked,
    record,
    write_json,
)
from neosx.train import latest_checkpoint, load_checkpoint, make_optimizer, train_analysis

__all__ = [
    "RunError",
    "RunResult",
    "evaluate_run",
    "export_workspace",
    "failed_evaluations",
    "load_run",
    "run_study",
    "trained_params",
]

PACKAGES = ("neosx", "jax", "jaxlib", "optax", "pyhf", "numpy", "scipy", "pydantic")


class RunResult(NamedTuple):
    """What :func:`run_study` produced.

    Attributes:
        run_dir: The run folder.
        status: ``"completed"``; ``"stopped"`` (non-finite or diverging values in
            training); ``"interrupted"`` (Ctrl-C, checkpointed); ``"failed"`` (trained, but
            the hard evaluation of an analysis failed; ``neosx evaluate`` retries it).
        message: Why it did not complete (empty when completed).
        summary: The hard figures per analysis (``summary.json``); empty unless evaluated.
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


def _prepare(run_dir: Path, overwrite: bool) -> None:
    """Make ``run_dir`` (locked by the caller) ready for a new run.

    A non-empty folder is refused unless ``overwrite``; then exactly the files of its
    manifest are removed (a folder without one is refused). A user's own files are never
    removed or overwritten.
    """
    if any(path.name != LOCK for path in run_dir.iterdir()):
        if not overwrite:
            raise RunError(
                f"run folder {run_dir} exists; pass --overwrite to replace it or "
                f"--resume {run_dir} to continue it"
            )
        clear(run_dir)


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


def evaluate_run(run_dir: str | Path, *, report: bool = True) -> dict[str, Any]:
    """Evaluate every analysis of a run hard with pyhf; write the results.

    Writes ``evaluation.json``, ``summary.json`` and ``workspaces/<analysis>.json``, and with
    ``report`` the post-fit report of each analysis, ``report/<analysis>.json``
    (:func:`neosx.report.write_reports`); a run whose evaluation had failed becomes
    ``completed`` in ``run.json`` when it now succeeds. A failed report is recorded in its
    file and does not fail the evaluation.

    Returns:
        The summary ``{analysis: {"cls", "cls_band", "z0", "upper_limit", ...}}``; an
        analysis whose evaluation failed has ``{"status": "failed", "reason": ...}``.

    Raises:
        RunError: Not a run folder, or another process is writing into it.
    """
    run_dir = Path(run_dir)
    config, _ = load_run(run_dir)
    with locked(run_dir, "neosx evaluate"):
        test_events = load_events(config.data, "test", config.seed)
        summary = _evaluate(Analysis.from_config(config), run_dir, test_events, report=report)
        info_path = run_dir / "run.json"
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        if info.get("status") in ("completed", "failed"):
            failed = failed_evaluations(summary)
            _finish(run_dir, info, "failed" if failed else "completed", failed)
    return summary


def _evaluate(
    analysis: Analysis, run_dir: Path, test_events: Mapping[str, Any], *, report: bool
) -> dict[str, Any]:
    """:func:`evaluate_run` with the analysis and the test events already at hand.

    Without ``report``, the reports of analyses whose workspace changed are removed.
    """
    from neosx import report as post_fit

    config = analysis.config
    params = {"initial": analysis.initial_params()}
    params |= {label: trained_params(analysis, run_dir, label) for label in _labels(config)}
    records = {label: evaluate_analysis(analysis, p, test_events) for label, p in params.items()}
    workspaces = {label: entry.pop("workspace", None) for label, entry in records.items()}
    for label, workspace in workspaces.items():
        if workspace is not None:
            write_json(run_dir, f"workspaces/{label}.json", workspace)
    write_json(run_dir, "evaluation.json", evaluation_record(config, records))
    summary = {label: entry["figures"] for label, entry in records.items()}
    write_json(run_dir, "summary.json", summary)
    if report:
        post_fit.write_reports(run_dir, workspaces, records, config.evaluation)
    else:
        post_fit.discard_stale_reports(run_dir, workspaces)
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
    text = json.dumps(hard_workspace(built, params, events), indent=2) + "\n"
    try:
        atomic_write(path, lambda handle: handle.write(text))
    except OSError as error:
        raise RunError(f"cannot write {path}: {error.strerror}") from None
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
    report: bool = False,
) -> RunResult:
    """Train the optimised and baseline analyses, evaluate them hard, write the run folder.

    The folder is locked for the whole run. An interrupt (``KeyboardInterrupt``) checkpoints
    the step reached and returns status ``"interrupted"``; a hard evaluation that fails is
    recorded (status ``"failed"``) with every checkpoint kept.

    Args:
        config: The validated study.
        raw: Its resolved mapping (stored as ``config.yaml``).
        run_dir: The run folder.
        resume: Continue the run in ``run_dir`` from its checkpoints.
        overwrite: Replace an existing run folder (only the files neosx wrote).
        progress: Show progress bars.
        command: The command line, for ``run.json``.
        report: Also write the post-fit report of each analysis (cabinetry; the impact
            ranking costs four fits per nuisance parameter), as ``neosx evaluate`` does.

    Returns:
        :class:`RunResult`.

    Raises:
        RunError: The folder exists (without ``overwrite`` / ``resume``), is in use by
            another process, or cannot be resumed or written.
        RuntimeError: JAX's float64 mode is off (statistics need it).
    """
    require_float64()
    run_dir = Path(run_dir)
    command = list(command or sys.argv)
    if resume and not (run_dir / "run.json").is_file():
        raise RunError(f"cannot resume {run_dir}: not a neosx run folder (no run.json)")
    with locked(run_dir, "neosx run"):
        try:
            info = _start(run_dir, config, raw, command, resume=resume, overwrite=overwrite)
        except OSError as error:
            raise RunError(f"cannot write into run folder {run_dir}: {error.strerror}") from None
        try:
            status, message, summary = _train_and_evaluate(
                config, run_dir, info, resume=resume, progress=progress, report=report
            )
        except KeyboardInterrupt:
            status, message, summary = "interrupted", "interrupted; --resume continues it", {}
        except BaseException as error:
            _finish(run_dir, info, "failed", " ".join(str(error).split()))
            raise
        _finish(run_dir, info, status, message)
    return RunResult(run_dir, status, message, summary)


def _start(
    run_dir: Path, config: StudyConfig, raw: Mapping[str, Any], command: list[str], *,
    resume: bool, overwrite: bool,
) -> dict[str, Any]:
    """Prepare (or reopen) the locked folder; ``run.json`` as it stands at the start."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if resume:
        info = json.loads((run_dir / "run.json").read_text())
        info.setdefault("resumes", []).append({"command": command, "at": now})
    else:
        _prepare(run_dir, overwrite)
        config_path = run_dir / "config.yaml"
        text = yaml.safe_dump(dict(raw), sort_keys=False)
        atomic_write(config_path, lambda handle: handle.write(text))
        record(run_dir, [config_path])
        info = {
            "study": config.name,
            "seed": config.seed,
            "created": now,
            "command": command,
            "versions": _versions(),
            "wall_s": {},
        }
    info |= {"status": "running", "message": ""}
    write_json(run_dir, "run.json", info)
    return info


def _finish(run_dir: Path, info: dict[str, Any], status: str, message: str) -> None:
    """Record the run's final status (best effort: the folder may have become unwritable)."""
    info |= {"status": status, "message": message}
    try:
        write_json(run_dir, "run.json", info)
    except OSError:
        pass


def _train_and_evaluate(
    config: StudyConfig, run_dir: Path, info: dict[str, Any], *, resume: bool, progress: bool,
    report: bool,
) -> tuple[str, str, dict[str, Any]]:
    """The body of :func:`run_study`: ``(status, message, summary)``."""
    wall = info["wall_s"]

    def timed(phase: str, began: float) -> None:
        wall[phase] = wall.get(phase, 0.0) + time.perf_counter() - began
        write_json(run_dir, "run.json", info)

    train_events = load_events(config.data, "train", config.seed)
    test_events = load_events(config.data, "test", config.seed)
    analysis = Analysis.from_config(config, train_events)

    def hard(params: Params) -> dict[str, Any]:
        return hard_figures(analysis, hard_histograms(analysis, params, test_events))[0]

    objectives = {"optimised": config.training.objective, "baseline": config.baseline.objective}
    steps = {"optimised": config.training.steps, "baseline": config.baseline.steps}
    for label in _labels(config):
        began = time.perf_counter()
        try:
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
        finally:
            timed(label, began)
        if result.status != "completed":
            return result.status, result.message, {}

    began = time.perf_counter()
    try:
        summary = _evaluate(analysis, run_dir, test_events, report=report)
        from neosx.plot import plot_run

        record(run_dir, plot_run(run_dir))
    finally:
        timed("evaluation", began)
    failed = failed_evaluations(summary)
    return ("failed", failed, summary) if failed else ("completed", "", summary)
