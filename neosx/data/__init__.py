"""Event data sources: a registry of generators and loaders, name -> :class:`Source`.

A source yields, per *event set* (e.g. ``signal``, ``background``, ``background_up``), a
float64 array of shape (N, F) whose columns are the source's named features. Event sets
are mapped onto the statistical model's samples (and their variations) by the study
configuration; the expected yields come from the configuration, not from the data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

import numpy as np

from neosx.data.blobs import BLOBS

__all__ = ["SOURCES", "Source", "check_options", "event_sets", "feature_names", "load_events"]

Split = Literal["train", "test"]


class Source(NamedTuple):
    """A registered event source.

    Attributes:
        event_sets: Names of the event sets it provides.
        features: Names of the feature columns, in order.
        defaults: Its options and their default values (others are rejected).
        generate: ``generate(options, n_events, seed) -> {event_set: (n_events, F)}``.
    """

    event_sets: tuple[str, ...]
    features: tuple[str, ...]
    defaults: Mapping[str, Any]
    generate: Callable[[Mapping[str, Any], int, int], dict[str, np.ndarray]]


SOURCES: dict[str, Source] = {"blobs": Source(**BLOBS)}


def _source(data: Any) -> Source:
    return SOURCES[data.source]


def event_sets(data: Any) -> tuple[str, ...]:
    """The event sets the configured source provides."""
    return _source(data).event_sets


def feature_names(data: Any) -> tuple[str, ...]:
    """The feature names (columns) of the configured source."""
    return _source(data).features


def check_options(data: Any) -> None:
    """Reject options the configured source does not know.

    Raises:
        ValueError: Naming the option (as its field path) and the known ones.
    """
    source = _source(data)
    unknown = sorted(set(data.options) - set(source.defaults))
    if unknown:
        raise ValueError(
            f"data.options.{unknown[0]}: unknown option of source '{data.source}', "
            f"known: {sorted(source.defaults)}"
        )


def load_events(data: Any, split: Split, seed: int) -> dict[str, np.ndarray]:
    """The events of one split, ``{event_set: (N, F) float64}``.

    Train and test splits are independent draws (seeds derived from ``seed`` and the split).

    Args:
        data: The study's :class:`~neosx.config.DataConfig` (options already checked).
        split: ``"train"`` (``data.train_events`` per set) or ``"test"``.
        seed: The study seed.
    """
    source = _source(data)
    options = {**source.defaults, **data.options}
    n_events = data.train_events if split == "train" else data.test_events
    split_seed = np.random.SeedSequence([seed, {"train": 0, "test": 1}[split]])
    return source.generate(options, n_events, int(split_seed.generate_state(1)[0]))
