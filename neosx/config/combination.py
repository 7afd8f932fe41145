"""A published likelihood as the base of a study: the study's regions are added to it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from neosx.config._base import Name, Strict

__all__ = ["BaseWorkspaceConfig"]


class BaseWorkspaceConfig(Strict):
    """An existing pyhf workspace (e.g. a HEPData likelihood) that the study's regions join.

    The study's regions become channels of it (or replace the channels named in
    ``replace``); nuisance parameters of the same name are one parameter, so a study's
    ``lumi`` and its systematics correlate with the base's by name. The objective is
    computed on the combined model, the hard evaluation runs pyhf on the combined
    workspace, and ``neosx export`` writes it. ``base_workspace: path.json`` is short for
    ``base_workspace: {path: path.json}``.
    """

    path: str = Field(description="pyhf workspace JSON (relative to the config file's folder)")
    patches: tuple[str, ...] = Field(
        (), description="JSON patches applied to it in order, e.g. a HEPData signal patch"
    )
    measurement: str | None = Field(
        None, description="the base measurement whose parameter settings apply (default: first)"
    )
    replace: tuple[Name, ...] = Field(
        (), description="base channels that the study's regions replace (removed from the base)"
    )
    data: Literal["asimov", "observed"] = Field(
        "asimov",
        description="the base channels' data in the hard evaluation: the background-only "
        "expectation (as the study's regions) or the published observations",
    )

    @model_validator(mode="before")
    @classmethod
    def _path_alone(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _distinct_replacements(self) -> BaseWorkspaceConfig:
        duplicated = sorted({c for c in self.replace if self.replace.count(c) > 1})
        if duplicated:
            raise ValueError(f"replace: channels {duplicated} are listed twice")
        return self
