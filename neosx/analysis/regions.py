"""Regions: which events enter a channel (preselection, soft cuts) and what it histograms.

A region's selection efficiency of an event is ``1[preselection] * prod_k cut_k(x)``: the
preselection is hard in training and evaluation alike; the cuts are logistic relaxations of
trainable thresholds (step functions with ``hard=True``). Its observable is the study's
score, one plain feature, or nothing (a count: one bin holding the selected yield).
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

__all__ = ["Region", "make_region"]

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
    """

    config: RegionConfig
    preselection: Preselection | None
    features: tuple[str, ...]
    cut_scales: tuple[float, ...]

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
        if self.config.observable != "count" and self.config.histogram.trainable_edges:
            params["edges"] = jnp.zeros(self.config.histogram.bins, jnp.float64)
        return params

    def edges(self, params: Params) -> jax.Array | np.ndarray:
        """(B + 1,) bin edges: fixed uniform, or from softmax-ordered trainable widths.

        With trainable edges the widths are ``(high - low) * softmax(logits)``, so the
        edges stay ordered and the outer ones stay at the configured range.
        """
        low, high = self.config.histogram.range
        if "edges" not in params:
            return np.linspace(low, high, self.config.n_bins + 1)
        widths = jax.nn.softmax(params["edges"]) * (high - low)
        inner = low + jnp.cumsum(widths[:-1])
        return jnp.concatenate([jnp.array([low]), inner, jnp.array([high])])

    def thresholds(self, params: Params) -> jax.Array:
        """(n_cuts,) cut thresholds in the features' units; ``trainable: false`` ones fixed."""
        frozen = np.array([not c.trainable for c in self.config.cuts], dtype=bool)
        cuts = jnp.where(frozen, jax.lax.stop_gradient(params["cuts"]), params["cuts"])
        return cuts * jnp.asarray(self.cut_scales, jnp.float64)

    def efficiency(
        self, params: Params, events: jax.Array, slopes: Sequence[Any], hard: bool
    ) -> jax.Array:
        """(N,) selection efficiency in [0, 1] of the events (columns: :attr:`features`)."""
        efficiency = jnp.ones(events.shape[0], events.dtype)
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
        """(N,) the histogrammed variable (``None`` for a count)."""
        observable = self.config.observable
        if isinstance(observable, FeatureObservable):
            return events[:, self.features.index(observable.feature)]
        return score if observable == "score" else None


def make_region(
    config: RegionConfig, features: Sequence[str], training: np.ndarray
) -> Region:
    """A region; the training events ``(N, F)`` fix the cut scales.

    Raises:
        ValueError: The preselection is invalid (the config checks make this unreachable).
    """
    features = tuple(features)
    preselection = None if config.preselection is None else parse(config.preselection, features)
    spreads = [float(np.std(training[:, features.index(c.feature)])) for c in config.cuts]
    scales = tuple(spread if spread > 0 else 1.0 for spread in spreads)
    return Region(config, preselection, features, scales)
