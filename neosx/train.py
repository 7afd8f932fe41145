"""Training: optax updates of the analysis parameters on minibatches of events.

Each step draws its minibatch from the step number and the seed alone (so a resumed run sees
exactly the batches of an uninterrupted one); one jitted function then evaluates the soft
analysis and the loss, differentiates through the fits (implicitly) and applies the optax
update. Checkpoints hold
the parameters, the optimiser state, the step and the seed, written atomically; metrics are
appended to ``metrics.jsonl`` (strict JSON: a non-finite number is ``null``).

A step that would leave the run in a bad state stops it cleanly instead: a non-finite loss,
figure, gradient or *updated* parameter, a diverging loss (``|loss| > DIVERGED_LOSS``) or
trainable bin edges collapsing onto each other (a bin narrower than ``COLLAPSED_BIN`` of the
histogram range). The state before that step, which is finite, is checkpointed, and the
message names the quantity and the step. An interrupt (Ctrl-C) checkpoints the steps
completed so far; resuming continues exactly.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from neosx.analysis import Analysis, Knobs, Params
from neosx.config import EvaluationConfig, OptimizerConfig, ScheduleConfig, TrainingConfig
from neosx.objectives import make_loss
from neosx.runfolder import atomic_write, dumps, record

__all__ = [
    "TrainResult",
    "latest_checkpoint",
    "load_checkpoint",
    "make_optimizer",
    "make_schedule",
    "save_checkpoint",
    "train_analysis",
]

_CHECKPOINT = re.compile(r"^step_(\d{7})\.npz$")
KEEP_CHECKPOINTS = 3
"""Periodic checkpoints kept per analysis (older ones are removed)."""
DIVERGED_LOSS = 1e10
"""A loss larger than this in magnitude stops training as diverged."""
COLLAPSED_BIN = 1e-9
"""Trainable edges whose narrowest bin is below this fraction of the range have collapsed."""


class TrainResult(NamedTuple):
    """The outcome of training one analysis.

    Attributes:
        params: The final (or last good) parameters.
        step: Steps completed.
        status: ``"completed"``, ``"stopped"`` (non-finite or diverging values) or
            ``"interrupted"`` (Ctrl-C; the completed steps are checkpointed).
        message: Why it stopped (empty when completed).
    """

    params: Params
    step: int
    status: Literal["completed", "stopped", "interrupted"]
    message: str


def make_schedule(config: ScheduleConfig, total_steps: int) -> optax.Schedule:
    """An optax schedule from its configuration (``steps`` defaults to the run length)."""
    steps = config.steps or total_steps
    if config.schedule == "constant":
        return optax.constant_schedule(config.init)
    if config.schedule == "linear":
        return optax.linear_schedule(config.init, config.end, steps)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(config.init, steps, alpha=config.end / config.init)
    return optax.exponential_decay(
        config.init, steps, config.end / config.init, end_value=config.end
    )


def make_optimizer(config: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
    """The optax optimiser (optionally after global-norm gradient clipping)."""
    learning_rate = make_schedule(config.learning_rate, total_steps)
    optimizer = getattr(optax, config.name)(learning_rate)
    if config.clip_norm is not None:
        optimizer = optax.chain(optax.clip_by_global_norm(config.clip_norm), optimizer)
    return optimizer


def _static_or_schedule(config: ScheduleConfig, total_steps: int) -> Callable[[Any], Any]:
    """A constant stays a Python float (keeps the fast histogram path); else the schedule."""
    if config.schedule == "constant":
        return lambda step: config.init
    return make_schedule(config, total_steps)


# -- checkpoints -----------------------------------------------------------------------------


def save_checkpoint(
    directory: Path, step: int, seed: int, params: Params, opt_state: Any
) -> Path:
    """Write ``step_XXXXXXX.npz`` atomically (temporary file, then rename); keep the last few.

    Args:
        directory: The analysis' checkpoint folder (created if needed).
        step: Steps completed.
        seed: The run seed (minibatches are drawn from seed and step).
        params: Parameters (a pytree of arrays).
        opt_state: The optimiser state (a pytree of arrays).

    Returns:
        The checkpoint path.
    """
    leaves = jax.tree.leaves((params, opt_state))
    arrays = {f"leaf_{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    path = directory / f"step_{step:07d}.npz"
    atomic_write(
        path,
        lambda handle: np.savez(handle, step=step, seed=seed, n_leaves=len(leaves), **arrays),
        binary=True,
    )
    for old in sorted(p for p in directory.iterdir() if _CHECKPOINT.match(p.name))[
        :-KEEP_CHECKPOINTS
    ]:
        old.unlink()
    return path


def latest_checkpoint(directory: Path) -> Path | None:
    """The checkpoint with the most steps in ``directory`` (``None`` if there is none)."""
    if not directory.is_dir():
        return None
    found = sorted(p for p in directory.iterdir() if _CHECKPOINT.match(p.name))
    return found[-1] if found else None


def load_checkpoint(path: Path, template: tuple[Params, Any]) -> tuple[int, Params, Any]:
    """Read a checkpoint into the structure of ``template`` = ``(params, opt_state)``.

    Raises:
        ValueError: The checkpoint does not match the template (another configuration).
    """
    with np.load(path) as stored:
        treedef = jax.tree.structure(template)
        if int(stored["n_leaves"]) != treedef.num_leaves:
            raise ValueError(
                f"{path}: checkpoint has {int(stored['n_leaves'])} arrays, this configuration "
                f"needs {treedef.num_leaves}; was the configuration changed?"
            )
        leaves = [jnp.asarray(stored[f"leaf_{i:05d}"]) for i in range(treedef.num_leaves)]
        step = int(stored["step"])
    params, opt_state = jax.tree.unflatten(treedef, leaves)
    return step, params, opt_state


# -- metrics ---------------------------------------------------------------------------------


def _truncate_metrics(path: Path, label: str, step: int) -> None:
    """Drop this analysis' records after ``step`` (a resumed run writes them again)."""
    if not path.exists():
        return
    kept = [
        line for line in path.read_text().splitlines()
        if line and not (
            (entry := json.loads(line))["analysis"] == label and entry["step"] > step
        )
    ]
    atomic_write(path, lambda handle: handle.write("".join(line + "\n" for line in kept)))


