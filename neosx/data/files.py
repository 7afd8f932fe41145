"""Event sets read from files: ROOT TTrees and RNTuples (uproot) or Parquet (awkward).

Each feature is an expression of the file's branches and object collections in the
language of :mod:`neosx.data.expressions` (e.g. ``sqrt(MET_px**2 + MET_py**2)``,
``lead(Muon.pt, 0, default=0)``, ``count(Jet[Jet.pt > 30])``) and must give one finite
number per event. Files are read in chunks of :data:`STEP_SIZE` (ROOT) or by row group
(Parquet), reading only the branches the expressions name and keeping only the features,
as float64. Every event set is split once into train and test events by a shuffle seeded
with the study seed and the set's position, so the two splits are disjoint.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import awkward as ak
import numpy as np

from neosx.data import objects
from neosx.data.expressions import Expression, ExpressionError, evaluate, parse

__all__ = ["STEP_SIZE", "check", "event_sets", "features", "load", "read_features"]

STEP_SIZE = "20 MB"  # branch data per ROOT chunk (uproot's step_size); ~10x that in use


class _MissingTree(ValueError):
    """The file has no tree of the requested name."""


class _Unreadable(ValueError):
    """The file cannot be read (not ROOT / Parquet, truncated, corrupt)."""


class _Table(NamedTuple):
    keys: tuple[str, ...]
    entries: int
    chunks: Callable[[list[str], int | str], Iterator[ak.Array]]


def _reason(error: BaseException) -> str:
    message = str(error).split("This error occurred while")[0].split(" (in compiled code:")[0]
    kind = type(error)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    return f"{name}: {' '.join(message.split())}"


def _guarded(chunks: Iterator[ak.Array]) -> Iterator[ak.Array]:
    try:
        yield from chunks
    except Exception as error:
        raise _Unreadable(_reason(error)) from None


@contextlib.contextmanager
def _root(path: str, tree: str, where: str) -> Iterator[_Table]:
    import uproot

    try:
        handle = uproot.open(path)
    except Exception as error:
        raise _Unreadable(_reason(error)) from None
    with handle:
        if tree not in handle:
            found = handle.keys(cycle=False, filter_classname=("TTree", "ROOT::RNTuple"))
            raise _MissingTree(f"no tree {tree!r} ({where}); it has {found}")
        table = handle[tree]
        if not hasattr(table, "iterate"):
            raise _MissingTree(f"{tree!r} is a {table.classname}, not a tree ({where})")

        def chunks(branches: list[str], step: int | str) -> Iterator[ak.Array]:
            return _guarded(table.iterate(branches, step_size=step, library="ak"))

        yield _Table(tuple(table.keys()), table.num_entries, chunks)


@contextlib.contextmanager
def _parquet(path: str, tree: str, where: str) -> Iterator[_Table]:
    try:
        metadata = ak.metadata_from_parquet(path)
    except Exception as error:
        raise _Unreadable(_reason(error)) from None

    def chunks(columns: list[str], step: int | str) -> Iterator[ak.Array]:
        groups = range(metadata["num_row_groups"])
        return _guarded(ak.from_parquet(path, columns=columns, row_groups=[g]) for g in groups)

    yield _Table(tuple(metadata["form"].fields), metadata["num_rows"], chunks)


_FORMATS = {".root": ("ROOT", _root), ".parquet": ("Parquet", _parquet)}


def event_sets(data: Any) -> tuple[str, ...]:
    return tuple(data.files)


def features(data: Any) -> tuple[str, ...]:
    return tuple(data.features)


def check(data: Any) -> None:
    """Every file exists, has a supported format and gives every feature (read once, cached).

    Raises:
        ValueError: Naming the event set's path or the feature, the event set and the file.
    """
    for name, entry in data.files.items():
        path = Path(entry.path)
        if path.suffix not in _FORMATS:
            raise ValueError(
                f"data.files.{name}.path: unsupported file type, use one of {list(_FORMATS)} "
                f"(got {entry.path!r})"
            )
        if not path.is_file():
            raise ValueError(f"data.files.{name}.path: no such file (got {entry.path!r})")
        read_features(entry.path, entry.tree, tuple(data.features.items()), label=name)


def _branches(
    feature: str,
    expression: Expression,
    keys: tuple[str, ...],
    found: dict[str, objects.Collection],
    where: str,
) -> set[str]:
    branches = set()
    for name in sorted(expression.names):
        if name in keys:
            branches.add(name)
        elif name in found:
            collection = found[name]
            fields = expression.fields & set(collection.fields)
            branches |= set(collection.momentum.values()) | {collection.fields[f] for f in fields}
        else:
            close = difflib.get_close_matches(name, [*keys, *found], n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(
                f"data.features.{feature}: cannot evaluate {expression.text!r}: no branch or "
                f"collection {name!r} ({where}){hint}"
            )
    return branches


def _widen(values: ak.Array) -> ak.Array:
    layout = values.layout
    while hasattr(layout, "content"):
        layout = layout.content
    floating = getattr(layout, "dtype", None) is not None and layout.dtype.kind == "f"
    return ak.values_astype(values, np.float64) if floating else values


def _per_event(feature: str, text: str, values: Any, n: int, where: str) -> np.ndarray:
    if isinstance(values, int | float | np.number | np.bool_):
        return np.full(n, values, dtype=np.float64)
    column = None
    if isinstance(values, ak.Array) and values.ndim == 1:
        with contextlib.suppress(ValueError, TypeError):
            column = ak.to_numpy(values, allow_missing=False)
    if column is None or column.dtype.kind not in "biuf":
        kind = str(values.type.content) if isinstance(values, ak.Array) else type(values).__name__
        raise ValueError(
            f"data.features.{feature}: {text!r} must give one number per event, got {kind} "
            f"({where})"
        )
    if len(column) != n:
        raise ValueError(
            f"data.features.{feature}: {text!r} must give one number per event, got "
            f"{len(column)} values for {n} events ({where})"
        )
    return column.astype(np.float64)


def _finite(names: list[str], texts: list[str], table: np.ndarray, where: str) -> None:
    for j, (feature, text) in enumerate(zip(names, texts, strict=True)):
        bad = np.flatnonzero(~np.isfinite(table[:, j]))
        if len(bad):
            raise ValueError(
                f"data.features.{feature}: {text!r} is NaN or infinite on {len(bad)} of "
                f"{len(table)} events, the first at event {bad[0]} ({where})"
            )


def _parse(expressions: tuple[tuple[str, str], ...], where: str) -> dict[str, Expression]:
    parsed = {}
    for name, text in expressions:
        try:
            parsed[name] = parse(text)
        except ExpressionError as error:
            raise ValueError(
                f"data.features.{name}: cannot evaluate {text!r}: {error} ({where})"
            ) from None
    return parsed


def _evaluate(name: str, expression: Expression, values: dict[str, Any], where: str) -> Any:
    try:
        with np.errstate(all="ignore"):  # NaN / inf are reported afterwards, with counts
            return evaluate(expression, values)
    except Exception as error:
        raise ValueError(
            f"data.features.{name}: cannot evaluate {expression.text!r}: {_reason(error)} ({where})"
        ) from None


def _compute(
    table: _Table, parsed: dict[str, Expression], step_size: int | str, where: str
) -> np.ndarray:
    found = objects.collections(table.keys)
    needs = [_branches(name, e, table.keys, found, where) for name, e in parsed.items()]
    branches = sorted(set().union(*needs)) or list(table.keys[:1])  # one, for the lengths
    fields = set().union(*(e.fields for e in parsed.values()))
    used = {c for e in parsed.values() for c in e.names if c in found and c not in table.keys}
    out = np.empty((table.entries, len(parsed)))
    start = 0
    for chunk in table.chunks(branches, step_size):
        arrays = {branch: _widen(chunk[branch]) for branch in chunk.fields}
        values = arrays | {c: objects.build(found[c], arrays, fields) for c in used}
        n = len(chunk)
        for j, (name, expression) in enumerate(parsed.items()):
            result = _evaluate(name, expression, values, where)
            out[start : start + n, j] = _per_event(name, expression.text, result, n, where)
        start += n
    return out


@functools.lru_cache(maxsize=16)
def read_features(
    path: str,
    tree: str,
    expressions: tuple[tuple[str, str], ...],
    *,
    label: str | None = None,
    step_size: int | str = STEP_SIZE,
) -> np.ndarray:
    """All events of one file as an (N, F) float64 array, columns in ``expressions`` order.

    Args:
        path: A ``.root`` (TTree or RNTuple) or ``.parquet`` file.
        tree: The TTree or RNTuple name (ROOT files).
        expressions: ``((feature, expression), ...)``.
        label: The event set's name, for error messages.
        step_size: Entries (int) or memory (``"20 MB"``) per ROOT chunk; Parquet files
            are read one row group at a time.

    Returns:
        The features, read-only (the result is cached).

    Raises:
        ValueError: One line naming the feature (or the file field), the event set and the
            file: an unreadable file or missing tree, an invalid expression, a missing
            branch, a failing expression, a value that is not one number per event, or
            NaN / infinite values (with how many and the first event).
    """
    where = f"event set {label!r}, file {path!r}" if label else f"file {path!r}"
    field = f"data.files.{label}" if label else "data.files"
    parsed = _parse(expressions, where)
    kind, opener = _FORMATS[Path(path).suffix]
    try:
        with opener(path, tree, where) as table:
            out = _compute(table, parsed, step_size, where)
    except _MissingTree as error:
        raise ValueError(f"{field}.tree: {error}") from None
    except _Unreadable as error:
        raise ValueError(f"{field}.path: cannot read it as {kind}: {error} ({where})") from None
    _finite(list(parsed), [e.text for e in parsed.values()], out, where)
    out.flags.writeable = False
    return out


def load(data: Any, split: str, seed: int) -> dict[str, np.ndarray]:
    """The train or test share of every event set."""
    events = {}
    for position, (name, entry) in enumerate(data.files.items()):
        table = read_features(entry.path, entry.tree, tuple(data.features.items()), label=name)
        order = np.random.default_rng([seed, position]).permutation(len(table))
        n_test = round(data.test_fraction * len(table))
        events[name] = table[order[:n_test] if split == "test" else order[n_test:]]
    return events
