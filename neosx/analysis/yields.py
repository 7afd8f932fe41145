"""The analysis as one function: events -> systematics -> regions -> histograms -> yields.

:class:`Analysis` is built once from a :class:`~neosx.config.StudyConfig`. Training and
evaluation call the same :meth:`Analysis.outputs`; ``hard=True`` swaps each relaxation for its
exact counterpart (step cuts, ``numpy.histogram``-equal counts), so the number reported
after training is the real analysis.

A sample's events are weighted so that the unselected sample sums to its configured expected
yield: ``w_i = expected * r_i / sum_j r_j`` over the events of its event set in the batch,
with ``r`` the sample's weight feature (or 1), times each event's selection efficiency in
the region. The observable (e.g. the network) runs once per variant of an event set
(:mod:`neosx.analysis.systematics`), shared by every region.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from neosx.analysis.regions import Region, class_weights, make_region
from neosx.analysis.systematics import Shift, Variant, affected, make_shifts
from neosx.analysis.workspace import build_workspace, hard_workspace, mc_stat, placeholder
from neosx.config import ConfigError, NormsysConfig, SampleConfig, StudyConfig
from neosx.data import feature_names, load_events
from neosx.histfactory import HistFactory
from neosx.observables import Observable, make_observable
from neosx.relax import hist, hist_sumw2

__all__ = ["Analysis", "Knobs", "Outputs", "Params"]

Params = dict[str, Any]
Batch = Mapping[str, jax.Array]

_INIT_STREAM = 2**31 - 1
"""Random stream of the initial parameters (a fold-in of the study seed)."""


class Knobs(NamedTuple):
    """The relaxation's sharpness at one training step (annealed by schedules).

    Attributes:
        bandwidths: Per region, the histogram kernel width (units of its observable): a
            Python float (a constant schedule) or a traced value (annealed); both take an
            O(N + B) path of :func:`neosx.hist` on large batches.
        slopes: Per region, the (n_cuts,) logistic slopes of its cuts (1 / feature units).
        temperature: The softmax temperature of a network's class weights.
    """

    bandwidths: tuple[float | jax.Array, ...]
    slopes: tuple[tuple[float | jax.Array, ...], ...]
    temperature: float | jax.Array = 1.0


class Outputs(NamedTuple):
    """What one pass of the analysis produces.

    Attributes:
        yields: ``{region: {sample: {"data", "histosys", "normsys", "staterror" |
            "shapesys"}}}``: the :class:`~neosx.histfactory.HistFactory` yields override.
        logits: ``{sample: (N,)}`` pre-sigmoid classifier outputs of each sample's nominal
            events, (N, K) pre-softmax ones with classes (``None`` if the observable is not
            a classifier).
        classified: ``{sample: (N,)}`` 1 for the nominal events that pass the preselection
            of a region histogramming the score (those a classifier loss trains on), else 0.
    """

    yields: dict[str, dict[str, Any]]
    logits: dict[str, jax.Array] | None
    classified: dict[str, jax.Array]


@dataclass(frozen=True)
class Analysis:
    """A configured analysis: ``outputs(params, batch, hard=...)`` and its likelihood.

    Attributes:
        config: The validated study.
        observable: The study's observable (an MLP or a feature), shared by the regions.
        features: The data source's feature names (column order of the event arrays).
        regions: The regions (channels), in the study's order.
        members: ``{region: samples}``: the samples with training events that pass the
            region's preselection, which enter its channel (in training and evaluation).
        shifts: The feature-shift systematics, by name.
        model: The HistFactory likelihood, compiled once; the yields are overridden per call.
            Its POI is the study's ``poi``.
        models: The same likelihood with each of the study's POIs as its POI (the other
            POIs free), by name (``models[config.poi]`` is :attr:`model`).
    """

    config: StudyConfig
    observable: Observable
    features: tuple[str, ...]
    regions: tuple[Region, ...]
    members: dict[str, tuple[str, ...]]
    shifts: dict[str, Shift]
    model: HistFactory
    models: dict[str, HistFactory]

    @classmethod
    def from_config(
        cls, config: StudyConfig, training_events: Mapping[str, np.ndarray] | None = None
    ) -> Analysis:
        """Build the observable and the regions, compile the likelihood's structure.

        Args:
            config: The validated study.
            training_events: ``{event_set: (N, F)}`` training events, which fix the
                observable's input standardisation and the cut scales; default: loaded
                (regenerated or re-read, deterministic in the seed).

        Raises:
            ConfigError: A sample without events in every region, a region without
                events, or a sample whose weights do not sum to a positive number.
        """
        features = feature_names(config.data)
        if training_events is None:
            training_events = load_events(config.data, "train", config.seed)
        training = np.concatenate(list(training_events.values()))
        classes = tuple(config.observable.classes or ())
        regions = tuple(
            make_region(r, features, training, classes) for r in config.analysis_regions
        )
        shifts = make_shifts(config.systematics, features)
        members = _members(config, regions, training_events, features)
        histograms = {
            region.name: {
                sample.name: placeholder(
                    sample, region.name, region.n_bins,
                    {s.config.name: s.config.modifier for s in affected(shifts, sample)},
                )
                for sample in config.samples
                if sample.name in members[region.name]
            }
            for region in regions
        }
        workspace = build_workspace(config, histograms)
        models = {poi: HistFactory(workspace, poi_name=poi) for poi in config.pois}
        observable = make_observable(config.observable, features, training)
        return cls(
            config, observable, features, regions, members, shifts, models[config.poi], models
        )

    def workspace(
        self, yields: Mapping[str, Mapping[str, Any]]
    ) -> tuple[dict[str, Any], dict[str, list[list[int]]]]:
        """The pyhf workspace of hard yields and the bins merged for pyhf, per region
        (see :func:`neosx.analysis.workspace.hard_workspace`)."""
        return hard_workspace(self.config, yields)

    # -- parameters ------------------------------------------------------------------------

    def init_params(self, key: jax.Array) -> Params:
        """Initial parameters.

        Returns:
            ``{"observable": pytree, "regions": {region: {"cuts", "edges"}}}`` (see
            :meth:`Region.init_params <neosx.analysis.regions.Region.init_params>`).
        """
        return {
            "observable": self.observable.init(key),
            "regions": {region.name: region.init_params() for region in self.regions},
        }

    def initial_params(self, seed: int | None = None) -> Params:
        """The untrained parameters that training starts from (default: the study seed)."""
        seed = self.config.seed if seed is None else seed
        return self.init_params(jax.random.fold_in(jax.random.PRNGKey(seed), _INIT_STREAM))

    def knobs(self) -> Knobs:
        """The relaxation's initial sharpness (schedules at step 0)."""
        return Knobs(
            tuple(r.config.histogram.bandwidth.init for r in self.regions),
            tuple(tuple(c.slope.init for c in r.config.cuts) for r in self.regions),
            self.config.observable.temperature.init,
        )

    # -- the analysis ----------------------------------------------------------------------

    def outputs(
        self, params: Params, batch: Batch, *, hard: bool = False, knobs: Knobs | None = None
    ) -> Outputs:
        """Run the analysis on a batch of events.

        Args:
            params: From :meth:`init_params` (or training).
            batch: ``{event_set: (N, F)}`` feature arrays (columns: :attr:`features`).
            hard: Exact cuts and histograms (the real analysis) instead of relaxations.
            knobs: Bandwidths and cut slopes; default :meth:`knobs` (the schedules' start).

        Returns:
            :class:`Outputs` (yields in expected events).
        """
        knobs = self.knobs() if knobs is None else knobs
        passes = _Passes(self, params, batch, knobs, hard)
        yields = {
            region.name: {
                s.name: passes.sample(i, s)
                for s in self.config.samples
                if s.name in self.members[region.name]
            }
            for i, region in enumerate(self.regions)
        }
        logit = self.observable.logit
        logits = None if logit is None else {
            s.name: logit(params["observable"], batch[s.events]) for s in self.config.samples
        }
        classified = {s.name: self._classified(batch[s.events]) for s in self.config.samples}
        return Outputs(yields, logits, classified)

    def _classified(self, events: jax.Array) -> jax.Array:
        """(N,) 1 where an event passes the preselection of some region of the score."""
        masks = []
        for region in self.regions:
            if not region.uses_score:
                continue
            if region.preselection is None:
                return jnp.ones(events.shape[0], events.dtype)
            columns = {f: events[:, self.features.index(f)] for f in region.preselection.features}
            masks.append(jnp.broadcast_to(region.preselection.mask(columns), events.shape[:1]))
        if not masks:
            return jnp.ones(events.shape[0], events.dtype)
        return jnp.any(jnp.stack(masks), axis=0).astype(events.dtype)

    def __call__(
        self, params: Params, batch: Batch, hard: bool = False, knobs: Knobs | None = None
    ) -> dict[str, dict[str, Any]]:
        """The yields override of :attr:`model` (see :meth:`outputs`)."""
        return self.outputs(params, batch, hard=hard, knobs=knobs).yields


