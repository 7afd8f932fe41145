"""pyhf specs at the boundary: resolve and validate inputs, and build specs from histograms.

:func:`build_spec` writes the pyhf workspace of the common "signal + backgrounds with
normsys / histosys / staterror / shapesys" case from the nested histogram format of
:mod:`neosx.histfactory.yields`, so a pipeline never writes JSON by hand; the same nested
mapping, with traced arrays, is then the ``yields`` override of
:class:`~neosx.histfactory.HistFactory`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyhf

from neosx.histfactory._checks import check_parameters, check_unique, check_values
from neosx.histfactory.yields import DATA_FIELDS, parse_histograms

__all__ = ["PYHF_ERRORS", "build_spec", "check_spec", "pyhf_boundary", "resolve_source"]

#: pyhf exceptions that mean "pyhf rejects this input".
PYHF_ERRORS = (
    pyhf.exceptions.InvalidSpecification,
    pyhf.exceptions.InvalidModel,
    pyhf.exceptions.InvalidModifier,
    pyhf.exceptions.InvalidNameReuse,
    pyhf.exceptions.InvalidMeasurement,
    pyhf.exceptions.InvalidInterpCode,
    pyhf.exceptions.Unsupported,
)


@contextlib.contextmanager
def pyhf_boundary(what: str) -> Iterator[None]:
    """Run pyhf code, turning its rejections into ``ValueError`` and muting a known warning.

    pyhf 0.7.6 validates with ``jsonschema.RefResolver``, deprecated since jsonschema 4.18;
    that ``DeprecationWarning`` concerns pyhf's internals, not the caller, and is ignored.

    Args:
        what: What is being built, for the error message (e.g. ``"the model spec"``).

    Raises:
        ValueError: If pyhf raises one of its validation exceptions (or asserts).
    """
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore",
                message="jsonschema.RefResolver is deprecated",
                category=DeprecationWarning,
            )
            yield
    except (*PYHF_ERRORS, AssertionError) as error:
        raise ValueError(f"pyhf rejects {what}: {error}") from error


def resolve_source(
    source: Any, *, poi_name: str | None, measurement: str | int | None
) -> tuple[dict[str, Any], str | None, dict[str, Any] | None]:
    """Reduce a workspace, model spec or ``pyhf.Model`` to a validated model spec.

    Args:
        source: A pyhf workspace (``pyhf.Workspace`` or its JSON dict, with
            ``measurements``), a model spec (``{"channels": ..., "parameters": ...}``), or a
            ``pyhf.Model`` (e.g. ``workspace.model(patches=[...])``).
        poi_name: Parameter of interest; ``None`` takes the measurement's POI (workspace),
            the model's (``pyhf.Model``), or ``"mu"`` when a model spec declares it.
        measurement: Measurement name or index of a workspace (default: the first).

    Returns:
        ``(model spec, POI name or None, pyhf modifier_settings or None)``; the spec has
        passed :func:`check_spec`.

    Raises:
        ValueError: If the source is of none of these kinds, or is rejected (see
            :func:`check_spec`).
    """
    settings, is_model_spec = None, False
    is_workspace = isinstance(source, Mapping) and "measurements" in source
    if measurement is not None and not is_workspace:
        raise ValueError("measurement= selects a measurement of a workspace; got no workspace")
    if isinstance(source, pyhf.pdf.Model):
        main = source.main_model
        if source.batch_size is not None or {main.clip_sample_data, main.clip_bin_data} != {None}:
            raise ValueError("a pyhf.Model with batch_size or clipping is not supported")
        spec, poi = dict(source.spec), source.config.poi_name
        settings = dict(source.config.modifier_settings)
    elif is_workspace:
        with pyhf_boundary("the workspace"):
            workspace = pyhf.Workspace(dict(source))
            chosen = workspace.get_measurement(
                measurement_name=measurement if isinstance(measurement, str) else None,
                measurement_index=measurement if isinstance(measurement, int) else None,
            )
        spec = {"channels": workspace["channels"], "parameters": chosen["config"]["parameters"]}
        poi = chosen["config"]["poi"]
        for observation in workspace["observations"]:
            check_values(f"observations['{observation['name']}']", observation["data"])
    elif isinstance(source, Mapping) and "channels" in source:
        spec, poi, is_model_spec = dict(source), "mu", True
    else:
        raise ValueError(
            "expected a pyhf workspace, a model spec {'channels': ...} or a pyhf.Model, "
            f"got {type(source).__name__}"
        )
    check_spec(spec)
    if poi_name is not None:
        poi = poi_name
    elif is_model_spec and not any(
        m["name"] == poi for c in spec["channels"] for s in c["samples"] for m in s["modifiers"]
    ):
        poi = None  # pyhf's default POI "mu", only where the spec declares it
    return spec, poi, settings


#: Parameter settings pyhf needs from the measurement for a lumi modifier.
_LUMI_SETTINGS = frozenset({"auxdata", "inits", "bounds"})


def _length_checked_arrays(modifier: Mapping[str, Any]) -> dict[str, Sequence[float]]:
    """The per-bin arrays of a modifier's data, by their spec key."""
    if modifier["type"] == "histosys":
        return {key: modifier["data"][key] for key in ("hi_data", "lo_data")}
    if modifier["type"] in ("staterror", "shapesys"):
        return {"data": modifier["data"]}
    return {}


