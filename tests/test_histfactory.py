"""Tests of neosx.histfactory on small specs: agreement with pyhf, overrides, gradients, errors.

pyhf 0.7.6 (numpy backend) is the reference. Agreement is asserted to RTOL = 1e-8 relative
(the contract; the measured differences are ~1e-14), gradients against central finite
differences in float64.
"""

from __future__ import annotations

import copy
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest

from neosx.histfactory import HistFactory, build_spec

# pyhf 0.7.6 validates specs with jsonschema.RefResolver, deprecated in jsonschema 4.18; the
# warning concerns pyhf's internals (neosx mutes it at its own pyhf boundary).
pytestmark = pytest.mark.filterwarnings(
    "ignore:jsonschema.RefResolver is deprecated:DeprecationWarning"
)

RTOL = 1e-8
CODES = [
    {"normsys": {"interpcode": "code4"}, "histosys": {"interpcode": "code4p"}},
    {"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}},
    {"normsys": {"interpcode": "code4"}, "histosys": {"interpcode": "code0"}},
    {"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code4p"}},
]


@pytest.fixture(autouse=True)
def _numpy_backend() -> None:
    pyhf.set_backend("numpy")


def all_modifiers_spec() -> dict[str, Any]:
    """Two channels, four samples, every modifier type, shared parameters, edge bins.

    SR bin 2 has an empty bkg1 (nominal 0, staterror 0); bkg2's shapesys has a zero
    uncertainty bin (a fixed gamma); bkg3 only exists in CR; the measurement fixes, bounds,
    re-initialises parameters and moves a normsys constraint's auxdata.
    """
    return {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": [5.0, 10.0, 3.0],
                        "modifiers": [
                            {"name": "mu", "type": "normfactor", "data": None},
                            {"name": "lumi", "type": "lumi", "data": None},
                            {
                                "name": "jes",
                                "type": "histosys",
                                "data": {"hi_data": [5.5, 10.5, 3.6], "lo_data": [4.4, 9.7, 2.5]},
                            },
                            {"name": "theory", "type": "normsys", "data": {"hi": 1.15, "lo": 0.88}},
                        ],
                    },
                    {
                        "name": "bkg1",
                        "data": [50.0, 40.0, 0.0],
                        "modifiers": [
                            {"name": "lumi", "type": "lumi", "data": None},
                            {"name": "staterror_SR", "type": "staterror", "data": [3.0, 2.5, 0.0]},
                            {
                                "name": "bkg_norm",
                                "type": "normsys",
                                "data": {"hi": 1.1, "lo": 0.95},
                            },
                            {
                                "name": "jes",
                                "type": "histosys",
                                "data": {
                                    "hi_data": [53.0, 41.0, 0.5],
                                    "lo_data": [48.0, 39.5, 0.0],
                                },
                            },
                            {"name": "mu_bkg", "type": "normfactor", "data": None},
                        ],
                    },
                    {
                        "name": "bkg2",
                        "data": [20.0, 25.0, 8.0],
                        "modifiers": [
                            {"name": "staterror_SR", "type": "staterror", "data": [2.0, 1.5, 1.0]},
                            {"name": "bkg2_mc", "type": "shapesys", "data": [2.0, 0.0, 1.6]},
                            {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.2, "lo": 0.9}},
                        ],
                    },
                ],
            },
            {
                "name": "CR",
                "samples": [
                    {
                        "name": "bkg1",
                        "data": [100.0, 80.0],
                        "modifiers": [
                            {"name": "mu_bkg", "type": "normfactor", "data": None},
                            {"name": "cr_shape", "type": "shapefactor", "data": None},
                            {"name": "staterror_CR", "type": "staterror", "data": [5.0, 4.0]},
                            {
                                "name": "jes",
                                "type": "histosys",
                                "data": {"hi_data": [104.0, 83.0], "lo_data": [97.0, 78.0]},
                            },
                        ],
                    },
                    {
                        "name": "bkg3",
                        "data": [10.0, 12.0],
                        "modifiers": [
                            {
                                "name": "bkg_norm",
                                "type": "normsys",
                                "data": {"hi": 1.05, "lo": 0.97},
                            },
                            {"name": "staterror_CR", "type": "staterror", "data": [1.0, 1.2]},
                        ],
                    },
                ],
            },
        ],
        "parameters": [
            {
                "name": "lumi",
                "auxdata": [1.0],
                "sigmas": [0.02],
                "bounds": [[0.9, 1.1]],
                "inits": [1.0],
            },
            {"name": "theory", "fixed": True, "inits": [0.2]},
            {"name": "bkg_norm", "auxdata": [0.3], "bounds": [[-3.0, 3.0]]},
            {"name": "mu", "bounds": [[0.0, 5.0]], "inits": [0.5]},
        ],
    }


