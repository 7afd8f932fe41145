"""Event sets read from files: ROOT TTrees (uproot) or Parquet (awkward).

Each feature is an expression of the file's branches in uproot's expression language (for
ROOT; e.g. ``sqrt(MET_px**2 + MET_py**2)``, ``NMuon + NElectron``) or a column name (for
Parquet), and must give one number per event: jagged expressions are rejected with the
feature's name. Every event set is split once into train and test events by a shuffle
seeded with the study seed and the set's position, so the two splits are disjoint.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

__all__ = ["check", "event_sets", "features", "load", "read_features"]

_SUFFIXES = (".root", ".parquet")


def event_sets(data: Any) -> tuple[str, ...]:
    return tuple(data.files)


def features(data: Any) -> tuple[str, ...]:
    return tuple(data.features)


def check(data: Any) -> None:
    """Every file exists, has a supported format and gives every feature (read once, cached).

    Raises:
        ValueError: Naming the event set's path or the feature.
    """
    for name, entry in data.files.items():
        path = Path(entry.path)
        if path.suffix not in _SUFFIXES:
            raise ValueError(
                f"data.files.{name}.path: unsupported file type, use one of {list(_SUFFIXES)} "
                f"(got {entry.path!r})"
            )
        if not path.is_file():
            raise ValueError(f"data.files.{name}.path: no such file (got {entry.path!r})")
        read_features(entry.path, entry.tree, tuple(data.features.items()))


def _flat(name: str, values: Any) -> np.ndarray:
    array = ak.to_numpy(values) if isinstance(values, ak.Array) and values.ndim == 1 else None
    if array is None or array.dtype.kind not in "biuf":
        kind = str(ak.type(values)) if isinstance(values, ak.Array) else type(values).__name__
        raise ValueError(
            f"data.features.{name}: the expression must give one number per event, got {kind}"
        )
    return array.astype(np.float64)


@functools.lru_cache(maxsize=16)
def read_features(path: str, tree: str, expressions: tuple[tuple[str, str], ...]) -> np.ndarray:
    """All events of one file as an (N, F) float64 array, columns in ``expressions`` order.

    Raises:
        ValueError: An expression fails or is not one number per event (naming the feature).
    """
    names = [name for name, _ in expressions]
    if path.endswith(".root"):
        import uproot

        with uproot.open(path) as handle:
            try:
                arrays = handle[tree].arrays(names, aliases=dict(expressions), library="ak")
            except Exception as error:
                reason = " ".join(str(error).split())
                raise ValueError(f"data.features: cannot evaluate on {path}: {reason}") from None
    else:
        table = ak.from_parquet(path)
        missing = [(n, e) for n, e in expressions if e not in table.fields]
        if missing:
            raise ValueError(
                f"data.features.{missing[0][0]}: Parquet features are column names; "
                f"{missing[0][1]!r} is not one of {table.fields}"
            )
        arrays = {name: table[expression] for name, expression in expressions}
    return np.stack([_flat(name, arrays[name]) for name in names], axis=1)


def load(data: Any, split: str, seed: int) -> dict[str, np.ndarray]:
    """The train or test share of every event set."""
    events = {}
    for position, (name, entry) in enumerate(data.files.items()):
        table = read_features(entry.path, entry.tree, tuple(data.features.items()))
        order = np.random.default_rng([seed, position]).permutation(len(table))
        n_test = round(data.test_fraction * len(table))
        events[name] = table[order[:n_test] if split == "test" else order[n_test:]]
    return events
