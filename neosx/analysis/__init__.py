"""The analysis layer: systematics -> regions -> yields, and the workspace of the hard analysis.

* :mod:`~neosx.analysis.systematics`: the variants of each event set (alternative sets,
  weight factors, feature shifts) that the templates are filled from;
* :mod:`~neosx.analysis.regions`: preselection, trainable cuts and the observable of each
  region (channel);
* :mod:`~neosx.analysis.yields`: :class:`Analysis`, the whole chain as one function of the
  parameters and a batch of events;
* :mod:`~neosx.analysis.workspace`: the pyhf workspace, and the hard analysis made
  well-posed for pyhf (bins without background merged);
* :mod:`~neosx.analysis.combination`: a published workspace as the base that the study's
  regions are added to.
"""

from neosx.analysis.workspace import POI_UPPER_BOUND, background_groups
from neosx.analysis.yields import Analysis, Knobs, Outputs, Params

__all__ = ["POI_UPPER_BOUND", "Analysis", "Knobs", "Outputs", "Params", "background_groups"]
