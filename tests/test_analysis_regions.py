"""Several regions, preselections, feature shifts, normfactors and MC statistics.

References are independent: ``numpy.histogram`` of the (shifted, preselected) features in the
hard limit, a pyhf workspace written by hand from those histograms, and central finite
differences for the gradients through a feature shift.
"""

from __future__ import annotations

import copy
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest
from conftest import event_arrays, study

from neosx.analysis import Analysis
from neosx.config import ConfigError, parse_config
from neosx.data import load_events
from neosx.evaluate import pyhf_numpy
from neosx.infer import expected_cls

BASE: dict[str, Any] = {
    "name": "regions",
    "data": {"source": "blobs", "train_events": 800, "test_events": 3000},
    "samples": [
        {"name": "signal", "events": "signal", "role": "signal", "expected": 20.0},
        {"name": "background", "events": "background", "role": "background",
         "expected": 100.0, "staterror": "full",
         "histosys": [{"name": "background_shape", "up": "background_up",
                       "down": "background_down"}]},
        {"name": "other", "events": "background_up", "role": "background", "expected": 30.0,
         "normfactor": "mu_other", "staterror": True},
    ],
    "systematics": [
        {"name": "x_scale", "scale": {"x": 0.05}, "samples": ["signal", "background"]},
        {"name": "y_shift", "shift": {"y": 0.2}, "modifier": "normsys"},
    ],
    "regions": [
        {"name": "SR", "preselection": "x > -0.5 && y > -1", "observable": "score",
         "cuts": [{"feature": "y", "init": 0.0, "slope": 4.0}],
         "histogram": {"bins": 3, "bandwidth": 0.05}},
        {"name": "CR", "preselection": "x < -0.5", "observable": "count"},
        {"name": "VR", "preselection": "!(x > -0.5 && y > -1)",
         "observable": {"feature": "y"},
         "histogram": {"bins": 4, "range": [-3.0, 3.0], "bandwidth": 0.3}},
    ],
    "observable": {"type": "mlp", "features": ["x", "y"], "hidden": [5]},
}


def _config(**changes: Any) -> Any:
    return study(BASE, **changes)


@pytest.fixture(scope="module")
def analysis() -> Analysis:
    return Analysis.from_config(_config())


@pytest.fixture(scope="module")
def events(analysis: Analysis) -> dict[str, jax.Array]:
    return event_arrays(analysis, "test")


def _selected(x: np.ndarray, region: str) -> np.ndarray:
    """The preselection of ``region`` written in numpy."""
    sr = (x[:, 0] > -0.5) & (x[:, 1] > -1)
    return {"SR": sr, "CR": x[:, 0] < -0.5, "VR": ~sr}[region]


def test_regions_histogram_what_they_say_in_the_hard_limit(
    analysis: Analysis, events: dict[str, jax.Array]
) -> None:
    params = analysis.init_params(jax.random.PRNGKey(4))
    yields = analysis(params, events, hard=True)
    x = np.asarray(events["signal"])
    w = 20.0 / len(x)
    score = np.asarray(analysis.observable.apply(params["observable"], events["signal"]))
    keep = _selected(x, "SR") & (x[:, 1] >= 0.0)  # the soft cut y > 0, hard
    reference, _ = np.histogram(score[keep], np.linspace(0, 1, 4))
    np.testing.assert_allclose(yields["SR"]["signal"]["data"], reference * w, rtol=1e-12)
    np.testing.assert_allclose(
        yields["CR"]["signal"]["data"], [np.sum(_selected(x, "CR")) * w], rtol=1e-12
    )
    inside = _selected(x, "VR")
    y = np.clip(x[inside, 1], -3.0, 3.0 - 1e-12)  # overflow "clip"
    reference, _ = np.histogram(y, np.linspace(-3, 3, 5))
    np.testing.assert_allclose(yields["VR"]["signal"]["data"], reference * w, rtol=1e-12)


