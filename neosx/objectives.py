"""Objectives: the scalar an analysis is trained to minimise, selectable by name.

Each entry of :data:`OBJECTIVES` maps the analysis' :class:`~neosx.analysis.Outputs` to
``(loss, figure)``: the loss is minimised; the figure is the physics number as a physicist
quotes it (CLs, Z0 > 0, mu_up, sigma(mu), ...) and is what the training log shows.
:func:`make_loss` sums weighted objectives into one loss.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from neosx import infer, metrics
from neosx.analysis import Analysis, Outputs
from neosx.config import EvaluationConfig, ObjectiveTerm
from neosx.histfactory import HistFactory

__all__ = ["OBJECTIVES", "Objective", "make_loss"]


class Objective(NamedTuple):
    """A registered objective.

    Attributes:
        fn: ``fn(analysis, outputs, evaluation, term) -> (loss, figure)``; ``term`` holds
            the entry's options (the POIs it acts on).
        description: What the figure is, for logs and docs.
    """

    fn: Callable[
        [Analysis, Outputs, EvaluationConfig, ObjectiveTerm], tuple[jax.Array, jax.Array]
    ]
    description: str


Fn = Callable[[Analysis, Outputs, EvaluationConfig, ObjectiveTerm], tuple[jax.Array, jax.Array]]


def _model(analysis: Analysis, term: ObjectiveTerm) -> HistFactory:
    """The likelihood with the term's POI (default: the study's) as its POI."""
    return analysis.models[term.pois[0]] if term.pois else analysis.model


def _cls(analysis: Analysis, out: Outputs, ev: EvaluationConfig, term: ObjectiveTerm):
    cls = infer.expected_cls(_model(analysis, term), ev.mu, yields=out.yields)
    return cls, cls


def _z0(analysis: Analysis, out: Outputs, ev: EvaluationConfig, term: ObjectiveTerm):
    z0 = infer.discovery_significance(_model(analysis, term), yields=out.yields)
    return -z0, z0


def _upper_limit(analysis: Analysis, out: Outputs, ev: EvaluationConfig, term: ObjectiveTerm):
    mu_up = infer.expected_upper_limit(_model(analysis, term), ev.cl, yields=out.yields)
    return mu_up, mu_up


def _poi_uncertainty(
    analysis: Analysis, out: Outputs, ev: EvaluationConfig, term: ObjectiveTerm
) -> tuple[jax.Array, jax.Array]:
    """sigma of one POI; of several, the sum of their variances or the log determinant of
    their covariance block (Fisher information on the Asimov data with the study's POI at
    ``mu``, the other POIs at 1)."""
    if len(term.pois) <= 1:
        sigma = infer.poi_uncertainty(_model(analysis, term), ev.mu, yields=out.yields)
        return sigma, sigma
    model = analysis.model
    covariance = infer.covariance(model, ev.mu, yields=out.yields)
    index = np.array([model.config.par_order.index(p) for p in term.pois])
    block = covariance[np.ix_(index, index)]
    value = jnp.trace(block) if term.combine == "sum" else jnp.linalg.slogdet(block)[1]
    return value, value


def _signal_background(analysis: Analysis, out: Outputs) -> tuple[jax.Array, jax.Array]:
    """Per-bin nominal signal and total background (expected events), the bins of every
    region one after the other."""
    roles = {sample.name: sample.role for sample in analysis.config.samples}
    totals: dict[str, list[jax.Array]] = {"signal": [], "background": []}
    for channel in out.yields.values():
        shape = next(iter(channel.values()))["data"].shape
        for role, parts in totals.items():
            parts.append(sum(
                (entry["data"] for name, entry in channel.items() if roles[name] == role),
                jnp.zeros(shape),
            ))
    return jnp.concatenate(totals["signal"]), jnp.concatenate(totals["background"])


def _binned_significance(per_bin: Callable[[jax.Array, jax.Array], jax.Array]) -> Fn:
    """A closed-form significance per bin, combined in quadrature over bins (maximised)."""

    def objective(
        analysis: Analysis, out: Outputs, ev: EvaluationConfig, term: ObjectiveTerm
    ) -> tuple[jax.Array, jax.Array]:
        s, b = _signal_background(analysis, out)
        z = jnp.sqrt(jnp.sum(per_bin(s, b) ** 2))
        return -z, z

    return objective


def _masked_mean(values: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The mean of ``values`` where ``mask`` is 1, and whether there were any."""
    total = jnp.sum(mask)
    mean = jnp.sum(mask * values) / jnp.where(total > 0, total, 1.0)
    return mean, (total > 0).astype(mean.dtype)


