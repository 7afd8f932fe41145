"""Compilation of each HistFactory modifier type into static, vectorised layout entries.

A registry maps every pyhf modifier type to a function that records, for one (channel,
sample) "site" where the modifier appears, what it does in a :class:`LayoutBuilder`:

* **parameter factors** (normfactor, lumi, shapefactor, staterror, shapesys): per affected
  sample-bin, the index of the parameter multiplying its rate;
* **normsys**: a row per modifier of relative ``lo`` / ``hi`` normalisations over the
  (sample, channel) pairs (1 where the modifier is absent, an exact no-op);
* **histosys**: a row per modifier of ``lo_data`` / ``hi_data`` over the sample-bins, with a
  mask of the sample-bins it affects;
* **staterror / shapesys entries**: the Σw² per parameter and sample-bin, from which the
  constraint widths and Poisson scale factors are recomputed.

Sample-bins are flattened as ``sample * n_bins + global_bin`` and (sample, channel) pairs as
``sample * n_channels + channel``, with pyhf's sorted sample and channel order. Which
parameter each bin uses follows pyhf 0.7 (``pyhf/modifiers/*.py``) exactly, including
shapefactor's indexing by channel-local bin.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

__all__ = ["COMPILERS", "LayoutBuilder", "Site"]


class Site(NamedTuple):
    """One (channel, sample) pair of the model.

    Attributes:
        channel: Channel name.
        sample: Sample name.
        sample_index: Index of the sample in the sorted sample list.
        channel_index: Index of the channel in the sorted channel list.
        first_bin: Global index of the channel's first bin.
        nbins: Number of bins of the channel.
    """

    channel: str
    sample: str
    sample_index: int
    channel_index: int
    first_bin: int
    nbins: int


@dataclass
class LayoutBuilder:
    """Accumulates the static layout of a model's modifiers, one site at a time.

    Attributes:
        n_samples: Number of samples.
        n_channels: Number of channels.
        n_bins: Total number of bins over all channels.
        par_slices: ``{parameter set name: slice}`` in pyhf's parameter order.
        staterror_bins: ``{staterror name: global bins it covers}``, ascending.
        normsys_rows: ``{name: row}`` of the normsys modifiers (in parameter order).
        histosys_rows: ``{name: row}`` of the histosys modifiers (in parameter order).
        factor_refs: Per sample-bin, the parameters multiplying it.
        normsys: ``(row, pair, lo, hi)`` per normsys site.
        histosys: ``(row, sample-bin, lo, hi)`` per histosys bin.
        staterror: Per staterror entry ``(parameter, sample-bin, Σw²)``.
        shapesys: Per shapesys entry ``(parameter, sample-bin, Σw²)``.
        slots: Where overridable data live, ``{key: (array name, start, stop)}`` with keys
            ``("data", channel, sample)`` and ``(type, name, channel, sample, field)``;
            normsys and histosys data are stored row-major (row, pair / sample-bin).
    """

    n_samples: int
    n_channels: int
    n_bins: int
    par_slices: Mapping[str, slice]
    staterror_bins: Mapping[str, list[int]]
    normsys_rows: Mapping[str, int]
    histosys_rows: Mapping[str, int]
    factor_refs: list[list[int]] = field(init=False)
    normsys: list[tuple[int, int, float, float]] = field(default_factory=list)
    histosys: list[tuple[int, int, float, float]] = field(default_factory=list)
    staterror: list[tuple[int, int, float]] = field(default_factory=list)
    shapesys: list[tuple[int, int, float]] = field(default_factory=list)
    slots: dict[tuple[str, ...], tuple[str, int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.factor_refs = [[] for _ in range(self.n_samples * self.n_bins)]

    def sample_bins(self, site: Site) -> list[int]:
        """Flat sample-bin indices of a site's bins."""
        start = site.sample_index * self.n_bins + site.first_bin
        return list(range(start, start + site.nbins))

    def multiply(self, site: Site, pars: list[int]) -> None:
        """Multiply each bin of a site by the parameter ``pars[bin]``."""
        for sample_bin, par in zip(self.sample_bins(site), pars, strict=True):
            self.factor_refs[sample_bin].append(par)


Compiler = Callable[[LayoutBuilder, Site, Mapping[str, Any]], None]


