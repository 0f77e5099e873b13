"""Streams KITTI-format detection data with `tf.data`.

A *source* is either a list of `Example` (files on disk, from `scan`) or,
for tiny in-memory data such as the CPU default's generated scenes, a pair
`(images, labels)` of a uint8 array (N, H, W, 3) and N lists of
`kitti.KittiObject`. `dataset(source, ...)` turns either into batches of
`(float32 images, {"coverage": grid, "bboxes": grid})` for `model.fit`
(or of images only, `targets=False`, for `model.predict`):

    file list -> [shuffle] -> read + decode PNG/JPEG -> pad or resize
    -> [cache] -> [augment (DIGITS, `augment.Augmentation`)]
    -> ground-truth encoding (`targets.encode`) -> batch -> prefetch

Only the file list and the labels (a few KB per image) are held in memory;
images are decoded as batches are needed, so a 6,000-image full-size KITTI
split trains in a few GB of RAM (`benchmarks/kitti_stream.py`).

`scan` checks a KITTI directory before any training starts and raises one
error naming the file (and line): an image without a label file or a label
without an image, an unreadable or truncated image, a malformed label line,
a box outside its image, an image larger than the input with
`fit="pad"`, or a size other than the input's with `fit="none"`.

This module imports only TensorFlow (not Keras 3) unless augmentation is
asked for, so the tfmot baseline's legacy-Keras process can use it.
"""

import dataclasses
import os

import numpy as np

from recipes.detectnet import kitti
from recipes.detectnet import targets as ground_truth

# class codes of the `labels` tensor (Keras' bounding-box layers use -1 for
# "no box": padding rows and boxes moved out of the image)
PADDING, OTHER, TARGET, DONTCARE = -1.0, 0.0, 1.0, 2.0
FITS = ("pad", "resize", "none")


@dataclasses.dataclass(frozen=True)
class Example:
    """One image file and its objects (boxes in the network input's pixels,
    i.e. scaled when the image is resized).

    Attributes:
        image_path, label_path: The KITTI files.
        file_size: `(height, width)` of the image file.
        objects: Tuple of `kitti.KittiObject`.
    """

    image_path: str
    label_path: str
    file_size: tuple
    objects: tuple


def _pairs(kitti_root, split):
    """`kitti.find_examples`, plus: a label file without an image is an
    error too."""
    pairs = kitti.find_examples(kitti_root, split)
    label_dir = os.path.join(kitti_root, split, "label_2")
    stems = {os.path.splitext(os.path.basename(image))[0] for image, _ in pairs}
    for name in sorted(os.listdir(label_dir)):
        stem, extension = os.path.splitext(name)
        if extension == ".txt" and stem not in stems:
            raise FileNotFoundError(
                f"Label file {os.path.join(label_dir, name)!r} has no image "
                f"(.png/.jpg) in {os.path.join(kitti_root, split, 'image_2')!r}."
            )
    return pairs


