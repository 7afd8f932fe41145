"""Samples of the statistical model and their systematic variations."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from neosx.config._base import Name, Strict

__all__ = [
    "FeatureShiftConfig",
    "HistosysConfig",
    "NormsysConfig",
    "SampleConfig",
    "Variation",
]


class Variation(Strict):
    """A +-1 sigma variation from alternative event sets or from per-event weight factors."""

    name: Name
    up_weight: Name | None = Field(None, description="feature: weight factor at +1 sigma")
    down_weight: Name | None = Field(None, description="feature: weight factor at -1 sigma")

    def _one_form(self, first: tuple[str, str], kind: str) -> None:
        given = {k for k in (*first, "up_weight", "down_weight") if getattr(self, k) is not None}
        if given not in (set(first), {"up_weight", "down_weight"}):
            raise ValueError(
                f"{kind} '{self.name}' takes either {' and '.join(first)} or up_weight and "
                f"down_weight, got {sorted(given)}"
            )


class HistosysConfig(Variation):
    """A shape systematic: alternative event sets (``up``, ``down``), or the nominal events
    reweighted by per-event factors (``up_weight``, ``down_weight``)."""

    up: Name | None = Field(None, description="event set at +1 sigma")
    down: Name | None = Field(None, description="event set at -1 sigma")

    @model_validator(mode="after")
    def _form(self) -> HistosysConfig:
        self._one_form(("up", "down"), "histosys")
        return self


class NormsysConfig(Variation):
    """A normalisation systematic: constant factors ``hi`` / ``lo`` at +-1 sigma, or the
    selected yield's change under per-event weight factors (``up_weight``, ``down_weight``),
    which then depends on the selection and is differentiated with it."""

    hi: float | None = Field(None, ge=0.01, le=100.0, description="factor at +1 sigma")
    lo: float | None = Field(None, ge=0.01, le=100.0, description="factor at -1 sigma")

    @model_validator(mode="after")
    def _form(self) -> NormsysConfig:
        self._one_form(("hi", "lo"), "normsys")
        return self


class SampleConfig(Strict):
    """A physics process of the statistical model and the events that fill it."""

    name: Name
    events: Name = Field(description="event set of the data source")
    role: Literal["signal", "background"]
    expected: float = Field(
        gt=0, le=1e15, allow_inf_nan=False, description="expected events before any selection"
    )
    weight: Name | None = Field(
        None, description="feature holding per-event weights (default: unweighted events)"
    )
    histosys: tuple[HistosysConfig, ...] = ()
    normsys: tuple[NormsysConfig, ...] = ()
    staterror: bool | Literal["lite", "full"] = Field(
        False,
        description="MC statistical uncertainty from sum w^2: 'lite' (or true) one "
        "staterror per region and bin shared by the samples that ask for it (pyhf's "
        "staterror); 'full' one Poisson-constrained parameter per sample and bin "
        "(Barlow-Beeston, pyhf's shapesys)",
    )
    normfactor: Name | None = Field(
        None, description="free-floating normalisation parameter of this sample (e.g. mu_ttbar)"
    )


class FeatureShiftConfig(Strict):
    """A systematic that moves event features: at +-1 sigma every named feature is scaled
    (``x (1 +- s)``) or shifted (``x +- d``) before the preselection, the cuts and the
    observable, so its templates are re-evaluated through the trainable analysis."""

    name: Name = Field(
        description="nuisance parameter name, shared by every region and affected sample"
    )
    scale: dict[Name, float] = Field(
        default_factory=dict, description="{feature: relative change s at +1 sigma}"
    )
    shift: dict[Name, float] = Field(
        default_factory=dict, description="{feature: absolute change d at +1 sigma}"
    )
    samples: tuple[Name, ...] | None = Field(
        None, description="samples it affects (default: every sample)"
    )
    modifier: Literal["histosys", "normsys"] = Field(
        "histosys", description="histosys (shape and rate) or normsys (rate only) per region"
    )

    @model_validator(mode="after")
    def _moves_something(self) -> FeatureShiftConfig:
        if not (self.scale or self.shift):
            raise ValueError(f"feature shift '{self.name}' needs 'scale' or 'shift'")
        both = sorted(set(self.scale) & set(self.shift))
        if both:
            raise ValueError(f"feature shift '{self.name}' both scales and shifts {both}")
        for kind, changes in (("scale", self.scale), ("shift", self.shift)):
            for feature, change in changes.items():
                if not math.isfinite(change) or change == 0:
                    raise ValueError(
                        f"feature shift '{self.name}': {kind} of {feature} must be finite and "
                        f"non-zero (got {change})"
                    )
        return self
