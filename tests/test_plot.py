"""Tests of neosx.plot: the plots of a synthetic run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib as mpl
import pytest

from neosx.plot import plot_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METRICS_PLOTS = {"loss.png", "objectives.png", "cls.png"}
EVALUATION_PLOTS = {"histograms.png", "figures.png"}


def _band(centre: float) -> list[float]:
    return [centre * factor for factor in (0.4, 0.6, 1.0, 1.6, 2.5)]


def _metrics(labels: list[str], steps: int = 6, stop: bool = False) -> list[dict[str, Any]]:
    objective = {"optimised": "cls", "baseline": "bce"}
    records: list[dict[str, Any]] = []
    for label in labels:
        for step in range(steps):
            value = 0.5 / (1 + step)
            records.append(
                {
                    "analysis": label,
                    "step": step,
                    "loss": value,
                    "objectives": {objective[label]: value},
                    "bandwidth": 0.1,
                    "learning_rate": 3e-3,
                    "time_s": 0.01,
                    "slopes": [1.0, 2.0],
                }
            )
            if step % 3 == 2:
                cls = 0.4 / (1 + step)
                records.append(
                    {
                        "analysis": label,
                        "step": step,
                        "hard": {
                            "cls": cls,
                            "cls_band": _band(cls),
                            "z0": 1.0 + step,
                            "upper_limit": 2.0 / (1 + step),
                            "upper_limit_band": _band(2.0 / (1 + step)),
                        },
                    }
                )
        if stop:
            records.append({"analysis": label, "step": steps - 1, "stopped": "no improvement"})
    return records


def _analysis(scale: float, cuts: list[float], staterror: bool) -> dict[str, Any]:
    background: dict[str, Any] = {
        "data": [40.0 * scale, 20.0, 10.0, 5.0],
        "histosys": {
            "background_shape": {
                "hi_data": [44.0 * scale, 21.0, 10.0, 4.0],
                "lo_data": [36.0 * scale, 19.0, 10.0, 6.0],
            }
        },
        "normsys": {"background_norm": {"hi": 1.05, "lo": 0.95}},
    }
    if staterror:
        background["staterror"] = {"background_stat": {"sumw2": [4.0, 2.0, 1.0, 0.5]}}
    cls = 0.5 * scale
    return {
        "regions": {"SR": {
            "edges": [0.0, 0.25, 0.5, 0.8, 1.0],
            "cuts": cuts,
            "histograms": {"signal": {"data": [1.0, 2.0, 4.0, 8.0]}, "background": background},
        }},
        "figures": {
            "cls": cls,
            "cls_band": _band(cls),
            "z0": 1.0 / scale,
            "upper_limit": 2.0 * scale,
            "upper_limit_band": _band(2.0 * scale),
        },
    }


def _evaluation(baseline: bool, cuts: bool) -> dict[str, Any]:
    thresholds = {"initial": [0.3], "optimised": [0.42], "baseline": [0.35]}
    scales = {"initial": 1.0, "optimised": 0.1, "baseline": 0.3}
    labels = ["initial", "optimised", *(["baseline"] if baseline else [])]
    return {
        "regions": [{
            "name": "SR", "observable": "score",
            "cuts": [{"feature": "x", "keep": "above"}] if cuts else [],
        }],
        "samples": [
            {"name": "signal", "role": "signal"},
            {"name": "background", "role": "background"},
        ],
        "analyses": {
            label: _analysis(scales[label], thresholds[label] if cuts else [], label == "baseline")
            for label in labels
        },
    }


def _write_run(
    run_dir: Path,
    metrics: list[dict[str, Any]] | None,
    evaluation: dict[str, Any] | None,
) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    if metrics is not None:
        lines = [json.dumps(record) for record in metrics]
        (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if evaluation is not None:
        (run_dir / "evaluation.json").write_text(json.dumps(evaluation))
    return run_dir


def _assert_pngs(paths: list[Path], run_dir: Path, expected: set[str]) -> None:
    assert {path.name for path in paths} == expected
    assert {path.name for path in (run_dir / "plots").iterdir()} == expected
    for path in paths:
        assert path.parent == run_dir / "plots"
        assert path.read_bytes()[:8] == PNG_MAGIC


def test_full_run_leaves_global_style_alone(tmp_path: Path) -> None:
    metrics = _metrics(["optimised", "baseline"], stop=True)
    run_dir = _write_run(tmp_path / "run", metrics, _evaluation(baseline=True, cuts=True))
    before = dict(mpl.rcParams)
    paths = plot_run(run_dir)
    assert dict(mpl.rcParams) == before
    _assert_pngs(paths, run_dir, METRICS_PLOTS | EVALUATION_PLOTS | {"cuts.png"})


def test_stopped_early_without_baseline_or_hard_records(tmp_path: Path) -> None:
    metrics = [r for r in _metrics(["optimised"], steps=1, stop=True) if "hard" not in r]
    run_dir = _write_run(tmp_path, metrics, _evaluation(baseline=False, cuts=True))
    paths = plot_run(str(run_dir))
    _assert_pngs(paths, run_dir, METRICS_PLOTS | EVALUATION_PLOTS | {"cuts.png"})


def test_without_evaluation_writes_metrics_plots(tmp_path: Path) -> None:
    run_dir = _write_run(tmp_path, _metrics(["optimised", "baseline"]), None)
    _assert_pngs(plot_run(run_dir), run_dir, METRICS_PLOTS)


def test_without_metrics_or_cuts(tmp_path: Path) -> None:
    run_dir = _write_run(tmp_path, None, _evaluation(baseline=True, cuts=False))
    _assert_pngs(plot_run(run_dir), run_dir, {"cls.png"} | EVALUATION_PLOTS)


def test_missing_inputs_raise(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        plot_run(tmp_path)
    assert not (tmp_path / "plots").exists()