class _Passes:
    """One pass of the analysis over a batch: each variant's events, observable and
    region efficiencies computed once, then every sample's templates in every region."""

    def __init__(
        self, analysis: Analysis, params: Params, batch: Batch, knobs: Knobs, hard: bool
    ) -> None:
        self.analysis, self.params, self.batch, self.knobs, self.hard = (
            analysis, params, batch, knobs, hard
        )
        self.cache: dict[Variant, tuple[jax.Array, list[jax.Array | None], list[jax.Array]]] = {}

    def _column(self, events: jax.Array, feature: str | None) -> jax.Array:
        if feature is None:
            return jnp.ones(events.shape[0], events.dtype)
        return events[:, self.analysis.features.index(feature)]

    def variant(self, key: Variant) -> tuple[jax.Array, list[Any], list[jax.Array]]:
        """``(events, values per region, efficiency per region)`` of one variant (a region
        of the classes gets the (N, K) class weights as its values)."""
        if key not in self.cache:
            analysis = self.analysis
            events = self.batch[key.events]
            if key.shift is not None:
                events = analysis.shifts[key.shift].apply(events, key.side)
            score, weights = None, None
            if any(r.uses_score for r in analysis.regions):
                observable, network = analysis.observable, self.params["observable"]
                if observable.n_classes == 1:
                    score = observable.apply(network, events)
                else:
                    logits = observable.logit(network, events)
                    score = jax.nn.softmax(logits, axis=1)
                    weights = class_weights(logits, self.knobs.temperature, self.hard)
            regions = self.params["regions"]
            self.cache[key] = (
                events,
                [
                    weights if r.config.observable == "classes" else r.values(events, score)
                    for r in analysis.regions
                ],
                [
                    r.efficiency(regions[r.name], events, self.knobs.slopes[i], self.hard, weights)
                    for i, r in enumerate(analysis.regions)
                ],
            )
        return self.cache[key]

    def weights(self, r: int, sample: SampleConfig, key: Variant, factor: str | None = None):
        """``(values, weights)`` of a variant in region ``r``, normalised to ``expected``."""
        events, values, efficiency = self.variant(key)
        norm = self._column(self.batch[key.events], sample.weight)  # the unshifted sum
        raw = self._column(events, sample.weight) * self._column(events, factor)
        return values[r], efficiency[r] * raw * (sample.expected / jnp.sum(norm))

    def histogram(self, r: int, values: jax.Array | None, w: jax.Array, sumw2: bool = False):
        """The region's histogram of weighted values (a count: one bin; the classes: one
        bin per class, ``values`` the (N, K) class weights)."""
        region = self.analysis.regions[r]
        if region.config.observable == "classes":
            return (values**2).T @ w**2 if sumw2 else values.T @ w
        if values is None:
            return jnp.sum(w**2 if sumw2 else w, keepdims=True)
        config = region.config.histogram
        fill = hist_sumw2 if sumw2 else hist
        return fill(
            values, region.edges(self.params["regions"][region.name]),
            bandwidth=self.knobs.bandwidths[r], weights=w, method=config.method,
            overflow=config.overflow, hard=self.hard,
        )

    def sample(self, r: int, sample: SampleConfig) -> dict[str, Any]:
        """The templates of one sample in region ``r``."""
        region = self.analysis.regions[r].name
        nominal = Variant(sample.events)
        fill: Callable[..., jax.Array] = lambda key, factor=None: self.histogram(  # noqa: E731
            r, *self.weights(r, sample, key, factor)
        )
        entry: dict[str, Any] = {"data": fill(nominal)}
        histosys = {
            h.name: {  # alternative event sets, or the nominal ones reweighted
                "hi_data": fill(Variant(h.up or sample.events), h.up_weight),
                "lo_data": fill(Variant(h.down or sample.events), h.down_weight),
            }
            for h in sample.histosys
        }
        normsys = {n.name: self._normsys(r, sample, n) for n in sample.normsys}
        for shift in affected(self.analysis.shifts, sample):
            name = shift.config.name
            up, down = (Variant(sample.events, name, side) for side in (1, -1))
            if shift.config.modifier == "histosys":
                histosys[name] = {"hi_data": fill(up), "lo_data": fill(down)}
            else:
                normsys[name] = self._ratios(r, sample, {"hi": (up, None), "lo": (down, None)})
        if histosys:
            entry["histosys"] = histosys
        if normsys:
            entry["normsys"] = normsys
        stat = mc_stat(sample, region)
        if stat is not None:
            values, w = self.weights(r, sample, nominal)
            entry[stat[0]] = {stat[1]: {"sumw2": self.histogram(r, values, w, sumw2=True)}}
        return entry

    def _ratios(
        self, r: int, sample: SampleConfig, sides: Mapping[str, tuple[Variant, str | None]]
    ) -> dict[str, jax.Array]:
        """The selected yield of each side's variant over the nominal one (1 if none)."""
        _, w = self.weights(r, sample, Variant(sample.events))
        total = jnp.sum(w)
        safe = jnp.where(total > 0, total, 1.0)
        return {
            side: jnp.where(total > 0, jnp.sum(self.weights(r, sample, key, factor)[1]) / safe, 1.0)
            for side, (key, factor) in sides.items()
        }

    def _normsys(self, r: int, sample: SampleConfig, variation: NormsysConfig) -> dict[str, Any]:
        if variation.hi is not None:
            return {"hi": variation.hi, "lo": variation.lo}
        nominal = Variant(sample.events)
        sides = {"hi": (nominal, variation.up_weight), "lo": (nominal, variation.down_weight)}
        return self._ratios(r, sample, sides)


