"""The generative model of evolutionary synthesis (DESIGN.md §2).

An offspring is sampled from its trained parent, cluster by cluster and
synapse by synapse, with independent seeded Bernoulli draws:

- synapse `j` survives with probability `R_s * exp(|w_j| / Z_s - 1)`, `Z_s`
  the layer's largest live `|w|` (heredity: strong synapses are kept);
- cluster `c` (an output filter / unit) survives with probability
  `R_c * exp(sum_{i in c} q(|w_i|) / Z_c - 1)`, `q` the offspring's b-bit
  precision restriction (weights that round to zero add nothing) and `Z_c`
  the layer's largest such sum;
- a dropped cluster drops all its synapses; the consumers' input synapses
  reading a dropped channel die with it (`dead_inputs`), and a cluster left
  without any live synapse dies too;
- every layer keeps at least one cluster, except where a per-layer cluster
  factor of 0 removes a whole branch (`branches`: an inception branch that
  a latency target drops) or, with `vanish=True`, where the draws leave a
  branch member without a cluster: the whole branch then vanishes (its
  concatenation keeps its other inputs, compaction removes the ops and the
  latency table prices them at 0); protected layers (by default the ones feeding
  model outputs: the classifier, detection heads) are never sampled, only
  their synapses from dead channels are removed.

The maths are pure numpy functions on arrays; `sample_offspring` applies them
to a Keras model.

Example:

>>> import numpy as np
>>> p = synapse_probability(np.array([[0.5], [-1.0], [0.0]]))
>>> np.round(p, 4).ravel().tolist()
[0.6065, 1.0, 0.3679]
"""

import dataclasses

import numpy as np
from keras import ops

from keras_evosynth import quantizers, topology


def _as_float(array, what):
    array = np.asarray(array, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{what} holds non-finite values.")
    return array


def _bool_mask(mask, shape, what):
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"{what} must have shape {tuple(shape)}, got {mask.shape}.")
    return mask.astype(bool)


def _cluster_shape(kernel_shape, channel_axes):
    """Broadcast shape of a flat cluster vector against the kernel."""
    return (1,) * (len(kernel_shape) - channel_axes) + tuple(kernel_shape[-channel_axes:])


def synapse_probability(kernel, synapse_mask=None):
    """Heredity of each synapse: `exp(|w| / Z_s - 1)`.

    Args:
        kernel: The parent layer's kernel (any shape).
        synapse_mask: Bool array of the kernel's shape; synapses already
            absent in the parent get probability 0. None: all live.

    Returns:
        float64 array of the kernel's shape. `Z_s` is the largest live
        `|w|`, so the strongest synapse has 1 and a zero weight `e^-1`; a
        layer whose live weights are all zero gives `e^-1` everywhere.

    Example:

    >>> synapse_probability([[2.0, 1.0]], synapse_mask=[[1, 0]]).tolist()
    [[1.0, 0.0]]
    """
    strength = np.abs(_as_float(kernel, "kernel"))
    mask = _bool_mask(synapse_mask, strength.shape, "synapse_mask")
    z = strength[mask].max() if mask.any() else 0.0
    p = np.exp(strength / z - 1.0) if z > 0 else np.full(strength.shape, np.exp(-1))
    return np.where(mask, p, 0.0)


def cluster_strength(kernel, precision="float32", channel_axes=1):
    """`sum_{i in c} q(|w_i|)` per cluster, with `q` the b-bit restriction.

    Args:
        kernel: The (masked) parent kernel; its last `channel_axes` axes
            index the clusters.
        precision: The offspring's synaptic precision (see
            `quantizers.get`); weights that quantize to zero add nothing.
        channel_axes: 1 for Conv2D/Dense, 2 for DepthwiseConv2D.

    Returns:
        float64 vector, one entry per cluster.

    Example:

    >>> cluster_strength([[1.0, 0.1], [0.2, 0.3]], "int2").tolist()
    [1.0, 0.30000001192092896]
    """
    precision = quantizers.get(precision)
    kernel = np.asarray(_as_float(kernel, "kernel"), dtype=np.float32)
    q = np.abs(precision.quantize_numpy(kernel, channel_axes=channel_axes))
    clusters = int(np.prod(kernel.shape[-channel_axes:]))
    return q.reshape(-1, clusters).sum(axis=0, dtype=np.float64)