def random_points(model: pyhf.pdf.Model, n: int, seed: int = 0) -> list[np.ndarray]:
    """The suggested init followed by ``n`` uniform points inside the suggested bounds."""
    rng = np.random.default_rng(seed)
    bounds = np.asarray(model.config.suggested_bounds())
    init = np.asarray(model.config.suggested_init(), dtype=float)
    return [init] + [rng.uniform(bounds[:, 0], bounds[:, 1]) for _ in range(n)]


def max_rel(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def assert_agrees(
    model: HistFactory, reference: pyhf.pdf.Model, data: np.ndarray, n: int = 20
) -> None:
    """logpdf and expected_data equal pyhf's at the init and ``n`` random points."""
    aux = data[reference.config.nmaindata :]
    for pars in random_points(reference, n):
        assert max_rel(model.logpdf(pars, data), reference.logpdf(pars, data)[0]) < RTOL
        constraint = reference.constraint_logpdf(aux, pars)
        assert max_rel(model.constraint_logpdf(aux, pars), constraint) < RTOL
        assert max_rel(model.expected_data(pars), reference.expected_data(pars)) < RTOL
        assert (
            max_rel(
                model.expected_data(pars, include_auxdata=False),
                reference.expected_data(pars, include_auxdata=False),
            )
            < RTOL
        )


# -- agreement with pyhf ------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings", CODES, ids=lambda s: "-".join(v["interpcode"] for v in s.values())
)
def test_every_modifier_and_code_agrees_with_pyhf(settings: dict[str, Any]) -> None:
    spec = all_modifiers_spec()
    reference = pyhf.Model(spec, poi_name="mu", modifier_settings=settings)
    model = HistFactory(spec, modifier_settings=settings)
    data = np.asarray(reference.expected_data(reference.config.suggested_init())) * 1.1
    assert_agrees(model, reference, data)


def test_config_is_pyhfs() -> None:
    spec = all_modifiers_spec()
    reference = pyhf.Model(spec, poi_name="mu")
    config = HistFactory(spec).config
    assert config.par_order == tuple(reference.config.par_order)
    assert config.par_names == tuple(reference.config.par_names)
    assert config.poi_name == "mu" and config.poi_index == reference.config.poi_index
    np.testing.assert_array_equal(config.suggested_init, reference.config.suggested_init())
    np.testing.assert_array_equal(config.suggested_bounds, reference.config.suggested_bounds())
    np.testing.assert_array_equal(config.suggested_fixed, reference.config.suggested_fixed())
    np.testing.assert_allclose(config.auxdata, reference.config.auxdata, rtol=1e-15)
    assert config.channels == ("CR", "SR") and config.samples == ("bkg1", "bkg2", "bkg3", "signal")
    assert dict(config.channel_nbins) == {"CR": 2, "SR": 3}
    assert config.npars == reference.config.npars and config.nauxdata == reference.config.nauxdata
    assert config.par_slice("staterror_SR") == reference.config.par_slice("staterror_SR")
    assert dict(config.interpcodes) == {"normsys": "code4", "histosys": "code4p"}
    # the fixed staterror parameter of the empty bin, and the shapesys gamma without uncertainty
    fixed = dict(zip(config.par_names, config.suggested_fixed, strict=True))
    assert fixed["theory"] and fixed["bkg2_mc[1]"] and not fixed["staterror_SR[2]"]


def test_measurement_sigmas_and_shapesys_settings_are_respected() -> None:
    spec = all_modifiers_spec()
    spec["parameters"] += [
        {"name": "staterror_CR", "sigmas": [0.3, 0.2]},
        {"name": "bkg2_mc", "auxdata": [90.0, 1.0, 20.0], "factors": [100.0, 1.0, 25.0]},
    ]
    reference = pyhf.Model(spec, poi_name="mu")
    model = HistFactory(spec)
    data = np.asarray(reference.expected_data(reference.config.suggested_init()))
    assert_agrees(model, reference, data, n=5)
    # overriding what the measurement fixes changes nothing, as in pyhf
    yields = {"CR": {"bkg3": {"staterror": {"staterror_CR": [3.0, 3.0]}}}}
    pars = reference.config.suggested_init()
    assert max_rel(model.logpdf(pars, data, yields), reference.logpdf(pars, data)[0]) < RTOL


def test_poisson_logpdf_of_tiny_and_zero_counts() -> None:
    spec = all_modifiers_spec()
    reference = pyhf.Model(spec, poi_name="mu")
    model = HistFactory(spec)
    data = np.concatenate([[1e-8, 0.0, 0.0, 1e-8, 2.0], reference.config.auxdata])
    assert_agrees(model, reference, data, n=3)


