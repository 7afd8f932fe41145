"""Benchmark: neosx.histfactory logpdf and its gradient against pyhf's numpy and jax backends.

Cases: the published workspaces of ``shared/data/workspaces`` and synthetic single-channel
models of 10, 100 and 1000 bins (signal + two backgrounds, normsys, histosys, staterror,
lumi; built with :func:`neosx.histfactory.build_spec`). For every case the table gives the
first-call (trace + compile) time of the jitted neosx functions and the steady-state time per
call of

* pyhf numpy ``Model.logpdf`` (no gradient exists in that backend),
* pyhf jax ``jax.jit(model.logpdf)`` and ``jax.jit(jax.grad(...))``,
* neosx ``jax.jit(model.logpdf)`` and ``jax.jit(jax.grad(model.logpdf))``,

and the ratios pyhf-numpy / neosx and pyhf-jax / neosx (logpdf and gradient).

Two thread hand-offs of JAX's CPU runtime cost more than these likelihoods on a small or
busy machine, and are switchable:

* JAX runs a compiled call on a worker thread when XLA estimates it at >= 1000 flops
  ("async dispatch"). The default here switches that off (``jax_cpu_enable_async_dispatch``
  = False, for pyhf's jax backend as for neosx); ``--async-dispatch`` keeps JAX's default.
* XLA splits elementwise loops over ~1000 elements or more across the cores.
  ``--single-core`` pins the process to one core (as pyhf's numpy backend runs anyway).

Timings are interleaved: each of 40 rounds times a batch of every implementation in turn.
The time columns are each implementation's best round. The headline ratio numpy/neosx is
also given paired: the median over rounds of the ratio within a round, whose two batches run
within milliseconds of each other. On a shared machine whose speed drifts over seconds
(pyhf's numpy logpdf of one case was seen at 87-131 us in consecutive runs) the best times
of two implementations may come from rounds of different speed; the paired ratio does not
depend on that.

Run: ``python benchmarks/bench_histfactory.py [--quick] [--async-dispatch] [--single-core]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import timeit
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pyhf

from neosx.histfactory import HistFactory, build_spec

WORKSPACES = Path("/work/shared/data/workspaces")


def published() -> dict[str, tuple[dict[str, Any], list[Any]]]:
    """Workspace JSON and patches of the published likelihoods."""
    sbottom = WORKSPACES / "atlas_susy_2018_31_sbottom_regionA"
    return {
        "displaced_leptons": (
            json.loads(
                (
                    WORKSPACES
                    / "atlas_susy_2018_14_displaced_leptons"
                    / "SRee_SRmm_SRem_with_signal_Slep_1000_10.json"
                ).read_text()
            ),
            [],
        ),
        "sbottom_1300_205_60": (
            json.loads((sbottom / "RegionA_BkgOnly.json").read_text()),
            [json.loads((sbottom / "RegionA_patch.sbottom_1300_205_60.json").read_text())],
        ),
        "ttbar_ljets": (
            json.loads(
                (
                    WORKSPACES
                    / "ttbar_ljets_xsec_inclusive"
                    / "ttbar_ljets_xsec_inclusive_pruned.json"
                ).read_text()
            ),
            [],
        ),
    }


def synthetic(n_bins: int) -> dict[str, Any]:
    """A signal-plus-two-backgrounds workspace with ``n_bins`` bins."""
    x = np.linspace(0.0, 1.0, n_bins)
    signal = 2.0 + 20.0 * np.exp(-0.5 * ((x - 0.7) / 0.1) ** 2)
    falling = 100.0 * np.exp(-2.0 * x) + 1.0
    flat = np.full(n_bins, 30.0)
    histograms = {
        "SR": {
            "signal": {"data": signal, "normsys": {"sig_theory": {"hi": 1.1, "lo": 0.92}}},
            "falling": {
                "data": falling,
                "normsys": {"falling_xsec": {"hi": 1.05, "lo": 0.95}},
                "histosys": {
                    "jes": {
                        "hi_data": falling * (1.0 + 0.05 * x),
                        "lo_data": falling * (1.0 - 0.04 * x),
                    },
                    "jer": {"hi_data": falling * 1.02, "lo_data": falling * (0.99 - 0.01 * x)},
                },
                "staterror": {"stat_SR": np.sqrt(falling) * 0.3},
            },
            "flat": {
                "data": flat,
                "normsys": {"flat_xsec": {"hi": 1.2, "lo": 0.85}},
                "histosys": {
                    "jes": {"hi_data": flat * (1.0 - 0.03 * x), "lo_data": flat * (1.0 + 0.02 * x)}
                },
                "staterror": {"stat_SR": np.sqrt(flat) * 0.3},
            },
        }
    }
    return build_spec(histograms, poi_name="mu", signal_samples=["signal"], lumi_uncertainty=0.02)


ROUNDS = 40


def round_times(functions: dict[str, Callable[[], Any]], budget: float) -> list[dict[str, float]]:
    """Seconds per call of each function in each of :data:`ROUNDS` rounds.

    A round times a short batch of every function in turn, so the functions of one round
    run within a few tens of milliseconds of each other and meet the same machine: the
    ratio of two of them in one round is unaffected by load or clock changes that come and
    go between rounds.
    """
    batches = {}
    for name, function in functions.items():
        jax.block_until_ready(function())
        start = time.perf_counter()
        jax.block_until_ready(function())
        single = max(time.perf_counter() - start, 1e-7)
        batches[name] = max(1, int(budget / ROUNDS / len(functions) / single))
    rounds = []
    for _ in range(ROUNDS):
        rounds.append({
            name: timeit.timeit(function, number=batches[name]) / batches[name]
            for name, function in functions.items()
        })
    return rounds


def first_call(function: Callable[..., Any], *args: Any) -> float:
    """Seconds of the first call: tracing, compilation and one evaluation."""
    start = time.perf_counter()
    jax.block_until_ready(function(*args))
    return time.perf_counter() - start


def pyhf_model(workspace: dict[str, Any], patches: list[Any], backend: str) -> tuple[Any, Any]:
    """The pyhf workspace and model, built under ``backend``."""
    pyhf.set_backend(backend)
    ws = pyhf.Workspace(workspace)
    return ws, ws.model(patches=patches)


def bench_case(workspace: dict[str, Any], patches: list[Any], budget: float) -> dict[str, float]:
    """Times of one case (seconds)."""
    ws, numpy_model = pyhf_model(workspace, patches, "numpy")
    data = np.asarray(ws.data(numpy_model), dtype=np.float64)
    pars = np.asarray(numpy_model.config.suggested_init(), dtype=np.float64) * 1.01
    jpars, jdata = jax.numpy.asarray(pars), jax.numpy.asarray(data)
    result: dict[str, float] = {
        "npars": numpy_model.config.npars,
        "nbins": numpy_model.config.nmaindata,
    }

    _, jax_model = pyhf_model(workspace, patches, "jax")
    pyhf_logpdf = jax.jit(lambda p, d: jax_model.logpdf(p, d)[0])
    pyhf_grad = jax.jit(jax.grad(lambda p, d: jax_model.logpdf(p, d)[0]))
    result["pyhf_jax_compile"] = first_call(pyhf_logpdf, jpars, jdata)
    result["pyhf_jax_grad_compile"] = first_call(pyhf_grad, jpars, jdata)
    pyhf.set_backend("numpy")

    start = time.perf_counter()
    model = HistFactory(numpy_model)
    result["neosx_build"] = time.perf_counter() - start
    logpdf = jax.jit(model.logpdf)
    grad = jax.jit(jax.grad(model.logpdf))
    result["neosx_compile"] = first_call(logpdf, jpars, jdata)
    result["neosx_grad_compile"] = first_call(grad, jpars, jdata)

    rounds = round_times(
        {
            "pyhf_numpy": lambda: numpy_model.logpdf(pars, data),
            "pyhf_jax": lambda: pyhf_logpdf(jpars, jdata).block_until_ready(),
            "pyhf_jax_grad": lambda: pyhf_grad(jpars, jdata).block_until_ready(),
            "neosx": lambda: logpdf(jpars, jdata).block_until_ready(),
            "neosx_grad": lambda: grad(jpars, jdata).block_until_ready(),
        },
        budget,
    )
    result |= {name: min(r[name] for r in rounds) for name in rounds[0]}
    result["paired_ratio"] = statistics.median(r["pyhf_numpy"] / r["neosx"] for r in rounds)
    reference = numpy_model.logpdf(pars, data)[0]
    result["rel_diff"] = abs(float(logpdf(jpars, jdata)) - reference) / abs(reference)
    return result


def table(results: dict[str, dict[str, float]]) -> str:
    us = 1e6
    header = (
        "| case | pars | bins | neosx build / compile logpdf / compile grad (s) "
        "| pyhf numpy logpdf (us) | pyhf jax logpdf / grad (us) | neosx logpdf / grad (us) "
        "| numpy/neosx best / paired | pyhf-jax/neosx logpdf / grad | rel. diff |"
    )
    lines = [header, "|" + "---|" * 10]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['npars']} | {r['nbins']} "
            f"| {r['neosx_build']:.2f} / {r['neosx_compile']:.2f} / {r['neosx_grad_compile']:.2f} "
            f"| {r['pyhf_numpy'] * us:.1f} "
            f"| {r['pyhf_jax'] * us:.1f} / {r['pyhf_jax_grad'] * us:.1f} "
            f"| {r['neosx'] * us:.1f} / {r['neosx_grad'] * us:.1f} "
            f"| {r['pyhf_numpy'] / r['neosx']:.1f}x / **{r['paired_ratio']:.1f}x** "
            f"| {r['pyhf_jax'] / r['neosx']:.1f}x / {r['pyhf_jax_grad'] / r['neosx_grad']:.1f}x "
            f"| {r['rel_diff']:.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing runs")
    parser.add_argument(
        "--async-dispatch", action="store_true", help="keep JAX's default async CPU dispatch"
    )
    parser.add_argument(
        "--single-core", action="store_true", help="pin the process to one CPU core"
    )
    args = parser.parse_args()
    if args.single_core:  # before JAX starts its thread pools and compiles anything
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_cpu_enable_async_dispatch", args.async_dispatch)
    # pyhf 0.7.6 validates with jsonschema.RefResolver, deprecated since jsonschema 4.18.
    warnings.filterwarnings("ignore", message="jsonschema.RefResolver is deprecated")
    budget = 1.0 if args.quick else 4.0

    cases = published() | {f"synthetic_{n}": (synthetic(n), []) for n in (10, 100, 1000)}
    results = {}
    for name, (workspace, patches) in cases.items():
        results[name] = bench_case(workspace, patches, budget)
        print(f"{name}: done", flush=True)
    dispatch = "async (JAX default)" if args.async_dispatch else "synchronous"
    cores = len(os.sched_getaffinity(0))
    print(
        f"\njax {jax.__version__}, pyhf {pyhf.__version__}, CPU dispatch: {dispatch}, "
        f"cores: {cores}, load average: {os.getloadavg()[0]:.1f}"
    )
    print(table(results))
    worst = min(r["pyhf_numpy"] / r["neosx"] for r in results.values())
    worst_paired = min(r["paired_ratio"] for r in results.values())
    print(
        f"\nslowest case: {worst_paired:.1f}x faster than pyhf numpy logpdf, paired "
        f"({worst:.1f}x from the best times; target >= 10x)"
    )


if __name__ == "__main__":
    main()
