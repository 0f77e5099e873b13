"""Tests for recipes.detectnet.model: architecture, DESIGN.md section 3 figures."""

import math

import keras
import numpy as np
import pytest

from keras_evosynth.stats import summary
from recipes.detectnet.model import INCEPTION_CHANNELS, detectnet, inception, scaled


def _conv_figures(model):
    """(kernel weights, filters, MACs) counted from shapes, not values."""
    weights = filters = macs = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            size = math.prod(layer.kernel.shape)
            weights += size
            filters += layer.filters
            macs += size * math.prod(layer.output.shape[1:3])
    return weights, filters, macs


@pytest.fixture(scope="module")
def full_size():
    return detectnet(input_size=(384, 1248), width=1.0)


def test_full_size_matches_design_figures(full_size):
    weights, filters, macs = _conv_figures(full_size)
    assert weights == 5_971_392
    assert filters == 7_285
    assert macs == 18_605_223_936  # ~18.6 GMAC per 1248x384 image
    stats = summary(full_size, print_fn=None)
    assert stats.total_synapses == 5_971_392
    assert stats.total_clusters == 7_285


def test_full_size_trunk_and_heads(full_size):
    heads = [full_size.get_layer("coverage"), full_size.get_layer("bboxes")]
    assert [tuple(h.kernel.shape) for h in heads] == [(1, 1, 1024, 1), (1, 1, 1024, 4)]
    weights, filters, _ = _conv_figures(full_size)
    assert weights - 1024 * 5 == 5_966_272  # GoogLeNet convolutions without the FC
    assert filters - 5 == 7_280
    assert full_size.get_layer("inception_5b_output").output.shape == (None, 24, 78, 1024)
    shapes = {k: v.shape for k, v in full_size.output.items()}
    assert shapes == {"coverage": (None, 24, 78, 1), "bboxes": (None, 24, 78, 4)}


def test_googlenet_block_widths(full_size):
    expected = {"3a": 256, "3b": 480, "4a": 512, "4b": 512, "4c": 512, "4d": 528,
                "4e": 832, "5a": 832, "5b": 1024}  # fmt: skip
    for block, channels in expected.items():
        layer = full_size.get_layer(f"inception_{block}_output")
        assert layer.output.shape[-1] == channels
        c1, _, c3, _, c5, cp = INCEPTION_CHANNELS[block]
        assert c1 + c3 + c5 + cp == channels


def test_no_pool4_and_lrn_replacement(full_size):
    pools = [
        layer.name
        for layer in full_size.layers
        if isinstance(layer, keras.layers.MaxPooling2D) and layer.strides == (2, 2)
    ]
    assert pools == ["pool1_3x3_s2", "pool2_3x3_s2", "pool3_3x3_s2"]
    norms = [
        layer.name
        for layer in full_size.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert norms == ["pool1_norm1", "conv2_norm2"]
    assert full_size.get_layer("pool5_drop").rate == pytest.approx(0.4)


def test_mean_subtraction_and_output_ranges():
    model = detectnet(input_size=(32, 64), width=0.125)
    stem = keras.Model(model.input, model.get_layer("mean_subtract").output)
    image = np.full((1, 32, 64, 3), 127.0, np.float32)
    image[0, 0, 0] = (0, 127, 255)
    out = keras.ops.convert_to_numpy(stem(image))
    assert out[0, 0, 0].tolist() == [-127.0, 0.0, 128.0]
    assert np.count_nonzero(out) == 2
    result = model.predict(np.random.default_rng(0).uniform(0, 255, (2, 32, 64, 3)), verbose=0)
    assert result["coverage"].shape == (2, 2, 4, 1)
    assert result["bboxes"].shape == (2, 2, 4, 4)
    assert np.all((result["coverage"] >= 0) & (result["coverage"] <= 1))


@pytest.mark.parametrize("width", [0.25, 0.5])
def test_width_multiplier_scales_every_trunk_conv(width):
    model = detectnet(input_size=(128, 384), width=width)
    assert model.get_layer("conv1_7x7_s2").filters == scaled(64, width)
    assert model.get_layer("conv2_3x3").filters == scaled(192, width)
    c1, c3r, c3, c5r, c5, cp = INCEPTION_CHANNELS["4d"]
    assert model.get_layer("inception_4d_3x3_reduce").filters == scaled(c3r, width)
    out = model.get_layer("inception_5b_output").output.shape
    assert out[1:] == (8, 24, sum(scaled(c, width) for c in (384, 384, 128, 128)))
    assert model.get_layer("coverage").filters == 1
    assert model.get_layer("bboxes").filters == 4


def test_batch_norm_options_keep_the_kernel_count():
    counts = {}
    for option in ("lrn", "all", None):
        model = detectnet(input_size=(32, 32), width=0.25, batch_norm=option)
        bns = [x for x in model.layers if isinstance(x, keras.layers.BatchNormalization)]
        counts[option] = (_conv_figures(model)[0], len(bns))
        if option == "all":
            assert not model.get_layer("inception_3a_1x1").use_bias
    assert counts["lrn"][0] == counts["all"][0] == counts[None][0]
    assert counts["lrn"][1] == 2 and counts[None][1] == 0
    assert counts["all"][1] == 3 + 9 * 6  # every trunk conv


def test_scaled():
    assert scaled(192, 1.0) == 192
    assert scaled(192, 0.25) == 48
    assert scaled(16, 0.01) == 1
    assert scaled(24, 0.0625) == 2  # round(1.5) -> 2 (banker's rounding)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_size": (100, 128)}, "multiples of the stride 16"),
        ({"input_size": (0, 128)}, "multiples of the stride 16"),
        ({"input_size": 128}, "input_size must be"),
        ({"width": 0.0}, "width must be in"),
        ({"width": 5}, "width must be in"),
        ({"batch_norm": "lrn_everywhere"}, "batch_norm must be one of"),
        ({"dropout": 1.0}, "dropout must be in"),
    ],
)
def test_bad_arguments(kwargs, message):
    args = {"input_size": (32, 32), "width": 0.25, **kwargs}
    with pytest.raises(ValueError, match=message):
        detectnet(**args)


def test_inception_rejects_bad_channels():
    with pytest.raises(ValueError, match="inception 'x'"):
        inception(keras.Input((4, 4, 8)), (1, 2, 3), "x")


def test_save_load_round_trip(tmp_path):
    model = detectnet(input_size=(32, 48), width=0.125)
    path = str(tmp_path / "detectnet.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(1).uniform(0, 255, (1, 32, 48, 3)).astype(np.float32)
    a, b = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for key in ("coverage", "bboxes"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-6)
