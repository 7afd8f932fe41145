"""Where the events come from: generated, or read from ROOT / Parquet files."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from neosx.config._base import Name, Strict

__all__ = ["DataConfig", "FileConfig"]


class FileConfig(Strict):
    """One event set read from a file (ROOT via uproot, or Parquet via awkward)."""

    path: str = Field(description="ROOT or Parquet file (relative to the config file's folder)")
    tree: str = Field("events", description="TTree name (ROOT files)")


class DataConfig(Strict):
    """Where the events come from.

    ``source: blobs`` generates the neos paper's 2-D Gaussian blobs (features ``x``, ``y``;
    event sets ``signal``, ``background``, ``background_up``, ``background_down``); train
    and test events are independent draws. ``source: files`` reads one file per event set
    and computes each feature from an expression of its branches and object collections
    (``sqrt(MET_px**2 + MET_py**2)``, ``count(Jet[Jet.pt > 30])``, ``mass(Muon, 0, 1,
    default=0)``: the event-data page); each set is split into train and test events by a
    seeded shuffle. The test split is never trained on.
    """

    source: Literal["blobs", "files"] = "blobs"
    train_events: int = Field(
        10_000, ge=10, le=100_000_000, strict=True,
        description="blobs: events per event set (train)",
    )
    test_events: int = Field(
        20_000, ge=100, le=100_000_000, strict=True,
        description="blobs: events per event set (test; at least 100 for a hard evaluation)",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="blobs: generator options")
    files: dict[Name, FileConfig] = Field(
        default_factory=dict, description="files: {event set: file}"
    )
    features: dict[Name, str] = Field(
        default_factory=dict, description="files: {feature: expression of branches and collections}"
    )
    test_fraction: float = Field(0.5, gt=0, lt=1, description="files: share of events for test")

    @model_validator(mode="after")
    def _source_fields(self) -> DataConfig:
        if self.source == "files" and not (self.files and self.features):
            raise ValueError("source 'files' needs 'files' and 'features'")
        if self.source != "files" and (self.files or self.features):
            raise ValueError(f"'files' and 'features' need source 'files', not {self.source!r}")
        return self