def check_spec(spec: Mapping[str, Any]) -> None:
    """Validate a model spec with pyhf's schema, then check every array's length and values.

    pyhf's own length errors do not say where; these name the channel, sample and modifier.
    Values pyhf accepts but cannot evaluate (its likelihood is NaN there, and every fit
    fails) are refused here, as are repeated names pyhf would silently drop.

    Args:
        spec: A pyhf model spec.

    Raises:
        ValueError: If pyhf's schema rejects the spec (the message gives the JSON path); a
            channel or sample name repeats; a sample, histosys, staterror or shapesys array
            does not have the channel's length, or holds a negative or non-finite entry; a
            normsys factor is not > 0; the measurement does not configure a lumi parameter,
            sets bounds with lower > upper or a width (``sigmas``) that is not > 0.
    """
    with pyhf_boundary("the model spec"):
        pyhf.schema.validate(dict(spec), "model.json")
    check_parameters(spec.get("parameters", []))
    settings = {p["name"]: p for p in spec.get("parameters", [])}
    check_unique("the spec's channel", (c["name"] for c in spec["channels"]))
    for channel in spec["channels"]:
        nbins = len(channel["samples"][0]["data"])
        samples = (sample["name"] for sample in channel["samples"])
        check_unique(f"channel '{channel['name']}': sample", samples)
        for sample in channel["samples"]:
            where = f"channel '{channel['name']}', sample '{sample['name']}'"
            if len(sample["data"]) != nbins:
                raise ValueError(
                    f"{where}: data has {len(sample['data'])} bins, but the channel has "
                    f"{nbins} (the length of its first sample)"
                )
            check_values(f"{where}: data", sample["data"])
            for modifier in sample["modifiers"]:
                missing = _LUMI_SETTINGS - set(settings.get(modifier["name"], ()))
                if modifier["type"] == "lumi" and missing:
                    raise ValueError(
                        f"{where}, lumi modifier '{modifier['name']}': the measurement must "
                        f"set its {sorted(missing)} (pyhf has no defaults for lumi)"
                    )
                modifier_where = f"{where}, {modifier['type']} modifier '{modifier['name']}'"
                for key, values in _length_checked_arrays(modifier).items():
                    if len(values) != nbins:
                        raise ValueError(
                            f"{modifier_where}: {key} has {len(values)} bins, expected {nbins}"
                        )
                    check_values(f"{modifier_where}: {key}", values)
                if modifier["type"] == "normsys":
                    for key in ("hi", "lo"):
                        check_values(
                            f"{modifier_where}: {key}", modifier["data"][key], bound="positive"
                        )


def _concrete(path: str, value: Any, shape: tuple[int, ...] | None) -> list[float] | float:
    """``value`` as JSON numbers, checked to have ``shape`` (``None``: any 1-d shape)."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except Exception as error:  # traced values raise jax's TracerArrayConversionError
        raise ValueError(f"{path}: build_spec needs concrete numbers ({error})") from error
    if (array.ndim != 1) if shape is None else (array.shape != shape):
        expected = "a 1-d array" if shape is None else f"shape {shape}"
        raise ValueError(f"{path}: expected {expected}, got shape {array.shape}")
    return array.tolist()


def _modifier_data(path: str, mtype: str, fields: Mapping[str, Any], shape: tuple[int]) -> Any:
    """The spec's ``data`` of one modifier from its parsed histogram fields."""
    if DATA_FIELDS[mtype] is None:
        if "sumw2" in fields:
            return np.sqrt(_concrete(path, fields["sumw2"], shape)).tolist()
        return _concrete(path, fields["uncertainty"], shape)
    missing = set(DATA_FIELDS[mtype]) - set(fields)
    if missing:
        raise ValueError(f"{path}: missing {sorted(missing)}")
    size = () if mtype == "normsys" else shape
    return {key: _concrete(f"{path}['{key}']", fields[key], size) for key in DATA_FIELDS[mtype]}