def test_modifiers_shared_across_channels_of_different_sizes() -> None:
    """A staterror and a shapefactor spanning a 2-bin and a 3-bin channel.

    pyhf numbers the staterror parameters by global bin and the shapefactor ones by local bin
    (the third bin of channel B then reads parameter 0, here the normfactor ``mu``).
    """
    spec = {
        "channels": [
            {
                "name": "A",
                "samples": [
                    {
                        "name": "b",
                        "data": [10.0, 20.0],
                        "modifiers": [
                            {"name": "stat", "type": "staterror", "data": [1.0, 2.0]},
                            {"name": "sf", "type": "shapefactor", "data": None},
                        ],
                    },
                    {
                        "name": "c",
                        "data": [5.0, 6.0],
                        "modifiers": [{"name": "stat", "type": "staterror", "data": [1.0, 1.0]}],
                    },
                ],
            },
            {
                "name": "B",
                "samples": [
                    {
                        "name": "b",
                        "data": [7.0, 8.0, 9.0],
                        "modifiers": [
                            {"name": "stat", "type": "staterror", "data": [1.0, 2.0, 0.5]},
                            {"name": "sf", "type": "shapefactor", "data": None},
                        ],
                    },
                    {
                        "name": "c",
                        "data": [1.0, 2.0, 3.0],
                        "modifiers": [
                            {"name": "stat", "type": "staterror", "data": [0.3, 0.2, 0.1]},
                            {"name": "mu", "type": "normfactor", "data": None},
                        ],
                    },
                ],
            },
        ]
    }
    reference = pyhf.Model(spec)
    model = HistFactory(spec)
    assert model.config.par_names == ("mu", "sf[0]", "sf[1]", *(f"stat[{i}]" for i in range(5)))
    data = np.asarray(reference.expected_data(reference.config.suggested_init())) * 1.1
    assert_agrees(model, reference, data, n=10)


# -- inputs --------------------------------------------------------------------------------


def workspace_of(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "channels": spec["channels"],
        "observations": [
            {"name": c["name"], "data": [1.0] * len(c["samples"][0]["data"])}
            for c in spec["channels"]
        ],
        "measurements": [
            {"name": "other", "config": {"poi": "mu_bkg", "parameters": spec["parameters"][:1]}},
            {"name": "main", "config": {"poi": "mu", "parameters": spec["parameters"]}},
        ],
        "version": "1.0.0",
    }


def test_sources_workspace_model_and_spec() -> None:
    spec = all_modifiers_spec()
    workspace = workspace_of(spec)
    by_name = HistFactory(workspace, measurement="main")
    assert by_name.config.poi_name == "mu"
    assert by_name.config.suggested_bounds[by_name.config.poi_index].tolist() == [0.0, 5.0]
    assert HistFactory(workspace).config.poi_name == "mu_bkg"  # the first measurement
    assert HistFactory(pyhf.Workspace(workspace), measurement=1).config.poi_name == "mu"
    assert HistFactory(workspace, poi_name="mu_bkg", measurement="main").config.poi_name == "mu_bkg"
    pyhf_model = pyhf.Workspace(workspace).model(
        measurement_name="main", modifier_settings=CODES[1]
    )
    from_model = HistFactory(pyhf_model)
    assert from_model.config.interpcodes["histosys"] == "code0"
    data = np.asarray(pyhf_model.expected_data(pyhf_model.config.suggested_init()))
    assert_agrees(from_model, pyhf_model, data, n=3)
    no_mu = copy.deepcopy(spec)
    no_mu["channels"][0]["samples"][0]["modifiers"][0]["name"] = "mu_sig"
    no_mu["parameters"] = no_mu["parameters"][:3]
    assert HistFactory(no_mu).config.poi_index is None
    assert HistFactory(no_mu, poi_name="mu_sig").config.poi_name == "mu_sig"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda spec: ([1.0, 2.0], {}), r"expected a pyhf workspace, a model spec .* got list"),
        (lambda spec: (spec, {"measurement": "main"}), r"measurement= selects a measurement"),
        (
            lambda spec: (workspace_of(spec), {"measurement": "nope"}),
            r"pyhf rejects the workspace: no measurement by name 'nope'",
        ),
        (
            lambda spec: (spec, {"poi_name": "xsec"}),
            r"pyhf rejects the model spec: The parameter of interest 'xsec' cannot be fit",
        ),
        (
            lambda spec: (spec, {"modifier_settings": {"histosys": {"interpcode": "code2"}}}),
            r"histosys interpolation 'code2' is not supported; use one of \['code0', 'code4p'\]",
        ),
    ],
)
def test_bad_sources(make: Any, message: str) -> None:
    source, kwargs = make(all_modifiers_spec())
    with pytest.raises(ValueError, match=message):
        HistFactory(source, **kwargs)


# -- yields overrides ------------------------------------------------------------------------


