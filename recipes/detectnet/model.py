"""The GoogLeNet-based DetectNet network (NVIDIA DIGITS), in plain Keras 3.

DIGITS' DetectNet is a GoogLeNet trunk without its classifier and without
`pool4`, so the trunk's output stride is 16, followed by two 1x1
convolutions: a coverage head (1 channel, sigmoid) and a bbox head (4
channels: x1, y1, x2, y2 relative to the grid cell's top-left corner, in
pixels).

Differences from the Caffe original, all deliberate:

- Keras has no local response normalisation (LRN) layer. At the two places
  where GoogLeNet applies LRN (`norm1` after `pool1`, `norm2` after
  `conv2/3x3`) this model applies `BatchNormalization` instead
  (`batch_norm="lrn"`, the default). `batch_norm="all"` instead puts a
  BatchNormalization after every convolution (the BN-Inception way; easier
  to train from scratch, same kernel-weight count); `batch_norm=None` omits
  normalisation.
- "same" padding everywhere. For inputs whose sides are multiples of 16 this
  reproduces Caffe's shapes (conv1 pad 3, ceil-mode pooling) exactly:
  1248x384 -> 78x24.

At width 1.0 and a 1248x384 input the network has 5,971,392 kernel weights
(5,966,272 in the trunk + 1,024 coverage + 4,096 bbox), 7,285 filters (7,280
+ 1 + 4) and 18,605,223,936 multiply-accumulates per image, the figures of
DESIGN.md section 3. Biases (7,285) and BatchNormalization parameters are not
counted as weights.

`keras` argument: `detectnet(..., keras=tf_keras)` builds the same network
with another Keras module (the tfmot baseline's `tf_keras`); the default is
Keras 3, imported only when a model is built.
"""

STRIDE = 16

# GoogLeNet (Szegedy et al. 2015, table 1) inception channel counts:
# (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj).
INCEPTION_CHANNELS = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}

_BATCH_NORM = ("lrn", "all", None)


def scaled(filters, width):
    """Channel count `filters` scaled by the width multiplier, at least 1.

    Args:
        filters: Channel count at width 1.0.
        width: Width multiplier (> 0).

    Returns:
        `max(1, round(filters * width))`.

    Example:

    >>> scaled(192, 0.25), scaled(16, 0.01)
    (48, 1)
    """
    return max(1, int(round(filters * width)))


def _keras(keras):
    if keras is None:
        import keras
    return keras


def _conv(x, filters, kernel_size, name, batch_norm, strides=1, keras=None):
    keras = _keras(keras)
    every = batch_norm == "all"
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=not every,
        name=name,
    )(x)
    if every:
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def inception(x, channels, name, batch_norm="lrn", keras=None):
    """One GoogLeNet inception block (1x1, 3x3, 5x5 and pool branches).

    Args:
        x: Input tensor (channels last).
        channels: `(1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj)`.
        name: Block name prefix, e.g. `"inception_3a"`.
        batch_norm: `"all"` adds BatchNormalization after every conv.
        keras: The Keras module to build with (default: Keras 3).

    Returns:
        The concatenation of the four branches.

    Example:

    >>> import keras
    >>> x = keras.Input((8, 8, 192))
    >>> inception(x, (64, 96, 128, 16, 32, 32), "inception_3a").shape
    (None, 8, 8, 256)
    """
    if len(channels) != 6 or any(int(c) < 1 for c in channels):
        raise ValueError(f"inception '{name}': channels must be 6 positive ints, got {channels}.")
    keras = _keras(keras)
    c1, c3r, c3, c5r, c5, cp = (int(c) for c in channels)
    conv = {"batch_norm": batch_norm, "keras": keras}
    b1 = _conv(x, c1, 1, f"{name}_1x1", **conv)
    b3 = _conv(x, c3r, 1, f"{name}_3x3_reduce", **conv)
    b3 = _conv(b3, c3, 3, f"{name}_3x3", **conv)
    b5 = _conv(x, c5r, 1, f"{name}_5x5_reduce", **conv)
    b5 = _conv(b5, c5, 5, f"{name}_5x5", **conv)
    bp = keras.layers.MaxPooling2D(3, 1, padding="same", name=f"{name}_pool")(x)
    bp = _conv(bp, cp, 1, f"{name}_pool_proj", **conv)
    return keras.layers.Concatenate(name=f"{name}_output")([b1, b3, b5, bp])


