"""The observable, the objective and the optimisation loop; the hard evaluation's settings."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from neosx.config._base import (
    POI_UPPER_BOUND,
    Name,
    PositiveFloat,
    PositiveInt,
    ScheduleConfig,
    Strict,
    as_schedule,
)

__all__ = [
    "OBJECTIVES",
    "BaselineConfig",
    "EvaluationConfig",
    "Objective",
    "ObjectiveTerm",
    "ObservableConfig",
    "OptimizerConfig",
    "TrainingConfig",
]


class ObservableConfig(Strict):
    """The variable that is histogrammed: an MLP on features, or one plain feature."""

    type: Literal["mlp", "feature"] = "mlp"
    features: tuple[Name, ...] = Field(min_length=1)
    hidden: tuple[PositiveInt, ...] = (32, 32)
    activation: Literal["relu", "tanh", "gelu", "softplus"] = "relu"
    standardize: bool = Field(
        True, description="mlp: scale inputs by the training events' mean and std"
    )
    classes: dict[Name, tuple[Name, ...]] | None = Field(
        None, description="mlp: a softmax network, one output per class: {class: [samples "
        "whose events are that class]} (the labels of the cross-entropy baseline)"
    )
    temperature: ScheduleConfig = Field(
        ScheduleConfig(init=1.0), description="classes: softmax temperature of the class "
        "weights in training (hard evaluation: each event in its arg-max class)"
    )

    _temperature = field_validator("temperature", mode="before")(as_schedule)

    @model_validator(mode="after")
    def _one_feature(self) -> ObservableConfig:
        if self.type == "feature" and len(self.features) != 1:
            raise ValueError(f"type 'feature' takes exactly one feature, got {self.features}")
        if self.classes is not None:
            if self.type != "mlp":
                raise ValueError("classes need a network (type: mlp)")
            if len(self.classes) < 2:
                raise ValueError(f"classes: at least 2 are needed, got {list(self.classes)}")
            listed = [s for members in self.classes.values() for s in members]
            repeated = sorted({s for s in listed if listed.count(s) > 1})
            if repeated:
                raise ValueError(f"classes: samples {repeated} are in more than one class")
        elif "temperature" in self.model_fields_set:
            raise ValueError("temperature is the softmax's of a network with classes")
        return self

    @property
    def n_classes(self) -> int:
        """Outputs of the network: the number of classes (1: a sigmoid score)."""
        return 1 if self.classes is None else len(self.classes)


OBJECTIVES = (
    "cls", "z0", "upper_limit", "poi_uncertainty", "bce", "s_over_sqrt_b", "asimov_significance"
)
Objective = Literal[
    "cls", "z0", "upper_limit", "poi_uncertainty", "bce", "s_over_sqrt_b", "asimov_significance"
]


POI_OBJECTIVES = ("cls", "z0", "upper_limit", "poi_uncertainty")
"""The objectives that act on a parameter of interest (``poi``: default the study's)."""


class ObjectiveTerm(Strict):
    """An objective with options: ``{weight: 2, poi: r_qqH}``; with several POIs,
    ``poi_uncertainty`` combines their Fisher covariance (``combine``)."""

    weight: float = Field(1.0, description="its weight in the summed loss (> 0)")
    poi: Name | tuple[Name, ...] | None = Field(
        None, description="the POI it acts on (default: the study's poi); poi_uncertainty "
        "takes several, combined by 'combine'"
    )
    combine: Literal["sum", "logdet"] = Field(
        "sum", description="several POIs: the sum of their variances, or the log "
        "determinant of their covariance"
    )

    @property
    def pois(self) -> tuple[str, ...]:
        """The named POIs (empty: the study's)."""
        return () if self.poi is None else (self.poi,) if isinstance(self.poi, str) else self.poi


def _objective_weights(value: Any) -> Any:
    """``"cls"`` is ``{"cls": 1.0}``."""
    return {value: 1.0} if isinstance(value, str) else value


def term_weight(value: float | ObjectiveTerm) -> float:
    """The weight of an objective entry (a number, or a term with options)."""
    return value.weight if isinstance(value, ObjectiveTerm) else value


class OptimizerConfig(Strict):
    """An optax optimiser and its learning-rate schedule."""

    name: Literal["adam", "adamw", "sgd", "rmsprop", "lamb"] = "adam"
    learning_rate: ScheduleConfig = Field(
        ScheduleConfig(init=1e-3), description="learning rate (a number or a as_schedule)"
    )
    clip_norm: PositiveFloat | None = Field(None, description="clip the gradient's global norm")

    _lr = field_validator("learning_rate", mode="before")(as_schedule)


def _positive_weights(
    value: dict[str, float | ObjectiveTerm],
) -> dict[str, float | ObjectiveTerm]:
    """At least one objective, each with a finite weight > 0 (a negative weight would
    maximise what the objective minimises); POI options only where an objective has one."""
    if not value:
        raise ValueError("at least one objective is needed")
    for name, entry in value.items():
        weight = term_weight(entry)
        if isinstance(entry, ObjectiveTerm) and entry.pois and name not in POI_OBJECTIVES:
            raise ValueError(f"objective {name!r} acts on no POI (got poi {entry.poi!r})")
        if isinstance(entry, ObjectiveTerm) and len(entry.pois) > 1 and (
            name != "poi_uncertainty"
        ):
            raise ValueError(
                f"objective {name!r} acts on one POI; only poi_uncertainty combines several "
                f"(got {list(entry.pois)})"
            )
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(
                f"the weight of objective {name!r} must be finite and > 0 (got {weight})"
            )
    return value


class TrainingConfig(Strict):
    """The optimisation loop."""

    objective: dict[Objective, float | ObjectiveTerm] = Field(
        default_factory=lambda: {"cls": 1.0},
        description="objective name, or {name: weight or {weight, poi, combine}} summed "
        "into the loss",
    )
    steps: PositiveInt = 200
    batch_size: PositiveInt = Field(2000, description="events per event set per step")
    optimizer: OptimizerConfig = OptimizerConfig()
    checkpoint_every: PositiveInt = 50
    log_every: PositiveInt = 1
    evaluate_every: int = Field(0, ge=0, description="hard evaluation every K steps (0: off)")

    _objective = field_validator("objective", mode="before")(_objective_weights)
    _weights = field_validator("objective")(_positive_weights)


class BaselineConfig(Strict):
    """The reference analysis: the same observable trained on another objective (BCE)."""

    enabled: bool = True
    objective: dict[Objective, float | ObjectiveTerm] = Field(
        default_factory=lambda: {"bce": 1.0}
    )
    steps: PositiveInt | None = Field(None, description="default: training.steps")

    _objective = field_validator("objective", mode="before")(_objective_weights)
    _weights = field_validator("objective")(_positive_weights)


class EvaluationConfig(Strict):
    """The hard evaluation with pyhf."""

    mu: float = Field(
        1.0, gt=0, le=POI_UPPER_BOUND, allow_inf_nan=False,
        description=f"signal strength tested for CLs (within the POI's bounds, 0 to "
        f"{POI_UPPER_BOUND:g})",
    )
    cl: float = Field(0.95, gt=0, lt=1, description="confidence level of the upper limit")
    test_stat: Literal["qtilde", "q"] = "qtilde"
