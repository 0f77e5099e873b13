"""`evolvable()`: turn an existing Keras 3 model into one with Evo layers."""

import keras
import numpy as np

from keras_evosynth import quantizers
from keras_evosynth._graph import check_graph_model
from keras_evosynth.layers import EvoConv2D, EvoDense, EvoDepthwiseConv2D, EvoLayer

# Plain Keras layer type -> evolvable replacement (exact types: subclasses
# such as custom convolutions are not assumed to behave like their base).
_REPLACEMENTS = {
    keras.layers.Conv2D: EvoConv2D,
    keras.layers.DepthwiseConv2D: EvoDepthwiseConv2D,
    keras.layers.Dense: EvoDense,
}

# Weight-bearing layers with synapses we cannot (yet) mask.
_UNSUPPORTED = (
    keras.layers.Conv1D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
    keras.layers.DepthwiseConv1D,
    keras.layers.EinsumDense,
)


def _is_unsupported(layer):
    if type(layer) in _REPLACEMENTS or isinstance(layer, (EvoLayer, keras.Model)):
        return False
    if isinstance(layer, _UNSUPPORTED + tuple(_REPLACEMENTS)):
        return True
    # A custom layer carrying a kernel is a synapse-bearing layer we don't know.
    return any(
        w.path.split("/")[-1] in ("kernel", "depthwise_kernel", "pointwise_kernel")
        for w in layer.weights
    )


def unsupported_layers(model):
    """The layers of `model` (nested models included) that `evolvable`
    cannot mask: `SeparableConv2D`, grouped or 3-D convolutions, custom
    layers carrying a kernel, ... (`evolvable(..., skip_unsupported=True)`
    leaves them plain).

    >>> base = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.SeparableConv2D(4, 3),
    ...                          keras.layers.Conv2D(2, 1)])
    >>> [type(layer).__name__ for layer in unsupported_layers(base)]
    ['SeparableConv2D']
    """
    return [layer for layer in _walk(model) if _is_unsupported(layer)]


def _selector(layers):
    if layers is None:
        return lambda layer: True
    if callable(layers):
        return layers
    if isinstance(layers, str):
        layers = [layers]
    names = set(layers)
    return lambda layer: layer.name in names


