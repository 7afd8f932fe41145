"""Several parameters of interest: signal samples with POIs of their own, objectives that
name the POI they act on or combine several, and the hard evaluation per POI.

References: pyhf (numpy backend) on the exported workspace with ``poi_name`` set, the Fisher
covariance inverted by numpy, and central finite differences for the gradients.
"""

from __future__ import annotations

import copy
from typing import Any

import jax
import numpy as np
import pyhf
import pytest
from conftest import event_arrays, study

from neosx.analysis import Analysis
from neosx.config import ConfigError, ObjectiveTerm, parse_config
from neosx.evaluate import hard_figures, hard_histograms, pyhf_numpy
from neosx.histfactory import HistFactory
from neosx.infer import covariance, expected_cls, poi_uncertainty
from neosx.objectives import make_loss

pytestmark = [
    pytest.mark.filterwarnings("ignore:jsonschema.RefResolver is deprecated:DeprecationWarning"),
]

BASE: dict[str, Any] = {
    "name": "two_pois",
    "data": {"source": "blobs", "train_events": 600, "test_events": 2000},
    "poi": "mu_a",
    "samples": [
        {"name": "signal_a", "events": "signal", "role": "signal", "expected": 15.0},
        {"name": "signal_b", "events": "background_up", "role": "signal", "expected": 10.0,
         "normfactor": "mu_b"},
        {"name": "background", "events": "background", "role": "background",
         "expected": 100.0,
         "histosys": [{"name": "shape", "up": "background_up", "down": "background_down"}]},
    ],
    "histogram": {"bins": 4, "bandwidth": 0.1},
    "observable": {"type": "mlp", "features": ["x", "y"], "hidden": [4]},
}


def _config(**changes: Any) -> Any:
    return study(BASE, **changes)


@pytest.fixture(scope="module")
def analysis() -> Analysis:
    return Analysis.from_config(_config())


@pytest.fixture(scope="module")
def events(analysis: Analysis) -> dict[str, jax.Array]:
    return event_arrays(analysis, "train")


def test_each_signal_sample_is_scaled_by_its_poi(analysis: Analysis) -> None:
    assert analysis.config.pois == ("mu_a", "mu_b")
    assert set(analysis.models) == {"mu_a", "mu_b"}
    for poi, model in analysis.models.items():
        assert model.config.par_order[model.config.poi_index] == poi
        bounds = model.config.suggested_bounds[model.config.par_order.index("mu_b")]
        assert tuple(bounds) == (0.0, 100.0)
    spec = analysis.model.spec
    modifiers = {
        s["name"]: {m["name"] for m in s["modifiers"] if m["type"] == "normfactor"}
        for s in spec["channels"][0]["samples"]
    }
    assert modifiers == {"signal_a": {"mu_a"}, "signal_b": {"mu_b"}, "background": set()}


def test_expected_cls_of_each_poi_equals_pyhf(
    analysis: Analysis, events: dict[str, jax.Array]
) -> None:
    """The exported workspace's observations are the study POI's background-only Asimov
    counts (the other POI's signal at its nominal), and each POI's expected CLs equals
    pyhf's with that POI on its own background-only Asimov data."""
    params = analysis.initial_params()
    histograms = hard_histograms(analysis, params, events)
    workspace, _ = analysis.workspace(histograms)
    samples = {s["name"]: s["data"] for s in workspace["channels"][0]["samples"]}
    np.testing.assert_allclose(
        workspace["observations"][0]["data"],
        np.add(samples["background"], samples["signal_b"]), rtol=1e-12,
    )
    figures, _ = hard_figures(analysis, histograms)
    assert set(figures["pois"]) == {"mu_b"}
    with pyhf_numpy():
        ws = pyhf.Workspace(workspace)
        for poi, entry in (("mu_a", figures), ("mu_b", figures["pois"]["mu_b"])):
            model = ws.model(poi_name=poi)
            init = np.asarray(model.config.suggested_init())
            init[model.config.poi_index] = 0.0
            data = model.expected_data(init)
            if poi == "mu_a":
                np.testing.assert_allclose(data, ws.data(model), rtol=1e-12)
            _, band = pyhf.infer.hypotest(1.0, data, model, return_expected_set=True)
            assert entry["cls"] == pytest.approx(float(band[2]), rel=1e-12)
            ours = float(expected_cls(HistFactory(workspace, poi_name=poi), 1.0))
            assert ours == pytest.approx(float(band[2]), rel=1e-5)
    assert figures["cls"] != pytest.approx(figures["pois"]["mu_b"]["cls"], rel=1e-3)