def override(rng: np.random.Generator) -> dict[str, Any]:
    """A yields override touching every kind of overridable data."""
    jitter = lambda values: np.asarray(values) * rng.uniform(0.8, 1.2, len(values))  # noqa: E731
    return {
        "SR": {
            "signal": jitter([5.0, 10.0, 3.0]),
            "bkg1": {
                "data": jitter([50.0, 40.0, 2.0]),
                "histosys": {"jes": {"hi_data": jitter([53.0, 41.0, 2.5])}},
                "normsys": {"bkg_norm": {"hi": 1.3, "lo": 0.8}},
                "staterror": {"staterror_SR": {"sumw2": jitter([9.0, 6.0, 0.5])}},
            },
            "bkg2": {
                "shapesys": {"bkg2_mc": jitter([2.0, 1.0, 1.6])},
                "staterror": {"staterror_SR": jitter([2.0, 1.5, 1.0])},
            },
        },
        "CR": {
            "bkg1": {
                "histosys": {"jes": {"lo_data": jitter([97.0, 78.0]), "hi_data": [105.0, 82.0]}}
            },
        },
    }


def rebuilt(spec: dict[str, Any], yields: dict[str, Any]) -> dict[str, Any]:
    """The spec with the override's numbers written into it (what pyhf should see)."""
    spec = copy.deepcopy(spec)
    for channel in spec["channels"]:
        for sample in channel["samples"]:
            entry = yields.get(channel["name"], {}).get(sample["name"])
            if entry is None:
                continue
            entry = entry if isinstance(entry, dict) else {"data": entry}
            if "data" in entry:
                sample["data"] = np.asarray(entry["data"]).tolist()
            for modifier in sample["modifiers"]:
                value = entry.get(modifier["type"], {}).get(modifier["name"])
                if value is None:
                    continue
                if modifier["type"] in ("staterror", "shapesys"):
                    unc = np.sqrt(value["sumw2"]) if isinstance(value, dict) else value
                    modifier["data"] = np.asarray(unc).tolist()
                else:
                    modifier["data"].update({k: np.asarray(v).tolist() for k, v in value.items()})
    return spec


@pytest.mark.parametrize("settings", CODES[:2], ids=["code4-code4p", "code1-code0"])
def test_override_equals_pyhf_on_rebuilt_spec(settings: dict[str, Any]) -> None:
    spec = all_modifiers_spec()
    model = HistFactory(spec, modifier_settings=settings)
    rng = np.random.default_rng(3)
    for _ in range(3):
        yields = override(rng)
        reference = pyhf.Model(rebuilt(spec, yields), poi_name="mu", modifier_settings=settings)
        main = np.asarray(
            reference.expected_data(reference.config.suggested_init(), include_auxdata=False)
        )
        data = np.concatenate([main * 1.05, reference.config.auxdata])
        assert max_rel(model.auxdata(yields), reference.config.auxdata) < RTOL
        prepared = model.prepare(yields)
        assert model.prepare(prepared) is prepared
        for pars in random_points(reference, 5, seed=int(rng.integers(1000))):
            expected = reference.logpdf(pars, data)[0]
            assert max_rel(model.logpdf(pars, data, yields), expected) < RTOL
            assert max_rel(model.logpdf(pars, data, prepared), expected) < RTOL
            assert max_rel(model.logpdf(pars, main * 1.05, yields), expected) < RTOL
            assert max_rel(model.expected_data(pars, yields), reference.expected_data(pars)) < RTOL
            assert (
                max_rel(
                    model.expected_rates_by_sample(pars, yields),
                    reference.main_model.expected_data(pars, return_by_sample=True),
                )
                < RTOL
            )


def test_constraint_information_is_pyhfs_constraint_hessian_at_asimov() -> None:
    """Diagonal constraint information (1/sigma^2 Gaussian, tau/gamma Poisson, 0 free) equals
    the central-difference Hessian of pyhf's constraint_logpdf on the Asimov auxiliary data,
    with the yields overridden (staterror widths and shapesys tau follow them)."""
    spec = all_modifiers_spec()
    model = HistFactory(spec)
    yields = override(np.random.default_rng(5))
    reference = pyhf.Model(rebuilt(spec, yields), poi_name="mu")
    pars = np.asarray(reference.config.suggested_init(), dtype=float)
    pars[reference.config.par_slice("bkg2_mc")] = [1.05, 1.0, 0.97]  # shapesys gamma != 1
    aux = np.asarray(reference.expected_auxdata(pars), dtype=float)
    step = 1e-4
    hessian = []
    for i in range(pars.size):
        shift = np.zeros_like(pars)
        shift[i] = step
        values = [float(reference.constraint_logpdf(aux, pars + k * shift)) for k in (-1, 0, 1)]
        hessian.append(-(values[0] - 2 * values[1] + values[2]) / step**2)
    information = model.constraint_information(pars, model.prepare(yields))
    np.testing.assert_allclose(information, hessian, rtol=1e-5, atol=1e-6)
    assert np.count_nonzero(information) == reference.config.nauxdata  # free parameters: 0


