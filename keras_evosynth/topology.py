"""Which producer filter feeds each input channel of every evolvable layer.

When evolution drops a cluster (an output filter), the matching input
channel of every consumer carries no information any more, so the consumer's
synapses reading it are dead too. `channel_sources(model)` traces, through the
model's graph, where each input channel of each Evo layer comes from. It
walks the same flattened graph as compaction (`_graph.trace`: nested models
inlined, shared layers once per call) and reads the same table of channel
rules (`_channels.classify`, documented there), so a layer that compaction
sees through is seen through here too:

- `"channelwise"` / `"fakequant"` layers (BatchNormalization on the last
  axis, value-wise activations, scalar Rescaling, pooling, dropout/noise,
  padding/cropping, up-sampling, channel-keeping Reshape, ...): a channel
  keeps its source;
- `"concat"` (Concatenate on the channel axis) stacks its inputs' sources;
- `"flatten"` (channels_last) maps channel `c` to all its positions;
- `"merge"` (`Add`, `Multiply`, `Average`, ...; 1-channel inputs broadcast)
  makes a channel that is dead only when it is dead in *every* input;
- an Evo layer's output channels are its own clusters; plain Conv2D/Dense
  and everything `"fixed"` (softmax, attention, channels_first data, unknown
  custom layers, ...) give *unknown* channels: never treated as dead.

Sources are numpy arrays of shape `(alternatives, channels)`: `producer`
(index into `evo_layers`, or `UNKNOWN`, or `NONE` for "no term") and
`cluster` (the producer's output channel). A channel is dead when every
alternative is dead or `NONE` (see `genetics.dead_inputs`).

Example:

>>> import keras
>>> from keras_evosynth import evolvable
>>> model = evolvable(keras.Sequential([
...     keras.Input((6, 6, 1)), keras.layers.Conv2D(2, 3, name="c"),
...     keras.layers.BatchNormalization(), keras.layers.Flatten(),
...     keras.layers.Dense(3, name="d")]))
>>> graph = channel_sources(model)
>>> [layer.name for layer in graph.evo_layers]
['c', 'd']
>>> graph.inputs[1].producer[0, :4].tolist(), graph.inputs[1].cluster[0, :4].tolist()
([0, 0, 0, 0], [0, 1, 0, 1])
>>> sorted(graph.output_producers)
[1]
"""

import dataclasses

import keras
import numpy as np

from keras_evosynth import _channels as ch
from keras_evosynth._graph import trace
from keras_evosynth.layers import EvoLayer

UNKNOWN = -1
NONE = -2

@dataclasses.dataclass
class Sources:
    """Where each channel of a tensor's last axis comes from.

    Attributes:
        producer: int array `(alternatives, channels)`: index of the Evo
            layer, `UNKNOWN` (-1) or `NONE` (-2, no contribution).
        cluster: int array of the same shape: the producer's output channel.
    """

    producer: np.ndarray
    cluster: np.ndarray

    @property
    def channels(self):
        return self.producer.shape[1]

    @classmethod
    def unknown(cls, channels):
        shape = (1, int(channels))
        return cls(np.full(shape, UNKNOWN), np.zeros(shape, dtype=np.int64))

    @classmethod
    def of_layer(cls, index, channels):
        return cls(np.full((1, channels), index), np.arange(channels)[None, :].copy())


@dataclasses.dataclass
class ChannelGraph:
    """What `channel_sources` returns.

    Attributes:
        evo_layers: The Evo layers in topological order (`_walk` order).
        inputs: One `Sources` per Evo layer describing its input channels
            (last input axis); None when the layer is not reached by the
            analysis. A layer called on several inputs (shared) gets the
            alternatives of every call, so a channel is dead only if dead in
            all of them.
        output_producers: Indices of Evo layers whose output channels reach
            a model output through channel-preserving layers (the
            classifier, detection heads): the default protected layers.
    """

    evo_layers: list
    inputs: list
    output_producers: set


