"""Regions: preselection, trainable cuts, and the histogram of each channel."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from neosx.config._base import Name, ScheduleConfig, Strict, as_schedule
from neosx.relax.hist import METHODS

__all__ = ["CutConfig", "FeatureObservable", "HistogramConfig", "RegionConfig"]


class CutConfig(Strict):
    """A soft threshold cut on one feature, with a trainable threshold."""

    feature: Name
    keep: Literal["above", "below"] = "above"
    init: float = Field(description="initial threshold (units of the feature)")
    slope: ScheduleConfig = Field(
        ScheduleConfig(init=1.0), description="logistic slope (1 / units of the feature)"
    )
    trainable: bool = True

    _slope = field_validator("slope", mode="before")(as_schedule)


class HistogramConfig(Strict):
    """The soft histogram of the observable (``hard=True`` evaluation uses the same bins)."""

    method: str = "kde"
    bins: int = Field(4, gt=0, le=10_000, strict=True)
    range: tuple[float, float] = (0.0, 1.0)
    trainable_edges: bool = False
    bandwidth: ScheduleConfig = Field(
        ScheduleConfig(init=0.1), description="kernel width (units of the observable)"
    )
    overflow: Literal["drop", "clip"] = "clip"

    _bandwidth = field_validator("bandwidth", mode="before")(as_schedule)

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value not in METHODS:
            raise ValueError(f"unknown histogram method, choose one of {sorted(METHODS)}")
        return value

    @field_validator("range")
    @classmethod
    def _increasing(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not value[0] < value[1]:
            raise ValueError("range must be (low, high) with low < high")
        return value


class FeatureObservable(Strict):
    """A region that histograms one plain feature (with the region's own binning)."""

    feature: Name = Field(description="the feature histogrammed, in its own units")


class RegionConfig(Strict):
    """A region (a channel of the pyhf model): which events enter, and what is histogrammed.

    ``preselection`` is a hard selection on event features (e.g. ``n_lepton == 3 && met >
    30``), identical in training and in the hard evaluation and re-applied to feature-shifted
    events; ``cuts`` are trainable soft cuts after it. ``observable`` is what the region
    histograms: ``score`` (the study's observable, e.g. the network output), ``count`` (one
    bin: a cut-and-count region) or ``{feature: name}`` (a plain feature).
    """

    name: Name = Field(description="region (channel) name in the pyhf workspace")
    preselection: str | None = Field(
        None, description="hard selection on event features, e.g. 'n_lepton == 3 && met > 30'"
    )
    cuts: tuple[CutConfig, ...] = Field(
        (), description="trainable soft cuts after the preselection (a product of cuts)"
    )
    observable: Literal["score", "count", "classes"] | FeatureObservable = Field(
        "score", description="score (the study's observable; with class: that class' "
        "probability), count (one bin), classes (one bin per class of a softmax network) "
        "or {feature: x}"
    )
    class_: Name | None = Field(
        None, alias="class", description="a softmax network's class: its events enter with "
        "that class' probability (at the temperature) in training, by arg-max when hard"
    )
    histogram: HistogramConfig = Field(
        HistogramConfig(), description="binning and relaxation of the region's histogram"
    )

    @model_validator(mode="after")
    def _count_has_no_histogram(self) -> RegionConfig:
        if self.observable == "count" and "histogram" in self.model_fields_set:
            raise ValueError(
                f"region '{self.name}' counts events (observable: count): it has no histogram"
            )
        if self.observable == "classes" and "histogram" in self.model_fields_set:
            raise ValueError(
                f"region '{self.name}' histograms the classes (observable: classes): one bin "
                "per class, no histogram section"
            )
        if self.observable == "classes" and self.class_ is not None:
            raise ValueError(
                f"region '{self.name}' histograms every class (observable: classes): it "
                f"takes no class (got {self.class_!r})"
            )
        return self

    @property
    def uses_score(self) -> bool:
        """Whether the region uses the study's observable (its score, a class' probability,
        or the classes)."""
        return self.observable in ("score", "classes") or self.class_ is not None

    @property
    def n_bins(self) -> int:
        """Bins of the region's histogram (1 for a count; for classes see
        :attr:`neosx.analysis.regions.Region.n_bins`)."""
        return 1 if self.observable == "count" else self.histogram.bins