def cluster_probability(
    kernel,
    precision="float32",
    channel_axes=1,
    cluster_mask=None,
    synapse_mask=None,
):
    """Survival of each cluster: `exp(sum q(|w|) / Z_c - 1)`.

    Args:
        kernel: The parent layer's kernel.
        precision: The offspring's synaptic precision used for `q`.
        channel_axes: How many trailing kernel axes index the clusters.
        cluster_mask: Bool vector; dead parent clusters get 0.
        synapse_mask: Bool array of the kernel's shape applied before `q`.

    Returns:
        float64 vector, one entry per cluster; the strongest live cluster
        has 1. If every live cluster quantizes to zero, all live get `e^-1`.

    Example:

    >>> import numpy as np
    >>> p = cluster_probability([[1.0, 0.5], [1.0, 0.5]])
    >>> np.round(p, 4).tolist()
    [1.0, 0.6065]
    """
    kernel = _as_float(kernel, "kernel")
    clusters = int(np.prod(kernel.shape[-channel_axes:]))
    alive = _bool_mask(cluster_mask, (clusters,), "cluster_mask")
    synapses = _bool_mask(synapse_mask, kernel.shape, "synapse_mask")
    masked = kernel * synapses * alive.reshape(_cluster_shape(kernel.shape, channel_axes))
    strength = cluster_strength(masked, precision, channel_axes)
    z = strength[alive].max() if alive.any() else 0.0
    p = np.exp(strength / z - 1.0) if z > 0 else np.full(clusters, np.exp(-1))
    return np.where(alive, p, 0.0)


MAX_FACTOR = float(np.e)


