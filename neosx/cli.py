"""The ``neosx`` command line: one command per user action, each a thin call into the library.

Exit codes: 0 success; 1 a run that stopped on non-finite or diverging values, whose hard
evaluation failed, or another runtime failure (the message says what); 2 invalid input
(configuration, arguments, run folder), reported in one line without a traceback; 130 an
interrupted run, by Ctrl-C (checkpointed: ``--resume`` continues it); 143 an interrupted run,
by SIGTERM (checkpointed the same way).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import click

from neosx.config import ConfigError, load_config

__all__ = ["main"]


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"neosx: error: {message}", err=True)
    sys.exit(code)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[list[int]]:
    """SIGTERM (a batch system's stop) is handled like Ctrl-C: checkpoint, then stop.

    Yields a list that holds the signal number once one arrived.
    """
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def _default_compile_cache() -> Path:
    """``$XDG_CACHE_HOME/neosx/xla``, or ``~/.cache/neosx/xla``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "neosx" / "xla"


def _setup_jax() -> None:
    """Statistics need float64: the CLI switches JAX's x64 mode on (the library never does).

    It also keeps XLA's compiled programs on disk (``--compile-cache``), every one of them: a
    later run of the same study, or of one that differs only in values that are not shapes,
    loads them instead of compiling again (the default study: 17.3 s -> 12.2 s). The cached
    programs are XLA's own, so results are bit for bit the same.
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    setting = click.get_current_context().find_root().params.get("compile_cache")
    if setting != "off":
        directory = Path(setting) if setting else _default_compile_cache()
        jax.config.update("jax_compilation_cache_dir", str(directory))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _summary_table(summary: dict[str, Any], cl: float) -> str:
    """The hard figures of each analysis as a small text table."""
    limit = f"mu_up ({100 * cl:g}%)"
    rows = [f"{'analysis':<10} {'CLs (median)':>13} {'Z0':>8} {limit:>12}"]
    for label, figures in summary.items():
        if figures.get("status") == "failed":
            rows.append(f"{label:<10} hard evaluation failed (see summary.json)")
            continue
        rows.append(
            f"{label:<10} {figures['cls']:>13.4g} {figures['z0']:>8.3f} "
            f"{figures['upper_limit']:>12.4g}"
        )
    return "\n".join(rows)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="neosx")
@click.option("--compile-cache", metavar="DIR|off", envvar="NEOSX_COMPILE_CACHE",
              help="Keep XLA's compiled programs in DIR, so that running a study again skips "
              "most compilation (default: $XDG_CACHE_HOME/neosx/xla, else ~/.cache/neosx/xla; "
              "'off': compile every time). Also read from $NEOSX_COMPILE_CACHE.")
def main(compile_cache: str | None) -> None:
    """neosx: optimise a HEP analysis end to end with gradients, then evaluate it hard."""


@main.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Run folder (default: runs/<study name>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a configuration field, e.g. --set training.steps=50 (repeatable).")
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path),
              help="Continue the run in this folder from its last checkpoints.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
@click.option("--report", is_flag=True,
              help="Also write the post-fit report of each analysis into RUN/report, as "
              "`neosx evaluate` does (its impact ranking costs four fits per nuisance "
              "parameter, so it is off by default).")
def run(
    config: Path | None, out: Path | None, overrides: tuple[str, ...], resume: Path | None,
    overwrite: bool, progress: bool, report: bool,
) -> None:
    """Train the study in CONFIG (and its baseline), evaluate both hard with pyhf."""
    from neosx.run import load_run, run_study
    from neosx.runfolder import RunError

    if (config is None) == (resume is None):
        _fail("give either CONFIG (a new run) or --resume RUN (continue a run), not both")
    if resume is not None and (overrides or out or overwrite):
        _fail("--resume continues a run as it was configured; --set/--out/--overwrite not allowed")
    try:
        study, raw = load_run(resume) if resume is not None else load_config(config, overrides)
        _setup_jax()
        run_dir = resume or out or Path("runs") / study.name
        with _terminate_as_interrupt() as received:
            result = run_study(
                study, raw, run_dir, resume=resume is not None, overwrite=overwrite,
                progress=progress, command=sys.argv, report=report,
            )
    except (ConfigError, RunError) as error:
        _fail(str(error))
    except OSError as error:
        _fail(_os_error(error), code=1)
    if result.summary:
        click.echo(_summary_table(result.summary, study.evaluation.cl))
        if report:
            _echo_reports(result.run_dir)
    if result.status == "interrupted":
        _fail(f"{result.message} (run folder {result.run_dir})", code=128 + (
            received[0] if received else signal.SIGINT
        ))
    if result.status != "completed":
        _fail(result.message, code=1)
    click.echo(f"run folder: {result.run_dir}")


def _os_error(error: OSError) -> str:
    """One line for an operating-system error (disk full, permissions)."""
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{error.strerror or error}"


def _echo_reports(run_dir: Path) -> None:
    """Say where each post-fit report went; a failed one on standard error, with its reason."""
    from neosx.report import REPORT_DIR, read_reports

    for label, report in read_reports(run_dir).items():
        path = run_dir / REPORT_DIR / f"{label}.json"
        if report.get("status") == "failed":
            click.echo(f"neosx: warning: post-fit report of {label} failed at its "
                       f"{report.get('stage')}: {report.get('reason')} ({path})", err=True)
        else:
            click.echo(f"post-fit report of {label}: {path}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--report/--no-report", default=True, show_default=True,
              help="Write the post-fit reports (described above).")
def evaluate(run_dir: Path, report: bool) -> None:
    """Re-evaluate a run's analyses hard with pyhf (rewrites summary.json).

    It also writes each analysis' post-fit report, RUN_DIR/report/<analysis>.json, computed by
    cabinetry and pyhf on its workspace (RUN_DIR/workspaces/<analysis>.json): the pulls and
    constraints of every nuisance parameter; their impacts on the POI, pre- and post-fit,
    ranked; the pre- and post-fit yields per region; CLs against mu with its expected band
    and the upper limits (the Brazil band). The data fitted are the workspace's
    observations, the background-only Asimov expectation, so the pulls are 0 and the
    uncertainties, constraints and impacts are the expected ones; the POI may go negative in
    these fits, down to where a bin's expectation reaches zero. A fit that fails is recorded
    in its report (status, stage, reason) and the other reports are still written.
    `neosx plot` draws them. A report costs 4 fits per nuisance parameter and 31 hypothesis
    tests: seconds for configs/neos_blobs.yaml, about 40 s of CPU per analysis for the 27
    parameters of configs/cms_wz_regions.yaml.
    """
    from neosx.run import evaluate_run, failed_evaluations, load_run
    from neosx.runfolder import RunError

    _setup_jax()
    try:
        summary = evaluate_run(run_dir, report=report)
        study, _ = load_run(run_dir)
    except (ConfigError, RunError) as error:
        _fail(str(error))
    except OSError as error:
        _fail(_os_error(error), code=1)
    click.echo(_summary_table(summary, study.evaluation.cl))
    if report:
        _echo_reports(run_dir)
    failed = failed_evaluations(summary)
    if failed:
        _fail(failed, code=1)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--workspace", "path", required=True, type=click.Path(path_type=Path),
              help="Output pyhf workspace (JSON).")
@click.option("--analysis", default="optimised", show_default=True,
              help="Which analysis: optimised, baseline or initial.")
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
def export(run_dir: Path, path: Path, analysis: str, overwrite: bool) -> None:
    """Write the pyhf workspace of a run's hard analysis (for `pyhf cls`)."""
    from neosx.run import export_workspace
    from neosx.runfolder import RunError

    _setup_jax()
    try:
        written = export_workspace(run_dir, path, analysis=analysis, overwrite=overwrite)
    except (ConfigError, RunError) as error:
        _fail(str(error))
    click.echo(f"wrote {written}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
def plot(run_dir: Path) -> None:
    """(Re)draw a run's plots into RUN_DIR/plots.

    With post-fit reports (`neosx evaluate`), it also draws each analysis' pulls, impact
    ranking, pre- and post-fit data/MC plots per region and Brazil band into
    RUN_DIR/report/<analysis>_{pulls,ranking,yields_<region>_prefit,yields_<region>_postfit,
    brazil}.png, and its yield tables into RUN_DIR/report/<analysis>_yields.txt.
    """
    from neosx.plot import plot_run
    from neosx.runfolder import RunError, locked, record

    try:
        with locked(run_dir, "neosx plot"):
            written = plot_run(run_dir)
            record(run_dir, written)
    except (FileNotFoundError, RunError) as error:
        _fail(str(error))
    for path in written:
        click.echo(str(path))


@main.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a configuration field before validating.")
def validate(config: Path, overrides: tuple[str, ...]) -> None:
    """Check a study configuration; print the resolved study as JSON.

    Besides the schema, it reads the training events and builds the analysis and its
    likelihood, so what only the data can tell (a sample without events in any region, a
    region without events, weights that do not sum to a positive number) is reported too.
    """
    try:
        study, _ = load_config(config, overrides)
        _setup_jax()
        from neosx.analysis import Analysis

        Analysis.from_config(study)
    except ConfigError as error:
        _fail(str(error))
    click.echo(json.dumps(study.model_dump(mode="json", by_alias=True), indent=2))


@main.command()
@click.argument("scan_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Scan folder (default: the scan file's 'out', else runs/<scan file stem>).")
@click.option("--workers", type=click.IntRange(min=1),
              help="Worker processes of the local Dask cluster (default: one per core, at most "
              "one per job).")
@click.option("--scheduler", metavar="ADDRESS",
              help="Run on the Dask cluster whose scheduler is at ADDRESS (tcp://host:8786) "
              "instead of a local one.")
@click.option("--retries", type=click.IntRange(min=0), default=0, show_default=True,
              help="Run a job that raised again this many times (for transient failures).")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar over jobs.")
def scan(
    scan_file: Path, out: Path | None, workers: int | None, scheduler: str | None,
    retries: int, progress: bool,
) -> None:
    """Run the studies of SCAN_FILE (a base study and a grid / list of overrides) on Dask.

    Every job is validated first; each runs `neosx run` in a Dask worker into
    OUT/<job name>/, then OUT/scan.csv and OUT/plots/ summarise them. Running the scan
    again skips completed jobs and resumes the others. On a batch system, start a cluster
    with dask-jobqueue and pass its scheduler address (the run folders must be on a file
    system that the workers share):

    \b
        from dask_jobqueue import HTCondorCluster
        cluster = HTCondorCluster(cores=1, memory="4 GB", disk="2 GB")
        cluster.scale(jobs=20); print(cluster.scheduler_address)

    On coffea-casa, pass the facility's cluster: --scheduler tls://localhost:8786.
    """
    from neosx.scan import load_scan, run_scan

    if workers is not None and scheduler is not None:
        _fail("--workers sizes the local cluster; it cannot be given with --scheduler")
    setting = click.get_current_context().find_root().params.get("compile_cache")
    cache = None if setting == "off" else str(Path(setting or _default_compile_cache()))
    try:
        plan = load_scan(scan_file, out)
    except ConfigError as error:
        _fail(str(error))
    try:
        with _terminate_as_interrupt() as received:
            result = run_scan(
                plan, scheduler=scheduler, workers=workers, retries=retries,
                compile_cache=cache, progress=progress, command=sys.argv,
            )
    except OSError as error:
        _fail(_os_error(error), code=1)
    except KeyboardInterrupt:
        _fail(f"interrupted; run the scan again to continue it (scan folder {plan.out})",
              code=128 + (received[0] if received else signal.SIGINT))
    unfinished = [row["job"] for row in result.rows if row["status"] != "completed"]
    click.echo(f"{len(result.rows) - len(unfinished)} of {len(result.rows)} jobs completed; "
               f"results: {result.csv}")
    if unfinished:
        _fail(f"{len(unfinished)} jobs did not complete ({', '.join(unfinished)}); "
              f"their errors are in {result.csv}", code=1)