def _scalar_factor(builder: LayoutBuilder, site: Site, modifier: Mapping[str, Any]) -> None:
    """normfactor, lumi: one parameter scales every bin of the sample."""
    builder.multiply(site, [builder.par_slices[modifier["name"]].start] * site.nbins)


def _shapefactor(builder: LayoutBuilder, site: Site, modifier: Mapping[str, Any]) -> None:
    """shapefactor: one free parameter per channel-local bin.

    As in pyhf, a channel with more bins than the parameter set (a shapefactor shared by
    channels of different sizes) uses parameter 0 for its extra bins.
    """
    par_slice = builder.par_slices[modifier["name"]]
    size = par_slice.stop - par_slice.start
    builder.multiply(site, [par_slice.start + i if i < size else 0 for i in range(site.nbins)])


def _per_bin_constrained(kind: str) -> Compiler:
    """staterror / shapesys: a constrained parameter per bin, and its Σw² entry."""

    def compile_site(builder: LayoutBuilder, site: Site, modifier: Mapping[str, Any]) -> None:
        name = modifier["name"]
        start = builder.par_slices[name].start
        if kind == "staterror":
            covered = builder.staterror_bins[name]
            pars = [start + covered.index(site.first_bin + i) for i in range(site.nbins)]
        else:
            pars = [start + i for i in range(site.nbins)]
        builder.multiply(site, pars)
        entries = getattr(builder, kind)
        first = len(entries)
        for par, sample_bin, uncertainty in zip(
            pars, builder.sample_bins(site), modifier["data"], strict=True
        ):
            entries.append((par, sample_bin, float(uncertainty) ** 2))
        key = (kind, name, site.channel, site.sample, "sumw2")
        builder.slots[key] = (kind, first, len(entries))

    return compile_site


def _normsys(builder: LayoutBuilder, site: Site, modifier: Mapping[str, Any]) -> None:
    """normsys: an interpolated factor scales every bin of the sample."""
    row = builder.normsys_rows[modifier["name"]]
    pair = site.sample_index * builder.n_channels + site.channel_index
    data = modifier["data"]
    builder.normsys.append((row, pair, float(data["lo"]), float(data["hi"])))
    flat = row * builder.n_samples * builder.n_channels + pair
    for key in ("hi", "lo"):
        slot_key = ("normsys", modifier["name"], site.channel, site.sample, key)
        builder.slots[slot_key] = (f"normsys_{key}", flat, flat + 1)


def _histosys(builder: LayoutBuilder, site: Site, modifier: Mapping[str, Any]) -> None:
    """histosys: an interpolated delta per bin is added to the nominal."""
    row = builder.histosys_rows[modifier["name"]]
    data = modifier["data"]
    for sample_bin, lo, hi in zip(
        builder.sample_bins(site), data["lo_data"], data["hi_data"], strict=True
    ):
        builder.histosys.append((row, sample_bin, float(lo), float(hi)))
    first = row * builder.n_samples * builder.n_bins + builder.sample_bins(site)[0]
    for key, array in (("hi_data", "histosys_hi"), ("lo_data", "histosys_lo")):
        slot_key = ("histosys", modifier["name"], site.channel, site.sample, key)
        builder.slots[slot_key] = (array, first, first + site.nbins)


#: Modifier type -> compiler of one site; extend HistFactory by adding an entry.
COMPILERS: dict[str, Compiler] = {
    "normfactor": _scalar_factor,
    "lumi": _scalar_factor,
    "shapefactor": _shapefactor,
    "staterror": _per_bin_constrained("staterror"),
    "shapesys": _per_bin_constrained("shapesys"),
    "normsys": _normsys,
    "histosys": _histosys,
}


def padded_index(rows: list[list[int]], pad: int) -> np.ndarray:
    """Stack ragged per-column index lists into a ``(max_len, n_columns)`` matrix.

    Args:
        rows: For each column (sample-bin), the indices it combines.
        pad: Index of the neutral element used as padding.

    Returns:
        Integer matrix whose column ``j`` lists ``rows[j]`` followed by ``pad``.

    Example:
        >>> padded_index([[0, 2], [], [1]], pad=9).tolist()
        [[0, 9, 1], [2, 9, 9]]
    """
    depth = max((len(row) for row in rows), default=0)
    matrix = np.full((depth, len(rows)), pad, dtype=np.int64)
    for column, row in enumerate(rows):
        matrix[: len(row), column] = row
    return matrix
