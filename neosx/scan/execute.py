"""A scan's jobs on dask.distributed: one task per study, each a call to ``run_study``.

The client submits every job that is not finished, one task each, to a
``distributed.LocalCluster`` (one single-threaded worker process per core, at most one per
job) or to the cluster whose scheduler address is given (dask-jobqueue's
``HTCondorCluster``, a coffea-casa analysis facility). Workers write the run folders
themselves, so ``<out>`` must be a path that the client and every worker see (a shared file
system).

What a job does is read from its run folder when its task starts (:func:`job_action`): a
completed run is skipped, a failed, stopped or interrupted one (or one whose worker died) is
resumed from its checkpoints, else started again. A task that raises is recorded as
``failed`` with its error; one whose workers kept dying (the scheduler's
``distributed.scheduler.allowed-failures``, 3 by default) as ``lost``, with dask's
``KilledWorker`` message. Either way the other jobs go on.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from neosx.config import load_config
from neosx.runfolder import MANIFEST
from neosx.scan.spec import Job, Scan

__all__ = ["Outcome", "job_action", "run_job", "run_jobs"]


class Outcome(NamedTuple):
    """What became of a job in this scan.

    Attributes:
        action: ``"skip"`` (completed before), ``"new"``, ``"resume"`` or ``"overwrite"``.
        status: The run's status (``completed``, ``stopped``, ``interrupted``, ``failed``),
            ``failed`` for a task that raised, or ``lost`` (its workers kept dying).
        error: Why it did not complete, one line (empty when completed).
    """

    action: str
    status: str
    error: str


def job_action(run_dir: Path) -> str:
    """What a job's run folder needs: ``skip``, ``new``, ``resume`` or ``overwrite``.

    A folder whose ``run.json`` says ``completed`` is skipped; any other run (failed,
    stopped, interrupted, or still ``running`` because its process died) is resumed where a
    checkpoint exists and overwritten (only neosx's files) otherwise.
    """
    info = run_dir / "run.json"
    if not info.is_file():
        return "overwrite" if (run_dir / MANIFEST).is_file() else "new"
    try:
        status = json.loads(info.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    if status == "completed":
        return "skip"
    return "resume" if any((run_dir / "checkpoints").glob("*/*.npz")) else "overwrite"


def run_job(
    base: str, overrides: Sequence[str], run_dir: str, compile_cache: str | None,
    command: Sequence[str],
) -> tuple[str, str, str]:
    """The worker's task: run one study into its run folder.

    Switches JAX's float64 mode on in the worker process (statistics need it) and, when
    ``compile_cache`` is a folder, keeps XLA's compiled programs there, as the CLI does.

    Args:
        base: The base study configuration.
        overrides: The job's ``key=value`` overrides.
        run_dir: The job's run folder.
        compile_cache: A folder for XLA's compiled programs, or None (no cache).
        command: The command line, for ``run.json``.

    Returns:
        ``(action, status, message)``: see :class:`Outcome`.

    Raises:
        ConfigError: The study became invalid since the scan was validated.
        RunError: The run folder cannot be locked, resumed or written.
    """
    import jax

    from neosx.run import run_study

    jax.config.update("jax_enable_x64", True)
    if compile_cache:
        jax.config.update("jax_compilation_cache_dir", compile_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    folder = Path(run_dir)
    action = job_action(folder)
    if action == "skip":
        return action, "completed", ""
    config, raw = load_config(base, overrides)
    result = run_study(
        config, raw, folder, resume=action == "resume", overwrite=action == "overwrite",
        progress=False, command=command,
    )
    return action, result.status, result.message


@contextlib.contextmanager
def _client(scheduler: str | None, workers: int) -> Iterator[Any]:
    """A client of the cluster at ``scheduler``, else of a new ``LocalCluster``.

    The local scheduler sends a worker one job at a time (``worker-saturation`` 1): a job
    waiting in the queue of a worker that dies would count as killed by it.
    """
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)
    with cluster, Client(cluster) as client:
        yield client


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


def _outcome(future: Any, predicted: str) -> Outcome:
    """The outcome of a finished task (its exception, if it raised, is the error)."""
    from distributed import KilledWorker

    try:
        action, status, message = future.result()
    except KilledWorker as error:
        return Outcome(predicted, "lost", _one_line(error))
    except Exception as error:
        return Outcome(predicted, "failed", _one_line(error))
    return Outcome(action, status, message)


def run_jobs(
    scan: Scan,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    retries: int = 0,
    compile_cache: str | None = None,
    progress: bool = True,
    command: Sequence[str] | None = None,
) -> dict[str, Outcome]:
    """Run every unfinished job of ``scan`` on a Dask cluster; wait for all of them.

    Args:
        scan: The validated scan.
        scheduler: Address of a running Dask scheduler (``tcp://host:8786``); None starts
            a ``LocalCluster``.
        workers: Worker processes of the local cluster (default: one per core, at most
            one per job to run).
        retries: How many times Dask runs a task again after it raised (a run that fails
            fails the same way again, so 0 unless the failures are transient).
        compile_cache: A folder for XLA's compiled programs, shared by the workers.
        progress: Show a progress bar over jobs.
        command: The command line, for each job's ``run.json`` (default ``sys.argv``).

    Returns:
        ``{job name: Outcome}`` for every job, the skipped ones included.
    """
    from distributed import as_completed
    from tqdm.auto import tqdm

    predicted = {job.name: job_action(job.run_dir) for job in scan.jobs}
    outcomes = {
        name: Outcome("skip", "completed", "") for name, act in predicted.items() if act == "skip"
    }
    pending: list[Job] = [job for job in scan.jobs if job.name not in outcomes]
    if not pending:
        return outcomes
    size = workers or min(len(pending), os.cpu_count() or 1)
    with _client(scheduler, size) as client:
        futures = {
            client.submit(
                run_job, str(scan.base), job.overrides, str(job.run_dir), compile_cache,
                list(command or sys.argv), key=f"neosx-scan-{job.name}-{uuid.uuid4().hex[:8]}",
                retries=retries, pure=False,
            ): job
            for job in pending
        }
        with tqdm(total=len(futures), unit="job", desc="scan", disable=not progress) as bar:
            for future in as_completed(futures):
                job = futures[future]
                outcomes[job.name] = _outcome(future, predicted[job.name])
                bar.update()
    return {job.name: outcomes[job.name] for job in scan.jobs}
