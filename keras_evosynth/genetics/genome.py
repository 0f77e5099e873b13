"""`Genome`: one evolvable layer of the parent as plain arrays, and the
graph facts sampling needs (dead inputs, removable branches, factors)."""

import dataclasses

import numpy as np

from keras_evosynth import quantizers, topology
from keras_evosynth.genetics.probability import (
    _cluster_shape,
    check_factor,
    cluster_probability,
    synapse_probability,
)


def dead_inputs(sources, alive):
    """Which input channels carry a dropped cluster.

    Args:
        sources: A `topology.Sources` for the consumer's input channels, or
            None (nothing known: nothing dead).
        alive: List with one bool cluster vector per Evo layer (the
            offspring's), indexed like the producers in `sources`.

    Returns:
        Bool vector (True = dead) with one entry per input channel, or None.
        A channel is dead when every alternative is a dead cluster or
        contributes nothing; unknown sources are never dead.

    Example:

    >>> import numpy as np
    >>> from keras_evosynth.topology import Sources
    >>> src = Sources(np.array([[0, 0, -1]]), np.array([[0, 1, 0]]))
    >>> dead_inputs(src, [np.array([True, False])]).tolist()
    [False, True, False]
    """
    if sources is None:
        return None
    dead = np.ones(sources.producer.shape, dtype=bool)
    for index in np.unique(sources.producer):
        here = sources.producer == index
        if index == topology.UNKNOWN:
            dead[here] = False
        elif index >= 0:
            dead[here] = ~np.asarray(alive[index], dtype=bool)[sources.cluster[here]]
    return dead.all(axis=0)


def source_odds(sources, probabilities):
    """Per alternative (row of `sources`) and input channel, the odds its
    producer's cluster lives (`probabilities`: one vector per Evo layer);
    an unknown source 1, none 0."""
    keep = np.ones(sources.producer.shape, dtype=np.float64)
    for index in np.unique(sources.producer):
        here = sources.producer == index
        if index == topology.NONE:
            keep[here] = 0.0
        elif index >= 0:
            keep[here] = probabilities[index][sources.cluster[here]]
    return keep


def alive_probability(sources, probabilities):
    """P(input channel carries information) from producer cluster odds."""
    return 1.0 - np.prod(1.0 - source_odds(sources, probabilities), axis=0)


@dataclasses.dataclass
class Genome:
    """One evolvable layer of the parent, as plain arrays.

    Attributes:
        name: Layer name (for messages).
        kernel: float array, the parent's masked kernel.
        synapse_mask: bool array of the kernel's shape.
        cluster_mask: bool vector, one entry per cluster.
        precision: The offspring's `SynapticPrecision` (for `q`).
        channel_axes: Trailing kernel axes indexing clusters (1 or 2).
        input_axis: Kernel axis indexing the input channels.
        positions: Output positions per example (MAC weight), or None.
        protected: Never sampled (only dead inputs removed).
        inputs: `topology.Sources` of the input channels, or None.
    """

    name: str
    kernel: np.ndarray
    synapse_mask: np.ndarray
    cluster_mask: np.ndarray
    precision: quantizers.SynapticPrecision
    channel_axes: int = 1
    input_axis: int = -2
    positions: int | None = 1
    protected: bool = False
    inputs: topology.Sources | None = None

    def probabilities(self):
        """`(cluster p, synapse p)` before environmental factors."""
        if self.protected:
            return self.cluster_mask * 1.0, self.synapse_mask * 1.0
        p_c = cluster_probability(
            self.kernel,
            self.precision,
            self.channel_axes,
            self.cluster_mask,
            self.synapse_mask,
        )
        return p_c, synapse_probability(self.kernel, self.synapse_mask)

    def live_synapses(self):
        """Parent synapses present in both masks."""
        return self.synapse_mask & self.cluster_mask.reshape(
            _cluster_shape(self.kernel.shape, self.channel_axes)
        )

    def _input_view(self, vector):
        shape = [1] * self.kernel.ndim
        shape[self.input_axis] = -1
        return np.asarray(vector).reshape(shape)


