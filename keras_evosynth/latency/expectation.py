"""What compaction keeps, and the expected latency of an offspring.

`kept_channels` counts the live channels of each op as compaction keeps
them (compaction's own analysis); `_vanished` / `_unreached` find the ops
that compaction drops altogether (a removed branch). `LatencyExpectation`
reads the table's costs at the *expected* live channels under an
offspring's cluster odds: the function the latency-target environment
solves against.
"""

import keras
import numpy as np

from keras_evosynth import genetics
from keras_evosynth.channel_analysis import ChannelAnalysis
from keras_evosynth.latency.curve import _whole
from keras_evosynth.latency.ops import model_ops


def kept_channels(model):
    """`(ops, [(cin, cout)])`: the ops of `model` and the channels its
    compacted version keeps for each (compaction's own analysis: dead
    filters, inputs that only dead consumers read, constants folded,
    channels coupled by Add/Multiply).

    Example:

    >>> import keras
    >>> from keras_evosynth import evolvable
    >>> m = evolvable(keras.Sequential([keras.Input((6, 6, 2)),
    ...     keras.layers.Conv2D(4, 3, name="c"), keras.layers.Flatten(),
    ...     keras.layers.Dense(2, name="d")]))
    >>> m.get_layer("c").set_masks(cluster_mask=[True, False, True, False])
    >>> [(op.name, n) for op, n in zip(*kept_channels(m))]
    [('c', (2, 2)), ('d', (32, 2))]
    """
    ops, live, _ = _kept_channels(model)
    return ops, live


def _kept_channels(model):
    """`kept_channels` plus the traced graph. An op whose output compaction
    drops altogether (a removed branch, a reduction only it read) keeps
    `(0, 0)`: it costs nothing."""
    compactor = ChannelAnalysis(model, remove_channels=True)
    graph = compactor.graph
    ops = model_ops(model, graph=graph, untimed="ignore")  # measure() refused or recorded them
    gone = _unreached(graph, ops, {t for t, keep in compactor.keep.items() if not keep.any()})
    live = []
    for index, op in enumerate(ops):
        cin = int(compactor.keep[op.in_tid].sum())
        cout = int(compactor.keep[op.out_tid].sum())
        if index in gone:
            live.append((0, 0))
            continue
        if op.kind == "channel":
            cin = cout
        elif op.kind == "depthwise":
            cin = cout // op.signature["multiplier"]
        live.append((max(cin, 1), cout if op.two_d else max(cin, 1)))
    return ops, live, graph


def _vanished(graph, ops, dead):
    """Indices of `ops` that compaction drops once the Evo layers `dead`
    (genome indices) lose every filter: their outputs, what is computed
    from those alone by the layers between ops (batch norms, activations,
    pooling, a concatenation of removed parts only), and every op whose
    output only removed ops read (the reduction before a removed 3x3).

    Example: a dead layer `b` takes its reduction `a` with it; `c`, read
    by the output next to `b`, stays.

    >>> import keras
    >>> from keras_evosynth import evolvable
    >>> x = keras.Input((4, 4, 3))
    >>> a = keras.layers.Conv2D(2, 1, name="a")(x)
    >>> b = keras.layers.Conv2D(2, 3, padding="same", name="b")(a)
    >>> c = keras.layers.Conv2D(2, 1, name="c")(x)
    >>> y = keras.layers.Concatenate(name="cat")([b, c])
    >>> m = evolvable(keras.Model(x, keras.layers.Conv2D(2, 1, name="head")(y)))
    >>> ops, _, graph = _kept_channels(m)
    >>> sorted(ops[i].name for i in _vanished(graph, ops, {1}))
    ['a', 'b']
    """
    return _unreached(graph, ops, {op.out_tid for op in ops if op.evo_index in dead})


