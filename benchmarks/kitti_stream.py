"""Streamed full-size KITTI-format training: peak memory and input throughput.

    python -m benchmarks.kitti_stream          # ~15 min on 2 cores

Writes `--images` generated scenes at 1248x384 as KITTI files (PNG + label
txt, `scenes.write_dataset`; reused when already there), checks them
(`data.scan`), then in this process:

1. times the input pipeline alone (decode, pad, DIGITS augmentation, target
   encoding, batching) over one pass: images/s;
2. trains one epoch of a width-`--width` DetectNet on the same pipeline:
   images/s, with the same augmentation.

The pipeline is not the bottleneck when (1) is well above (2). Peak RSS is
the process's maximum resident set (`resource.getrusage`), which must stay
below 3 GB although the float32 images alone would need
`images * 1248 * 384 * 3 * 4` bytes (11.5 GB for 2,000). Writes
`benchmarks/results/kitti_stream.json`.
"""

import os
import resource
import time

from absl import flags

from benchmarks.common import save_result
from recipes import apputil

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    """Defines the benchmark's absl flags (called by `__main__` only)."""
    define = {"flag_values": flag_values}
    flags.DEFINE_integer("images", 2000, "Generated full-size scenes.", **define)
    flags.DEFINE_float("width", 0.25, "DetectNet width multiplier.", **define)
    flags.DEFINE_integer("batch_size", 10, "Batch size (DIGITS: 10).", **define)
    flags.DEFINE_string("data_dir", "runs/kitti_stream_scenes", "Where the scenes are written.",
                        **define)
    flags.DEFINE_integer("epochs", 1, "Training epochs (the GPU smoke run: a few hundred steps).",
                         **define)
    flags.DEFINE_enum("strategy", "none", ["none", "mirrored"], "tf.distribute strategy.", **define)
    flags.DEFINE_enum("mixed_precision", "float32", ["float32", "mixed_float16", "mixed_bfloat16"],
                      "Keras dtype policy.", **define)
    flags.DEFINE_string("json", "benchmarks/results/kitti_stream.json", "Result file.", **define)
    apputil.define_verbose(flag_values)


SIZE = (384, 1248)


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KB on Linux


def argv_flags():
    """The non-default flags of this run, as on the command line."""
    names = ("images", "width", "batch_size", "epochs", "strategy", "mixed_precision")
    return [f"--{name}={FLAGS[name].value}" for name in names if FLAGS[name].present]


def main(argv):
    del argv
    from recipes.detectnet import scenes

    label_dir = os.path.join(FLAGS.data_dir, "training", "label_2")
    have = len(os.listdir(label_dir)) if os.path.isdir(label_dir) else 0
    if have < FLAGS.images:
        start = time.time()
        for first in range(have, FLAGS.images, 250):
            scenes.write_dataset(FLAGS.data_dir, min(250, FLAGS.images - first), seed=0,
                                 start=first, image_size=SIZE)  # fmt: skip
            print(f"wrote {min(first + 250, FLAGS.images)}/{FLAGS.images} scenes "
                  f"({time.time() - start:.0f} s)", flush=True)  # fmt: skip
    import keras

    from recipes.detectnet import data, losses
    from recipes.detectnet.augment import Augmentation
    from recipes.detectnet.model import detectnet

    start = time.time()
    examples = data.scan(FLAGS.data_dir, SIZE, limit=FLAGS.images, print_fn=print)
    scan_s = time.time() - start
    print(f"scan: {len(examples)} examples in {scan_s:.1f} s", flush=True)

    def pipeline():
        return data.dataset(examples, SIZE, FLAGS.batch_size, shuffle=True,
                            augmentation=Augmentation(), seed=0)  # fmt: skip

    start = time.time()
    count = sum(int(images.shape[0]) for images, _ in pipeline())
    pipeline_s = time.time() - start
    print(f"pipeline alone: {count} images in {pipeline_s:.1f} s "
          f"({count / pipeline_s:.1f} images/s), peak RSS {peak_rss_gb():.2f} GB", flush=True)

    import tensorflow as tf

    from recipes.apputil import distribution_strategy

    keras.mixed_precision.set_global_policy(FLAGS.mixed_precision)
    keras.utils.set_random_seed(0)
    strategy = distribution_strategy(FLAGS.strategy)
    with strategy.scope():
        model = detectnet(SIZE, FLAGS.width, "all")
        model.compile(keras.optimizers.Adam(2e-4), loss=losses.losses(),
                      loss_weights=losses.LOSS_WEIGHTS)  # fmt: skip
    start = time.time()
    model.fit(pipeline(), epochs=FLAGS.epochs, verbose=2, shuffle=False)
    train_s = time.time() - start
    trained = count * FLAGS.epochs
    gpus = tf.config.list_logical_devices("GPU")
    gpu_gb = [tf.config.experimental.get_memory_info(g.name)["peak"] / 1024**3 for g in gpus]
    print(f"training: {trained} images in {train_s:.1f} s ({trained / train_s:.2f} images/s, "
          f"graph tracing included), peak RSS {peak_rss_gb():.2f} GB"
          + (f", peak GPU memory {', '.join(f'{g:.2f}' for g in gpu_gb)} GB" if gpus else ""),
          flush=True)  # fmt: skip
    float32_gb = count * SIZE[0] * SIZE[1] * 3 * 4 / 1024**3
    save_result(FLAGS.json, {
        "command": " ".join(["python -m benchmarks.kitti_stream", *argv_flags()]),
        "images": count, "epochs": FLAGS.epochs, "image_size": list(SIZE), "width": FLAGS.width,
        "strategy": FLAGS.strategy, "mixed_precision": FLAGS.mixed_precision,
        "replicas": strategy.num_replicas_in_sync, "gpus": [g.name for g in gpus],
        "peak_gpu_memory_gb": [round(g, 2) for g in gpu_gb],
        "batch_size": FLAGS.batch_size, "augmentation": "DIGITS (Augmentation())",
        "scan_s": round(scan_s, 1),
        "pipeline_images_per_s": round(count / pipeline_s, 2),
        "training_images_per_s": round(trained / train_s, 3),
        "pipeline_vs_training": round((count / pipeline_s) / (trained / train_s), 1),
        "peak_rss_gb": round(peak_rss_gb(), 2),
        "in_memory_float32_gb": round(float32_gb, 1),
        "target": {"peak_rss_gb_below": 3.0, "pipeline_faster_than_training": True},
        "met": peak_rss_gb() < 3.0 and count / pipeline_s > trained / train_s,
    })  # fmt: skip


if __name__ == "__main__":
    define_flags()
    apputil.run(main)
