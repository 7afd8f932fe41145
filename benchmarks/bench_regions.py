"""One training step of multi-region studies against the network's own value+grad.

A step is what ``neosx.train.train_analysis`` jits: the value and gradient of the training
objective (expected CLs at mu = 1 here) with respect to all analysis parameters (network
weights, trainable edges), through ``analysis.outputs(params, batch, knobs=...)`` (every
region's templates of every sample and systematic) and the HistFactory fits, then the optax
update of ``neosx.train.make_optimizer``. Knobs are built from the schedules at the step number
as train.py does (a traced bandwidth where it is annealed). The minibatch is drawn once with
``neosx.train._minibatch(seed, 0, ...)`` and passed to the step as an argument.

Cases:

- ``cms_wz_regions``: ``configs/cms_wz_regions.yaml`` as it is (CMS open-data files, three
  regions, MLP 4 -> 16 -> 16 -> 1, batch_size 2000 of the config: each event set gives
  min(2000, its training events)).
- ``synthetic``: a study built here as a dict (:func:`synthetic_config`) and validated with
  ``neosx.config.parse_config``: Gaussian blobs (features x, y; event sets signal, background,
  background_up, background_down; 100 000 training events each, all of them in the batch),
  MLP 2 -> 32 -> 32 -> 1, three regions (SR ``x > -1``: the score in 4 bins with trainable
  edges; CR1 ``x < -1``: a count; CR2 ``y < 0``: y in 5 bins), one signal and five
  background samples sharing the four event sets (one with a normfactor, some with
  ``staterror: true`` or ``full``) and ten systematics: four feature shifts (scale / shift of
  x and y, two of them normsys, one on two samples only) and six per-sample ones (three
  histosys from the up / down event sets, three constant normsys).

Each case runs in its own Python process (float64, JAX CPU dispatch synchronous, pinned to
``--cores`` cores). It times three jitted functions on the same batch:

- *step*: the training step above (parameters and Adam state carried from call to call);
- *network* (the peer): ``value_and_grad`` of ``sum_k mean(mlp(params, X_k))`` w.r.t. the
  network weights, where ``X_k`` are exactly the event arrays whose network scores reach the
  analysis' yields: ``analysis.outputs`` is traced with a recording observable (each event
  set's nominal events and its feature-shifted variants), and the arrays whose scores enter
  no histogram (a normsys feature shift only counts selected events; a sample outside every
  score region) are left out, as XLA drops them from the step (``dce_jaxpr`` of the traced
  yields). This is what the network alone costs at that size;
- *templates*: ``value_and_grad`` of the sum of every yield ``analysis.outputs`` returns
  (network, preselections, histograms, systematics; no fit, no update), to split the step.

*compile s* is the first call (trace + XLA compile + one run). Then ``--rounds`` rounds, each
one call of step, network and templates in turn, each ended with ``block_until_ready``; the
*ms* columns are medians over rounds and *step / network* the median of the per-round ratios
(drift of a shared machine moves both alike). *fits + update* is step minus templates.
Targets: step / network <= 2 and step compile <= 10 s.

    python benchmarks/bench_regions.py                     # about 3 minutes on 2 idle cores
    python benchmarks/bench_regions.py --cases synthetic --rounds 20
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _machine import machine_lines

CMS_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "cms_wz_regions.yaml"
CASES = ("cms_wz_regions", "synthetic")
ROUNDS = 10
TARGET_RATIO = 2.0
TARGET_COMPILE_S = 10.0
_MIB = 2**10  # ru_maxrss is in KiB on Linux


def synthetic_config() -> dict[str, Any]:
    """The synthetic three-region, six-sample, ten-systematic blob study (a raw config)."""
    blobs = ("signal", "background", "background_up", "background_down")
    return {
        "name": "synthetic_regions",
        "seed": 0,
        "data": {"source": "blobs", "train_events": 100_000},
        "samples": [
            {"name": "signal", "events": "signal", "role": "signal", "expected": 20.0,
             "normsys": [{"name": "signal_xsec", "hi": 1.05, "lo": 0.95}]},
            {"name": "bkg_main", "events": "background", "role": "background",
             "expected": 100.0, "normfactor": "mu_bkg", "staterror": "full",
             "histosys": [{"name": "bkg_main_shape", "up": blobs[2], "down": blobs[3]}]},
            {"name": "bkg_up", "events": "background_up", "role": "background",
             "expected": 30.0, "staterror": True,
             "histosys": [{"name": "bkg_up_shape", "up": blobs[1], "down": blobs[3]}]},
            {"name": "bkg_down", "events": "background_down", "role": "background",
             "expected": 30.0, "staterror": True,
             "normsys": [{"name": "bkg_down_norm", "hi": 1.1, "lo": 0.9}]},
            {"name": "bkg_tail", "events": "background", "role": "background",
             "expected": 20.0, "staterror": "full",
             "histosys": [{"name": "bkg_tail_shape", "up": blobs[3], "down": blobs[2]}]},
            {"name": "bkg_minor", "events": "background_down", "role": "background",
             "expected": 10.0,
             "normsys": [{"name": "bkg_minor_norm", "hi": 1.2, "lo": 0.8}]},
        ],
        "systematics": [
            {"name": "x_scale", "scale": {"x": 0.03}},
            {"name": "y_scale", "scale": {"y": 0.02}, "modifier": "normsys"},
            {"name": "x_offset", "shift": {"x": 0.1}},
            {"name": "y_offset", "shift": {"y": 0.05}, "modifier": "normsys",
             "samples": ["signal", "bkg_main"]},
        ],
        "regions": [
            {"name": "SR", "preselection": "x > -1", "observable": "score",
             "histogram": {"bins": 4, "trainable_edges": True, "bandwidth": 0.1}},
            {"name": "CR1", "preselection": "x < -1", "observable": "count"},
            {"name": "CR2", "preselection": "y < 0", "observable": {"feature": "y"},
             "histogram": {"bins": 5, "range": [-4.0, 0.0], "bandwidth": 0.3}},
        ],
        "observable": {"type": "mlp", "features": ["x", "y"], "hidden": [32, 32]},
        "training": {"objective": "cls", "steps": 300, "batch_size": 100_000,
                     "optimizer": {"name": "adam", "learning_rate": 0.003}},
    }


def _study(case: str) -> Any:
    from neosx.config import load_config, parse_config

    if case == "cms_wz_regions":
        return load_config(CMS_CONFIG)[0]
    return parse_config(synthetic_config())


def _functions(case: str) -> dict[str, Any]:
    """The three jitted functions of a case, their initial arguments and the setup."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    import optax
    from jax._src.interpreters import partial_eval as pe  # dce_jaxpr: inputs that reach outputs

    from neosx.analysis import Analysis, Knobs
    from neosx.data import load_events
    from neosx.objectives import make_loss
    from neosx.train import _minibatch, _static_or_schedule, make_optimizer

    config = _study(case)
    events = load_events(config.data, "train", config.seed)
    analysis = Analysis.from_config(config, events)
    sizes = {name: array.shape[0] for name, array in events.items()}
    indices = _minibatch(config.seed, 0, sizes, config.training.batch_size)
    batch = {name: jnp.asarray(events[name][index], jnp.float64) for name, index in indices.items()}

    total = config.training.steps
    optimizer = make_optimizer(config.training.optimizer, total)
    regions = [region.config for region in analysis.regions]
    bandwidths = [_static_or_schedule(r.histogram.bandwidth, total) for r in regions]
    slopes = [[_static_or_schedule(c.slope, total) for c in r.cuts] for r in regions]
    loss_fn = make_loss(analysis, config.training.objective, config.evaluation)

    def knobs(step: Any) -> Knobs:
        return Knobs(
            tuple(b(step) for b in bandwidths), tuple(tuple(s(step) for s in r) for r in slopes)
        )

    @jax.jit
    def step(params: Any, opt_state: Any, step: jax.Array, batch: dict) -> tuple:
        def loss(params: Any) -> tuple:
            return loss_fn(analysis.outputs(params, batch, knobs=knobs(step)))

        (value, _), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, new_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state, value

    @jax.jit
    @jax.value_and_grad
    def templates(params: Any, batch: dict) -> jax.Array:
        yields = analysis.outputs(params, batch, knobs=knobs(jnp.asarray(0))).yields
        return sum(jnp.sum(leaf) for leaf in jax.tree.leaves(yields))

    # The event arrays the analysis feeds the network, recorded from its own pass, and of
    # those the ones whose scores reach a yield (XLA drops the rest, e.g. the network on the
    # variants of a normsys feature shift, which only count selected events).
    apply = analysis.observable.apply

    def recorded(offsets: list | None, params: Any, batch: dict) -> tuple[list, Any]:
        seen: list[jax.Array] = []

        def recording(p: Any, x: jax.Array) -> jax.Array:
            seen.append(x)
            score = apply(p, x)
            return score if offsets is None else score + offsets[len(seen) - 1]

        recorder = dataclasses.replace(
            analysis, observable=analysis.observable._replace(apply=recording)
        )
        return seen, recorder.outputs(params, batch).yields

    params = analysis.initial_params()
    scored = jax.block_until_ready(jax.jit(lambda p, b: recorded(None, p, b)[0])(params, batch))
    offsets = [jnp.zeros(())] * len(scored)
    traced = jax.make_jaxpr(lambda o: jax.tree.leaves(recorded(o, params, batch)[1]))(offsets)
    _, used = pe.dce_jaxpr(traced.jaxpr, [True] * len(traced.jaxpr.outvars))
    inputs = [x for x, live in zip(scored, used[: len(scored)], strict=True) if live]

    @jax.jit
    @jax.value_and_grad
    def network(weights: Any, inputs: list[jax.Array]) -> jax.Array:
        return sum(jnp.mean(apply(weights, x)) for x in inputs)

    widths = [len(config.observable.features), *config.observable.hidden, 1]
    return {
        "step": (step, [params, optimizer.init(params), jnp.asarray(0), batch]),
        "network": (network, [params["observable"], inputs]),
        "templates": (templates, [params, batch]),
        "setup": {
            "events": {name: int(x.shape[0]) for name, x in batch.items()},
            "arrays": len(inputs),
            "scored": len(scored),
            "network_events": int(sum(x.shape[0] for x in inputs)),
            "mlp": " -> ".join(map(str, widths)),
            "regions": len(analysis.regions),
            "samples": len(config.samples),
            "systematics": len(config.systematics)
            + sum(len(s.histosys) + len(s.normsys) for s in config.samples),
            "shifts": len(config.systematics),
        },
    }