def build_spec(
    histograms: Mapping[str, Mapping[str, Any]],
    *,
    poi_name: str = "mu",
    signal_samples: Sequence[str] = ("signal",),
    normfactors: Mapping[str, Sequence[str]] | None = None,
    lumi_uncertainty: float | None = None,
    observations: Mapping[str, Any] | None = None,
    measurement_name: str = "measurement",
) -> dict[str, Any]:
    """Build a pyhf workspace from histograms and their systematic variations.

    Args:
        histograms: ``{channel: {sample: nominal | {"data": nominal, "normsys": ...,
            "histosys": ..., "staterror": ..., "shapesys": ...}}}`` in the format of
            :mod:`neosx.histfactory.yields`; every sample needs ``data`` (n_bins,), every
            normsys both ``hi`` and ``lo``, every histosys both ``hi_data`` and ``lo_data``.
        poi_name: Name of the parameter of interest, a normfactor on ``signal_samples``.
        signal_samples: Samples scaled by the POI (each must appear in some channel).
        normfactors: Extra free normalisations, ``{parameter: [samples]}``.
        lumi_uncertainty: Relative luminosity uncertainty; if given, a ``lumi`` modifier
            (Gaussian, auxdata 1, bounds ``1 +- 5 sigma``) scales every sample.
        observations: Observed counts ``{channel: (n_bins,)}``; default the summed nominal
            of the non-signal samples (the background-only Asimov counts).
        measurement_name: Name of the workspace's measurement.

    Returns:
        A pyhf workspace dict, validated by pyhf's schema (channels and samples in the
        given order).

    Raises:
        ValueError: If the histograms are malformed (wrong keys or shapes, traced values),
            a signal or normfactor sample is unknown, or pyhf rejects the result.

    Example:
        >>> ws = build_spec(
        ...     {"SR": {"signal": [5.0, 2.0],
        ...             "bkg": {"data": [50.0, 40.0],
        ...                     "normsys": {"bkg_xsec": {"hi": 1.1, "lo": 0.9}},
        ...                     "staterror": {"stat_SR": [2.0, 1.5]}}}},
        ...     lumi_uncertainty=0.02)
        >>> sorted(m["name"] for m in ws["channels"][0]["samples"][1]["modifiers"])
        ['bkg_xsec', 'lumi', 'stat_SR']
    """
    parsed = parse_histograms(histograms, label="histograms")
    scaled_by = {sample: [poi_name] for sample in signal_samples}
    for parameter, samples in (normfactors or {}).items():
        for sample in samples:
            scaled_by.setdefault(sample, []).append(parameter)
    known = {sample for _, sample in parsed}
    unknown = sorted(set(scaled_by) - known)
    if unknown:
        raise ValueError(f"samples {unknown} are scaled by normfactors but have no histograms")

    channels: dict[str, list[dict[str, Any]]] = {}
    shapes: dict[str, tuple[int]] = {}
    for (channel, sample), entry in parsed.items():
        path = f"histograms['{channel}']['{sample}']"
        if entry.data is None:
            raise ValueError(f"{path}: the nominal 'data' is required")
        data = _concrete(path, entry.data, shapes.get(channel))
        shape = shapes.setdefault(channel, (len(data),))
        modifiers = [
            {"name": name, "type": "normfactor", "data": None} for name in scaled_by.get(sample, [])
        ]
        if lumi_uncertainty is not None:
            modifiers.append({"name": "lumi", "type": "lumi", "data": None})
        for (mtype, name), fields in entry.modifiers.items():
            modifiers.append(
                {
                    "name": name,
                    "type": mtype,
                    "data": _modifier_data(f"{path}['{mtype}']['{name}']", mtype, fields, shape),
                }
            )
        channels.setdefault(channel, []).append(
            {"name": sample, "data": data, "modifiers": modifiers}
        )

    if observations is None:  # (+ zeros: a channel may hold signal samples only)
        observations = {
            channel: np.sum([s["data"] for s in samples if s["name"] not in signal_samples], axis=0)
            + np.zeros(shapes[channel])
            for channel, samples in channels.items()
        }
    missing = sorted(set(channels) - set(observations))
    if missing:
        raise ValueError(f"observations: no counts for channels {missing}")
    parameters = []
    if lumi_uncertainty is not None:
        sigma = float(lumi_uncertainty)
        parameters.append(
            {
                "name": "lumi",
                "auxdata": [1.0],
                "sigmas": [sigma],
                "inits": [1.0],
                "bounds": [[max(0.0, 1.0 - 5.0 * sigma), 1.0 + 5.0 * sigma]],
            }
        )
    workspace = {
        "channels": [{"name": name, "samples": samples} for name, samples in channels.items()],
        "observations": [
            {
                "name": channel,
                "data": _concrete(
                    f"observations['{channel}']", observations[channel], shapes[channel]
                ),
            }
            for channel in channels
        ],
        "measurements": [
            {"name": measurement_name, "config": {"poi": poi_name, "parameters": parameters}}
        ],
        "version": "1.0.0",
    }
    with pyhf_boundary("the built workspace"):
        pyhf.schema.validate(workspace, "workspace.json")
    return workspace
