"""The Keras side: a model's Evo layers read into genomes, masks written back."""

import numpy as np
from keras import ops

from keras_evosynth import quantizers, topology
from keras_evosynth.genetics.genome import Genome
from keras_evosynth.genetics.sampling import sample_masks


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
