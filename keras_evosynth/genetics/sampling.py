"""`sample_masks`: an offspring's masks drawn from its parent's genomes."""

import numpy as np

from keras_evosynth import quantizers  # noqa: F401 (doctests)
from keras_evosynth.genetics.genome import (
    Genome,  # noqa: F401 (doctests)
    _check_genomes,
    branches,
    cluster_factors,
    dead_inputs,
)
from keras_evosynth.genetics.probability import _cluster_shape, check_factor, genome_rng


def _revive(genome, synapses, clusters, p_c, dead_in):
    """Keeps at least one cluster: the parent's most probable one, with at
    least its strongest parent synapse that still has a live input."""
    n = clusters.size
    best = int(np.argmax(np.where(genome.cluster_mask, p_c, -1.0)))
    clusters[best] = True
    if synapses.reshape(-1, n)[:, best].any():
        return
    parent = genome.live_synapses()
    if dead_in is not None:
        parent = parent & ~genome._input_view(dead_in)
    column = parent.reshape(-1, n)[:, best]
    if column.any():
        strength = np.abs(genome.kernel).reshape(-1, n)[:, best]
        synapses.reshape(-1, n)[int(np.argmax(np.where(column, strength, -1.0))), best] = True


def _round_clusters(genome, clusters, synapses, p_c, multiple):
    """Revives the parent's most probable dead clusters (with their sampled
    synapses) until the live count is a multiple of `multiple` (or all the
    parent's live clusters)."""
    live, parent = int(clusters.sum()), int(genome.cluster_mask.sum())
    wanted = min(parent, -(-live // multiple) * multiple) if live else 0
    n = clusters.size
    columns = synapses.reshape(-1, n)
    order = np.argsort(-np.where(genome.cluster_mask & ~clusters, p_c, -1.0), kind="stable")
    for index in order[: max(0, wanted - live)]:
        if columns[:, index].any():
            clusters[index] = True


def sample_masks(
    genomes,
    cluster_factor=1.0,
    synapse_factor=1.0,
    seed=0,
    generation=1,
    attempt=0,
    candidate=0,
    round_to=None,
    vanish=False,
):
    """Samples an offspring's masks for a whole network.

    Layers are processed in order (producers before consumers), each with
    its own generator `genome_rng(seed, generation, attempt, candidate,
    layer_index)`; every uniform is drawn whatever the outcome, so the
    stream never depends on earlier layers.

    Args:
        genomes: List of `Genome` (the parent), in topological order.
        cluster_factor: `R_c` in (0, e] (the paper: (0, 1]; see
            `check_factor`), or one value per genome (the latency
            environment's per-layer factors; 0 removes a member of a
            removable branch, `branches`).
        synapse_factor: `R_s` in (0, e].
        seed, generation, attempt, candidate: Identify the draw.
        round_to: If set, each sampled layer's live clusters are rounded up
            to a multiple of it (XNNPACK computes channels in tiles of 8),
            reviving the parent's most probable dropped clusters.
        vanish: Layers that the graph lets disappear may lose every
            cluster: a member of a removable branch (`branches`: read only
            through a concatenation with other live inputs, never its
            anchor) left without a cluster by the draws is not revived, and
            then its whole branch vanishes (every member's masks cleared).
            False: every layer keeps at least one cluster (the paper).

    Returns:
        List of `(synapse_mask, cluster_mask)` bool arrays, one per genome.
        Synapse masks are already multiplied by their cluster masks.

    Example:

    >>> import numpy as np
    >>> g = Genome("d", np.array([[1.0, 0.5]]), np.ones((1, 2), bool),
    ...            np.ones(2, bool), quantizers.get("int8"), input_axis=0)
    >>> (syn, clu), = sample_masks([g], 0.5, 1.0, seed=0)
    >>> clu.sum() >= 1
    np.True_
    """
    factors = cluster_factors(cluster_factor, genomes)
    synapse_factor = check_factor(synapse_factor, "synapse_factor")
    if round_to is not None and (isinstance(round_to, bool) or not isinstance(
            round_to, (int, np.integer)) or round_to < 1):
        raise ValueError(f"round_to must be an int >= 1 or None, got {round_to!r}.")
    _check_genomes(genomes)
    removable = branches(genomes) if vanish else {}
    may_vanish = set().union(*removable.values())
    alive = [g.cluster_mask.copy() for g in genomes]
    result = []
    for index, g in enumerate(genomes):
        rng = genome_rng(seed, generation, attempt, candidate, index)
        u_c = rng.random(g.cluster_mask.shape)
        u_s = rng.random(g.kernel.shape)
        p_c, p_s = g.probabilities()
        if g.protected:
            clusters, synapses = g.cluster_mask.copy(), g.live_synapses()
        else:
            clusters = u_c < factors[index] * p_c
            synapses = u_s < synapse_factor * p_s
        synapses &= g.live_synapses()
        dead_in = dead_inputs(g.inputs, alive)
        if dead_in is not None:
            synapses &= ~g._input_view(dead_in)
        cshape = _cluster_shape(g.kernel.shape, g.channel_axes)
        if not g.protected:
            clusters &= synapses.reshape(-1, clusters.size).any(axis=0)
            if (not clusters.any() and g.cluster_mask.any() and factors[index] > 0
                    and index not in may_vanish):  # fmt: skip
                _revive(g, synapses, clusters, p_c, dead_in)
            if round_to is not None and round_to > 1:
                _round_clusters(g, clusters, synapses, p_c, int(round_to))
        synapses &= clusters.reshape(cshape)
        alive[index] = clusters
        result.append((synapses, clusters))
    for members in removable.values():
        if any(not result[i][1].any() for i in members):  # the branch is cut: all of it goes
            for i in members:
                result[i] = (np.zeros_like(result[i][0]), np.zeros_like(result[i][1]))
    return result