def _present_mean(parts: list[tuple[jax.Array, jax.Array]]) -> jax.Array:
    """The mean over the parts that have events in the batch."""
    means, present = (jnp.stack(x) for x in zip(*parts, strict=True))
    return jnp.sum(means * present) / jnp.maximum(jnp.sum(present), 1.0)


def _bce(
    analysis: Analysis, out: Outputs, ev: EvaluationConfig, term: ObjectiveTerm
) -> tuple[jax.Array, jax.Array]:
    """Class-balanced binary cross-entropy of signal (label 1) vs background (label 0).

    Each sample's nominal events that pass the preselection of a region histogramming the
    score enter with the mean over them, signal and background classes weighted equally; the
    trainable cuts do not enter (it is a classifier loss).
    """
    if out.logits is None:
        raise ValueError("objective 'bce' needs a classifier observable (observable.type: mlp)")
    if analysis.observable.n_classes > 1:
        return _cross_entropy(analysis, out)
    losses: dict[str, list[tuple[jax.Array, jax.Array]]] = {"signal": [], "background": []}
    for sample in analysis.config.samples:
        logits, mask = out.logits[sample.name], out.classified[sample.name]
        # -log sigmoid(z) = softplus(-z); -log(1 - sigmoid(z)) = softplus(z)
        sign = -1.0 if sample.role == "signal" else 1.0
        losses[sample.role].append(_masked_mean(jax.nn.softplus(sign * logits), mask))
    bce = 0.5 * (_present_mean(losses["signal"]) + _present_mean(losses["background"]))
    return bce, bce


def _cross_entropy(analysis: Analysis, out: Outputs) -> tuple[jax.Array, jax.Array]:
    """Class-balanced cross-entropy of a softmax network: each sample of a class (the
    observable's ``classes``) is labelled with it; the mean of ``-log softmax(z)[label]``
    over its events (those :attr:`Outputs.classified`), averaged over the class' samples,
    then over the classes. Samples of no class do not enter."""
    classes = analysis.config.observable.classes or {}
    per_class = []
    for label, samples in enumerate(classes.values()):
        parts = []
        for name in samples:
            log_p = jax.nn.log_softmax(out.logits[name], axis=1)[:, label]
            parts.append(_masked_mean(-log_p, out.classified[name]))
        per_class.append(_present_mean(parts))
    ce = jnp.mean(jnp.stack(per_class))
    return ce, ce


OBJECTIVES: dict[str, Objective] = {
    "cls": Objective(_cls, "median expected CLs at mu (background-only Asimov)"),
    "z0": Objective(_z0, "expected discovery significance Z0 (maximised)"),
    "upper_limit": Objective(_upper_limit, "median expected upper limit on mu"),
    "poi_uncertainty": Objective(
        _poi_uncertainty,
        "sigma(mu) from the Fisher information (several POIs: sum of variances or log det)",
    ),
    "bce": Objective(
        _bce, "binary cross-entropy of the classifier (with classes: multi-class cross-entropy)"
    ),
    "s_over_sqrt_b": Objective(
        _binned_significance(metrics.s_over_sqrt_b),
        "s / sqrt(b) summed in quadrature over bins (maximised)",
    ),
    "asimov_significance": Objective(
        _binned_significance(metrics.asimov_significance),
        "Asimov significance summed in quadrature over bins (maximised)",
    ),
}


def make_loss(
    analysis: Analysis,
    weights: Mapping[str, float | ObjectiveTerm],
    evaluation: EvaluationConfig,
) -> Callable[[Outputs], tuple[jax.Array, dict[str, Any]]]:
    """The weighted sum of objectives as a function of the analysis outputs.

    Args:
        analysis: The analysis (its models and samples).
        weights: ``{objective name: weight or ObjectiveTerm}`` (a term names its POIs).
        evaluation: mu and cl used by the statistical objectives.

    Returns:
        ``loss_fn(outputs) -> (loss, {name: figure})``.

    Raises:
        ValueError: An unknown objective name.
    """
    unknown = sorted(set(weights) - set(OBJECTIVES))
    if unknown:
        raise ValueError(f"unknown objectives {unknown}; choose from {sorted(OBJECTIVES)}")
    terms = {
        name: entry if isinstance(entry, ObjectiveTerm) else ObjectiveTerm(weight=entry)
        for name, entry in weights.items()
    }

    def loss_fn(outputs: Outputs) -> tuple[jax.Array, dict[str, Any]]:
        loss, figures = 0.0, {}
        for name, term in terms.items():
            value, figures[name] = OBJECTIVES[name].fn(analysis, outputs, evaluation, term)
            loss = loss + term.weight * value
        return jnp.asarray(loss), figures

    return loss_fn