def _unreached(graph, ops, removed):
    """Indices of `ops` whose output is in `removed` (tensor ids), computed
    from removed tensors alone by non-synaptic layers, or read by no layer
    that leads to a model output (`_vanished`)."""
    synaptic = {op.out_tid for op in ops if op.kind != "channel"}
    removed = set(removed)
    for node in graph.nodes:
        if (node.inputs and node.outputs[0] not in synaptic
                and all(t in removed for t in node.inputs)):
            removed.update(node.outputs)
    needed = set(keras.tree.flatten(graph.outputs))
    for node in reversed(graph.nodes):
        if any(t in needed and t not in removed for t in node.outputs):
            needed.update(node.inputs)
    return {i for i, op in enumerate(ops) if op.out_tid in removed or op.out_tid not in needed}


def _channel_odds(op, alive):
    """`(cin, cout)` per-channel odds of being live (bool or probability
    vectors; None for fixed counts) given every Evo layer's cluster odds."""
    cin = None if op.sources is None else genetics.alive_probability(op.sources, alive)
    cout = None
    if op.evo_index is not None:
        cout = np.asarray(alive[op.evo_index], np.float64)
        if op.kind == "depthwise":  # a channel runs if its input and an output live
            out = cout.reshape(-1, op.signature["multiplier"])
            cin = (1.0 if cin is None else cin) * (1.0 - np.prod(1.0 - out, axis=1))
            cout = None
    return cin, cout


def _live_channels(op, alive):
    """`(cin, cout)` (expected) live channels of `op`, at least 1 each."""
    cin, cout = _channel_odds(op, alive)
    cin = op.cin if cin is None else float(np.sum(cin))
    if op.kind in ("channel", "depthwise"):
        cout = cin
    else:
        cout = op.cout if cout is None else float(np.sum(cout))
    return max(cin, 1.0), max(cout, 1.0)


class LatencyExpectation:
    """`f(cluster_factors, synapse_factor) -> expected predicted ms`.

    Live channel counts are replaced by their expectations under the
    offspring's cluster odds `min(1, R_l p_c)` (input channels through their
    producers' odds, like `genetics.expectation`; a filter read only by
    depthwise filters lives only if they do, as compaction removes it
    otherwise), and the table's costs are read there. The result is scaled
    so that the parent's expectation equals `table.predict(parent)` (the
    compaction-exact figure the lineage records), absorbing what this
    forward estimate cannot see. A sampled layer whose odds are all 0 (a
    branch the environment removes) is gone, with every op that compaction
    drops with it (`_vanished`): those cost nothing. `current` is the
    parent's predicted latency.

    Attributes:
        current: Predicted latency of the parent (ms).
        genomes: The parent's genomes.
        importance: Per-cluster accuracy importance of the parent's filters
            (`sensitivity.taylor_importance`), or None.
    """

    def __init__(self, table, model, genomes):
        self.table = table
        self.genomes = genomes
        self.ops, live, self._graph = _kept_channels(model)
        self._vanish = {}  # frozenset of removed genomes -> op indices
        self.anchor = table._anchor(self.ops, model.name)
        self.entries = [table._entry(op) for op in self.ops]
        self.p_c = [g.probabilities()[0] for g in genomes]
        self._pinned = _pinned(model, self.ops, genomes)
        self._readers = _depthwise_readers(self.ops, [p.size for p in self.p_c])
        self.importance = None  # per-cluster Taylor importance, set by the environment
        self.calibration = 1.0
        raw = self.at_odds([(p > 0).astype(np.float64) for p in self.p_c])
        self.current = table._predict(self.ops, live, model.name)
        self.calibration = self.current / raw if raw > 0 else 1.0

    def odds(self, cluster_factors):
        """Cluster odds `min(1, R_l p_c)` per genome (protected: as is)."""
        factors = np.broadcast_to(np.asarray(cluster_factors, np.float64), (len(self.genomes),))
        return [
            p if g.protected else np.minimum(1.0, r * p)
            for g, p, r in zip(self.genomes, self.p_c, factors, strict=True)
        ]

    def __call__(self, cluster_factors, synapse_factor=None):
        """Expected predicted ms at per-layer (or one) cluster factors."""
        return self.at_odds(self.odds(cluster_factors))

    def at_odds(self, odds):
        """Expected predicted ms at given per-genome cluster odds."""
        odds = self._with_pinned(odds)
        for producer, (depthwise, channels) in self._readers.items():
            odds[producer] = odds[producer] * np.where(
                channels >= 0, odds[depthwise][np.maximum(channels, 0)], 1.0)
        odds = self._with_pinned(odds)
        dead = frozenset(i for i, (g, o) in enumerate(zip(self.genomes, odds, strict=True))
                         if not g.protected and not np.any(o))
        if dead not in self._vanish:
            self._vanish[dead] = _vanished(self._graph, self.ops, dead) if dead else set()
        gone = self._vanish[dead]
        total = 0.0
        for index, (op, entry) in enumerate(zip(self.ops, self.entries, strict=True)):
            if index in gone:
                continue
            cin, cout = _live_channels(op, odds)
            total += entry.cost(cin, cout) if op.two_d else entry.cost(cin)
        return self.calibration * _whole(self.anchor, total)

    def _with_pinned(self, odds):
        return [o if p is None else np.maximum(o, p)
                for o, p in zip(odds, self._pinned, strict=True)]

    def kept_filters(self, cluster_factors):
        """Expected fraction of the parent's sampled (unprotected) filters
        the offspring keeps at these factors."""
        return self.kept_filters_at(self.odds(cluster_factors))

    def kept_filters_at(self, odds):
        """`kept_filters` at given per-genome cluster odds."""
        live = kept = 0.0
        for g, p, o in zip(self.genomes, self.p_c, odds, strict=True):
            if not g.protected:
                live += float((p > 0).sum())
                kept += float(o.sum())
        return kept / live if live else 1.0

    def savings(self, step=0.3):
        """Latency saved per filter removed, one value per genome (ms).

        Layer `l`'s saving is `(f(p) - f(p with layer l's odds scaled by
        1 - step)) / (step * live filters of l)` at the parent (all odds 1):
        a finite step, since costs move in tiles. Protected layers save 0.
        """
        base_odds = [(p > 0).astype(np.float64) for p in self.p_c]
        base = self.at_odds(base_odds)
        result = np.zeros(len(self.genomes))
        for index, g in enumerate(self.genomes):
            live = base_odds[index].sum()
            if g.protected or live < 1:
                continue
            cut = list(base_odds)
            cut[index] = base_odds[index] * (1.0 - step)
            result[index] = (base - self.at_odds(cut)) / (step * live)
        return result


