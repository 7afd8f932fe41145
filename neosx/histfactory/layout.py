"""Compile a pyhf model spec into the static arrays the likelihood kernel evaluates.

The parameter order, bounds, auxiliary data and constraint widths come from a ``pyhf.Model``
built once on the spec's own yields; the modifier layout (which parameter or interpolated
term acts on which sample-bin) is compiled by the per-type functions of
:mod:`neosx.histfactory.modifiers`. Everything that depends on the yields (nominal, histosys
and normsys variations, staterror / shapesys Σw²) stays as overridable data arrays, so the
kernel can recompute staterror widths and shapesys scale factors from traced yields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyhf

from neosx.histfactory.modifiers import COMPILERS, LayoutBuilder, Site, padded_index

__all__ = ["Layout", "compile_layout", "frozen_array"]


def frozen_array(values: Any, dtype: Any = np.int64) -> np.ndarray:
    """A read-only numpy copy of ``values`` (static layout and config arrays)."""
    array = np.array(values, dtype=dtype)
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class Layout:
    """Static description of a compiled model (read-only numpy arrays; hashed by identity).

    Sample-bins are flat indices ``sample * n_bins + bin``, (sample, channel) pairs
    ``sample * n_channels + channel``. Constraint arrays list the constrained parameters split
    by constraint type; ``*_aux`` are their positions in the auxiliary data (pyhf's
    ``auxdata_order``).

    Attributes:
        n_samples: Number of samples (sorted as in pyhf).
        n_channels: Number of channels (sorted as in pyhf).
        n_bins: Number of bins over all channels.
        npars: Number of parameters.
        data: Overridable, yields-dependent float arrays: ``nominal`` (n_samples * n_bins,);
            ``normsys_lo`` / ``normsys_hi`` (n_normsys * n_samples * n_channels,), 1 where
            a normsys does not act; ``histosys_lo`` / ``histosys_hi`` (n_histosys *
            n_samples * n_bins,); ``staterror`` / ``shapesys``: Σw² per entry.
        slots: Override key -> ``(data array, start, stop)``.
        factor_index: (depth, n_samples * n_bins) parameters multiplying each sample-bin
            (normfactor, lumi, shapefactor, staterror, shapesys), padded with ``npars``
            (an appended 1).
        normsys_par: Parameter of each normsys row.
        normsys_code: normsys interpolation code.
        bin_channel: (n_bins,) the channel of each bin.
        histosys_par: Parameter of each histosys row.
        histosys_mask: (n_histosys, n_samples * n_bins) where each histosys acts.
        histosys_names: Modifier name of each histosys row.
        histosys_code: histosys interpolation code.
        normal_par, normal_aux, normal_sigma: Gaussian-constrained parameters, their
            auxiliary-data positions and widths (pyhf's, at the spec's yields).
        staterror_group, staterror_bin: Per staterror entry, the index of its parameter
            among the staterror parameters (its width group) and its sample-bin.
        staterror_sigma_group, staterror_sigma_slot: Width groups recomputed from the
            yields, and their positions among the Gaussian constraints.
        poisson_par, poisson_aux, poisson_factor: Poisson-constrained parameters, their
            auxiliary-data positions and rate scale factors (at the spec's yields).
        shapesys_bin: Sample-bin of each shapesys entry.
        shapesys_factor_entry, shapesys_factor_slot: Shapesys entries whose Poisson scale
            factor is recomputed from the yields, and their positions among the Poisson
            constraints.
        shapesys_aux_entry, shapesys_aux_slot: Same for the auxiliary data (positions in
            the auxiliary data vector).
        auxdata: Auxiliary data at the spec's yields (pyhf's ``config.auxdata``).
    """

    n_samples: int
    n_channels: int
    n_bins: int
    npars: int
    data: Mapping[str, np.ndarray]
    slots: Mapping[tuple[str, ...], tuple[str, int, int]]
    factor_index: np.ndarray
    normsys_par: np.ndarray
    normsys_code: str
    bin_channel: np.ndarray
    histosys_par: np.ndarray
    histosys_mask: np.ndarray
    histosys_names: tuple[str, ...]
    histosys_code: str
    normal_par: np.ndarray
    normal_aux: np.ndarray
    normal_sigma: np.ndarray
    staterror_group: np.ndarray
    staterror_bin: np.ndarray
    staterror_sigma_group: np.ndarray
    staterror_sigma_slot: np.ndarray
    poisson_par: np.ndarray
    poisson_aux: np.ndarray
    poisson_factor: np.ndarray
    shapesys_bin: np.ndarray
    shapesys_factor_entry: np.ndarray
    shapesys_factor_slot: np.ndarray
    shapesys_aux_entry: np.ndarray
    shapesys_aux_slot: np.ndarray
    auxdata: np.ndarray


def _staterror_bins(spec: Mapping[str, Any], first_bin: Mapping[str, int]) -> dict[str, list[int]]:
    """Global bins covered by each staterror modifier, ascending (its parameter order)."""
    covered: dict[str, set[int]] = {}
    for channel in spec["channels"]:
        start = first_bin[channel["name"]]
        stop = start + len(channel["samples"][0]["data"])
        for sample in channel["samples"]:
            for modifier in sample["modifiers"]:
                if modifier["type"] == "staterror":
                    covered.setdefault(modifier["name"], set()).update(range(start, stop))
    return {name: sorted(bins) for name, bins in covered.items()}


def _interpcode(model: pyhf.pdf.Model, mtype: str) -> str:
    """The interpolation code pyhf uses for a modifier type (checked before pyhf built the
    model: :func:`~neosx.histfactory._checks.check_interpcodes`)."""
    return model.main_model.modifiers_appliers[mtype].interpcode


def _dense(
    entries: list[tuple[int, int, float, float]], shape: tuple[int, int], fill: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-major ``lo``, ``hi`` (flattened) and mask arrays from ``(row, column, lo, hi)``."""
    lo, hi, mask = np.full(shape, fill), np.full(shape, fill), np.zeros(shape, dtype=bool)
    for row, column, low, high in entries:
        lo[row, column], hi[row, column], mask[row, column] = low, high, True
    return (
        frozen_array(lo.ravel(), np.float64),
        frozen_array(hi.ravel(), np.float64),
        frozen_array(mask, bool),
    )


