"""Evolution as GPU users run it: MirroredStrategy (here on 2 logical CPU
devices) and mixed precision, with EvolutionCallback, the lineage and
compaction. Each case runs in its own process (logical devices and the
global dtype policy are process-wide)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf

out = sys.argv[1]
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import keras_evosynth as ke
from recipes.apputil import distribution_strategy

strategy = distribution_strategy("mirrored")
rng = np.random.default_rng(0)
x = rng.uniform(0, 1, (64, 8, 8, 3)).astype("float32")
y = (x.mean(axis=(1, 2, 3)) > 0.5).astype("int32")
results = {}
for policy in ("float32", "mixed_float16", "mixed_bfloat16"):
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        base = keras.Sequential([
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv2"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, name="logits"),
            keras.layers.Activation("softmax", dtype="float32", name="probs"),
        ])
        model = ke.evolvable(base, precision="int8")
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    directory = f"{out}/{policy}"
    evolution = ke.EvolutionCallback(generations=2, epochs_per_generation=1, precision="int8",
                                     monitor="loss", mode="min", tolerance=10.0, seed=0,
                                     directory=directory)
    model.fit(x, y, batch_size=16, epochs=3, callbacks=[evolution], verbose=0)
    conv = model.get_layer("conv1")
    synapse_mask, _ = conv.get_masks()
    keras.mixed_precision.set_global_policy("float32")
    compacted = ke.compact(model)
    masked = np.asarray(model.predict(x[:8], verbose=0), "float32")
    small = np.asarray(compacted.predict(x[:8], verbose=0), "float32")
    exported = None
    if policy == "mixed_float16":  # the GPU users' policy: the int8 export takes it
        report = ke.export_litert(compacted, x[:16], f"{out}/{policy}.tflite")
        exported = [report.mode, report.top1_agreement]
    results[policy] = {
        "compacted_policies": sorted({layer.dtype_policy.name for layer in compacted.layers}),
        "exported": exported,
        "variable_dtypes": sorted({v.dtype for v in model.weights}),
        "compute_dtype": conv.compute_dtype,
        "masked_zero_kernel": bool(np.all(np.asarray(conv.kernel)[~synapse_mask] == 0)),
        "generations": [r["generation"] for r in ke.read_lineage(directory)],
        "max_diff": float(np.abs(masked - small).max()),
        "finite": bool(np.isfinite(masked).all()),
    }
# one validation image for 2 replicas: detection_scores pads the replica-less batch
from recipes.detectnet import callbacks, scenes
from recipes.detectnet.model import detectnet

keras.mixed_precision.set_global_policy("float32")
with strategy.scope():
    net = detectnet((32, 48), 0.0625, "all")
scene = next(scenes.generate(1, seed=0, image_size=(32, 48)))
score = callbacks.detection_scores(net, (scene.image[None], [scene.objects]), (32, 48), 0.1)
print("RESULT " + json.dumps({"replicas": strategy.num_replicas_in_sync, "runs": results,
                              "one_image_mAP": score["mAP"]}))
"""


def test_mirrored_mixed_precision_evolution_and_compaction(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env,
                            cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(row for row in result.stdout.splitlines() if row.startswith("RESULT "))
    facts = json.loads(line[len("RESULT ") :])
    assert facts["replicas"] == 2
    tolerance = {"float32": 1e-5, "mixed_float16": 5e-3, "mixed_bfloat16": 2e-2}
    for policy, run in facts["runs"].items():
        assert run["variable_dtypes"] == ["float32"], policy  # masks, kernels, ranges
        assert run["compute_dtype"] == {"float32": "float32"}.get(policy, policy[6:])
        assert run["masked_zero_kernel"] and run["finite"], policy
        assert run["generations"] == [0, 1, 2], policy
        assert run["compacted_policies"] == ["float32"], policy  # the deployment model
        # the compacted float32 model computes what the masked one does (to
        # the policy's rounding)
        assert run["max_diff"] <= tolerance[policy], (policy, run["max_diff"])
    assert sorted(facts["runs"]) == sorted(tolerance)
    mode, agreement = facts["runs"]["mixed_float16"]["exported"]
    assert mode == "int8" and agreement >= 0.9
    assert 0 <= facts["one_image_mAP"] <= 100


RECIPE = r"""
import json, os, sys
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from absl import flags
import keras_evosynth as ke
from recipes.apputil import distribution_strategy
from recipes.detectnet import evolve, scenes, train

out = sys.argv[1]
scenes.write_dataset(out + "/kitti", 11, seed=0, image_size=(64, 96))
values = flags.FlagValues()
evolve.define_flags(values)
values(["evolve", "--image_height=64", "--image_width=96", "--width=0.0625", "--num_train=8",
        "--num_val=3", "--epochs=1", "--batch_size=4", "--generations=1",
        "--epochs_per_generation=1", "--fitness_epochs=1", "--strategy=mirrored",
        "--mixed_precision=mixed_bfloat16", "--tfmot=off", "--out_dir=" + out,
        "--kitti_root=" + out + "/kitti", "--precisions=int8", "--synthesis=filters"])
ancestor = evolve.ancestor_model(values, print_fn=print)
sources = train.sources(values)
strategy = distribution_strategy("mirrored")
keras.mixed_precision.set_global_policy("mixed_bfloat16")
evolution = evolve.evolve(ancestor, "int8", sources, out + "/lineage", values, strategy=strategy)
keras.mixed_precision.set_global_policy("float32")
compacted = ke.compact(evolution.model)
x = np.zeros((2, 64, 96, 3), "float32")  # a batch for each replica
diff = np.abs(np.asarray(evolution.model.predict(x, verbose=0)["coverage"], "float32")
              - np.asarray(compacted.predict(x, verbose=0)["coverage"], "float32")).max()
print("RESULT " + json.dumps({"replicas": strategy.num_replicas_in_sync,
      "generations": [r["generation"] for r in ke.read_lineage(out + "/lineage")],
      "max_diff": float(diff)}))
"""


@pytest.mark.slow
def test_detectnet_recipe_streams_evolves_and_compacts_mirrored(tmp_path):
    """~2 min: the recipe's ancestor training and one lineage generation on
    streamed KITTI files, MirroredStrategy on 2 logical CPUs, bfloat16."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", RECIPE, str(tmp_path)], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(row for row in result.stdout.splitlines() if row.startswith("RESULT "))
    facts = json.loads(line[len("RESULT ") :])
    assert facts["replicas"] == 2 and facts["generations"] == [0, 1]
    assert facts["max_diff"] < 2e-2