def _members(
    config: StudyConfig,
    regions: tuple[Region, ...],
    events: Mapping[str, np.ndarray],
    features: tuple[str, ...],
) -> dict[str, tuple[str, ...]]:
    """The samples of each region: those with training events passing its preselection.

    Raises:
        ConfigError: A sample whose weights do not sum to > 0 or without events in any
            region, a region without events, or without a signal sample in any region.
    """
    counts = {r.name: 0 for r in regions}
    members: dict[str, list[str]] = {r.name: [] for r in regions}
    for i, sample in enumerate(config.samples):
        table = events[sample.events]
        if sample.weight is not None:
            total = float(np.sum(table[:, features.index(sample.weight)]))
            if not total > 0:
                raise ConfigError(
                    f"samples[{i}].weight: the weights {sample.weight!r} of sample "
                    f"{sample.name!r} sum to {total:g} over its training events (need > 0)"
                )
        passing = 0
        for region in regions:
            if region.preselection is None:
                selected = len(table)
            else:
                columns = {f: table[:, features.index(f)] for f in region.preselection.features}
                mask = np.broadcast_to(region.preselection.mask(columns), len(table))
                selected = int(np.sum(mask))
            counts[region.name] += selected
            passing += selected
            if selected:
                members[region.name].append(sample.name)
        if passing == 0:
            raise ConfigError(
                f"samples[{i}]: no training event of sample {sample.name!r} (event set "
                f"{sample.events!r}, {len(table)} events) passes any region's preselection"
            )
    for r, region in enumerate(regions):
        if counts[region.name] == 0:
            raise ConfigError(
                f"regions[{r}].preselection: no training event of any sample passes it "
                f"({region.config.preselection!r})"
            )
    signals = {s.name for s in config.samples if s.role == "signal"}
    if not any(signals & set(names) for names in members.values()):
        raise ConfigError("regions: no region holds training events of a signal sample")
    return {name: tuple(names) for name, names in members.items()}
