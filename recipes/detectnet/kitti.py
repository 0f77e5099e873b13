"""KITTI object labels (15 fields, DontCare) and the training/image_2 +
label_2 directory layout.

A KITTI label line has 15 space-separated fields (16 for detection results,
the last being a score)::

    type truncated occluded alpha left top right bottom h w l x y z rotation_y

`type` is Car, Van, Truck, Pedestrian, Person_sitting, Cyclist, Tram, Misc
or DontCare (a region with unlabelled objects, not to be penalised).
Box coordinates are image pixels; here `right`/`bottom` are treated as
continuous coordinates, so a box's width is `right - left`.
"""

import dataclasses
import os

import numpy as np

DONTCARE = "DontCare"
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


@dataclasses.dataclass(frozen=True)
class KittiObject:
    """One line of a KITTI label file.

    Attributes:
        type: Object class, e.g. `"Car"` or `"DontCare"`.
        truncated: Fraction of the object outside the image, 0..1 (-1 for
            DontCare).
        occluded: 0 fully visible, 1 partly occluded, 2 largely occluded,
            3 unknown (-1 for DontCare).
        alpha: Observation angle in radians, -pi..pi (-10 for DontCare).
        bbox: `(left, top, right, bottom)` in pixels.
        dimensions: `(height, width, length)` in metres.
        location: `(x, y, z)` in camera coordinates, metres.
        rotation_y: Rotation around the camera's y axis, -pi..pi.
        score: Detection confidence (result files only), else None.

    Example:

    >>> obj = KittiObject("Car", 0.0, 0, -1.5, (10, 20, 50, 40))
    >>> obj.height
    20.0
    """

    type: str
    truncated: float
    occluded: int
    alpha: float
    bbox: tuple
    dimensions: tuple = (-1.0, -1.0, -1.0)
    location: tuple = (-1000.0, -1000.0, -1000.0)
    rotation_y: float = -10.0
    score: float | None = None

    def __post_init__(self):
        bbox = tuple(float(v) for v in self.bbox)
        if len(bbox) != 4:
            raise ValueError(f"KittiObject: bbox needs 4 values, got {self.bbox!r}.")
        object.__setattr__(self, "bbox", bbox)
        object.__setattr__(self, "dimensions", tuple(float(v) for v in self.dimensions))
        object.__setattr__(self, "location", tuple(float(v) for v in self.location))

    @property
    def height(self):
        """Box height in pixels (`bottom - top`)."""
        return self.bbox[3] - self.bbox[1]


def _number(text):
    """float(text) for a label field; None when it is not a finite number."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def parse_line(line, source="<string>", line_number=1):
    """Parses one KITTI label line.

    Args:
        line: The text of the line.
        source: File name used in error messages.
        line_number: 1-based line number used in error messages.

    Returns:
        A `KittiObject`.

    Raises:
        ValueError: Naming `source:line_number` for a wrong field count, a
            non-numeric field, an occlusion level not in -1..3, a truncation
            outside [-1, 1] or a box with right < left or bottom < top.

    Example:

    >>> parse_line("Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 "
    ...            "1.65 1.67 3.64 -0.65 1.71 46.70 -1.59").bbox
    (587.01, 173.33, 614.12, 200.12)
    """
    where = f"{source}:{line_number}"
    fields = line.split()
    if len(fields) not in (15, 16):
        raise ValueError(
            f"{where}: a KITTI label line has 15 fields (16 with a score), "
            f"got {len(fields)}: {line.strip()!r}."
        )
    values = [_number(text) for text in fields[1:]]
    for index, (text, value) in enumerate(zip(fields[1:], values, strict=True), start=2):
        if value is None:
            raise ValueError(f"{where}: field {index} is not a number: {text!r}.")
    truncated, occluded, alpha = values[0], values[1], values[2]
    if occluded != int(occluded) or not -1 <= occluded <= 3:
        raise ValueError(
            f"{where}: occluded (field 3) must be an integer in -1..3, got {fields[2]!r}."
        )
    if not -1 <= truncated <= 1:
        raise ValueError(f"{where}: truncated (field 2) must be in [-1, 1], got {fields[1]!r}.")
    left, top, right, bottom = values[3:7]
    if right < left or bottom < top:
        raise ValueError(
            f"{where}: box (fields 5-8) has right < left or bottom < top: "
            f"{(left, top, right, bottom)}."
        )
    return KittiObject(
        type=fields[0],
        truncated=truncated,
        occluded=int(occluded),
        alpha=alpha,
        bbox=(left, top, right, bottom),
        dimensions=tuple(values[7:10]),
        location=tuple(values[10:13]),
        rotation_y=values[13],
        score=values[14] if len(values) == 15 else None,
    )


def _format_number(value):
    """KITTI's 2 decimals when exact, otherwise the shortest exact repr."""
    value = float(value)
    text = f"{value:.2f}"
    return text if float(text) == value else repr(value)