def test_feature_shift_template_is_the_histogram_of_shifted_events(
    analysis: Analysis, events: dict[str, jax.Array]
) -> None:
    """x scaled by 1.05 before the preselection (x > -0.5 re-applied) and the network."""
    params = analysis.init_params(jax.random.PRNGKey(4))
    yields = analysis(params, events, hard=True)
    x = np.asarray(events["background"])
    for side, key in ((1, "hi_data"), (-1, "lo_data")):
        shifted = x * np.array([1 + 0.05 * side, 1.0])
        score = np.asarray(
            analysis.observable.apply(params["observable"], jnp.asarray(shifted))
        )
        keep = _selected(shifted, "SR") & (shifted[:, 1] >= 0.0)
        reference, _ = np.histogram(score[keep], np.linspace(0, 1, 4))
        template = yields["SR"]["background"]["histosys"]["x_scale"][key]
        np.testing.assert_allclose(template, reference * 100.0 / len(x), rtol=1e-12)
        count = yields["CR"]["background"]["histosys"]["x_scale"][key]
        np.testing.assert_allclose(count, [np.sum(_selected(shifted, "CR")) * 100.0 / len(x)])
    # the normsys shift of y: the selected yield's ratio, per region
    y_up = x + np.array([0.0, 0.2])
    ratio = np.sum(_selected(y_up, "VR")) / np.sum(_selected(x, "VR"))
    np.testing.assert_allclose(
        yields["VR"]["background"]["normsys"]["y_shift"]["hi"], ratio, rtol=1e-12
    )
    assert "x_scale" not in yields["SR"]["other"].get("histosys", {})  # not a listed sample


def test_the_hard_workspace_equals_one_written_by_hand(
    analysis: Analysis, events: dict[str, jax.Array]
) -> None:
    params = analysis.init_params(jax.random.PRNGKey(4))
    yields = jax.tree.map(np.asarray, analysis(params, events, hard=True))
    background = yields["SR"]["background"]["data"] + yields["SR"]["other"]["data"]
    if np.all(background > 0):  # this start has a bin without background: merged for pyhf
        pytest.fail("the test needs a merged bin; choose another key")
    workspace, merged = analysis.workspace(yields)
    channels = []
    for region in ("SR", "CR", "VR"):
        samples = []
        groups = merged.get(region)
        for name, entry in yields[region].items():
            if groups is not None:  # bins without background summed into their neighbour
                entry = jax.tree.map(
                    lambda a, g=groups: np.array([a[i].sum() for i in g]) if np.ndim(a) else a,
                    entry,
                )
            modifiers = []
            if name == "signal":
                modifiers.append({"name": "mu", "type": "normfactor", "data": None})
            if name == "other":
                modifiers.append({"name": "mu_other", "type": "normfactor", "data": None})
            for sys_name, data in entry.get("histosys", {}).items():
                modifiers.append({"name": sys_name, "type": "histosys", "data": {
                    "hi_data": data["hi_data"].tolist(), "lo_data": data["lo_data"].tolist()}})
            for sys_name, data in entry.get("normsys", {}).items():
                modifiers.append({"name": sys_name, "type": "normsys",
                                  "data": {"hi": float(data["hi"]), "lo": float(data["lo"])}})
            for kind in ("staterror", "shapesys"):
                for stat_name, data in entry.get(kind, {}).items():
                    modifiers.append({"name": stat_name, "type": kind,
                                      "data": np.sqrt(data["sumw2"]).tolist()})
            samples.append({"name": name, "data": entry["data"].tolist(), "modifiers": modifiers})
        channels.append({"name": region, "samples": samples})
    observations = [
        {"name": c["name"], "data": np.sum(
            [s["data"] for s in c["samples"] if s["name"] != "signal"], axis=0).tolist()}
        for c in channels
    ]
    by_hand = {
        "channels": channels, "observations": observations, "version": "1.0.0",
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": [
            {"name": "mu", "bounds": [[0.0, 100.0]]}]}}],
    }
    with pyhf_numpy():
        ours, theirs = pyhf.Workspace(workspace), pyhf.Workspace(by_hand)
        model, reference = ours.model(), theirs.model()
        assert model.config.par_order == reference.config.par_order
        assert set(model.config.par_order) >= {"mu", "mu_other", "x_scale", "y_shift",
                                               "staterror_SR", "mcstat_SR_background"}
        rng = np.random.default_rng(1)
        for _ in range(3):
            pars = np.asarray(model.config.suggested_init()) * rng.uniform(0.9, 1.1)
            np.testing.assert_allclose(
                model.expected_data(pars), reference.expected_data(pars), rtol=1e-12
            )
        cls = pyhf.infer.hypotest(1.0, ours.data(model), model)
        cls_hand = pyhf.infer.hypotest(1.0, theirs.data(reference), reference)
    assert float(cls) == pytest.approx(float(cls_hand), abs=1e-10)


