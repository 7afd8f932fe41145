"""Event sources (blobs, ROOT / Parquet files) and weighted samples with weight variations."""

from __future__ import annotations

import json
import re
from pathlib import Path

import awkward as ak
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import uproot

from neosx.analysis import Analysis
from neosx.config import ConfigError, load_config
from neosx.data import load_events
from neosx.data.files import read_features

CONFIGS = Path(__file__).parents[1] / "configs"
EVENTS = Path("/work/shared/data/events/cms_heptutorial_mc")
needs_cms = pytest.mark.skipif(not EVENTS.is_dir(), reason="shared CMS tutorial files absent")


def _cms(*overrides: str) -> tuple:
    """configs/cms_wz.yaml with its files taken from the shared data, wherever the repo is."""
    sets = ("wz", "zz", "ww", "single_top")
    located = [f"data.files.{name}.path={EVENTS / name}.root" for name in sets]
    return load_config(CONFIGS / "cms_wz.yaml", [*located, *overrides])


def test_blobs_splits_are_independent_draws_with_the_configured_means() -> None:
    config, _ = load_config(
        CONFIGS / "neos_blobs.yaml",
        ["data.train_events=20000", "data.test_events=3000", "data.options={sigma: 0.5}"],
    )
    train, test = (load_events(config.data, split, 0) for split in ("train", "test"))
    assert set(train) == {"signal", "background", "background_up", "background_down"}
    assert train["signal"].shape == (20000, 2) and test["signal"].shape == (3000, 2)
    np.testing.assert_allclose(train["background_up"].mean(axis=0), [2.5, 2.0], atol=0.02)
    np.testing.assert_allclose(train["signal"].std(axis=0), [0.5, 0.5], atol=0.01)
    assert not np.isin(test["signal"][:, 0], train["signal"][:, 0]).any()
    again = load_events(config.data, "train", 0)
    np.testing.assert_array_equal(again["signal"], train["signal"])  # deterministic in the seed


@needs_cms
def test_root_features_are_expressions_of_branches() -> None:
    path = str(EVENTS / "wz.root")
    table = read_features(path, "events", (("met", "sqrt(MET_px**2 + MET_py**2)"),
                                           ("w", "EventWeight")))
    branches = uproot.open(path)["events"].arrays(["MET_px", "MET_py", "EventWeight"],
                                                  library="np")
    np.testing.assert_allclose(table[:, 0], np.hypot(branches["MET_px"], branches["MET_py"]),
                               rtol=1e-6)
    np.testing.assert_array_equal(table[:, 1], branches["EventWeight"].astype(np.float64))
    with pytest.raises(ValueError, match=r"data\.features\.mu_px: .*one number per event"):
        read_features(path, "events", (("mu_px", "Muon_Px"),))
    with pytest.raises(ValueError, match=r"cannot evaluate .*nope"):
        read_features(path, "events", (("bad", "nope"),))


def test_parquet_features_are_columns(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    ak.to_parquet(ak.Array({"pt": [10.0, 20.0, 30.0], "eta": [0.1, -0.2, 0.3]}), path)
    table = read_features(str(path), "events", (("eta", "eta"), ("pt", "pt")))
    np.testing.assert_array_equal(table, [[0.1, 10.0], [-0.2, 20.0], [0.3, 30.0]])
    with pytest.raises(ValueError, match=r"data\.features\.x: cannot evaluate 'ptt \* 2'"):
        read_features(str(path), "events", (("x", "ptt * 2"),))


@needs_cms
def test_file_splits_are_disjoint_and_cover_the_file() -> None:
    config, _ = _cms("data.test_fraction=0.25")
    train, test = (load_events(config.data, split, 3) for split in ("train", "test"))
    everything = read_features(
        config.data.files["wz"].path, "events", tuple(config.data.features.items())
    )
    assert len(test["wz"]) == round(0.25 * len(everything))
    joined = np.concatenate([train["wz"], test["wz"]])
    np.testing.assert_array_equal(np.sort(joined, axis=0), np.sort(everything, axis=0))


def test_file_source_errors_name_the_field(tmp_path: Path) -> None:
    config = (CONFIGS / "cms_wz.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.replace("wz.root}", "missing.root}", 1))
    resolved = (tmp_path / "../../shared/data/events/cms_heptutorial_mc/missing.root").resolve()
    missing = re.escape(f"data.files.wz.path: no such file (got '{resolved}')")
    with pytest.raises(ConfigError, match=f"^{missing}$"):  # relative to the config's folder
        load_config(bad)
    bad.write_text(config.replace("wz.root}", "wz.csv}", 1))
    with pytest.raises(ConfigError, match=r"^data\.files\.wz\.path: unsupported file type"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"^samples\[1\]\.normsys\[0\]: normsys 'pileup'"):
        load_config(CONFIGS / "cms_wz.yaml", ["samples[1].normsys[0].hi=1.1"])
    if EVENTS.is_dir():
        with pytest.raises(ConfigError, match=r"^samples\[0\]\.weight: unknown feature .*'wgt'"):
            _cms("samples[0].weight=wgt")
    with pytest.raises(ConfigError, match=r"^data: 'files' and 'features' need source 'files'"):
        load_config(CONFIGS / "neos_blobs.yaml", ["data.features={a: b}"])


