"""Run folders that cannot be clobbered, and runs that never lose what was trained.

The manifest (``--overwrite`` removes only what neosx wrote), the lock (one writer per
folder, stale locks taken over), strict JSON, OS errors in one line without temporary
files, training stopped before it diverges, and a hard evaluation that fails being
recorded with everything trained kept.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pyhf
import pytest
from click.testing import CliRunner

import neosx.evaluate
import neosx.run
import neosx.train
from neosx.analysis import background_groups
from neosx.cli import main
from neosx.config import load_config
from neosx.evaluate import pyhf_figures, pyhf_numpy
from neosx.run import RunError, evaluate_run, export_workspace, run_study, trained_params
from neosx.runfolder import LOCK, MANIFEST, atomic_write, dumps, locked
from neosx.train import COLLAPSED_BIN, DIVERGED_LOSS, _problem, latest_checkpoint

DEFAULT = Path(__file__).parents[1] / "configs" / "neos_blobs.yaml"
SMALL = [
    "name=small",
    "data.train_events=300",
    "data.test_events=1000",
    "observable.hidden=[4]",
    "training.steps=3",
    "training.batch_size=100",
    "training.checkpoint_every=2",
    "baseline.steps=2",
]


def _small(*overrides: str) -> tuple[Any, dict]:
    return load_config(DEFAULT, [*SMALL, *overrides])


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config, raw = _small()
    result = run_study(config, raw, tmp_path_factory.mktemp("rf") / "run", progress=False)
    assert result.status == "completed", result.message
    return result.run_dir


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_manifest_lists_every_file_neosx_wrote(small_run: Path) -> None:
    listed = set(json.loads((small_run / MANIFEST).read_text()))
    on_disk = {
        p.relative_to(small_run).as_posix() for p in small_run.rglob("*") if p.is_file()
    } - {MANIFEST}
    assert listed >= on_disk - {"checkpoints/optimised/step_0000002.npz"}
    assert {"config.yaml", "run.json", "metrics.jsonl", "summary.json", "evaluation.json",
            "workspaces/optimised.json", "plots/histograms.png"} <= listed
    assert not list(small_run.rglob("*.tmp"))


def test_overwrite_removes_only_what_neosx_wrote(small_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "copy"
    config, raw = _small()
    assert run_study(config, raw, run_dir, progress=False).status == "completed"
    (run_dir / "notes.txt").write_text("my notes")
    (run_dir / "plots" / "mine.png").write_bytes(b"my plot")
    (run_dir / "checkpoints" / "optimised" / "keep.npz").write_bytes(b"mine")
    result = run_study(config, raw, run_dir, overwrite=True, progress=False)
    assert result.status == "completed"
    assert (run_dir / "notes.txt").read_text() == "my notes"
    assert (run_dir / "plots" / "mine.png").read_bytes() == b"my plot"
    assert (run_dir / "checkpoints" / "optimised" / "keep.npz").read_bytes() == b"mine"
    assert json.loads((run_dir / "summary.json").read_text()) == json.loads(
        (small_run / "summary.json").read_text()
    )


def test_a_manifest_entry_outside_the_folder_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / MANIFEST).write_text(json.dumps(["../victim.txt"]))
    config, raw = _small()
    with pytest.raises(RunError, match="lies outside the run folder"):
        run_study(config, raw, run_dir, overwrite=True, progress=False)
    assert victim.read_text() == "keep"


def test_a_live_run_folder_is_refused_to_overwrite_resume_and_evaluate(small_run: Path) -> None:
    config, raw = _small()
    before = (small_run / "summary.json").read_text()
    with locked(small_run, "neosx run"):  # this (live) process holds the folder
        for kwargs in ({"overwrite": True}, {"resume": True}):
            with pytest.raises(RunError, match=rf"in use by process {os.getpid()} "):
                run_study(config, raw, small_run, progress=False, **kwargs)
        with pytest.raises(RunError, match="in use by process"):
            evaluate_run(small_run)
        result = CliRunner().invoke(main, ["run", "--resume", str(small_run), "--no-progress"])
        assert result.exit_code == 2 and "is in use by process" in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert (small_run / "summary.json").read_text() == before
    assert not (small_run / LOCK).exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    run_dir = tmp_path / "stale"
    run_dir.mkdir()
    (run_dir / LOCK).write_text(json.dumps({"pid": _dead_pid(), "host": os.uname().nodename}))
    with locked(run_dir, "test"):
        owner = json.loads((run_dir / LOCK).read_text())
        assert owner["pid"] == os.getpid()
    assert not (run_dir / LOCK).exists()


def test_out_below_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = CliRunner().invoke(
        main, ["run", str(DEFAULT), "--out", str(tmp_path / "file" / "run"), "--no-progress"]
    )
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        f"neosx: error: cannot create run folder {tmp_path / 'file' / 'run'}: a file is in the way"
    )


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    def disk_full(handle: Any) -> None:
        handle.write("partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(tmp_path / "summary.json", disk_full)
    assert list(tmp_path.iterdir()) == []


def test_disk_full_in_a_run_is_one_line_and_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device", "step_0000002.npz")

    monkeypatch.setattr(neosx.train.np, "savez", no_space)
    run_dir = tmp_path / "full"
    result = CliRunner().invoke(
        main, ["run", str(DEFAULT), "--out", str(run_dir), "--no-progress",
               *[a for item in SMALL for a in ("--set", item)]]
    )
    assert result.exit_code == 1, result.output
    assert result.output.strip() == "neosx: error: step_0000002.npz: No space left on device"
    assert not list(run_dir.rglob("*.tmp")) and not (run_dir / LOCK).exists()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


def test_strict_json_has_no_infinity() -> None:
    text = dumps({"cls": float("nan"), "band": [1.0, float("inf")], "ok": 0.5})
    assert json.loads(text) == {"cls": None, "band": [1.0, None], "ok": 0.5}


def test_divergence_and_collapsed_edges_are_named() -> None:
    finite = {"loss": True, "figures": {"cls": True}, "gradient": {"a": True},
              "parameter": {"a": True}, "optimiser state": True}
    assert _problem(finite, 0.1, 0.2) is None
    assert _problem(finite, 2e19, 0.2) == f"diverged: loss 2e+19 beyond {DIVERGED_LOSS:.0e}"
    assert _problem(finite, 0.1, 1e-12).startswith(
        "bin edges collapsed: the narrowest bin is 1e-12 of the histogram range"
    )
    assert 1e-12 < COLLAPSED_BIN
    bad = finite | {"parameter": {"observable": False}}
    assert _problem(bad, 0.1, 0.2) == "non-finite updated params['observable']"


def test_non_finite_update_stops_with_a_finite_last_good_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loss and gradient are finite, but the update is not: stop before applying it."""
    apply_updates = optax.apply_updates

    def poisoned(params: Any, updates: Any) -> Any:
        new = apply_updates(params, updates)
        return {**new, "observable": jax.tree.map(lambda x: x * jnp.nan, new["observable"])}

    monkeypatch.setattr(neosx.train.optax, "apply_updates", poisoned)
    config, raw = _small("baseline.enabled=false")
    run_dir = tmp_path / "nan_update"
    result = run_study(config, raw, run_dir, progress=False)
    assert result.status == "stopped"
    assert result.message.startswith("optimised: non-finite updated params['observable']")
    params = trained_params(neosx.run.Analysis.from_config(config), run_dir, "optimised")
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(params))
    monkeypatch.undo()
    export_workspace(run_dir, tmp_path / "ws.json")  # the last good state exports
    metrics = (run_dir / "metrics.jsonl").read_text().splitlines()
    for line in metrics:
        json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in metrics.jsonl"))


