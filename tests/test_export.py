import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from keras_evosynth import evolvable
from keras_evosynth.export import export_litert, list_operators

L = keras.layers


@pytest.fixture(scope="module")
def trained(digits):
    """A small evolvable CNN trained a few steps on scikit-learn digits at
    int8 synaptic precision, with a third of its filters removed."""
    x_train, y_train, x_test, y_test = digits
    keras.utils.set_random_seed(0)
    base = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(12, 3, padding="same", activation="relu", name="c1"),
            L.MaxPooling2D(),
            L.Conv2D(16, 3, padding="same", activation="relu", name="c2"),
            L.Flatten(),
            L.Dense(10, name="head"),
        ]
    )
    model = evolvable(base, precision="int8")
    model.get_layer("c1").set_masks(cluster_mask=np.arange(12) % 3 != 0)
    model.get_layer("c2").set_masks(cluster_mask=np.arange(16) % 3 != 1)
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, epochs=4, batch_size=32, verbose=0)
    accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    assert accuracy > 0.85
    return model, x_train[:200], x_test, y_test


def _litert_predict(path, x):
    interpreter = Interpreter(model_path=path, num_threads=1)
    runner = interpreter.get_signature_runner()
    (name,) = runner.get_input_details()
    (out,) = runner.get_output_details()
    return np.concatenate([runner(**{name: x[i : i + 1]})[out] for i in range(len(x))])


def test_trained_digits_cnn_exports_to_int8_that_agrees_with_keras(trained, tmp_path):
    model, calibration, x_test, y_test = trained
    path = str(tmp_path / "digits.tflite")
    report = export_litert(model, calibration, path=path, eval_data=x_test)
    assert os.path.getsize(path) == report.size_bytes == len(report.flatbuffer)
    assert report.operators["CONV_2D"] == 2 and report.operators["FULLY_CONNECTED"] == 1
    for op in report.ops:
        if op.name in ("CONV_2D", "FULLY_CONNECTED"):
            assert op.input_types[:2] == ("INT8", "INT8")  # activations, weights
            assert op.output_types == ("INT8",)
    assert report.float_ops == []
    assert report.samples == len(x_test)
    assert report.top1_agreement >= 0.98
    # The removed filters are gone from the flatbuffer's model.
    assert report.compaction.channels["c1"] == (8, 12)
    assert report.compaction.channels["c2"] == (11, 16)
    # Accuracy from the file itself, independently of the report.
    logits = _litert_predict(path, x_test)
    keras_accuracy = np.mean(model.predict(x_test, verbose=0).argmax(-1) == y_test)
    assert np.mean(logits.argmax(-1) == y_test) >= keras_accuracy - 0.02
    assert list_operators(open(path, "rb").read()) == report.ops


def test_int8_io_and_float_modes(trained):
    model, calibration, x_test, _ = trained
    report = export_litert(model, calibration, int8_io=True, eval_data=x_test)
    assert "QUANTIZE" not in report.operators and "DEQUANTIZE" not in report.operators
    assert report.ops[0].input_types[0] == "INT8"
    assert report.top1_agreement >= 0.98

    scale = np.abs(model.predict(x_test, verbose=0)).max()
    f32 = export_litert(model, x_test, mode="float32")
    assert f32.max_abs_error < 1e-4 * scale and f32.top1_agreement == 1.0
    f16 = export_litert(model, x_test, mode="float16")
    assert f16.max_abs_error < 1e-2 * scale and f16.top1_agreement >= 0.99
    assert f16.size_bytes < f32.size_bytes

    masked = export_litert(model, calibration, mode="float32", remove_channels=False)
    assert masked.compaction.params_after > f32.compaction.params_after
    assert masked.size_bytes > f32.size_bytes


def _conv_net(middle, name="net"):
    inputs = keras.Input((6, 6, 2))
    x = middle(L.Conv2D(3, 1, name="conv")(inputs))
    return keras.Model(inputs, L.Dense(2, name="head")(L.Flatten()(x)), name=name)


def test_float_ops_in_int8_fail_loudly_unless_allowed(tmp_path):
    model = _conv_net(L.LayerNormalization(name="norm"))
    data = np.random.default_rng(0).random((16, 6, 6, 2)).astype("float32")
    path = tmp_path / "norm.tflite"
    with pytest.raises(RuntimeError, match="float32 in .*allow_float_ops=True"):
        export_litert(model, data, path=path)
    assert os.listdir(tmp_path) == []
    report = export_litert(model, data, path=path, allow_float_ops=True)
    assert report.float_ops and os.path.exists(path)


class _PySin(L.Layer):
    """A custom layer LiteRT cannot run (a Python function)."""

    def call(self, x):
        return tf.ensure_shape(tf.numpy_function(np.sin, [x], tf.float32), x.shape)

    def compute_output_shape(self, shape):
        return shape


def test_unknown_custom_layer_gives_clear_error_and_no_file(tmp_path):
    model = _conv_net(_PySin(name="pysin"))
    data = np.random.default_rng(0).random((4, 6, 6, 2)).astype("float32")
    with pytest.raises(RuntimeError, match="Custom ops: PyFunc.*pysin"):
        export_litert(model, data, path=tmp_path / "x.tflite", mode="float32")
    assert os.listdir(tmp_path) == []


