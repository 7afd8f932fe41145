"""The schema of a study: one YAML file, validated once at the boundary into a frozen object.

Every model forbids unknown keys; :func:`load_config` turns any validation failure into a
:class:`ConfigError` whose one-line message names the field path and the bad value, e.g.::

    training.optimizer.learning_rate.init: Input should be greater than 0 (got -0.1)

The core (analysis, training, evaluation) only ever sees a :class:`StudyConfig`. One module
per section: :mod:`~neosx.config.data` (where the events come from),
:mod:`~neosx.config.samples` (samples and systematics), :mod:`~neosx.config.regions`
(preselections, cuts, histograms), :mod:`~neosx.config.training` (observable, objectives,
optimiser, evaluation) and :mod:`~neosx.config.study` (the whole study).
"""

from neosx.config._base import ConfigError, ScheduleConfig
from neosx.config.combination import BaseWorkspaceConfig
from neosx.config.data import DataConfig, FileConfig
from neosx.config.loading import apply_overrides, load_config, parse_config
from neosx.config.regions import CutConfig, FeatureObservable, HistogramConfig, RegionConfig
from neosx.config.samples import (
    FeatureShiftConfig,
    HistosysConfig,
    NormsysConfig,
    SampleConfig,
)
from neosx.config.study import StudyConfig
from neosx.config.training import (
    OBJECTIVES,
    BaselineConfig,
    EvaluationConfig,
    Objective,
    ObjectiveTerm,
    ObservableConfig,
    OptimizerConfig,
    TrainingConfig,
    term_weight,
)

__all__ = [
    "OBJECTIVES",
    "BaseWorkspaceConfig",
    "BaselineConfig",
    "ConfigError",
    "CutConfig",
    "DataConfig",
    "EvaluationConfig",
    "FeatureObservable",
    "FeatureShiftConfig",
    "FileConfig",
    "HistogramConfig",
    "HistosysConfig",
    "NormsysConfig",
    "Objective",
    "ObjectiveTerm",
    "ObservableConfig",
    "OptimizerConfig",
    "RegionConfig",
    "SampleConfig",
    "ScheduleConfig",
    "StudyConfig",
    "TrainingConfig",
    "apply_overrides",
    "load_config",
    "parse_config",
    "term_weight",
]