def _stack_alternatives(parts):
    """Stacks per-input `Sources` along the channel axis (Concatenate)."""
    depth = max(p.producer.shape[0] for p in parts)
    producers, clusters = [], []
    for p in parts:
        pad = depth - p.producer.shape[0]
        producers.append(np.concatenate([p.producer, np.full((pad, p.channels), NONE)], axis=0))
        clusters.append(np.concatenate([p.cluster, np.zeros((pad, p.channels), np.int64)], 0))
    return Sources(np.concatenate(producers, 1), np.concatenate(clusters, 1))


def _merge_alternatives(parts, channels=None):
    """Union of alternatives (element-wise merge, shared-layer calls); a
    1-channel part broadcasts to `channels`."""
    channels = channels or parts[0].channels
    return Sources(
        np.concatenate([np.broadcast_to(p.producer, (len(p.producer), channels))
                        for p in parts], 0),
        np.concatenate([np.broadcast_to(p.cluster, (len(p.cluster), channels))
                        for p in parts], 0),
    )  # fmt: skip


def _propagate(kind, node, in_sources, specs):
    """Sources of a non-Evo node's output from its inputs' (None: unknown)."""
    if kind in ("channelwise", "fakequant"):
        return in_sources[0]
    if kind == "flatten":
        shape = specs[node.inputs[0]].shape
        if None in shape[1:]:
            return None
        repeats = int(np.prod(shape[1:-1], dtype=np.int64))
        (src,) = in_sources
        return Sources(np.tile(src.producer, (1, repeats)), np.tile(src.cluster, (1, repeats)))
    if kind == "concat":
        return _stack_alternatives(in_sources)
    if kind == "merge":
        return _merge_alternatives(in_sources, ch.channels(specs[node.outputs[0]]))
    return None  # "synaptic" (a plain layer), "depthwise", "fixed"


def channel_sources(model):
    """Traces where every input channel of every Evo layer comes from.

    Args:
        model: A built functional or Sequential Keras model (nested models
            are inlined, as compaction sees them).

    Returns:
        A `ChannelGraph`.
    """
    return tensor_sources(model)[0]


def tensor_sources(model, graph=None):
    """`channel_sources` plus the `Sources` of every tensor of the traced
    graph (for walkers of the same graph, e.g. the latency table's ops).

    Args:
        model: A built functional or Sequential Keras model.
        graph: Its `_graph.trace` (traced here when None).

    Returns:
        `(channel_graph, sources)`: a `ChannelGraph` and a dict from every
        tensor id of `graph` to its `Sources` (unknown channels where nothing
        is traced; None for a tensor without a channel axis).
    """
    from keras_evosynth.conversion import evo_layers as evo_layers_of

    evo_layers = evo_layers_of(model)
    index_of = {id(layer): i for i, layer in enumerate(evo_layers)}
    inputs = [None] * len(evo_layers)
    graph = trace(model, "channel_sources()") if graph is None else graph
    known = {}  # tid -> Sources of its channels

    def sources_of(tid):
        if tid not in known:
            channels = ch.channels(graph.specs[tid])
            known[tid] = None if channels is None else Sources.unknown(channels)
        return known[tid]

    for node in graph.nodes:
        layer = node.layer
        if isinstance(layer, EvoLayer):
            if not ch.channels_last(layer) or id(layer) not in index_of or len(node.inputs) != 1:
                continue  # its output stays unknown
            src, i = sources_of(node.inputs[0]), index_of[id(layer)]
            if getattr(layer, "groups", 1) != 1:
                src = None  # a grouped kernel's input axis spans one group, not the input
            if src is not None:  # a shared layer: the alternatives of every call
                inputs[i] = src if inputs[i] is None else _merge_alternatives([inputs[i], src])
            known[node.outputs[0]] = Sources.of_layer(i, layer.cluster_mask.shape[0])
            continue
        kind, _ = ch.classify(node, graph.specs, shared=False)
        in_sources = [sources_of(tid) for tid in node.inputs]
        if None in in_sources or len(node.outputs) != 1:
            continue
        out = _propagate(kind, node, in_sources, graph.specs)
        if out is not None:
            known[node.outputs[0]] = out
    producers = set()
    for tid in keras.tree.flatten(graph.outputs):
        sources = known.get(tid)
        if sources is not None:
            producers.update(int(p) for p in np.unique(sources.producer) if p >= 0)
    for tid in graph.specs:
        sources_of(tid)
    return ChannelGraph(evo_layers, inputs, producers), known
