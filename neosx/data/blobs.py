"""The neos paper's Gaussian blobs: a 2-D toy with a shape systematic on the background.

Signal ~ N((-1, 1), I), background ~ N((1, -1), I); the background's systematic variations
are whole shifted blobs, up ~ N((2.5, 2), I) and down ~ N((-2.5, -1.5), I), which enter the
model as a histosys (Simpson et al., "neos: End-to-End-Optimised Summary Statistics for High
Energy Physics", arXiv:2203.05570). Options: ``"<event set>_mean": [x, y]`` and ``sigma``
(the common standard deviation).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["DEFAULTS", "check", "event_sets", "features", "generate", "load"]

_MEANS = {
    "signal": (-1.0, 1.0),
    "background": (1.0, -1.0),
    "background_up": (2.5, 2.0),
    "background_down": (-2.5, -1.5),
}
DEFAULTS: dict[str, Any] = {"sigma": 1.0, **{f"{name}_mean": m for name, m in _MEANS.items()}}


def event_sets(data: Any) -> tuple[str, ...]:
    return tuple(_MEANS)


def features(data: Any) -> tuple[str, ...]:
    return ("x", "y")


def check(data: Any) -> None:
    """Reject unknown options (naming the option and the known ones)."""
    unknown = sorted(set(data.options) - set(DEFAULTS))
    if unknown:
        raise ValueError(
            f"data.options.{unknown[0]}: unknown option of source 'blobs', "
            f"known: {sorted(DEFAULTS)}"
        )
    options = {**DEFAULTS, **data.options}
    sigma = options["sigma"]
    if not (isinstance(sigma, int | float) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"data.options.sigma: must be a finite number > 0 (got {sigma!r})")
    for name in _MEANS:
        mean = options[f"{name}_mean"]
        if not (
            isinstance(mean, list | tuple) and len(mean) == 2
            and all(isinstance(v, int | float) and math.isfinite(v) for v in mean)
        ):
            raise ValueError(
                f"data.options.{name}_mean: must be two finite numbers [x, y] (got {mean!r})"
            )


def generate(options: dict[str, Any], n_events: int, seed: Any) -> dict[str, np.ndarray]:
    """Draw ``n_events`` 2-D points per blob: ``{event_set: (n_events, 2)}`` (columns x, y)."""
    rng = np.random.default_rng(seed)
    sigma = float(options["sigma"])
    return {
        name: rng.normal(np.asarray(options[f"{name}_mean"], float), sigma, size=(n_events, 2))
        for name in _MEANS
    }


def load(data: Any, split: str, seed: int) -> dict[str, np.ndarray]:
    """Train and test splits are independent draws (seeds from the study seed and split)."""
    n_events = data.train_events if split == "train" else data.test_events
    split_seed = np.random.SeedSequence([seed, {"train": 0, "test": 1}[split]])
    return generate({**DEFAULTS, **data.options}, n_events, int(split_seed.generate_state(1)[0]))