def _image_size(path, verify):
    """(height, width) from the header; with `verify`, the whole file is
    checked (PNG chunk CRCs, truncation) without decoding it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
            if verify:
                image.verify()
    except Exception as error:  # PIL raises many types for bad files
        raise ValueError(f"Image {path!r} is unreadable or truncated: {error}") from None
    return height, width


def _fitted(objects, file_size, image_size, fit, image_path):
    """The objects in input pixels; raises for a size `fit` cannot take."""
    (file_h, file_w), (height, width) = file_size, image_size
    if fit == "none" and (file_h, file_w) != (height, width):
        raise ValueError(
            f"Image {image_path!r} is {file_w}x{file_h}, not the input size "
            f"{width}x{height} (width x height); images of mixed sizes need "
            f"fit='pad' (--fit=pad) or fit='resize'."
        )
    if fit == "pad" and (file_h > height or file_w > width):
        raise ValueError(
            f"Image {image_path!r} is {file_w}x{file_h}, larger than the input "
            f"{width}x{height} (width x height) it is padded to; use a larger input "
            f"or fit='resize'."
        )
    if fit != "resize" or (file_h, file_w) == (height, width):
        return tuple(objects)
    sx, sy = width / file_w, height / file_h
    return tuple(
        dataclasses.replace(obj, bbox=(obj.bbox[0] * sx, obj.bbox[1] * sy,
                                       obj.bbox[2] * sx, obj.bbox[3] * sy))  # fmt: skip
        for obj in objects
    )


def scan(kitti_root, image_size, split="training", fit="pad", limit=None, verify=True,
         print_fn=None):  # fmt: skip
    """Lists and checks a KITTI-layout directory (nothing is decoded).

    Args:
        kitti_root: Directory with `<split>/image_2` and `<split>/label_2`.
        image_size: `(height, width)` of the network input.
        split: Sub-directory, `"training"` by default.
        fit: `"pad"`: zeros at the right and bottom (DIGITS pads KITTI's
            1242x375 to 1248x384; boxes unchanged); `"resize"`: scale image
            and boxes to the input; `"none"`: every image must have the
            input size.
        limit: Only the first `limit` examples (sorted by name).
        verify: Read every image file through (PIL `verify`: PNG CRCs,
            truncation) instead of its header only.
        print_fn: Called with a progress line every 1,000 files.

    Returns:
        A list of `Example`, sorted by name.

    Raises:
        FileNotFoundError: Missing directories, no images, an image without
            a label file or a label file without an image.
        ValueError: An unreadable or truncated image, a malformed label line
            or a box outside its image (`file:line`), or an image size that
            `fit` cannot take.

    Example:

    >>> import tempfile
    >>> from recipes.detectnet import scenes
    >>> root = tempfile.mkdtemp()
    >>> _ = scenes.write_dataset(root, 2, seed=0, image_size=(64, 96))
    >>> examples = scan(root, (64, 112))
    >>> len(examples), examples[0].file_size
    (2, (64, 96))
    """
    if fit not in FITS:
        raise ValueError(f"scan: fit must be one of {FITS}, got {fit!r}.")
    ground_truth.grid_size(image_size)  # a multiple of the stride
    pairs = _pairs(kitti_root, split)
    if limit is not None:
        if int(limit) < 1:
            raise ValueError(f"scan: limit must be >= 1, got {limit!r}.")
        pairs = pairs[: int(limit)]
    examples = []
    for count, (image_path, label_path) in enumerate(pairs, start=1):
        file_size = _image_size(image_path, verify)
        objects = kitti.read_labels(label_path, file_size)
        objects = _fitted(objects, file_size, image_size, fit, image_path)
        examples.append(Example(image_path, label_path, file_size, objects))
        if print_fn and (count % 1000 == 0 or count == len(pairs)) and len(pairs) >= 1000:
            print_fn(f"scan: {count}/{len(pairs)} examples checked")
    return examples


def labels_of(source):
    """The source's object lists, in order (for `evaluate.score`).

    Example:

    >>> labels_of((np.zeros((1, 16, 16, 3), np.uint8), [[]]))
    [[]]
    """
    if isinstance(source, tuple):
        return [list(objects) for objects in source[1]]
    return [list(example.objects) for example in source]


def first(source, count):
    """The source's first `count` examples, as a source of the same kind.

    Example:

    >>> images, labels = first((np.zeros((3, 16, 16, 3), np.uint8), [[], [], []]), 2)
    >>> images.shape, len(labels)
    ((2, 16, 16, 3), 2)
    """
    if isinstance(source, tuple):
        return source[0][:count], source[1][:count]
    return source[:count]


def _check_source(source):
    if isinstance(source, tuple):
        if len(source) != 2 or len(source[0]) != len(source[1]):
            raise ValueError("data: an in-memory source is (images, labels) of equal length.")
        if np.asarray(source[0]).dtype != np.uint8 or np.ndim(source[0]) != 4:
            raise ValueError("data: in-memory images must be uint8 (N, height, width, 3).")
    elif not isinstance(source, list) or not all(isinstance(e, Example) for e in source):
        raise TypeError(
            f"data: a source is a list of Example (from scan) or (images, labels), "
            f"got {type(source).__name__}."
        )
    if not len(labels_of(source)):
        raise ValueError("data: the source has no examples.")


def _box_arrays(labels, classes):
    """Padded `(boxes (N, M, 4), codes (N, M), truncated (N, M))`."""
    rows = max(1, max(len(objects) for objects in labels))
    boxes = np.zeros((len(labels), rows, 4), np.float32)
    codes = np.full((len(labels), rows), PADDING, np.float32)
    truncated = np.zeros((len(labels), rows), np.float32)
    for i, objects in enumerate(labels):
        for j, obj in enumerate(objects):
            boxes[i, j] = obj.bbox
            truncated[i, j] = obj.truncated
            codes[i, j] = (TARGET if obj.type in classes
                           else DONTCARE if obj.type == kitti.DONTCARE else OTHER)  # fmt: skip
    return boxes, codes, truncated


def _decode(path, image_size, fit):
    import tensorflow as tf

    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    if fit == "resize":
        image = tf.image.resize(image, image_size)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    return tf.image.pad_to_bounding_box(image, 0, 0, *image_size)  # "none": no-op


def _encoder(image_size):
    """`(boxes, codes) -> grid`, numpy (`targets.encode`)."""

    def encode(boxes, codes):
        return ground_truth.encode(boxes[codes == TARGET], image_size,
                              dontcare=boxes[codes == DONTCARE])  # fmt: skip

    return encode


def dataset(source, image_size, batch_size, *, shuffle=False, augmentation=None, seed=0,
            cache=None, targets=True, classes=("Car",), fit="pad",
            drop_remainder=False):  # fmt: skip
    """The tf.data pipeline of a source.

    Args:
        source: A list of `Example` (`scan`) or `(images, labels)`.
        image_size: `(height, width)` of the network input.
        batch_size: Images per batch.
        shuffle: Reshuffle the examples every epoch (seeded).
        augmentation: An `augment.Augmentation`, or None for none.
        seed: Seed of the shuffle and the augmentation.
        cache: None; `""` to keep decoded images in memory; or a file
            prefix to cache them on disk (`tf.data.Dataset.cache`). With a
            cache, shuffling uses a 256-image buffer after it.
        targets: Yield `(images, {"coverage": grid, "bboxes": grid})`; False:
            images only, in order (for `predict`).
        classes: Object types that are targets; DontCare is not penalised,
            other types are background.
        fit: How files are brought to `image_size` (see `scan`; `scan` has
            already scaled the boxes for `"resize"`).
        drop_remainder: Drop a last, smaller batch.

    Returns:
        A `tf.data.Dataset`; images are float32 pixels 0-255.

    Example:

    >>> from recipes.detectnet import scenes
    >>> made = list(scenes.generate(3, seed=0, image_size=(64, 96)))
    >>> source = (np.stack([s.image for s in made]), [s.objects for s in made])
    >>> images, grids = next(iter(dataset(source, (64, 96), 2)))
    >>> images.shape, grids["coverage"].shape
    (TensorShape([2, 64, 96, 3]), TensorShape([2, 4, 6, 9]))
    """
    import tensorflow as tf

    _check_source(source)
    if fit not in FITS:
        raise ValueError(f"dataset: fit must be one of {FITS}, got {fit!r}.")
    if int(batch_size) < 1:
        raise ValueError(f"dataset: batch_size must be >= 1, got {batch_size!r}.")
    image_size = tuple(int(v) for v in image_size)
    rows, cols = ground_truth.grid_size(image_size)
    classes = (classes,) if isinstance(classes, str) else tuple(classes)
    boxes, codes, truncated = _box_arrays(labels_of(source), classes)
    in_memory = isinstance(source, tuple)
    if in_memory:
        if tuple(source[0].shape[1:3]) != image_size:
            raise ValueError(f"dataset: in-memory images are {source[0].shape[1:3]}, "
                             f"not the input size {image_size}.")  # fmt: skip
        images = source[0]
    else:
        images = np.array([example.image_path for example in source])
    count = len(images)
    ds = tf.data.Dataset.from_tensor_slices(
        {"images": images, "boxes": boxes, "labels": codes, "truncated": truncated}
    )
    autotune = tf.data.AUTOTUNE
    if shuffle and cache is None:
        ds = ds.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    if not in_memory:
        ds = ds.map(lambda e: {**e, "images": _decode(e["images"], image_size, fit)},
                    num_parallel_calls=autotune, deterministic=True)  # fmt: skip
    if cache is not None:
        ds = ds.cache(cache)
        if shuffle:
            ds = ds.shuffle(min(count, 256), seed=seed, reshuffle_each_iteration=True)
    if augmentation is not None:
        ds = ds.map(augmentation.build(image_size, seed), num_parallel_calls=autotune)
    encode = _encoder(image_size)

    def to_model(example):
        image = tf.ensure_shape(tf.cast(example["images"], tf.float32), (*image_size, 3))
        if not targets:
            return image
        grid = tf.numpy_function(encode, [example["boxes"], example["labels"]], tf.float32,
                                 stateful=False)  # fmt: skip
        grid = tf.ensure_shape(grid, (rows, cols, ground_truth.NUM_CHANNELS))
        return image, {"coverage": grid, "bboxes": grid}

    ds = ds.map(to_model, num_parallel_calls=autotune)
    return ds.batch(int(batch_size), drop_remainder=drop_remainder).prefetch(autotune)


def images_of(source, image_size, limit=None, fit="pad"):
    """The source's first `limit` images as one uint8 array (N, H, W, 3)
    (for the int8 calibration set and the LiteRT scoring of the lineage
    table, which take arrays).

    Example:

    >>> images_of((np.ones((3, 16, 16, 3), np.uint8), [[], [], []]), (16, 16), 2).shape
    (2, 16, 16, 3)
    """
    _check_source(source)
    if isinstance(source, tuple):
        return np.asarray(source[0][:limit])
    ds = dataset(first(source, limit), image_size, 16, targets=False, fit=fit)
    return np.concatenate([batch.numpy() for batch in ds]).astype(np.uint8)