def test_override_with_spec_values_is_identity() -> None:
    spec = all_modifiers_spec()
    model = HistFactory(spec)
    same = {
        "SR": {
            "bkg2": {
                "data": [20.0, 25.0, 8.0],
                "staterror": {"staterror_SR": [2.0, 1.5, 1.0]},
                "shapesys": {"bkg2_mc": {"sumw2": [4.0, 0.0, 2.56]}},
            }
        }
    }
    pars = model.config.suggested_init * 1.1
    data = np.asarray(model.expected_data(model.config.suggested_init))
    assert float(model.logpdf(pars, data, same)) == pytest.approx(
        float(model.logpdf(pars, data)), rel=1e-14
    )


# -- JAX transformations -------------------------------------------------------------------


@pytest.fixture(scope="module")
def small() -> tuple[HistFactory, np.ndarray]:
    model = HistFactory(all_modifiers_spec())
    data = np.asarray(model.expected_data(model.config.suggested_init)) * 1.1
    return model, data


def test_jit_vmap_and_pytree(small: tuple[HistFactory, np.ndarray]) -> None:
    model, data = small
    reference = pyhf.Model(all_modifiers_spec(), poi_name="mu")
    points = np.stack(random_points(reference, 4))
    looped = np.array([float(model.logpdf(p, data)) for p in points])
    np.testing.assert_allclose(
        jax.vmap(model.logpdf, in_axes=(0, None))(points, data), looped, rtol=1e-12
    )
    jitted = jax.jit(model.logpdf)
    np.testing.assert_allclose([jitted(p, data) for p in points], looped, rtol=1e-12)
    assert jitted._cache_size() == 1  # new values, no recompilation
    # the model is a leafless pytree: it can be an ordinary argument of a jitted function
    assert float(jax.jit(lambda m, p: m.logpdf(p, data))(model, points[1])) == pytest.approx(
        looped[1], rel=1e-12
    )
    # vmap over yields
    scales = jnp.array([0.9, 1.0, 1.2])
    nominal = jnp.array([50.0, 40.0, 0.0])
    batched = jax.vmap(lambda s: model.logpdf(points[0], data, {"SR": {"bkg1": nominal * s}}))(
        scales
    )
    single = [float(model.logpdf(points[0], data, {"SR": {"bkg1": nominal * s}})) for s in scales]
    np.testing.assert_allclose(batched, single, rtol=1e-12)


def central_difference(f: Any, x: np.ndarray, step: float = 1e-6) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    grad = np.zeros_like(x)
    for i in range(x.size):
        h = step * max(1.0, abs(x.flat[i]))
        up, down = x.copy(), x.copy()
        up.flat[i] += h
        down.flat[i] -= h
        grad.flat[i] = (f(up) - f(down)) / (2 * h)
    return grad


@pytest.mark.parametrize("settings", CODES[:2], ids=["code4-code4p", "code1-code0"])
def test_gradient_wrt_pars_equals_finite_differences(settings: dict[str, Any]) -> None:
    model = HistFactory(all_modifiers_spec(), modifier_settings=settings)
    data = np.asarray(model.expected_data(model.config.suggested_init)) * 1.1
    names = model.config.par_names
    logpdf, grad_logpdf = jax.jit(model.logpdf), jax.jit(jax.grad(model.logpdf))
    # normsys / histosys parameters in each branch of the interpolation, away from kinks
    for alpha in (-1.7, -0.6, 0.4, 1.3):
        pars = np.array(model.config.suggested_init) * 1.05
        for name in ("jes", "bkg_norm", "theory"):
            pars[names.index(name)] = alpha
        grad = grad_logpdf(pars, data)
        numeric = central_difference(lambda p: float(logpdf(p, data)), pars)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-6 * np.max(np.abs(numeric)))


def test_gradient_wrt_yields_equals_finite_differences(
    small: tuple[HistFactory, np.ndarray],
) -> None:
    model, data = small
    pars = np.array(model.config.suggested_init)
    pars[model.config.par_names.index("jes")] = 0.7
    pars[model.config.par_names.index("bkg_norm")] = -0.6  # inside: depends on hi and lo
    yields = override(np.random.default_rng(5))
    leaves, treedef = jax.tree_util.tree_flatten(yields)

    def logpdf_of(flat: np.ndarray) -> jax.Array:
        sizes = np.cumsum([np.size(leaf) for leaf in leaves])[:-1]
        parts = [
            jnp.reshape(part, np.shape(leaf))
            for part, leaf in zip(jnp.split(flat, sizes), leaves, strict=True)
        ]
        return model.logpdf(
            pars, data[: model.config.nmaindata], jax.tree_util.tree_unflatten(treedef, parts)
        )

    flat = np.concatenate([np.ravel(leaf) for leaf in leaves]).astype(float)
    grad = jax.grad(jax.jit(logpdf_of))(flat)
    numeric = central_difference(lambda x: float(logpdf_of(x)), flat)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7 * np.max(np.abs(numeric)))
    assert np.all(np.isfinite(grad)) and np.count_nonzero(grad) == grad.size