def _check_genomes(genomes):
    for g in genomes:
        if g.inputs is not None and g.inputs.channels != g.kernel.shape[g.input_axis]:
            raise ValueError(
                f"Layer '{g.name}': its input sources list {g.inputs.channels} "
                f"channels, the kernel expects {g.kernel.shape[g.input_axis]}."
            )


def cluster_factors(cluster_factor, genomes):
    """One checked `R_c` per genome from a number or a per-layer sequence.

    In a sequence, 0 removes the layer outright (no cluster survives, none
    is revived); it is only accepted on the members of a removable branch
    (`branches`), so the network stays connected.

    Example:

    >>> cluster_factors(0.5, [None, None]), cluster_factors([1.0, 2.0], [None, None])
    ([0.5, 0.5], [1.0, 2.0])
    """
    if isinstance(cluster_factor, (list, tuple, np.ndarray)):
        if len(cluster_factor) != len(genomes):
            raise ValueError(
                f"cluster_factor has {len(cluster_factor)} per-layer values for "
                f"{len(genomes)} evolvable layers."
            )
        factors = [0.0 if float(r) == 0.0 else check_factor(float(r), "cluster_factor")
                   for r in cluster_factor]
        zero = {i for i, r in enumerate(factors) if r == 0.0}
        if zero:
            removable = set().union(*branches(genomes).values())
            if zero - removable:
                names = [genomes[i].name for i in sorted(zero - removable)]
                raise ValueError(
                    f"cluster_factor 0 would remove layers {names}, which are not members "
                    "of a removable branch (genetics.branches): the network would lose "
                    "its only path through them."
                )
        return factors
    return [check_factor(cluster_factor, "cluster_factor")] * len(genomes)


def branches(genomes):
    """`{terminal: members}`: the whole branches a network can lose.

    A terminal is an unprotected Evo layer whose every reader (an Evo layer
    whose input channels it produces) reads it inside a concatenation of
    several Evo layers' channels (one source per channel, none unknown), and
    which is not that concatenation's anchor: the producer with the most
    live parent synapses (the first on ties), so one branch of every
    concatenation always stays. Its members are the terminal and, walking
    back, every unprotected Evo layer all of whose readers are members (the
    1x1 reduction before an inception 3x3 or 5x5). Indices are genome
    positions; members are sorted.

    Example: two branches `a -> c` and `b` concatenated and read by `d`;
    `c` (fewer synapses than `b`) and its reduction `a` can go.

    >>> from keras_evosynth import topology
    >>> def g(name, n, inputs=None):
    ...     return Genome(name, np.ones((n, 2)), np.ones((n, 2), bool), np.ones(2, bool),
    ...                   quantizers.get(8), input_axis=0, inputs=inputs)
    >>> concat = topology.Sources(np.array([[2, 2, 1, 1]]), np.array([[0, 1, 0, 1]]))
    >>> a, b = g("a", 3), g("b", 9)
    >>> c, d = g("c", 2, topology.Sources.of_layer(0, 2)), g("d", 4, concat)
    >>> branches([a, b, c, d])
    {2: [0, 2]}
    """
    readers = {}
    for k, g in enumerate(genomes):
        if g.inputs is None:
            continue
        for producer in np.unique(g.inputs.producer):
            if producer >= 0:
                readers.setdefault(int(producer), set()).add(k)

    synapses = [int(g.live_synapses().sum()) for g in genomes]

    def in_concatenation(producer, reader):
        rows = genomes[reader].inputs.producer
        if rows.shape[0] != 1 or (rows == topology.UNKNOWN).any():
            return False
        group = [int(p) for p in np.unique(rows) if p >= 0]
        if len(group) < 2:
            return False
        anchor = max(group, key=lambda i: (synapses[i], -i))
        return producer != anchor

    result = {}
    for terminal, reading in sorted(readers.items()):
        if genomes[terminal].protected or not all(
                in_concatenation(terminal, k) for k in reading):
            continue
        members, grown = {terminal}, True
        while grown:
            grown = False
            for producer, reading in readers.items():
                if (producer not in members and not genomes[producer].protected
                        and reading <= members):
                    members.add(producer)
                    grown = True
        result[terminal] = sorted(members)
    return result
