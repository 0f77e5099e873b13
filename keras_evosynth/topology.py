"""Which producer filter feeds each input channel of every evolvable layer.

When evolution drops a cluster (an output filter), the matching input
channel of every consumer carries no information any more, so the consumer's
synapses reading it are dead too. `channel_sources(model)` traces, through the
model's functional graph, where each input channel of each Evo layer comes
from:

- through channel-preserving layers (BatchNormalization on the last axis,
  activations, pooling, dropout/noise, padding/cropping, up-sampling, global
  pooling, `FakeQuantActivation`, ...) a channel keeps its source;
- `Concatenate` on the channel axis stacks its inputs' sources;
- `Flatten` (channels_last) maps channel `c` to all its positions;
- element-wise merges (`Add`, `Multiply`, `Average`, ...) make a channel
  that is dead only when it is dead in *every* input;
- anything else (reshapes, attention, unknown custom layers, nested model
  boundaries, channels_first data) is *unknown*: never treated as dead.

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

from keras_evosynth.layers import EvoLayer, FakeQuantActivation

UNKNOWN = -1
NONE = -2

# Layers that pass their input through unchanged at inference.
IDENTITY_AT_INFERENCE = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.AlphaDropout,
    keras.layers.Identity,
)

# Layers that act on each channel of the last axis on its own, so that a
# channel that carries no information keeps carrying none.
_CHANNEL_PRESERVING = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
    *IDENTITY_AT_INFERENCE,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Cropping3D,
    keras.layers.UpSampling1D,
    keras.layers.UpSampling2D,
    keras.layers.UpSampling3D,
    FakeQuantActivation,
)

_ELEMENTWISE_MERGE = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
)


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


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _stack_alternatives(parts):
    """Stacks per-input `Sources` along the channel axis (Concatenate)."""
    depth = max(p.producer.shape[0] for p in parts)
    producers, clusters = [], []
    for p in parts:
        pad = depth - p.producer.shape[0]
        producers.append(np.concatenate([p.producer, np.full((pad, p.channels), NONE)], axis=0))
        clusters.append(np.concatenate([p.cluster, np.zeros((pad, p.channels), np.int64)], 0))
    return Sources(np.concatenate(producers, 1), np.concatenate(clusters, 1))


def _merge_alternatives(parts):
    """Union of alternatives (element-wise merge, shared-layer calls)."""
    return Sources(
        np.concatenate([p.producer for p in parts], 0),
        np.concatenate([p.cluster for p in parts], 0),
    )


def _propagate(layer, index_of, in_sources, in_shapes):
    """Sources of `layer`'s output given its inputs' sources (None: unknown)."""
    if isinstance(layer, EvoLayer):
        if not _channels_last(layer) or id(layer) not in index_of:
            return None
        return Sources.of_layer(index_of[id(layer)], layer.cluster_mask.shape[0])
    if len(in_sources) == 1:
        (src,), (shape,) = in_sources, in_shapes
        if isinstance(layer, _CHANNEL_PRESERVING) and _channels_last(layer):
            return src
        if isinstance(layer, keras.layers.BatchNormalization):
            if layer.axis in (-1, len(shape) - 1):
                return src
        if (
            isinstance(layer, keras.layers.Flatten)
            and _channels_last(layer)
            and None not in shape[1:]
        ):
            repeats = int(np.prod(shape[1:-1], dtype=np.int64))
            return Sources(np.tile(src.producer, (1, repeats)), np.tile(src.cluster, (1, repeats)))
        return None
    if isinstance(layer, keras.layers.Concatenate):
        rank = len(in_shapes[0])
        if layer.axis in (-1, rank - 1) and all(len(s) == rank for s in in_shapes):
            return _stack_alternatives(in_sources)
        return None
    if isinstance(layer, _ELEMENTWISE_MERGE):
        widths = {s.channels for s in in_sources}
        if len(widths) == 1 and len({tuple(s) for s in in_shapes}) == 1:
            return _merge_alternatives(in_sources)
    return None


def _is_tensor_config(obj):
    return isinstance(obj, dict) and obj.get("class_name") == "__keras_tensor__"


def _tensor_refs(obj):
    """Flattens the serialized keras tensors in a node's args/kwargs."""
    if _is_tensor_config(obj):
        return [obj["config"]]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensor_refs(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensor_refs(v)]
    return []


