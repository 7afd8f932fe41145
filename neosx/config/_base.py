"""Shared pieces of the study schema: strict frozen models, names, schedules, the error."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "POI_UPPER_BOUND",
    "ConfigError",
    "Name",
    "PositiveFloat",
    "PositiveInt",
    "ScheduleConfig",
    "Strict",
    "as_schedule",
]

POI_UPPER_BOUND = 100.0
"""Upper bound of the signal strength in the built models (pyhf's default 10 is too tight
for the upper limit of a weak analysis before training)."""

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
PositiveInt = Annotated[int, Field(gt=0, strict=True)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")]


class ConfigError(ValueError):
    """A study configuration is malformed; the message is one line naming field and value."""


class Strict(BaseModel):
    """A frozen model that forbids unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduleConfig(Strict):
    """A value that may change with the training step (optax-style schedule).

    ``constant``: ``init`` throughout. ``linear`` / ``cosine`` / ``exponential``: from
    ``init`` at step 0 to ``end`` at step ``steps`` (default: the training length), then
    ``end``. Used to anneal the histogram bandwidth and the cut slopes towards the hard limit.
    """

    schedule: Literal["constant", "linear", "cosine", "exponential"] = "constant"
    init: PositiveFloat
    end: PositiveFloat | None = None
    steps: PositiveInt | None = None

    @model_validator(mode="after")
    def _end_given(self) -> ScheduleConfig:
        if self.schedule != "constant" and self.end is None:
            raise ValueError(f"schedule '{self.schedule}' needs 'end'")
        if self.schedule == "constant" and (self.end is not None or self.steps is not None):
            raise ValueError(
                "a constant schedule takes no 'end' or 'steps' (give a schedule: linear, "
                "cosine or exponential)"
            )
        return self


def as_schedule(value: Any) -> Any:
    """A bare number is a constant schedule (YAML reads ``1e-3`` as a string: accept it)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"init": value}
    return value
