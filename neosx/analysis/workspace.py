"""The analysis' pyhf workspace: its structure, and the hard analysis made well-posed.

Every region is a channel; every sample enters every region; one nuisance parameter of a
given name is shared by all regions and samples. Modifier names: the POI on the signal
samples, ``normfactor`` parameters on backgrounds, histosys / normsys by their systematic's
name, ``staterror_<region>`` (MC statistics, lite) and ``mcstat_<region>_<sample>``
(full Barlow-Beeston, pyhf's shapesys).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from neosx.analysis.combination import combine_with_base
from neosx.config import SampleConfig, StudyConfig
from neosx.config._base import POI_UPPER_BOUND
from neosx.histfactory import build_spec

__all__ = [
    "POI_UPPER_BOUND",
    "background_groups",
    "build_workspace",
    "hard_workspace",
    "mc_stat",
    "placeholder",
]


def mc_stat(sample: SampleConfig, region: str) -> tuple[str, str] | None:
    """``(modifier type, name)`` of the sample's MC statistical uncertainty in a region."""
    if sample.staterror is False:
        return None
    if sample.staterror == "full":
        return "shapesys", f"mcstat_{region}_{sample.name}"
    return "staterror", f"staterror_{region}"


def placeholder(
    sample: SampleConfig, region: str, n_bins: int, shifts: Mapping[str, str]
) -> dict[str, Any]:
    """Flat histograms with the sample's structure in a region, to compile the model once.

    Args:
        sample: The sample.
        region: The region's name.
        n_bins: Its bins.
        shifts: ``{name: "histosys" | "normsys"}`` of the feature shifts acting on it.
    """
    nominal = np.full(n_bins, sample.expected / n_bins)
    entry: dict[str, Any] = {"data": nominal}
    varied = {"hi_data": 1.1 * nominal, "lo_data": 0.9 * nominal}
    histosys = {h.name: dict(varied) for h in sample.histosys}
    normsys = {n.name: {"hi": n.hi or 1.1, "lo": n.lo or 0.9} for n in sample.normsys}
    for name, kind in shifts.items():
        if kind == "histosys":
            histosys[name] = dict(varied)
        else:
            normsys[name] = {"hi": 1.1, "lo": 0.9}
    if histosys:
        entry["histosys"] = histosys
    if normsys:
        entry["normsys"] = normsys
    stat = mc_stat(sample, region)
    if stat is not None:
        entry[stat[0]] = {stat[1]: {"sumw2": 0.01 * nominal**2}}
    return entry


def build_workspace(config: StudyConfig, histograms: Mapping[str, Any]) -> dict[str, Any]:
    """The workspace of ``{region: {sample: entry}}`` histograms. Its observations are the
    background-only Asimov counts of the study's POI: the backgrounds, and the signal
    samples of any other POI at their nominal (that POI at 1). With a ``base_workspace``,
    the combination of it and these regions (:mod:`neosx.analysis.combination`)."""
    normfactors: dict[str, list[str]] = {}
    present = {sample for channel in histograms.values() for sample in channel}
    for sample in config.samples:
        if sample.normfactor not in (None, config.poi) and sample.name in present:
            normfactors.setdefault(sample.normfactor, []).append(sample.name)
    # the background-only hypothesis of the study's POI: every other POI at its nominal 1
    off = {
        s.name for s in config.samples
        if s.role == "signal" and s.normfactor in (None, config.poi)
    }
    observations = {
        region: sum(
            (np.asarray(_nominal(entry)) for name, entry in channel.items() if name not in off),
            np.zeros(np.shape(_nominal(next(iter(channel.values()))))),
        )
        for region, channel in histograms.items()
    }
    workspace = build_spec(
        histograms,
        poi_name=config.poi,
        signal_samples=[
            s.name for s in config.samples
            if s.role == "signal" and s.normfactor in (None, config.poi) and s.name in present
        ],
        normfactors=normfactors,
        lumi_uncertainty=config.lumi_uncertainty,
        observations=observations,
    )
    parameters = workspace["measurements"][0]["config"]["parameters"]
    parameters.extend({"name": poi, "bounds": [[0.0, POI_UPPER_BOUND]]} for poi in config.pois)
    return combine_with_base(config, workspace)


def _nominal(entry: Any) -> Any:
    """A sample's nominal histogram (an entry is the histogram or ``{"data": ...}``)."""
    return entry["data"] if isinstance(entry, Mapping) else entry


def background_groups(background: np.ndarray) -> list[list[int]]:
    """Bins grouped so that every group holds background: each bin without background
    (at most 1e-12 of the total) joins the group on its left (leading ones: the first group).

    Raises:
        ValueError: No bin holds background.
    """
    has = background > 1e-12 * max(float(np.sum(background)), 0.0)
    if not has.any():
        raise ValueError("no bin holds background: no workspace can be built")
    groups: list[list[int]] = []
    leading: list[int] = []
    for index, filled in enumerate(has):
        if filled:
            groups.append([*leading, index])
            leading = []
        elif groups:
            groups[-1].append(index)
        else:
            leading.append(index)
    return groups


def hard_workspace(
    config: StudyConfig, yields: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, Any], dict[str, list[list[int]]]]:
    """The pyhf workspace of concrete (hard) yields, made well-posed for pyhf's fits.

    In every region, each bin without background is merged into its nearest
    background-bearing bin (:func:`background_groups`), all of a sample's histograms
    (nominal, histosys, Σw²) summed the same way: a bin without background has no events under
    the background-only hypothesis, and pyhf's fits fail on it. A background sample with no
    selected events in a region is left out of it. Observations are the background-only
    Asimov counts, so the observed CLs of the workspace is the median expected CLs.

    Returns:
        ``(workspace, merged)``: ``merged`` lists, per region where bins were merged, the
        original bins of each bin of the workspace.

    Raises:
        ValueError: A region holds no background (naming it).
    """
    roles = {s.name: s.role for s in config.samples}
    channels, merged = {}, {}
    for region, samples in yields.items():
        channel = {name: jax.tree.map(np.asarray, entry) for name, entry in samples.items()}
        background = np.sum(
            [e["data"] for name, e in channel.items() if roles[name] == "background"], axis=0
        )
        try:
            groups = background_groups(background)
        except ValueError as error:
            raise ValueError(f"region {region!r}: {error}") from None
        merge = np.zeros((len(groups), background.shape[0]))
        for row, group in enumerate(groups):
            merge[row, group] = 1.0

        def merged_bins(a: np.ndarray, merge: np.ndarray = merge) -> np.ndarray:
            return merge @ a if np.ndim(a) == 1 else a

        channels[region] = {
            name: jax.tree.map(merged_bins, entry)
            for name, entry in channel.items()
            if roles[name] == "signal" or np.sum(entry["data"]) > 0
        }
        if len(groups) < background.shape[0]:
            merged[region] = groups
    return build_workspace(config, channels), merged
