"""Small helpers shared by the recipe apps."""

import math

from keras_evosynth import ResourceTarget

# How a recipe's offspring shrink (`--synthesis`):
# - "filters": each offspring keeps `keep` of its parent's MACs by losing whole
#   filters (R_c solved, R_s = e so every synapse of a live filter survives):
#   compaction turns all of it into speed.
# - "synapses": the paper's probabilities on both levels (R_c = R_s solved for
#   `keep` of the synapses): higher synaptic efficiency, mostly unstructured.
SYNTHESIS = ("filters", "synapses")


def environment_for(synthesis, keep):
    """The `ResourceTarget` of a `--synthesis` choice.

    Example:

    >>> environment_for("filters", 0.7).solve
    'cluster'
    """
    if synthesis == "filters":
        return ResourceTarget(fraction=keep, resource="macs", solve="cluster", fixed_factor=math.e)
    if synthesis == "synapses":
        return ResourceTarget(fraction=keep, resource="synapses", solve="both")
    raise ValueError(f"synthesis must be one of {SYNTHESIS}, got {synthesis!r}.")


def quiet_tensorflow():
    """Keeps the converter's INFO chatter out of the recipe's progress output."""
    import tensorflow as tf
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("ERROR")