def test_gradient_is_finite_at_zero_uncertainty_and_zero_poi(
    small: tuple[HistFactory, np.ndarray],
) -> None:
    model, data = small
    pars = np.array(model.config.suggested_init)
    pars[model.config.poi_index] = 0.0
    zero = {
        "SR": {
            "bkg1": {"staterror": {"staterror_SR": jnp.zeros(3)}},
            "bkg2": {"shapesys": {"bkg2_mc": {"sumw2": jnp.zeros(3)}}},
        }
    }
    grad_pars, grad_yields = jax.grad(model.logpdf, argnums=(0, 2))(
        pars, data[: model.config.nmaindata], zero
    )
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves((grad_pars, grad_yields)))
    numeric = central_difference(
        lambda p: float(model.logpdf(p, data[: model.config.nmaindata], zero)), pars
    )
    np.testing.assert_allclose(grad_pars, numeric, rtol=1e-6, atol=1e-6)


# -- errors ------------------------------------------------------------------------------------


def test_lumi_without_measurement_settings() -> None:
    spec = all_modifiers_spec()
    spec["parameters"] = spec["parameters"][1:]
    with pytest.raises(
        ValueError,
        match=r"lumi modifier 'lumi': the measurement must set its "
        r"\['auxdata', 'bounds', 'inits'\]",
    ):
        HistFactory(spec)


def test_spec_rejected_by_pyhf_names_the_path() -> None:
    spec = all_modifiers_spec()
    spec["channels"][0]["samples"][1]["modifiers"][0]["type"] = "lumis"
    with pytest.raises(
        ValueError,
        match=r"(?s)pyhf rejects the model spec.*Path: channels\[0\]\.samples\[1\]\.modifiers\[0\]",
    ):
        HistFactory(spec)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ("data",),
            [1.0, 2.0],
            r"channel 'SR', sample 'bkg1': data has 2 bins, but the channel has 3",
        ),
        (
            ("modifiers", 3, "data", "hi_data"),
            [1.0, 2.0],
            r"channel 'SR', sample 'bkg1', histosys modifier 'jes': hi_data has 2 bins, expected 3",
        ),
        (
            ("modifiers", 1, "data"),
            [1.0],
            r"sample 'bkg1', staterror modifier 'staterror_SR': data has 1 bins",
        ),
    ],
)
def test_wrong_lengths_name_channel_sample_modifier(
    path: tuple[Any, ...], value: Any, message: str
) -> None:
    spec = all_modifiers_spec()
    target = spec["channels"][0]["samples"][1]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValueError, match=message):
        HistFactory(spec)


@pytest.mark.parametrize(
    ("yields", "message"),
    [
        ({"VR": {"bkg1": [1.0]}}, r"unknown channel 'VR'; the model's channels are \['CR', 'SR'\]"),
        (
            {"CR": {"signal": [1.0, 2.0]}},
            r"yields\['CR'\]\['signal'\]: channel 'CR' has no sample 'signal'",
        ),
        (
            {"SR": {"bkg1": [1.0, 2.0]}},
            r"yields\['SR'\]\['bkg1'\] has shape \(2,\), expected \(3,\)",
        ),
        (
            {"SR": {"bkg2": {"histosys": {"jes": {"hi_data": [1.0, 2.0, 3.0]}}}}},
            r"sample 'bkg2' in channel 'SR' has no histosys modifier 'jes'; "
            r"its histosys modifiers are \[\]",
        ),
        (
            {"SR": {"bkg1": {"normsys": {"bkg_norm": {"hi": [1.1, 1.2]}}}}},
            r"\['normsys'\]\['bkg_norm'\]\['hi'\] has shape \(2,\), expected \(\)",
        ),
        (
            {"SR": {"bkg1": {"histosys": {"jes": {"up": [1.0] * 3}}}}},
            r"a histosys entry is a mapping with keys",
        ),
        ({"SR": {"bkg1": {"normfactor": {"mu_bkg": None}}}}, r"unknown keys \['normfactor'\]"),
        (
            {"SR": {"bkg1": {"staterror": {"staterror_SR": {"var": [1.0] * 3}}}}},
            r"\{'sumw2': array\}",
        ),
    ],
)
def test_bad_overrides_raise_before_tracing(
    small: tuple[HistFactory, np.ndarray], yields: dict[str, Any], message: str
) -> None:
    model, data = small
    with pytest.raises(ValueError, match=message):
        jax.jit(model.logpdf)(model.config.suggested_init, data, yields)


def test_bad_pars_and_data_shapes(small: tuple[HistFactory, np.ndarray]) -> None:
    model, data = small
    with pytest.raises(ValueError, match=r"pars has shape \(3,\), expected \(16,\)"):
        model.logpdf(np.ones(3), data)
    with pytest.raises(ValueError, match=r"data has shape \(4,\), expected \(17,\) or \(5,\)"):
        model.logpdf(model.config.suggested_init, data[:4])