def format_line(obj):
    """The KITTI label line for `obj` (no newline); inverse of `parse_line`.

    Values print with 2 decimals, as KITTI's files do, unless that would
    lose precision; then the shortest exact representation is used, so
    `parse_line(format_line(obj)) == obj` always holds.

    Example:

    >>> format_line(KittiObject("Car", 0.0, 0, -1.5, (10, 20, 50.125, 40)))
    'Car 0.00 0 -1.50 10.00 20.00 50.125 40.00 -1.00 -1.00 -1.00 -1000.00 -1000.00 -1000.00 -10.00'
    """
    fields = [obj.type, _format_number(obj.truncated), str(int(obj.occluded))]
    numbers = [obj.alpha, *obj.bbox, *obj.dimensions, *obj.location, obj.rotation_y]
    if obj.score is not None:
        numbers.append(obj.score)
    return " ".join(fields + [_format_number(v) for v in numbers])


def read_labels(path, image_size=None, tolerance=1.0):
    """Reads a KITTI label file (blank lines are skipped).

    Args:
        path: Path of a `.txt` label file.
        image_size: `(height, width)` of its image: every box must lie
            inside it (within `tolerance` pixels; KITTI's inclusive
            right/bottom may reach the size). None: not checked.
        tolerance: See `image_size`.

    Returns:
        A list of `KittiObject`, in file order.

    Raises:
        ValueError: For a malformed line or a box outside the image, naming
            the file and line number.

    Example:

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "000000.txt")
    >>> write_labels(path, [KittiObject("Car", 0.0, 0, 0.0, (1, 2, 3, 4))])
    >>> [o.bbox for o in read_labels(path)]
    [(1.0, 2.0, 3.0, 4.0)]
    >>> read_labels(path, image_size=(2, 8))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...000000.txt:1: box (1.0, 2.0, 3.0, 4.0) lies outside its 8x2 image ...
    """
    with open(path, encoding="utf-8") as handle:
        numbered = [
            (number, parse_line(line, path, number))
            for number, line in enumerate(handle, start=1)
            if line.strip()
        ]
    if image_size is not None:  # after every line parsed: a malformed line is named first
        height, width = image_size
        for number, obj in numbered:
            left, top, right, bottom = obj.bbox
            if (min(left, top) < -tolerance or right > width + tolerance
                    or bottom > height + tolerance):  # fmt: skip
                raise ValueError(
                    f"{path}:{number}: box {obj.bbox} lies outside its "
                    f"{width}x{height} image (width x height)."
                )
    return [obj for _, obj in numbered]


def write_labels(path, objects):
    """Writes `objects` (KittiObject) as a KITTI label file, one per line.

    Example:

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "000000.txt")
    >>> write_labels(path, [KittiObject("DontCare", -1, -1, -10, (0, 0, 5, 5))])
    >>> open(path).read().split()[:3]
    ['DontCare', '-1.00', '-1']
    """
    with open(path, "w", encoding="utf-8") as handle:
        for obj in objects:
            handle.write(format_line(obj) + "\n")


