"""One training step of the neos Gaussian-blob study: neosx vs relaxed 0.4.0 (as neos does it).

A step is what ``neosx.train.train_analysis`` jits: the value and gradient of the median
expected CLs (mu = 1, background-only Asimov data) with respect to the analysis parameters
(MLP weights, and with trainable edges the edge logits), then an optax Adam update
(``optimizer.update`` + ``optax.apply_updates``). The study is ``configs/neos_blobs.yaml``:
2-D Gaussian blobs, MLP 2 -> 32 -> 32 -> 1 (ReLU, sigmoid output, inputs standardised with
the training events' mean and std), 4-bin bKDE histogram of the score on [0, 1] with
bandwidth 0.1, 20 signal / 100 background expected events, one background histosys from the
up / down blobs. A minibatch holds B events of each event set (signal, background,
background_up, background_down), drawn once with ``neosx.train._minibatch(seed, 0, ...)`` and
passed to the step as an argument (train.py draws a new one every step; the indices are
computed on the host there too).

Rows:

- ``neosx``: the configuration as it is (trainable bin edges, overflow ``clip``):
  ``jit(step)`` with ``value_and_grad(lambda p: make_loss(analysis, {"cls": 1}, evaluation)(
  analysis.outputs(p, batch)), has_aux=True)`` and ``neosx.train.make_optimizer`` (Adam,
  lr 0.003), exactly as train.py builds its step.
- ``neosx fixed``: the same with ``histogram.trainable_edges=false`` and
  ``histogram.overflow=drop``: the like-for-like comparison with relaxed (4 fixed uniform bins;
  bKDE mass outside [0, 1] lost, as in ``relaxed.hist`` without ``reflect_infinities``).
- ``relaxed``: relaxed 0.4.0 as neos uses it: the same MLP written in ``jax.numpy`` (same
  standardisation constants, initial weights = neosx's initial ``params["observable"]``
  pytree), ``relaxed.hist(scores, bins=linspace(0, 1, 5), bandwidth=0.1)`` (relaxed.hist has
  no trainable edges and no event weights: counts are scaled by expected / B), the histosys
  likelihood of ``bench_infer._relaxed_model_class`` (pyhf's code4p likelihood in jnp) and
  ``relaxed.infer.hypotest(1.0, asimov_bkg, model, test_stat="q", expected_pars=bkg-only)``
  as in ``bench_infer.py``, with its one-line ``fixed_poi_fit`` fix (``patch_relaxed``).
  Optimiser: ``optax.adam(0.003)``.

All rows run in one process, one after the other (compile times of later rows may profit
slightly from warm caches of JAX itself; the XLA programs are all different). *compile s* is
the first call (trace + compile + one step); *step ms* the median of the following >= 20
steps, each ended with ``block_until_ready``; the parameters and optimiser state are carried
from step to step, as in training. *CLs* is the loss of the first step (initial parameters).
*peak RSS* is ``ru_maxrss`` of the process after the row (cumulative: it never decreases).

    ../bench-venv/bin/python benchmarks/bench_train.py            # B in {500, 2000, 10000}
    ../bench-venv/bin/python benchmarks/bench_train.py --batch-sizes 500 --repeats 5
"""

from __future__ import annotations

import argparse
import resource
import shlex
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _machine import machine_lines
from bench_infer import _relaxed_model_class, _version, patch_relaxed

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "neos_blobs.yaml"
BATCH_SIZES = (500, 2000, 10000)
REPEATS = 20
FIXED = ["histogram.trainable_edges=false", "histogram.overflow=drop"]
_MIB = 2**10  # ru_maxrss is in KiB on Linux


def _neosx_step(overrides: list[str], batch_size: int) -> tuple[Callable, tuple, dict, Any]:
    """(jitted step, (params, opt_state), batch, analysis) mirroring neosx.train."""
    import jax
    import jax.numpy as jnp
    import optax

    from neosx.analysis import Analysis
    from neosx.config import load_config
    from neosx.data import load_events
    from neosx.objectives import make_loss
    from neosx.train import _minibatch, make_optimizer

    config, _ = load_config(CONFIG, overrides)
    analysis = Analysis.from_config(config)
    events = load_events(config.data, "train", config.seed)
    sizes = {name: array.shape[0] for name, array in events.items()}
    indices = _minibatch(config.seed, 0, sizes, batch_size)
    batch = {name: jnp.asarray(events[name][index], jnp.float64) for name, index in indices.items()}
    optimizer = make_optimizer(config.training.optimizer, config.training.steps)
    loss_fn = make_loss(analysis, {"cls": 1.0}, config.evaluation)

    @jax.jit
    def step(params: Any, opt_state: Any, batch: dict) -> tuple:
        def loss(params: Any) -> tuple:
            return loss_fn(analysis.outputs(params, batch))

        (value, _), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, new_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state, value

    params = analysis.initial_params()
    return step, (params, optimizer.init(params)), batch, analysis


