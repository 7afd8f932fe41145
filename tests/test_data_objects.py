"""Object-level features of files: collections, the expression language, chunks, bad data.

Reference values are computed independently, by numpy loops over the events of the CMS
tutorial files (branches read with uproot as numpy object arrays).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from neosx.config import DataConfig, FileConfig
from neosx.data import files
from neosx.data.expressions import ExpressionError, parse
from neosx.data.files import read_features
from neosx.data.objects import collections

EVENTS = Path("/work/shared/data/events/cms_heptutorial_mc")
WZ, ZZ = str(EVENTS / "wz.root"), str(EVENTS / "zz.root")
pytestmark = pytest.mark.skipif(not EVENTS.is_dir(), reason="shared CMS tutorial files absent")
N = 300  # events checked by the numpy loops


@pytest.fixture(scope="module")
def wz() -> dict[str, np.ndarray]:
    return uproot.open(WZ)["events"].arrays(library="np", entry_stop=N)


@pytest.fixture(scope="module")
def zz() -> dict[str, np.ndarray]:
    return uproot.open(ZZ)["events"].arrays(library="np", entry_stop=N)


def _objects(events: dict[str, np.ndarray], prefix: str, i: int) -> dict[str, np.ndarray]:
    """Event ``i``'s objects of one collection, float64, sorted by decreasing pT."""
    fields = {k[len(prefix) + 1 :]: v[i].astype(np.float64) for k, v in events.items()
              if k.startswith(prefix + "_")}
    order = np.argsort(-np.hypot(fields["Px"], fields["Py"]), kind="stable")
    return {k: v[order] for k, v in fields.items()}


def _pair_mass(a: dict[str, np.ndarray], i: int, b: dict[str, np.ndarray], j: int) -> float:
    e, px, py, pz = (a[k][i] + b[k][j] for k in ("E", "Px", "Py", "Pz"))
    return float(np.sqrt(e**2 - (px**2 + py**2 + pz**2)))


def test_collections_are_found_from_the_branch_names() -> None:
    keys = uproot.open(WZ)["events"].keys()
    found = collections(keys)
    assert set(found) == {"Jet", "Muon", "Electron", "Photon"}  # MET, MC*: no full momentum
    assert found["Muon"].momentum == {"px": "Muon_Px", "py": "Muon_Py", "pz": "Muon_Pz",
                                      "E": "Muon_E"}
    assert found["Muon"].fields == {"Charge": "Muon_Charge", "Iso": "Muon_Iso"}
    nano = collections(["Tau_pt", "Tau_eta", "Tau_phi", "Tau_mass", "Tau_pfRelIso03_all"])
    assert nano["Tau"].fields == {"pfRelIso03_all": "Tau_pfRelIso03_all"}


def test_counts_leads_sums_and_selections_equal_numpy_loops(wz: dict) -> None:
    expressions = (
        ("n_jet", "count(Jet)"),
        ("n_jet30", "count(Jet[Jet.pt > 30])"),
        ("n_good", "count(Jet[(Jet.pt > 30) & Jet.ID])"),
        ("jet2_pt", "lead(Jet.pt, 1, default=-1)"),
        ("mu1_iso", "lead(Muon.Iso, default=99)"),
        ("ht", "sum(Jet.pt)"),
        ("ht30", "sum(Jet[Jet.pt > 30].pt)"),
        ("btag_max", "max(Jet.btag, default=-1)"),
        ("eta_min", "min(abs(Jet.eta), default=9)"),
        ("n_loose_mu", "sum(Muon.Iso < 5)"),
    )
    table = read_features(WZ, "events", expressions)[:N]
    for i in range(N):
        jet, mu = _objects(wz, "Jet", i), _objects(wz, "Muon", i)
        pt = np.hypot(jet["Px"], jet["Py"])
        eta = np.arcsinh(jet["Pz"] / pt)
        expected = [
            len(pt),
            np.sum(pt > 30),
            np.sum((pt > 30) & (jet["ID"] > 0)),
            pt[1] if len(pt) > 1 else -1,
            mu["Iso"][0] if len(mu["Iso"]) else 99,
            pt.sum(),
            pt[pt > 30].sum(),
            jet["btag"].max() if len(pt) else -1,
            np.abs(eta).min() if len(pt) else 9,
            np.sum(mu["Iso"] < 5),
        ]
        np.testing.assert_allclose(table[i], expected, rtol=1e-12, err_msg=f"event {i}")


