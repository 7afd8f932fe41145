"""A published workspace as the study's base (``base_workspace``): the study's regions added to
ATLAS SUSY-2018-14's displaced-leptons likelihood (3 one-bin channels, POI mu_Sig, lumi 1.7 %).

References: the combination built by hand with pyhf (``Workspace.combine`` of the published
file and the study's own workspace), pyhf's hypotest on it (numpy backend), and central finite
differences for the gradient through the combined model.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest
from conftest import event_arrays, study

from neosx.analysis import Analysis
from neosx.analysis.combination import combine_with_base
from neosx.analysis.workspace import build_workspace
from neosx.config import ConfigError, load_config
from neosx.evaluate import hard_figures, pyhf_numpy
from neosx.infer import expected_cls

pytestmark = pytest.mark.filterwarnings(
    "ignore:jsonschema.RefResolver is deprecated:DeprecationWarning"
)

FOLDER = Path("/work/shared/data/workspaces/atlas_susy_2018_14_displaced_leptons")
BASE = FOLDER / "SRee_SRmm_SRem_with_signal_Slep_1000_10.json"
BASE_CHANNELS = ["SRee_cuts", "SRem_cuts", "SRmm_cuts"]

RAW: dict[str, Any] = {
    "name": "combined",
    "base_workspace": str(BASE),
    "poi": "mu_Sig",
    "lumi_uncertainty": 0.017,
    "data": {"source": "blobs", "train_events": 600, "test_events": 1000},
    "samples": [
        {"name": "sig", "events": "signal", "role": "signal", "expected": 2.0},
        {"name": "bkg", "events": "background", "role": "background", "expected": 20.0,
         "histosys": [{"name": "shape", "up": "background_up", "down": "background_down"}]},
    ],
    "channel": "SR_new",
    "observable": {"type": "mlp", "features": ["x", "y"], "hidden": [8]},
    "histogram": {"bins": 3, "range": [0.0, 1.0], "bandwidth": 0.2},
}


@pytest.fixture(scope="module")
def analysis() -> Analysis:
    return Analysis.from_config(study(RAW))


def _study_workspace(analysis: Analysis, yields: dict) -> dict:
    """The study's own workspace (without the base) of ``yields``."""
    config = analysis.config.model_copy(update={"base_workspace": None})
    return build_workspace(config, yields)


def by_hand(analysis: Analysis, yields: dict) -> pyhf.Workspace:
    """The published workspace and the study's channel combined with pyhf directly, the
    base channels' data their background-only expectation (POI 0, the rest nominal)."""
    base = pyhf.Workspace(json.loads(BASE.read_text()))
    with pyhf_numpy():
        model = base.model()
        pars = np.asarray(model.config.suggested_init(), float)
        pars[model.config.poi_index] = 0.0
        expected = model.expected_actualdata(pars)
    mine = _study_workspace(analysis, yields)
    mine["measurements"][0]["name"] = "NormalMeasurement"
    mine["measurements"][0]["config"]["parameters"] = [
        p for p in mine["measurements"][0]["config"]["parameters"]
        if p["name"] not in ("lumi", "mu_Sig")
    ]
    spec = dict(base)
    spec["observations"] = [
        {"name": c, "data": list(expected[model.config.channel_slices[c]])}
        for c in model.config.channels
    ]
    return pyhf.Workspace.combine(pyhf.Workspace(spec), pyhf.Workspace(mine), join="outer")


def soft_yields(analysis: Analysis, params: Any = None) -> dict:
    params = analysis.initial_params() if params is None else params
    return analysis(params, event_arrays(analysis, "train"))