def _append(path: Path, entry: Mapping[str, Any]) -> None:
    with path.open("a") as handle:
        handle.write(dumps(entry) + "\n")


def _first_bad(tree: Any, prefix: str) -> str | None:
    """The path of the first leaf of a tree of booleans that is False."""
    for key_path, ok in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not bool(ok):
            return prefix + jax.tree_util.keystr(key_path)
    return None


# -- the loop --------------------------------------------------------------------------------


def _minibatch(
    seed: int, step: int, sizes: Mapping[str, int], batch_size: int
) -> dict[str, np.ndarray]:
    """Indices of ``batch_size`` events per event set, without replacement.

    Drawn on the host from the seed and the step alone (NumPy; XLA's sort on CPU makes an
    in-graph draw cost milliseconds), so a resumed run sees exactly the same minibatches.
    """
    rng = np.random.default_rng([seed, step])
    return {
        name: rng.choice(size, min(batch_size, size), replace=False)
        for name, size in sorted(sizes.items())
    }


def train_analysis(
    analysis: Analysis,
    events: Mapping[str, jax.Array],
    *,
    objective: Mapping[str, float],
    training: TrainingConfig,
    evaluation: EvaluationConfig,
    seed: int,
    run_dir: Path,
    label: str,
    steps: int | None = None,
    resume: bool = False,
    progress: bool = True,
    hard_evaluation: Callable[[Params], dict[str, Any]] | None = None,
) -> TrainResult:
    """Train one analysis, checkpointing into ``run_dir / "checkpoints" / label``.

    Args:
        analysis: The analysis (observable, cuts, histogram, model).
        events: Training events ``{event_set: (N, F)}``.
        objective: ``{objective name: weight}``.
        training: Steps, batch size, optimiser, checkpoint / log / hard-evaluation periods.
        evaluation: mu and cl of the statistical objectives.
        seed: Initial parameters and minibatches derive from it.
        run_dir: The run folder (``metrics.jsonl`` is appended there).
        label: Name of this analysis in the run (``"optimised"``, ``"baseline"``).
        steps: Override ``training.steps``.
        resume: Continue from the latest checkpoint of ``label`` if there is one.
        progress: Show a progress bar.
        hard_evaluation: ``fn(params) -> figures``, called every ``training.evaluate_every``
            steps; its result is logged as ``{"hard": figures}`` (it reports a failure of
            pyhf's fits as figures, it does not raise).

    Returns:
        :class:`TrainResult`. A non-finite value stops the loop (status ``"stopped"``)
        after checkpointing the last good state.
    """
    total = training.steps if steps is None else steps
    optimizer = make_optimizer(training.optimizer, total)
    regions = [region.config for region in analysis.regions]
    bandwidths = [_static_or_schedule(r.histogram.bandwidth, total) for r in regions]
    slopes = [[_static_or_schedule(c.slope, total) for c in r.cuts] for r in regions]
    temperature = _static_or_schedule(analysis.config.observable.temperature, total)
    learning_rate = make_schedule(training.optimizer.learning_rate, total)
    loss_fn = make_loss(analysis, objective, evaluation)
    events = {name: jnp.asarray(array, jnp.float64) for name, array in events.items()}
    sizes = {name: array.shape[0] for name, array in events.items()}

    def knobs(step: Any) -> Knobs:
        return Knobs(
            tuple(b(step) for b in bandwidths), tuple(tuple(s(step) for s in r) for r in slopes),
            temperature(step),
        )

    def _narrowest_bin(params: Params) -> jax.Array:
        """The narrowest bin of any region with trainable edges, as a fraction of its range
        (1 without trainable edges)."""
        narrowest = jnp.asarray(1.0)
        for region in analysis.regions:
            if "edges" in params["regions"][region.name]:
                low, high = region.config.histogram.range
                edges = region.edges(params["regions"][region.name])
                narrowest = jnp.minimum(narrowest, jnp.min(jnp.diff(edges)) / (high - low))
        return narrowest

    @jax.jit
    def step_fn(params: Params, opt_state: Any, step: jax.Array, indices: dict) -> tuple:
        batch = {name: events[name][index] for name, index in indices.items()}

        def loss(params: Params) -> tuple[jax.Array, dict[str, Any]]:
            return loss_fn(analysis.outputs(params, batch, knobs=knobs(step)))

        (value, figures), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, new_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        finite = {
            "loss": jnp.isfinite(value),
            "figures": {k: jnp.all(jnp.isfinite(v)) for k, v in figures.items()},
            "gradient": jax.tree.map(lambda g: jnp.all(jnp.isfinite(g)), grads),
            "parameter": jax.tree.map(lambda p: jnp.all(jnp.isfinite(p)), new_params),
            "optimiser state": jnp.all(jnp.asarray(
                [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(new_state)
                 if jnp.issubdtype(jnp.result_type(x), jnp.inexact)] or [True]
            )),
        }
        return new_params, new_state, value, figures, finite, _narrowest_bin(new_params)

    params = analysis.initial_params(seed)
    opt_state = optimizer.init(params)
    checkpoints = run_dir / "checkpoints" / label
    metrics_path = run_dir / "metrics.jsonl"
    start = 0
    latest = latest_checkpoint(checkpoints) if resume else None
    if latest is not None:
        start, params, opt_state = load_checkpoint(latest, (params, opt_state))
    _truncate_metrics(metrics_path, label, start)
    metrics_path.touch()
    record(run_dir, [metrics_path])

    def checkpoint(done: int) -> None:
        record(run_dir, [save_checkpoint(checkpoints, done, seed, params, opt_state)])

    bar = tqdm(total=total, initial=start, desc=label, disable=not progress, leave=True)
    completed = start  # steps whose update is in params (what an interrupt checkpoints)
    try:
        for step in range(start, total):
            began = time.perf_counter()
            indices = _minibatch(seed, step, sizes, training.batch_size)
            new_params, new_state, value, figures, finite, narrowest = step_fn(
                params, opt_state, jnp.asarray(step), indices
            )
            value = float(value)
            bad = _problem(finite, value, float(narrowest))
            if bad is not None:
                checkpoint(step)
                message = (
                    f"{label}: {bad} at step {step}; stopped, last good state checkpointed "
                    f"at step {step}"
                )
                _append(metrics_path, {"analysis": label, "step": step, "stopped": message})
                return TrainResult(params, step, "stopped", message)
            params, opt_state = new_params, new_state
            done = completed = step + 1
            if done % training.log_every == 0 or done == total:
                entry = {
                    "analysis": label,
                    "step": done,
                    "loss": value,
                    "objectives": {k: float(v) for k, v in figures.items()},
                    "bandwidth": {
                        r.name: float(b(step)) for r, b in zip(regions, bandwidths, strict=True)
                    },
                    "learning_rate": float(learning_rate(step)),
                    "time_s": time.perf_counter() - began,
                }
                if any(slopes):
                    entry["slopes"] = {
                        r.name: [float(s(step)) for s in cuts]
                        for r, cuts in zip(regions, slopes, strict=True)
                    }
                _append(metrics_path, entry)
            if hard_evaluation is not None and training.evaluate_every and (
                done % training.evaluate_every == 0
            ):
                hard = hard_evaluation(params)
                _append(metrics_path, {"analysis": label, "step": done, "hard": hard})
            if done % training.checkpoint_every == 0 or done == total:
                checkpoint(done)
            bar.update(1)
            shown = {name: f"{float(v):.4g}" for name, v in figures.items()}
            bar.set_postfix(loss=f"{value:.4g}", **shown, refresh=False)
    except KeyboardInterrupt:
        checkpoint(completed)
        message = (
            f"{label}: interrupted after step {completed}; checkpointed, --resume continues it"
        )
        return TrainResult(params, completed, "interrupted", message)
    finally:
        bar.close()
    return TrainResult(params, total, "completed", "")


def _problem(finite: Mapping[str, Any], loss: float, narrowest: float) -> str | None:
    """What is wrong with a step's outcome (``None``: nothing)."""
    bad = (
        (None if bool(finite["loss"]) else "loss")
        or _first_bad(finite["figures"], "objective ")
        or _first_bad(finite["gradient"], "gradient of params")
        or _first_bad(finite["parameter"], "updated params")
        or (None if bool(finite["optimiser state"]) else "optimiser state")
    )
    if bad is not None:
        return f"non-finite {bad}"
    if abs(loss) > DIVERGED_LOSS:
        return f"diverged: loss {loss:.3g} beyond {DIVERGED_LOSS:.0e}"
    if narrowest < COLLAPSED_BIN:
        return (
            f"bin edges collapsed: the narrowest bin is {narrowest:.3g} of the histogram range "
            f"(below {COLLAPSED_BIN:g})"
        )
    return None
