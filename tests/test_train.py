"""Training and run folders: end to end on a tiny study, exact resume, NaN stop, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import neosx.run
import neosx.train
from neosx.config import load_config
from neosx.run import RunError, run_study, trained_params
from neosx.train import latest_checkpoint, load_checkpoint, make_schedule, save_checkpoint

DEFAULT = Path(__file__).parents[1] / "configs" / "neos_blobs.yaml"
TINY = [
    "name=tiny",
    "data.train_events=400",
    "data.test_events=2000",
    "observable.hidden=[6]",
    "training.steps=6",
    "training.batch_size=150",
    "training.checkpoint_every=2",
    "training.log_every=1",
    "training.evaluate_every=3",
    "baseline.steps=4",
]


def _tiny(*overrides: str) -> tuple[Any, dict]:
    return load_config(DEFAULT, [*TINY, *overrides])


def _training_records(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        record.pop("time_s", None)
    return records


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config, raw = _tiny()
    result = run_study(config, raw, tmp_path_factory.mktemp("runs") / "tiny", progress=False)
    assert result.status == "completed"
    return result.run_dir


def test_run_folder_has_everything_to_reproduce(tiny_run: Path) -> None:
    for name in ["config.yaml", "run.json", "metrics.jsonl", "evaluation.json", "summary.json"]:
        assert (tiny_run / name).is_file(), name
    info = json.loads((tiny_run / "run.json").read_text())
    assert info["status"] == "completed" and info["seed"] == 0
    assert {"neosx", "jax", "pyhf", "optax"} <= set(info["versions"])
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert set(summary) == {"initial", "optimised", "baseline"}
    for figures in summary.values():
        assert 0 < figures["cls"] < 1 and len(figures["cls_band"]) == 5
        assert figures["z0"] > 0 and figures["upper_limit"] > 0
        assert figures["cls_band"] == sorted(figures["cls_band"])  # +2 sigma ... -2 sigma
    for label in summary:
        assert (tiny_run / "workspaces" / f"{label}.json").is_file()
    records = _training_records(tiny_run)
    hard = [(r["analysis"], r["step"]) for r in records if "hard" in r]
    assert hard == [("optimised", 3), ("optimised", 6), ("baseline", 3)]
    final_hard = [r["hard"] for r in records if "hard" in r][1]
    assert final_hard == summary["optimised"]  # hard evaluation in training = the report
    records = [r for r in records if "hard" not in r]
    steps = {label: [r["step"] for r in records if r["analysis"] == label]
             for label in ("optimised", "baseline")}
    assert steps == {"optimised": [1, 2, 3, 4, 5, 6], "baseline": [1, 2, 3, 4]}
    assert all("cls" in r["objectives"] for r in records if r["analysis"] == "optimised")
    assert list((tiny_run / "plots").glob("*.png"))
    # the checkpoints keep the last KEEP_CHECKPOINTS periodic states
    kept = sorted(p.name for p in (tiny_run / "checkpoints" / "optimised").iterdir())
    assert kept == ["step_0000002.npz", "step_0000004.npz", "step_0000006.npz"]


def test_existing_run_folder_is_never_overwritten(tiny_run: Path, tmp_path: Path) -> None:
    config, raw = _tiny()
    before = (tiny_run / "summary.json").read_text()
    with pytest.raises(RunError, match="exists; pass --overwrite"):
        run_study(config, raw, tiny_run, progress=False)
    assert (tiny_run / "summary.json").read_text() == before
    user_folder = tmp_path / "notes"
    user_folder.mkdir()
    (user_folder / "mine.txt").write_text("keep me")
    with pytest.raises(RunError, match="holds no neosx manifest"):
        run_study(config, raw, user_folder, overwrite=True, progress=False)
    assert (user_folder / "mine.txt").read_text() == "keep me"


def test_killed_run_resumed_equals_uninterrupted_run(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, raw = _tiny()
    original = neosx.train.save_checkpoint

    class Killed(BaseException):
        """The process dies (nothing of neosx's handles it)."""

    def killed_after_step_4(directory: Path, step: int, *args: Any) -> Path:
        path = original(directory, step, *args)
        if directory.name == "optimised" and step == 4:
            raise Killed  # the process dies right after this checkpoint
        return path

    monkeypatch.setattr(neosx.train, "save_checkpoint", killed_after_step_4)
    run_dir = tmp_path / "killed"
    with pytest.raises(Killed):
        run_study(config, raw, run_dir, progress=False)
    monkeypatch.undo()
    assert not (run_dir / "summary.json").exists()
    result = run_study(config, raw, run_dir, resume=True, progress=False)
    assert result.status == "completed"
    assert _training_records(run_dir) == _training_records(tiny_run)
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert resumed == json.loads((tiny_run / "summary.json").read_text())


def test_interrupt_checkpoints_the_step_reached_and_resume_is_exact(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during step 5 (checkpoints every 2): step 5's state is kept, not step 4's."""
    config, raw = _tiny()
    original = neosx.train._minibatch
    calls = []

    def interrupted_at_step_5(seed: int, step: int, *args: Any) -> dict:
        calls.append(step)
        if step == 5 and len(calls) == 6:
            raise KeyboardInterrupt
        return original(seed, step, *args)

    monkeypatch.setattr(neosx.train, "_minibatch", interrupted_at_step_5)
    run_dir = tmp_path / "interrupted"
    result = run_study(config, raw, run_dir, progress=False, command=["neosx", "run", "x"])
    assert result.status == "interrupted" and "interrupted after step 5" in result.message
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "interrupted" and info["message"] == result.message
    assert latest_checkpoint(run_dir / "checkpoints" / "optimised").name == "step_0000005.npz"
    assert not (run_dir / ".neosx.lock").exists()
    first_wall = info["wall_s"]["optimised"]
    result = run_study(config, raw, run_dir, resume=True, progress=False, command=["resume"])
    assert result.status == "completed"
    assert _training_records(run_dir) == _training_records(tiny_run)
    assert json.loads((run_dir / "summary.json").read_text()) == json.loads(
        (tiny_run / "summary.json").read_text()
    )
    info = json.loads((run_dir / "run.json").read_text())
    assert info["command"] == ["neosx", "run", "x"]  # the original command is kept
    assert [r["command"] for r in info["resumes"]] == [["resume"]]
    assert info["wall_s"]["optimised"] > first_wall  # wall times accumulate over resumes


def test_non_finite_loss_stops_cleanly_and_keeps_the_last_good_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # unstandardised inputs: a NaN in the training events would otherwise poison the input
    # scaling at step 0; here it must surface only when a minibatch draws the event
    config, raw = _tiny("training.steps=12", "observable.standardize=false")
    load_events = neosx.run.load_events

    def one_bad_event(data: Any, split: str, seed: int) -> dict[str, np.ndarray]:
        events = load_events(data, split, seed)
        events["background"][7, 1] = np.nan  # a corrupt event, drawn in some minibatch
        return events

    monkeypatch.setattr(neosx.run, "load_events", one_bad_event)
    result = run_study(config, raw, tmp_path / "nan", progress=False)
    assert result.status == "stopped"
    stop = [r for r in _training_records(tmp_path / "nan") if "stopped" in r]
    assert len(stop) == 1 and stop[0]["analysis"] == "optimised"
    bad_step = stop[0]["step"]
    assert 0 < bad_step < 12
    assert result.message.startswith(f"optimised: non-finite loss at step {bad_step}")
    info = json.loads((tmp_path / "nan" / "run.json").read_text())
    assert info["status"] == "stopped" and info["message"] == result.message
    assert not (tmp_path / "nan" / "summary.json").exists()
    # the last good state is the checkpoint at the failing step, and it is finite
    checkpoint = latest_checkpoint(tmp_path / "nan" / "checkpoints" / "optimised")
    assert checkpoint is not None and checkpoint.name == f"step_{bad_step:07d}.npz"
    params = trained_params(neosx.run.Analysis.from_config(config), tmp_path / "nan", "optimised")
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(params))


def test_nan_gradient_names_the_parameter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from neosx import objectives

    cls = objectives.OBJECTIVES["cls"]

    def cls_with_bad_gradient(analysis: Any, outputs: Any, evaluation: Any, term: Any) -> tuple:
        loss, figure = cls.fn(analysis, outputs, evaluation, term)
        counts = outputs.yields["SR"]["signal"]["data"]
        return loss + 0.0 * jnp.sqrt(counts[0] - counts[0]), figure  # d sqrt(0) = inf

    monkeypatch.setitem(
        objectives.OBJECTIVES, "cls", objectives.Objective(cls_with_bad_gradient, "broken")
    )
    config, raw = _tiny()
    result = run_study(config, raw, tmp_path / "grad", progress=False)
    assert result.status == "stopped"
    assert result.message.startswith(
        "optimised: non-finite gradient of params['observable']"
    ), result.message


def test_checkpoint_round_trip_and_mismatch(tmp_path: Path) -> None:
    params = {"a": jnp.arange(3.0), "b": [jnp.ones((2, 2))]}
    state = (jnp.zeros(()), {"m": jnp.full(3, 2.0)})
    path = save_checkpoint(tmp_path, 5, 11, params, state)
    step, loaded, loaded_state = load_checkpoint(path, (params, state))
    assert step == 5
    same = jax.tree.map(lambda x, y: bool(jnp.all(x == y)), (loaded, loaded_state), (params, state))
    assert jax.tree.all(same)
    assert not list(tmp_path.glob("*.tmp"))  # the write went through a temporary file
    with pytest.raises(ValueError, match="was the configuration changed"):
        load_checkpoint(path, ({"a": jnp.arange(3.0)}, state))


def test_schedules_anneal_from_init_to_end() -> None:
    config, _ = load_config(
        DEFAULT, ["histogram.bandwidth={schedule: linear, init: 0.2, end: 0.02}"]
    )
    schedule = make_schedule(config.histogram.bandwidth, 100)
    np.testing.assert_allclose([schedule(0), schedule(50), schedule(100)], [0.2, 0.11, 0.02])
    for kind in ("cosine", "exponential"):
        config, _ = load_config(
            DEFAULT, [f"histogram.bandwidth={{schedule: {kind}, init: 0.2, end: 0.02}}"]
        )
        schedule = make_schedule(config.histogram.bandwidth, 100)
        np.testing.assert_allclose([schedule(0), schedule(100)], [0.2, 0.02], rtol=1e-6)
