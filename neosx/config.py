"""The schema of a study: one YAML file, validated once at the boundary into a frozen object.

Every model forbids unknown keys; :func:`load_config` turns any validation failure into a
:class:`ConfigError` whose one-line message names the field path and the bad value, e.g.::

    training.optimizer.learning_rate.init: Input should be greater than 0 (got -0.1)

The core (pipeline, training, evaluation) only ever sees a :class:`StudyConfig`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from neosx.relax.hist import METHODS

__all__ = [
    "BaselineConfig",
    "ConfigError",
    "CutConfig",
    "DataConfig",
    "EvaluationConfig",
    "FileConfig",
    "HistogramConfig",
    "HistosysConfig",
    "NormsysConfig",
    "ObservableConfig",
    "OptimizerConfig",
    "SampleConfig",
    "ScheduleConfig",
    "StudyConfig",
    "TrainingConfig",
    "apply_overrides",
    "load_config",
    "parse_config",
]

PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0, strict=True)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")]


class ConfigError(ValueError):
    """A study configuration is malformed; the message is one line naming field and value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduleConfig(_Strict):
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
        return self


def _schedule(value: Any) -> Any:
    """A bare number is a constant schedule (YAML reads ``1e-3`` as a string: accept it)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"init": value}
    return value


class FileConfig(_Strict):
    """One event set read from a file (ROOT via uproot, or Parquet via awkward)."""

    path: str = Field(description="ROOT or Parquet file (relative to the config file's folder)")
    tree: str = Field("events", description="TTree name (ROOT files)")


class DataConfig(_Strict):
    """Where the events come from.

    ``source: blobs`` generates the neos paper's 2-D Gaussian blobs (features ``x``, ``y``;
    event sets ``signal``, ``background``, ``background_up``, ``background_down``); train
    and test events are independent draws. ``source: files`` reads one file per event set
    and computes each feature from an expression of its branches (uproot's expression
    language, e.g. ``sqrt(MET_px**2 + MET_py**2)``); each set is split into train and test
    events by a seeded shuffle. The test split is never trained on.
    """

    source: Literal["blobs", "files"] = "blobs"
    train_events: PositiveInt = Field(10_000, description="blobs: events per event set (train)")
    test_events: PositiveInt = Field(20_000, description="blobs: events per event set (test)")
    options: dict[str, Any] = Field(default_factory=dict, description="blobs: generator options")
    files: dict[Name, FileConfig] = Field(
        default_factory=dict, description="files: {event set: file}"
    )
    features: dict[Name, str] = Field(
        default_factory=dict, description="files: {feature: expression of branches}"
    )
    test_fraction: float = Field(0.5, gt=0, lt=1, description="files: share of events for test")

    @model_validator(mode="after")
    def _source_fields(self) -> DataConfig:
        if self.source == "files" and not (self.files and self.features):
            raise ValueError("source 'files' needs 'files' and 'features'")
        if self.source != "files" and (self.files or self.features):
            raise ValueError(f"'files' and 'features' need source 'files', not {self.source!r}")
        return self


class _Variation(_Strict):
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


class HistosysConfig(_Variation):
    """A shape systematic: alternative event sets (``up``, ``down``), or the nominal events
    reweighted by per-event factors (``up_weight``, ``down_weight``)."""

    up: Name | None = Field(None, description="event set at +1 sigma")
    down: Name | None = Field(None, description="event set at -1 sigma")

    @model_validator(mode="after")
    def _form(self) -> HistosysConfig:
        self._one_form(("up", "down"), "histosys")
        return self


class NormsysConfig(_Variation):
    """A normalisation systematic: constant factors ``hi`` / ``lo`` at +-1 sigma, or the
    selected yield's change under per-event weight factors (``up_weight``, ``down_weight``),
    which then depends on the selection and is differentiated with it."""

    hi: PositiveFloat | None = None
    lo: PositiveFloat | None = None

    @model_validator(mode="after")
    def _form(self) -> NormsysConfig:
        self._one_form(("hi", "lo"), "normsys")
        return self


class SampleConfig(_Strict):
    """A physics process of the statistical model and the events that fill it."""

    name: Name
    events: Name = Field(description="event set of the data source")
    role: Literal["signal", "background"]
    expected: PositiveFloat = Field(description="expected events before any selection")
    weight: Name | None = Field(
        None, description="feature holding per-event weights (default: unweighted events)"
    )
    histosys: tuple[HistosysConfig, ...] = ()
    normsys: tuple[NormsysConfig, ...] = ()
    staterror: bool = Field(False, description="MC statistical uncertainty (sum w^2)")


class CutConfig(_Strict):
    """A soft threshold cut on one feature, with a trainable threshold."""

    feature: Name
    keep: Literal["above", "below"] = "above"
    init: float = Field(description="initial threshold (units of the feature)")
    slope: ScheduleConfig = Field(
        ScheduleConfig(init=1.0), description="logistic slope (1 / units of the feature)"
    )
    trainable: bool = True

    _slope = field_validator("slope", mode="before")(_schedule)


class ObservableConfig(_Strict):
    """The variable that is histogrammed: an MLP on features, or one plain feature."""

    type: Literal["mlp", "feature"] = "mlp"
    features: tuple[Name, ...] = Field(min_length=1)
    hidden: tuple[PositiveInt, ...] = (32, 32)
    activation: Literal["relu", "tanh", "gelu", "softplus"] = "relu"
    standardize: bool = Field(
        True, description="mlp: scale inputs by the training events' mean and std"
    )

    @model_validator(mode="after")
    def _one_feature(self) -> ObservableConfig:
        if self.type == "feature" and len(self.features) != 1:
            raise ValueError(f"type 'feature' takes exactly one feature, got {self.features}")
        return self


class HistogramConfig(_Strict):
    """The soft histogram of the observable (``hard=True`` evaluation uses the same bins)."""

    method: str = "kde"
    bins: PositiveInt = 4
    range: tuple[float, float] = (0.0, 1.0)
    trainable_edges: bool = False
    bandwidth: ScheduleConfig = Field(
        ScheduleConfig(init=0.1), description="kernel width (units of the observable)"
    )
    overflow: Literal["drop", "clip"] = "clip"

    _bandwidth = field_validator("bandwidth", mode="before")(_schedule)

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


OBJECTIVES = (
    "cls", "z0", "upper_limit", "poi_uncertainty", "bce", "s_over_sqrt_b", "asimov_significance"
)
Objective = Literal[
    "cls", "z0", "upper_limit", "poi_uncertainty", "bce", "s_over_sqrt_b", "asimov_significance"
]


def _objective_weights(value: Any) -> Any:
    """``"cls"`` is ``{"cls": 1.0}``."""
    return {value: 1.0} if isinstance(value, str) else value


class OptimizerConfig(_Strict):
    """An optax optimiser and its learning-rate schedule."""

    name: Literal["adam", "adamw", "sgd", "rmsprop", "lamb"] = "adam"
    learning_rate: ScheduleConfig = Field(
        ScheduleConfig(init=1e-3), description="learning rate (a number or a schedule)"
    )
    clip_norm: PositiveFloat | None = Field(None, description="clip the gradient's global norm")

    _lr = field_validator("learning_rate", mode="before")(_schedule)


class TrainingConfig(_Strict):
    """The optimisation loop."""

    objective: dict[Objective, float] = Field(
        default_factory=lambda: {"cls": 1.0},
        description="objective name, or {name: weight} summed into the loss",
    )
    steps: PositiveInt = 200
    batch_size: PositiveInt = Field(2000, description="events per event set per step")
    optimizer: OptimizerConfig = OptimizerConfig()
    checkpoint_every: PositiveInt = 50
    log_every: PositiveInt = 1
    evaluate_every: int = Field(0, ge=0, description="hard evaluation every K steps (0: off)")

    _objective = field_validator("objective", mode="before")(_objective_weights)

    @field_validator("objective")
    @classmethod
    def _not_empty(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("at least one objective is needed")
        return value


class BaselineConfig(_Strict):
    """The reference analysis: the same observable trained on another objective (BCE)."""

    enabled: bool = True
    objective: dict[Objective, float] = Field(default_factory=lambda: {"bce": 1.0})
    steps: PositiveInt | None = Field(None, description="default: training.steps")

    _objective = field_validator("objective", mode="before")(_objective_weights)


class EvaluationConfig(_Strict):
    """The hard evaluation with pyhf."""

    mu: PositiveFloat = Field(1.0, description="signal strength tested for CLs")
    cl: float = Field(0.95, gt=0, lt=1, description="confidence level of the upper limit")
    test_stat: Literal["qtilde", "q"] = "qtilde"


class StudyConfig(_Strict):
    """One analysis study: data, samples, selection, observable, histogram, training."""

    name: Name
    seed: int = Field(0, ge=0)
    data: DataConfig = DataConfig()
    channel: Name = "SR"
    poi: Name = "mu"
    lumi_uncertainty: PositiveFloat | None = None
    samples: tuple[SampleConfig, ...] = Field(min_length=2)
    cuts: tuple[CutConfig, ...] = ()
    observable: ObservableConfig
    histogram: HistogramConfig = HistogramConfig()
    training: TrainingConfig = TrainingConfig()
    baseline: BaselineConfig = BaselineConfig()
    evaluation: EvaluationConfig = EvaluationConfig()

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


def _path(loc: Sequence[int | str]) -> str:
    """``("samples", 0, "expected")`` -> ``samples[0].expected``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not part.startswith(("function-", "constrained-")):
            text += f".{part}" if text else part
    return text or "(top level)"