def test_negative_rate_raises_eagerly_and_is_nan_under_jit() -> None:
    spec = {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "sig",
                        "data": [1.0, 1.0],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "bkg",
                        "data": [10.0, 10.0],
                        "modifiers": [
                            {
                                "name": "shape",
                                "type": "histosys",
                                "data": {"hi_data": [12.0, 18.0], "lo_data": [8.0, 2.0]},
                            }
                        ],
                    },
                ],
            }
        ]
    }
    model = HistFactory(spec)
    assert model.config.par_names == ("shape", "mu")
    pars = np.array([-2.0, 1.0])  # bin 1 of bkg: 10 - 2 * 8 = -6
    data = np.array([10.0, 10.0, 0.0])
    with pytest.raises(
        ValueError,
        match=r"(?s)channel 'SR' bin 1: expected -5.*"
        r"sample 'bkg': -6 from nominal 10; histosys: 'shape' \(alpha=-2\)",
    ):
        model.logpdf(pars, data)
    assert np.isnan(jax.jit(model.logpdf)(pars, data))
    with np.errstate(invalid="ignore"):
        assert np.isnan(pyhf.Model(spec).logpdf(pars, data)[0])


@pytest.mark.parametrize(
    "index",
    [
        [0, 1, 2, 3],  # one consecutive run: a slice
        [4, 4, 4, 4, 4, 0],  # repeats then one: a broadcast and a slice
        [13, 13, 13, 0, 13, 13, 1, 2],  # mixed runs (the displaced-leptons factor index)
        [0, 2, 4, 6, 8, 10, 12, 1, 3, 5],  # more runs than _MAX_RUNS: a gather
        [7],
    ],
)
def test_static_take_equals_indexing(index: list[int]) -> None:
    """The likelihood's static gathers (slices and broadcasts of runs) equal numpy indexing,
    along the first axis of 1-D and 2-D arrays."""
    from neosx.histfactory.likelihood import _take

    values = np.arange(14.0 * 3).reshape(14, 3)
    index_array = np.asarray(index)
    np.testing.assert_array_equal(_take(jnp.asarray(values), index_array), values[index_array])
    np.testing.assert_array_equal(
        _take(jnp.asarray(values[:, 0]), index_array), values[index_array, 0]
    )


def test_log_factorial_equals_scipy_from_zero_to_1e300() -> None:
    """The Poisson terms' ``lgamma(n + 1)``, for real counts from 0 to 1e300 (a shapesys
    auxiliary datum ``tau`` can be 1e11 and more), equals scipy's to 1e-14: absolute where
    it is below 1, relative above (measured: 4.5e-15). The Stirling series unshifted would be
    off by ~1e-4 at n = 0; the rising product x (x + 1) ... (x + 7) unscaled would overflow
    above n ~ 1e38."""
    from scipy.special import gammaln

    from neosx.histfactory.likelihood import _log_factorial

    n = np.concatenate([
        [0.0, 1e-300, 1e-12, 0.5, 1.0, 7.0, 7.999, 8.0, 8.5, 9.0, 10.0],
        np.linspace(0.0, 40.0, 401),
        np.geomspace(1e-8, 1e300, 600),
    ])
    reference = gammaln(n + 1.0)
    got = np.asarray(jax.jit(_log_factorial)(jnp.asarray(n)))
    error = np.abs(got - reference) / np.maximum(np.abs(reference), 1.0)
    assert error.max() < 1e-14, n[error.argmax()]


def test_float32_is_refused() -> None:
    model = HistFactory(all_modifiers_spec())
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(RuntimeError, match=r"need float64.*jax_enable_x64"):
            model.logpdf(np.ones(model.config.npars), np.ones(model.config.nmaindata))
    finally:
        jax.config.update("jax_enable_x64", True)


# -- build_spec --------------------------------------------------------------------------------


def histograms() -> dict[str, Any]:
    return {
        "SR": {
            "signal": {
                "data": [4.0, 8.0, 2.0],
                "histosys": {"jes": {"hi_data": [4.4, 8.5, 2.1], "lo_data": [3.7, 7.6, 1.8]}},
            },
            "ttbar": {
                "data": [40.0, 30.0, 10.0],
                "normsys": {"ttbar_xsec": {"hi": 1.06, "lo": 0.94}},
                "histosys": {"jes": {"hi_data": [42.0, 31.0, 9.0], "lo_data": [38.5, 29.0, 11.0]}},
                "staterror": {"stat_SR": {"sumw2": [4.0, 2.25, 1.0]}},
            },
            "wjets": {"data": [20.0, 10.0, 4.0], "staterror": {"stat_SR": [2.0, 1.0, 1.5]}},
        },
        "CR": {"ttbar": {"data": [200.0, 150.0], "shapesys": {"ttbar_cr_mc": [10.0, 8.0]}}},
    }


