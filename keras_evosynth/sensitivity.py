"""How much accuracy each filter carries: first-order Taylor importance.

The heredity term says which filter of a layer is weak (its weights against
the layer's own), not how much a layer matters to the task. Removing filter
`c` changes the loss by about `-sum_{w in c} g_w w` (first-order Taylor
expansion, `g` the loss gradient; Molchanov et al., 2017/2019), so its
importance is

    I_c = mean over batches of (sum_{w in c} g_w * w)^2

on a few batches of training data. `taylor_importance(model, data)` returns
it per cluster of every Evo layer, in `genetics.genomes_from_model` order;
the latency environment divides a layer's pressure by the mean importance of
its live filters (`environments.latency_target.pressures(...,
importance=...)`), so that layers carrying the accuracy are cut less for the
same latency saved.
"""

import keras
import numpy as np

from keras_evosynth._graph import check_graph_model


def taylor_importance(model, data, batches=4, batch_size=32):
    """Per-cluster first-order Taylor importance of every Evo layer.

    Args:
        model: A compiled model with Evo layers (its compiled loss is used).
        data: `(x, y)` training samples (arrays or dicts of arrays, batch
            first), or `(x, y, sample_weight)`.
        batches: Batches to average over.
        batch_size: Samples per batch.

    Returns:
        A list of float64 arrays, one per Evo layer (the
        `genetics.genomes_from_model` order), one entry per cluster.

    Raises:
        ValueError: `model` is not compiled or has no Evo layer, or `data`
            is not `(x, y)`.

    Example:

    >>> import numpy as np
    >>> from keras_evosynth import evolvable
    >>> m = evolvable(keras.Sequential([keras.Input((3,)),
    ...     keras.layers.Dense(4, name="h"), keras.layers.Dense(1, name="out")]))
    >>> m.compile("sgd", "mse")
    >>> x, y = np.ones((8, 3), "float32"), np.zeros((8, 1), "float32")
    >>> [v.shape for v in taylor_importance(m, (x, y), batches=1)]
    [(4,), (1,)]
    """
    import tensorflow as tf

    from keras_evosynth import topology

    check_graph_model(model, "taylor_importance()")
    if not getattr(model, "compiled", False):
        raise ValueError(
            f"taylor_importance(): model '{model.name}' is not compiled; its loss is needed."
        )
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
        raise ValueError("taylor_importance(): data must be (x, y) or (x, y, sample_weight).")
    layers = topology.channel_sources(model).evo_layers  # genomes_from_model's order
    if not layers:
        raise ValueError(
            f"taylor_importance(): model '{model.name}' has no evolvable layer; convert it "
            "first with keras_evosynth.evolvable(model)."
        )
    kernels = [layer.kernel for layer in layers]
    totals = [np.zeros(_clusters(layer)) for layer in layers]
    count = keras.tree.flatten(data[0])[0].shape[0]
    steps = max(1, min(batches, -(-count // batch_size)))
    for step in range(steps):
        part = slice(step * batch_size, (step + 1) * batch_size)
        x, y, *weight = keras.tree.map_structure(lambda a, part=part: a[part], tuple(data))
        with tf.GradientTape() as tape:
            y_pred = model(x, training=False)
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred,
                                      sample_weight=weight[0] if weight else None,
                                      training=False)
        grads = tape.gradient(loss, kernels)
        for i, (kernel, grad) in enumerate(zip(kernels, grads, strict=True)):
            if grad is None:
                continue
            product = keras.ops.convert_to_numpy(grad * kernel).astype(np.float64)
            totals[i] += product.reshape(-1, totals[i].size).sum(axis=0) ** 2
    return [t / steps for t in totals]


def _clusters(layer):
    shape = tuple(layer.kernel.shape)
    return int(np.prod(shape[len(shape) - layer._channel_axes:]))
