"""Would any DetectNet layer run faster in float than in int8 on this host?

The lever of a per-layer deployment precision (issue: int8 or float chosen
per layer by measured latency) only pays where a layer's float kernel beats
its int8 one. This measures it for every convolution of the CPU-default
DetectNet (width 0.25, 384x128; GoogLeNet's 7x7/2 stem also in its exact
space-to-depth form): each op alone at its real input size and channel
counts (`keras_evosynth.latency`'s micro-models), converted to full-integer
int8 (int8 in/out) and to float32, all timed in this process, interleaved
round by round (LiteRT, XNNPACK, 1 thread, batch 1). A float layer inside an
int8 model would also pay a DEQUANTIZE before it and a QUANTIZE after it,
which the micro-models leave out: the float figures are a lower bound on
what the layer would cost in float inside the int8 model.

    python -m benchmarks.layer_precision --json benchmarks/results/layer_precision.json
"""


from absl import flags, logging

from benchmarks.common import save_result, time_side_by_side
from recipes import apputil

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    """Defines the benchmark's absl flags (called by `__main__` only)."""
    define = {"flag_values": flag_values}
    flags.DEFINE_integer("rounds", 10, "Interleaved timing rounds.", **define)
    flags.DEFINE_float("width", 0.25, "DetectNet trunk width.", **define)
    flags.DEFINE_string("json", "bench_out/layer_precision.json", "Where to write results.",
                        **define)
    apputil.define_verbose(flag_values)


def layer_forms(model):
    """`[(layer names, op, form)]`: each distinct synaptic op of `model` (ops
    of equal signature and channels measured once), plus the space-to-depth
    form of strided convolutions on at most 4 input channels."""
    from keras_evosynth import evolvable
    from keras_evosynth.latency import model_ops, space_to_depth_op

    forms = {}
    for op in model_ops(evolvable(model)):
        if not op.two_d:
            continue
        variants = [(op, "direct")]
        rewritten = space_to_depth_op(op, below=4)
        if rewritten is not None:
            variants.append((rewritten, "space_to_depth"))
        for variant, form in variants:
            key = (variant.key, variant.cin, variant.cout)
            forms.setdefault(key, ([], variant, form))[0].append(op.name)
    return list(forms.values())


def main(argv):
    del argv
    import keras
    import numpy as np

    from keras_evosynth.export import export_litert
    from keras_evosynth.latency.timing import (
        cpu_name,
        float32_flatbuffer,
        int8_flatbuffer,
        micro_model,
    )
    from recipes.detectnet.model import detectnet

    logging.set_verbosity(logging.INFO if FLAGS.verbose else logging.ERROR)
    keras.utils.set_random_seed(0)
    print(f"host CPU: {cpu_name()}, LiteRT XNNPACK, 1 thread, batch 1", flush=True)
    model = detectnet(input_size=(128, 384), width=FLAGS.width, batch_norm="all")
    forms = layer_forms(model)
    flatbuffers = []
    for i, (_, op, _) in enumerate(forms):
        micro = micro_model(op.signature, op.cin, op.cout)
        flatbuffers += [int8_flatbuffer(micro), float32_flatbuffer(micro)]
        print(f"\rconverted {i + 1}/{len(forms)} ops", end="", flush=True)
    data = np.random.default_rng(0).uniform(0, 255, (8, 128, 384, 3)).astype("float32")
    flatbuffers += [export_litert(model, data, int8_io=True).flatbuffer,
                    export_litert(model, data, mode="float32").flatbuffer]  # fmt: skip
    print(f"\ntiming {len(flatbuffers)} flatbuffers interleaved, {FLAGS.rounds} rounds",
          flush=True)
    ms = [float(t) for t in time_side_by_side(flatbuffers, FLAGS.rounds)]
    rows = []
    for (names, op, form), int8_ms, float_ms in zip(forms, ms[0::2], ms[1::2], strict=False):
        rows.append({"layers": names, "form": form, "cin": op.cin, "cout": op.cout,
                     "input": op.signature["input"], "kernel": op.signature["kernel"],
                     "strides": op.signature["strides"], "int8_ms": int8_ms,
                     "float32_ms": float_ms, "float_over_int8": float_ms / int8_ms})  # fmt: skip
    print("| layer | form | in -> out | int8 ms | float32 ms | float / int8 |\n|---|---|---|---|"
          "---|---|")  # fmt: skip
    for row in sorted(rows, key=lambda r: r["float_over_int8"]):
        more = len(row["layers"]) - 1
        name = row["layers"][0] + (f" (+{more} alike)" if more else "")
        print(f"| {name} | {row['form']} | {row['cin']} -> {row['cout']} | "
              f"{row['int8_ms']:.4f} | {row['float32_ms']:.4f} | {row['float_over_int8']:.2f} |")
    faster = [r for r in rows if r["float_over_int8"] < 1]
    whole = {"int8_ms": ms[-2], "float32_ms": ms[-1]}
    print(f"whole model: int8 {whole['int8_ms']:.3f} ms, float32 {whole['float32_ms']:.3f} ms; "
          f"ops faster in float32 than int8: {[r['layers'][0] + ' ' + r['form'] for r in faster]}")
    save_result(FLAGS.json, {
        "benchmark": "layer_precision",
        "config": {"model": "detectnet", "width": FLAGS.width, "input": [128, 384],
                   "rounds": FLAGS.rounds, "threads": 1, "batch": 1},
        "ops": rows, "whole_model": whole,
        "faster_in_float32": [{"layers": r["layers"], "form": r["form"]} for r in faster],
    })  # fmt: skip


if __name__ == "__main__":
    define_flags()
    apputil.run(main)