def test_pair_masses_equal_the_hand_formula(zz: dict) -> None:
    expressions = (
        ("m_mumu", "mass(Muon, 0, 1, default=0)"),
        ("m_3mu", "mass(Muon, 0, 1, 2, default=-1)"),
        ("m_z", "z_mass(Muon, Electron, default=0)"),
    )
    table = read_features(ZZ, "events", expressions)[:N]
    two = 0
    for i in range(N):
        mu, el = _objects(zz, "Muon", i), _objects(zz, "Electron", i)
        n_mu = len(mu["E"])
        m_mumu = _pair_mass(mu, 0, mu, 1) if n_mu >= 2 else 0.0
        m_3mu = -1.0
        if n_mu >= 3:
            e, px, py, pz = (mu[k][:3].sum() for k in ("E", "Px", "Py", "Pz"))
            m_3mu = np.sqrt(e**2 - px**2 - py**2 - pz**2)
        candidates = [
            _pair_mass(leptons, a, leptons, b)
            for leptons in (mu, el)
            for a in range(len(leptons["E"]))
            for b in range(a + 1, len(leptons["E"]))
            if leptons["Charge"][a] * leptons["Charge"][b] < 0
        ]
        m_z = min(candidates, key=lambda m: abs(m - 91.1876)) if candidates else 0.0
        np.testing.assert_allclose(table[i], [m_mumu, m_3mu, m_z], rtol=1e-9, err_msg=str(i))
        two += n_mu >= 2
    assert two > 100  # the check covers many dimuon events


def test_flat_expressions_of_the_cms_config(wz: dict) -> None:
    expressions = (
        ("met", "sqrt(MET_px**2 + MET_py**2)"),
        ("n_lepton", "NMuon + NElectron"),
        ("pileup_up", "1 + 0.01 * (NPrimaryVertices - 8)"),
        ("trigger", "triggerIsoMu24"),
        ("met_phi", "arctan2(MET_py, MET_px)"),
        ("capped", "where(NJet > 2, minimum(NJet, 4), -NJet)"),
        ("unit", "1"),
    )
    table = read_features(WZ, "events", expressions)[:N]
    px, py = wz["MET_px"].astype(np.float64), wz["MET_py"].astype(np.float64)
    n_jet = wz["NJet"]
    expected = np.stack([
        np.hypot(px, py),
        wz["NMuon"] + wz["NElectron"],
        1 + 0.01 * (wz["NPrimaryVertices"] - 8),
        wz["triggerIsoMu24"],
        np.arctan2(py, px),
        np.where(n_jet > 2, np.minimum(n_jet, 4), -n_jet),
        np.ones(N),
    ], axis=1)
    np.testing.assert_allclose(table, expected, rtol=1e-12)
    assert table.dtype == np.float64 and not table.flags.writeable


def test_a_feature_named_like_a_branch_uses_its_expression(wz: dict) -> None:
    table = read_features(WZ, "events", (("NJet", "NJet * 2"), ("NMuon", "NMuon")))[:N]
    np.testing.assert_array_equal(table[:, 0], 2 * wz["NJet"])
    np.testing.assert_array_equal(table[:, 1], wz["NMuon"])


EXPRESSIONS = (
    ("n_jet30", "count(Jet[Jet.pt > 30])"),
    ("mu_pt", "lead(Muon.pt, 0, default=0)"),
    ("m_mumu", "mass(Muon, 0, 1, default=0)"),
    ("met", "hypot(MET_px, MET_py)"),
)