def _walk(model):
    """Yields every non-model layer of `model`, descending into nested models."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _walk(layer)
        else:
            yield layer


def evo_layers(model):
    """The Evo layers of `model` (nested models inlined), in layer order."""
    return [layer for layer in _walk(model) if isinstance(layer, EvoLayer)]


def copy_state(source, target):
    """Copies `source`'s weights (masks included) and each Evo layer's
    precision into `target`, a model of the same architecture."""
    target.set_weights(source.get_weights())
    for mine, theirs in zip(evo_layers(target), evo_layers(source), strict=True):
        mine.precision = theirs.precision


def _layers_by_name(model, prefix=()):
    """`{(nested model names..., layer name): layer}` for every non-model
    layer of `model`. Names, unlike `layer.path`, survive `clone_model`: a
    path holds the name scopes the layer was built under (NASNet builds its
    cells under `name_scope`s, which the clone does not reopen), and layers
    without a `build` of their own have no path at all."""
    found = {}
    for layer in model.layers:
        key = (*prefix, layer.name)
        if isinstance(layer, keras.Model):
            found.update(_layers_by_name(layer, key))
        else:
            found[key] = layer
    return found


def _set_weights(layer, weights):
    """`layer.set_weights(weights)`, then the layer's `finalize_state()`
    where it has one: a preprocessing layer (an adapted `Normalization`,
    `Discretization`, `StringLookup`, ...) computes from tensors that only
    `finalize_state` refreshes from its variables, so without it a copy keeps
    its initial state (mean 0, variance 1) while its weights say otherwise."""
    layer.set_weights(weights)
    finalize = getattr(layer, "finalize_state", None)
    if callable(finalize):
        finalize()


def _check_finite(layer):
    for weight in layer.weights:
        value = keras.ops.convert_to_numpy(weight)
        bad = ~np.isfinite(value)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"Layer '{layer.name}': weight '{weight.path}' holds a non-finite "
                f"value {value[index]} at index {index}."
            )


def _named_inputs(model):
    """Fresh inputs with the original input layers' names (clone_model would
    otherwise rename them), in the model's input structure; None for
    Sequential models."""
    if isinstance(model, keras.Sequential):
        return None
    input_layers = {
        id(layer.output): layer
        for layer in model.layers
        if isinstance(layer, keras.layers.InputLayer)
    }

    def fresh(tensor):
        return keras.Input(
            batch_shape=tensor.shape,
            dtype=tensor.dtype,
            name=input_layers[id(tensor)].name,
        )

    return keras.tree.map_structure(fresh, model.input)


def evolvable(model, precision="float32", layers=None, skip_unsupported=False):
    """Clones `model` with `Conv2D`/`DepthwiseConv2D`/`Dense` replaced by the
    evolvable layers, weights copied; masks start all-ones.

    At `precision="float32"` the clone computes exactly what `model` computes.

    Args:
        model: A built functional or Sequential Keras 3 model (nested models
            are converted recursively).
        precision: Synaptic precision of the converted layers (`"int8"`,
            `"int4"`, an int bit count, a `SynapticPrecision`, ...).
        layers: Which supported layers to convert: None (all), a list of
            layer names, or a predicate `layer -> bool`. Others stay plain.
        skip_unsupported: Leave weight-bearing layers of unsupported types
            (e.g. `SeparableConv2D`) untouched instead of raising.

    Returns:
        A new `keras.Model` with the same inputs, outputs and layer names.

    Raises:
        TypeError: `model` is not a Keras model.
        ValueError: The model is not built, a selected layer is of an
            unsupported type, or a weight is NaN/Inf.

    Example:

    >>> import keras
    >>> base = keras.Sequential([keras.Input((8, 8, 1)),
    ...                          keras.layers.Conv2D(4, 3),
    ...                          keras.layers.Flatten(),
    ...                          keras.layers.Dense(2)])
    >>> evo = evolvable(base, precision="int8")
    >>> [type(l).__name__ for l in evo.layers]
    ['EvoConv2D', 'Flatten', 'EvoDense']
    """
    check_graph_model(model, "evolvable()")
    if not model.built:
        raise ValueError(
            f"Model '{model.name}' is not built: give it an Input or call it on "
            "data before making it evolvable."
        )
    precision = quantizers.get(precision)
    selected = _selector(layers)

    to_convert = []
    for layer in _walk(model):
        if not selected(layer):
            continue
        if _is_unsupported(layer):
            if skip_unsupported:
                continue
            raise ValueError(
                f"Layer '{layer.name}' of type {type(layer).__name__} is not "
                "supported by evolvable(); supported: Conv2D, DepthwiseConv2D, "
                "Dense. Pass skip_unsupported=True to leave it untouched."
            )
        if type(layer) in _REPLACEMENTS:
            _check_finite(layer)
            to_convert.append(layer.name)
    convert = set(to_convert)

    def clone_function(layer):
        config = layer.get_config()
        if layer.name in convert and type(layer) in _REPLACEMENTS:
            return _REPLACEMENTS[type(layer)].from_config(
                {**config, "precision": quantizers.serialize(precision)}
            )
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(
        model,
        input_tensors=_named_inputs(model),
        clone_function=clone_function,
        recursive=True,
    )
    old_layers = _layers_by_name(model)
    for key, new in _layers_by_name(clone).items():
        if not new.weights:  # e.g. a nested model's InputLayer, renamed by clone_model
            continue
        old = old_layers[key]
        if isinstance(new, EvoLayer) and not isinstance(old, EvoLayer):
            new.kernel.assign(old.kernel)
            if old.bias is not None:
                new.bias.assign(old.bias)
        else:
            _set_weights(new, old.get_weights())
    return clone
