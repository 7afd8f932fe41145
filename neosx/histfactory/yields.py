"""The nested histogram format shared by yields overrides and :func:`build_spec`.

One format describes the numbers a pipeline produces per channel and sample; it mirrors the
pyhf spec, keyed by name instead of listed::

    {
        "SR": {                                       # channel
            "signal": sig,                            # sample: nominal only, shape (n_bins,)
            "bkg": {                                  # sample with modifier data
                "data": bkg,                          # nominal (n_bins,)
                "histosys": {"jes": {"hi_data": up, "lo_data": down}},   # (n_bins,) each
                "normsys": {"xsec": {"hi": 1.1, "lo": 0.9}},             # scalars
                "staterror": {"staterror_SR": unc},   # absolute uncertainty (n_bins,) ...
                "shapesys": {"bkg_mc": {"sumw2": w2}},  # ... or {"sumw2": Σw²} (n_bins,)
            },
        },
    }

A sample given as a bare array is its nominal ``data``. ``staterror`` / ``shapesys`` entries
hold the spec's ``data`` (the absolute uncertainty, ``sqrt(Σw²)``) or ``{"sumw2": Σw²}``;
the latter avoids the square root (and its infinite derivative at zero). In a yields override
every field is optional; :func:`build_spec` needs ``data`` and both sides of every variation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

__all__ = ["DATA_FIELDS", "SampleHistograms", "parse_histograms"]

#: Modifier types that carry data, and the fields of that data (``None``: one array).
DATA_FIELDS: dict[str, tuple[str, ...] | None] = {
    "normsys": ("hi", "lo"),
    "histosys": ("hi_data", "lo_data"),
    "staterror": None,
    "shapesys": None,
}


class SampleHistograms(NamedTuple):
    """The numbers given for one sample of one channel.

    Attributes:
        data: The nominal yields (n_bins,), or ``None`` when not given.
        modifiers: ``{(type, name): {field: value}}``. Fields are ``"hi"``/``"lo"``
            (normsys), ``"hi_data"``/``"lo_data"`` (histosys), and ``"uncertainty"`` or
            ``"sumw2"`` (staterror, shapesys).
    """

    data: Any
    modifiers: dict[tuple[str, str], dict[str, Any]]


def _parse_modifier(path: str, mtype: str, value: Any) -> dict[str, Any]:
    fields = DATA_FIELDS[mtype]
    if fields is None:
        if isinstance(value, Mapping):
            if set(value) != {"sumw2"}:
                raise ValueError(
                    f"{path}: a {mtype} entry is the absolute uncertainty array or "
                    f"{{'sumw2': array}}, got a mapping with keys {sorted(value)}"
                )
            return {"sumw2": value["sumw2"]}
        return {"uncertainty": value}
    if not isinstance(value, Mapping) or not value or not set(value) <= set(fields):
        keys = sorted(value) if isinstance(value, Mapping) else type(value).__name__
        raise ValueError(f"{path}: a {mtype} entry is a mapping with keys {fields}, got {keys}")
    return dict(value)


def _parse_sample(path: str, entry: Any) -> SampleHistograms:
    if not isinstance(entry, Mapping):
        return SampleHistograms(entry, {})
    unknown = set(entry) - {"data", *DATA_FIELDS}
    if unknown:
        raise ValueError(
            f"{path}: unknown keys {sorted(unknown)}; a sample takes 'data' and the "
            f"modifier types that carry data: {sorted(DATA_FIELDS)}"
        )
    modifiers = {}
    for mtype in DATA_FIELDS:
        by_name = entry.get(mtype, {})
        if not isinstance(by_name, Mapping):
            raise ValueError(f"{path}['{mtype}'] must map modifier names to their data")
        for name, value in by_name.items():
            modifiers[(mtype, name)] = _parse_modifier(f"{path}['{mtype}']['{name}']", mtype, value)
    return SampleHistograms(entry.get("data"), modifiers)


def parse_histograms(
    histograms: Mapping[str, Mapping[str, Any]], *, label: str = "yields"
) -> dict[tuple[str, str], SampleHistograms]:
    """Validate the structure of a nested histogram mapping and flatten it.

    Only the structure is checked here (mapping types and key names); channel, sample and
    modifier names and array shapes are checked against a model by its user.

    Args:
        histograms: ``{channel: {sample: array | {...}}}`` in the format of this module.
        label: Name of the argument, used in error messages.

    Returns:
        ``{(channel, sample): SampleHistograms}`` in the mapping's order.

    Raises:
        ValueError: If the structure does not follow the format; the message gives the path.

    Example:
        >>> parsed = parse_histograms({"SR": {"bkg": {"data": [5.0], "staterror": {"s": [1.0]}}}})
        >>> parsed["SR", "bkg"].modifiers
        {('staterror', 's'): {'uncertainty': [1.0]}}
    """
    if not isinstance(histograms, Mapping):
        raise ValueError(f"{label} must be a mapping {{channel: {{sample: ...}}}}")
    parsed = {}
    for channel, samples in histograms.items():
        if not isinstance(samples, Mapping):
            raise ValueError(f"{label}['{channel}'] must be a mapping {{sample: ...}}")
        for sample, entry in samples.items():
            parsed[(channel, sample)] = _parse_sample(f"{label}['{channel}']['{sample}']", entry)
    return parsed