def _pinned(model, ops, genomes):
    """Per genome, the filters compaction keeps even when their masks kill
    them (1.0; None where there are none): channels that a layer it cannot
    see through reads whole (a `keras.ops` call such as MobileNetV3's
    hard-swish, a layer `evolvable` skipped, a merge of unequal widths).
    Cutting them saves no latency, so their odds never drop below 1."""
    names = [g.name for g in genomes if not g.protected]
    if not names:
        return [None] * len(genomes)
    keep = ChannelAnalysis(model, remove_channels=True, dead=names).keep
    outputs = {op.evo_index: op.out_tid for op in ops if op.evo_index is not None}
    pinned = []
    for index, genome in enumerate(genomes):
        kept = keep.get(outputs.get(index))
        if (genome.protected or kept is None or not kept.any()
                or kept.size != genome.cluster_mask.size):
            pinned.append(None)
        else:
            pinned.append(kept.astype(np.float64))
    return pinned


def _depthwise_readers(ops, sizes):
    """`{producer: (depthwise, channel per producer cluster or -1)}` for
    Evo layers whose every synaptic reader is one multiplier-1 Evo
    depthwise convolution (MobileNet's expand -> depthwise)."""
    readers = {}
    for op in ops:
        if op.kind == "channel" or op.sources is None:
            continue
        for producer in np.unique(op.sources.producer):
            if producer >= 0:
                readers.setdefault(int(producer), []).append(op)
    result = {}
    for producer, consumers in readers.items():
        (op,) = consumers if len(consumers) == 1 else (None,)
        if (op is None or op.kind != "depthwise" or op.evo_index is None
                or op.signature["multiplier"] != 1 or op.sources.producer.shape[0] != 1):
            continue
        channels = np.full(sizes[producer], -1)
        here = op.sources.producer[0] == producer
        channels[op.sources.cluster[0][here]] = np.nonzero(here)[0]
        result[producer] = (op.evo_index, channels)
    return result
