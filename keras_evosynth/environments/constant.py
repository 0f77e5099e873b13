"""`ConstantEnvironment`: the paper's constant environmental factors."""

import keras

from keras_evosynth import genetics
from keras_evosynth.environments.base import Environment, Factors, _milder


@keras.saving.register_keras_serializable(package="keras_evosynth")
class ConstantEnvironment(Environment):
    """The paper's constant environmental factors.

    Args:
        cluster_factor: `R_c` in (0, 1], scales every cluster probability.
        synapse_factor: `R_s` in (0, 1], scales every synapse probability.

    Example:

    >>> f = ConstantEnvironment(0.5).factors(None, 1, 1, 1, 1, mildness=1)
    >>> f.cluster_factor, f.synapse_factor, f.target
    (0.75, 1.0, None)
    """

    def __init__(self, cluster_factor=1.0, synapse_factor=1.0):
        self.cluster_factor = genetics.check_factor(
            cluster_factor, "ConstantEnvironment cluster_factor", maximum=1.0
        )
        self.synapse_factor = genetics.check_factor(
            synapse_factor, "ConstantEnvironment synapse_factor", maximum=1.0
        )

    def factors(self, expected, current, ancestor, generation, generations, mildness=0):
        r_c = _milder(self.cluster_factor, mildness)
        r_s = _milder(self.synapse_factor, mildness)
        kept = None
        if expected is not None and current:
            kept = expected(r_c, r_s) / current
        return Factors(r_c, r_s, None, kept)

    def get_config(self):
        return {
            "cluster_factor": self.cluster_factor,
            "synapse_factor": self.synapse_factor,
        }
