"""TFLite conversion of a plain Keras model, shared by `export_litert` and
the latency table's micro-models and anchors."""

import contextlib
import io
import logging
import warnings

from keras_evosynth._io import quiet_native_output


def convert(keras_model, arrays, mode, int8_io, allow_float_ops, intact=(), signatures=True):
    """The flatbuffer bytes of `keras_model` (a plain Keras model) converted by
    `tf.lite.TFLiteConverter` in `mode` (`"int8"`: full-integer with `arrays`,
    a list of input arrays, as representative data, int8 inputs and outputs
    when `int8_io`, float kernels refused unless `allow_float_ops`;
    `"float16"`; `"float32"`), with the converter's chatter silenced; a failure
    is re-raised as RuntimeError naming the model, the unsupported ops and any
    of `intact`'s `(layer name, why)` that keras_evosynth does not know.

    `signatures=False` converts the frozen graph of the model's call
    instead of its exported SavedModel: the same operators and values, no
    serving signature, and about 3x less time (the SavedModel is written
    and read back otherwise); what the latency table's micro-models and
    anchors use."""
    import tensorflow as tf

    if signatures:
        converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    else:  # without a trackable object on purpose: that path re-reads the variables
        absl_logger = logging.getLogger("absl")
        level = absl_logger.level
        absl_logger.setLevel(logging.ERROR)  # "...deprecated conversion path"
        try:
            with warnings.catch_warnings():  # tracing's, as convert's below
                warnings.simplefilter("ignore")
                converter = tf.lite.TFLiteConverter.from_concrete_functions(
                    [_call_function(keras_model)])
        finally:
            absl_logger.setLevel(level)
    if mode == "int8":
        names = [x.name for x in keras_model.inputs]

        def representative():  # by name: the SavedModel orders inputs by their names
            for i in range(len(arrays[0])):
                sample = [x[i : i + 1] for x in arrays]
                yield dict(zip(names, sample, strict=True)) if signatures and len(sample) > 1 \
                    else sample

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] + (
            [tf.lite.OpsSet.TFLITE_BUILTINS] if allow_float_ops else []
        )
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    elif mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            quiet_native_output():
        warnings.simplefilter("ignore")
        try:
            return converter.convert()
        except Exception as error:  # noqa: BLE001 - converter errors vary
            raise RuntimeError(_conversion_error(keras_model, mode, error, intact)) from None


def _call_function(keras_model):
    """The concrete inference function of a model with one or a list of inputs."""
    import tensorflow as tf

    specs = [tf.TensorSpec(x.shape, x.dtype, name=f"input_{i}")
             for i, x in enumerate(keras_model.inputs)]

    def call(*xs):
        return keras_model(list(xs) if len(xs) > 1 else xs[0], training=False)

    return tf.function(call).get_concrete_function(*specs)


def _conversion_error(keras_model, mode, error, intact):
    text = str(error)
    key_lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip().startswith(("TF Select ops:", "Custom ops:"))
    ]
    summary = "; ".join(key_lines) or text.splitlines()[0][:300] if text else repr(error)
    message = (
        f"export_litert: TFLite conversion of '{keras_model.name}' ({mode}) "
        f"failed: {summary}."
    )
    unknown = [f"{name} ({why})" for name, why in intact if "unsupported" in why]
    if unknown:
        message += f" Layers unknown to keras_evosynth: {', '.join(unknown)}."
    return message
