"""Shared machinery of the evolvable layers: masks, precision, counting.

Every evolvable layer owns, next to its kernel and bias:

- `synapse_mask`: a non-trainable weight of the kernel's shape (1 = the
  synapse exists, 0 = it was not inherited);
- `cluster_mask`: a non-trainable weight with one entry per output filter /
  unit (a dead cluster drops all its synapses and its bias);
- `precision`: a `SynapticPrecision`; the forward pass uses
  `precision(kernel * synapse_mask * cluster_mask)`.

Masked weights are held at exactly zero: gradients to them are zero (the
mask is inside the forward pass) and the variables carry a constraint that
re-applies the masks after every optimizer step, so momentum or weight decay
cannot revive them either.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_evosynth import quantizers


def output_positions(layer, output_shape):
    """Output positions of `layer` (spatial size; 1 for a 2-D Dense output),
    i.e. how often each synapse is used per example; None when unknown."""
    if output_shape is None:
        return None
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        spatial = output_shape[2:]
    else:
        spatial = output_shape[1:-1]
    if any(d is None for d in spatial):
        return None
    return math.prod(spatial)


_MASKED_CLASSES = {}


def _masked_call(self, value):
    value = ops.multiply(value, ops.cast(self._evo_mask_fn(), value.dtype))
    return value if self._evo_user is None else self._evo_user(value)


def masked_constraint(user_constraint, mask_fn):
    """The variable constraint of an evolvable layer's kernel or bias: the
    masks (`mask_fn()`), then the user's constraint.

    It is an instance of the user's constraint class (a subclass made once
    per class, with the user's attributes), so code that inspects
    `layer.kernel.constraint` sees what it gave; without one it is a plain
    `keras.constraints.Constraint`.

    Example:

    >>> import keras, numpy as np
    >>> c = masked_constraint(keras.constraints.NonNeg(), lambda: np.array([1.0, 0.0]))
    >>> isinstance(c, keras.constraints.NonNeg)
    True
    >>> np.asarray(c(np.array([-1.0, 2.0]))).tolist()
    [0.0, 0.0]
    """
    base = type(user_constraint)
    if user_constraint is None or not isinstance(user_constraint, keras.constraints.Constraint):
        base = keras.constraints.Constraint  # none, or a plain function
    cls = _MASKED_CLASSES.get(base)
    if cls is None:
        cls = type(base.__name__, (base,), {"__call__": _masked_call, "__module__": base.__module__,
                                            "__qualname__": base.__qualname__})
        _MASKED_CLASSES[base] = cls
    constraint = object.__new__(cls)
    if isinstance(user_constraint, keras.constraints.Constraint):
        constraint.__dict__.update(vars(user_constraint))
    constraint._evo_mask_fn, constraint._evo_user = mask_fn, user_constraint
    return constraint


def _as_binary_mask(value, shape, what, layer_name):
    """Validates a user mask: right shape, numeric/bool, values in {0, 1}."""
    array = np.asarray(value)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
    ):
        raise TypeError(
            f"Layer '{layer_name}': {what} must be a bool or numeric array, "
            f"got dtype {array.dtype}."
        )
    if tuple(array.shape) != tuple(shape):
        raise ValueError(
            f"Layer '{layer_name}': {what} must have shape {tuple(shape)}, "
            f"got {tuple(array.shape)}."
        )
    if not np.isin(array, (0, 1)).all():
        bad = array[~np.isin(array, (0, 1))].ravel()[0]
        raise ValueError(f"Layer '{layer_name}': {what} may only hold 0 and 1, found {bad!r}.")
    return array.astype(np.float32)


class EvoLayer:
    """Mixin for the evolvable layers; put it before the Keras base class.

    Subclasses set `_channel_axes` (how many trailing kernel axes index the
    output channels) and implement `_compute_outputs(inputs, kernel, bias)`.
    """

    _channel_axes = 1

    def _init_evo(self, precision):
        if getattr(self, "lora_rank", None):
            raise ValueError(
                f"{type(self).__name__} does not support LoRA (lora_rank="
                f"{self.lora_rank}); evolve the plain kernel instead."
            )
        self.precision = quantizers.get(precision)
        self._evo_input_shape = None

    # ------------------------------------------------------------------ build
    def build(self, input_shape):
        super().build(input_shape)
        self._evo_input_shape = tuple(input_shape)
        kernel = self.kernel
        self.synapse_mask = self.add_weight(
            name="synapse_mask",
            shape=kernel.shape,
            initializer="ones",
            trainable=False,
            dtype=kernel.dtype,
        )
        self.cluster_mask = self.add_weight(
            name="cluster_mask",
            shape=(math.prod(kernel.shape[-self._channel_axes :]),),
            initializer="ones",
            trainable=False,
            dtype=kernel.dtype,
        )
        kernel.constraint = masked_constraint(kernel.constraint, self._kernel_mask)
        if self.bias is not None:
            self.bias.constraint = masked_constraint(self.bias.constraint,
                                                     lambda: self.cluster_mask)

    def _kernel_mask(self):
        cluster_shape = (1,) * (len(self.kernel.shape) - self._channel_axes) + tuple(
            self.kernel.shape[-self._channel_axes :]
        )
        return ops.multiply(self.synapse_mask, ops.reshape(self.cluster_mask, cluster_shape))

    # ---------------------------------------------------------------- forward
    def effective_kernel(self):
        """The kernel the forward pass uses: `precision(kernel * masks)`."""
        masked = ops.multiply(self.kernel, self._kernel_mask())
        return self.precision(masked, channel_axes=self._channel_axes)

    def effective_bias(self):
        """The bias with dead clusters zeroed (None without bias)."""
        if self.bias is None:
            return None
        return ops.multiply(self.bias, self.cluster_mask)

    def call(self, inputs):
        kernel = ops.cast(self.effective_kernel(), self.compute_dtype)
        bias = self.effective_bias()
        outputs = self._compute_outputs(inputs, kernel)
        if bias is not None:
            outputs = self._add_bias(outputs, ops.cast(bias, self.compute_dtype))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _add_bias(self, outputs, bias):
        if getattr(self, "data_format", "channels_last") == "channels_first":
            bias = ops.reshape(bias, (1, -1) + (1,) * (len(outputs.shape) - 2))
        return ops.add(outputs, bias)

    # ------------------------------------------------------------------ masks
    def _check_built(self, what):
        if not self.built:
            raise ValueError(
                f"Layer '{self.name}' is not built; call it on an input (or "
                f"build the model) before {what}."
            )

    def get_masks(self):
        """Returns `(synapse_mask, cluster_mask)` as numpy bool arrays."""
        self._check_built("reading masks")
        return (
            ops.convert_to_numpy(self.synapse_mask).astype(bool),
            ops.convert_to_numpy(self.cluster_mask).astype(bool),
        )

    def set_masks(self, synapse_mask=None, cluster_mask=None):
        """Sets either or both masks and zeroes the weights they remove.

        Args:
            synapse_mask: Bool or 0/1 array of the kernel's shape.
            cluster_mask: Bool or 0/1 array with one entry per output
                filter/unit.

        Raises:
            ValueError: Wrong shape, or values other than 0/1.
            TypeError: Non-numeric dtype.
        """
        self._check_built("setting masks")
        if synapse_mask is not None:
            self.synapse_mask.assign(
                _as_binary_mask(synapse_mask, self.synapse_mask.shape, "synapse_mask", self.name)
            )
        if cluster_mask is not None:
            self.cluster_mask.assign(
                _as_binary_mask(cluster_mask, self.cluster_mask.shape, "cluster_mask", self.name)
            )
        self.kernel.assign(ops.multiply(self.kernel, self._kernel_mask()))
        if self.bias is not None:
            self.bias.assign(ops.multiply(self.bias, self.cluster_mask))

    def set_weights(self, weights):
        """Sets the layer's weights from a list of numpy arrays.

        Takes the full list `get_weights()` returns (kernel, bias, synapse
        mask, cluster mask), or the plain Keras layer's `[kernel, bias]`:
        then the masks stay as they are and the weights they remove are
        zeroed, so weights move between a plain model and its evolvable
        twin with the usual Keras calls.
        """
        weights = list(weights)
        plain = len(self._evo_variables()) - 2
        if self.built and len(weights) == plain:
            masks = [ops.convert_to_numpy(self.synapse_mask),
                     ops.convert_to_numpy(self.cluster_mask)]
            super().set_weights(weights + masks)
            self.set_masks()
            return
        super().set_weights(weights)

    # --------------------------------------------------------------- counting
    def count_synapses(self):
        """Live synapses: non-zero weights of the effective (masked,
        quantized) kernel, i.e. what the deployed layer multiplies by."""
        self._check_built("counting synapses")
        return int(np.count_nonzero(ops.convert_to_numpy(self.effective_kernel())))

    def count_clusters(self):
        """Live clusters (output filters / units)."""
        self._check_built("counting clusters")
        return int(np.count_nonzero(ops.convert_to_numpy(self.cluster_mask)))

    def output_positions(self):
        """How many times each synapse is used per example (output pixels
        for convolutions, leading non-batch positions for Dense); None when
        the spatial input size is unknown."""
        self._check_built("counting MACs")
        return output_positions(self, self.compute_output_shape(self._evo_input_shape))

    def count_macs(self):
        """Multiply-accumulates per example: live synapses x output positions
        (None when the input's spatial size is unknown)."""
        positions = self.output_positions()
        return None if positions is None else self.count_synapses() * positions

    # ----------------------------------------------------------- persistence
    def _evo_variables(self):
        variables = [self.kernel]
        if self.bias is not None:
            variables.append(self.bias)
        return variables + [self.synapse_mask, self.cluster_mask]

    def save_own_variables(self, store):
        if not self.built:
            return
        for i, variable in enumerate(self._evo_variables()):
            store[str(i)] = variable

    def load_own_variables(self, store):
        if not self.built:
            return
        variables = self._evo_variables()
        if len(store.keys()) != len(variables):
            raise ValueError(
                f"Layer '{self.name}' expected {len(variables)} variables "
                f"(kernel, bias, masks), the file holds {len(store.keys())}."
            )
        for i, variable in enumerate(variables):
            variable.assign(store[str(i)])

    def quantize(self, mode=None, **kwargs):
        raise NotImplementedError(
            f"Layer '{self.name}' is quantized through its `precision` "
            f"({self.precision}); Keras's post-training `quantize('{mode}')` "
            "does not apply to evolvable layers."
        )

    def get_config(self):
        config = super().get_config()
        config["precision"] = quantizers.serialize(self.precision)
        return config