def test_failed_hard_evaluation_is_recorded_and_evaluate_retries_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def fails_on_the_third(workspace: Any, evaluation: Any) -> dict:
        calls.append(1)
        if len(calls) == 3:  # initial, optimised, then baseline
            raise pyhf.exceptions.FailedMinimization(
                type("R", (), {"message": "Inequality constraints incompatible"})()
            )
        return pyhf_figures(workspace, evaluation)

    monkeypatch.setattr(neosx.evaluate, "pyhf_figures", fails_on_the_third)
    config, raw = _small()
    run_dir = tmp_path / "eval"
    result = run_study(config, raw, run_dir, progress=False)
    assert result.status == "failed"
    assert result.message.startswith("hard evaluation of baseline failed: FailedMinimization")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["baseline"]["status"] == "failed" and 0 < summary["optimised"]["cls"] < 1
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "failed" and info["message"] == result.message
    assert latest_checkpoint(run_dir / "checkpoints" / "baseline") is not None
    monkeypatch.undo()
    result = CliRunner().invoke(main, ["evaluate", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "baseline" in json.loads((run_dir / "summary.json").read_text())
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"


def test_bins_without_background_are_merged_for_pyhf() -> None:
    assert background_groups(np.array([0.0, 2.0, 0.0, 0.0, 3.0])) == [[0, 1, 2, 3], [4]]
    assert background_groups(np.array([1.0, 2.0])) == [[0], [1]]
    with pytest.raises(ValueError, match="no bin holds background"):
        background_groups(np.zeros(3))
    config, _ = _small()
    analysis = neosx.run.Analysis.from_config(config)
    # the failing case: a bin with background 0.0 and signal 0.02
    signal = np.array([0.02, 3.0, 1.0, 0.5])
    background = np.array([0.0, 20.0, 30.0, 40.0])
    yields = {"SR": {
        "signal": {"data": signal},
        "background": {"data": background, "histosys": {"bkg_shape": {
            "hi_data": 1.1 * background, "lo_data": 0.9 * background}}},
    }}
    workspace, merged = analysis.workspace(yields)
    assert merged == {"SR": [[0, 1], [2], [3]]}
    samples = {s["name"]: s for s in workspace["channels"][0]["samples"]}
    np.testing.assert_allclose(samples["signal"]["data"], [3.02, 1.0, 0.5])
    np.testing.assert_allclose(workspace["observations"][0]["data"], [20.0, 30.0, 40.0])
    with pyhf_numpy():
        model = pyhf.Workspace(workspace).model()
        cls = float(pyhf.infer.hypotest(1.0, pyhf.Workspace(workspace).data(model), model))
    assert 0 < cls < 1


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_exits_130(tmp_path: Path) -> None:
    """A real SIGINT to ``neosx run``: status interrupted, the step reached checkpointed."""
    import signal
    import time

    run_dir = tmp_path / "sigint"
    sets = [a for item in [*SMALL, "training.steps=100000", "training.checkpoint_every=1000"]
            for a in ("--set", item)]
    command = [sys.executable, "-c", "from neosx.cli import main; main()", "--compile-cache",
               "off", "run", str(DEFAULT), "--out", str(run_dir), "--no-progress", *sets]
    metrics = run_dir / "metrics.jsonl"
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not (
                metrics.is_file() and len(metrics.read_text().splitlines()) >= 3
            ):
                time.sleep(0.2)
            child.send_signal(signal.SIGINT)
            _, stderr = child.communicate(timeout=300)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
    assert child.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("neosx: error: optimised: interrupted after")
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "interrupted"
    reached = int(info["message"].split("after step ")[1].split(";")[0])
    assert reached >= 3
    checkpoint = latest_checkpoint(run_dir / "checkpoints" / "optimised")
    assert checkpoint is not None and checkpoint.name == f"step_{reached:07d}.npz"
    assert not (run_dir / LOCK).exists() and not list(run_dir.rglob("*.tmp"))
