"""Peak memory and wall time of reading object-level features from a large ROOT file.

Builds, in a temporary directory, a ROOT file of CMS-like jagged events (the CMS HEP
tutorial simulation of shared/data/events/cms_heptutorial_mc, wz + zz + ww + single_top
repeated until the branch data reach ``--size-gb`` GB uncompressed; written with uproot,
ZLIB level 1), and compares

- ``neosx``: ``neosx.data.files.read_features`` of six features (MET, jet count above
  30 GeV, leading-muon pT, HT, the leading dimuon mass, the largest b-tag), read in chunks
  of ``STEP_SIZE`` (20 MB) and kept as an (N, 6) float64 array;
- ``neosx (one chunk)``: the same with the whole file as one chunk;
- ``uproot``: uproot's plain ``tree.arrays(branches, library="ak")`` of the eleven branches
  those features need (the features themselves not computed).

Each case runs in a fresh Python subprocess; it reports its wall time for the read and its
peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, so the whole
process: Python, numpy, awkward, uproot), and the baseline RSS after its imports. The file
is read from the page cache (it was just written). Run from the repository root::

    python benchmarks/bench_load.py               # ~1 GB, a few minutes on 2 cores
    python benchmarks/bench_load.py --size-gb 0.1  # smoke test
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EVENTS = Path(__file__).parents[1].parent / "shared" / "data" / "events" / "cms_heptutorial_mc"
SETS = ("wz", "zz", "ww", "single_top")
FEATURES = (
    ("met", "sqrt(MET_px**2 + MET_py**2)"),
    ("n_jet30", "count(Jet[Jet.pt > 30])"),
    ("mu_pt", "lead(Muon.pt, 0, default=0)"),
    ("ht", "sum(Jet.pt)"),
    ("m_mumu", "mass(Muon, 0, 1, default=0)"),
    ("btag", "max(Jet.btag, default=-1)"),
)
BRANCHES = ["MET_px", "MET_py", "Jet_Px", "Jet_Py", "Jet_Pz", "Jet_E", "Jet_btag",
            "Muon_Px", "Muon_Py", "Muon_Pz", "Muon_E"]
CASES = ("neosx", "neosx (one chunk)", "uproot")
_COLLECTIONS = ("Jet", "Muon", "Electron", "Photon")


def _tutorial_events() -> tuple[dict, int]:
    """The tutorial events as uproot writes them (collections zipped), and their bytes."""
    import awkward as ak
    import uproot

    events = ak.concatenate(
        [uproot.open(EVENTS / f"{name}.root")["events"].arrays() for name in SETS]
    )
    columns: dict = {}
    for field in events.fields:
        prefix, _, suffix = field.partition("_")
        if prefix in _COLLECTIONS:
            columns.setdefault(prefix, {})[suffix] = events[field]
        else:
            columns[field] = events[field]
    return {k: ak.zip(v) if isinstance(v, dict) else v for k, v in columns.items()}, events.nbytes


def build(path: Path, size_gb: float) -> int:
    """Write the file; returns its number of events."""
    import uproot

    block, nbytes = _tutorial_events()
    repeats = max(1, round(size_gb * 1e9 / nbytes))
    with uproot.recreate(path, compression=uproot.ZLIB(1)) as handle:
        tree = handle.mktree("events", {name: array.type for name, array in block.items()})
        for _ in range(repeats):
            tree.extend(block)
        return tree.num_entries


def child(case: str, path: str) -> None:
    """Run one case and print {seconds, peak_mib, baseline_mib, shape} as JSON."""
    import uproot

    from neosx.data import files

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    if case == "uproot":
        with uproot.open(path) as handle:
            arrays = handle["events"].arrays(BRANCHES, library="ak")
            shape = [len(arrays), len(arrays.fields)]
    else:
        step = files.STEP_SIZE if case == "neosx" else "1000 GB"
        shape = list(files.read_features(path, "events", FEATURES, step_size=step).shape)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mib": peak, "baseline_mib": baseline,
                      "shape": shape}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0, help="uncompressed branch data")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from _machine import machine_lines

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.root"
        start = time.perf_counter()
        n_events = build(path, args.size_gb)
        written = time.perf_counter() - start
        print(*machine_lines(), sep="\n")
        print(f"- file: {n_events:,} events, {path.stat().st_size / 2**20:.0f} MiB on disk "
              f"(~{args.size_gb:g} GB of branch data uncompressed), written in {written:.0f} s")
        print(f"- neosx features: {', '.join(e for _, e in FEATURES)}")
        print(f"- uproot branches: {', '.join(BRANCHES)}\n")
        results = {}
        for case in CASES:
            run = subprocess.run([sys.executable, __file__, "--child", case, str(path)],
                                 capture_output=True, text=True, check=True)
            results[case] = json.loads(run.stdout.splitlines()[-1])
            print(f"{case}: done", file=sys.stderr)
    print("| loader | result | wall time (s) | peak RSS (MiB) | peak RSS above imports (MiB) |")
    print("|---|---|---:|---:|---:|")
    for case, r in results.items():
        shape = " x ".join(map(str, r["shape"]))
        print(f"| {case} | {shape} | {r['seconds']:.1f} | {r['peak_mib']:.0f} | "
              f"{r['peak_mib'] - r['baseline_mib']:.0f} |")
    ours, peer = results["neosx"], results["uproot"]
    above = [r["peak_mib"] - r["baseline_mib"] for r in (peer, ours)]
    print(f"\nuproot / neosx: peak RSS {peer['peak_mib'] / ours['peak_mib']:.1f}x, above "
          f"imports {above[0] / above[1]:.1f}x, wall time {peer['seconds'] / ours['seconds']:.2f}x")


if __name__ == "__main__":
    main()