def test_chunked_loading_equals_one_shot_loading() -> None:
    whole = read_features(ZZ, "events", EXPRESSIONS)
    chunked = read_features(ZZ, "events", EXPRESSIONS, step_size=100)
    assert len(whole) == 2421
    np.testing.assert_array_equal(chunked, whole)


def test_parquet_and_rntuple_take_the_same_expressions(tmp_path: Path) -> None:
    branches = ["Muon_Px", "Muon_Py", "Muon_Pz", "Muon_E", "Jet_Px", "Jet_Py", "Jet_Pz",
                "Jet_E", "MET_px", "MET_py"]
    events = uproot.open(ZZ)["events"].arrays(branches)
    reference = read_features(ZZ, "events", EXPRESSIONS)
    parquet = tmp_path / "zz.parquet"
    ak.to_parquet(events, parquet, row_group_size=500)  # read one row group at a time
    np.testing.assert_array_equal(read_features(str(parquet), "events", EXPRESSIONS), reference)
    rntuple = tmp_path / "zz.root"
    with uproot.recreate(rntuple) as handle:
        handle.mkrntuple("events", events)
    assert type(uproot.open(rntuple)["events"]).__name__.endswith("RNTuple")
    np.testing.assert_array_equal(read_features(str(rntuple), "events", EXPRESSIONS), reference)
    message = (f"data.features.iso: cannot evaluate 'lead(Muon_Iso, default=0)': no branch or "
               f"collection 'Muon_Iso' (event set 'zz', file '{rntuple}'); did you mean "
               f"'Muon_E', 'Muon_Pz', 'Muon_Py'?")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        read_features(str(rntuple), "events", (("iso", "lead(Muon_Iso, default=0)"),),
                      label="zz")


def _raises(message: str, path: str, expression: str, tree: str = "events") -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        read_features(path, tree, (("f", expression),), label="wz")


def test_bad_features_give_one_line_errors() -> None:
    where = f"(event set 'wz', file '{WZ}')"
    _raises(f"data.files.wz.tree: no tree 'evts' {where}; it has ['events']", WZ, "NJet", "evts")
    _raises(f"data.features.f: cannot evaluate 'NJets + 1': no branch or collection 'NJets' "
            f"{where}; did you mean 'NJet', 'Jet', 'Jet_E'?", WZ, "NJets + 1")
    _raises(f"data.features.f: cannot evaluate 'lead(Jet.pt)': TypeError: lead() missing 1 "
            f"required keyword-only argument: 'default' {where}", WZ, "lead(Jet.pt)")
    _raises(f"data.features.f: cannot evaluate 'sum(NJet)': ValueError: sum() takes "
            f"per-object values such as Jet.pt, got int32 {where}", WZ, "sum(NJet)")
    _raises(f"data.features.f: cannot evaluate 'Jet.Px': AttributeError: no field named 'Px' "
            f"{where}", WZ, "Jet.Px")
    _raises(f"data.features.f: 'Jet.pt' must give one number per event, got var * float64 "
            f"{where}", WZ, "Jet.pt")
    _raises(f"data.features.f: 'Jet.pt[0]' must give one number per event, got 3 values for "
            f"3367 events {where}", WZ, "Jet.pt[0]")
    _raises(f"data.features.f: 'log(NMuon)' is NaN or infinite on 157 of 3367 events, the "
            f"first at event 3 {where}", WZ, "log(NMuon)")
    n_muon = uproot.open(WZ)["events"]["NMuon"].array(library="np")
    bad = np.flatnonzero(n_muon < 2)
    _raises(f"data.features.f: '1 / count(Muon[Muon.pt > 0]) - 1 / (NMuon - 1)' is NaN or "
            f"infinite on {len(bad)} of 3367 events, the first at event {bad[0]} {where}",
            WZ, "1 / count(Muon[Muon.pt > 0]) - 1 / (NMuon - 1)")


