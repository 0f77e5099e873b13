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

from keras_evosynth import _channels as ch
from keras_evosynth import genetics, topology
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


def _channel_odds(op, alive, kept=None):
    """`(cin, cout)` per-channel odds of being live (bool or probability
    vectors; None for fixed counts) given every Evo layer's cluster odds;
    with `kept` (`_Merges.kept` of them) a merged channel counts as kept
    as often as compaction keeps it."""
    cin = None
    if op.sources is not None and not _runs_on_input(op):  # its odds hold the input's
        if kept is None:
            cin = genetics.alive_probability(op.sources, alive)
        else:  # every alternative of a merged channel has its kept odds
            cin = genetics.source_odds(op.sources, kept).max(axis=0)
    if kept is not None:
        alive = kept
    cout = None
    if op.evo_index is not None:
        cout = np.asarray(alive[op.evo_index], np.float64)
        if op.kind == "depthwise":  # a channel runs if its input and an output live
            out = cout.reshape(-1, op.signature["multiplier"])
            cin = (1.0 if cin is None else cin) * (1.0 - np.prod(1.0 - out, axis=1))
            cout = None
    return cin, cout


def _runs_on_input(op):
    """An Evo depthwise convolution of multiplier 1 with known inputs: its
    output channel is live only where its filter and its input channel are
    (compaction folds it into a constant otherwise)."""
    return (op.kind == "depthwise" and op.evo_index is not None and op.sources is not None
            and op.signature["multiplier"] == 1)


def _live_channels(op, alive, kept=None):
    """`(cin, cout)` (expected) live channels of `op`, at least 1 each."""
    cin, cout = _channel_odds(op, alive, kept)
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
    otherwise; a channel that an Add or Multiply merges is kept for all
    its inputs when any of them lives there, as compaction keeps it), and
    the table's costs are read there. The result is scaled
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
        self._readers = _depthwise_readers(self.ops, [p.size for p in self.p_c])
        analysis = ChannelAnalysis(model, remove_channels=True, dead=_sampled(genomes))
        self._pinned = _pinned(analysis.keep, self.ops, genomes)
        self._merges = _coupled(self.ops, self._graph, self.ops.sources, analysis.const,
                                [p.size for p in self.p_c])
        self._depthwise = [(op.evo_index, op.sources) for op in self.ops if _runs_on_input(op)]
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
        inputs = [(dw, genetics.alive_probability(src, odds)) for dw, src in self._depthwise]
        for producer, (depthwise, channels) in self._readers.items():
            odds[producer] = odds[producer] * np.where(
                channels >= 0, odds[depthwise][np.maximum(channels, 0)], 1.0)
        for dw, alive in inputs:  # its channel runs only on a live input channel
            odds[dw] = odds[dw] * alive
        odds = self._with_pinned(odds)
        dead = frozenset(i for i, (g, o) in enumerate(zip(self.genomes, odds, strict=True))
                         if not g.protected and not np.any(o))
        if dead not in self._vanish:
            self._vanish[dead] = _vanished(self._graph, self.ops, dead) if dead else set()
        gone = self._vanish[dead]
        kept = None if self._merges is None else self._merges.kept(odds)
        total = 0.0
        for index, (op, entry) in enumerate(zip(self.ops, self.entries, strict=True)):
            if index in gone:
                continue
            cin, cout = _live_channels(op, odds, kept)
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


def _sampled(genomes):
    return [g.name for g in genomes if not g.protected]


def _pinned(keep, ops, genomes):
    """Per genome, the filters compaction keeps even when their masks kill
    them (1.0; None where there are none): channels that a layer it cannot
    see through reads whole (a `keras.ops` call such as MobileNetV3's
    hard-swish, a layer `evolvable` skipped, a merge of unequal widths).
    Cutting them saves no latency, so their odds never drop below 1.
    `keep`: the channel analysis's with every sampled layer dead."""
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


