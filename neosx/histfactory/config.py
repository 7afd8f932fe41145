"""`HistFactoryConfig`: the static description of a compiled model, read from pyhf."""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyhf

from neosx.histfactory.layout import Layout, frozen_array

__all__ = ["HistFactoryConfig"]


@dataclass(frozen=True)
class HistFactoryConfig:
    """Static description of a model, read from pyhf (numpy arrays are read-only).

    Attributes:
        poi_name: Parameter of interest, or ``None``.
        poi_index: Index of the POI in the parameter vector, or ``None``.
        par_order: Parameter-set names in parameter-vector order (pyhf's ``par_order``).
        par_names: One name per parameter, ``name[i]`` for multi-bin sets (pyhf's).
        par_slices: ``{parameter set: slice of the parameter vector}``.
        suggested_init: Initial values (npars,).
        suggested_bounds: Bounds (npars, 2).
        suggested_fixed: Whether each parameter is fixed (npars,) bool.
        auxdata: Auxiliary data at the spec's yields (nauxdata,).
        npars: Number of parameters.
        nmaindata: Number of main bins (all channels).
        nauxdata: Number of auxiliary data.
        channels: Channel names, sorted (the order of the main data).
        samples: Sample names, sorted.
        channel_nbins: ``{channel: number of bins}``.
        channel_slices: ``{channel: slice of the main data}``.
        modifiers: ``(name, type)`` of every modifier, sorted.
        interpcodes: ``{"normsys": code, "histosys": code}``.
    """

    poi_name: str | None
    poi_index: int | None
    par_order: tuple[str, ...]
    par_names: tuple[str, ...]
    par_slices: Mapping[str, slice]
    suggested_init: np.ndarray
    suggested_bounds: np.ndarray
    suggested_fixed: np.ndarray
    auxdata: np.ndarray
    npars: int
    nmaindata: int
    nauxdata: int
    channels: tuple[str, ...]
    samples: tuple[str, ...]
    channel_nbins: Mapping[str, int]
    channel_slices: Mapping[str, slice]
    modifiers: tuple[tuple[str, str], ...]
    interpcodes: Mapping[str, str]

    @classmethod
    def from_pyhf(cls, model: pyhf.pdf.Model, layout: Layout) -> HistFactoryConfig:
        """Read the configuration of a ``pyhf.Model`` and its compiled layout."""
        config = model.config
        return cls(
            poi_name=config.poi_name,
            poi_index=config.poi_index,
            par_order=tuple(config.par_order),
            par_names=tuple(config.par_names),
            par_slices=types.MappingProxyType({n: config.par_slice(n) for n in config.par_order}),
            suggested_init=frozen_array(config.suggested_init(), np.float64),
            suggested_bounds=frozen_array(config.suggested_bounds(), np.float64),
            suggested_fixed=frozen_array(config.suggested_fixed(), bool),
            auxdata=layout.auxdata,
            npars=config.npars,
            nmaindata=config.nmaindata,
            nauxdata=config.nauxdata,
            channels=tuple(config.channels),
            samples=tuple(config.samples),
            channel_nbins=types.MappingProxyType(dict(config.channel_nbins)),
            channel_slices=types.MappingProxyType(
                {c: config.channel_slices[c] for c in config.channels}
            ),
            modifiers=tuple(tuple(m) for m in config.modifiers),
            interpcodes=types.MappingProxyType(
                {"normsys": layout.normsys_code, "histosys": layout.histosys_code}
            ),
        )

    def par_slice(self, name: str) -> slice:
        """Slice of the parameter vector holding parameter set ``name``."""
        return self.par_slices[name]