FUNCTIONS = ["abs", "arctan2", "cos", "count", "exp", "hypot", "lead", "log", "mass", "max",
             "maximum", "min", "minimum", "sin", "sqrt", "sum", "tan", "where", "z_mass"]


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("sqrt(MET_px**2 +", "invalid syntax at column 5"),
        ("NJet > 2 and NMuon > 0",
         "'and'/'or' are not element-wise, use & and | around parenthesised comparisons"),
        ("not NJet", "'not' is not element-wise, use ~"),
        ("1 if NJet else 0", "'a if c else b' is not element-wise, use where(c, a, b)"),
        ("Muon['Iso']", "only numbers are allowed as constants, got 'Iso'"),
        ("__import__('os')", f"cannot call '__import__', the functions are {FUNCTIONS}"),
        ("np.sqrt(NJet)", f"cannot call 'np.sqrt', the functions are {FUNCTIONS}"),
        ("Jet.__class__", "private attribute '__class__' is not allowed"),
        ("[x for x in NJet]", "ListComp is not allowed"),
    ],
)
def test_expressions_outside_the_language_are_rejected(expression: str, reason: str) -> None:
    where = f"(event set 'wz', file '{WZ}')"
    _raises(f"data.features.f: cannot evaluate {expression!r}: {reason} {where}", WZ, expression)
    with pytest.raises(ExpressionError):
        parse(expression)


def test_parse_finds_the_names_and_fields_to_read() -> None:
    expression = parse("count(Jet[(Jet.pt > 30) & (Jet.btag > 0.5)]) + z_mass(Muon, default=0)")
    assert expression.names == {"Jet", "Muon"}
    assert expression.fields == {"pt", "btag", "Charge", "charge"}


def test_unreadable_files_give_one_line_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.root"
    garbage.write_bytes(b"garbage" * 100)
    _raises(f"data.files.wz.path: cannot read it as ROOT: ValueError: not a ROOT file: first "
            f"four bytes are b'garb' in file {garbage} (event set 'wz', file '{garbage}')",
            str(garbage), "NJet")
    content = Path(WZ).read_bytes()
    truncated = tmp_path / "truncated.root"
    truncated.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match=r"^data\.files\.wz\.path: cannot read it as ROOT: "
                       r"OSError: .*truncated\.root'\)$"):
        read_features(str(truncated), "events", (("f", "NJet"),), label="wz")
    damaged = tmp_path / "damaged.root"  # the directory is intact, some baskets are not
    middle = len(content) // 3
    damaged.write_bytes(content[:middle] + bytes(20000) + content[middle + 20000 :])
    with pytest.raises(ValueError, match=r"^data\.files\.wz\.path: cannot read it as ROOT: "
                       r"zlib\.error: .*damaged\.root'\)$"):
        read_features(str(damaged), "events", (("f", "sum(Jet.pt)"),), label="wz")
    parquet = tmp_path / "garbage.parquet"
    parquet.write_bytes(b"garbage" * 100)
    with pytest.raises(ValueError, match=r"^data\.files\.wz\.path: cannot read it as Parquet: "):
        read_features(str(parquet), "events", (("f", "x"),), label="wz")


def test_check_and_load_name_the_event_set(tmp_path: Path) -> None:
    copy = tmp_path / "ww.root"
    shutil.copy(EVENTS / "ww.root", copy)
    data = DataConfig(
        source="files",
        files={"ww": FileConfig(path=str(copy))},
        features={"mu_pt": "lead(Muon.pt, 0, default=0)", "n_jet": "count(Jet)"},
    )
    files.check(data)
    train, test = files.load(data, "train", 0)["ww"], files.load(data, "test", 0)["ww"]
    assert len(train) + len(test) == 4580 and train.shape[1] == 2
    bad = data.model_copy(update={"features": {"mu_pt": "lead(Muon.pt, 0)"}})
    with pytest.raises(ValueError, match=r"^data\.features\.mu_pt: .*\(event set 'ww', file "):
        files.check(bad)