def _first_error(error: ValidationError) -> str:
    """One line: the first failure's field path, message and value."""
    detail = error.errors(include_url=False)[0]
    loc = [p for p in detail["loc"] if not (isinstance(p, str) and "[" in p)]
    message = detail["msg"].removeprefix("Value error, ")
    if detail["type"] == "extra_forbidden":
        return f"{_path(loc)}: unknown key (got {detail['input']!r})"
    if detail["type"] == "missing":
        return f"{_path(loc)}: required field is missing"
    value = detail.get("input")
    shown = f" (got {value!r})" if not isinstance(value, Mapping | tuple) else ""
    return f"{_path(loc)}: {message}{shown}"


def _check_names(config: StudyConfig) -> None:
    """Semantic checks that need the data source: event sets and features exist."""
    from neosx.data import check_options, event_sets, feature_names

    try:
        check_options(config.data)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    sets, features = event_sets(config.data), feature_names(config.data)
    set_refs: list[tuple[str, str | None]] = []
    feature_refs: list[tuple[str, str | None]] = []
    for i, sample in enumerate(config.samples):
        set_refs.append((f"samples[{i}].events", sample.events))
        feature_refs.append((f"samples[{i}].weight", sample.weight))
        for kind in ("histosys", "normsys"):
            for j, variation in enumerate(getattr(sample, kind)):
                where = f"samples[{i}].{kind}[{j}]"
                for field in ("up", "down"):
                    set_refs.append((f"{where}.{field}", getattr(variation, field, None)))
                for field in ("up_weight", "down_weight"):
                    feature_refs.append((f"{where}.{field}", getattr(variation, field)))
    feature_refs += [(f"cuts[{i}].feature", c.feature) for i, c in enumerate(config.cuts)]
    feature_refs += [
        (f"observable.features[{i}]", f) for i, f in enumerate(config.observable.features)
    ]
    for where, name in set_refs:
        if name is not None and name not in sets:
            raise ConfigError(
                f"{where}: unknown event set of source '{config.data.source}', choose one of "
                f"{sorted(sets)} (got {name!r})"
            )
    for where, name in feature_refs:
        if name is not None and name not in features:
            raise ConfigError(
                f"{where}: unknown feature of source '{config.data.source}', choose one of "
                f"{list(features)} (got {name!r})"
            )


