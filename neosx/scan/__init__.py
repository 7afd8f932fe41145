"""``neosx scan``: many studies from one base configuration, run on dask.distributed.

A scan file names a base study and the overrides of each job (a grid and/or a list,
:mod:`neosx.scan.spec`); :func:`load_scan` validates every job before anything runs;
:func:`run_scan` runs the unfinished ones, one Dask task each (:mod:`neosx.scan.execute`),
into ``<out>/<job name>/`` and writes ``<out>/scan.csv`` and ``<out>/plots/``
(:mod:`neosx.scan.report`).

Example:
    >>> from neosx.scan import load_scan, run_scan
    >>> result = run_scan(load_scan("scans/blobs.yaml"), workers=2)  # doctest: +SKIP
    >>> result.csv  # doctest: +SKIP
    PosixPath('runs/blobs/scan.csv')
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from neosx.scan.execute import Outcome, job_action, run_jobs
from neosx.scan.report import job_rows, plot_scan, write_csv
from neosx.scan.spec import Job, Scan, ScanFile, job_name, load_scan

__all__ = [
    "Job",
    "Outcome",
    "Scan",
    "ScanFile",
    "ScanResult",
    "job_action",
    "job_name",
    "load_scan",
    "run_scan",
]


class ScanResult(NamedTuple):
    """What :func:`run_scan` produced.

    Attributes:
        rows: One mapping per job, as in ``scan.csv``.
        csv: The path of ``scan.csv``.
        plots: The plots written.
    """

    rows: list[dict[str, Any]]
    csv: Path
    plots: list[Path]


def run_scan(
    scan: Scan,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    retries: int = 0,
    compile_cache: str | None = None,
    progress: bool = True,
    command: Sequence[str] | None = None,
) -> ScanResult:
    """Run the scan's unfinished jobs on Dask, then write ``scan.csv`` and the plots.

    Args:
        scan: A scan from :func:`load_scan`.
        scheduler: Address of a running Dask scheduler; None starts a ``LocalCluster``.
        workers: Worker processes of the local cluster (default: one per core, at most
            one per job to run).
        retries: How many times Dask runs a task again after it raised.
        compile_cache: A folder for XLA's compiled programs, shared by the workers.
        progress: Show a progress bar over jobs.
        command: The command line, for each job's ``run.json``.

    Returns:
        :class:`ScanResult`.
    """
    outcomes = run_jobs(
        scan, scheduler=scheduler, workers=workers, retries=retries,
        compile_cache=compile_cache, progress=progress, command=command,
    )
    rows = job_rows(scan, outcomes)
    return ScanResult(rows, write_csv(scan.out / "scan.csv", rows), plot_scan(scan, rows))