def test_the_combined_model_is_pyhfs_combination(analysis: Analysis) -> None:
    yields = jax.tree.map(np.asarray, soft_yields(analysis))
    ours = pyhf.Workspace(combine_with_base(analysis.config, _study_workspace(analysis, yields)))
    theirs = by_hand(analysis, yields)
    assert sorted(ours.channels) == sorted([*BASE_CHANNELS, "SR_new"])
    assert ours.get_measurement()["config"] == theirs.get_measurement()["config"]
    with pyhf_numpy():
        model, reference = ours.model(), theirs.model()
        assert model.config.par_order == reference.config.par_order
        np.testing.assert_allclose(ours.data(model), theirs.data(reference), rtol=1e-12)
        pars = np.asarray(reference.config.suggested_init()) + 0.1
        np.testing.assert_allclose(model.logpdf(pars, ours.data(model)),
                                   reference.logpdf(pars, theirs.data(reference)), rtol=1e-12)
    # one lumi and one POI, shared by the base's signal and the new channel's
    assert analysis.model.config.par_slices["lumi"].stop - analysis.model.config.par_slices[
        "lumi"].start == 1
    assert analysis.model.config.suggested_bounds[analysis.model.config.poi_index].tolist() == [
        0.0, 10.0]  # the base's setting


def test_combined_cls_equals_pyhf_on_the_merged_workspace(analysis: Analysis) -> None:
    yields = soft_yields(analysis)
    cls = float(expected_cls(analysis.model, 1.0, yields=yields))
    workspace = by_hand(analysis, jax.tree.map(np.asarray, yields))
    with pyhf_numpy():
        model = workspace.model()
        _, band = pyhf.infer.hypotest(1.0, workspace.data(model), model,
                                      return_expected_set=True)
        alone = pyhf.Workspace(json.loads(BASE.read_text()))
        base_model = alone.model()
        pars = np.asarray(base_model.config.suggested_init(), float)
        pars[base_model.config.poi_index] = 0.0
        _, base_band = pyhf.infer.hypotest(1.0, base_model.expected_data(pars), base_model,
                                           return_expected_set=True)
    assert cls == pytest.approx(float(band[2]), rel=1e-6)
    assert cls < float(base_band[2]) - 0.02  # the new channel adds sensitivity (0.571 alone)


@pytest.mark.slow
def test_hard_evaluation_runs_pyhf_on_the_combined_workspace(analysis: Analysis) -> None:
    params = analysis.initial_params()
    hard = jax.tree.map(np.asarray, analysis(params, event_arrays(analysis, "test"), hard=True))
    figures, workspace = hard_figures(analysis, hard)
    assert sorted(c["name"] for c in workspace["channels"]) == sorted([*BASE_CHANNELS, "SR_new"])
    with pyhf_numpy():
        ws = pyhf.Workspace(workspace)
        model = ws.model()
        _, band = pyhf.infer.hypotest(1.0, ws.data(model), model, return_expected_set=True)
    assert figures["cls"] == pytest.approx(float(band[2]), rel=1e-9)
    assert 0.0 < figures["cls"] < 0.57


def test_gradient_through_the_combined_model_equals_finite_differences(
    analysis: Analysis,
) -> None:
    params = analysis.init_params(jax.random.PRNGKey(2))
    events = event_arrays(analysis, "train")

    @jax.jit
    def cls_of(bias: jax.Array) -> jax.Array:
        last = {**params["observable"][-1], "b": bias}
        p = {**params, "observable": [*params["observable"][:-1], last]}
        return expected_cls(analysis.model, 1.0, yields=analysis(p, events))

    bias = jnp.array([0.1])
    grad = jax.grad(cls_of)(bias)
    step = 1e-5
    fd = (cls_of(bias + step) - cls_of(bias - step)) / (2 * step)
    assert abs(float(grad[0])) > 1e-6
    np.testing.assert_allclose(grad[0], fd, rtol=1e-5)


def test_observed_data_and_replaced_channels() -> None:
    config = study(RAW, base_workspace={"path": str(BASE), "data": "observed",
                                        "replace": ["SRee_cuts"]}, channel="SRee_cuts")
    analysis = Analysis.from_config(config)
    yields = jax.tree.map(np.asarray, soft_yields(analysis))
    workspace = combine_with_base(config, _study_workspace(analysis, yields))
    observed = {o["name"]: o["data"] for o in workspace["observations"]}
    published = {o["name"]: o["data"] for o in json.loads(BASE.read_text())["observations"]}
    assert observed["SRem_cuts"] == published["SRem_cuts"]  # the published counts
    assert observed["SRee_cuts"] != published["SRee_cuts"]  # the study's region replaced it
    samples = {c["name"]: [s["name"] for s in c["samples"]] for c in workspace["channels"]}
    assert sorted(samples["SRee_cuts"]) == ["bkg", "sig"]