def parse_config(raw: Any) -> StudyConfig:
    """Validate a configuration mapping into a :class:`StudyConfig`.

    Args:
        raw: The parsed YAML (a mapping).

    Returns:
        The frozen, validated configuration.

    Raises:
        ConfigError: One line naming the field path and the bad value.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"(top level): expected a mapping of fields, got {type(raw).__name__}")
    try:
        config = StudyConfig.model_validate(dict(raw))
    except ValidationError as error:
        raise ConfigError(_first_error(error)) from None
    _check_names(config)
    return config


def _set(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b[2].c`` in a nested mapping (creating mappings on the way)."""
    node: Any = raw
    parts = key.replace("]", "").replace("[", ".").split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {key}: no list element [{part}]")
            index: Any = int(part)
        elif isinstance(node, dict):
            index = part
            if not last:
                node.setdefault(part, {})
        else:
            raise ConfigError(
                f"--set {key}: cannot set {part!r} inside a {type(node).__name__} value"
            )
        if last:
            node[index] = value
        else:
            node = node[index]


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (the CLI's ``--set``); values are parsed as YAML.

    Example:
        >>> apply_overrides({"training": {"steps": 10}}, ["training.steps=5"])
        {'training': {'steps': 5}}
    """
    result = copy.deepcopy(dict(raw))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        _set(result, key.strip(), yaml.safe_load(text))
    return result


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> tuple[StudyConfig, dict]:
    """Read, override and validate a study configuration file.

    Args:
        path: YAML file.
        overrides: ``key=value`` strings applied before validation.

    Returns:
        ``(config, resolved raw mapping)``; the mapping is what the run folder stores.

    Raises:
        ConfigError: Unreadable file, invalid YAML, or an invalid configuration.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", error)
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping of fields, got {type(raw).__name__}")
    raw = _resolve_paths(apply_overrides(raw, overrides), path.parent)
    return parse_config(raw), raw


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make relative ``data.files.*.path`` entries relative to the config file's folder.

    The resolved (absolute) paths are what a run folder stores, so a run can be resumed or
    evaluated from any working directory.
    """
    files = raw.get("data", {}).get("files") if isinstance(raw.get("data"), Mapping) else None
    if isinstance(files, Mapping):
        for entry in files.values():
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                entry["path"] = str((base / entry["path"]).resolve())
    return raw
