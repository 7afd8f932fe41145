"""The whole study: its sections, and the checks that span them."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from neosx.config._base import Name, PositiveFloat, Strict
from neosx.config.combination import BaseWorkspaceConfig
from neosx.config.data import DataConfig
from neosx.config.regions import CutConfig, HistogramConfig, RegionConfig
from neosx.config.samples import FeatureShiftConfig, SampleConfig
from neosx.config.training import (
    BaselineConfig,
    EvaluationConfig,
    ObservableConfig,
    TrainingConfig,
)

__all__ = ["SINGLE_REGION_FIELDS", "StudyConfig"]

SINGLE_REGION_FIELDS = ("channel", "cuts", "histogram")
"""The fields of the one-region form, which ``regions`` replaces."""


class StudyConfig(Strict):
    """One analysis study: data, samples, systematics, regions, observable, training.

    A one-region study may give ``channel``, ``cuts`` and ``histogram`` at the top level
    (the region histograms the observable's score); a study with several regions lists them
    under ``regions`` instead. :attr:`analysis_regions` is the list either way.
    """

    name: Name
    seed: int = Field(0, ge=0, lt=2**63)
    data: DataConfig = DataConfig()
    channel: Name = "SR"
    poi: Name = "mu"
    lumi_uncertainty: PositiveFloat | None = None
    samples: tuple[SampleConfig, ...] = Field(min_length=2)
    systematics: tuple[FeatureShiftConfig, ...] = Field(
        (), description="feature-shift systematics (each a histosys or normsys per region)"
    )
    regions: tuple[RegionConfig, ...] = Field(
        (), description="the regions (channels); default: one region from channel, cuts, histogram"
    )
    cuts: tuple[CutConfig, ...] = ()
    observable: ObservableConfig
    histogram: HistogramConfig = HistogramConfig()
    training: TrainingConfig = TrainingConfig()
    baseline: BaselineConfig = BaselineConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    base_workspace: BaseWorkspaceConfig | None = Field(
        None, description="a published pyhf workspace that the study's regions are added to"
    )

    @field_validator("samples")
    @classmethod
    def _signal_and_background(
        cls, samples: tuple[SampleConfig, ...]
    ) -> tuple[SampleConfig, ...]:
        names = [s.name for s in samples]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"duplicated sample names {duplicated}")
        roles = {s.role for s in samples}
        if roles != {"signal", "background"}:
            raise ValueError(
                f"need at least one 'signal' and one 'background' sample, got roles {sorted(roles)}"
            )
        return samples

    @field_validator("regions")
    @classmethod
    def _unique_regions(cls, regions: tuple[RegionConfig, ...]) -> tuple[RegionConfig, ...]:
        names = [r.name for r in regions]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"duplicated region names {duplicated}")
        return regions

    @model_validator(mode="after")
    def _one_form_of_regions(self) -> StudyConfig:
        given = [f for f in SINGLE_REGION_FIELDS if f in self.model_fields_set]
        if self.regions and given:
            raise ValueError(
                f"give the regions under 'regions' or the one-region fields {list(given)} "
                "at the top level, not both"
            )
        return self

    @model_validator(mode="after")
    def _poi_scales_a_signal(self) -> StudyConfig:
        scaled = [s.normfactor or self.poi for s in self.samples if s.role == "signal"]
        if self.poi not in scaled:
            raise ValueError(
                f"poi: {self.poi!r} scales no signal sample (each has a normfactor of its "
                f"own); set poi to one of {sorted(set(scaled))}"
            )
        return self

    @model_validator(mode="after")
    def _classes_fit_the_regions(self) -> StudyConfig:
        classes = self.observable.classes
        samples = [s.name for s in self.samples]
        for name, members in (classes or {}).items():
            unknown = sorted(set(members) - set(samples))
            if unknown:
                raise ValueError(
                    f"observable.classes.{name}: unknown samples {unknown}, choose from "
                    f"{samples}"
                )
        for i, region in enumerate(self.analysis_regions):
            where = f"regions[{i}]" if self.regions else "(the region)"
            if classes is None and (region.class_ is not None or region.observable == "classes"):
                raise ValueError(
                    f"{where}: region {region.name!r} uses classes, and the observable has "
                    "none (set observable.classes)"
                )
            if classes is not None and region.class_ is not None and region.class_ not in classes:
                raise ValueError(
                    f"{where}.class: unknown class, choose from {list(classes)} (got "
                    f"{region.class_!r})"
                )
            if classes is not None and region.observable == "score" and region.class_ is None:
                raise ValueError(
                    f"{where}: region {region.name!r} histograms the score of a network with "
                    "classes: name the class whose probability it histograms (class: ...) "
                    "or histogram the classes (observable: classes)"
                )
        return self

    @model_validator(mode="after")
    def _compatible_choices(self) -> StudyConfig:
        objectives = {"training.objective": self.training.objective}
        if self.baseline.enabled:
            objectives["baseline.objective"] = self.baseline.objective
        for where, weights in objectives.items():
            if "bce" in weights and self.observable.type != "mlp":
                raise ValueError(
                    f"{where}: 'bce' trains a classifier, and observable.type is "
                    f"{self.observable.type!r} (use mlp, or disable the baseline)"
                )
        if self.observable.type == "mlp":
            for i, region in enumerate(self.analysis_regions):
                low, high = region.histogram.range
                if region.uses_score and (high <= 0.0 or low >= 1.0):
                    where = f"regions[{i}].histogram" if self.regions else "histogram"
                    raise ValueError(
                        f"{where}.range: {[low, high]} lies outside (0, 1), where the "
                        "network's sigmoid output is"
                    )
        return self

    @property
    def pois(self) -> tuple[str, ...]:
        """The parameters of interest: ``poi`` first (it scales every signal sample without
        a normfactor of its own, and is the exported workspace's measurement POI), then each
        signal sample's own normfactor, in sample order."""
        names = [self.poi]
        for sample in self.samples:
            if sample.role == "signal" and sample.normfactor not in (None, *names):
                names.append(sample.normfactor)
        return tuple(names)

    @property
    def analysis_regions(self) -> tuple[RegionConfig, ...]:
        """The study's regions (the one-region form as one region named ``channel``)."""
        if self.regions:
            return self.regions
        return (RegionConfig(name=self.channel, cuts=self.cuts, histogram=self.histogram),)
