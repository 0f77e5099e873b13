"""`summary(model)`: synapses, clusters, MACs, bits and bytes per layer."""

import dataclasses
import math

import keras
import numpy as np

from keras_evosynth.conversion import _walk
from keras_evosynth.layers import EvoLayer
from keras_evosynth.layers.base import output_positions

_PLAIN_SYNAPTIC = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.Dense,
)


@dataclasses.dataclass
class LayerStats:
    """Statistics of one synapse-bearing layer.

    Attributes:
        name: Layer name.
        kind: Layer class name.
        synapses: Non-zero weights of the (masked, quantized) kernel.
        total_synapses: Kernel size (all weights, live or not).
        clusters: Live output filters/units.
        total_clusters: All output filters/units.
        macs: Multiply-accumulates per example (None if the spatial size is
            unknown).
        bits: Weight precision.
        bytes: Live synapses at `bits` plus live biases at 32 bits.
    """

    name: str
    kind: str
    synapses: int
    total_synapses: int
    clusters: int
    total_clusters: int
    macs: int | None
    bits: int
    bytes: int


@dataclasses.dataclass
class ModelStats:
    """What `summary` returns: per-layer rows and model totals.

    Attributes:
        layers: One `LayerStats` per synapse-bearing layer.
        other_bytes: float32 bytes of all other weights (BatchNorm, ...).
    """

    layers: list
    other_bytes: int

    @property
    def synapses(self):
        return sum(row.synapses for row in self.layers)

    @property
    def total_synapses(self):
        return sum(row.total_synapses for row in self.layers)

    @property
    def clusters(self):
        return sum(row.clusters for row in self.layers)

    @property
    def total_clusters(self):
        return sum(row.total_clusters for row in self.layers)

    @property
    def macs(self):
        if any(row.macs is None for row in self.layers):
            return None
        return sum(row.macs for row in self.layers)

    @property
    def bytes(self):
        return sum(row.bytes for row in self.layers) + self.other_bytes

    def to_dict(self):
        """JSON-ready dict: `layers` rows plus the totals."""
        return {
            "layers": [dataclasses.asdict(row) for row in self.layers],
            "synapses": self.synapses,
            "total_synapses": self.total_synapses,
            "clusters": self.clusters,
            "total_clusters": self.total_clusters,
            "macs": self.macs,
            "bytes": self.bytes,
            "other_bytes": self.other_bytes,
        }

    def table(self):
        """The statistics as a fixed-width text table."""
        header = ("layer", "type", "synapses", "clusters", "MACs", "bits", "bytes")
        rows = [
            (
                r.name,
                r.kind,
                f"{r.synapses}/{r.total_synapses}",
                f"{r.clusters}/{r.total_clusters}",
                "?" if r.macs is None else f"{r.macs:,}",
                str(r.bits),
                f"{r.bytes:,}",
            )
            for r in self.layers
        ]
        rows.append(
            (
                "total",
                "",
                f"{self.synapses}/{self.total_synapses}",
                f"{self.clusters}/{self.total_clusters}",
                "?" if self.macs is None else f"{self.macs:,}",
                "",
                f"{self.bytes:,} (+{self.other_bytes:,} other)",
            )
        )
        widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
        line = "  ".join(f"{{:<{w}}}" for w in widths)
        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        out = [line.format(*header), rule]
        out += [line.format(*row) for row in rows[:-1]]
        return "\n".join(out + [rule, line.format(*rows[-1])])

    def __str__(self):
        return self.table()


def _plain_output_shape(layer):
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):
        return None


def layer_stats(layer):
    """`LayerStats` for one Evo layer or plain Conv2D/DepthwiseConv2D/Dense."""
    if isinstance(layer, EvoLayer):
        kernel = keras.ops.convert_to_numpy(layer.effective_kernel())
        bias = layer.bias
        bits = layer.precision.bits
        positions = layer.output_positions()
    else:
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        bias = layer.bias
        bits = 32
        positions = output_positions(layer, _plain_output_shape(layer))
    channel_axes = 2 if isinstance(layer, keras.layers.DepthwiseConv2D) else 1
    per_cluster = kernel.reshape(-1, math.prod(kernel.shape[-channel_axes:]))
    if isinstance(layer, EvoLayer):
        clusters = layer.count_clusters()
    else:
        clusters = int(np.count_nonzero(np.abs(per_cluster).sum(axis=0)))
    synapses = int(np.count_nonzero(kernel))
    live_bias = 0 if bias is None else clusters
    return LayerStats(
        name=layer.name,
        kind=type(layer).__name__,
        synapses=synapses,
        total_synapses=int(kernel.size),
        clusters=clusters,
        total_clusters=int(per_cluster.shape[1]),
        macs=None if positions is None else synapses * positions,
        bits=bits,
        bytes=math.ceil(synapses * bits / 8) + 4 * live_bias,
    )


def summary(model, print_fn=print):
    """Per-layer and total synapses, clusters, MACs, bits and size.

    Works on models with Evo layers and on plain Keras models (then every
    Conv2D/DepthwiseConv2D/Dense counts at 32 bits), so an ancestor and its
    compacted offspring can be compared with the same numbers.

    Args:
        model: A built Keras model.
        print_fn: Called with the table; None to print nothing.

    Returns:
        A `ModelStats`.

    Example:

    >>> import keras
    >>> from keras_evosynth import evolvable
    >>> dense = keras.layers.Dense(3, kernel_initializer="ones")
    >>> model = evolvable(keras.Sequential([keras.Input((4,)), dense]), "int8")
    >>> stats = summary(model, print_fn=None)
    >>> stats.synapses, stats.macs, stats.bytes
    (12, 12, 24)
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"summary() expects a keras.Model, got {type(model).__name__}.")
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built.")
    rows, other_bytes = [], 0
    for layer in _walk(model):
        if isinstance(layer, (EvoLayer,) + _PLAIN_SYNAPTIC):
            rows.append(layer_stats(layer))
        else:
            other_bytes += sum(4 * int(np.prod(w.shape)) for w in layer.weights)
    stats = ModelStats(layers=rows, other_bytes=other_bytes)
    if print_fn is not None:
        print_fn(stats.table())
    return stats
