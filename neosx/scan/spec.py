"""The scan file: a base study and the overrides of each job, validated before anything runs.

A scan file names a base study (relative to the scan file), overrides common to every job
(``set``), a ``grid`` (the cartesian product of its axes) and/or a ``list`` of explicit jobs,
each a mapping of overrides::

    base: neos_blobs.yaml
    out: runs/scan_blobs            # default: runs/<scan file stem>
    set: [training.steps=100]
    grid:
      seed: [0, 1, 2]
      histogram.bandwidth: [0.05, 0.1]
    list:
      - {training.objective: z0}

:func:`load_scan` validates the file and every job's study (``load_config`` with the job's
overrides); the first failure is a :class:`~neosx.config.ConfigError` whose one line names
the job and the field.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from neosx.config import ConfigError, load_config

__all__ = ["Job", "Scan", "ScanFile", "job_name", "load_scan", "override_text", "read_scan_file"]

MAX_NAME = 80
"""Job names longer than this (in characters) are cut and given a hash."""

UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")
"""Characters replaced by ``_`` in a job's folder name."""


class ScanFile(BaseModel):
    """The schema of a scan file (unknown keys are refused).

    Attributes:
        base: The base study configuration (relative to the scan file's folder).
        out: The scan folder (relative to the working directory); default
            ``runs/<scan file stem>``.
        common: ``key=value`` overrides applied to every job (the file's ``set``).
        grid: ``{key: [values]}``: one job per combination of values.
        jobs: Explicit jobs (the file's ``list``), each ``{key: value}``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: str = Field(min_length=1)
    out: str | None = Field(None, min_length=1)
    common: tuple[str, ...] = Field((), alias="set")
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(default_factory=dict)
    jobs: tuple[dict[str, Any], ...] = Field((), alias="list")

    @field_validator("grid", "jobs")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        for mapping in value if isinstance(value, tuple) else (value,):
            for key in mapping:
                if not key or "=" in key or key != key.strip():
                    raise ValueError(f"override key must be a field path like a.b, got {key!r}")
        return value


class Job(NamedTuple):
    """One study of a scan.

    Attributes:
        name: Readable, deterministic name, also the run folder's name.
        values: The job's own overrides ``{key: value}`` (grid axes, then list keys).
        overrides: Every ``key=value`` override of the job (the common ones first).
        run_dir: The job's run folder, ``<out>/<name>``.
        raw: The job's resolved study mapping (what its run folder stores as config.yaml).
    """

    name: str
    values: dict[str, Any]
    overrides: tuple[str, ...]
    run_dir: Path
    raw: dict[str, Any]


class Scan(NamedTuple):
    """A validated scan.

    Attributes:
        path: The scan file.
        base: The base study configuration (absolute).
        out: The scan folder.
        axes: The overridden keys, in order (the grid's, then those of the list).
        jobs: Every job, grid jobs first.
    """

    path: Path
    base: Path
    out: Path
    axes: tuple[str, ...]
    jobs: tuple[Job, ...]


def override_text(key: str, value: Any) -> str:
    """The ``--set`` string of one override; its value reads back as ``value`` in YAML.

    Example:
        >>> override_text("training.objective", "z0"), override_text("seed", 1)
        ('training.objective=z0', 'seed=1')
    """
    if isinstance(value, str):
        try:
            if yaml.safe_load(value) == value:
                return f"{key}={value}"
        except yaml.YAMLError:
            pass
    return f"{key}={json.dumps(value)}"


def job_name(values: Mapping[str, Any]) -> str:
    """The folder name of a job: its overrides, sanitised; a hash when cut or changed.

    Example:
        >>> job_name({"seed": 0, "histogram.bandwidth": 0.05})
        'seed=0,histogram.bandwidth=0.05'
    """
    text = ",".join(override_text(key, value) for key, value in values.items()) or "base"
    safe = UNSAFE.sub("_", text)
    if safe == text and len(text) <= MAX_NAME:
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return f"{safe[: MAX_NAME - 9]}-{digest}"


def _schema_error(path: Path, error: ValidationError) -> str:
    """One line: the scan file, the first failure's field and its value."""
    detail = error.errors(include_url=False)[0]
    field = ".".join(str(part) for part in detail["loc"]) or "(top level)"
    if detail["type"] == "extra_forbidden":
        return f"{path}: {field}: unknown key (got {detail['input']!r})"
    if detail["type"] == "missing":
        return f"{path}: {field}: required field is missing"
    if detail["type"] == "value_error":  # the validator's message names the value
        return f"{path}: {field}: {detail['msg'].removeprefix('Value error, ')}"
    return f"{path}: {field}: {detail['msg']} (got {detail['input']!r})"


def read_scan_file(path: Path) -> ScanFile:
    """Read and validate the scan file's schema (not yet its jobs).

    Raises:
        ConfigError: Unreadable file, invalid YAML, or a field that breaks the schema.
    """
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {getattr(error, 'problem', error)}") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping with 'base' and 'grid' and/or 'list'")
    try:
        spec = ScanFile.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_schema_error(path, error)) from None
    if not spec.grid and not spec.jobs:
        raise ConfigError(f"{path}: give a 'grid' and/or a 'list' of jobs")
    return spec