def boxes(objects, types=("Car",)):
    """The boxes of the objects whose type is in `types`, as a (K, 4) array.

    Example:

    >>> boxes([KittiObject("Car", 0, 0, 0, (1, 2, 3, 4)),
    ...        KittiObject("Van", 0, 0, 0, (5, 6, 7, 8))]).tolist()
    [[1.0, 2.0, 3.0, 4.0]]
    """
    if isinstance(types, str):
        types = (types,)
    rows = [obj.bbox for obj in objects if obj.type in types]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def find_examples(kitti_root, split="training"):
    """Pairs every image of `kitti_root/<split>/image_2` with its label.

    Args:
        kitti_root: Directory laid out as KITTI's object benchmark:
            `<split>/image_2/*.png` and `<split>/label_2/*.txt`.
        split: Sub-directory, `"training"` by default.

    Returns:
        Sorted list of `(image_path, label_path)`.

    Raises:
        FileNotFoundError: If the root, `image_2` or `label_2` is missing,
            there are no images, or an image has no label file.

    Example:

    >>> find_examples("/nonexistent")
    Traceback (most recent call last):
    ...
    FileNotFoundError: KITTI root '/nonexistent' does not exist.
    """
    if not os.path.isdir(kitti_root):
        raise FileNotFoundError(f"KITTI root {kitti_root!r} does not exist.")
    image_dir = os.path.join(kitti_root, split, "image_2")
    label_dir = os.path.join(kitti_root, split, "label_2")
    for directory in (image_dir, label_dir):
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"KITTI root {kitti_root!r}: missing directory {directory!r}.")
    names = sorted(
        name for name in os.listdir(image_dir) if name.lower().endswith(_IMAGE_EXTENSIONS)
    )
    if not names:
        raise FileNotFoundError(f"No .png/.jpg images in {image_dir!r}.")
    pairs = []
    for name in names:
        label = os.path.join(label_dir, os.path.splitext(name)[0] + ".txt")
        if not os.path.isfile(label):
            raise FileNotFoundError(
                f"Image {os.path.join(image_dir, name)!r} has no label file {label!r}."
            )
        pairs.append((os.path.join(image_dir, name), label))
    return pairs


def read_image(path):
    """Reads an image as an RGB uint8 array of shape (height, width, 3).

    Example:

    >>> import tempfile, os, numpy as np
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "a.png")
    >>> Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(path)
    >>> read_image(path).shape
    (4, 6, 3)
    """
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def load_split(kitti_root, split="training", limit=None, pad_to=None):
    """Loads images and labels of a KITTI-layout directory into memory.

    Args:
        kitti_root: See `find_examples`.
        split: Sub-directory, `"training"` by default.
        limit: Load only the first `limit` examples (sorted by name).
        pad_to: `(height, width)`: pad every image with zeros at the right
            and bottom to this size (DIGITS pads KITTI's 1242x375 images to
            1248x384 the same way; the boxes stay valid). None: all images
            must have the same size.

    Returns:
        `(images, labels, names)`: uint8 array (N, H, W, 3), a list of
        KittiObject lists, and the example names (file stems).

    Raises:
        FileNotFoundError: See `find_examples`.
        ValueError: Images of inconsistent size (without `pad_to`), an image
            larger than `pad_to`, or a malformed label line (file:line).

    Example:

    >>> import tempfile
    >>> from recipes.detectnet import scenes
    >>> root = tempfile.mkdtemp()
    >>> _ = scenes.write_dataset(root, 2, seed=0)
    >>> images, labels, names = load_split(root)
    >>> images.shape, names
    ((2, 128, 384, 3), ['000000', '000001'])
    """
    pairs = find_examples(kitti_root, split)
    if limit is not None:
        if int(limit) < 1:
            raise ValueError(f"load_split: limit must be >= 1, got {limit!r}.")
        pairs = pairs[: int(limit)]
    images, labels, names = [], [], []
    first = None
    for image_path, label_path in pairs:
        labels.append(read_labels(label_path))
        image = read_image(image_path)
        size = image.shape[:2]
        if pad_to is None:
            if first is None:
                first = (image_path, size)
            elif size != first[1]:
                raise ValueError(
                    f"Images of inconsistent size: {image_path!r} is "
                    f"{size[1]}x{size[0]} but {first[0]!r} is "
                    f"{first[1][1]}x{first[1][0]} (width x height); pass "
                    f"pad_to=(height, width) to pad them to one size."
                )
        else:
            height, width = (int(v) for v in pad_to)
            if size[0] > height or size[1] > width:
                raise ValueError(
                    f"Image {image_path!r} is {size[1]}x{size[0]}, larger than "
                    f"pad_to {width}x{height} (width x height)."
                )
            padded = np.zeros((height, width, 3), np.uint8)
            padded[: size[0], : size[1]] = image
            image = padded
        images.append(image)
        names.append(os.path.splitext(os.path.basename(image_path))[0])
    return np.stack(images), labels, names
