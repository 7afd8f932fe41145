"""The analysis and objectives (one region): hard limit, normalisation, gradients, pyhf."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neosx.analysis import Analysis
from neosx.config import load_config
from neosx.data import load_events
from neosx.evaluate import hard_histograms, pyhf_figures
from neosx.infer import discovery_significance, expected_cls, expected_upper_limit
from neosx.objectives import OBJECTIVES, make_loss

DEFAULT = Path(__file__).parents[1] / "configs" / "neos_blobs.yaml"
SMALL = [
    "data.train_events=600",
    "data.test_events=3000",
    "observable.hidden=[6]",
]


def _analysis(*overrides: str) -> tuple[Analysis, dict[str, jax.Array]]:
    config, _ = load_config(DEFAULT, [*SMALL, *overrides])
    analysis = Analysis.from_config(config)
    events = {k: jnp.asarray(v) for k, v in load_events(config.data, "train", 0).items()}
    return analysis, events


def test_hard_analysis_equals_numpy_cut_and_count() -> None:
    analysis, events = _analysis("cuts=[{feature: x, keep: below, init: 0.5, slope: 3.0}]")
    params = analysis.init_params(jax.random.PRNGKey(3))
    params["regions"]["SR"]["edges"] = jnp.array([0.3, -0.2, 0.1, 0.5])  # non-uniform edges
    yields = analysis(params, events, hard=True)["SR"]
    edges = np.asarray(analysis.regions[0].edges(params["regions"]["SR"]))
    for sample, event_set, expected in [
        ("signal", "signal", 20.0), ("background", "background", 100.0)
    ]:
        x = np.asarray(events[event_set])
        score = np.asarray(analysis.observable.apply(params["observable"], jnp.asarray(x)))
        keep = x[:, 0] < 0.5
        weights = np.full(len(x), expected / len(x))
        reference, _ = np.histogram(score[keep], edges, weights=weights[keep])
        np.testing.assert_allclose(yields[sample]["data"], reference, rtol=1e-12, atol=1e-12)
    up = np.asarray(events["background_up"])
    score = np.asarray(analysis.observable.apply(params["observable"], jnp.asarray(up)))
    reference, _ = np.histogram(score[up[:, 0] < 0.5], edges)
    np.testing.assert_allclose(
        yields["background"]["histosys"]["background_shape"]["hi_data"],
        reference * 100.0 / len(up), rtol=1e-12,
    )


def test_soft_yields_conserve_expected_events_and_tend_to_hard() -> None:
    analysis, events = _analysis()
    params = analysis.init_params(jax.random.PRNGKey(0))
    soft = analysis(params, events)["SR"]
    # overflow "clip" and no cuts: every sample sums to its expected yield
    np.testing.assert_allclose(float(jnp.sum(soft["signal"]["data"])), 20.0, rtol=1e-12)
    np.testing.assert_allclose(float(jnp.sum(soft["background"]["data"])), 100.0, rtol=1e-12)
    knobs = analysis.knobs()._replace(bandwidths=(1e-7,))
    sharp = analysis(params, events, knobs=knobs)["SR"]["background"]["data"]
    hard = analysis(params, events, hard=True)["SR"]["background"]["data"]
    np.testing.assert_allclose(sharp, hard, atol=1e-6)


def test_trainable_edges_are_ordered_and_span_the_range() -> None:
    analysis, _ = _analysis()
    edges = analysis.regions[0].edges({"edges": jnp.array([2.0, -3.0, 0.5, 1.0])})
    assert float(edges[0]) == 0.0 and float(edges[-1]) == 1.0
    assert bool(jnp.all(jnp.diff(edges) > 0))
    fixed, _ = _analysis("histogram.trainable_edges=false")
    params = fixed.init_params(jax.random.PRNGKey(0))
    assert "edges" not in params["regions"]["SR"]
    edges = fixed.regions[0].edges(params["regions"]["SR"])
    np.testing.assert_allclose(edges, np.linspace(0, 1, 5))


def test_cls_gradient_matches_finite_differences() -> None:
    analysis, events = _analysis()
    params = analysis.init_params(jax.random.PRNGKey(1))

    @jax.jit
    def cls_of(edge_logits: jax.Array, bias: jax.Array) -> jax.Array:
        p = {**params, "regions": {"SR": {**params["regions"]["SR"], "edges": edge_logits}}}
        p["observable"] = [*params["observable"][:-1], {**params["observable"][-1], "b": bias}]
        return expected_cls(analysis.model, 1.0, yields=analysis(p, events))

    logits, bias = jnp.array([0.1, -0.2, 0.3, 0.0]), jnp.array([0.2])
    grad_logits, grad_bias = jax.jit(jax.grad(cls_of, argnums=(0, 1)))(logits, bias)
    step = 1e-5
    for i in range(4):
        e = jnp.zeros(4).at[i].set(step)
        fd = (cls_of(logits + e, bias) - cls_of(logits - e, bias)) / (2 * step)
        np.testing.assert_allclose(grad_logits[i], fd, rtol=1e-5, atol=1e-10)
    fd = (cls_of(logits, bias + step) - cls_of(logits, bias - step)) / (2 * step)
    np.testing.assert_allclose(grad_bias[0], fd, rtol=1e-5)


def test_hard_figures_of_neosx_equal_pyhf() -> None:
    analysis, _ = _analysis()
    config = analysis.config
    params = analysis.init_params(jax.random.PRNGKey(0))
    histograms = hard_histograms(analysis, params, load_events(config.data, "test", 0))
    channel = histograms["SR"]
    assert np.all(channel["background"]["data"] > 0)  # every bin occupied: no bin dropped
    workspace, merged = analysis.workspace(histograms)
    assert merged == {}
    figures = pyhf_figures(workspace, config.evaluation)

    @jax.jit
    def neosx_figures(yields: dict) -> tuple[jax.Array, jax.Array, jax.Array]:
        return (
            expected_cls(analysis.model, 1.0, yields=yields),
            discovery_significance(analysis.model, yields=yields),
            expected_upper_limit(analysis.model, 0.95, yields=yields),
        )

    cls, z0, limit = (float(v) for v in neosx_figures(histograms))
    assert abs(cls - figures["cls"]) < 1e-6
    assert abs(z0 - figures["z0"]) < 1e-5
    assert abs(limit - figures["upper_limit"]) < 1e-4
    assert len(figures["cls_band"]) == 5 and figures["cls_band"][2] == figures["cls"]


def test_empty_bins_are_merged_into_their_neighbour() -> None:
    analysis, _ = _analysis()
    zero = np.zeros(4)
    nominal = np.array([0.0, 10.0, 20.0, 70.0])
    yields = {"SR": {
        "signal": {"data": np.array([0.0, 1.0, 4.0, 15.0])},
        "background": {
            "data": nominal,
            "histosys": {"background_shape": {"hi_data": nominal + np.eye(4)[0] * 2.0,
                                              "lo_data": nominal}},
        },
    }}
    workspace, merged = analysis.workspace(yields)
    assert workspace["observations"][0]["data"] == [10.0, 20.0, 70.0]
    assert merged == {"SR": [[0, 1], [2], [3]]}
    samples = {s["name"]: s for s in workspace["channels"][0]["samples"]}
    modifiers = samples["background"]["modifiers"]
    histosys = [m["data"]["hi_data"] for m in modifiers if m["type"] == "histosys"]
    assert histosys == [[12.0, 20.0, 70.0]]
    yields["SR"]["signal"]["data"] = zero
    yields["SR"]["background"]["data"] = zero
    with pytest.raises(ValueError, match="region 'SR': no bin holds background"):
        analysis.workspace(yields)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_is_finite_and_differentiable(name: str) -> None:
    analysis, events = _analysis()
    params = analysis.init_params(jax.random.PRNGKey(2))
    loss_fn = make_loss(analysis, {name: 1.0}, analysis.config.evaluation)

    def loss(p: dict) -> jax.Array:
        return loss_fn(analysis.outputs(p, events))[0]

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(float(value))
    leaves = jax.tree.leaves(grads["observable"])
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)


def test_objective_figures_have_the_physics_sign() -> None:
    analysis, events = _analysis()
    params = analysis.init_params(jax.random.PRNGKey(2))
    weights = {"cls": 1.0, "z0": 0.5, "bce": 0.1}
    loss, figures = make_loss(analysis, weights, analysis.config.evaluation)(
        analysis.outputs(params, events)
    )
    assert float(figures["z0"]) > 0  # Z0 reported positive, minimised as -Z0
    expected = figures["cls"] - 0.5 * figures["z0"] + 0.1 * figures["bce"]
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-12)
    with pytest.raises(ValueError, match="unknown objectives"):
        make_loss(analysis, {"nope": 1.0}, analysis.config.evaluation)


def test_cut_thresholds_train_in_units_of_the_feature_spread() -> None:
    analysis, events = _analysis(
        "cuts=[{feature: x, init: 0.5}, {feature: y, init: -1.0, trainable: false}]"
    )
    training = np.concatenate(list(load_events(analysis.config.data, "train", 0).values()))
    region = analysis.regions[0]
    np.testing.assert_allclose(region.cut_scales, training.std(axis=0), rtol=1e-12)
    params = analysis.init_params(jax.random.PRNGKey(0))
    np.testing.assert_allclose(region.thresholds(params["regions"]["SR"]), [0.5, -1.0], rtol=1e-12)

    def signal_in_last_bin(p: dict) -> jax.Array:
        return analysis(p, events)["SR"]["signal"]["data"][-1]

    grad = jax.grad(signal_in_last_bin)(params)["regions"]["SR"]["cuts"]
    assert float(grad[0]) != 0.0 and float(grad[1]) == 0.0  # the frozen cut gets no gradient