def _coupled(ops, graph, sources, const, sizes):
    """The filters a merge layer joins across Evo layers, as groups
    `(producers, clusters, zero, always)`: one per set of filters that land
    on one merged channel; `zero` marks the members a Multiply reads as a
    constant 0 once they are dead (`const`: the analysis with every sampled
    layer dead), `always` a channel an unknown source shares. An Add
    (Subtract, Average, Maximum, Minimum) keeps its channel for all inputs
    when any input lives there, transitively through chained Adds as
    compaction's union; a Multiply keeps it unless every input is dead or
    one of its zero members is. `sources`: the traced tensors' `Sources`;
    `sizes`: every genome's cluster count. Returns a `_Merges` (None when
    the network merges nothing)."""
    additive = {node.outputs[0] for node in graph.nodes
                if isinstance(node.layer, _ADDITIVE) and node.outputs}
    parent, always = {}, set()

    def find(node):
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for op in ops:
        rows = op.sources
        if op.out_tid not in additive or rows is None or rows.producer.shape[0] < 2:
            continue
        for producers, clusters in zip(rows.producer.T, rows.cluster.T, strict=True):
            nodes = [(int(p), int(c)) for p, c in zip(producers, clusters, strict=True) if p >= 0]
            for node in nodes[1:]:
                parent[find(node)] = find(nodes[0])
            if nodes and (producers == topology.UNKNOWN).any():
                always.add(nodes[0])
    members = {}
    for node in list(parent):
        members.setdefault(find(node), []).append(node)
    roots = {find(node) for node in always}
    groups = [(np.array([p for p, _ in nodes]), np.array([c for _, c in nodes]),
               np.zeros(len(nodes), bool), root in roots)
              for root, nodes in members.items() if len(nodes) > 1 or root in roots]
    for node in graph.nodes:
        if not isinstance(node.layer, keras.layers.Multiply) or len(node.inputs) < 2:
            continue
        ins = [sources.get(t) for t in node.inputs]
        width = ch.channels(graph.specs[node.outputs[0]])
        if any(s is None or s.producer.shape != (1, width) for s in ins):
            continue  # a broadcast or an input of several alternatives: left out
        for j in range(width):
            nodes = [(int(s.producer[0, j]), int(s.cluster[0, j]), bool(const[t][j] == 0))
                     for s, t in zip(ins, node.inputs, strict=True) if s.producer[0, j] >= 0]
            if nodes:
                p, c, z = (np.array(v) for v in zip(*nodes, strict=True))
                unknown = any(s.producer[0, j] == topology.UNKNOWN for s in ins)
                groups.append((p, c, z, unknown))
    return _Merges.of(groups, sizes) if groups else None


_ADDITIVE = (keras.layers.Add, keras.layers.Subtract, keras.layers.Average,
             keras.layers.Maximum, keras.layers.Minimum)


class _Merges:
    """`_coupled`'s groups as flat arrays, so that `kept` is a few numpy
    calls per `at_odds` (a ResNet50 has ~10,000 merged filters)."""

    def __init__(self, index, group, zero, always, offsets):
        self.index, self.group, self.zero, self.always = index, group, zero, always
        self.offsets = offsets

    @classmethod
    def of(cls, groups, sizes):
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        index = np.concatenate([offsets[p] + c for p, c, _, _ in groups])
        group = np.concatenate([np.full(len(p), k) for k, (p, _, _, _) in enumerate(groups)])
        zero = np.concatenate([z for _, _, z, _ in groups])
        always = np.array([a for _, _, _, a in groups], bool)
        return cls(index, group, zero, always, offsets)

    def kept(self, odds):
        """`odds` with every merged filter's odds replaced by the odds that
        compaction keeps its merged channel (the largest, for a filter that
        several merges read)."""
        flat = np.concatenate([np.asarray(o, np.float64) for o in odds])
        own = flat[self.index]
        count = self.always.size
        dead = np.ones(count)
        np.multiply.at(dead, self.group, 1.0 - own)
        gate = np.ones(count)
        np.multiply.at(gate, self.group[self.zero], own[self.zero])
        zero = np.bincount(self.group[self.zero], minlength=count) > 0
        value = np.where(zero, gate, np.where(self.always, 1.0, 1.0 - dead))
        best = np.full(flat.size, -1.0)
        np.maximum.at(best, self.index, value[self.group])
        flat = np.where(best >= 0.0, best, flat)
        return np.split(flat, self.offsets[1:-1])


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
