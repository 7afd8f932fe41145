"""neosx.histfactory on the published workspaces of shared/data against pyhf (numpy backend).

At the suggested init and at 20 random points inside the suggested bounds where pyhf's
logpdf is finite, ``logpdf`` and ``expected_data`` agree to RTOL = 1e-8 relative (measured
by ``benchmarks/agreement_histfactory.py``: <= 5e-11, ttbar's logpdf). Random points where a
histosys drives a rate negative give NaN in pyhf; there neosx raises eagerly and returns NaN
under ``jax.jit``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pyhf
import pytest

from neosx.histfactory import HistFactory

# pyhf 0.7.6 validates with jsonschema.RefResolver (deprecated in jsonschema 4.18); harmless.
pytestmark = pytest.mark.filterwarnings(
    "ignore:jsonschema.RefResolver is deprecated:DeprecationWarning"
)

WORKSPACES = Path("/work/shared/data/workspaces")
RTOL = 1e-8


def load(name: str) -> tuple[pyhf.Workspace, pyhf.pdf.Model]:
    """The workspace and its pyhf model (the sbottom one with its signal patch applied)."""
    if name == "displaced_leptons":
        path = (
            WORKSPACES
            / "atlas_susy_2018_14_displaced_leptons/SRee_SRmm_SRem_with_signal_Slep_1000_10.json"
        )
        workspace = pyhf.Workspace(json.loads(path.read_text()))
        return workspace, workspace.model()
    if name == "sbottom":
        folder = WORKSPACES / "atlas_susy_2018_31_sbottom_regionA"
        workspace = pyhf.Workspace(json.loads((folder / "RegionA_BkgOnly.json").read_text()))
        patch = json.loads((folder / "RegionA_patch.sbottom_1300_205_60.json").read_text())
        return workspace, workspace.model(patches=[patch])
    path = WORKSPACES / "ttbar_ljets_xsec_inclusive/ttbar_ljets_xsec_inclusive_pruned.json"
    workspace = pyhf.Workspace(json.loads(path.read_text()))
    return workspace, workspace.model()


@pytest.fixture(scope="module", params=["displaced_leptons", "sbottom", "ttbar"])
def case(request: pytest.FixtureRequest) -> tuple[str, pyhf.pdf.Model, HistFactory, np.ndarray]:
    pyhf.set_backend("numpy")
    workspace, reference = load(request.param)
    return request.param, reference, HistFactory(reference), np.asarray(workspace.data(reference))


def max_rel(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def test_structure_is_pyhfs(case: tuple[str, pyhf.pdf.Model, HistFactory, np.ndarray]) -> None:
    name, reference, model, _ = case
    expected = {"displaced_leptons": 13, "sbottom": 64, "ttbar": 132}[name]
    assert model.config.npars == reference.config.npars == expected
    assert model.config.par_names == tuple(reference.config.par_names)
    assert model.config.poi_name == reference.config.poi_name
    np.testing.assert_array_equal(
        model.config.suggested_bounds, reference.config.suggested_bounds()
    )
    np.testing.assert_array_equal(model.config.suggested_fixed, reference.config.suggested_fixed())
    np.testing.assert_allclose(model.config.auxdata, reference.config.auxdata, rtol=1e-15)


def test_agrees_with_pyhf_at_init_and_random_points(
    case: tuple[str, pyhf.pdf.Model, HistFactory, np.ndarray],
) -> None:
    _, reference, model, data = case
    rng = np.random.default_rng(7)
    bounds = np.asarray(reference.config.suggested_bounds())
    logpdf = jax.jit(model.logpdf)
    agreed, undefined = 0, 0
    for k in range(60):
        pars = np.asarray(reference.config.suggested_init()) if k == 0 else rng.uniform(*bounds.T)
        with np.errstate(invalid="ignore"):
            expected = reference.logpdf(pars, data)[0]
        if not np.isfinite(expected):
            undefined += 1
            assert np.isnan(logpdf(pars, data))
            with pytest.raises(ValueError, match="negative expected rates"):
                model.logpdf(pars, data)
            continue
        assert max_rel(model.logpdf(pars, data), expected) < RTOL
        assert max_rel(logpdf(pars, data), expected) < RTOL
        assert max_rel(model.expected_data(pars), reference.expected_data(pars)) < RTOL
        agreed += 1
        if agreed == 21:  # the init and 20 random points
            break
    assert agreed == 21, f"only {agreed} points with a finite pyhf logpdf ({undefined} undefined)"


def test_gradient_equals_finite_differences(
    case: tuple[str, pyhf.pdf.Model, HistFactory, np.ndarray],
) -> None:
    _, reference, model, data = case
    rng = np.random.default_rng(11)
    init = np.asarray(reference.config.suggested_init())
    # a point near the init, off the interpolation kinks at alpha = 0 and ±1
    pars = init + rng.uniform(0.05, 0.3, init.size) * rng.choice([-1.0, 1.0], init.size)
    logpdf = jax.jit(model.logpdf)
    grad = np.asarray(jax.jit(jax.grad(model.logpdf))(pars, data))
    checked = rng.choice(init.size, size=min(init.size, 12), replace=False)
    for i in checked:
        step = 1e-6 * max(1.0, abs(pars[i]))
        up, down = pars.copy(), pars.copy()
        up[i] += step
        down[i] -= step
        numeric = (float(logpdf(up, data)) - float(logpdf(down, data))) / (2 * step)
        assert grad[i] == pytest.approx(numeric, rel=1e-5, abs=1e-6 * np.max(np.abs(grad)))


def test_sample_override_equals_pyhf_on_patched_spec() -> None:
    pyhf.set_backend("numpy")
    workspace, reference = load("sbottom")
    model = HistFactory(reference)
    signal = "sbottom_1300_205_60"
    scaled = {
        c: {signal: np.asarray(reference.spec["channels"][i]["samples"][0]["data"]) * 0.7}
        for i, c in enumerate(c["name"] for c in reference.spec["channels"])
    }
    assert all(reference.spec["channels"][i]["samples"][0]["name"] == signal for i in range(2))
    spec = json.loads(json.dumps(reference.spec))
    for channel in spec["channels"]:
        channel["samples"][0]["data"] = scaled[channel["name"]][signal].tolist()
    rebuilt = pyhf.Model(spec, poi_name=reference.config.poi_name)
    data = np.asarray(workspace.data(reference))
    pars = np.asarray(reference.config.suggested_init()) * 1.02
    assert max_rel(model.logpdf(pars, data, scaled), rebuilt.logpdf(pars, data)[0]) < RTOL
    assert max_rel(model.expected_data(pars, scaled), rebuilt.expected_data(pars)) < RTOL
