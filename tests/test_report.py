"""neosx.report: the post-fit report of a tiny run equals cabinetry and pyhf run directly."""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cabinetry
import numpy as np
import pyhf
import pytest
from click.testing import CliRunner

import neosx.config
import neosx.report.fit
import neosx.run
from neosx.cli import main
from neosx.evaluate import pyhf_numpy
from neosx.report import discard_stale_reports, read_reports
from neosx.run import RunResult
from neosx.runfolder import clear

DEFAULT = Path(__file__).parents[1] / "configs" / "neos_blobs.yaml"
TINY = [
    "name=tiny_report",
    "data.train_events=300",
    "data.test_events=2000",
    "observable.hidden=[4]",
    "training.steps=3",
    "training.batch_size=100",
    "baseline.steps=2",
]
ANALYSES = ("initial", "optimised", "baseline")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("pulls", "ranking", "yields_SR_prefit", "yields_SR_postfit", "brazil")


def _sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


@contextlib.contextmanager
def _direct() -> Iterator[None]:
    """pyhf's numpy backend, numpy's and Minuit's complaints about NaN steps ignored."""
    with pyhf_numpy(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture(scope="module")
def report_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run (``neosx run``, without a report), then ``neosx evaluate`` (with one)."""
    run_dir = tmp_path_factory.mktemp("report") / "run"
    result = CliRunner().invoke(
        main, ["run", str(DEFAULT), "--out", str(run_dir), "--no-progress", *_sets(TINY)]
    )
    assert result.exit_code == 0, result.output
    assert not (run_dir / "report").exists()  # `neosx run` writes no report by default
    result = CliRunner().invoke(main, ["evaluate", str(run_dir)])
    assert result.exit_code == 0, result.output
    for label in ANALYSES:
        assert f"post-fit report of {label}: {run_dir / 'report' / label}.json" in result.output
    return run_dir


@pytest.fixture(scope="module")
def plotted_run(report_run: Path) -> tuple[Path, list[str]]:
    result = CliRunner().invoke(main, ["plot", str(report_run)])
    assert result.exit_code == 0, result.output
    return report_run, result.output.split()


def _bounds(model: pyhf.Model) -> list[tuple[float, float]]:
    """The POI may go down to where a bin's nominal expectation reaches 0: -min(b / s)."""
    poi = model.config.poi_index
    pars = np.array(model.config.suggested_init(), dtype=float)
    pars[poi] = 0.0
    b = np.asarray(model.expected_actualdata(pars))
    pars[poi] = 1.0
    s = np.asarray(model.expected_actualdata(pars)) - b
    bounds = [tuple(bound) for bound in model.config.suggested_bounds()]
    bounds[poi] = (-float(np.min(b[s > 0] / s[s > 0])), bounds[poi][1])
    return bounds


def _hesse_sigma(model: pyhf.Model, data: list[float], at: np.ndarray) -> np.ndarray:
    """Uncertainties from central second differences of pyhf's -2 ln L (step 1e-4)."""
    h, n = 1e-4, len(at)
    step = np.eye(n) * h

    def nll(p: np.ndarray) -> float:
        return -2.0 * float(model.logpdf(p, data)[0])

    hessian = np.array([
        [(nll(at + step[i] + step[j]) - nll(at + step[i] - step[j])
          - nll(at - step[i] + step[j]) + nll(at - step[i] - step[j])) / (4 * h * h)
         for j in range(n)]
        for i in range(n)
    ])
    return np.sqrt(np.diag(np.linalg.inv(hessian / 2.0)))


def test_report_equals_cabinetry_and_pyhf_on_the_exported_workspace(
    report_run: Path, tmp_path: Path
) -> None:
    path = tmp_path / "optimised.json"
    exported = CliRunner().invoke(main, ["export", str(report_run), "--workspace", str(path)])
    assert exported.exit_code == 0, exported.output
    workspace = json.loads(path.read_text())
    report = json.loads((report_run / "report" / "optimised.json").read_text())
    summary = json.loads((report_run / "summary.json").read_text())["optimised"]
    assert report["status"] == "ok" and report["analysis"] == "optimised"
    assert "background-only Asimov" in report["data"]
    assert workspace == json.loads((report_run / report["workspace"]).read_text())
    parameters = {p["name"]: p for p in report["fit"]["parameters"]}

    with _direct():
        model, data = cabinetry.model_utils.model_and_data(workspace)
        bounds = _bounds(model)
        fit = cabinetry.fit.fit(model, data, par_bounds=bounds)
        ranking = cabinetry.fit.ranking(model, data, fit_results=fit, par_bounds=bounds)
        postfit = cabinetry.model_utils.prediction(model, fit_results=fit)
        scan = np.asarray(report["brazil"]["mu"])
        pyhf.set_backend("numpy", pyhf.optimize.minuit_optimizer(verbose=0))
        observed, expected = pyhf.infer.intervals.upper_limits.upper_limit(
            data, model, scan=scan, level=0.05, test_stat="qtilde"
        )
        pyhf.set_backend("numpy", "scipy")
        nominal = np.array(model.config.suggested_init(), dtype=float)
        nominal[model.config.poi_index] = 0.0
        exact_sigma = _hesse_sigma(model, data, nominal)
        best = np.array([parameters[name]["bestfit"] for name in model.config.par_names])
        expected_at_best = np.asarray(model.expected_actualdata(best))

    assert np.ravel(report["bounds"]) == pytest.approx(np.ravel(bounds), rel=1e-12)
    poi = model.config.poi_index
    mu = parameters["mu"]
    # the same fit as cabinetry's on the exported workspace (Minuit is deterministic)
    assert mu["bestfit"] == pytest.approx(fit.bestfit[poi], abs=1e-6)
    assert mu["uncertainty"] == pytest.approx(fit.uncertainty[poi], rel=1e-6)
    shape = parameters["background_shape"]
    index = model.config.par_names.index("background_shape")
    assert shape["pull"] == pytest.approx(fit.bestfit[index], abs=1e-6)
    assert shape["constraint"] == pytest.approx(fit.uncertainty[index], rel=1e-6)
    # independent of cabinetry: background-only data give mu_hat = 0, and Hesse's sigma
    # equals pyhf's -2 ln L curvature there (to 1 %)
    assert abs(mu["bestfit"]) < 0.02 * mu["uncertainty"]
    assert mu["uncertainty"] == pytest.approx(exact_sigma[poi], rel=1e-2)
    assert shape["uncertainty"] == pytest.approx(exact_sigma[index], rel=1e-2)
    # the top-ranked impact
    largest = int(np.argmax(np.maximum(abs(ranking.postfit_up), abs(ranking.postfit_down))))
    top = report["ranking"][0]
    assert top["name"] == ranking.labels[largest]
    for key in ("prefit_up", "prefit_down", "postfit_up", "postfit_down"):
        assert top[key] == pytest.approx(getattr(ranking, key)[largest], abs=1e-6)
    # post-fit yields: cabinetry's, and in sum pyhf's expectation at the reported best fit
    region = report["yields"]["regions"]["SR"]
    background = region["postfit"]["background"]
    sample = model.config.samples.index("background")
    assert background["yields"] == pytest.approx(postfit.model_yields[0][sample], rel=1e-9)
    assert region["postfit"]["total"]["yields"] == pytest.approx(expected_at_best, rel=1e-9)
    assert region["postfit"]["total"]["sum"] == pytest.approx(expected_at_best.sum(), rel=1e-9)
    assert region["data"] == pytest.approx(workspace["observations"][0]["data"], rel=1e-12)
    # the Brazil band: pyhf's scan (Minuit's fits); its expected limit equals the summary's
    # (pyhf's root finding, scipy's fits) to the grid's interpolation
    brazil = report["brazil"]
    assert brazil["observed_limit"] == pytest.approx(float(observed), abs=1e-9)
    assert brazil["expected_limits"] == pytest.approx([float(v) for v in expected], abs=1e-9)
    assert brazil["expected_limits"][2] == pytest.approx(summary["upper_limit"], rel=1e-2)
    assert brazil["observed_limit"] == pytest.approx(brazil["expected_limits"][2], rel=1e-6)
    assert len(brazil["cls_expected"]) == len(brazil["mu"]) == neosx.report.fit.SCAN_POINTS


def test_every_analysis_has_its_report(report_run: Path) -> None:
    reports = read_reports(report_run)
    assert set(reports) == set(ANALYSES)
    for label, report in reports.items():
        assert report["status"] == "ok", report.get("reason")
        assert {"fit", "ranking", "yields", "brazil"} <= set(report)
        assert report["fit"]["correlation"][0][0] == pytest.approx(1.0)
        assert all(m["message"] and m["count"] > 0 for m in report["messages"])
        text = (report_run / "report" / f"{label}.json").read_text()
        assert "NaN" not in text and "Infinity" not in text


def test_plot_draws_the_report(plotted_run: tuple[Path, list[str]]) -> None:
    run_dir, printed = plotted_run
    for label in ANALYSES:
        for figure in FIGURES:
            path = run_dir / "report" / f"{label}_{figure}.png"
            assert str(path) in printed
            assert path.read_bytes()[:8] == PNG_MAGIC
        table = (run_dir / "report" / f"{label}_yields.txt").read_text()
        assert "post-fit yields per bin" in table and "background" in table


def test_a_failed_fit_is_recorded_and_the_others_are_reported(
    plotted_run: tuple[Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(plotted_run[0], run_dir)
    before = (run_dir / "summary.json").read_text()
    fit = cabinetry.fit.fit
    calls: list[int] = []

    def first_fails(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("Minuit failed\n to converge")
        return fit(*args, **kwargs)

    monkeypatch.setattr(cabinetry.fit, "fit", first_fails)
    monkeypatch.setattr(neosx.report.fit, "SCAN_POINTS", 5)
    result = CliRunner().invoke(main, ["evaluate", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "post-fit report of initial failed at its fit: RuntimeError: Minuit failed to" \
        in result.output
    reports = read_reports(run_dir)
    assert reports["initial"]["status"] == "failed" and reports["initial"]["stage"] == "fit"
    assert reports["initial"]["reason"] == "RuntimeError: Minuit failed to converge"
    assert "fit" not in reports["initial"] and reports["initial"]["poi"] == "mu"
    assert reports["optimised"]["status"] == reports["baseline"]["status"] == "ok"
    assert len(reports["optimised"]["brazil"]["mu"]) == 5
    assert (run_dir / "summary.json").read_text() == before
    # the figures of the reports replaced are gone, not left to describe other numbers
    assert sorted(p.name for p in (run_dir / "report").iterdir()) == [
        f"{label}.json" for label in sorted(ANALYSES)
    ]


def test_report_files_are_in_the_manifest_so_overwrite_removes_them(
    plotted_run: tuple[Path, list[str]], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(plotted_run[0], run_dir)
    written = sorted(p.relative_to(run_dir).as_posix() for p in (run_dir / "report").iterdir())
    assert len(written) == len(ANALYSES) * (len(FIGURES) + 2)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert set(written) <= set(manifest)
    (run_dir / "report" / "mine.txt").write_text("a user's file")
    clear(run_dir)  # what `neosx run --overwrite` does first (tests/test_runfolder.py)
    assert [p.name for p in (run_dir / "report").iterdir()] == ["mine.txt"]


def test_run_report_flag_reaches_the_run_and_says_where_the_reports_are(
    report_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def run_study(*args: Any, **kwargs: Any) -> RunResult:
        seen.update(kwargs)
        return RunResult(report_run, "completed", "", {"optimised": {"status": "failed"}})

    monkeypatch.setattr(neosx.run, "run_study", run_study)
    for flag, expected in (([], False), (["--report"], True)):
        result = CliRunner().invoke(main, [
            "run", str(DEFAULT), "--out", str(report_run), "--no-progress", *flag,
        ])
        assert result.exit_code == 0, result.output
        assert seen["report"] is expected
        shown = f"post-fit report of optimised: {report_run / 'report' / 'optimised.json'}"
        assert (shown in result.output) is expected


def test_a_report_of_another_workspace_is_discarded(tmp_path: Path) -> None:
    workspace = {"channels": [], "version": "1.0.0"}
    folder = tmp_path / "report"
    folder.mkdir()
    kept = neosx.report.files._digest(workspace)
    (folder / "optimised.json").write_text(json.dumps({"workspace_digest": kept}))
    (folder / "baseline.json").write_text(json.dumps({"workspace_digest": "other"}))
    (folder / "baseline_pulls.png").write_bytes(PNG_MAGIC)
    removed = discard_stale_reports(tmp_path, {"optimised": workspace, "baseline": workspace})
    assert sorted(p.name for p in removed) == ["baseline.json", "baseline_pulls.png"]
    assert [p.name for p in folder.iterdir()] == ["optimised.json"]


# The optimised analysis of tests/test_runfolder.py's small study: a histosys whose up and
# down variations differ by a factor 40, interpolated (code4p) to negative yields inside its
# +-1 sigma, so Minuit's steps meet NaN; 1 - CL_s at mu = 1 as neosx's hard evaluation found.
NAN_PRONE = {
    "channels": [{"name": "SR", "samples": [
        {"name": "background", "data": [2.2, 30.0, 67.8], "modifiers": [{
            "name": "background_shape", "type": "histosys",
            "data": {"hi_data": [92.9, 7.0, 0.1], "lo_data": [0.1, 1.3, 98.6]},
        }]},
        {"name": "signal", "data": [4.22, 10.72, 5.06],
         "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
    ]}],
    "observations": [{"name": "SR", "data": [2.2, 30.0, 67.8]}],
    "measurements": [{"name": "measurement", "config": {
        "poi": "mu", "parameters": [{"name": "mu", "bounds": [[0.0, 100.0]]}]}}],
    "version": "1.0.0",
}
NAN_PRONE_CLS = 0.044751704573139095
NAN_PRONE_BAND = [0.0013516372910, 0.0083154007845, 0.044751704573, 0.18657273942, 0.50879011807]


def _limited_calls(monkeypatch: pytest.MonkeyPatch, limit: int) -> list[int]:
    """Count pyhf's likelihood evaluations; fail the one past ``limit``."""
    logpdf, calls = pyhf.pdf.Model.logpdf, [0]

    def counted(self: pyhf.pdf.Model, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] > limit:
            raise RuntimeError(f"more than {limit} likelihood evaluations")
        return logpdf(self, *args, **kwargs)

    monkeypatch.setattr(pyhf.pdf.Model, "logpdf", counted)
    return calls


def test_fits_that_meet_nan_take_minuits_budget_not_pyhfs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With pyhf's budget (100 000 calls) each unconditional fit of the scan took 100 000
    evaluations, MIGRAD wandering on NaN parameters (the whole report: ~1000 s)."""
    monkeypatch.setattr(neosx.report.fit, "SCAN_POINTS", 6)
    calls = _limited_calls(monkeypatch, 30_000)  # about 8 000 needed
    report = neosx.report.fit.analysis_report(
        NAN_PRONE, neosx.config.EvaluationConfig(), mu_max=2.5
    )
    assert report["status"] == "ok", report.get("reason")
    assert 0 < calls[0] <= 30_000
    mu = next(p for p in report["fit"]["parameters"] if p["name"] == "mu")
    assert abs(mu["bestfit"]) < 0.02 * mu["uncertainty"]
    brazil = report["brazil"]
    assert brazil["mu"][2] == 1.0 and brazil["capped"] is False
    assert brazil["cls_observed"][2] == pytest.approx(NAN_PRONE_CLS, rel=1e-3)
    assert brazil["cls_expected"][2] == pytest.approx(NAN_PRONE_BAND, rel=1e-3)


def test_the_scan_stays_inside_the_poi_bound_and_its_search_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without sensitivity pyhf's own limit search (the default end of the scan) would
    double mu without end."""
    monkeypatch.setattr(neosx.report.fit, "SCAN_POINTS", 6)
    workspace = json.loads(json.dumps(NAN_PRONE))
    workspace["channels"][0]["samples"][1]["data"] = [1e-6, 1e-6, 1e-6]
    _limited_calls(monkeypatch, 60_000)
    evaluation = neosx.config.EvaluationConfig()
    for spec, mu_max in ((workspace, None), (NAN_PRONE, 1e6)):
        with _direct():
            model, data = cabinetry.model_utils.model_and_data(spec)
            brazil = neosx.report.fit._brazil(model, data, evaluation, mu_max)
        assert brazil["capped"] is True and brazil["mu"][-1] == 100.0


def test_a_fit_beyond_its_call_budget_fails_its_stage_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(neosx.report.fit, "MAX_CALLS", 5)
    report = neosx.report.fit.analysis_report(NAN_PRONE, neosx.config.EvaluationConfig())
    assert report["status"] == "failed" and report["stage"] == "fit"
    assert report["reason"].startswith("FailedMinimization: Optimization failed.")
    assert "Call limit was reached" in report["reason"]
    assert report["reason"].endswith("(Minuit's budget per fit: 5 function calls)")
