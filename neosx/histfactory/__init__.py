"""A differentiable HistFactory likelihood with pyhf's semantics.

A pyhf spec (workspace, model spec or ``pyhf.Model``) is compiled once into static arrays;
:class:`HistFactory` then evaluates ``expected_data`` and ``logpdf`` as pure JAX functions of
the parameters and of optional yields overrides, so gradients flow from the likelihood back
into the histograms that produced the yields. :func:`build_spec` writes the spec of the
common signal-plus-backgrounds case from histograms.

Modules: :mod:`~neosx.histfactory.model` (the class) and :mod:`~neosx.histfactory.config`,
:mod:`~neosx.histfactory.likelihood` (the pure kernel), :mod:`~neosx.histfactory.layout` and
:mod:`~neosx.histfactory.modifiers` (compilation, one registry entry per modifier type),
:mod:`~neosx.histfactory.interpolation` (interpolation codes),
:mod:`~neosx.histfactory.yields` (the nested histogram format) and
:mod:`~neosx.histfactory.spec` (input resolution, validation, :func:`build_spec`).
"""

from neosx.histfactory.config import HistFactoryConfig
from neosx.histfactory.model import HistFactory
from neosx.histfactory.spec import build_spec

__all__ = ["HistFactory", "HistFactoryConfig", "build_spec"]
