"""A published likelihood as the study's base: its channels and the study's regions, one model.

The base workspace (patched, with the replaced channels removed) and the study's workspace
are joined by pyhf's ``Workspace.combine``: channels and observations side by side, one
measurement, one parameter per name. The base's parameter settings (bounds, inits, the
luminosity's width) hold for the parameters it defines; the study's for the rest. The base
channels keep their yields (the study overrides only its own regions' yields in training),
and their observations are the background-only expectation of the study's POI at the base's
nominal parameters (``data: asimov``, like the study's regions) or the published counts
(``data: observed``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import jsonpatch
import numpy as np
import pyhf

from neosx.config import BaseWorkspaceConfig, ConfigError, StudyConfig

__all__ = ["combine_with_base", "load_base"]

PARAMETER_KINDS = {
    "normsys": "a constrained nuisance parameter (normsys / histosys)",
    "histosys": "a constrained nuisance parameter (normsys / histosys)",
    "normfactor": "a free normalisation (normfactor)",
    "lumi": "the luminosity (lumi)",
    "staterror": "per-bin MC statistics (staterror)",
    "shapesys": "per-bin Poisson-constrained factors (shapesys)",
    "shapefactor": "per-bin free factors (shapefactor)",
}
"""What a modifier type makes its parameter: modifiers of one name share a parameter, so their
types must make the same kind (a normsys and a histosys of one name are one systematic)."""


def _read_json(path: str, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except OSError as error:
        raise ConfigError(f"base_workspace.{what}: cannot read {path}: {error.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"base_workspace.{what}: {path} is not JSON ({error})") from None


@functools.lru_cache(maxsize=8)
def _loaded(path: str, patches: tuple[str, ...], measurement: str | None) -> str:
    """The patched base workspace with one measurement, as JSON text (cached: a study builds
    its analysis more than once)."""
    spec = _read_json(path, "path")
    for index, patch_path in enumerate(patches):
        patch = _read_json(patch_path, f"patches[{index}]")
        try:
            spec = jsonpatch.apply_patch(spec, patch)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as error:
            raise ConfigError(
                f"base_workspace.patches[{index}]: {patch_path} does not apply to "
                f"{path}: {error}"
            ) from None
    try:
        workspace = pyhf.Workspace(spec)
    except pyhf.exceptions.InvalidSpecification as error:
        reason = " ".join(str(error).split())[:300]
        raise ConfigError(
            f"base_workspace.path: {path} is not a pyhf workspace: {reason}"
        ) from None
    names = [m["name"] for m in workspace["measurements"]]
    chosen = names[0] if measurement is None else measurement
    if chosen not in names:
        raise ConfigError(
            f"base_workspace.measurement: {measurement!r} is not in {path}; it has {names}"
        )
    spec = dict(workspace)
    spec["measurements"] = [m for m in workspace["measurements"] if m["name"] == chosen]
    return json.dumps(spec)


def load_base(config: BaseWorkspaceConfig) -> dict[str, Any]:
    """The base workspace: read, patched, its measurement chosen, the replaced channels removed.

    Raises:
        ConfigError: An unreadable or invalid file, a patch that does not apply, an unknown
            measurement, a replaced channel that the base does not have.
    """
    spec = json.loads(_loaded(config.path, tuple(config.patches), config.measurement))
    channels = [c["name"] for c in spec["channels"]]
    unknown = [c for c in config.replace if c not in channels]
    if unknown:
        raise ConfigError(
            f"base_workspace.replace: channels {unknown} are not in {config.path}; it has "
            f"{channels}"
        )
    if config.replace:
        spec["channels"] = [c for c in spec["channels"] if c["name"] not in config.replace]
        spec["observations"] = [o for o in spec["observations"] if o["name"] not in config.replace]
    return spec


def _modifier_kinds(spec: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """``{modifier name: (kind, where)}`` of a workspace's modifiers."""
    kinds = {}
    for channel in spec["channels"]:
        for sample in channel["samples"]:
            for modifier in sample["modifiers"]:
                where = f"channel {channel['name']!r}, sample {sample['name']!r}"
                kinds.setdefault(modifier["name"], (PARAMETER_KINDS[modifier["type"]], where))
    return kinds


