"""DIGITS' DetectNet training augmentation, built on Keras 3's
bounding-box-aware preprocessing layers.

DIGITS trains DetectNet on KITTI with `detectnet_augmentation_param`
(DESIGN §3): shift up to 32 px in x and y (crop_prob 1), horizontal flip
with probability 0.5, scale 0.8-1.2 with probability 0.4, hue rotation up
to 30 degrees with probability 0.8 and desaturation up to 0.8 with
probability 0.8 (rotation_prob 0). `Augmentation()` holds those values;
`Augmentation(...).build(image_size, seed)` returns a callable that
transforms one example in a `tf.data` pipeline, the geometric steps through
`keras.layers.RandomZoom`, `RandomTranslation` and `RandomFlip` with
`bounding_box_format="xyxy"` (so the boxes move with the pixels and are
clipped to the image by `keras.utils.bounding_boxes.clip_to_image_size`),
the colour steps through `RandomHue` and `RandomSaturation`.

An example is a dict: `images` (H, W, 3), `boxes` (M, 4) `x1 y1 x2 y2`
pixels, `labels` (M,) float class codes (`recipes.detectnet.data`; -1 marks
a padding row or a box moved out of the image) and `truncated` (M,).
DontCare boxes move like any other; a target box cut to a sliver narrower
or lower than `min_side` becomes DontCare. Truncation is updated with the visible
fraction: `1 - (1 - t) * clipped area / unclipped area` (DontCare's -1
stays).

Differences from DIGITS, by design: the zoom is centred (DIGITS scales and
then crops at a random offset, which the shift then covers), and
desaturation scales HSV saturation (`tf.image.adjust_saturation`) instead of
blending with grey.
"""

import dataclasses

from recipes.detectnet.data import DONTCARE, TARGET

_REFERENCE = 8.0  # side in pixels of the centred box that measures the zoom


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """DetectNet augmentation parameters; the defaults are DIGITS' KITTI
    example (`detectnet_augmentation_param`).

    Attributes:
        shift_x, shift_y: Largest shift in pixels (uniform in [-s, s]).
        flip_prob: Probability of a horizontal flip.
        scale_prob: Probability of a zoom; `scale_min`..`scale_max` is the
            range of the object size factor.
        hue_rotation_prob: Probability of a hue rotation of up to
            `hue_rotation` degrees either way.
        desaturation_prob: Probability of a desaturation of up to
            `desaturation_max` (0: none, 1: grey).
        min_side: A target box cut by the image border to less than this
            width or height (pixels) becomes DontCare: such slivers are not
            detectable, and their coverage region would make the bbox loss's
            `obj_norm` (stride^2 / region area) explode.

    Example:

    >>> Augmentation().shift_x, Augmentation(flip_prob=0).flip_prob
    (32, 0)
    >>> Augmentation(scale_min=1.3)
    Traceback (most recent call last):
    ...
    ValueError: Augmentation: need 0 < scale_min <= 1 <= scale_max, got 1.3 and 1.2.
    """

    shift_x: float = 32
    shift_y: float = 32
    flip_prob: float = 0.5
    scale_prob: float = 0.4
    scale_min: float = 0.8
    scale_max: float = 1.2
    hue_rotation_prob: float = 0.8
    hue_rotation: float = 30.0
    desaturation_prob: float = 0.8
    desaturation_max: float = 0.8
    min_side: float = 8.0

    def __post_init__(self):
        if not 0 <= self.flip_prob <= 0.5:
            raise ValueError(f"Augmentation: flip_prob must be in [0, 0.5] (p and 1 - p give "
                             f"the same distribution of scenes), got {self.flip_prob!r}.")
        for name in ("scale_prob", "hue_rotation_prob", "desaturation_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"Augmentation: {name} must be in [0, 1], got "
                                 f"{getattr(self, name)!r}.")  # fmt: skip
        if self.shift_x < 0 or self.shift_y < 0:
            raise ValueError(f"Augmentation: shifts must be >= 0, got {self.shift_x!r}, "
                             f"{self.shift_y!r}.")  # fmt: skip
        if not 0 < self.scale_min <= 1 <= self.scale_max:
            raise ValueError(f"Augmentation: need 0 < scale_min <= 1 <= scale_max, got "
                             f"{self.scale_min!r} and {self.scale_max!r}.")  # fmt: skip
        if not 0 <= self.hue_rotation <= 180:
            raise ValueError(f"Augmentation: hue_rotation must be in [0, 180] degrees, got "
                             f"{self.hue_rotation!r}.")  # fmt: skip
        if self.min_side < 0:
            raise ValueError(f"Augmentation: min_side must be >= 0, got {self.min_side!r}.")
        if not 0 <= self.desaturation_max <= 1:
            raise ValueError(f"Augmentation: desaturation_max must be in [0, 1], got "
                             f"{self.desaturation_max!r}.")  # fmt: skip

    def build(self, image_size, seed=0):
        """The per-example transform for images of `(height, width)`.

        Example (tf.data, one example):

        >>> import numpy as np, tensorflow as tf
        >>> transform = Augmentation(scale_max=2, shift_x=60).build((32, 48))
        >>> out = transform({"images": tf.zeros((32, 48, 3), tf.uint8),
        ...     "boxes": tf.constant([[0., 4., 10., 14.]]),
        ...     "labels": tf.constant([1.]), "truncated": tf.constant([0.])})
        >>> sorted(out), out["boxes"].shape
        (['boxes', 'images', 'labels', 'truncated'], TensorShape([1, 4]))
        """
        return _Transform(self, image_size, seed)


