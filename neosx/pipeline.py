"""The analysis as one function: soft cuts -> observable -> histograms -> yields.

:class:`Analysis` is built once from a :class:`~neosx.config.StudyConfig`. Training and
evaluation call the same :meth:`Analysis.outputs`; ``hard=True`` swaps each relaxation for its
exact counterpart (step cuts, ``numpy.histogram``-equal counts), so the number reported
after training is the real cut-and-count analysis.

A sample's events are weighted so that the unselected sample sums to its configured expected
yield: ``w_i = expected * r_i / sum_j r_j`` over the events of its event set in the batch,
with ``r`` the sample's weight feature (or 1), times each event's selection efficiency.
Systematic variations come from alternative event sets or from per-event weight factors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from neosx.config import NormsysConfig, SampleConfig, StudyConfig
from neosx.data import feature_names, load_events
from neosx.histfactory import HistFactory, build_spec
from neosx.observables import Observable, make_observable
from neosx.relax import cut, hist, hist_sumw2

__all__ = ["POI_UPPER_BOUND", "Analysis", "Knobs", "Outputs", "Params"]

Params = dict[str, Any]
Batch = Mapping[str, jax.Array]

POI_UPPER_BOUND = 100.0
"""Upper bound of the signal strength in the built models (pyhf's default 10 is too tight
for the upper limit of a weak analysis before training)."""


_INIT_STREAM = 2**31 - 1
"""Random stream of the initial parameters (a fold-in of the study seed)."""


class Knobs(NamedTuple):
    """The relaxation's sharpness at one training step (annealed by schedules).

    Attributes:
        bandwidth: Histogram kernel width (units of the observable); a Python float keeps
            the fast binned-KDE path, a traced value uses the exact dense path.
        slopes: (n_cuts,) logistic slopes of the cuts (1 / units of each feature).
    """

    bandwidth: float | jax.Array
    slopes: tuple[float | jax.Array, ...]


class Outputs(NamedTuple):
    """What one pass of the analysis produces.

    Attributes:
        yields: ``{channel: {sample: {"data", "histosys", "normsys", "staterror"}}}``: the
            :class:`~neosx.histfactory.HistFactory` yields override (expected events).
        logits: ``{sample: (N,)}`` pre-sigmoid classifier outputs of each sample's nominal
            events (``None`` if the observable is not a classifier).
        selection: ``{sample: (N,)}`` selection efficiency in [0, 1] of the nominal events.
    """

    yields: dict[str, dict[str, Any]]
    logits: dict[str, jax.Array] | None
    selection: dict[str, jax.Array]


def _staterror_name(config: StudyConfig) -> str:
    """The channel's staterror parameter (one per channel, shared by its samples, as pyhf)."""
    return f"staterror_{config.channel}"


def _placeholder(sample: SampleConfig, n_bins: int, staterror: str) -> dict[str, Any]:
    """Flat histograms with the sample's structure, to compile the model once."""
    nominal = np.full(n_bins, sample.expected / n_bins)
    entry: dict[str, Any] = {"data": nominal}
    if sample.histosys:
        entry["histosys"] = {
            h.name: {"hi_data": 1.1 * nominal, "lo_data": 0.9 * nominal} for h in sample.histosys
        }
    if sample.normsys:
        entry["normsys"] = {n.name: {"hi": n.hi or 1.1, "lo": n.lo or 0.9} for n in sample.normsys}
    if sample.staterror:
        entry["staterror"] = {staterror: 0.1 * nominal}
    return entry


def background_groups(background: np.ndarray) -> list[list[int]]:
    """Bins grouped so that every group holds background: each bin without background
    (at most 1e-12 of the total) joins the group on its left (leading ones: the first group).

    Raises:
        ValueError: No bin holds background.
    """
    has = background > 1e-12 * max(float(np.sum(background)), 0.0)
    if not has.any():
        raise ValueError("no bin of the hard analysis holds background: no workspace can be built")
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


