"""Event data sources: a registry, name -> :class:`Source`.

A source yields, per *event set* (e.g. ``signal``, ``background``, ``background_up``), a
float64 array of shape (N, F) whose columns are the source's named features (per-event
weights, if any, are features too). Event sets are mapped onto the statistical model's
samples and their variations by the study configuration; the expected yields come from
the configuration, not from the data.

Sources: ``blobs`` (the neos paper's Gaussian blobs, generated) and ``files`` (ROOT via
uproot, Parquet via awkward; features are expressions of branches).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import numpy as np

from neosx.data import blobs, files

__all__ = ["SOURCES", "Source", "check_options", "event_sets", "feature_names", "load_events"]

Split = Literal["train", "test"]


class Source(NamedTuple):
    """A registered event source; every function takes the study's ``DataConfig``.

    Attributes:
        event_sets: ``event_sets(data) -> names`` of the event sets it provides.
        features: ``features(data) -> names`` of the feature columns, in order.
        check: ``check(data)`` raises ``ValueError`` (naming the field) on bad options.
        load: ``load(data, split, seed) -> {event_set: (N, F) float64}``.
    """

    event_sets: Callable[[Any], tuple[str, ...]]
    features: Callable[[Any], tuple[str, ...]]
    check: Callable[[Any], None]
    load: Callable[[Any, Split, int], dict[str, np.ndarray]]


SOURCES: dict[str, Source] = {
    "blobs": Source(blobs.event_sets, blobs.features, blobs.check, blobs.load),
    "files": Source(files.event_sets, files.features, files.check, files.load),
}


def event_sets(data: Any) -> tuple[str, ...]:
    """The event sets the configured source provides."""
    return SOURCES[data.source].event_sets(data)


def feature_names(data: Any) -> tuple[str, ...]:
    """The feature names (columns) of the configured source."""
    return SOURCES[data.source].features(data)


def check_options(data: Any) -> None:
    """Validate the source-specific settings (raises ``ValueError`` naming the field)."""
    SOURCES[data.source].check(data)


def load_events(data: Any, split: Split, seed: int) -> dict[str, np.ndarray]:
    """The events of one split, ``{event_set: (N, F) float64}``.

    Args:
        data: The study's :class:`~neosx.config.DataConfig` (already checked).
        split: ``"train"`` or ``"test"`` (disjoint: independent draws, or a seeded split).
        seed: The study seed.
    """
    return SOURCES[data.source].load(data, split, seed)
