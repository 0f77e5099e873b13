"""Keras's own Conv2D / DepthwiseConv2D / Dense layer tests, run against the
evolvable layers.

The test modules ship inside the installed keras wheel. Their `layers`
module is replaced by one where `Conv2D`, `DepthwiseConv2D` and `Dense` are
`EvoConv2D`, `EvoDepthwiseConv2D` and `EvoDense` (everything else stays
Keras's), and `run_layer_test` expects the two mask weights the Evo layers
add (non-trainable). What is not run, and why, is listed in `_DESELECTED`.
"""

import types

import pytest

pytest.importorskip("absl.testing.parameterized")

from keras.src import layers as keras_layers  # noqa: E402
from keras.src.layers.convolutional import conv_test, depthwise_conv_test  # noqa: E402
from keras.src.layers.core import dense_test  # noqa: E402

from keras_evosynth.layers import EvoConv2D, EvoDense, EvoDepthwiseConv2D  # noqa: E402

_EVO = {"Conv2D": EvoConv2D, "DepthwiseConv2D": EvoDepthwiseConv2D, "Dense": EvoDense}

# Test-name prefixes left out, with the reason.
_DESELECTED = {
    # Evo layers refuse LoRA: evolution masks and quantizes the kernel itself.
    "test_enable_lora": "LoRA is refused by the Evo layers",
    "test_lora": "LoRA is refused by the Evo layers",
    # Evo layers are quantized through their `precision`; Keras's
    # post-training `quantize()` (and GPTQ/AWQ/float8 built on it) raises.
    "test_quantize": "Keras post-training quantize() does not apply",
    "test_int4": "Keras post-training quantize() does not apply",
    "test_gptq": "Keras post-training quantize() does not apply",
    "test_awq": "Keras post-training quantize() does not apply",
    "test_dense_int": "Keras post-training quantize() does not apply",
    "test_dense_quantize": "Keras post-training quantize() does not apply",
    "test_legacy_load_own_variables": "Keras's int8 variable layout (quantize())",
    # Other layers of those modules, which have no evolvable counterpart.
    "test_conv1d": "Conv1D: no evolvable counterpart",
    "test_conv3d": "Conv3D: no evolvable counterpart",
    "test_depthwise_conv1d": "DepthwiseConv1D: no evolvable counterpart",
    # Keras's sparse-input Dense path (tf.SparseTensor) is not masked.
    "test_dense_sparse": "sparse inputs are not supported by EvoDense",
}


class _EvoLayers(types.ModuleType):
    """`keras.src.layers` with the three layers swapped for the Evo ones."""

    def __getattr__(self, name):
        return _EVO.get(name) or getattr(keras_layers, name)


def _adapted(case):
    """A subclass of Keras's test case: Evo layers, two extra weights,
    deselected tests removed."""

    class Adapted(case):
        def run_layer_test(self, layer_cls, *args, **kwargs):
            if layer_cls in _EVO.values():
                for key in ("expected_num_non_trainable_weights",
                            "expected_num_non_trainable_variables"):
                    if kwargs.get(key) is not None:
                        kwargs[key] += 2  # synapse_mask, cluster_mask
            return super().run_layer_test(layer_cls, *args, **kwargs)

    for name in dir(Adapted):
        if any(name.startswith(prefix) for prefix in _DESELECTED):
            setattr(Adapted, name, None)  # unittest collects callables only
    Adapted.__name__ = Adapted.__qualname__ = f"Evo{case.__name__}"
    return Adapted


for _module in (conv_test, depthwise_conv_test, dense_test):
    _module.layers = _EvoLayers("keras.src.layers")

EvoConvBasicTest = _adapted(conv_test.ConvBasicTest)
EvoConvCorrectnessTest = _adapted(conv_test.ConvCorrectnessTest)
EvoDepthwiseConvBasicTest = _adapted(depthwise_conv_test.DepthwiseConvBasicTest)
EvoDepthwiseConvCorrectnessTest = _adapted(depthwise_conv_test.DepthwiseConvCorrectnessTest)
EvoDenseTest = _adapted(dense_test.DenseTest)


def test_the_keras_suite_runs_on_the_evo_layers():
    """The swap took: Keras's test modules build Evo layers."""
    assert dense_test.layers.Dense is EvoDense
    assert conv_test.layers.Conv2D is EvoConv2D
    assert depthwise_conv_test.layers.DepthwiseConv2D is EvoDepthwiseConv2D
    assert dense_test.layers.Conv1D is keras_layers.Conv1D