def compile_layout(spec: Mapping[str, Any], model: pyhf.pdf.Model) -> Layout:
    """Compile a validated model spec and its pyhf model into a :class:`Layout`.

    Args:
        spec: The pyhf model spec (``{"channels": ..., "parameters": ...}``), already
            validated; ``model`` must have been built from it.
        model: The ``pyhf.Model`` of the spec, source of the parameter order, constraint
            types, widths, auxiliary data and interpolation codes.

    Returns:
        The static layout.

    Example:
        >>> spec = {"channels": [{"name": "SR", "samples": [{"name": "s", "data": [5.0],
        ...     "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]}]}]}
        >>> compile_layout(spec, pyhf.Model(spec)).factor_index.tolist()
        [[0]]
    """
    config = model.config
    samples, channels = list(config.samples), list(config.channels)
    n_samples, n_channels, n_bins = len(samples), len(channels), config.nmaindata
    first_bin = {c: config.channel_slices[c].start for c in channels}
    par_slices = {name: config.par_slice(name) for name in config.par_order}

    def rows(mtype: str) -> dict[str, int]:  # in parameter order: alpha = a slice of pars
        names = sorted(
            {n for n, t in config.modifiers if t == mtype}, key=lambda n: par_slices[n].start
        )
        return {name: row for row, name in enumerate(names)}

    builder = LayoutBuilder(
        n_samples=n_samples,
        n_channels=n_channels,
        n_bins=n_bins,
        par_slices=par_slices,
        staterror_bins=_staterror_bins(spec, first_bin),
        normsys_rows=rows("normsys"),
        histosys_rows=rows("histosys"),
    )
    nominal = np.zeros(n_samples * n_bins)
    for channel in spec["channels"]:
        for sample in channel["samples"]:
            site = Site(
                channel["name"],
                sample["name"],
                samples.index(sample["name"]),
                channels.index(channel["name"]),
                first_bin[channel["name"]],
                len(sample["data"]),
            )
            bins = builder.sample_bins(site)
            nominal[bins] = sample["data"]
            builder.slots[("data", site.channel, site.sample)] = ("nominal", bins[0], bins[-1] + 1)
            for modifier in sample["modifiers"]:
                COMPILERS[modifier["type"]](builder, site, modifier)

    normal: dict[str, list[Any]] = {"par": [], "aux": [], "sigma": []}
    poisson: dict[str, list[Any]] = {"par": [], "aux": [], "factor": []}
    for name in config.auxdata_order:
        paramset = config.param_set(name)
        start = config.par_slice(name).start
        for j in range(paramset.n_parameters):
            position = len(normal["par"]) + len(poisson["par"])
            if paramset.pdf_type == "normal":
                normal["par"].append(start + j)
                normal["sigma"].append(paramset.width()[j])
                normal["aux"].append(position)
            else:
                poisson["par"].append(start + j)
                poisson["factor"].append(paramset.factors[j])
                poisson["aux"].append(position)

    # Widths and scale factors are recomputed from the yields, except where the
    # measurement sets them (pyhf then uses the measurement's values).
    settings = {p["name"]: set(p) for p in spec.get("parameters", [])}
    owner = {
        par: name for name, sl in builder.par_slices.items() for par in range(sl.start, sl.stop)
    }

    def recomputed(par: int, key: str) -> bool:
        return key not in settings.get(owner[par], ())

    staterror_pars = sorted({par for par, _, _ in builder.staterror})
    sigma_groups = [g for g, par in enumerate(staterror_pars) if recomputed(par, "sigmas")]
    shapesys_pars = [par for par, _, _ in builder.shapesys]
    factor_entries = [e for e, par in enumerate(shapesys_pars) if recomputed(par, "factors")]
    aux_entries = [e for e, par in enumerate(shapesys_pars) if recomputed(par, "auxdata")]
    normal_slot = {par: i for i, par in enumerate(normal["par"])}
    poisson_slot = {par: i for i, par in enumerate(poisson["par"])}

    normsys_lo, normsys_hi, _ = _dense(
        builder.normsys, (len(builder.normsys_rows), n_samples * n_channels), 1.0
    )
    histosys_lo, histosys_hi, histosys_mask = _dense(
        builder.histosys, (len(builder.histosys_rows), n_samples * n_bins), 0.0
    )
    return Layout(
        n_samples=n_samples,
        n_channels=n_channels,
        n_bins=n_bins,
        npars=config.npars,
        data={
            "nominal": frozen_array(nominal, np.float64),
            "normsys_lo": normsys_lo,
            "normsys_hi": normsys_hi,
            "histosys_lo": histosys_lo,
            "histosys_hi": histosys_hi,
            "staterror": frozen_array([w2 for _, _, w2 in builder.staterror], np.float64),
            "shapesys": frozen_array([w2 for _, _, w2 in builder.shapesys], np.float64),
        },
        slots=dict(builder.slots),
        factor_index=frozen_array(padded_index(builder.factor_refs, pad=config.npars)),
        normsys_par=frozen_array([builder.par_slices[n].start for n in builder.normsys_rows]),
        normsys_code=_interpcode(model, "normsys"),
        bin_channel=frozen_array(
            np.repeat(np.arange(n_channels), [config.channel_nbins[c] for c in channels])
        ),
        histosys_par=frozen_array([builder.par_slices[n].start for n in builder.histosys_rows]),
        histosys_mask=histosys_mask,
        histosys_names=tuple(builder.histosys_rows),
        histosys_code=_interpcode(model, "histosys"),
        normal_par=frozen_array(normal["par"]),
        normal_aux=frozen_array(normal["aux"]),
        normal_sigma=frozen_array(normal["sigma"], np.float64),
        staterror_group=frozen_array(
            [staterror_pars.index(par) for par, _, _ in builder.staterror]
        ),
        staterror_bin=frozen_array([sample_bin for _, sample_bin, _ in builder.staterror]),
        staterror_sigma_group=frozen_array(sigma_groups),
        staterror_sigma_slot=frozen_array([normal_slot[staterror_pars[g]] for g in sigma_groups]),
        poisson_par=frozen_array(poisson["par"]),
        poisson_aux=frozen_array(poisson["aux"]),
        poisson_factor=frozen_array(poisson["factor"], np.float64),
        shapesys_bin=frozen_array([sample_bin for _, sample_bin, _ in builder.shapesys]),
        shapesys_factor_entry=frozen_array(factor_entries),
        shapesys_factor_slot=frozen_array([poisson_slot[shapesys_pars[e]] for e in factor_entries]),
        shapesys_aux_entry=frozen_array(aux_entries),
        shapesys_aux_slot=frozen_array(
            [poisson["aux"][poisson_slot[shapesys_pars[e]]] for e in aux_entries]
        ),
        auxdata=frozen_array(config.auxdata, np.float64),
    )
