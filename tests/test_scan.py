"""``neosx scan``: scan files, jobs on Dask, resume, failed and lost jobs, scan.csv."""

from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from neosx.cli import main
from neosx.scan import job_action, job_name, load_scan, run_scan

DEFAULT = Path(__file__).parents[1] / "configs" / "neos_blobs.yaml"
TINY = [
    "data.train_events=300",
    "data.test_events=2000",
    "observable.hidden=[4]",
    "training.steps=3",
    "training.batch_size=100",
    "baseline.steps=2",
]
FIGURES = [f"{a}_{f}" for a in ("optimised", "baseline") for f in ("cls", "z0", "upper_limit")]


def _write_scan(folder: Path, **fields: object) -> Path:
    path = folder / "scan.yaml"
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


def _invoke(args: list[str], cache: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--compile-cache", str(cache), "scan", *args])
    return result.exit_code, result.output


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "scan.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """XLA's compiled programs, shared by every worker of every scan of this module."""
    return tmp_path_factory.mktemp("xla")


@pytest.fixture(scope="module")
def grid_scan(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Path:
    """A 4-job scan (2 seeds x 2 bandwidths) run by ``neosx scan`` on 2 local workers."""
    folder = tmp_path_factory.mktemp("grid")
    path = _write_scan(
        folder, base=str(DEFAULT), out=str(folder / "out"), set=TINY,
        grid={"seed": [0, 1], "histogram.bandwidth": [0.05, 0.1]},
    )
    code, output = _invoke([str(path), "--workers", "2", "--no-progress"], cache)
    assert code == 0, output
    assert f"4 of 4 jobs completed; results: {folder / 'out' / 'scan.csv'}" in output
    return folder / "out"


def test_job_names_are_readable_deterministic_and_fit_a_folder() -> None:
    assert job_name({"seed": 0, "histogram.bandwidth": 0.05}) == "seed=0,histogram.bandwidth=0.05"
    assert job_name({"training.objective": "z0"}) == "training.objective=z0"
    assert job_name({}) == "base"
    listed = job_name({"observable.hidden": [4, 4]})
    assert listed.startswith("observable.hidden=_4,_4_-") and "/" not in listed
    long = {f"samples[{i}].expected": 10.0 * i for i in range(8)}
    assert len(job_name(long)) == 80 and job_name(long) == job_name(dict(long))
    assert job_name(long) != job_name({**long, "seed": 1})


def test_grid_scan_writes_runs_csv_and_plots(grid_scan: Path) -> None:
    rows = _rows(grid_scan)
    assert [row["job"] for row in rows] == [
        "seed=0,histogram.bandwidth=0.05", "seed=0,histogram.bandwidth=0.1",
        "seed=1,histogram.bandwidth=0.05", "seed=1,histogram.bandwidth=0.1",
    ]
    assert list(rows[0]) == [
        "job", "seed", "histogram.bandwidth", "status", "action", "wall_s", *FIGURES,
        "error", "run_dir",
    ]
    for row in rows:
        run_dir = Path(row["run_dir"])
        assert run_dir == grid_scan / row["job"]
        assert (row["status"], row["action"], row["error"]) == ("completed", "new", "")
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["seed"] == int(row["seed"])
        assert config["histogram"]["bandwidth"] == float(row["histogram.bandwidth"])
        summary = json.loads((run_dir / "summary.json").read_text())
        for column in FIGURES:
            analysis, figure = column.split("_", 1)
            assert float(row[column]) == summary[analysis][figure]
        info = json.loads((run_dir / "run.json").read_text())
        assert float(row["wall_s"]) == pytest.approx(sum(info["wall_s"].values()), abs=1e-3)
    # the same seed gives the same baseline start whatever the bandwidth of the optimised one
    assert rows[0]["optimised_cls"] != rows[2]["optimised_cls"]
    plots = sorted(p.name for p in (grid_scan / "plots").iterdir())
    assert plots == sorted(
        f"{figure}_vs_{axis}.png" for figure in ("cls", "z0", "upper_limit")
        for axis in ("seed", "histogram.bandwidth")
    )


def _state(out: Path) -> dict[str, tuple[str, int]]:
    return {
        str(path.relative_to(out)): (path.read_text(), path.stat().st_mtime_ns)
        for path in sorted(out.glob("*/run.json"))
    }


def test_running_again_skips_finished_jobs_and_resumes_the_others(
    grid_scan: Path, cache: Path
) -> None:
    scan_file = grid_scan.parent / "scan.yaml"
    before = _state(grid_scan)
    code, output = _invoke([str(scan_file), "--no-progress"], cache)
    assert code == 0 and "4 of 4 jobs completed" in output, output
    assert _state(grid_scan) == before
    assert {row["action"] for row in _rows(grid_scan)} == {"skip"}

    stopped = grid_scan / "seed=1,histogram.bandwidth=0.1" / "run.json"
    info = json.loads(stopped.read_text()) | {"status": "interrupted"}
    stopped.write_text(json.dumps(info))
    before = _state(grid_scan)
    code, output = _invoke([str(scan_file), "--no-progress"], cache)
    assert code == 0, output
    rows = {row["job"]: row for row in _rows(grid_scan)}
    assert rows[stopped.parent.name]["action"] == "resume"
    assert json.loads(stopped.read_text())["status"] == "completed"
    assert len(json.loads(stopped.read_text())["resumes"]) == 1
    after = _state(grid_scan)
    for name, state in before.items():
        if not name.startswith(stopped.parent.name):
            assert after[name] == state, name


def _files_study(folder: Path) -> Path:
    """The blob study read from Parquet files (one per event set), with TINY's network."""
    import awkward as ak

    means = {"signal": (-1, 1), "background": (1, -1), "background_up": (2.5, 2),
             "background_down": (-2.5, -1.5), "gone": (1, -1)}
    rng = np.random.default_rng(7)
    for name, mean in means.items():
        x, y = (rng.normal(centre, 1.0, size=800) for centre in mean)
        ak.to_parquet(ak.Array({"x": x, "y": y}), folder / f"{name}.parquet")
    study = yaml.safe_load(DEFAULT.read_text())
    study["data"] = {
        "source": "files",
        "files": {name: {"path": f"{name}.parquet"} for name in means if name != "gone"},
        "features": {"x": "x", "y": "y"},
    }
    path = folder / "files_study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def _killer(lock: Path, times: int, ready: Callable[[], bool]) -> threading.Thread:
    """Kill the process holding ``lock`` (a worker running the job), ``times`` different ones."""

    def kill() -> None:
        killed: list[int] = []
        deadline = time.monotonic() + 300
        while len(killed) < times and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                pid = json.loads(lock.read_text())["pid"]
            except (OSError, ValueError, KeyError):
                continue
            if pid not in killed and ready():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_failed_and_lost_jobs_are_recorded_and_the_others_finish(
    tmp_path: Path, cache: Path
) -> None:
    import dask
    from distributed import LocalCluster

    base = _files_study(tmp_path)
    path = _write_scan(
        tmp_path, base=base.name, out=str(tmp_path / "out"), set=TINY[2:],
        list=[{"seed": 0}, {"seed": 1}, {"data.files.background.path": "gone.parquet"}],
    )
    scan = load_scan(path)
    (tmp_path / "gone.parquet").unlink()  # validated, then gone before its job runs
    resumed, lost = (tmp_path / "out" / name for name in ("seed=0", "seed=1"))
    killers = [
        _killer(resumed / ".neosx.lock", 1, lambda: any(resumed.glob("checkpoints/*/*.npz"))),
        _killer(lost / ".neosx.lock", 2, lambda: True),
    ]
    settings = {"distributed.scheduler.worker-saturation": 1.0}  # as neosx's LocalCluster
    with dask.config.set(settings), LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
        scheduler_kwargs={"allowed_failures": 1},
    ) as cluster:
        result = run_scan(
            scan, scheduler=cluster.scheduler_address, compile_cache=str(cache), progress=False,
        )
    for thread in killers:
        thread.join(timeout=1)
    rows = {row["job"]: row for row in result.rows}
    assert rows["seed=0"]["status"] == "completed" and rows["seed=0"]["action"] == "resume"
    assert rows["seed=0"]["optimised_cls"] is not None
    assert rows["seed=1"]["status"] == "lost"
    assert rows["seed=1"]["error"].startswith("KilledWorker: Attempted to run task")
    assert rows["seed=1"]["optimised_cls"] is None
    assert job_action(lost) in ("new", "resume", "overwrite")  # the next scan runs it again
    gone = rows["data.files.background.path=gone.parquet"]
    assert gone["status"] == "failed" and "gone.parquet" in gone["error"]
    assert "\n" not in gone["error"]
    assert {row["job"]: row["status"] for row in _rows(tmp_path / "out")} == {
        "seed=0": "completed", "seed=1": "lost",
        "data.files.background.path=gone.parquet": "failed",
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"base": "{base}", "grids": {"seed": [0]}},
         "{path}: grids: unknown key (got {{'seed': [0]}})"),
        ({"grid": {"seed": [0]}}, "{path}: base: required field is missing"),
        ({"base": "{base}", "grid": {"seed": []}},
         "{path}: grid.seed: List should have at least 1 item after validation, not 0 (got [])"),
        ({"base": "{base}"}, "{path}: give a 'grid' and/or a 'list' of jobs"),
        ({"base": "missing.yaml", "list": [{"seed": 1}]},
         "{path}: base: no such file (got 'missing.yaml')"),
        ({"base": "{base}", "list": [{"seed=1": 2}]},
         "{path}: list: override key must be a field path like a.b, got 'seed=1'"),
        ({"base": "{base}", "grid": {"seed": [0, 1], "histogram.bins": [4, 0]}},
         "{path}: job 'seed=0,histogram.bins=0': "
         "histogram.bins: Input should be greater than 0 (got 0)"),
        ({"base": "{base}", "list": [{"seed": 1}, {"training.steps": -1}]},
         "{path}: job 'training.steps=-1': training.steps: Input should be greater than 0 "
         "(got -1)"),
        ({"base": "{base}", "list": [{"seed": 1}, {"seed": 1}]},
         "{path}: job 'seed=1' appears twice"),
    ],
)
def test_bad_scan_files_and_jobs_fail_up_front_in_one_line(
    fields: dict[str, object], message: str, tmp_path: Path, cache: Path
) -> None:
    text = yaml.safe_dump(fields, sort_keys=False).replace("'{base}'", str(DEFAULT))
    path = tmp_path / "scan.yaml"
    path.write_text(text)
    code, output = _invoke([str(path), "--out", str(tmp_path / "out")], cache)
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in output
    assert lines[0] == "neosx: error: " + message.format(path=path)
    assert not (tmp_path / "out").exists()


def test_a_run_of_another_configuration_is_refused(grid_scan: Path, cache: Path) -> None:
    folder = grid_scan.parent / "other"
    folder.mkdir()
    path = _write_scan(
        folder, base=str(DEFAULT), out=str(grid_scan), set=[*TINY, "training.steps=4"],
        grid={"seed": [0], "histogram.bandwidth": [0.05]},
    )
    code, output = _invoke([str(path), "--no-progress"], cache)
    assert code == 2
    assert output.strip() == (
        f"neosx: error: {path}: job 'seed=0,histogram.bandwidth=0.05': "
        f"{grid_scan / 'seed=0,histogram.bandwidth=0.05'} holds a run of another "
        "configuration; remove it or choose another out"
    )


def test_workers_and_scheduler_are_exclusive(tmp_path: Path, cache: Path) -> None:
    path = _write_scan(tmp_path, base=str(DEFAULT), grid={"seed": [0]})
    code, output = _invoke([str(path), "--workers", "2", "--scheduler", "tcp://x:1"], cache)
    assert code == 2 and "cannot be given with --scheduler" in output
