"""What the TFLite converter folds away, so that the latency table prices it
at nothing: BatchNormalization and ReLU-like activations fused into the
synaptic op before them, a ZeroPadding2D that equals the convolution's own
`"same"` padding, a global pooling over one position read by reshapes
(each rule measured on the converter; see the docstrings)."""

import keras

_FUSED_ACTIVATIONS = ("relu", "relu6", "linear")


def _activation_name(fn):
    name = getattr(fn, "__name__", str(fn))
    return name if name in _FUSED_ACTIVATIONS else None


def fused_into(node, synaptic_out, consumers):
    """True when `node` (a last-axis BatchNormalization or a ReLU-like
    activation) is folded by the converter into the synaptic op producing
    its only input, which it alone reads."""
    layer = node.layer
    if len(node.inputs) != 1 or node.inputs[0] not in synaptic_out:
        return False
    if len(consumers[node.inputs[0]]) != 1:
        return False
    if isinstance(layer, keras.layers.BatchNormalization):  # folds before an activation only
        linear = synaptic_out[node.inputs[0]].signature["activation"] == "linear"
        return linear and layer.axis in (-1, len(layer.input.shape) - 1)
    if isinstance(layer, keras.layers.Activation):
        return _activation_name(layer.activation) is not None
    if isinstance(layer, keras.layers.ReLU):
        return not layer.negative_slope and not layer.threshold and (
            layer.max_value in (None, 6.0))
    return False


def fused_activation(layer):
    if isinstance(layer, keras.layers.Activation):
        return _activation_name(layer.activation)
    if isinstance(layer, keras.layers.ReLU):
        return "relu6" if layer.max_value else "relu"
    return "linear"


def _same_padding(size, kernel, stride, dilation):
    """`(before, after)` zeros that `padding="same"` adds to one spatial axis.

    >>> _same_padding(16, 3, 2, 1), _same_padding(15, 3, 2, 1), _same_padding(16, 5, 2, 1)
    ((0, 1), (1, 1), (1, 2))
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def padding_folds(node, graph, consumers):
    """True when `node` is a ZeroPadding2D that the converter folds into
    the convolutions reading it: every reader is a `"valid"` Conv2D or
    DepthwiseConv2D for which the padding is exactly `"same"`'s (measured:
    MobileNetV2's and EfficientNet's `correct_pad` before a stride-2
    depthwise convolution leave no PAD operator; ResNet's 3-pixel pad before
    its 7x7/2 stem, or a pad before pooling, stay)."""
    if type(node.layer) is not keras.layers.ZeroPadding2D or len(node.inputs) != 1:
        return False
    tid = node.outputs[0]
    readers = consumers[tid]
    if not readers or tid in keras.tree.flatten(graph.outputs):
        return False
    size = graph.specs[node.inputs[0]].shape[1:3]
    pads = [tuple(int(p) for p in axis) for axis in node.layer.padding]
    for reader in readers:
        conv = reader.layer
        if (not isinstance(conv, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
                or conv.padding != "valid" or reader.inputs != [tid]
                or getattr(conv, "data_format", "channels_last") != "channels_last"
                or None in size):
            return False
        for n, k, st, d, pad in zip(size, conv.kernel_size, conv.strides, conv.dilation_rate,
                                    pads, strict=True):
            if _same_padding(int(n), int(k), int(st), int(d)) != pad:
                return False
    return True


_GLOBAL_POOLING = (
    keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D, keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D, keras.layers.GlobalMaxPooling3D,
)


def pooling_folds(node, graph, consumers):
    """True when `node` is a global pooling over a single position (every
    spatial size 1) read only by reshapes: the converter turns the pair
    into one reshape (measured: EfficientNetB0 at 32x32 keeps no MEAN for
    the squeeze-excite of its five 1x1 blocks, whose pooling a Reshape
    reads, and keeps the head's, which Dropout and Dense read)."""
    if type(node.layer) not in _GLOBAL_POOLING or len(node.inputs) != 1:
        return False
    readers = consumers[node.outputs[0]]
    return (all(size == 1 for size in graph.specs[node.inputs[0]].shape[1:-1])
            and bool(readers) and node.outputs[0] not in keras.tree.flatten(graph.outputs)
            and all(type(r.layer) is keras.layers.Reshape for r in readers))
