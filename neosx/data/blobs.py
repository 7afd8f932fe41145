"""The neos paper's Gaussian blobs: a 2-D toy with a shape systematic on the background.

Signal ~ N((-1, 1), I), background ~ N((1, -1), I); the background's systematic variations
are whole shifted blobs, up ~ N((2.5, 2), I) and down ~ N((-2.5, -1.5), I), which enter the
model as a histosys (Simpson et al., "neos: End-to-End-Optimised Summary Statistics for High
Energy Physics", arXiv:2203.05570).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["BLOBS", "generate_blobs"]

_MEANS = {
    "signal": (-1.0, 1.0),
    "background": (1.0, -1.0),
    "background_up": (2.5, 2.0),
    "background_down": (-2.5, -1.5),
}


def generate_blobs(options: Mapping[str, Any], n_events: int, seed: int) -> dict[str, np.ndarray]:
    """Draw ``n_events`` 2-D points per blob.

    Args:
        options: ``{"<event set>_mean": (x, y), "sigma": float}`` (identity covariance
            times ``sigma**2``).
        n_events: Events per event set.
        seed: NumPy seed.

    Returns:
        ``{event_set: (n_events, 2) float64}`` with columns ``x``, ``y``.
    """
    rng = np.random.default_rng(seed)
    sigma = float(options["sigma"])
    return {
        name: rng.normal(np.asarray(options[f"{name}_mean"], float), sigma, size=(n_events, 2))
        for name in _MEANS
    }


BLOBS = {
    "event_sets": tuple(_MEANS),
    "features": ("x", "y"),
    "defaults": {"sigma": 1.0, **{f"{name}_mean": mean for name, mean in _MEANS.items()}},
    "generate": generate_blobs,
}
