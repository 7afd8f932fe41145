"""Observables: the per-event variable that is histogrammed, with its trainable parameters.

A registry maps a name to a factory ``(config, feature_columns) -> Observable``. An
observable is two pure functions, ``init(key) -> params`` (a pytree) and
``apply(params, features) -> (N,)``; a classifier also has ``logit`` (the pre-sigmoid
output, for a numerically stable cross-entropy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from neosx.config import ObservableConfig

__all__ = ["ACTIVATIONS", "OBSERVABLES", "Observable", "make_observable"]

Params = Any

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "softplus": jax.nn.softplus,
}


class Observable(NamedTuple):
    """A histogrammed variable.

    Attributes:
        init: ``init(key) -> params`` (a pytree; ``{}`` when nothing is trainable).
        apply: ``apply(params, features) -> (N,)``; ``features`` is the (N, F) array of the
            data source's columns. A network with K classes gives (N, K) softmax
            probabilities instead.
        logit: For classifiers, ``logit(params, features) -> (N,)`` with
            ``apply = sigmoid(logit)`` (with classes (N, K), ``apply = softmax(logit)``);
            ``None`` otherwise.
        n_classes: The network's classes (1: a sigmoid score or a feature).
    """

    init: Callable[[jax.Array], Params]
    apply: Callable[[Params, jax.Array], jax.Array]
    logit: Callable[[Params, jax.Array], jax.Array] | None = None
    n_classes: int = 1


def _mlp(
    config: ObservableConfig, columns: tuple[int, ...], training: np.ndarray | None
) -> Observable:
    """A fully connected network with a sigmoid output in (0, 1) (a classifier score), or
    with ``classes`` K outputs and a softmax (class probabilities).

    Inputs are standardised with the mean and standard deviation of the training events
    (all event sets together; fixed constants, not trained) when ``config.standardize``.
    Weights are drawn He-normal for ReLU-like activations and Glorot-normal for tanh;
    biases start at zero. Params: a list of ``{"w": (n_in, n_out), "b": (n_out,)}``.
    """
    n_classes = config.n_classes
    sizes = (len(columns), *config.hidden, n_classes)
    shift, scale = np.zeros(len(columns)), np.ones(len(columns))
    if config.standardize and training is not None:
        inputs = training[:, list(columns)]
        shift, scale = inputs.mean(axis=0), inputs.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
    activation = ACTIVATIONS[config.activation]
    glorot = config.activation == "tanh"
    index = jnp.asarray(columns)

    def init_std(n_in: int, n_out: int) -> float:
        return (2.0 / (n_in + n_out)) ** 0.5 if glorot else (2.0 / n_in) ** 0.5

    def init(key: jax.Array) -> Params:
        keys = jax.random.split(key, len(sizes) - 1)
        return [
            {
                "w": init_std(n_in, n_out) * jax.random.normal(k, (n_in, n_out), jnp.float64),
                "b": jnp.zeros(n_out, jnp.float64),
            }
            for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:], strict=True)
        ]

    def logit(params: Params, features: jax.Array) -> jax.Array:
        h = (features[:, index] - shift) / scale
        for layer in params[:-1]:
            h = activation(h @ layer["w"] + layer["b"])
        out = h @ params[-1]["w"] + params[-1]["b"]
        return out[:, 0] if n_classes == 1 else out

    def apply(params: Params, features: jax.Array) -> jax.Array:
        if n_classes == 1:
            return jax.nn.sigmoid(logit(params, features))
        return jax.nn.softmax(logit(params, features), axis=1)

    return Observable(init, apply, logit, n_classes)


def _feature(
    config: ObservableConfig, columns: tuple[int, ...], training: np.ndarray | None
) -> Observable:
    """One feature, histogrammed as it is (nothing trainable)."""
    (column,) = columns

    def apply(params: Params, features: jax.Array) -> jax.Array:
        return features[:, column]

    return Observable(lambda key: {}, apply)


Factory = Callable[[ObservableConfig, tuple[int, ...], np.ndarray | None], Observable]

OBSERVABLES: dict[str, Factory] = {
    "mlp": _mlp,
    "feature": _feature,
}


def make_observable(
    config: ObservableConfig, feature_names: tuple[str, ...], training: np.ndarray | None = None
) -> Observable:
    """Build the configured observable on a data source's feature columns.

    Args:
        config: The study's observable section.
        feature_names: The source's feature names, in column order.
        training: (N, F) training events of all event sets, for input standardisation.

    Returns:
        The :class:`Observable`.
    """
    columns = tuple(feature_names.index(name) for name in config.features)
    return OBSERVABLES[config.type](config, columns, training)
