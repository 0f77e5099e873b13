"""The expected size of an offspring: what the environment's bisection solves."""

import numpy as np

from keras_evosynth import quantizers  # noqa: F401 (doctests)
from keras_evosynth.genetics.genome import Genome, _check_genomes, alive_probability  # noqa: F401
from keras_evosynth.genetics.probability import check_factor


def _pair_sum(p_s):
    """Sums over the spatial kernel axes: `(inputs, clusters)`, or for
    depthwise kernels `(inputs, multiplier)`."""
    lead = p_s.ndim - 2
    return p_s.sum(axis=tuple(range(lead))) if lead > 0 else p_s


def expectation(genomes, resource="synapses"):
    """Returns `f(cluster_factor, synapse_factor) -> expected kept amount`.

    Each live parent synapse counts `P(synapse) * P(its cluster) * P(its
    input channel alive)`, the last from its producers' cluster odds; MACs
    weight each synapse by its layer's output positions. Guards (one
    cluster per layer) and cascades of clusters left without synapses are
    ignored, so the actual offspring is usually slightly smaller. The
    probabilities are computed once, so `f` is cheap to call repeatedly
    (the environment's bisection does).

    Example:

    >>> import numpy as np
    >>> g = Genome("d", np.ones((2, 2)), np.ones((2, 2), bool),
    ...            np.ones(2, bool), quantizers.get(32), input_axis=0)
    >>> expectation([g])(0.5, 0.5)
    1.0
    """
    _check_resource(genomes, resource)
    _check_genomes(genomes)
    parts = []
    for g in genomes:
        p_c, p_s = g.probabilities()
        p_s = p_s * g.live_synapses()
        weight = g.positions if resource == "macs" else 1
        parts.append((g, p_c, p_s, _pair_sum(p_s) * weight, weight))

    def expected(cluster_factor=1.0, synapse_factor=1.0):
        r_c = check_factor(cluster_factor, "cluster_factor")
        r_s = check_factor(synapse_factor, "synapse_factor")
        odds = [p_c if g.protected else np.minimum(1.0, r_c * p_c) for g, p_c, *_ in parts]
        total = 0.0
        for (g, _, p_s, pair, weight), p_c in zip(parts, odds, strict=True):
            if not g.protected:
                pair = r_s * pair if r_s <= 1.0 else _pair_sum(np.minimum(1.0, r_s * p_s)) * weight
            p_in = (
                np.ones(pair.shape[0]) if g.inputs is None else alive_probability(g.inputs, odds)
            )
            total += float(np.sum(p_in[:, None] * p_c.reshape(-1, pair.shape[1]) * pair))
        return total

    return expected


def amount(genomes, resource="synapses"):
    """The parent's live synapses (or MACs) as counted by `expectation`.

    Example:

    >>> import numpy as np
    >>> g = Genome("d", np.ones((2, 3)), np.ones((2, 3), bool),
    ...            np.array([1, 0, 1], bool), quantizers.get(8), input_axis=0,
    ...            positions=4)
    >>> amount([g]), amount([g], "macs")
    (4, 16)
    """
    _check_resource(genomes, resource)
    return sum(
        int(g.live_synapses().sum()) * (g.positions if resource == "macs" else 1) for g in genomes
    )


def _check_resource(genomes, resource):
    if resource not in ("synapses", "macs"):  # what a genome counts
        raise ValueError(f"resource must be 'synapses' or 'macs', got {resource!r}.")
    if resource == "macs":
        unknown = [g.name for g in genomes if g.positions is None]
        if unknown:
            raise ValueError(
                f"Cannot count MACs: layers {unknown} have an unknown spatial "
                "input size; give the model a fixed input shape or use "
                "resource='synapses'."
            )
