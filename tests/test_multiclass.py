"""A softmax network with classes: one region per class (events weighted by the class'
probability, arg-max when hard) or one histogram of the classes (INFERNO's), and the
multi-class cross-entropy baseline.

References: the network's logits evaluated here and ``numpy.histogram`` / ``numpy.bincount``
of the arg-max events in the hard limit, a cross-entropy written in numpy, and central
finite differences for the gradients.
"""

from __future__ import annotations

import copy
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import event_arrays, study

from neosx.analysis import Analysis
from neosx.config import ConfigError, EvaluationConfig, parse_config
from neosx.infer import expected_cls
from neosx.objectives import make_loss

BASE: dict[str, Any] = {
    "name": "classes",
    "data": {"source": "blobs", "train_events": 600, "test_events": 1000},
    "samples": [
        {"name": "signal", "events": "signal", "role": "signal", "expected": 20.0},
        {"name": "b1", "events": "background", "role": "background", "expected": 100.0},
        {"name": "b2", "events": "background_up", "role": "background", "expected": 50.0,
         "normfactor": "mu_b2"},
    ],
    "regions": [
        {"name": "SR", "class": "sig", "observable": "score",
         "histogram": {"bins": 3, "range": [0.0, 1.0], "bandwidth": 0.05}},
        {"name": "CR1", "class": "b1", "observable": "count"},
        {"name": "CR2", "class": "b2", "observable": {"feature": "y"},
         "histogram": {"bins": 2, "range": [-3.0, 3.0], "bandwidth": 0.3}},
        {"name": "ALL", "observable": "classes"},
    ],
    "observable": {"type": "mlp", "features": ["x", "y"], "hidden": [6],
                   "classes": {"sig": ["signal"], "b1": ["b1"], "b2": ["b2"]},
                   "temperature": 0.5},
}


def _config(**changes: Any) -> Any:
    return study(BASE, **changes)


@pytest.fixture(scope="module")
def analysis() -> Analysis:
    return Analysis.from_config(_config())


@pytest.fixture(scope="module")
def events(analysis: Analysis) -> dict[str, jax.Array]:
    return event_arrays(analysis, "test")


def test_hard_regions_are_the_arg_max_classes(
    analysis: Analysis, events: dict[str, jax.Array]
) -> None:
    params = analysis.init_params(jax.random.PRNGKey(3))
    yields = analysis(params, events, hard=True)
    for sample in analysis.config.samples:
        x = np.asarray(events[sample.events])
        logits = np.asarray(analysis.observable.logit(params["observable"], jnp.asarray(x)))
        assert logits.shape == (x.shape[0], 3)
        label = np.argmax(logits, axis=1)
        probability = np.exp(logits - logits.max(1, keepdims=True))
        probability /= probability.sum(1, keepdims=True)
        w = np.full(x.shape[0], sample.expected / x.shape[0])
        sr, _ = np.histogram(probability[label == 0, 0], bins=np.linspace(0, 1, 4),
                             weights=w[label == 0])
        cr2, _ = np.histogram(np.clip(x[label == 2, 1], -3.0, 3.0), bins=np.linspace(-3, 3, 3),
                              weights=w[label == 2])
        by_class = np.bincount(label, weights=w, minlength=3)
        np.testing.assert_allclose(yields["SR"][sample.name]["data"], sr, rtol=1e-12)
        np.testing.assert_allclose(yields["CR1"][sample.name]["data"], [by_class[1]], rtol=1e-12)
        np.testing.assert_allclose(yields["CR2"][sample.name]["data"], cr2, rtol=1e-12)
        np.testing.assert_allclose(yields["ALL"][sample.name]["data"], by_class, rtol=1e-12)