def test_multi_input_multi_output_agreement():
    a, b = keras.Input((4,), name="a"), keras.Input((6, 6, 1), name="b")
    feature = L.Flatten()(L.Conv2D(2, 3, name="conv")(b))
    joint = L.Concatenate()([a, feature])
    model = evolvable(
        keras.Model(
            [a, b],
            {"z_score": L.Dense(1, name="score")(joint), "a_cls": L.Dense(3)(joint)},
        )
    )
    model.get_layer("conv").set_masks(cluster_mask=[1, 0])
    rng = np.random.default_rng(0)
    data = {"a": rng.random((8, 4)), "b": rng.random((8, 6, 6, 1))}
    report = export_litert(model, data, mode="float32")
    assert report.max_abs_error < 1e-5 and report.top1_agreement == 1.0
    assert report.compaction.channels["conv"] == (1, 2)
    with pytest.raises(ValueError, match="2 inputs, representative_data gives 1"):
        export_litert(model, data["b"])
    with pytest.raises(ValueError, match="no entry 'b'"):
        export_litert(model, {"a": data["a"]})


def _two_input_model(first, second):
    img, vec = keras.Input((6, 6, 3), name=first), keras.Input((5,), name=second)
    x = L.Conv2D(8, 3, padding="same", use_bias=False)(img)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.Add()([x, L.DepthwiseConv2D(3, padding="same")(x)])
    joint = L.Concatenate()([L.GlobalAveragePooling2D()(x), L.Dense(4)(vec)])
    return keras.Model([img, vec], L.Dense(3)(joint))


def test_int8_calibrates_each_input_with_its_own_data():
    """The SavedModel the converter reads orders inputs by name ('a_vec'
    before 'z_img'); calibration data still reaches the input it belongs to."""
    keras.utils.set_random_seed(0)
    model = evolvable(_two_input_model("z_img", "a_vec"))
    rng = np.random.default_rng(0)
    data = {"z_img": rng.random((32, 6, 6, 3)), "a_vec": 10 * rng.random((32, 5))}
    report = export_litert(model, data, mode="int8")
    reference = model.predict([data["z_img"], data["a_vec"]], verbose=0)
    assert report.max_abs_error < 0.05 * np.ptp(reference)


def test_frozen_graph_conversion_gives_the_savedmodel_ones_operators_and_values():
    """`convert(signatures=False)` (the latency table's, ~3x faster) emits the
    same operators (on the zoo's EfficientNetB0 and DenseNet121: 305 and 251,
    in the same order) and, calibrated on the same data, the same int8
    outputs."""
    from keras_evosynth._converter import convert

    keras.utils.set_random_seed(1)
    model = _two_input_model("a_img", "b_vec")
    rng = np.random.default_rng(1)
    data = [rng.random((8, 6, 6, 3)).astype("float32"), rng.random((8, 5)).astype("float32")]
    outputs, operators = [], []
    for signatures in (True, False):
        flatbuffer = convert(model, data, "int8", int8_io=False, allow_float_ops=True,
                             signatures=signatures)
        operators.append([o.name for o in list_operators(flatbuffer)])
        interpreter = Interpreter(model_content=flatbuffer)
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():  # inputs by shape
            x = data[0] if len(detail["shape"]) == 4 else data[1]
            interpreter.set_tensor(detail["index"], x[:1])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    # independent branches may come in another order
    assert sorted(operators[0]) == sorted(operators[1]) and "CONV_2D" in operators[0]
    np.testing.assert_array_equal(outputs[0], outputs[1])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(representative_data=np.zeros((0, 6, 6, 2))), ValueError, "empty"),
        (dict(representative_data=np.zeros((3, 6, 5, 2))), ValueError, "shape"),
        (dict(representative_data=np.zeros((3, 6, 6))), ValueError, "shape"),
        (dict(representative_data=np.full((3, 6, 6, 2), np.nan)), ValueError, "NaN"),
        (dict(representative_data=np.array([["a"]])), TypeError, "numeric"),
        (dict(mode="int4"), ValueError, "mode must be one of"),
        (dict(mode="float32", int8_io=True), ValueError, "int8_io"),
        (dict(path="/nonexistent-folder/m.tflite"), FileNotFoundError, "does not exist"),
        (dict(path="bad\0name.tflite"), ValueError, "invalid output path"),
    ],
)
def test_bad_input_is_rejected_before_converting(kwargs, error, match, tmp_path):
    model = _conv_net(L.ReLU())
    arguments = dict(representative_data=np.zeros((3, 6, 6, 2), "float32"))
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        export_litert(model, **arguments)
    with pytest.raises(IsADirectoryError):
        export_litert(model, arguments["representative_data"], path=tmp_path)
    with pytest.raises(TypeError, match="keras.Model"):
        export_litert(lambda x: x, arguments["representative_data"])


def test_write_is_atomic(tmp_path, monkeypatch):
    model = _conv_net(L.ReLU())
    data = np.random.default_rng(0).random((4, 6, 6, 2)).astype("float32")
    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        export_litert(model, data, path=path, mode="float32")
    assert os.listdir(tmp_path) == ["model.tflite"]
    assert path.read_bytes() == b"previous"
    monkeypatch.undo()
    report = export_litert(model, data, path=path, mode="float32")
    assert path.read_bytes() == report.flatbuffer


def test_export_tflite_is_a_deprecated_alias_that_warns_once(monkeypatch):
    """Keras 3.15 says "litert"; the old name forwards every argument and
    warns once per process."""
    import warnings

    from keras_evosynth import _deprecation
    from keras_evosynth import export as export_module

    monkeypatch.setattr(_deprecation, "_warned", set())
    calls = []
    monkeypatch.setattr(export_module, "export_litert", lambda *a, **k: calls.append((a, k)) or 7)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert export_module.export_tflite("model", "data", mode="float16") == 7
        assert export_module.export_tflite("model", "data") == 7
    assert calls == [(("model", "data"), {"mode": "float16"}), (("model", "data"), {})]
    (warning,) = caught
    assert warning.category is DeprecationWarning and warning.filename == __file__
    assert "export_tflite is deprecated" in str(warning.message)
    assert "keras_evosynth.export_litert" in str(warning.message)