@needs_cms
def test_weighted_samples_and_weight_variations_equal_numpy() -> None:
    config, _ = _cms("histogram.trainable_edges=false")
    analysis = Analysis.from_config(config)
    events = {k: jnp.asarray(v) for k, v in load_events(config.data, "test", 0).items()}
    params = analysis.init_params(jax.random.PRNGKey(0))
    yields = analysis(params, events, hard=True)["SR"]
    column = {name: i for i, name in enumerate(analysis.features)}
    ww = np.asarray(events["ww"])
    weight = ww[:, column["weight"]] * 229.95 / ww[:, column["weight"]].sum()
    selected = ww[:, column["met"]] > 10.0
    score = np.asarray(analysis.observable.apply(params["observable"], jnp.asarray(ww)))
    edges = np.linspace(0.0, 1.0, 6)
    nominal, _ = np.histogram(score[selected], edges, weights=weight[selected])
    sumw2, _ = np.histogram(score[selected], edges, weights=weight[selected] ** 2)
    np.testing.assert_allclose(yields["ww"]["data"], nominal, rtol=1e-10)
    np.testing.assert_allclose(yields["ww"]["staterror"]["staterror_SR"]["sumw2"], sumw2,
                               rtol=1e-10)
    up = ww[:, column["pileup_up"]]
    hi = (weight * up)[selected].sum() / weight[selected].sum()
    np.testing.assert_allclose(yields["ww"]["normsys"]["pileup"]["hi"], hi, rtol=1e-12)
    # the weight-based normsys follows the selection, differentiably
    def hi_of(threshold: jax.Array) -> jax.Array:
        cuts = jnp.array([threshold]) / analysis.regions[0].cut_scales[0]
        p = {**params, "regions": {"SR": {**params["regions"]["SR"], "cuts": cuts}}}
        return analysis(p, events)["SR"]["ww"]["normsys"]["pileup"]["hi"]

    grad = jax.grad(hi_of)(jnp.array(30.0))
    step = 1e-4
    fd = (hi_of(jnp.array(30.0 + step)) - hi_of(jnp.array(30.0 - step))) / (2 * step)
    assert abs(float(grad)) > 0
    np.testing.assert_allclose(grad, fd, rtol=1e-5)


def test_weight_based_histosys_reweights_the_nominal_events() -> None:
    config, _ = load_config(
        CONFIGS / "neos_blobs.yaml",
        [
            "data.train_events=500",
            "data.test_events=500",
            "histogram.trainable_edges=false",
            "samples[1].histosys=[{name: tilt, up_weight: x, down_weight: y}]",
        ],
    )
    analysis = Analysis.from_config(config)
    events = {k: jnp.asarray(v) for k, v in load_events(config.data, "test", 0).items()}
    params = analysis.init_params(jax.random.PRNGKey(1))
    tilt = analysis(params, events, hard=True)["SR"]["background"]["histosys"]["tilt"]
    background = np.asarray(events["background"])
    score = np.asarray(analysis.observable.apply(params["observable"], events["background"]))
    reference, _ = np.histogram(score, np.linspace(0, 1, 5), weights=background[:, 0] * 0.2)
    np.testing.assert_allclose(tilt["hi_data"], reference, rtol=1e-12)


@needs_cms
@pytest.mark.slow
def test_cms_study_runs_end_to_end_and_moves_the_cut(tmp_path: Path) -> None:
    from neosx.run import run_study

    config, raw = _cms("training.steps=40", "baseline.steps=5", "observable.hidden=[8]")
    result = run_study(config, raw, tmp_path / "cms", progress=False)
    assert result.status == "completed"
    evaluation = json.loads((tmp_path / "cms" / "evaluation.json").read_text())
    initial, optimised = (
        evaluation["analyses"][k]["regions"]["SR"]["cuts"][0] for k in ("initial", "optimised")
    )
    assert initial == pytest.approx(10.0) and abs(optimised - initial) > 1.0  # GeV
    assert result.summary["optimised"]["z0"] > result.summary["initial"]["z0"]
    staterror = evaluation["analyses"]["optimised"]["regions"]["SR"]["histograms"]["ww"][
        "staterror"
    ]
    assert all(v >= 0 for v in staterror["staterror_SR"]["sumw2"])
