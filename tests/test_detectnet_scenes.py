"""Tests for recipes.detectnet.scenes (determinism, exact labels, variety)."""

import numpy as np
import pytest

from recipes.detectnet import kitti, scenes


def _boxes_intersect(a, b):
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def test_same_seed_same_scenes_other_seed_other_scenes():
    first = list(scenes.generate(5, seed=11))
    again = list(scenes.generate(5, seed=11))
    other = list(scenes.generate(5, seed=12))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        assert a.objects == b.objects
    assert any(not np.array_equal(a.image, c.image) for a, c in zip(first, other, strict=True))
    # Scene i depends only on (seed, i), not on how many are generated.
    np.testing.assert_array_equal(list(scenes.generate(2, seed=11))[1].image, first[1].image)


def test_written_dataset_reads_back_identically(tmp_path):
    root = str(tmp_path)
    names = scenes.write_dataset(root, 3, seed=5)
    names += scenes.write_dataset(root, 1, seed=5, start=3)
    assert names == ["000000", "000001", "000002", "000003"]
    images, labels, read_names = kitti.load_split(root)
    assert read_names == names
    for index, scene in enumerate(scenes.generate(4, seed=5)):
        np.testing.assert_array_equal(images[index], scene.image)  # PNG is lossless
        assert labels[index] == scene.objects


def test_labels_are_the_exact_pixel_extent():
    checked = 0
    for index in range(40):
        rng = np.random.default_rng([3, index])
        scene = scenes.render_scene(rng, max_cars=3, distractors=False)
        for k, obj in enumerate(scene.objects, start=1):
            pixels = np.argwhere(scene.instance_map == k)
            top, left = pixels.min(axis=0)
            bottom, right = pixels.max(axis=0) + 1
            x0, y0, x1, y1 = obj.bbox
            # Visible pixels always lie inside the label box ...
            assert x0 <= left and y0 <= top and right <= x1 and bottom <= y1
            others = [o.bbox for o in scene.objects if o is not obj]
            if not any(_boxes_intersect(obj.bbox, b) for b in others):
                # ... and, when nothing overlaps the object, span it exactly.
                assert (left, top, right, bottom) == (x0, y0, x1, y1)
                checked += 1
    assert checked >= 40


def test_labels_describe_kitti_fields():
    found = {"Car", "DontCare", "Pedestrian"}
    seen, occlusion, truncated, heights = set(), set(), [], []
    for scene in scenes.generate(80, seed=0):
        height, width = scene.image.shape[:2]
        for obj in scene.objects:
            seen.add(obj.type)
            x0, y0, x1, y1 = obj.bbox
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            if obj.type == "Car":
                occlusion.add(obj.occluded)
                truncated.append(obj.truncated)
                heights.append(obj.height)
                assert obj.height >= 12
                assert obj.location[1] == pytest.approx(1.65) and obj.location[2] > 0
            if obj.type == "DontCare":
                assert (obj.truncated, obj.occluded) == (-1, -1)
                assert obj.height < 12
    assert seen == found
    assert occlusion == {0, 1, 2}
    assert max(truncated) > 0.3 and np.mean(np.array(truncated) == 0) > 0.5
    assert min(heights) < 20 and max(heights) > 50


def test_every_label_is_visible_and_distractors_are_optional():
    for index in range(20):
        scene = scenes.render_scene(np.random.default_rng([4, index]))
        present = set(np.unique(scene.instance_map)) - {0}
        assert present == set(range(1, len(scene.objects) + 1))
        plain = scenes.render_scene(np.random.default_rng([4, index]), distractors=False)
        assert {o.type for o in plain.objects} <= {"Car", "DontCare"}


def test_image_size_and_arguments():
    scene = scenes.render_scene(np.random.default_rng(0), image_size=(64, 96), noise=0.0)
    assert scene.image.shape == (64, 96, 3)
    assert scene.instance_map.shape == (64, 96)
    with pytest.raises(ValueError, match="at least 16x16"):
        scenes.render_scene(np.random.default_rng(0), image_size=(8, 96))
    with pytest.raises(ValueError, match="max_cars must be >= 1"):
        scenes.render_scene(np.random.default_rng(0), max_cars=0)
    with pytest.raises(ValueError, match="num_images must be >= 1"):
        scenes.write_dataset("/tmp/unused", 0)
