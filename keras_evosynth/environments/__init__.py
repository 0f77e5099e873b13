"""Environmental factors: how hard natural selection squeezes each generation.

Two environments:

- `ConstantEnvironment(cluster_factor, synapse_factor)`: the paper's fixed
  `R_c`, `R_s` in (0, 1] scaling the cluster and synapse probabilities.
- `ResourceTarget(fraction=...)` or `ResourceTarget(budget=...)`: solves,
  each generation, for the factor that makes the offspring's *expected*
  synapses (or MACs) a requested fraction of the parent's, or reach a final
  budget (a fraction of the ancestor) in equal ratios over the remaining
  generations. The solve is a bisection on the expectation of
  `genetics.expectation`. At `R = 1` the paper's probabilities already
  remove a good part of a layer (a zero weight survives with `e^-1`), so the
  solved factor may exceed 1, up to `e` (probabilities clipped at 1).
- `LatencyTarget(latency_table, fraction=...)`: the same for the int8
  latency a `LatencyTable` predicts, solved per layer (a `ResourceTarget`
  with the arguments that apply to latency).

All derive from `Environment` (exported as `keras_evosynth.Environment`),
the base an environment of your own subclasses.

An environment returns `Factors` through `factors(...)`; `mildness` (the
number of rollbacks so far) softens it: the cut `1 - x` of a factor or
fraction `x` is halved per rollback. An *adaptive* `ResourceTarget` instead
carries its step across generations: every accepted offspring multiplies the
cut by `grow`, every rollback by `shrink` (`adaptive_cut`), so that the
lineage works near the edge of what retraining recovers.

The package: `base` (`Environment`, `Factors`, `adaptive_cut`), `constant`
(`ConstantEnvironment`), `resource_target` (`ResourceTarget`, `LatencyTarget`),
`latency_target` (how a latency target allocates its cut over the layers) and
`_solvers` (the bisections); `get` and `serialize` are here.

Example:

>>> env = ConstantEnvironment(0.8, 0.9)
>>> f = env.factors(expected=lambda r_c, r_s: 0.0, current=100, ancestor=100,
...                 generation=1, generations=3)
>>> f.cluster_factor, f.synapse_factor
(0.8, 0.9)
"""

import keras

from keras_evosynth.environments._solvers import solve_decreasing, solve_factor
from keras_evosynth.environments.base import MAX_CUT, Environment, Factors, adaptive_cut
from keras_evosynth.environments.constant import ConstantEnvironment
from keras_evosynth.environments.resource_target import RESOURCES, LatencyTarget, ResourceTarget

__all__ = [
    "MAX_CUT",
    "RESOURCES",
    "ConstantEnvironment",
    "Environment",
    "Factors",
    "LatencyTarget",
    "ResourceTarget",
    "adaptive_cut",
    "get",
    "serialize",
    "solve_decreasing",
    "solve_factor",
]

# The module a serialized built-in environment names: the one they were
# defined in before this package, so that the settings of a saved lineage
# (which must equal the resumed run's, `Lineage.open`) still match; that
# module re-exports them.
_SAVED_MODULE = "keras_evosynth.environment"


def get(identifier):
    """Returns an `Environment` from an instance, a config dict or None.

    None gives the default `ResourceTarget(fraction=0.7)`.

    Example:

    >>> env = get(None)
    >>> type(env).__name__, env.fraction, env.solve
    ('ResourceTarget', 0.7, 'both')
    >>> get(serialize(ConstantEnvironment(0.5, 0.5))) == ConstantEnvironment(0.5, 0.5)
    True
    """
    if identifier is None:
        return ResourceTarget(fraction=0.7)
    if isinstance(identifier, Environment):
        return identifier
    if isinstance(identifier, dict):
        obj = keras.saving.deserialize_keras_object(
            identifier,
            custom_objects={
                "ConstantEnvironment": ConstantEnvironment,
                "ResourceTarget": ResourceTarget,
            },
        )
        if isinstance(obj, Environment):
            return obj
    raise TypeError(
        f"Cannot interpret {identifier!r} as an environment; pass "
        "ConstantEnvironment(cluster_factor, synapse_factor), "
        "ResourceTarget(fraction=...), ResourceTarget(budget=...) or another "
        "keras_evosynth.Environment."
    )


def serialize(environment):
    """Serializes an environment to a Keras-style config dict.

    Example:

    >>> serialize(ConstantEnvironment(0.5))["module"]
    'keras_evosynth.environment'
    """
    environment = get(environment)
    config = keras.saving.serialize_keras_object(environment)
    if type(environment) is LatencyTarget:  # as `ResourceTarget(resource="latency")` was
        config.update(class_name="ResourceTarget",
                      registered_name="keras_evosynth>ResourceTarget")
    if type(environment) in (ConstantEnvironment, ResourceTarget, LatencyTarget):
        config["module"] = _SAVED_MODULE
    return config
