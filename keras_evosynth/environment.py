"""Compatibility module: the environments live in `keras_evosynth.environments`
(`base`, `constant`, `resource_target`, `latency_target`); this module
re-exports their public names. Keep it: the settings of saved lineages name
it as the module of `ConstantEnvironment` and `ResourceTarget`
(`environments.serialize` still writes it, so that they resume).
"""

from keras_evosynth.environments import *  # noqa: F403
from keras_evosynth.environments import __all__  # noqa: F401