def test_the_config_path_is_relative_to_the_study_file(tmp_path: Path) -> None:
    raw = copy.deepcopy(RAW)
    (tmp_path / "base.json").write_text(BASE.read_text())
    raw["base_workspace"] = "base.json"
    (tmp_path / "study.yaml").write_text(json.dumps(raw))
    config, resolved = load_config(tmp_path / "study.yaml")
    assert config.base_workspace.path == str((tmp_path / "base.json").resolve())
    assert resolved["base_workspace"] == {"path": config.base_workspace.path}


def _write_patch(tmp_path: Path, patch: list) -> str:
    path = tmp_path / "patch.json"
    path.write_text(json.dumps(patch))
    return str(path)


@pytest.mark.parametrize(("change", "message"), [
    ({"channel": "SRmm_cuts"},
     "regions: region 'SRmm_cuts' is also a channel of base_workspace {base} (rename the "
     "region, or list the channel in base_workspace.replace)"),
    ({"poi": "mu_new"},
     "poi: 'mu_new' is not a parameter of base_workspace {base} (its normalisations: "
     "['mu_Sig']); name the study's POI after the base's"),
    ({"lumi_uncertainty": 0.05},
     "lumi_uncertainty: 0.05 differs from the luminosity width 0.017 of base_workspace {base} "
     "(one lumi parameter is shared)"),
    ({"samples": [RAW["samples"][0], {**RAW["samples"][1], "normfactor": "ucbSRee"}]},
     "modifier 'ucbSRee': a free normalisation (normfactor) in the study (channel 'SR_new', "
     "sample 'bkg') but a constrained nuisance parameter (normsys / histosys) in "
     "base_workspace {base} (channel 'SRee_cuts', sample 'Bkg')"),
    ({"base_workspace": {"path": str(BASE), "replace": ["SRxx"]}},
     "base_workspace.replace: channels ['SRxx'] are not in {base}; it has ['SRem_cuts', "
     "'SRmm_cuts', 'SRee_cuts']"),
    ({"base_workspace": {"path": str(BASE), "measurement": "other"}},
     "base_workspace.measurement: 'other' is not in {base}; it has ['NormalMeasurement']"),
    ({"base_workspace": "/nonexistent/base.json"},
     "base_workspace.path: cannot read /nonexistent/base.json: No such file or directory"),
    ({"base_workspace": {"path": str(BASE), "patches": ["PATCH"]}},
     "base_workspace.patches[0]: PATCH does not apply to {base}: "),
])
def test_bad_combinations_are_refused_with_one_line(
    tmp_path: Path, change: dict, message: str
) -> None:
    patch = _write_patch(tmp_path, [{"op": "remove", "path": "/channels/7"}])
    change = json.loads(json.dumps(change).replace("PATCH", patch))
    message = message.replace("{base}", str(BASE)).replace("PATCH", patch)
    with pytest.raises(ConfigError) as error:
        Analysis.from_config(study(RAW, **change))
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_config_errors_of_the_section() -> None:
    with pytest.raises(ValueError, match=r"replace: channels \['A'\] are listed twice"):
        study(RAW, base_workspace={"path": str(BASE), "replace": ["A", "A"]})
    with pytest.raises(ValueError, match="data"):
        study(RAW, base_workspace={"path": str(BASE), "data": "toys"})


def test_a_patch_applies(tmp_path: Path) -> None:
    patch = _write_patch(tmp_path, [
        {"op": "replace", "path": "/observations/0/data", "value": [3.0]}])
    config = study(RAW, base_workspace={"path": str(BASE), "patches": [patch],
                                        "data": "observed"})
    analysis = Analysis.from_config(config)
    workspace = combine_with_base(config, _study_workspace(
        analysis, jax.tree.map(np.asarray, soft_yields(analysis))))
    observed = {o["name"]: o["data"] for o in workspace["observations"]}
    assert observed["SRee_cuts"] == [3.0]
