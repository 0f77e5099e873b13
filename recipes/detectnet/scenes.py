"""Seeded generator of KITTI-format road scenes (images + exact labels).

The CPU default data of the DetectNet recipe: a road under a simple pinhole
camera (KITTI's focal length and 1.65 m camera height, scaled to the image
height), cars seen from behind or from the side at depths that give a wide
range of sizes, cars cut by the image border (truncation) and hidden behind
nearer objects (occlusion), and distractors: pedestrians (labelled
`Pedestrian`), crates, poles with signs, buildings and trees (unlabelled).
Cars too small to label are marked `DontCare`, as KITTI does.

Labels are exact: a label box is the pixel extent of the drawn object,
`(left, top, right + 1, bottom + 1)` of its pixels, clipped to the image.
`truncated` is the fraction of the object's box outside the image,
`occluded` comes from the fraction of its pixels hidden by nearer objects
(0: < 10 %, 1: < 50 %, 2: more). Cars with less than 20 % of their pixels
visible are left unlabelled. Image `i` of seed `s` depends only on `(s, i)`.
"""

import dataclasses
import math
import os

import numpy as np

from recipes.detectnet.kitti import KittiObject, write_labels

_CAMERA_HEIGHT = 1.65  # metres, KITTI
_KITTI_FOCAL = 721.5  # pixels, for KITTI's 375-pixel-high images
_CAR_COLOURS = [
    (200, 30, 30), (30, 60, 160), (230, 230, 230), (25, 25, 25), (120, 120, 125),
    (170, 170, 175), (20, 110, 60), (200, 160, 40), (90, 50, 30), (100, 130, 170),
]  # fmt: skip


@dataclasses.dataclass
class Scene:
    """One generated scene.

    Attributes:
        image: uint8 RGB array (height, width, 3).
        objects: `KittiObject` labels (Car, Pedestrian, DontCare).
        instance_map: int32 (height, width): `k + 1` where the visible
            pixel belongs to `objects[k]`, else 0.

    Example:

    >>> import numpy as np
    >>> scene = render_scene(np.random.default_rng(0))
    >>> int(scene.instance_map.max()) == len(scene.objects)
    True
    """

    image: np.ndarray
    objects: list
    instance_map: np.ndarray


def _camera(image_size):
    height, width = image_size
    focal = _KITTI_FOCAL * height / 375.0
    return focal, width / 2.0, 0.46 * height


class _Painter:
    """Paints shapes on the RGB image and, as object `number`, on the id map."""

    def __init__(self, image, ids):
        from PIL import ImageDraw

        self.rgb, self.ids = ImageDraw.Draw(image), ImageDraw.Draw(ids)
        self.number = 0

    def _paint(self, method, xy, colour):
        getattr(self.rgb, method)(xy, fill=tuple(int(c) for c in colour))
        getattr(self.ids, method)(xy, fill=self.number)

    def rect(self, colour, x0, y0, x1, y1):
        """Fills pixels x0..x1, y0..y1 (inclusive); nothing if empty."""
        if x1 >= x0 and y1 >= y0:
            self._paint("rectangle", [x0, y0, x1, y1], colour)

    def ellipse(self, colour, x0, y0, x1, y1):
        if x1 >= x0 and y1 >= y0:
            self._paint("ellipse", [x0, y0, x1, y1], colour)

    def polygon(self, colour, points):
        self._paint("polygon", points, colour)