def _relaxed_step(analysis: Any, batch: dict) -> tuple[Callable, tuple]:
    """relaxed's step on the same minibatch, MLP initial weights from neosx's ``analysis``."""
    import jax
    import jax.numpy as jnp
    import optax
    import relaxed

    from neosx.data import load_events

    patch_relaxed()
    model_class = _relaxed_model_class()
    config = analysis.config
    training = np.concatenate(list(load_events(config.data, "train", config.seed).values()))
    columns = [analysis.features.index(f) for f in config.observable.features]
    inputs = training[:, columns]
    shift, scale = jnp.asarray(inputs.mean(axis=0)), jnp.asarray(inputs.std(axis=0))
    edges = jnp.linspace(*config.histogram.range, config.histogram.bins + 1)
    bandwidth = config.histogram.bandwidth.init
    expected = {s.name: s.expected for s in config.samples}  # signal 20, background 100
    init = {"mu": jnp.asarray(1.0), "alpha": jnp.zeros(1)}
    bounds = {"mu": (0.0, 10.0), "alpha": (-5.0, 5.0)}
    optimizer = optax.adam(config.training.optimizer.learning_rate.init)

    def mlp(params: list, events: jax.Array) -> jax.Array:
        h = (events[:, jnp.asarray(columns)] - shift) / scale
        for layer in params[:-1]:
            h = jax.nn.relu(h @ layer["w"] + layer["b"])
        return jax.nn.sigmoid(h @ params[-1]["w"] + params[-1]["b"])[:, 0]

    def cls(params: list, batch: dict) -> jax.Array:
        def histogram(event_set: str, total: float) -> jax.Array:
            scores = mlp(params, batch[event_set])
            return relaxed.hist(scores, bins=edges, bandwidth=bandwidth) * total / scores.shape[0]

        background = histogram("background", expected["background"])
        model = model_class(
            histogram("signal", expected["signal"]),
            background,
            histogram("background_up", expected["background"])[None, :],
            histogram("background_down", expected["background"])[None, :],
        )
        bonly = {"mu": jnp.asarray(0.0), "alpha": jnp.zeros(1)}
        asimov = (model.expected_main(bonly), jnp.zeros(1))
        return relaxed.infer.hypotest(
            1.0, asimov, model, init_pars=init, bounds=bounds, test_stat="q", expected_pars=bonly
        )

    @jax.jit
    def step(params: Any, opt_state: Any, batch: dict) -> tuple:
        value, grads = jax.value_and_grad(cls)(params, batch)
        updates, new_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state, value

    params = jax.tree.map(jnp.asarray, analysis.initial_params()["observable"])
    return step, (params, optimizer.init(params))


def _measure(step: Callable, state: tuple, batch: dict, repeats: int) -> dict[str, float]:
    import jax

    params, opt_state = state
    start = time.perf_counter()
    params, opt_state, value = jax.block_until_ready(step(params, opt_state, batch))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        params, opt_state, _ = jax.block_until_ready(step(params, opt_state, batch))
        times.append(time.perf_counter() - start)
    return {
        "compile_s": first,
        "step_s": float(np.median(times)),
        "cls": float(value),
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / _MIB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args()

    warnings.filterwarnings("ignore", message="jsonschema.RefResolver is deprecated")
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    try:
        import relaxed  # noqa: F401

        have_relaxed = True
    except ImportError as error:
        print(f"note: relaxed not importable ({error}); its rows read n/a", file=sys.stderr)
        have_relaxed = False

    rows = []
    for size in args.batch_sizes:
        step, state, batch, _ = _neosx_step([], size)
        print(f"B={size}: neosx", file=sys.stderr)
        trainable = _measure(step, state, batch, args.repeats)
        step, state, batch, analysis = _neosx_step(FIXED, size)
        print(f"B={size}: neosx fixed", file=sys.stderr)
        fixed = _measure(step, state, batch, args.repeats)
        peer = None
        if have_relaxed:
            print(f"B={size}: relaxed", file=sys.stderr)
            step, state = _relaxed_step(analysis, batch)
            peer = _measure(step, state, batch, args.repeats)
        rows.append((size, trainable, fixed, peer))

    versions = ", ".join(
        f"{p} {_version(p)}" for p in ("neosx", "relaxed", "jaxopt", "equinox", "optax")
    )
    lines = [
        "## One training step of the neos blob study (value+grad of expected CLs + Adam)\n",
        f"- command: `{shlex.join(['python', *sys.argv])}`",
        *machine_lines(),
        f"- versions: {versions}; float64; JAX CPU dispatch synchronous; all rows in one process",
        f"- study: `configs/neos_blobs.yaml`; B events per event set (4 sets); compile s = first"
        f" step (trace + compile + run); step ms = median of {args.repeats} further steps"
        " (params and Adam state carried over), block_until_ready; CLs = first-step loss;"
        " peak RSS = process ru_maxrss after the row (cumulative)",
        "- neosx: config as is (trainable edges, overflow clip); neosx fixed:"
        " trainable_edges=false, overflow=drop (like-for-like with relaxed.hist: fixed"
        " uniform bins, out-of-range mass dropped); relaxed 0.4.0: relaxed.hist + jnp"
        " histosys model + hypotest(test_stat='q'), fixed_poi_fit patched (see"
        " bench_infer.py); relaxed/neosx is relative to neosx fixed\n",
    ]
    header = [
        "implementation", "B", "compile s", "step ms", "relaxed/neosx", "CLs",
        "\\|ΔCLs\\| vs relaxed", "peak RSS MiB",
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for size, trainable, fixed, peer in rows:
        for name, m in (("neosx", trainable), ("neosx fixed", fixed), ("relaxed", peer)):
            if m is None:
                lines.append(f"| {name} | {size} | n/a | n/a | n/a | n/a | n/a | n/a |")
                continue
            ratio = (
                f"{peer['step_s'] / fixed['step_s']:.1f}x"
                if name == "neosx fixed" and peer is not None else ""
            )
            delta = (
                f"{abs(m['cls'] - peer['cls']):.1e}"
                if name != "relaxed" and peer is not None else ""
            )
            lines.append(
                f"| {name} | {size} | {m['compile_s']:.2f} | {m['step_s'] * 1e3:.3g} | {ratio} |"
                f" {m['cls']:.6g} | {delta} | {m['rss_mib']:.0f} |"
            )
    lines += [
        "",
        "- |ΔCLs| of `neosx` (trainable edges at their uniform start, overflow clip) differs from"
        " relaxed by the clipped out-of-range kernel mass; `neosx fixed` is the like-for-like row.",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
