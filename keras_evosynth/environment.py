"""Compatibility module: the environments live in `keras_evosynth.environments`
(`base`, `constant`, `resource_target`, `latency_target`); this module
re-exports their public names. Keep it: the settings of saved lineages name
it as the module of `ConstantEnvironment` and `ResourceTarget`
(`environments.serialize` still writes it, so that they resume).
"""

from keras_evosynth.environments import (
    MAX_CUT,
    RESOURCES,
    ConstantEnvironment,
    Environment,
    Factors,
    ResourceTarget,
    adaptive_cut,
    get,
    serialize,
    solve_decreasing,
    solve_factor,
)
from keras_evosynth.environments.base import _check_fraction  # used by selection.py

__all__ = [
    "MAX_CUT",
    "RESOURCES",
    "ConstantEnvironment",
    "Environment",
    "Factors",
    "ResourceTarget",
    "_check_fraction",
    "adaptive_cut",
    "get",
    "serialize",
    "solve_decreasing",
    "solve_factor",
]