def test_gradient_through_a_feature_shift_equals_finite_differences(
    analysis: Analysis,
) -> None:
    config = _config(systematics=[{"name": "x_scale", "scale": {"x": 0.05}}])
    shifted = Analysis.from_config(config)
    events = {
        k: jnp.asarray(v[:600]) for k, v in load_events(config.data, "train", 0).items()
    }
    params = shifted.init_params(jax.random.PRNGKey(2))

    @jax.jit
    def cls_of(bias: jax.Array) -> jax.Array:
        p = {**params, "observable": [
            *params["observable"][:-1], {**params["observable"][-1], "b": bias}]}
        return expected_cls(shifted.model, 1.0, yields=shifted(p, events))

    bias = jnp.array([0.1])
    grad = jax.grad(lambda b: cls_of(b))(bias)
    step = 1e-5
    fd = (cls_of(bias + step) - cls_of(bias - step)) / (2 * step)
    assert abs(float(grad[0])) > 0
    np.testing.assert_allclose(grad[0], fd, rtol=1e-5)


def test_samples_enter_only_the_regions_their_events_pass() -> None:
    config = _config(regions=[
        {"name": "SR", "observable": "score"},
        {"name": "CR", "preselection": "x < -50", "observable": "count"},
    ])
    with pytest.raises(ConfigError, match=r"regions\[1\].preselection: no training event of "
                       r"any sample passes it \('x < -50'\)"):
        Analysis.from_config(config)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"channel": "SR"}, "give the regions under 'regions' or the one-region fields "
         "['channel'] at the top level, not both"),
        ({"regions": [{"name": "A"}, {"name": "A"}]}, "regions: duplicated region names ['A']"),
        ({"regions": [{"name": "A", "preselection": "n_lep == 3"}]},
         "regions[0].preselection: preselection 'n_lep == 3': unknown feature 'n_lep', "
         "choose from ['x', 'y']"),
        ({"regions": [{"name": "A", "preselection": "x >> 3 &&"}]},
         "regions[0].preselection: preselection 'x >> 3 &&': invalid syntax"),
        ({"regions": [{"name": "A", "preselection": "__import__('os')"}]},
         "is not allowed in a preselection"),
        ({"regions": [{"name": "A", "observable": "count", "histogram": {"bins": 3}}]},
         "region 'A' counts events (observable: count): it has no histogram"),
        ({"regions": [{"name": "A", "observable": {"feature": "z"}}]},
         "regions[0].observable.feature: unknown feature of source 'blobs'"),
        ({"systematics": [{"name": "s"}]}, "feature shift 's' needs 'scale' or 'shift'"),
        ({"systematics": [{"name": "s", "scale": {"x": 0.0}}]},
         "feature shift 's': scale of x must be finite and non-zero (got 0.0)"),
        ({"systematics": [{"name": "s", "scale": {"z": 0.1}}]},
         "systematics[0].scale.z: unknown feature of source 'blobs'"),
        ({"systematics": [{"name": "mu", "shift": {"x": 0.1}}]},
         "systematics[0].name: 'mu' is already the POI, not a histosys"),
        ({"systematics": [{"name": "s", "shift": {"x": 0.1}, "samples": ["nope"]}]},
         "systematics[0].samples: unknown sample, choose from ['signal', 'background', "
         "'other'] (got 'nope')"),
        ({"systematics": [{"name": "background_shape", "shift": {"x": 0.1}}]},
         "systematics[0].name: sample 'background' already has a variation named "
         "'background_shape'"),
    ],
)
def test_malformed_region_studies_are_one_line(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        _config(**change)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_sample_level_mistakes_are_named() -> None:
    raw = copy.deepcopy(BASE)
    raw["samples"][0]["normfactor"] = "mu_sig"  # the only signal: its POI must be the study's
    with pytest.raises(ConfigError, match="poi: 'mu' scales no signal sample"):
        parse_config(raw)
    raw = copy.deepcopy(BASE)
    raw["samples"][2]["normfactor"] = "x_scale"
    with pytest.raises(ConfigError, match="'x_scale' is already a normfactor, not a histosys"):
        parse_config(raw)
    raw = copy.deepcopy(BASE)
    raw["samples"][1]["staterror"] = "everything"
    with pytest.raises(ConfigError, match=r"samples\[1\].staterror"):
        parse_config(raw)
