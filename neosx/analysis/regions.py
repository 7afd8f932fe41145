"""Regions: which events enter a channel (preselection, soft cuts) and what it histograms.

A region's selection efficiency of an event is ``1[preselection] * prod_k cut_k(x)``, times
``P_c(x)`` in the region of a softmax network's class c: the preselection is hard in
training and evaluation alike; the cuts are logistic relaxations of trainable thresholds
(step functions with ``hard=True``); ``P_c`` is the class' softmax probability at the
temperature (1 for the arg-max class, else 0, with ``hard=True``). Its observable is the
study's score (a class' probability at temperature 1), one plain feature, the classes (one
bin each, filled with ``P_c``), or nothing (a count: one bin holding the selected yield).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from neosx.config import FeatureObservable, RegionConfig
from neosx.relax import cut
from neosx.selection import Preselection, parse

__all__ = ["Region", "class_weights", "make_region"]

Params = dict[str, Any]


class Region(NamedTuple):
    """A configured region.

    Attributes:
        config: The region as configured.
        preselection: Its parsed preselection (``None``: every event).
        features: The feature names (column order of the event arrays).
        cut_scales: (n_cuts,) spread of each cut's feature in the training events: the
            thresholds are trained in these units, so one optimiser step moves a cut on MET
            in GeV as far, relatively, as a cut on a score in [0, 1].
        classes: The network's class names (empty: a sigmoid score).
    """

    config: RegionConfig
    preselection: Preselection | None
    features: tuple[str, ...]
    cut_scales: tuple[float, ...]
    classes: tuple[str, ...] = ()

    @property
    def n_bins(self) -> int:
        """Bins of the region's histogram (one per class for ``observable: classes``)."""
        return len(self.classes) if self.config.observable == "classes" else self.config.n_bins

    @property
    def class_index(self) -> int | None:
        """The index of the region's class (``None``: no class)."""
        return None if self.config.class_ is None else self.classes.index(self.config.class_)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def uses_score(self) -> bool:
        """Whether the region histograms the study's observable (the network score)."""
        return self.config.uses_score

    def init_params(self) -> Params:
        """``{"cuts": (n_cuts,) thresholds in units of cut_scales, "edges": (B,) logits}``
        (``"edges"`` only with trainable edges; zero logits are uniform bins)."""
        inits = [c.init / s for c, s in zip(self.config.cuts, self.cut_scales, strict=True)]
        params: Params = {"cuts": jnp.asarray(inits, jnp.float64)}
        if self.config.observable not in ("count", "classes") and (
            self.config.histogram.trainable_edges
        ):
            params["edges"] = jnp.zeros(self.config.histogram.bins, jnp.float64)
        return params

    def edges(self, params: Params) -> jax.Array | np.ndarray:
        """(B + 1,) bin edges: fixed uniform, or from softmax-ordered trainable widths.

        With trainable edges the widths are ``(high - low) * softmax(logits)``, so the
        edges stay ordered and the outer ones stay at the configured range.
        """
        if self.config.observable == "classes":
            return np.arange(self.n_bins + 1.0)  # class k is the bin [k, k + 1)
        low, high = self.config.histogram.range
        if "edges" not in params:
            return np.linspace(low, high, self.n_bins + 1)
        widths = jax.nn.softmax(params["edges"]) * (high - low)
        inner = low + jnp.cumsum(widths[:-1])
        return jnp.concatenate([jnp.array([low]), inner, jnp.array([high])])

    def thresholds(self, params: Params) -> jax.Array:
        """(n_cuts,) cut thresholds in the features' units; ``trainable: false`` ones fixed."""
        frozen = np.array([not c.trainable for c in self.config.cuts], dtype=bool)
        cuts = jnp.where(frozen, jax.lax.stop_gradient(params["cuts"]), params["cuts"])
        return cuts * jnp.asarray(self.cut_scales, jnp.float64)

    def efficiency(
        self, params: Params, events: jax.Array, slopes: Sequence[Any], hard: bool,
        weights: jax.Array | None = None,
    ) -> jax.Array:
        """(N,) selection efficiency in [0, 1] of the events (columns: :attr:`features`);
        ``weights`` (N, K) are the events' class weights (:func:`class_weights`), which a
        region of one class multiplies in."""
        efficiency = jnp.ones(events.shape[0], events.dtype)
        if self.class_index is not None:
            efficiency = weights[:, self.class_index]
        if self.preselection is not None:
            columns = {f: events[:, self.features.index(f)] for f in self.preselection.features}
            efficiency = efficiency * self.preselection.mask(columns)
        for config, threshold, slope in zip(
            self.config.cuts, self.thresholds(params), slopes, strict=True
        ):
            column = events[:, self.features.index(config.feature)]
            efficiency = efficiency * cut(
                column, threshold, slope=slope, keep=config.keep, hard=hard
            )
        return efficiency

    def values(self, events: jax.Array, score: jax.Array | None) -> jax.Array | None:
        """(N,) the histogrammed variable (``None`` for a count and for the classes);
        ``score`` is the network's (N,) sigmoid output, or with classes its (N, K) softmax
        probabilities at temperature 1."""
        observable = self.config.observable
        if isinstance(observable, FeatureObservable):
            return events[:, self.features.index(observable.feature)]
        if observable != "score":
            return None
        return score if self.class_index is None else score[:, self.class_index]


def class_weights(logits: jax.Array, temperature: Any, hard: bool) -> jax.Array:
    """(N, K) weights of the events in the K classes: ``softmax(logits / T)``, with ``hard``
    1 in the arg-max class and 0 elsewhere. Each row sums to 1."""
    if hard:
        return jax.nn.one_hot(jnp.argmax(logits, axis=1), logits.shape[1], dtype=logits.dtype)
    return jax.nn.softmax(logits / temperature, axis=1)


def make_region(
    config: RegionConfig, features: Sequence[str], training: np.ndarray,
    classes: Sequence[str] = (),
) -> Region:
    """A region; the training events ``(N, F)`` fix the cut scales; ``classes`` are the
    network's class names.

    Raises:
        ValueError: The preselection is invalid (the config checks make this unreachable).
    """
    features = tuple(features)
    preselection = None if config.preselection is None else parse(config.preselection, features)
    spreads = [float(np.std(training[:, features.index(c.feature)])) for c in config.cuts]
    scales = tuple(spread if spread > 0 else 1.0 for spread in spreads)
    return Region(config, preselection, features, scales, tuple(classes))