@dataclass(frozen=True)
class Analysis:
    """A configured analysis: ``outputs(params, batch, hard=...)`` and its likelihood.

    Attributes:
        config: The validated study.
        observable: The histogrammed variable (MLP or feature).
        features: The data source's feature names (column order of the event arrays).
        model: The HistFactory likelihood, compiled once; the yields are overridden per call.
        cut_scales: (n_cuts,) standard deviation of each cut's feature in the training
            events: thresholds are trained in these units, so one optimiser step moves a
            cut on MET in GeV as far, relatively, as a cut on a score in [0, 1].
    """

    config: StudyConfig
    observable: Observable
    features: tuple[str, ...]
    model: HistFactory
    cut_scales: tuple[float, ...]

    @classmethod
    def from_config(
        cls, config: StudyConfig, training_events: Mapping[str, np.ndarray] | None = None
    ) -> Analysis:
        """Build the observable and compile the likelihood's structure.

        Args:
            config: The validated study.
            training_events: ``{event_set: (N, F)}`` training events, which fix the
                observable's input standardisation and the cut scales; default: loaded
                (regenerated or re-read, deterministic in the seed).
        """
        features = feature_names(config.data)
        if training_events is None:
            training_events = load_events(config.data, "train", config.seed)
        training = np.concatenate(list(training_events.values()))
        histograms = {
            sample.name: _placeholder(sample, config.histogram.bins, _staterror_name(config))
            for sample in config.samples
        }
        model = HistFactory(cls._workspace(config, histograms))
        observable = make_observable(config.observable, features, training)
        spreads = [float(np.std(training[:, features.index(c.feature)])) for c in config.cuts]
        scales = tuple(spread if spread > 0 else 1.0 for spread in spreads)
        return cls(config, observable, features, model, scales)

    @staticmethod
    def _workspace(config: StudyConfig, histograms: Mapping[str, Any]) -> dict[str, Any]:
        workspace = build_spec(
            {config.channel: histograms},
            poi_name=config.poi,
            signal_samples=[s.name for s in config.samples if s.role == "signal"],
            lumi_uncertainty=config.lumi_uncertainty,
        )
        parameters = workspace["measurements"][0]["config"]["parameters"]
        parameters.append({"name": config.poi, "bounds": [[0.0, POI_UPPER_BOUND]]})
        return workspace

    def workspace(
        self, yields: Mapping[str, Mapping[str, Any]], *, report: bool = False
    ) -> dict[str, Any] | tuple[dict[str, Any], list[list[int]]]:
        """The pyhf workspace of concrete yields (as :meth:`outputs` returns them, hard).

        Every bin without background is merged into its nearest background-bearing bin on
        the left (the first ones: on the right); all of a sample's histograms (nominal,
        histosys, Σw²) are summed the same way. A bin without background has no events
        under the background-only hypothesis, and pyhf's fits fail on it (or, if no
        sample fills it, its histosys interpolation may predict negative rates).
        Observations are the background-only Asimov counts (the summed background nominal),
        so the observed CLs of the workspace is the median expected CLs.

        Args:
            yields: The hard yields.
            report: Also return the merged bins.

        Returns:
            The workspace; with ``report``, ``(workspace, groups)`` where ``groups`` lists
            the original bins of each merged bin, empty if no bin was merged.

        Raises:
            ValueError: No bin holds background.
        """
        channel = {
            sample: jax.tree.map(np.asarray, entry)
            for sample, entry in yields[self.config.channel].items()
        }
        roles = {s.name: s.role for s in self.config.samples}
        background = np.sum(
            [entry["data"] for name, entry in channel.items() if roles[name] == "background"],
            axis=0,
        )
        groups = background_groups(background)
        merge = np.zeros((len(groups), background.shape[0]))
        for row, group in enumerate(groups):
            merge[row, group] = 1.0
        merged = jax.tree.map(lambda a: merge @ a if np.ndim(a) == 1 else a, channel)
        workspace = self._workspace(self.config, merged)
        if not report:
            return workspace
        return workspace, groups if len(groups) < background.shape[0] else []

    # -- parameters ------------------------------------------------------------------------

    def init_params(self, key: jax.Array) -> Params:
        """Initial parameters: observable weights, cut thresholds, edge logits.

        Returns:
            ``{"observable": pytree, "cuts": (n_cuts,), "edges": (n_bins,)}``; ``"cuts"``
            are the thresholds in units of :attr:`cut_scales` (see :meth:`thresholds`),
            ``"edges"`` only with trainable edges (zero logits: uniform bins).
        """
        inits = [c.init / scale for c, scale in zip(self.config.cuts, self.cut_scales, strict=True)]
        params: Params = {
            "observable": self.observable.init(key),
            "cuts": jnp.asarray(inits, jnp.float64),
        }
        if self.config.histogram.trainable_edges:
            params["edges"] = jnp.zeros(self.config.histogram.bins, jnp.float64)
        return params

    def initial_params(self, seed: int | None = None) -> Params:
        """The untrained parameters that training starts from (default: the study seed)."""
        seed = self.config.seed if seed is None else seed
        return self.init_params(jax.random.fold_in(jax.random.PRNGKey(seed), _INIT_STREAM))

    def edges(self, params: Params) -> jax.Array | np.ndarray:
        """(n_bins + 1,) bin edges: fixed uniform, or from softmax-ordered trainable widths.

        With trainable edges the widths are ``(high - low) * softmax(logits)``, so the
        edges stay ordered and the outer ones stay at the configured range.
        """
        low, high = self.config.histogram.range
        if "edges" not in params:
            return np.linspace(low, high, self.config.histogram.bins + 1)
        widths = jax.nn.softmax(params["edges"]) * (high - low)
        inner = low + jnp.cumsum(widths[:-1])
        return jnp.concatenate([jnp.array([low]), inner, jnp.array([high])])

    def thresholds(self, params: Params) -> jax.Array:
        """(n_cuts,) cut thresholds in the features' units; ``trainable: false`` ones are fixed.
        """
        frozen = np.array([not c.trainable for c in self.config.cuts], dtype=bool)
        cuts = jnp.where(frozen, jax.lax.stop_gradient(params["cuts"]), params["cuts"])
        return cuts * jnp.asarray(self.cut_scales, jnp.float64)

    def knobs(self) -> Knobs:
        """The relaxation's initial sharpness (schedules at step 0)."""
        return Knobs(
            self.config.histogram.bandwidth.init, tuple(c.slope.init for c in self.config.cuts)
        )

    # -- the analysis ----------------------------------------------------------------------

    def _column(self, events: jax.Array, feature: str | None) -> jax.Array:
        """A feature column of the events (weights, weight factors); ``None``: ones."""
        if feature is None:
            return jnp.ones(events.shape[0], events.dtype)
        return events[:, self.features.index(feature)]

    def _selection(
        self, params: Params, events: jax.Array, knobs: Knobs, hard: bool
    ) -> jax.Array:
        efficiency = jnp.ones(events.shape[0], events.dtype)
        for i, (config, threshold) in enumerate(
            zip(self.config.cuts, self.thresholds(params), strict=True)
        ):
            column = events[:, self.features.index(config.feature)]
            efficiency = efficiency * cut(
                column, threshold, slope=knobs.slopes[i], keep=config.keep, hard=hard
            )
        return efficiency

    def outputs(
        self, params: Params, batch: Batch, *, hard: bool = False, knobs: Knobs | None = None
    ) -> Outputs:
        """Run the analysis on a batch of events.

        Args:
            params: From :meth:`init_params` (or training).
            batch: ``{event_set: (N, F)}`` feature arrays (columns: :attr:`features`).
            hard: Exact cuts and histograms (the real analysis) instead of relaxations.
            knobs: Bandwidth and cut slopes; default :meth:`knobs` (the schedules' start).

        Returns:
            :class:`Outputs` (yields in expected events).
        """
        knobs = self.knobs() if knobs is None else knobs
        config = self.config.histogram
        edges = self.edges(params)
        selected: dict[str, tuple[jax.Array, jax.Array]] = {}

        def weights(sample: SampleConfig, event_set: str) -> tuple[jax.Array, jax.Array]:
            """Observable values and event weights: the set sums to ``expected`` unselected."""
            if event_set not in selected:
                events = batch[event_set]
                selected[event_set] = (
                    self.observable.apply(params["observable"], events),
                    self._selection(params, events, knobs, hard),
                )
            values, efficiency = selected[event_set]
            raw = self._column(batch[event_set], sample.weight)
            return values, efficiency * raw * (sample.expected / jnp.sum(raw))

        def histogram(
            sample: SampleConfig, event_set: str, factor: str | None = None, sumw2: bool = False
        ) -> jax.Array:
            values, w = weights(sample, event_set)
            w = w * self._column(batch[event_set], factor)
            fill = hist_sumw2 if sumw2 else hist
            return fill(
                values, edges, bandwidth=knobs.bandwidth, weights=w,
                method=config.method, overflow=config.overflow, hard=hard,
            )

        def normsys(sample: SampleConfig, variation: NormsysConfig) -> dict[str, Any]:
            if variation.hi is not None:
                return {"hi": variation.hi, "lo": variation.lo}
            events = batch[sample.events]
            _, w = weights(sample, sample.events)
            total = jnp.sum(w)
            safe = jnp.where(total > 0, total, 1.0)
            return {
                side: jnp.where(total > 0, jnp.sum(w * self._column(events, column)) / safe, 1.0)
                for side, column in (("hi", variation.up_weight), ("lo", variation.down_weight))
            }

        yields: dict[str, Any] = {}
        for sample in self.config.samples:
            entry: dict[str, Any] = {"data": histogram(sample, sample.events)}
            if sample.histosys:
                entry["histosys"] = {
                    h.name: {  # alternative event sets, or the nominal ones reweighted
                        "hi_data": histogram(sample, h.up or sample.events, h.up_weight),
                        "lo_data": histogram(sample, h.down or sample.events, h.down_weight),
                    }
                    for h in sample.histosys
                }
            if sample.normsys:
                entry["normsys"] = {n.name: normsys(sample, n) for n in sample.normsys}
            if sample.staterror:
                entry["staterror"] = {
                    _staterror_name(self.config): {
                        "sumw2": histogram(sample, sample.events, sumw2=True)
                    }
                }
            yields[sample.name] = entry

        logit = self.observable.logit
        logits = None if logit is None else {
            s.name: logit(params["observable"], batch[s.events]) for s in self.config.samples
        }
        selection = {s.name: selected[s.events][1] for s in self.config.samples}
        return Outputs({self.config.channel: yields}, logits, selection)

    def __call__(
        self, params: Params, batch: Batch, hard: bool = False, knobs: Knobs | None = None
    ) -> dict[str, dict[str, Any]]:
        """The yields override of :attr:`model` (see :meth:`outputs`)."""
        return self.outputs(params, batch, hard=hard, knobs=knobs).yields