def _job_values(spec: ScanFile) -> list[dict[str, Any]]:
    """The overrides of each job: the grid's product (last axis fastest), then the list."""
    keys = list(spec.grid)
    product = itertools.product(*spec.grid.values()) if keys else ()
    return [dict(zip(keys, combo, strict=True)) for combo in product] + [
        dict(entry) for entry in spec.jobs
    ]


def _check_folder(path: Path, job: Job) -> None:
    """Refuse a job whose run folder already holds a run of another configuration."""
    stored = job.run_dir / "config.yaml"
    if stored.is_file() and yaml.safe_load(stored.read_text()) != job.raw:
        raise ConfigError(
            f"{path}: job {job.name!r}: {job.run_dir} holds a run of another configuration; "
            "remove it or choose another out"
        )


def load_scan(path: str | Path, out: str | Path | None = None) -> Scan:
    """Read a scan file and validate every job's study before anything runs.

    Args:
        path: The scan file (YAML).
        out: The scan folder, replacing the file's ``out``.

    Returns:
        :class:`Scan`.

    Raises:
        ConfigError: The scan file is malformed; a job's study is invalid (the message
            names the job and the field); two jobs share a folder name; or a job's run
            folder holds a run of another configuration.

    Example:
        >>> scan = load_scan("scans/blobs.yaml")  # doctest: +SKIP
        >>> [job.name for job in scan.jobs]  # doctest: +SKIP
        ['seed=0,histogram.bandwidth=0.05', 'seed=0,histogram.bandwidth=0.1', ...]
    """
    path = Path(path)
    spec = read_scan_file(path)
    base = (path.parent / spec.base).resolve()
    folder = Path(out or spec.out or Path("runs") / path.stem).absolute()
    if not base.is_file():
        raise ConfigError(f"{path}: base: no such file (got {spec.base!r})")
    jobs: list[Job] = []
    for values in _job_values(spec):
        name = job_name(values)
        own = tuple(override_text(key, value) for key, value in values.items())
        if any(job.name == name for job in jobs):
            raise ConfigError(f"{path}: job {name!r} appears twice")
        try:
            _, raw = load_config(base, (*spec.common, *own))
        except ConfigError as error:
            raise ConfigError(f"{path}: job {name!r}: {error}") from None
        job = Job(name, values, (*spec.common, *own), folder / name, raw)
        _check_folder(path, job)
        jobs.append(job)
    axes = tuple(dict.fromkeys(key for job in jobs for key in job.values))
    return Scan(path, base, folder, axes, tuple(jobs))