def test_build_spec_round_trip() -> None:
    workspace = build_spec(
        histograms(),
        poi_name="mu_sig",
        signal_samples=["signal"],
        normfactors={"mu_ttbar": ["ttbar"]},
        lumi_uncertainty=0.017,
    )
    reference = pyhf.Workspace(workspace).model()
    model = HistFactory(workspace)
    assert model.config.poi_name == "mu_sig" and "mu_ttbar" in model.config.par_order
    assert model.config.suggested_bounds[
        model.config.par_order.index("lumi")
    ].tolist() == pytest.approx([0.915, 1.085])
    data = np.asarray(pyhf.Workspace(workspace).data(reference))
    # default observations: the background-only expectation
    np.testing.assert_allclose(data[:5], [200.0, 150.0, 60.0, 40.0, 14.0])
    assert_agrees(model, reference, data, n=5)
    # the histograms themselves are a valid (identity) override
    pars = reference.config.suggested_init()
    assert float(model.logpdf(pars, data, histograms())) == pytest.approx(
        reference.logpdf(pars, data)[0], rel=1e-13
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda h: h["SR"]["wjets"].pop("data"),
            r"histograms\['SR'\]\['wjets'\]: the nominal 'data' is required",
        ),
        (
            lambda h: h["SR"]["ttbar"]["histosys"]["jes"].pop("lo_data"),
            r"\['histosys'\]\['jes'\]: missing \['lo_data'\]",
        ),
        (
            lambda h: h["SR"]["wjets"].update(data=[1.0, 2.0]),
            r"histograms\['SR'\]\['wjets'\]: expected shape \(3,\), got shape \(2,\)",
        ),
        (
            lambda h: h["CR"].update(signal=[[1.0, 2.0]]),
            r"histograms\['CR'\]\['signal'\]: expected shape \(2,\), got shape \(1, 2\)",
        ),
    ],
)
def test_build_spec_errors(change: Any, message: str) -> None:
    bad = histograms()
    change(bad)
    with pytest.raises(ValueError, match=message):
        build_spec(bad)


def test_build_spec_rejects_traced_values_and_unknown_signal() -> None:
    with pytest.raises(
        ValueError, match=r"samples \['sig'\] are scaled by normfactors but have no histograms"
    ):
        build_spec(histograms(), signal_samples=["sig"])
    with pytest.raises(ValueError, match="build_spec needs concrete numbers"):
        jax.jit(lambda x: build_spec({"SR": {"signal": x}}))(jnp.ones(2))


def test_log_likelihood_ratio_differs_from_logpdf_by_a_constant() -> None:
    """Same differences, gradient and Hessian in pars as logpdf; 0 at the saturated point."""
    model = HistFactory(all_modifiers_spec())
    reference = model.pyhf_model
    points = random_points(reference, 6, seed=3)
    data = np.asarray(model.expected_data(points[0]))
    ratio = [float(model.log_likelihood_ratio(p, data)) for p in points]
    logpdf = [float(model.logpdf(p, data)) for p in points]
    assert ratio[0] == pytest.approx(0.0, abs=1e-9)
    assert max(ratio) <= 1e-9
    np.testing.assert_allclose(np.diff(ratio), np.diff(logpdf), rtol=1e-9, atol=1e-9)
    for grad in (jax.grad, jax.hessian):
        np.testing.assert_allclose(
            grad(lambda p: model.log_likelihood_ratio(p, data))(points[2]),
            grad(lambda p: model.logpdf(p, data))(points[2]), rtol=1e-9, atol=1e-9,
        )


def test_log_likelihood_ratio_resolves_tiny_shapesys_widths() -> None:
    """tau = 2.5e11: the ratio and logpdf (no cancellation of terms ~tau log tau) both
    resolve 1e-9 differences of the log-likelihood."""
    spec = {"channels": [{"name": "SR", "samples": [
        {"name": "sig", "data": [5.0, 5.0], "modifiers": [
            {"name": "mu", "type": "normfactor", "data": None}]},
        {"name": "bkg", "data": [50.0, 50.0], "modifiers": [
            {"name": "tiny", "type": "shapesys", "data": [1e-4, 5.0]}]}]}]}
    model = HistFactory(spec)
    init = np.asarray(model.config.suggested_init)
    data = np.asarray(model.expected_data(init))
    gamma_index = model.config.par_slice("tiny").start
    moved = init.copy()
    moved[gamma_index] += 1e-8  # ~ 0.0025 sigma of a width-2e-6 constraint
    # the constraint's tau (log(1 + d) - d) ~ -tau d^2 / 2; the main-bin change is ~1e-15
    expected = -0.5 * 2.5e11 * 1e-16
    got = float(model.log_likelihood_ratio(moved, data) - model.log_likelihood_ratio(init, data))
    assert got == pytest.approx(expected, rel=1e-4)
    coarse = float(model.logpdf(moved, data) - model.logpdf(init, data))
    assert abs(coarse - expected) < 1e-9  # pyhf's form was quantised at 2**-10 here
