"""Heredity odds and the seeded draws of the generative model (DESIGN.md §2).

Pure numpy: a synapse's and a cluster's survival probability from the
parent's (quantized) weights, the environmental factors' range, and the
per-layer random generator that makes a lineage reproducible.
"""

import numpy as np

from keras_evosynth import quantizers


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