def _draw_car(paint, box, view, colour, light):
    """Draws a car whose pixels span exactly x0..x1-1, y0..y1-1 of `box`."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    r, b = x1 - 1, y1 - 1
    dark, glass, tyre = tuple(int(c * 0.55) for c in colour), (40, 50, 70), (15, 15, 15)
    top = y0 + int(0.4 * h)  # of the body; the cabin is above
    paint.rect(colour, x0, top, r, b - max(1, int(0.15 * h)))
    if view == "rear":
        inset, foot = int(0.18 * w), int(0.05 * w)
        paint.polygon(dark, [(x0 + inset, y0), (r - inset, y0), (r - foot, top), (x0 + foot, top)])
        paint.rect(glass, x0 + int(0.25 * w), y0 + 1, r - int(0.25 * w), top - 2)
        wheel = max(1, int(0.18 * w))
        paint.rect(tyre, x0, b - int(0.22 * h), x0 + wheel, b)
        paint.rect(tyre, r - wheel, b - int(0.22 * h), r, b)
        lamp_w, lamp_h = max(1, int(0.12 * w)), max(1, int(0.1 * h))
        paint.rect(light, x0 + 1, top + 1, x0 + lamp_w, top + lamp_h)
        paint.rect(light, r - lamp_w, top + 1, r - 1, top + lamp_h)
    else:
        paint.polygon(
            dark,
            [(x0 + int(0.2 * w), top), (x0 + int(0.32 * w), y0),
             (x0 + int(0.72 * w), y0), (x0 + int(0.86 * w), top)],
        )  # fmt: skip
        paint.rect(glass, x0 + int(0.34 * w), y0 + 1, x0 + int(0.7 * w), top - 1)
        radius = max(1, int(0.22 * h))
        for centre in (x0 + int(0.2 * w), x0 + int(0.8 * w)):
            paint.ellipse(tyre, centre - radius, b - 2 * radius, centre + radius, b)


def _draw_pedestrian(paint, box, colour):
    """Draws a pedestrian whose pixels span exactly the box."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    r, b = x1 - 1, y1 - 1
    head, waist, centre = max(1, int(0.16 * h)), y0 + int(0.6 * h), (x0 + r) // 2
    paint.ellipse((230, 190, 160), centre - head // 2, y0, centre + head // 2, y0 + head)
    paint.rect(colour, x0, y0 + head, r, waist)
    paint.rect((40, 40, 60), x0 + int(0.1 * w), waist, x0 + int(0.45 * w), b)
    paint.rect((40, 40, 60), r - int(0.45 * w), waist, r - int(0.1 * w), b)


def _background(draw, rng, image_size, camera):
    height, width = image_size
    focal, cx, horizon = camera
    top, bottom = np.array([90, 140, 210]), np.array([200, 215, 230])
    for row in range(int(horizon) + 1):
        colour = top + (bottom - top) * row / max(horizon, 1)
        draw.line([(0, row), (width, row)], fill=tuple(int(c) for c in colour))
    draw.rectangle([0, int(horizon), width, height], fill=(70, 110, 50))
    x = -rng.integers(0, 20)
    while x < width:  # buildings and trees on the horizon
        w = int(rng.integers(width // 20, width // 6))
        h = int(rng.integers(height // 12, height // 3))
        if rng.random() < 0.6:
            grey = int(rng.integers(90, 200))
            draw.rectangle(
                [x, int(horizon) - h, x + w, int(horizon)], fill=(grey, grey - 10, grey - 20)
            )
        else:
            green = (30, int(rng.integers(80, 140)), 40)
            draw.ellipse([x, int(horizon) - h, x + w, int(horizon) + h // 4], fill=green)
        x += w + int(rng.integers(0, width // 15))
    road_far, road_near = 0.02 * width, 1.4 * width
    draw.polygon(
        [(cx - road_far, horizon), (cx + road_far, horizon),
         (cx + road_near, height), (cx - road_near, height)],
        fill=(95, 95, 100),
    )  # fmt: skip
    for lateral in (-5.25, -1.75, 1.75, 5.25):
        for z in np.arange(4.0, 80.0, 6.0):
            u0, v0 = cx + focal * lateral / z, horizon + focal * _CAMERA_HEIGHT / z
            u1 = cx + focal * lateral / (z + 3)
            v1 = horizon + focal * _CAMERA_HEIGHT / (z + 3)
            draw.line([(u0, v0), (u1, v1)], fill=(225, 225, 225), width=max(1, int(focal / z / 25)))


def _sample_car(rng, camera, height, min_car_height, far):
    focal, cx, _ = camera
    if far:
        pixel_h = rng.uniform(0.4, 0.9) * min_car_height
    else:
        pixel_h = rng.uniform(min_car_height, 0.5 * height)
    side = rng.random() < 0.3
    dims = (rng.uniform(1.4, 1.7), rng.uniform(1.6, 1.9), rng.uniform(3.6, 4.8))
    z = focal * dims[0] / pixel_h
    if rng.random() < 0.15:  # anywhere across the image, often cut by its border
        lateral = rng.uniform(-1, 1) * cx * z / focal
    elif side:  # parked at the roadside
        lateral = rng.choice([-1, 1]) * rng.uniform(5, 9)
    else:
        lateral = rng.uniform(-4.5, 4.5)
    ry = ((0.0 if rng.random() < 0.5 else math.pi) if side else -math.pi / 2) + rng.normal(0, 0.08)
    return dict(
        kind="DontCare" if far else "Car",
        z=z,
        lateral=lateral,
        dims=dims,
        ry=ry,
        view="side" if side else "rear",
        colour=_CAR_COLOURS[rng.integers(len(_CAR_COLOURS))],
    )


def _sample_distractor(rng, kind):
    side = rng.choice([-1, 1])
    if kind == "Pedestrian":
        dims = (rng.uniform(1.6, 1.9), 0.6, 0.8)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        return dict(kind=kind, z=rng.uniform(6, 30), lateral=side * rng.uniform(4, 8), dims=dims,
                    ry=rng.uniform(-math.pi, math.pi), colour=colour)  # fmt: skip
    size = rng.uniform(0.8, 1.6)
    dims = (size, size, size) if kind == "crate" else (3.0, 0.12, 0.12)
    return dict(kind=kind, z=rng.uniform(6, 40), lateral=side * rng.uniform(5, 10), dims=dims,
                ry=0.0, colour=_CAR_COLOURS[rng.integers(len(_CAR_COLOURS))])  # fmt: skip


def _footprint(obj):
    """Ground-plane extent (lateral, depth) in metres and the image width."""
    _, width, length = obj["dims"]
    sin, cos = abs(math.sin(obj["ry"])), abs(math.cos(obj["ry"]))
    return width * sin + length * cos, width * cos + length * sin


def _place(obj, camera, image_size):
    """Adds the image box; False if mostly outside the image."""
    focal, cx, horizon = camera
    height, width = image_size
    across, _ = _footprint(obj)
    u = cx + focal * obj["lateral"] / obj["z"]
    bottom = horizon + focal * _CAMERA_HEIGHT / obj["z"]
    w = max(2.0, focal * across / obj["z"])
    h = max(3.0, focal * obj["dims"][0] / obj["z"])
    box = (round(u - w / 2), round(bottom - h), round(u + w / 2), round(bottom))
    inside = (min(box[2], width) - max(box[0], 0)) * (min(box[3], height) - max(box[1], 0))
    obj["box"] = box
    return min(box[2], width) > max(box[0], 0) and inside >= 0.3 * (w * h)


def _collides(obj, others):
    across, deep = _footprint(obj)
    for other in others:
        other_across, other_deep = _footprint(other)
        if (
            abs(obj["lateral"] - other["lateral"]) < (across + other_across) / 2 + 0.3
            and abs(obj["z"] - other["z"]) < (deep + other_deep) / 2 + 0.3
        ):
            return True
    return False


def _sample_objects(rng, image_size, camera, max_cars, distractors, min_car_height):
    """Objects (dicts: kind, depth, box, 3D fields) that do not collide on the
    ground and are at least 30 % inside the image; unsorted."""
    num_cars = 0 if rng.random() < 0.08 else int(rng.integers(1, max_cars + 1))
    kinds = ["Car"] * num_cars + ["DontCare"] * int(rng.integers(0, 3))
    if distractors:
        kinds += ["Pedestrian"] * int(rng.integers(0, 3))
        kinds += [("crate", "pole")[int(rng.integers(2))] for _ in range(int(rng.integers(0, 4)))]
    objects = []
    for kind in kinds:
        for _ in range(20):  # rejection sampling of a free spot
            if kind in ("Car", "DontCare"):
                obj = _sample_car(rng, camera, image_size[0], min_car_height, kind == "DontCare")
            else:
                obj = _sample_distractor(rng, kind)
            if _place(obj, camera, image_size) and not _collides(obj, objects):
                objects.append(obj)
                break
    return objects


def render_scene(rng, image_size=(128, 384), max_cars=6, distractors=True, noise=4.0,
                 min_car_height=12.0):  # fmt: skip
    """Renders one scene.

    Args:
        rng: A `numpy.random.Generator`.
        image_size: `(height, width)` in pixels.
        max_cars: Most labelled cars per image.
        distractors: Draw pedestrians, crates and poles.
        noise: Standard deviation of the added Gaussian pixel noise.
        min_car_height: Cars lower than this (pixels) are labelled DontCare.

    Returns:
        A `Scene`.

    Example:

    >>> import numpy as np
    >>> scene = render_scene(np.random.default_rng(0))
    >>> scene.image.shape, scene.image.dtype
    ((128, 384, 3), dtype('uint8'))
    """
    from PIL import Image

    height, width = (int(v) for v in image_size)
    if height < 16 or width < 16:
        raise ValueError(f"render_scene: image_size must be at least 16x16, got {image_size!r}.")
    if max_cars < 1:
        raise ValueError(f"render_scene: max_cars must be >= 1, got {max_cars!r}.")
    camera = _camera((height, width))
    image = Image.new("RGB", (width, height))
    ids = Image.new("I", (width, height), 0)
    paint = _Painter(image, ids)
    _background(paint.rgb, rng, (height, width), camera)
    objects = _sample_objects(rng, (height, width), camera, max_cars, distractors, min_car_height)
    objects.sort(key=lambda obj: -obj["z"])  # painter's order: far to near
    drawn = []
    for number, obj in enumerate(objects, start=1):
        paint.number = number
        x0, y0, x1, y1 = obj["box"]
        if obj["kind"] in ("Car", "DontCare"):
            light = (220, 20, 20) if rng.random() < 0.7 else (240, 200, 60)
            _draw_car(paint, obj["box"], obj["view"], obj["colour"], light)
        elif obj["kind"] == "Pedestrian":
            _draw_pedestrian(paint, obj["box"], obj["colour"])
        elif obj["kind"] == "crate":
            paint.rect(obj["colour"], x0, y0, x1 - 1, y1 - 1)
        else:  # a pole with a round sign
            paint.rect((150, 150, 150), x0, y0, x1 - 1, y1 - 1)
            radius = max(2, (y1 - y0) // 8)
            sign = (200, 30, 30) if obj["lateral"] > 0 else (30, 60, 200)
            paint.ellipse(sign, x0 - radius, y0, x1 + radius, y0 + 2 * radius)
        drawn.append(int((np.asarray(ids) == number).sum()))
    id_map = np.asarray(ids)
    labels, instance_map = [], np.zeros((height, width), np.int32)
    for number, (obj, initial) in enumerate(zip(objects, drawn, strict=True), start=1):
        if obj["kind"] not in ("Car", "Pedestrian", "DontCare"):
            continue
        pixels = np.argwhere(id_map == number)
        visible = len(pixels) / max(initial, 1)
        if not len(pixels) or (obj["kind"] != "DontCare" and visible < 0.2):
            continue
        x0, y0, x1, y1 = obj["box"]
        full_area = (x1 - x0) * (y1 - y0)
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if obj["kind"] == "DontCare":
            labels.append(KittiObject("DontCare", -1, -1, -10, (cx0, cy0, cx1, cy1)))
        else:
            truncated = round(1.0 - (cx1 - cx0) * (cy1 - cy0) / full_area, 2)
            occluded = 0 if visible >= 0.9 else 1 if visible >= 0.5 else 2
            location = (round(obj["lateral"], 2), _CAMERA_HEIGHT, round(obj["z"], 2))
            ry = round((obj["ry"] + math.pi) % (2 * math.pi) - math.pi, 2)
            alpha = round(
                (ry - math.atan2(obj["lateral"], obj["z"]) + math.pi) % (2 * math.pi) - math.pi, 2
            )
            dims = tuple(round(v, 2) for v in obj["dims"])
            labels.append(
                KittiObject(
                    obj["kind"],
                    truncated,
                    occluded,
                    alpha,
                    (cx0, cy0, cx1, cy1),
                    dims,
                    location,
                    ry,
                )
            )
        instance_map[id_map == number] = len(labels)
    pixels = np.asarray(image, dtype=np.float32)
    pixels = pixels * rng.uniform(0.75, 1.15) + rng.normal(0.0, noise, pixels.shape)
    return Scene(np.clip(pixels, 0, 255).astype(np.uint8), labels, instance_map)


def generate(num_images, seed=0, **kwargs):
    """Yields `num_images` scenes; image `i` depends only on `(seed, i)`.

    Args:
        num_images: How many scenes.
        seed: Integer seed.
        **kwargs: Passed to `render_scene`.

    Example:

    >>> [len(s.objects) >= 0 for s in generate(2, seed=1)]
    [True, True]
    """
    for index in range(int(num_images)):
        yield render_scene(np.random.default_rng([int(seed), index]), **kwargs)


def write_dataset(root, num_images, seed=0, split="training", start=0, **kwargs):
    """Writes scenes as KITTI files: `root/<split>/image_2/NNNNNN.png` and
    `root/<split>/label_2/NNNNNN.txt`.

    Args:
        root: Output directory (created if needed).
        num_images: How many scenes.
        seed: Integer seed.
        split: Sub-directory (`"training"`).
        start: Index of the first scene (names and seeds continue from it).
        **kwargs: Passed to `render_scene`.

    Returns:
        The example names written.

    Example:

    >>> import tempfile
    >>> write_dataset(tempfile.mkdtemp(), 2, seed=0)
    ['000000', '000001']
    """
    from PIL import Image

    if int(num_images) < 1:
        raise ValueError(f"write_dataset: num_images must be >= 1, got {num_images!r}.")
    image_dir = os.path.join(root, split, "image_2")
    label_dir = os.path.join(root, split, "label_2")
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(label_dir, exist_ok=True)
    names = []
    for index in range(int(start), int(start) + int(num_images)):
        scene = render_scene(np.random.default_rng([int(seed), index]), **kwargs)
        name = f"{index:06d}"
        Image.fromarray(scene.image).save(os.path.join(image_dir, name + ".png"))
        write_labels(os.path.join(label_dir, name + ".txt"), scene.objects)
        names.append(name)
    return names