class _Transform:
    """`Augmentation.build`'s callable: holds the Keras layers."""

    def __init__(self, params, image_size, seed):
        import keras

        self.params = params
        self.height, self.width = (int(v) for v in image_size)
        # float32 even under a mixed-precision policy (tf.cond needs one dtype)
        boxes = {"bounding_box_format": "xyxy", "dtype": "float32"}
        seed = int(seed)
        # RandomZoom's factor f makes objects 1 / (1 + f) times as large
        self.zoom = keras.layers.RandomZoom(
            (1 / params.scale_max - 1, 1 / params.scale_min - 1), fill_mode="constant",
            seed=seed, **boxes)  # fmt: skip
        self.shift = keras.layers.RandomTranslation(
            min(1.0, params.shift_y / self.height), min(1.0, params.shift_x / self.width),
            fill_mode="constant", seed=seed + 1, **boxes)  # fmt: skip
        self.flip = keras.layers.RandomFlip("horizontal", seed=seed + 2, **boxes)
        self.hue = keras.layers.RandomHue(params.hue_rotation / 180.0, value_range=(0, 255),
                                          seed=seed + 3, dtype="float32")  # fmt: skip
        # RandomSaturation's factor s scales saturation by s / (1 - s): 1 at
        # s = 0.5, 1 - desaturation_max at the lower end
        keep = 1.0 - params.desaturation_max
        self.saturation = keras.layers.RandomSaturation(
            (keep / (1.0 + keep), 0.5), value_range=(0, 255), seed=seed + 4,
            dtype="float32")  # fmt: skip
        self.draws = keras.random.SeedGenerator(seed + 5)

    def __call__(self, example):
        import keras
        import tensorflow as tf

        params = self.params
        images = tf.cast(example["images"], tf.float32)
        boxes = tf.cast(example["boxes"], tf.float32)
        labels = tf.cast(example["labels"], tf.float32)
        truncated = tf.cast(example["truncated"], tf.float32)
        draws = keras.random.uniform((4,), seed=self.draws)
        # a small centred reference box measures the zoom's area factor
        cy, cx, half = self.height / 2, self.width / 2, _REFERENCE / 2
        reference = tf.constant([[cx - half, cy - half, cx + half, cy + half]], tf.float32)
        areas = _area(boxes)
        data = {"images": images, "bounding_boxes": {
            "boxes": tf.concat([boxes, reference], 0), "labels": tf.concat([labels, [0.0]], 0)}}
        data = _maybe(draws[0] < params.scale_prob, self.zoom, data)
        zoomed = data["bounding_boxes"]["boxes"][-1]
        area_factor = _area(zoomed[None])[0] / (_REFERENCE * _REFERENCE)
        data["bounding_boxes"] = {key: value[:-1] for key, value in data["bounding_boxes"].items()}
        if params.shift_x or params.shift_y:
            data = self.shift(data)
        if params.flip_prob:
            data = _maybe(draws[1] < 2 * params.flip_prob, self.flip, data)  # flips half
        images = data["images"]
        if params.hue_rotation:
            images = _maybe(draws[2] < params.hue_rotation_prob, self.hue, images)
        if params.desaturation_max:
            images = _maybe(draws[3] < params.desaturation_prob, self.saturation, images)
        boxes = data["bounding_boxes"]["boxes"]
        labels = tf.where(labels < 0, labels, data["bounding_boxes"]["labels"])
        sliver = (boxes[:, 2] - boxes[:, 0] < params.min_side) | (
            boxes[:, 3] - boxes[:, 1] < params.min_side)
        labels = tf.where((labels == TARGET) & sliver, DONTCARE, labels)
        visible = tf.math.divide_no_nan(_area(boxes), areas * area_factor)
        truncated = tf.where(truncated < 0, truncated,
                             1.0 - (1.0 - truncated) * tf.clip_by_value(visible, 0.0, 1.0))
        return {**example, "images": tf.clip_by_value(images, 0.0, 255.0), "boxes": boxes,
                "labels": labels, "truncated": truncated}  # fmt: skip


def _maybe(condition, layer, data):
    """`layer(data)` where `condition`, else `data` (same structure)."""
    import tensorflow as tf

    return tf.cond(condition, lambda: layer(data), lambda: data)


def _area(boxes):
    import tensorflow as tf

    return tf.maximum(boxes[:, 2] - boxes[:, 0], 0.0) * tf.maximum(boxes[:, 3] - boxes[:, 1], 0.0)
