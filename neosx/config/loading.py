"""Reading a study: YAML, ``--set`` overrides, validation, one-line errors."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from neosx.config._base import ConfigError
from neosx.config.regions import FeatureObservable
from neosx.config.study import StudyConfig
from neosx.selection import parse as parse_preselection

__all__ = ["apply_overrides", "load_config", "parse_config"]


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
    if not loc and re.match(r"^[a-z_][\w.\[\]]*: ", message):
        return message  # a check across sections, whose message names the field itself
    return f"{_path(loc)}: {message}{shown}"


def _check_names(config: StudyConfig) -> None:
    """Semantic checks that need the data source: event sets and features exist, and the
    names of samples, regions, systematics and parameters fit together."""
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
    for r, region in enumerate(config.analysis_regions):
        prefix = f"regions[{r}]." if config.regions else ""
        feature_refs += [
            (f"{prefix}cuts[{i}].feature", c.feature) for i, c in enumerate(region.cuts)
        ]
        if isinstance(region.observable, FeatureObservable):
            feature_refs.append((f"{prefix}observable.feature", region.observable.feature))
        if region.preselection is not None:
            try:
                parse_preselection(region.preselection, features)
            except ValueError as error:
                raise ConfigError(f"{prefix}preselection: {error}") from None
    feature_refs += [
        (f"observable.features[{i}]", f) for i, f in enumerate(config.observable.features)
    ]
    for i, shift in enumerate(config.systematics):
        for kind in ("scale", "shift"):
            feature_refs += [(f"systematics[{i}].{kind}.{f}", f) for f in getattr(shift, kind)]
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
    _check_parameters(config)


def _check_parameters(config: StudyConfig) -> None:
    """Systematics name known samples; a parameter name means one thing only."""
    samples = [s.name for s in config.samples]
    kinds: dict[str, str] = {config.poi: "the POI"}
    if config.lumi_uncertainty is not None:
        kinds["lumi"] = "the lumi modifier"

    def claim(name: str, kind: str, where: str) -> None:
        if kinds.setdefault(name, f"a {kind}") != f"a {kind}":
            raise ConfigError(f"{where}: {name!r} is already {kinds[name]}, not a {kind}")

    for poi in config.pois[1:]:
        kinds[poi] = "a POI"
    for i, sample in enumerate(config.samples):
        if sample.normfactor is not None and sample.role == "background":
            claim(sample.normfactor, "normfactor", f"samples[{i}].normfactor")
        for kind in ("histosys", "normsys"):
            for j, variation in enumerate(getattr(sample, kind)):
                claim(variation.name, kind, f"samples[{i}].{kind}[{j}].name")
    for i, shift in enumerate(config.systematics):
        claim(shift.name, shift.modifier, f"systematics[{i}].name")
        for sample in shift.samples or ():
            if sample not in samples:
                raise ConfigError(
                    f"systematics[{i}].samples: unknown sample, choose from {samples} "
                    f"(got {sample!r})"
                )
        affected = shift.samples or samples
        for sample in config.samples:
            variations = (*sample.histosys, *sample.normsys)
            if sample.name in affected and shift.name in {v.name for v in variations}:
                raise ConfigError(
                    f"systematics[{i}].name: sample {sample.name!r} already has a variation "
                    f"named {shift.name!r}"
                )
    _check_objective_pois(config)


def _check_objective_pois(config: StudyConfig) -> None:
    """Objectives name POIs of the study."""
    sections = {"training": config.training.objective, "baseline": config.baseline.objective}
    for section, objectives in sections.items():
        for name, entry in objectives.items():
            for poi in getattr(entry, "pois", ()):
                if poi not in config.pois:
                    raise ConfigError(
                        f"{section}.objective.{name}.poi: not a POI of the study, choose from "
                        f"{list(config.pois)} (got {poi!r})"
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
        try:
            value = _yaml(text)
        except yaml.YAMLError as error:
            problem = _yaml_problem(error)
            raise ConfigError(f"--set {key.strip()}: {problem} (got {text!r})") from None
        _set(result, key.strip(), value)
    return result


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (else the last wins)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeyLoader)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """One line: what is wrong with the YAML and where."""
    mark = getattr(error, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"invalid YAML{where}: {problem}"


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
        raw = _yaml(path.read_bytes().decode("utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        byte = error.object[error.start : error.start + 1].hex()
        line = error.object[: error.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{byte} on line {line})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: {_yaml_problem(error)}") from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping of fields, got {type(raw).__name__}")
    raw = _resolve_paths(apply_overrides(raw, overrides), path.parent)
    return parse_config(raw), raw


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make relative ``data.files.*.path`` entries and the ``base_workspace`` files relative to
    the config file's folder.

    The resolved (absolute) paths are what a run folder stores, so a run can be resumed or
    evaluated from any working directory.
    """
    files = raw.get("data", {}).get("files") if isinstance(raw.get("data"), Mapping) else None
    if isinstance(files, Mapping):
        for entry in files.values():
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                entry["path"] = str((base / entry["path"]).resolve())
    workspace = raw.get("base_workspace")
    if isinstance(workspace, str):
        raw["base_workspace"] = workspace = {"path": workspace}
    if isinstance(workspace, dict):
        if isinstance(workspace.get("path"), str):
            workspace["path"] = str((base / workspace["path"]).resolve())
        patches = workspace.get("patches")
        if isinstance(patches, list):
            workspace["patches"] = [
                str((base / p).resolve()) if isinstance(p, str) else p for p in patches
            ]
    return raw
