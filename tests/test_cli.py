"""The ``neosx`` command line: exit codes, one-line errors, run / evaluate / export / plot."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyhf
import pytest
from click.testing import CliRunner

from neosx.cli import main
from neosx.evaluate import pyhf_numpy

DEFAULT = Path(__file__).parents[1] / "configs" / "neos_blobs.yaml"
TINY = [
    "name=tiny_cli",
    "data.train_events=300",
    "data.test_events=2000",
    "observable.hidden=[4]",
    "training.steps=3",
    "training.batch_size=100",
    "baseline.steps=2",
]


def _sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    result = CliRunner().invoke(
        main, ["run", str(DEFAULT), "--out", str(run_dir), "--no-progress", *_sets(TINY)]
    )
    assert result.exit_code == 0, result.output
    assert "optimised" in result.output and f"run folder: {run_dir}" in result.output
    return run_dir


def test_validate_prints_the_resolved_study() -> None:
    result = CliRunner().invoke(main, ["validate", str(DEFAULT), "--set", "training.steps=7"])
    assert result.exit_code == 0
    resolved = json.loads(result.output)
    assert resolved["training"]["steps"] == 7 and resolved["histogram"]["bins"] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["validate", "{cfg}", "--set", "histogram.bins=0"],
         "histogram.bins: Input should be greater than 0 (got 0)"),
        (["validate", "{cfg}", "--set", "colour=red"], "colour: unknown key (got 'red')"),
        (["run", "{cfg}", "--set", "training.optimizer.name=adagrad"],
         "training.optimizer.name: Input should be"),
        (["run"], "give either CONFIG"),
        (["run", "--resume", "{tmp}"], "not a neosx run folder"),
        (["evaluate", "{tmp}"], "not a neosx run folder"),
        (["validate", "{tmp}/missing.yaml"], "cannot read"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    args = [a.format(cfg=DEFAULT, tmp=tmp_path) for a in args]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("neosx: error: ")
    assert message in lines[0]
    assert "Traceback" not in result.output


def test_existing_run_folder_needs_overwrite(cli_run: Path) -> None:
    before = (cli_run / "summary.json").read_text()
    result = CliRunner().invoke(main, ["run", str(DEFAULT), "--out", str(cli_run), *_sets(TINY)])
    assert result.exit_code == 2 and "pass --overwrite" in result.output
    assert (cli_run / "summary.json").read_text() == before


def test_export_gives_pyhf_the_reported_cls(cli_run: Path, tmp_path: Path) -> None:
    summary = json.loads((cli_run / "summary.json").read_text())
    for analysis in ("optimised", "baseline"):
        path = tmp_path / f"{analysis}.json"
        result = CliRunner().invoke(
            main, ["export", str(cli_run), "--workspace", str(path), "--analysis", analysis]
        )
        assert result.exit_code == 0, result.output
        with pyhf_numpy():
            workspace = pyhf.Workspace(json.loads(path.read_text()))
            model = workspace.model()
            observed, expected = pyhf.infer.hypotest(
                1.0, workspace.data(model), model, return_expected_set=True
            )
        # observations are the background-only expectation: observed = median expected
        assert float(observed) == pytest.approx(summary[analysis]["cls"], abs=1e-6)
        assert [float(v) for v in expected] == pytest.approx(
            summary[analysis]["cls_band"], abs=1e-6
        )
    again = CliRunner().invoke(main, ["export", str(cli_run), "--workspace", str(path)])
    assert again.exit_code == 2 and "pass --overwrite" in again.output
    unknown = CliRunner().invoke(
        main, ["export", str(cli_run), "--workspace", str(tmp_path / "x.json"), "--analysis", "y"]
    )
    assert unknown.exit_code == 2 and "unknown analysis 'y'" in unknown.output


def test_pyhf_command_line_accepts_the_export(cli_run: Path, tmp_path: Path) -> None:
    pyhf_cli = shutil.which("pyhf", path=str(Path(sys.executable).parent))
    if pyhf_cli is None:
        pytest.skip("the pyhf console script is not installed next to this python")
    path = tmp_path / "ws.json"
    CliRunner().invoke(main, ["export", str(cli_run), "--workspace", str(path)])
    output = subprocess.run(
        [pyhf_cli, "cls", str(path)], capture_output=True, text=True, check=True
    ).stdout
    summary = json.loads((cli_run / "summary.json").read_text())
    assert json.loads(output)["CLs_obs"] == pytest.approx(summary["optimised"]["cls"], abs=1e-6)


def test_evaluate_reproduces_the_summary(cli_run: Path) -> None:
    before = json.loads((cli_run / "summary.json").read_text())
    result = CliRunner().invoke(main, ["evaluate", str(cli_run)])
    assert result.exit_code == 0, result.output
    assert json.loads((cli_run / "summary.json").read_text()) == before


def test_plot_redraws_the_plots(cli_run: Path) -> None:
    shutil.rmtree(cli_run / "plots")
    result = CliRunner().invoke(main, ["plot", str(cli_run)])
    assert result.exit_code == 0, result.output
    names = {Path(line).name for line in result.output.split()}
    assert {"loss.png", "histograms.png", "figures.png"} <= names


def test_resume_of_a_finished_run_changes_nothing(cli_run: Path) -> None:
    before = (cli_run / "metrics.jsonl").read_text()
    result = CliRunner().invoke(main, ["run", "--resume", str(cli_run), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (cli_run / "metrics.jsonl").read_text() == before
    with_set = CliRunner().invoke(main, ["run", "--resume", str(cli_run), "--set", "seed=1"])
    assert with_set.exit_code == 2 and "--resume continues a run" in with_set.output


def test_run_stopped_on_nan_exits_1_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    import neosx.run

    load_events = neosx.run.load_events

    def corrupt(data: object, split: str, seed: int) -> dict:
        events = load_events(data, split, seed)
        events["signal"][:, 0] = np.nan  # every signal event is broken
        return events

    monkeypatch.setattr(neosx.run, "load_events", corrupt)
    result = CliRunner().invoke(
        main, ["run", str(DEFAULT), "--out", str(tmp_path / "r"), "--no-progress",
               *_sets(TINY)]
    )
    assert result.exit_code == 1, result.output
    assert "neosx: error: optimised: non-finite loss at step 0" in result.output
    assert "Traceback" not in result.output


def test_compile_cache_is_used_and_changes_no_result(tmp_path: Path) -> None:
    """A second run with the same --compile-cache loads the programs and gives the same numbers."""
    cache = tmp_path / "cache"
    summaries = []
    for run in ("first", "second"):
        command = [
            sys.executable, "-c", "from neosx.cli import main; main()",
            "--compile-cache", str(cache), "run", str(DEFAULT),
            "--out", str(tmp_path / run), "--no-progress", *_sets(TINY),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        if run == "first":
            cached = sorted(cache.iterdir())
            assert any(path.name.startswith("jit_") for path in cached), cached
        summaries.append(json.loads((tmp_path / run / "summary.json").read_text()))
    assert summaries[0] == summaries[1]
    assert sorted(cache.iterdir()) == cached  # nothing recompiled, so nothing new written