def check_factor(value, name="factor", maximum=MAX_FACTOR):
    """Validates an environmental factor: a real number in (0, maximum].

    The paper's factors lie in (0, 1]. The genetics also accept factors up
    to `e` (probabilities are clipped at 1; at `e` every live synapse and
    cluster survives) so a resource target can ask for milder cuts than the
    paper's probabilities make at `R = 1`.

    Example:

    >>> check_factor(0.5, "R_c")
    0.5
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{name} must be a number in (0, {maximum:g}], got {value!r}.")
    value = float(value)
    if not 0.0 < value <= maximum:
        raise ValueError(f"{name} must be in (0, {maximum:g}], got {value!r}.")
    return value


def genome_rng(seed, generation, attempt=0, candidate=0, layer=0):
    """The random generator for one layer of one offspring.

    Derived from `(seed, generation, attempt, candidate, layer)` only, so a
    lineage resumed at any generation draws exactly what it drew before.

    Example:

    >>> a = genome_rng(7, 2).random(3)
    >>> bool((a == genome_rng(7, 2).random(3)).all())
    True
    """
    keys = (seed, generation, attempt, candidate, layer)
    names = ("seed", "generation", "attempt", "candidate", "layer")
    for name, key in zip(names, keys, strict=True):
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or key < 0:
            raise ValueError(f"genome_rng: {name} must be an int >= 0, got {key!r}.")
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def bernoulli(p, rng):
    """Independent draws `u < p` with `u ~ U[0, 1)` from `rng`.

    Example:

    >>> import numpy as np
    >>> bernoulli(np.array([0.0, 1.0]), np.random.default_rng(0)).tolist()
    [False, True]
    """
    p = np.asarray(p, dtype=np.float64)
    return rng.random(p.shape) < p


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


def _alive_probability(sources, probabilities):
    """P(input channel carries information) from producer cluster odds."""
    keep = np.ones(sources.producer.shape, dtype=np.float64)
    for index in np.unique(sources.producer):
        here = sources.producer == index
        if index == topology.NONE:
            keep[here] = 0.0
        elif index >= 0:
            keep[here] = probabilities[index][sources.cluster[here]]
    return 1.0 - np.prod(1.0 - keep, axis=0)


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
                np.ones(pair.shape[0]) if g.inputs is None else _alive_probability(g.inputs, odds)
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


# ---------------------------------------------------------------- Keras side
def genomes_from_model(model, precision=None, protect=None):
    """Reads a model's Evo layers into `Genome`s (parent arrays).

    Args:
        model: A built Keras model with Evo layers.
        precision: Offspring precision used for `q`; None: each layer's own.
        protect: Layer names never to sample; None: the layers whose outputs
            reach a model output through channel-preserving layers.

    Returns:
        `(genomes, layers)`: the genomes and the matching Evo layers.

    Raises:
        ValueError: No Evo layer, or an unknown name in `protect`.
    """
    graph = topology.channel_sources(model)
    if not graph.evo_layers:
        raise ValueError(
            f"Model '{model.name}' has no evolvable layer; convert it first with "
            "keras_evosynth.evolvable(model)."
        )
    names = [layer.name for layer in graph.evo_layers]
    if protect is None:
        protected = set(graph.output_producers)
    else:
        if isinstance(protect, str):
            protect = [protect]
        unknown = sorted(set(protect) - set(names))
        if unknown:
            raise ValueError(
                f"protect names {unknown} are not evolvable layers of model "
                f"'{model.name}'; evolvable layers: {names}."
            )
        protected = {names.index(name) for name in protect}
    genomes = []
    for index, layer in enumerate(graph.evo_layers):
        synapses, clusters = layer.get_masks()
        kernel = ops.convert_to_numpy(layer.kernel).astype(np.float64)
        genomes.append(
            Genome(
                name=layer.name,
                kernel=kernel * synapses,
                synapse_mask=synapses,
                cluster_mask=clusters,
                precision=quantizers.get(layer.precision if precision is None else precision),
                channel_axes=layer._channel_axes,
                input_axis=kernel.ndim - 2 if kernel.ndim > 2 else 0,
                positions=layer.output_positions(),
                protected=index in protected,
                inputs=graph.inputs[index],
            )
        )
    return genomes, graph.evo_layers


def apply_masks(layers, masks, precision=None):
    """Writes sampled masks (and the offspring precision) into the layers."""
    for layer, (synapses, clusters) in zip(layers, masks, strict=True):
        layer.set_masks(synapse_mask=synapses, cluster_mask=clusters)
        if precision is not None:
            layer.precision = quantizers.get(precision)


def sample_offspring(
    model,
    cluster_factor=1.0,
    synapse_factor=1.0,
    precision=None,
    seed=0,
    generation=1,
    attempt=0,
    candidate=0,
    protect=None,
):
    """Samples an offspring from `model` (the trained parent) in place.

    Surviving weights are inherited; removed weights are zeroed. When
    `precision` is given every Evo layer is switched to it; a compiled
    model must then re-trace its train function
    (`model.make_train_function(force=True)`), which `EvolutionCallback`
    does for you.

    Args:
        model: Built model with Evo layers (the parent, modified in place).
        cluster_factor: `R_c` in (0, e] (the paper: (0, 1]; see `check_factor`).
        synapse_factor: `R_s` in (0, e].
        precision: Offspring precision (also used for `q`); None keeps the
            layers' own.
        seed, generation, attempt, candidate: Identify the draw (same values,
            same parent -> same masks).
        protect: See `genomes_from_model`.

    Returns:
        Dict layer name -> `(synapse_mask, cluster_mask)`.

    Example:

    >>> import keras
    >>> from keras_evosynth import evolvable
    >>> model = evolvable(keras.Sequential([keras.Input((6, 6, 1)),
    ...     keras.layers.Conv2D(8, 3), keras.layers.Flatten(),
    ...     keras.layers.Dense(2)]))
    >>> masks = sample_offspring(model, 0.5, 0.8, precision="int4", seed=1)
    >>> model.layers[0].count_clusters() < 8, model.layers[0].precision.bits
    (True, 4)
    """
    genomes, layers = genomes_from_model(model, precision, protect)
    masks = sample_masks(
        genomes, cluster_factor, synapse_factor, seed, generation, attempt, candidate
    )
    apply_masks(layers, masks, precision)
    return {layer.name: m for layer, m in zip(layers, masks, strict=True)}