def _check_args(input_size, width, batch_norm, dropout):
    try:
        height, image_width = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise ValueError(
            f"detectnet: input_size must be (height, width), got {input_size!r}."
        ) from None
    if height < STRIDE or image_width < STRIDE or height % STRIDE or image_width % STRIDE:
        raise ValueError(
            f"detectnet: input_size {input_size!r} must be positive multiples of "
            f"the stride {STRIDE} (e.g. (384, 1248) or (128, 384))."
        )
    if not 0 < width <= 4:
        raise ValueError(f"detectnet: width must be in (0, 4], got {width!r}.")
    if batch_norm not in _BATCH_NORM:
        raise ValueError(f"detectnet: batch_norm must be one of {_BATCH_NORM}, got {batch_norm!r}.")
    if not 0 <= dropout < 1:
        raise ValueError(f"detectnet: dropout must be in [0, 1), got {dropout!r}.")
    return height, image_width


def detectnet(
    input_size=(384, 1248),
    width=1.0,
    batch_norm="lrn",
    dropout=0.4,
    name="detectnet",
    keras=None,
):
    """Builds the GoogLeNet-based DetectNet.

    The input is an RGB image, channels last, values in [0, 255] (float);
    the model subtracts the mean 127 itself (a `Rescaling(1, offset=-127)`
    layer). Outputs are a dict: `"coverage"` (batch, H/16, W/16, 1) in
    [0, 1] and `"bboxes"` (batch, H/16, W/16, 4), the box corners x1, y1, x2,
    y2 in pixels relative to each grid cell's top-left corner.

    Args:
        input_size: `(height, width)` in pixels, multiples of 16.
            DetectNet's KITTI setting is `(384, 1248)`.
        width: Width multiplier for every trunk convolution (the heads keep 1
            and 4 channels); 1.0 is GoogLeNet.
        batch_norm: `"lrn"` (BatchNormalization where GoogLeNet has LRN),
            `"all"` (after every conv) or None.
        dropout: Dropout rate before the heads (DetectNet: 0.4).
        name: Model name.
        keras: The Keras module to build with: None (Keras 3) or e.g.
            `tf_keras` (same layers, same names, same weight shapes).

    Returns:
        A functional `keras.Model`.

    Example:

    >>> model = detectnet(input_size=(128, 384), width=0.25)
    >>> {k: v.shape for k, v in model.output.items()}
    {'coverage': (None, 8, 24, 1), 'bboxes': (None, 8, 24, 4)}
    """
    height, image_width = _check_args(input_size, width, batch_norm, dropout)
    keras = _keras(keras)
    conv = {"batch_norm": batch_norm, "keras": keras}
    inputs = keras.Input((height, image_width, 3), name="image")
    x = keras.layers.Rescaling(1.0, offset=-127.0, name="mean_subtract")(inputs)
    x = _conv(x, scaled(64, width), 7, "conv1_7x7_s2", strides=2, **conv)
    x = keras.layers.MaxPooling2D(3, 2, padding="same", name="pool1_3x3_s2")(x)
    if batch_norm == "lrn":
        x = keras.layers.BatchNormalization(name="pool1_norm1")(x)
    x = _conv(x, scaled(64, width), 1, "conv2_3x3_reduce", **conv)
    x = _conv(x, scaled(192, width), 3, "conv2_3x3", **conv)
    if batch_norm == "lrn":
        x = keras.layers.BatchNormalization(name="conv2_norm2")(x)
    x = keras.layers.MaxPooling2D(3, 2, padding="same", name="pool2_3x3_s2")(x)
    for block, channels in INCEPTION_CHANNELS.items():
        if block == "4a":
            x = keras.layers.MaxPooling2D(3, 2, padding="same", name="pool3_3x3_s2")(x)
        # DetectNet drops GoogLeNet's pool4 (between 4e and 5a): stride 16.
        channels = [scaled(c, width) for c in channels]
        x = inception(x, channels, f"inception_{block}", **conv)
    x = keras.layers.Dropout(dropout, name="pool5_drop")(x)
    coverage = keras.layers.Conv2D(1, 1, activation="sigmoid", name="coverage")(x)
    bboxes = keras.layers.Conv2D(4, 1, name="bboxes")(x)
    return keras.Model(inputs, {"coverage": coverage, "bboxes": bboxes}, name=name)
