"""neosx refuses what pyhf refuses: malformed specs, yields, data and arguments raise a
one-line ``ValueError`` naming the argument (or spec field) and the value, before tracing.

Each malformed call is checked against neosx (the exact message fragment) and, next to it,
against pyhf (numpy backend): where pyhf refuses it too (at construction or in its fits), the
pyhf test asserts that it raises; where pyhf silently accepts it (a negative uncertainty, a
repeated sample name), the test records that, and neosx is the stricter of the two.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest

import neosx as nx
from neosx.histfactory import HistFactory, build_spec
from neosx.infer import FitError

pytestmark = [
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),  # pyhf's NaN and inf on bad input
    # pyhf 0.7.6 validates with jsonschema.RefResolver, deprecated in jsonschema 4.18.
    pytest.mark.filterwarnings("ignore:jsonschema.RefResolver is deprecated:DeprecationWarning"),
]

Workspace = dict[str, Any]


def workspace() -> Workspace:
    """Signal + background in two bins, with normsys, histosys, staterror and lumi."""
    return build_spec(
        {"SR": {"signal": [5.0, 2.0],
                "bkg": {"data": [50.0, 40.0],
                        "normsys": {"xsec": {"hi": 1.1, "lo": 0.9}},
                        "histosys": {"jes": {"hi_data": [52.0, 41.0], "lo_data": [48.0, 39.0]}},
                        "staterror": {"stat_SR": [2.0, 1.5]}}}},
        lumi_uncertainty=0.02,
    )


def _bkg(ws: Workspace) -> dict[str, Any]:
    return ws["channels"][0]["samples"][1]


def _modifier(ws: Workspace, mtype: str) -> dict[str, Any]:
    return next(m for m in _bkg(ws)["modifiers"] if m["type"] == mtype)


def _parameters(ws: Workspace) -> list[dict[str, Any]]:
    return ws["measurements"][0]["config"]["parameters"]


def _set(getter: Callable[[Workspace], dict[str, Any]], key: str, value: Any) -> Callable:
    return lambda ws: getter(ws).__setitem__(key, value)


def _append_parameter(setting: dict[str, Any]) -> Callable[[Workspace], None]:
    return lambda ws: _parameters(ws).append(setting)


def _repeat_sample(ws: Workspace) -> None:
    ws["channels"][0]["samples"].append(copy.deepcopy(_bkg(ws)))


# (id, mutation of the workspace, neosx's message, whether pyhf refuses it too)
SPEC_CASES = [
    ("negative yield", _set(_bkg, "data", [-50.0, 40.0]),
     r"channel 'SR', sample 'bkg': data\[0\] = -50.0 is negative", True),
    ("NaN yield", _set(_bkg, "data", [np.nan, 40.0]),
     r"channel 'SR', sample 'bkg': data\[0\] = nan is not finite", True),
    ("infinite yield", _set(_bkg, "data", [50.0, np.inf]),
     r"channel 'SR', sample 'bkg': data\[1\] = inf is not finite", True),
    ("negative observation", lambda ws: ws["observations"][0].__setitem__("data", [-1.0, 40.0]),
     r"observations\['SR'\]\[0\] = -1.0 is negative", True),
    ("negative histosys template",
     lambda ws: _modifier(ws, "histosys")["data"].__setitem__("lo_data", [48.0, -39.0]),
     r"channel 'SR', sample 'bkg', histosys modifier 'jes': lo_data\[1\] = -39.0 is negative",
     False),
    ("negative normsys factor", lambda ws: _modifier(ws, "normsys")["data"].__setitem__("hi", -1.1),
     r"channel 'SR', sample 'bkg', normsys modifier 'xsec': hi = -1.1 must be > 0", True),
    ("zero normsys factor", lambda ws: _modifier(ws, "normsys")["data"].__setitem__("lo", 0.0),
     r"channel 'SR', sample 'bkg', normsys modifier 'xsec': lo = 0.0 must be > 0", True),
    ("negative staterror uncertainty", _set(lambda ws: _modifier(ws, "staterror"), "data",
                                            [-2.0, 1.5]),
     r"staterror modifier 'stat_SR': data\[0\] = -2.0 is negative", False),  # pyhf squares it
    ("inverted lumi bounds", lambda ws: _parameters(ws)[0].__setitem__("bounds", [[1.1, 0.9]]),
     r"parameters\['lumi'\]: bounds\[0\] = \[1.1, 0.9\] has lower > upper", True),
    ("inverted POI bounds", _append_parameter({"name": "mu", "bounds": [[10.0, 0.0]]}),
     r"parameters\['mu'\]: bounds\[0\] = \[10.0, 0.0\] has lower > upper", True),
    ("init outside bounds", _append_parameter({"name": "mu", "inits": [20.0], "bounds": [[0, 10]]}),
     r"suggested_init\[2\] = 20.0 \(parameter 'mu'\) is outside its bounds \[0.0, 10.0\]", True),
    ("default init outside bounds", lambda ws: _parameters(ws)[0].__setitem__("bounds",
                                                                            [[1.1, 1.2]]),
     r"suggested_init\[1\] = 1.0 \(parameter 'lumi'\) is outside its bounds \[1.1, 1.2\]", True),
    ("negative width", lambda ws: _parameters(ws)[0].__setitem__("sigmas", [-0.02]),
     r"parameters\['lumi'\]: sigmas\[0\] = -0.02 must be > 0", True),
    ("repeated sample name", _repeat_sample,
     r"channel 'SR': sample name 'bkg' appears more than once", False),  # pyhf keeps the last
    ("repeated channel name",
     lambda ws: ws["channels"].append(copy.deepcopy(ws["channels"][0])),
     r"the spec's channel name 'SR' appears more than once", False),
]


def mutated(mutate: Callable[[Workspace], None]) -> Workspace:
    ws = workspace()
    mutate(ws)
    return ws


@pytest.mark.parametrize(("mutate", "message"), [c[1:3] for c in SPEC_CASES],
                         ids=[c[0] for c in SPEC_CASES])
def test_spec_refused(mutate: Callable, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HistFactory(mutated(mutate))


def _pyhf_hypotest(ws: Workspace) -> Any:
    pyhf.set_backend("numpy")
    w = pyhf.Workspace(ws)
    model = w.model()
    return pyhf.infer.hypotest(1.0, w.data(model), model)


@pytest.mark.parametrize(("mutate", "refuses"), [(c[1], c[3]) for c in SPEC_CASES],
                         ids=[c[0] for c in SPEC_CASES])
def test_pyhf_on_the_same_spec(mutate: Callable, refuses: bool) -> None:
    """pyhf builds every one of these models; its fits fail on those it refuses."""
    if refuses:
        with pytest.raises(Exception):  # noqa: B017 - FailedMinimization, ValueError, ...
            _pyhf_hypotest(mutated(mutate))
    else:
        assert np.isfinite(float(_pyhf_hypotest(mutated(mutate))))


# -- interpolation codes ------------------------------------------------------------------------

CODES = [("normsys", "code7", ["code1", "code4"]), ("histosys", "code9", ["code0", "code4p"]),
         ("normsys", "code0", ["code1", "code4"]), ("histosys", "code1", ["code0", "code4p"])]


@pytest.mark.parametrize(("mtype", "code", "supported"), CODES)
def test_unknown_interpcode_refused(mtype: str, code: str, supported: list[str]) -> None:
    message = (
        f"modifier_settings['{mtype}']['interpcode']: {mtype} interpolation '{code}' is not "
        f"supported; use one of {supported}"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        HistFactory(workspace(), modifier_settings={mtype: {"interpcode": code}})


@pytest.mark.parametrize(("mtype", "code"), [c[:2] for c in CODES])
def test_pyhf_refuses_unknown_interpcode(mtype: str, code: str) -> None:
    pyhf.set_backend("numpy")
    with pytest.raises(AssertionError):  # with an empty message
        pyhf.Workspace(workspace()).model(modifier_settings={mtype: {"interpcode": code}})


# -- calls on a valid model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> HistFactory:
    return HistFactory(workspace())


@pytest.fixture(scope="module")
def reference() -> pyhf.pdf.Model:
    pyhf.set_backend("numpy")
    return pyhf.Workspace(workspace()).model()


DATA = np.array([55.0, 42.0, 0.0, 1.0, 0.0, 1.0, 1.0])  # main counts, then auxdata
INIT = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0])  # jes, lumi, mu, xsec, stat_SR[0], [1]
NEGATIVE_DATA = np.where(np.arange(DATA.size) == 0, -1.0, DATA)
NAN_DATA = np.where(np.arange(DATA.size) == 1, np.nan, DATA)
MU_AT = lambda mu: np.where(np.arange(INIT.size) == 2, mu, INIT)  # noqa: E731
NEG_NOMINAL = {"SR": {"bkg": [-50.0, 40.0]}}
NEG_SUMW2 = {"SR": {"bkg": {"staterror": {"stat_SR": {"sumw2": [-4.0, 2.25]}}}}}
BAD_NORMSYS = {"SR": {"bkg": {"normsys": {"xsec": {"lo": 0.0}}}}}
infer = nx.infer

# (id, neosx call, message, pyhf call doing the same or None where pyhf has no equivalent)
CALL_CASES = [
    ("logpdf pars length", lambda m: m.logpdf(INIT[:-1], DATA),
     r"pars has shape \(5,\), expected \(6,\)", lambda r: r.logpdf(INIT[:-1], DATA)),
    ("logpdf pars 2-d", lambda m: m.logpdf(INIT[None], DATA),
     r"pars has shape \(1, 6\), expected \(6,\)", lambda r: r.logpdf(INIT[None], DATA)),
    ("logpdf data length", lambda m: m.logpdf(INIT, DATA[:-1]),
     r"data has shape \(6,\), expected \(7,\) or \(2,\)", lambda r: r.logpdf(INIT, DATA[:-1])),
    ("logpdf negative data", lambda m: m.logpdf(INIT, NEGATIVE_DATA),
     r"data\[0\] = -1.0 is negative", lambda r: pyhf.infer.mle.fit(NEGATIVE_DATA, r)),
    ("logpdf NaN data", lambda m: m.logpdf(INIT, NAN_DATA),
     r"data\[1\] = nan is not finite", lambda r: pyhf.infer.mle.fit(NAN_DATA, r)),
    ("logpdf negative yields", lambda m: m.logpdf(INIT, DATA, yields=NEG_NOMINAL),
     r"yields\['SR'\]\['bkg'\]\[0\] = -50.0 is negative", None),
    ("logpdf negative sumw2", lambda m: m.logpdf(INIT, DATA, yields=NEG_SUMW2),
     r"yields\['SR'\]\['bkg'\]\['staterror'\]\['stat_SR'\]\['sumw2'\]\[0\] = -4.0 is negative",
     None),
    ("expected_data pars length", lambda m: m.expected_data(INIT[:2]),
     r"pars has shape \(2,\), expected \(6,\)", lambda r: r.expected_data(INIT[:2])),
    ("expected_data negative yields", lambda m: m.expected_data(INIT, yields=NEG_NOMINAL),
     r"yields\['SR'\]\['bkg'\]\[0\] = -50.0 is negative", None),
    ("prepare NaN yields", lambda m: m.prepare({"SR": {"signal": [np.nan, 2.0]}}),
     r"yields\['SR'\]\['signal'\]\[0\] = nan is not finite", None),
    ("prepare zero normsys", lambda m: m.prepare(BAD_NORMSYS),
     r"yields\['SR'\]\['bkg'\]\['normsys'\]\['xsec'\]\['lo'\] = 0.0 must be > 0", None),
    ("prepare negative histosys",
     lambda m: m.prepare({"SR": {"bkg": {"histosys": {"jes": {"hi_data": [52.0, -1.0]}}}}}),
     r"\['histosys'\]\['jes'\]\['hi_data'\]\[1\] = -1.0 is negative", None),
    ("prepare negative uncertainty",
     lambda m: m.prepare({"SR": {"bkg": {"staterror": {"stat_SR": [2.0, -1.5]}}}}),
     r"\['staterror'\]\['stat_SR'\]\[1\] = -1.5 is negative", None),
    ("prepare wrong shape", lambda m: m.prepare({"SR": {"bkg": [50.0]}}),
     r"yields\['SR'\]\['bkg'\] has shape \(1,\), expected \(2,\)", None),
    ("fit negative data", lambda m: infer.fit(m, NEGATIVE_DATA),
     r"data\[0\] = -1.0 is negative", lambda r: pyhf.infer.mle.fit(NEGATIVE_DATA, r)),
    ("fit data length", lambda m: infer.fit(m, DATA[:-1]),
     r"data has shape \(6,\), expected \(7,\) or \(2,\)",
     lambda r: pyhf.infer.mle.fit(DATA[:-1], r)),
    ("fit init length", lambda m: infer.fit(m, DATA, init=INIT[:-1]),
     r"init has shape \(5,\), expected \(6,\)",
     lambda r: pyhf.infer.mle.fit(DATA, r, init_pars=INIT[:-1].tolist())),
    ("fit init outside bounds", lambda m: infer.fit(m, DATA, init=MU_AT(-5.0)),
     r"init\[2\] = -5.0 \(parameter 'mu'\) is outside its bounds \[0.0, 10.0\]",
     lambda r: pyhf.infer.mle.fit(DATA, r, init_pars=MU_AT(-5.0).tolist())),
    ("fit fixed outside bounds", lambda m: infer.fit(m, DATA, fixed={"mu": 20.0}),
     r"fixed\['mu'\] = 20.0 \(parameter 'mu'\) is outside its bounds \[0.0, 10.0\]",
     lambda r: pyhf.infer.mle.fixed_poi_fit(20.0, DATA, r)),
    ("fit fixed shape", lambda m: infer.fit(m, DATA, fixed={"mu": [1.0, 2.0]}),
     r"fixed\['mu'\] has shape \(2,\), expected \(\) or \(1,\)", None),
    ("fit negative yields", lambda m: infer.fit(m, DATA, yields=NEG_NOMINAL),
     r"yields\['SR'\]\['bkg'\]\[0\] = -50.0 is negative", None),
    ("fit zero normsys", lambda m: infer.fit(m, DATA, yields=BAD_NORMSYS),
     r"\['normsys'\]\['xsec'\]\['lo'\] = 0.0 must be > 0", None),
    ("hypotest mu below bounds", lambda m: infer.hypotest(-1.0, DATA, m),
     r"mu = -1.0 \(parameter 'mu'\) is outside its bounds \[0.0, 10.0\]",
     lambda r: pyhf.infer.hypotest(-1.0, DATA, r)),
    ("hypotest mu above bounds", lambda m: infer.hypotest(20.0, DATA, m),
     r"mu = 20.0 \(parameter 'mu'\) is outside its bounds \[0.0, 10.0\]",
     lambda r: pyhf.infer.hypotest(20.0, DATA, r)),
    ("hypotest mu NaN", lambda m: infer.hypotest(np.nan, DATA, m),
     r"mu = nan \(parameter 'mu'\) is outside its bounds",
     lambda r: pyhf.infer.hypotest(np.nan, DATA, r)),
    ("hypotest mu shape", lambda m: infer.hypotest(np.array([1.0, 2.0]), DATA, m),
     r"mu has shape \(2,\), expected \(\)",
     lambda r: pyhf.infer.hypotest(np.array([1.0, 2.0]), DATA, r)),
    ("hypotest negative data", lambda m: infer.hypotest(1.0, NEGATIVE_DATA, m),
     r"data\[0\] = -1.0 is negative", lambda r: pyhf.infer.hypotest(1.0, NEGATIVE_DATA, r)),
    ("hypotest data length", lambda m: infer.hypotest(1.0, DATA[:-1], m),
     r"data has shape \(6,\), expected \(7,\) or \(2,\)",
     lambda r: pyhf.infer.hypotest(1.0, DATA[:-1], r)),
    ("hypotest test_stat", lambda m: infer.hypotest(1.0, DATA, m, test_stat="qq"),
     r"test_stat must be one of \('qtilde', 'q', 'q0'\), got 'qq'",
     lambda r: pyhf.infer.hypotest(1.0, DATA, r, test_stat="qq")),
    ("hypotest negative sumw2", lambda m: infer.hypotest(1.0, DATA, m, yields=NEG_SUMW2),
     r"\['sumw2'\]\[0\] = -4.0 is negative", None),
    ("test_statistic mu below bounds", lambda m: infer.test_statistic(-1.0, DATA, m),
     r"mu = -1.0 \(parameter 'mu'\) is outside its bounds", None),
    ("expected_cls mu above bounds", lambda m: infer.expected_cls(m, 20.0),
     r"mu = 20.0 \(parameter 'mu'\) is outside its bounds \[0.0, 10.0\]", None),
    ("expected_cls mu shape", lambda m: infer.expected_cls(m, np.ones(3)),
     r"mu has shape \(3,\), expected \(\)", None),
    ("expected_cls negative yields", lambda m: infer.expected_cls(m, 1.0, yields=NEG_NOMINAL),
     r"yields\['SR'\]\['bkg'\]\[0\] = -50.0 is negative", None),
    ("discovery_significance negative yields",
     lambda m: infer.discovery_significance(m, yields={"SR": {"signal": [-5.0, 2.0]}}),
     r"yields\['SR'\]\['signal'\]\[0\] = -5.0 is negative", None),
    ("expected_upper_limit cl", lambda m: infer.expected_upper_limit(m, 1.5),
     r"cl must be in \(0, 1\), got cl=1.5", None),
    ("expected_upper_limit negative yields",
     lambda m: infer.expected_upper_limit(m, yields=NEG_NOMINAL),
     r"yields\['SR'\]\['bkg'\]\[0\] = -50.0 is negative", None),
    ("poi_uncertainty mu below bounds", lambda m: infer.poi_uncertainty(m, -1.0),
     r"mu = -1.0 \(parameter 'mu'\) is outside its bounds", None),
    ("poi_uncertainty mu shape", lambda m: infer.poi_uncertainty(m, np.ones(2)),
     r"mu has shape \(2,\), expected \(\)", None),
    ("poi_uncertainty negative sumw2", lambda m: infer.poi_uncertainty(m, yields=NEG_SUMW2),
     r"\['sumw2'\]\[0\] = -4.0 is negative", None),
    ("covariance mu above bounds", lambda m: infer.covariance(m, 20.0),
     r"mu = 20.0 \(parameter 'mu'\) is outside its bounds", None),
    ("fisher_information mu shape", lambda m: infer.fisher_information(m, np.ones(2)),
     r"mu has shape \(2,\), expected \(\)", None),
]


@pytest.mark.parametrize(("call", "message"), [c[1:3] for c in CALL_CASES],
                         ids=[c[0] for c in CALL_CASES])
def test_call_refused(model: HistFactory, call: Callable, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(model)


PYHF_CASES = [c for c in CALL_CASES if c[3] is not None]


@pytest.mark.parametrize("call", [c[3] for c in PYHF_CASES], ids=[c[0] for c in PYHF_CASES])
def test_pyhf_refuses_too(reference: pyhf.pdf.Model, call: Callable) -> None:
    with pytest.raises(Exception):  # noqa: B017 - InvalidPdfData, ValueError, FailedMinimization
        call(reference)


# -- under transformations: shapes are still checked, values are not ---------------------------


def test_shapes_checked_under_jit(model: HistFactory) -> None:
    with pytest.raises(ValueError, match=r"pars has shape \(5,\), expected \(6,\)"):
        jax.jit(model.logpdf)(jnp.ones(5), DATA)
    with pytest.raises(ValueError, match=r"yields\['SR'\]\['bkg'\] has shape \(3,\)"):
        jax.grad(lambda b: model.logpdf(INIT, DATA, yields={"SR": {"bkg": b}}))(jnp.ones(3))
    with pytest.raises(ValueError, match=r"mu has shape \(2,\), expected \(\)"):
        jax.jit(lambda mu: infer.poi_uncertainty(model, mu))(jnp.ones(2))


def test_traced_values_unchecked(model: HistFactory) -> None:
    """Under jit the values are unknown: invalid ones give NaN / -inf, as in pyhf."""
    assert float(jax.jit(model.logpdf)(INIT, NEGATIVE_DATA)) == -np.inf
    nominal = jnp.array([-50.0, 40.0])
    value = jax.jit(lambda b: model.logpdf(INIT, DATA, yields={"SR": {"bkg": b}}))(nominal)
    assert np.isnan(float(value))


# -- FitError names the likely cause -----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> HistFactory:
    """One bin, two parameters (mu, xsec): the fits of the FitError tests compile fast."""
    return HistFactory(build_spec({"SR": {"signal": [5.0], "bkg": {
        "data": [50.0], "normsys": {"xsec": {"hi": 1.1, "lo": 0.9}}}}}))


def test_fit_error_names_empty_bin() -> None:
    ws = build_spec({"SR": {"signal": [5.0, 0.0], "bkg": [50.0, 0.0]}})
    with pytest.raises(FitError, match=r"likely cause: channel 'SR' bin 1: expected rate 0 but "
                                       r"3 observed"):
        infer.fit(HistFactory(ws), [50.0, 3.0])


@pytest.mark.parametrize(
    ("override", "cause"),
    [
        ({"SR": {"bkg": {"normsys": {"xsec": {"lo": -0.9}}}}},
         r"normsys 'xsec': a factor \(hi or lo\) is <= 0 or not finite"),
        ({"SR": {"bkg": [np.nan]}}, r"the yields \(nominal or histosys templates\) are not finite"),
    ],
    ids=["normsys factor", "non-finite yields"],
)
def test_fit_error_names_invalid_prepared_yields(
    tiny: HistFactory, override: dict[str, Any], cause: str
) -> None:
    prepared = jax.jit(tiny.prepare)(override)  # prepared under jit: the values went unchecked
    with pytest.raises(FitError, match="likely cause: " + cause):
        infer.fit(tiny, [50.0, 0.0], yields=prepared)


# -- valid edge cases still pass ----------------------------------------------------------------


def test_zero_yields_and_data_pass(reference: pyhf.pdf.Model) -> None:
    ws = workspace()
    ws["channels"][0]["samples"][0]["data"] = [5.0, 0.0]  # a signal-free bin
    _modifier(ws, "staterror")["data"] = [2.0, 0.0]  # no MC uncertainty there
    edge = HistFactory(ws)
    zeros = np.zeros(DATA.size)
    pyhf_edge = pyhf.Workspace(ws).model()
    expected = pyhf_edge.logpdf(pyhf_edge.config.suggested_init(), zeros)[0]
    np.testing.assert_allclose(float(edge.logpdf(edge.config.suggested_init, zeros)), expected,
                               rtol=1e-10)
    overrides = {"SR": {"signal": [0.0, 0.0],
                        "bkg": {"staterror": {"stat_SR": {"sumw2": [0.0, 0.0]}}}}}
    assert np.isfinite(float(edge.logpdf(edge.config.suggested_init, DATA, yields=overrides)))


def test_values_on_bounds_pass(model: HistFactory, reference: pyhf.pdf.Model) -> None:
    """mu, init and fixed values exactly on a bound are valid (checked at trace time here)."""

    @jax.jit
    def on_bounds() -> tuple[jax.Array, jax.Array]:
        best = infer.fit(model, DATA, init=MU_AT(10.0), fixed={"mu": 0.0})
        return infer.hypotest(10.0, DATA, model), best

    cls, best = on_bounds()
    np.testing.assert_allclose(float(cls), float(pyhf.infer.hypotest(10.0, DATA, reference)),
                               atol=1e-6)
    assert float(best[2]) == 0.0 and np.all(np.isfinite(best))
    for mu in (0.0, 10.0):
        assert np.isfinite(float(infer.poi_uncertainty(model, mu)))
