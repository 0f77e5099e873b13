"""`FakeQuantActivation`: activation fake quantization for full-integer export."""

import keras
from keras import ops

from keras_evosynth import quantizers


@keras.saving.register_keras_serializable(package="keras_evosynth")
class FakeQuantActivation(keras.layers.Layer):
    """Fake-quantizes activations to `bits` over a moving-average range.

    During training the layer tracks the batch min/max with an exponential
    moving average (`momentum`), widened to include 0 so that zero is exact;
    the first batch seeds the average. Outside training it uses the stored
    range. Gradients pass straight through inside the range.

    Args:
        bits: 2..8 or 16 (asymmetric, per tensor), or 32 for passthrough.
        momentum: Weight of the old range in the moving average, in [0, 1).

    Example:

    >>> import numpy as np
    >>> layer = FakeQuantActivation(bits=8)
    >>> y = layer(np.linspace(-1, 3, 8, dtype="float32"), training=True)
    >>> [round(float(v), 3) for v in ops.convert_to_numpy(layer.range)]
    [-1.0, 3.0]
    """

    def __init__(self, bits=8, momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        self.bits = quantizers.get(bits).bits
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(
                f"FakeQuantActivation '{self.name}': momentum must be in [0, 1), got {momentum!r}."
            )
        self.momentum = float(momentum)

    def build(self, input_shape):
        self.range = self.add_weight(name="range", shape=(2,), initializer="zeros", trainable=False)
        self.seen = self.add_weight(name="seen", shape=(), initializer="zeros", trainable=False)

    def call(self, inputs, training=None):
        if self.bits == 32:
            return inputs
        low, high = self.range[0], self.range[1]
        x = ops.cast(inputs, "float32")  # the quantizer maths stay float32 (mixed precision)
        if training:
            seen = ops.stop_gradient(x)
            batch_low = ops.minimum(ops.min(seen), 0.0)
            batch_high = ops.maximum(ops.max(seen), 0.0)
            keep = self.momentum * self.seen  # 0 on the first batch
            low = keep * low + (1.0 - keep) * batch_low
            high = keep * high + (1.0 - keep) * batch_high
            self.range.assign(ops.stack([low, high]))
            self.seen.assign(1.0)
        quantized = keras.quantizers.fake_quant_with_min_max_vars(
            x, low, ops.maximum(high, low + 1e-6), num_bits=self.bits
        )
        return ops.cast(quantized, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"bits": self.bits, "momentum": self.momentum})
        return config
