"""Toy-based hypotests: neosx.infer.toy_hypotest vs pyhf's ToyCalculator (numpy backend).

On each published workspace of ``shared/data/workspaces`` (displaced leptons, sbottom with its
signal patch, ttbar), the same test is run by

- ``neosx``: ``jax.jit(lambda mu, data, key: nx.infer.toy_hypotest(mu, data, model,
  ntoys=N, seed=key))``: 'incl. compile' is the first call (trace + compile + run), 'excl.
  compile' a second call with another key;
- ``pyhf``: ``pyhf.infer.hypotest(mu, data, model, calctype="toybased", ntoys=M,
  return_tail_probs=True, return_expected_set=True, track_progress=False)`` after
  ``numpy.random.seed(seed)``. pyhf fits every toy in a Python loop (SLSQP), 0.1 to 80 s
  per toy, so it runs ``M = --pyhf-toys`` toys (default per workspace below) and its time is
  extrapolated linearly to N (marked ``*``): ``t_once + (t - t_once) N / M``, where
  ``t_once`` is the time of the four fits it runs once (the observed statistic's two and the
  two toy-generating fits), timed again alone after the hypotest.

Both use qtilde and 2 x N toys (signal+background and background-only). pyhf 0.7.6's numpy
backend passes ``interpolation=`` to ``numpy.percentile``, which numpy 2 removed; the script
replaces that one method with numpy's ``method=`` (the same linear interpolation) at run time.
CLs is printed with its binomial error, ``CLs sqrt((1 - CLs+b) / (N CLs+b) + (1 - CLb) /
(N CLb))``.

Run from the repository root (a report in Markdown on stdout, progress on stderr)::

    python benchmarks/bench_toys.py --workspaces displaced_leptons   # N = 10^4, ~2 min
    python benchmarks/bench_toys.py --workspaces sbottom --ntoys 100   # ~15 min
    python benchmarks/bench_toys.py --workspaces ttbar --ntoys 10      # ~15 min

On sbottom and ttbar most toys' fits run neosx's global search (restarts from every
constrained parameter at +-1 sigma, seconds per toy), so N = 10^4 takes hours there.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from _machine import machine_lines

WORKSPACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "workspaces"
TARGET = 100.0


class Workspace(NamedTuple):
    files: tuple[str, ...]  # the workspace, then patches
    mu: float
    pyhf_toys: int


CASES = {
    "displaced_leptons": Workspace(
        ("atlas_susy_2018_14_displaced_leptons/SRee_SRmm_SRem_with_signal_Slep_1000_10.json",),
        5.0, 200),
    "sbottom": Workspace(
        ("atlas_susy_2018_31_sbottom_regionA/RegionA_BkgOnly.json",
         "atlas_susy_2018_31_sbottom_regionA/RegionA_patch.sbottom_1300_205_60.json"), 1.0, 10),
    "ttbar": Workspace(("ttbar_ljets_xsec_inclusive/ttbar_ljets_xsec_inclusive_pruned.json",),
                       1.05, 2),
}


def _patch_pyhf_percentile() -> None:
    from pyhf.tensor import numpy_backend

    def percentile(self: Any, tensor: Any, q: Any, axis: Any = None,
                   interpolation: str = "linear") -> Any:
        return np.percentile(tensor, q, axis=axis, method=interpolation)

    numpy_backend.numpy_backend.percentile = percentile


def load(case: Workspace) -> tuple[Any, np.ndarray]:
    """The pyhf model (patched) and its observed data."""
    import pyhf

    workspace = pyhf.Workspace(json.loads((WORKSPACES / case.files[0]).read_text()))
    patches = [json.loads((WORKSPACES / p).read_text()) for p in case.files[1:]]
    model = workspace.model(patches=patches)
    return model, np.asarray(workspace.data(model), dtype=float)


def cls_error(cls: float, clsb: float, clb: float, ntoys: int) -> float:
    """Binomial error of CLs = CLs+b / CLb from two independent sets of ``ntoys``."""
    if clsb <= 0 or clb <= 0:
        return float("nan")
    return cls * float(np.sqrt((1 - clsb) / (ntoys * clsb) + (1 - clb) / (ntoys * clb)))


def run_neosx(model: Any, data: np.ndarray, mu: float, ntoys: int, seed: int) -> dict:
    import jax

    import neosx as nx

    hf = nx.HistFactory(model)
    fn = jax.jit(lambda mu, data, key: nx.infer.toy_hypotest(mu, data, hf, ntoys=ntoys,
                                                             seed=key))
    start = time.perf_counter()
    jax.block_until_ready(fn(mu, data, jax.random.key(seed + 1)))
    first = time.perf_counter() - start
    start = time.perf_counter()
    result = jax.block_until_ready(fn(mu, data, jax.random.key(seed)))
    steady = time.perf_counter() - start
    cls, clsb, clb = (float(x) for x in (result.cls, result.clsb, result.clb))
    return {"first_s": first, "steady_s": steady, "cls": cls, "clsb": clsb, "clb": clb,
            "cls_error": cls_error(cls, clsb, clb, ntoys)}


def run_pyhf(model: Any, data: np.ndarray, mu: float, ntoys: int, seed: int) -> dict:
    import pyhf

    pyhf.set_backend("numpy")
    np.random.seed(seed)  # noqa: NPY002 (pyhf samples from numpy's global state)
    start = time.perf_counter()
    cls, (clsb, clb), _ = pyhf.infer.hypotest(
        mu, data, model, calctype="toybased", ntoys=ntoys, return_tail_probs=True,
        return_expected_set=True, track_progress=False)
    seconds = time.perf_counter() - start
    # what pyhf runs once, whatever the number of toys, timed again alone: the observed
    # statistic (two fits) and the two toy-generating fits
    config = model.config
    options = (config.suggested_init(), config.suggested_bounds(), config.suggested_fixed())
    start = time.perf_counter()
    pyhf.infer.test_statistics.qmu_tilde(mu, data, model, *options)
    for value in (mu, 0.0):
        pyhf.infer.mle.fixed_poi_fit(value, data, model, *options)
    once = time.perf_counter() - start
    cls, clsb, clb = float(cls), float(clsb), float(clb)
    return {"s": seconds, "once_s": min(once, seconds), "cls": cls, "clsb": clsb, "clb": clb,
            "cls_error": cls_error(cls, clsb, clb, ntoys)}


def table(rows: list[dict], ntoys: int) -> list[str]:
    lines = [
        "| workspace | mu | toys (neosx) | neosx s incl. compile | neosx s excl. compile | "
        "pyhf toys run | pyhf s for N toys | pyhf / neosx | CLs neosx | CLs pyhf |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        neosx, pyhf = row["neosx"], row["pyhf"]
        extrapolated = pyhf["toys"] != ntoys
        pyhf_s = pyhf["once_s"] + (pyhf["s"] - pyhf["once_s"]) * ntoys / pyhf["toys"]
        lines.append(
            f"| {row['name']} | {row['mu']:g} | {ntoys} | {neosx['first_s']:.2f} | "
            f"{neosx['steady_s']:.2f} | {pyhf['toys']} | {pyhf_s:,.0f}{'*' if extrapolated else ''}"
            f" | {pyhf_s / neosx['steady_s']:,.0f}x | {neosx['cls']:.4f} ± "
            f"{neosx['cls_error']:.4f} | {pyhf['cls']:.4f} ± {pyhf['cls_error']:.4f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ntoys", type=int, default=10_000, help="neosx toys per hypothesis")
    parser.add_argument("--pyhf-toys", type=int, default=None,
                        help="pyhf toys per hypothesis (default per workspace: "
                        + ", ".join(f"{k} {c.pyhf_toys}" for k, c in CASES.items()) + ")")
    parser.add_argument("--workspaces", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import jax

    jax.config.update("jax_enable_x64", True)
    warnings.filterwarnings("ignore", message="jsonschema.RefResolver is deprecated")
    _patch_pyhf_percentile()
    rows = []
    for name in args.workspaces:
        case = CASES[name]
        model, data = load(case)
        pyhf_toys = min(args.pyhf_toys or case.pyhf_toys, args.ntoys)
        print(f"{name}: neosx, {args.ntoys} toys ...", file=sys.stderr, flush=True)
        neosx = run_neosx(model, data, case.mu, args.ntoys, args.seed)
        print(f"{name}: neosx {neosx}; pyhf, {pyhf_toys} toys ...", file=sys.stderr, flush=True)
        pyhf = {**run_pyhf(model, data, case.mu, pyhf_toys, args.seed), "toys": pyhf_toys}
        print(f"{name}: pyhf {pyhf}", file=sys.stderr, flush=True)
        rows.append({"name": name, "mu": case.mu, "neosx": neosx, "pyhf": pyhf})

    versions = ", ".join(f"{p} {version(p)}" for p in ("neosx", "pyhf", "jax", "numpy", "scipy"))
    print(*[
        "## Toy-based hypotests (qtilde): neosx vs pyhf's ToyCalculator\n",
        f"- command: `{shlex.join(['python', *sys.argv])}`",
        *machine_lines(),
        f"- versions: {versions}; float64",
        "- neosx: `jax.jit(toy_hypotest)`, both toy sets fitted in one jitted program (on CPU one"
        " toy after the other in a `lax.map`); 'incl. compile' = first call, 'excl.' = second",
        "- pyhf: numpy backend, `hypotest(calctype='toybased')`; `*`: pyhf ran 'pyhf toys run'"
        " (M) toys per hypothesis, its time extrapolated to N toys as t_once + (t - t_once) N / M"
        " (t_once: its 4 fits to the observed data, timed alone)",
        f"- N = {args.ntoys} toys per hypothesis; seed {args.seed}; CLs ± its binomial error;"
        f" target: pyhf / neosx >= {TARGET:g}x\n",
        *table(rows, args.ntoys),
    ], sep="\n")


if __name__ == "__main__":
    main()
