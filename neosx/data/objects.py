"""Physics objects: jagged collections of four-vectors and the functions that reduce them.

A *collection* is every branch prefix ``X`` with momentum branches ``X_Px, X_Py, X_Pz, X_E``
(any capitalisation) or ``X_pt, X_eta, X_phi, X_mass`` (or ``X_m``): ``X`` becomes an awkward
array of ``vector`` Momentum4D records, one list per event sorted by decreasing pT, whose
other fields are the remaining ``X_*`` branches (``Muon.Iso``, ``Jet.btag``). The functions
here reduce per-object values to one number per event; the ones that may find no object take
a ``default``.

References:
    The vector package, https://vector.readthedocs.io (awkward backend).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import awkward as ak
import vector

__all__ = ["FUNCTIONS", "Collection", "Function", "build", "collections"]

Z_MASS = 91.1876  # GeV, PDG
_MOMENTA = (("px", "py", "pz", "e"), ("pt", "eta", "phi", "mass"), ("pt", "eta", "phi", "m"))
_COORDINATES = {"e": "E", "m": "mass"}  # vector's names where they differ from the branch's
_CHARGES = ("Charge", "charge")


class Collection(NamedTuple):
    """The branches of one collection.

    Attributes:
        momentum: ``{vector coordinate: branch}``, e.g. ``{"px": "Muon_Px", ...}``.
        fields: ``{field: branch}`` of its other branches, e.g. ``{"Iso": "Muon_Iso"}``.
    """

    momentum: dict[str, str]
    fields: dict[str, str]


class Function(NamedTuple):
    """A function an expression may call.

    Attributes:
        call: The implementation, on awkward arrays (or numbers).
        fields: Collection fields it reads besides the momentum (read when present).
    """

    call: Callable[..., Any]
    fields: tuple[str, ...] = ()


def collections(keys: Iterable[str]) -> dict[str, Collection]:
    """The collections among a file's branch names.

    Args:
        keys: Branch (or column, or RNTuple field) names.

    Returns:
        ``{prefix: Collection}`` for every prefix (up to the first ``_``) with a full set
        of momentum branches.
    """
    groups: dict[str, dict[str, str]] = {}
    for key in keys:
        prefix, _, suffix = key.partition("_")
        if prefix and suffix:
            groups.setdefault(prefix, {})[suffix] = key
    found = {}
    for prefix, members in groups.items():
        lower = {suffix.lower(): branch for suffix, branch in members.items()}
        for names in _MOMENTA:
            if all(name in lower for name in names):
                momentum = {_COORDINATES.get(name, name): lower[name] for name in names}
                others = {s: b for s, b in members.items() if b not in momentum.values()}
                found[prefix] = Collection(momentum, others)
                break
    return found


def build(collection: Collection, arrays: Mapping[str, Any], fields: Iterable[str]) -> ak.Array:
    """The collection's Momentum4D records, sorted by decreasing pT within each event.

    Args:
        collection: Its branches.
        arrays: ``{branch: array}`` holding at least the momentum and the ``fields`` branches.
        fields: The non-momentum fields to attach (those not in ``arrays`` are skipped).

    Returns:
        An (events, var) array of Momentum4D records.
    """
    columns = {name: arrays[branch] for name, branch in collection.momentum.items()}
    columns |= {
        f: arrays[branch]
        for f in fields
        if (branch := collection.fields.get(f)) is not None and branch in arrays
    }
    objects = vector.zip(columns)
    if objects.ndim > 1:
        objects = objects[ak.argsort(objects.pt, axis=1, ascending=False)]
    return objects


def _per_object(values: Any, function: str) -> ak.Array:
    if not isinstance(values, ak.Array) or values.ndim < 2:
        kind = str(values.type.content) if isinstance(values, ak.Array) else repr(values)
        raise ValueError(f"{function}() takes per-object values such as Jet.pt, got {kind}")
    return values


def _momenta(objects: Any, function: str) -> ak.Array:
    if not isinstance(_per_object(objects, function), vector.backends.awkward.MomentumAwkward4D):
        kind = objects.type.content
        raise ValueError(f"{function}() takes a collection such as Muon, got {kind}")
    return objects


def _index(k: Any, function: str) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"{function}() takes non-negative integer object indices, got {k!r}")
    return k


def count(objects: Any) -> ak.Array:
    """Number of objects per event, e.g. ``count(Jet[Jet.pt > 30])``."""
    return ak.num(_per_object(objects, "count"), axis=1)


def lead(values: Any, k: int = 0, *, default: float) -> ak.Array:
    """Value of the ``k``-th object (0: the leading one), ``default`` where there is none."""
    padded = ak.pad_none(_per_object(values, "lead"), _index(k, "lead") + 1, axis=1)
    return ak.fill_none(padded[:, k], default)


def total(values: Any) -> ak.Array:
    """Sum over the objects of each event (0 for none), e.g. ``sum(Jet.pt)``."""
    return ak.sum(_per_object(values, "sum"), axis=1)


def largest(values: Any, *, default: float) -> ak.Array:
    """Largest value among the objects of each event, ``default`` where there is none."""
    return ak.fill_none(ak.max(_per_object(values, "max"), axis=1), default)


def smallest(values: Any, *, default: float) -> ak.Array:
    """Smallest value among the objects of each event, ``default`` where there is none."""
    return ak.fill_none(ak.min(_per_object(values, "min"), axis=1), default)


def mass(objects: Any, *indices: int, default: float) -> ak.Array:
    """Invariant mass of the objects at ``indices`` (in pT order), ``default`` if one is missing.

    Example: ``mass(Muon, 0, 1, default=0)`` is the mass of the two leading muons.
    """
    if not indices:
        raise ValueError("mass() needs the indices of the objects, e.g. mass(Muon, 0, 1, ...)")
    depth = max(_index(k, "mass") for k in indices) + 1
    padded = ak.pad_none(_momenta(objects, "mass"), depth, axis=1)
    system = padded[:, indices[0]]
    for k in indices[1:]:
        system = system + padded[:, k]
    return ak.fill_none(system.mass, default)


def z_mass(*leptons: Any, default: float) -> ak.Array:
    """Mass of the opposite-charge same-flavour pair closest to the Z mass (91.1876 GeV).

    Example: ``z_mass(Muon, Electron, default=0)``; each collection needs a charge field
    (``X_Charge`` or ``X_charge``); ``default`` where no such pair exists.
    """
    if not leptons:
        raise ValueError("z_mass() needs lepton collections, e.g. z_mass(Muon, Electron, ...)")
    masses = []
    for objects in leptons:
        charge = next((c for c in _CHARGES if c in ak.fields(_momenta(objects, "z_mass"))), None)
        if charge is None:
            raise ValueError(f"z_mass() needs a charge field, got {objects.type.content}")
        first, second = ak.unzip(ak.combinations(objects, 2, axis=1))
        opposite = first[charge] * second[charge] < 0
        masses.append((first + second).mass[opposite])
    candidates = ak.concatenate(masses, axis=1)
    best = ak.argmin(abs(candidates - Z_MASS), axis=1, keepdims=True)
    return ak.fill_none(ak.firsts(candidates[best], axis=1), default)


FUNCTIONS: dict[str, Function] = {
    "count": Function(count),
    "lead": Function(lead),
    "sum": Function(total),
    "max": Function(largest),
    "min": Function(smallest),
    "mass": Function(mass),
    "z_mass": Function(z_mass, fields=_CHARGES),
}
