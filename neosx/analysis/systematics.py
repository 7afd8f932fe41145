"""Systematic variations of the events: which versions of each event set an analysis needs.

Every template of the statistical model is a histogram of one *variant* of an event set:

* the nominal events;
* an alternative event set (a histosys' ``up`` / ``down``), normalised over itself;
* the nominal events reweighted by a per-event factor (``up_weight`` / ``down_weight``);
* the nominal events with features moved by a feature shift (``scale``: ``x (1 +- s)``,
  ``shift``: ``x +- d``), *before* the preselection, the cuts and the observable, so the
  templates are re-evaluated through the trainable analysis at every step. Their weights are
  normalised with the nominal weights' sum: a shift of the weight feature changes the yield.

A feature shift is an affine map of the event columns, ``events * factor + offset`` with
per-feature ``factor`` and ``offset`` vectors, so a shifted batch costs one fused multiply-add.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np

from neosx.config import FeatureShiftConfig, SampleConfig

__all__ = ["Shift", "Variant", "affected", "make_shifts"]


class Variant(NamedTuple):
    """One version of an event set.

    Attributes:
        events: The event set read.
        shift: The feature shift applied (``None``: the events as read).
        side: +1 or -1 (the shift's direction), 0 without a shift.
    """

    events: str
    shift: str | None = None
    side: int = 0


class Shift(NamedTuple):
    """A feature shift as an affine map of the event columns.

    Attributes:
        config: The systematic as configured.
        factor: (F,) multiplicative change at +1 sigma minus one (0 where not scaled).
        offset: (F,) additive change at +1 sigma (0 where not shifted).
    """

    config: FeatureShiftConfig
    factor: np.ndarray
    offset: np.ndarray

    def apply(self, events: jax.Array, side: int) -> jax.Array:
        """The events at ``side`` sigma (+1 or -1): ``x (1 + side s) + side d`` per feature."""
        return events * (1.0 + side * self.factor) + side * self.offset


def make_shifts(
    systematics: Sequence[FeatureShiftConfig], features: Sequence[str]
) -> dict[str, Shift]:
    """The study's feature shifts, keyed by name, as affine maps of the feature columns."""
    shifts = {}
    for config in systematics:
        factor, offset = np.zeros(len(features)), np.zeros(len(features))
        for feature, change in config.scale.items():
            factor[features.index(feature)] = change
        for feature, change in config.shift.items():
            offset[features.index(feature)] = change
        shifts[config.name] = Shift(config, factor, offset)
    return shifts


def affected(shifts: dict[str, Shift], sample: SampleConfig) -> list[Shift]:
    """The feature shifts that act on ``sample`` (in the study's order)."""
    return [
        s for s in shifts.values() if s.config.samples is None or sample.name in s.config.samples
    ]