def test_soft_classes_conserve_the_yield_and_harden_with_the_temperature(
    analysis: Analysis, events: dict[str, jax.Array]
) -> None:
    params = analysis.init_params(jax.random.PRNGKey(3))
    hard = analysis(params, events, hard=True)["ALL"]
    knobs = analysis.knobs()
    assert knobs.temperature == 0.5
    gaps = []
    for temperature in (1.0, 0.1, 1e-3):
        soft = analysis(params, events, knobs=knobs._replace(temperature=temperature))["ALL"]
        for sample in analysis.config.samples:
            assert float(jnp.sum(soft[sample.name]["data"])) == pytest.approx(
                sample.expected, rel=1e-12
            )
        gaps.append(max(
            float(jnp.max(jnp.abs(soft[s]["data"] - hard[s]["data"]))) for s in soft
        ))
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-3 * 100.0  # a few events of 1000 near a class boundary


def test_cls_gradient_through_the_softmax_regions_equals_central_differences(
    analysis: Analysis, events: dict[str, jax.Array]
) -> None:
    params = analysis.init_params(jax.random.PRNGKey(3))

    def cls(weight: jax.Array) -> jax.Array:
        network = [dict(layer) for layer in params["observable"]]
        network[-1]["w"] = network[-1]["w"].at[0, 0].set(weight)
        moved = {**params, "observable": network}
        return expected_cls(analysis.model, 1.0, yields=analysis(moved, events))

    w0 = float(params["observable"][-1]["w"][0, 0])
    gradient = float(jax.grad(cls)(w0))
    step = 1e-5
    central = (float(cls(w0 + step)) - float(cls(w0 - step))) / (2 * step)
    assert gradient == pytest.approx(central, rel=1e-5)
    assert abs(gradient) > 1e-6


def test_cross_entropy_baseline_equals_numpy(
    analysis: Analysis, events: dict[str, jax.Array]
) -> None:
    params = analysis.init_params(jax.random.PRNGKey(3))
    loss = make_loss(analysis, {"bce": 1.0}, EvaluationConfig())
    value, _ = loss(analysis.outputs(params, events))
    per_class = []
    for label, sample in enumerate(("signal", "b1", "b2")):
        x = events[analysis.config.samples[label].events]
        logits = np.asarray(analysis.observable.logit(params["observable"], x))
        shifted = logits - logits.max(1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        per_class.append(-np.mean(log_p[:, label]))
        assert sample == analysis.config.samples[label].name
    assert float(value) == pytest.approx(np.mean(per_class), rel=1e-12)


@pytest.mark.parametrize(("change", "message"), [
    (lambda raw: [raw["observable"].pop(k) for k in ("classes", "temperature")],
     "regions[0]: region 'SR' uses classes, and the observable has none (set "
     "observable.classes)"),
    (lambda raw: raw["regions"][0].update({"class": "tau"}),
     "regions[0].class: unknown class, choose from ['sig', 'b1', 'b2'] (got 'tau')"),
    (lambda raw: raw["regions"][0].pop("class"),
     "regions[0]: region 'SR' histograms the score of a network with classes: name the class"),
    (lambda raw: raw["regions"][3].update({"class": "sig"}),
     "region 'ALL' histograms every class (observable: classes): it takes no class"),
    (lambda raw: raw["regions"][3].update({"histogram": {"bins": 3}}),
     "region 'ALL' histograms the classes (observable: classes): one bin per class"),
    (lambda raw: raw["observable"]["classes"].update({"b1": ["b1", "signal"]}),
     "classes: samples ['signal'] are in more than one class"),
    (lambda raw: raw["observable"]["classes"].update({"b2": ["b3"]}),
     "observable.classes.b2: unknown samples ['b3']"),
    (lambda raw: raw["observable"].update({"classes": {"sig": ["signal"]}}),
     "classes: at least 2 are needed, got ['sig']"),
    (lambda raw: raw["observable"].update({"type": "feature", "features": ["x"]}),
     "classes need a network (type: mlp)"),
])
def test_malformed_class_studies_are_one_line(change: Any, message: str) -> None:
    raw = copy.deepcopy(BASE)
    change(raw)
    with pytest.raises(ConfigError) as error:
        parse_config(raw)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_temperature_needs_classes() -> None:
    raw = copy.deepcopy(BASE)
    raw["observable"].pop("classes")
    raw["regions"] = [{"name": "SR"}]
    with pytest.raises(ConfigError, match="temperature is the softmax's of a network with"):
        parse_config(raw)