@pytest.mark.parametrize("combine", ["sum", "logdet"])
def test_combined_poi_uncertainty_and_its_gradient(
    analysis: Analysis, events: dict[str, jax.Array], combine: str
) -> None:
    """Sum of variances / log det of the POIs' covariance block, against numpy's inverse of
    the Fisher information; its gradient w.r.t. the signal scale against central
    differences."""
    term = ObjectiveTerm(poi=("mu_a", "mu_b"), combine=combine)
    evaluation = analysis.config.evaluation
    loss = make_loss(analysis, {"poi_uncertainty": term}, evaluation)
    params = analysis.initial_params()
    outputs = analysis.outputs(params, events)
    value, figures = loss(outputs)
    model = analysis.model
    full = np.asarray(covariance(model, 1.0, yields=outputs.yields))
    index = [model.config.par_order.index(p) for p in ("mu_a", "mu_b")]
    block = full[np.ix_(index, index)]
    expected = np.trace(block) if combine == "sum" else np.linalg.slogdet(block)[1]
    assert float(value) == pytest.approx(expected, rel=1e-10)
    assert float(figures["poi_uncertainty"]) == pytest.approx(expected, rel=1e-10)
    # one POI alone is its sigma from the model with that POI
    single = make_loss(analysis, {"poi_uncertainty": ObjectiveTerm(poi="mu_b")}, evaluation)
    sigma_b = float(single(outputs)[0])
    reference = float(poi_uncertainty(analysis.models["mu_b"], 1.0, yields=outputs.yields))
    assert sigma_b == pytest.approx(reference, rel=1e-12)
    assert sigma_b == pytest.approx(np.sqrt(block[1, 1]), rel=1e-6)

    def scaled(factor: jax.Array) -> jax.Array:
        yields = jax.tree.map(lambda a: a, outputs.yields)
        entry = dict(yields["SR"]["signal_b"])
        entry["data"] = entry["data"] * factor
        yields["SR"] = dict(yields["SR"]) | {"signal_b": entry}
        return loss(outputs._replace(yields=yields))[0]

    gradient = float(jax.grad(scaled)(1.0))
    step = 1e-5
    central = (float(scaled(1.0 + step)) - float(scaled(1.0 - step))) / (2 * step)
    assert gradient == pytest.approx(central, rel=1e-6)
    assert abs(gradient) > 1e-3


@pytest.mark.parametrize(("changes", "message"), [
    ({"poi": "mu_c", "samples": [{**BASE["samples"][0], "normfactor": "mu_a"},
                                 *BASE["samples"][1:]]},
     "poi: 'mu_c' scales no signal sample (each has a normfactor of its own); set poi to one "
     "of ['mu_a', 'mu_b']"),
    ({"training": {"objective": {"cls": {"poi": "mu_x"}}}},
     "training.objective.cls.poi: not a POI of the study, choose from ['mu_a', 'mu_b'] (got "
     "'mu_x')"),
    ({"training": {"objective": {"cls": {"poi": ["mu_a", "mu_b"]}}}},
     "objective 'cls' acts on one POI; only poi_uncertainty combines several (got ['mu_a', "
     "'mu_b'])"),
    ({"training": {"objective": {"s_over_sqrt_b": {"poi": "mu_a"}}}},
     "objective 's_over_sqrt_b' acts on no POI (got poi 'mu_a')"),
    ({"training": {"objective": {"cls": {"weight": -2.0, "poi": "mu_b"}}}},
     "the weight of objective 'cls' must be finite and > 0 (got -2.0)"),
])
def test_malformed_poi_choices_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        _config(**changes)
    assert message in str(error.value)


def test_a_poi_named_like_a_background_normfactor_is_refused() -> None:
    raw = copy.deepcopy(BASE)
    raw["samples"][2]["normfactor"] = "mu_b"
    with pytest.raises(ConfigError, match="'mu_b' is already a POI, not a normfactor"):
        parse_config(raw)