def _as_triples(refs):
    """`[layer name, node index, tensor index]` triples of a config's
    `input_layers`/`output_layers` (a triple, a list, or a dict of them)."""
    if isinstance(refs, dict):
        return [t for value in refs.values() for t in _as_triples(value)]
    if refs and isinstance(refs[0], str):
        return [refs]
    return [t for ref in refs for t in _as_triples(ref)]


class _Tracer:
    """Walks one (possibly nested) model's graph and records sources."""

    def __init__(self, evo_layers):
        self.evo_layers = evo_layers
        self.index_of = {id(layer): i for i, layer in enumerate(evo_layers)}
        self.inputs = [None] * len(evo_layers)
        self.traced = {}

    def _record_input(self, layer, sources):
        i = self.index_of[id(layer)]
        if self.inputs[i] is None:
            self.inputs[i] = sources
        elif self.inputs[i].channels == sources.channels:
            self.inputs[i] = _merge_alternatives([self.inputs[i], sources])
        else:  # pragma: no cover - a shared layer always sees one width
            self.inputs[i] = Sources.unknown(sources.channels)

    def trace(self, model):
        """Traces `model`; returns the `Sources` of its outputs (or None)."""
        if isinstance(model, keras.Sequential):
            nodes = self._sequential_nodes(model)
            outputs = [(model.layers[-1].name, 0)] if model.layers else []
        else:
            config = model.get_config()
            nodes = self._functional_nodes(model, config)
            key = self._keys(config)
            outputs = [key(*t) for t in _as_triples(config["output_layers"])]
        known = {}
        for layer, out_key, refs in nodes:
            if isinstance(layer, keras.Model):
                if id(layer) not in self.traced:
                    self.traced[id(layer)] = self.trace(layer)
                nested = self.traced[id(layer)]
                if len(nested) == 1 and nested[0] is not None:
                    known[out_key] = nested[0]
                continue
            in_sources, in_shapes = [], []
            for ref_key, shape in refs:
                src = known.get(ref_key)
                if src is None and shape and shape[-1] is not None:
                    src = Sources.unknown(shape[-1])
                in_sources.append(src)
                in_shapes.append(shape)
            if any(s is None for s in in_sources):
                continue
            if isinstance(layer, EvoLayer) and len(in_sources) == 1 and _channels_last(layer):
                self._record_input(layer, in_sources[0])
            out = _propagate(layer, self.index_of, in_sources, in_shapes)
            if out is not None:
                known[out_key] = out
        return [known.get(k) for k in outputs]

    @staticmethod
    def _keys(config):
        counts = {c["name"]: len(c["inbound_nodes"]) for c in config["layers"]}

        # Tensors are keyed without the node index for single-node layers:
        # Keras numbers nested models' nodes inconsistently in its config.
        def key(name, node, tensor):
            return (name, tensor) if counts.get(name, 1) <= 1 else (name, node, tensor)

        return key

    def _sequential_nodes(self, model):
        nodes, previous = [], None
        for layer in model.layers:
            try:
                shape = tuple(layer.input.shape)
            except (AttributeError, ValueError):
                shape = None
            refs = [((previous, 0), shape)] if previous is not None else [(("__input__", 0), shape)]
            nodes.append((layer, (layer.name, 0), refs))
            previous = layer.name
        return nodes

    def _functional_nodes(self, model, config):
        key = self._keys(config)
        nodes = []
        for layer_config in config["layers"]:
            layer = model.get_layer(layer_config["name"])
            for n, node in enumerate(layer_config["inbound_nodes"]):
                refs = [
                    (key(*t["keras_history"]), tuple(t["shape"]))
                    for t in _tensor_refs(node["args"]) + _tensor_refs(node["kwargs"])
                ]
                nodes.append((layer, key(layer.name, n, 0), refs))
        return nodes


def channel_sources(model):
    """Traces where every input channel of every Evo layer comes from.

    Args:
        model: A built Keras model (Sequential or functional; nested models
            are analysed on their own, their boundaries are opaque).

    Returns:
        A `ChannelGraph`.
    """
    from keras_evosynth.conversion import _walk

    evo_layers = [layer for layer in _walk(model) if isinstance(layer, EvoLayer)]
    tracer = _Tracer(evo_layers)
    producers = set()
    for sources in tracer.trace(model):
        if sources is not None:
            producers.update(int(p) for p in np.unique(sources.producer) if p >= 0)
    return ChannelGraph(evo_layers, tracer.inputs, producers)