def _call(name: str, function: Callable, args: list) -> float:
    """Time one call; a step carries its parameters, optimiser state and step number."""
    import jax

    start = time.perf_counter()
    result = jax.block_until_ready(function(*args))
    elapsed = time.perf_counter() - start
    if name == "step":
        args[0], args[1], args[2] = result[0], result[1], args[2] + 1
    return elapsed


def run_case(case: str, rounds: int) -> dict[str, Any]:
    """Compile and time one case in this process (see the module docstring)."""
    functions = _functions(case)
    setup = functions.pop("setup")
    names = ("step", "network", "templates")
    compile_s = {name: _call(name, *functions[name]) for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            times[name].append(_call(name, *functions[name]))
    step, network = np.asarray(times["step"]), np.asarray(times["network"])
    return {
        "case": case,
        "setup": setup,
        "compile_s": compile_s,
        "median_s": {name: float(np.median(t)) for name, t in times.items()},
        "ratio": float(np.median(step / network)),
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / _MIB,
    }


def _child(args: argparse.Namespace) -> None:
    usable = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, set(usable[: args.cores]))
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    print(json.dumps({"machine": machine_lines(), **run_case(args.case, args.rounds)}))


def _row(result: dict[str, Any]) -> str:
    setup, compile_s, median = result["setup"], result["compile_s"], result["median_s"]
    low, high = min(setup["events"].values()), max(setup["events"].values())
    per_set = f"{low:,}" if low == high else f"{low:,} to {high:,}"
    cells = [
        result["case"],
        f"{setup['regions']} / {setup['samples']} / {setup['systematics']} ({setup['shifts']})",
        setup["mlp"],
        per_set,
        f"{setup['arrays']} of {setup['scored']} ({setup['network_events'] / 1e6:.3g} M)",
        f"{compile_s['step']:.2f}",
        f"{median['step'] * 1e3:.3g}",
        f"{compile_s['network']:.2f}",
        f"{median['network'] * 1e3:.3g}",
        f"**{result['ratio']:.2f}**",
        f"{median['templates'] * 1e3:.3g}",
        f"{(median['step'] - median['templates']) * 1e3:.3g}",
        f"{result['rss_mib']:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--cores", type=int, default=2, help="CPU cores per case (2)")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.case is not None:
        _child(args)
        return

    results = []
    for case in args.cases:
        print(f"{case} ...", file=sys.stderr)
        command = [sys.executable, __file__, "--case", case, "--rounds", str(args.rounds),
                   "--cores", str(args.cores)]
        child = subprocess.run(command, capture_output=True, text=True, check=False)
        if child.returncode != 0:
            sys.exit(f"{case} failed:\n{child.stderr}")
        results.append(json.loads(child.stdout.splitlines()[-1]))

    header = [
        "case", "regions / samples / systematics (feature shifts)", "MLP", "events per set",
        "arrays through the network (events)", "step compile s", "step ms",
        "network compile s", "network ms", "step / network", "templates ms",
        "fits + update ms", "peak RSS MiB",
    ]
    lines = [
        "## One training step of multi-region studies against the network's value+grad\n",
        f"- command: `{shlex.join(['python', *sys.argv])}`",
        *results[0]["machine"],
        f"- float64; JAX CPU dispatch synchronous; each case in its own process on {args.cores}"
        f" cores; compile = first call (trace + compile + run); ms = median of {args.rounds}"
        " interleaved rounds (step, network, templates), block_until_ready; step / network ="
        " median of the per-round ratios",
        "- step: value+grad of expected CLs through `analysis.outputs` and the fits + Adam"
        " update (as train.py); network: value+grad of the MLP alone on the same event arrays"
        " whose scores reach a yield (k of n: of the n the analysis scores), recorded from the"
        " analysis; templates:"
        " value+grad of the summed yields of `analysis.outputs` (no fit)\n",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *(_row(result) for result in results),
        "",
        f"- targets: step / network <= {TARGET_RATIO:g} and step compile <= "
        f"{TARGET_COMPILE_S:g} s; "
        + "; ".join(
            f"{r['case']}: ratio {'met' if r['ratio'] <= TARGET_RATIO else 'missed'}, compile "
            f"{'met' if r['compile_s']['step'] <= TARGET_COMPILE_S else 'missed'}"
            for r in results
        ),
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