def _check_compatible(config: StudyConfig, base: Mapping[str, Any], study: Mapping[str, Any]):
    """Channel names, the POI and the parameters shared by name, with clear messages."""
    path = config.base_workspace.path
    channels = {c["name"] for c in base["channels"]}
    for region in config.analysis_regions:
        if region.name in channels:
            raise ConfigError(
                f"regions: region {region.name!r} is also a channel of base_workspace {path} "
                f"(rename the region, or list the channel in base_workspace.replace)"
            )
    base_kinds, study_kinds = _modifier_kinds(base), _modifier_kinds(study)
    normfactors = sorted(n for n, (kind, _) in base_kinds.items() if "normfactor" in kind)
    if config.poi not in normfactors:
        raise ConfigError(
            f"poi: {config.poi!r} is not a parameter of base_workspace {path} (its "
            f"normalisations: {normfactors}); name the study's POI after the base's"
        )
    for name, (kind, where) in study_kinds.items():
        if name in base_kinds and base_kinds[name][0] != kind:
            raise ConfigError(
                f"modifier {name!r}: {kind} in the study ({where}) but "
                f"{base_kinds[name][0]} in base_workspace {path} ({base_kinds[name][1]})"
            )
    settings = {p["name"]: p for m in base["measurements"] for p in m["config"]["parameters"]}
    lumi = settings.get("lumi", {}).get("sigmas")
    if config.lumi_uncertainty is not None and lumi and not np.isclose(
        lumi[0], config.lumi_uncertainty, rtol=1e-9
    ):
        raise ConfigError(
            f"lumi_uncertainty: {config.lumi_uncertainty} differs from the luminosity width "
            f"{lumi[0]} of base_workspace {path} (one lumi parameter is shared)"
        )


def _base_asimov(base: Mapping[str, Any], poi: str, pois: Sequence[str]) -> list[dict[str, Any]]:
    """The base channels' background-only expectation of ``poi`` at the nominal parameters
    (every other parameter at its init), as observations."""
    from neosx.evaluate import pyhf_numpy

    with pyhf_numpy():
        model = pyhf.Workspace(dict(base)).model(poi_name=poi)
        pars = np.asarray(model.config.suggested_init(), float)
        pars[model.config.par_slice(poi)] = 0.0
        for other in pois:
            if other != poi and other in model.config.par_map:
                pars[model.config.par_slice(other)] = 1.0
        expected = np.asarray(model.expected_actualdata(pars), float)
        return [
            {"name": name, "data": expected[model.config.channel_slices[name]].tolist()}
            for name in model.config.channels
        ]


def combine_with_base(config: StudyConfig, study: Mapping[str, Any]) -> dict[str, Any]:
    """The combined workspace of the study's (``build_workspace``) and its base's channels.

    Args:
        config: The study (with ``base_workspace``; returns ``study`` unchanged without).
        study: The study's own workspace.

    Raises:
        ConfigError: A region named like a base channel, a POI the base does not have, a
            parameter of one name with incompatible types or luminosity widths (besides the
            errors of :func:`load_base`).
    """
    if config.base_workspace is None:
        return dict(study)
    base = load_base(config.base_workspace)
    _check_compatible(config, base, study)
    if config.base_workspace.data == "asimov":
        base["observations"] = _base_asimov(base, config.poi, config.pois)
    measurement = base["measurements"][0]
    defined = {p["name"] for p in measurement["config"]["parameters"]}
    own = dict(study)
    own["measurements"] = [{
        "name": measurement["name"],
        "config": {
            "poi": measurement["config"]["poi"],
            "parameters": [
                p for p in study["measurements"][0]["config"]["parameters"]
                if p["name"] not in defined
            ],
        },
    }]
    own["version"] = base.get("version", own.get("version"))
    try:
        combined = pyhf.Workspace.combine(pyhf.Workspace(base), pyhf.Workspace(own), join="outer")
    except pyhf.exceptions.InvalidWorkspaceOperation as error:
        raise ConfigError(f"base_workspace: cannot combine with {config.base_workspace.path}: "
                          f"{' '.join(str(error).split())}") from None
    spec = dict(combined)
    spec["measurements"][0]["config"]["poi"] = config.poi
    return json.loads(json.dumps(spec))

