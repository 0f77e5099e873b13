"""First-order Taylor importance (keras_evosynth.sensitivity)."""

import keras
import numpy as np
import pytest

from keras_evosynth import evolvable
from keras_evosynth.sensitivity import taylor_importance


def test_golden_values_of_a_linear_layer():
    # y = x W, loss = mean((y - 0)^2) over 2 outputs: g_W = W x^2, (g w)^2 summed per unit
    x = keras.Input((1,))
    model = evolvable(keras.Model(x, keras.layers.Dense(2, use_bias=False, name="w")(x)))
    model.get_layer("w").kernel.assign([[1.0, 2.0]])
    model.compile("sgd", "mse")
    (importance,) = taylor_importance(model, (np.ones((1, 1), "float32"),
                                              np.zeros((1, 2), "float32")), batches=1)
    np.testing.assert_allclose(importance, [1.0, 16.0], rtol=1e-5)


def test_dead_or_unread_filters_carry_nothing_and_batches_average():
    keras.utils.set_random_seed(0)
    base = keras.Sequential([keras.Input((6, 6, 2)),
                             keras.layers.Conv2D(3, 3, activation="relu", name="conv"),
                             keras.layers.Flatten(), keras.layers.Dense(2, name="out")])
    model = evolvable(base)
    model.compile("sgd", "mse")
    conv, out = model.get_layer("conv"), model.get_layer("out")
    conv.set_masks(cluster_mask=[True, False, True])  # filter 1 dead
    kernel = out.kernel.numpy().reshape(4, 4, 3, 2)
    kernel[..., 2, :] = 0.0  # filter 2 read by nobody
    out.kernel.assign(kernel.reshape(-1, 2))
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(64, 6, 6, 2)).astype("float32"),
            rng.normal(size=(64, 2)).astype("float32"))
    conv_importance, out_importance = taylor_importance(model, data, batches=2)
    assert conv_importance.shape == (3,) and out_importance.shape == (2,)
    assert conv_importance[0] > 0 and conv_importance[1] == 0 and conv_importance[2] == 0
    one = taylor_importance(model, (data[0][:32], data[1][:32]), batches=1)[0]
    two = taylor_importance(model, (data[0][32:], data[1][32:]), batches=1)[0]
    np.testing.assert_allclose(conv_importance, (one + two) / 2, rtol=1e-5)


def test_needs_a_compiled_model_and_x_y():
    model = evolvable(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    with pytest.raises(ValueError, match="is not compiled"):
        taylor_importance(model, (np.ones((2, 2)), np.ones((2, 1))))
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="data must be"):
        taylor_importance(model, np.ones((2, 2)))
