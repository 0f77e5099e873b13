"""Measures a .tflite model on this host with the LiteRT `Interpreter`.

Latency is timed around `Interpreter.invoke()` at batch 1 after warm-up
invokes (several models side by side, round by round: `tflite_bench.timer`),
with the XNNPACK delegate that LiteRT applies by default (turn it off with
`use_xnnpack=False`). Accuracy is top-1 over labelled data.
"""

import json
import os
import subprocess
import sys

import numpy as np
from ai_edge_litert import interpreter as litert

from tflite_bench.commands import child_env
from tflite_bench.errors import BenchError, one_line
from tflite_bench.quiet import quiet_native_output
from tflite_bench.timer import time_rounds

# What the memory figure is, written into every report.
MEMORY_NOTE = (
    "peak RSS increase (MiB) of a fresh Python process while it creates the "
    "interpreter, allocates tensors and runs the warm-up invokes"
)


def latency_stats(times_ms):
    """Summarizes per-invoke latencies.

    Args:
        times_ms: Latencies in milliseconds, one per timed invoke.

    Returns:
        A dict with `min`, `median`, `p90`, `p95`, `mean`, `std` (ms) and
        `runs`. Percentiles interpolate linearly between order statistics
        (numpy's default).

    Raises:
        ValueError: If `times_ms` is empty.

    Example:

    >>> latency_stats([4.0, 1.0, 3.0, 2.0])["median"]
    2.5
    """
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size == 0:
        raise ValueError("latency_stats: `times_ms` is empty")
    p90, p95 = np.percentile(t, [90, 95])
    return {
        "min": float(t.min()),
        "median": float(np.median(t)),
        "p90": float(p90),
        "p95": float(p95),
        "mean": float(t.mean()),
        "std": float(t.std()),
        "runs": int(t.size),
    }


def _allocated(**kwargs):
    """`litert.Interpreter(**kwargs)` with its tensors allocated, hiding
    LiteRT's native "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
    (printed when the process's first interpreter allocates) unless verbose
    (`tflite_bench.quiet`)."""
    with quiet_native_output():
        interp = litert.Interpreter(**kwargs)
        interp.allocate_tensors()
    return interp


def make_interpreter(path, threads=1, use_xnnpack=True):
    """Creates a LiteRT interpreter and allocates its tensors.

    Args:
        path: .tflite file.
        threads: `num_threads` of the interpreter (and of XNNPACK).
        use_xnnpack: Keep LiteRT's default XNNPACK delegate (True) or run the
            builtin kernels only (False).

    Returns:
        An allocated `ai_edge_litert.interpreter.Interpreter`.

    Raises:
        BenchError: If the file is missing or LiteRT cannot load it.

    Example:

    >>> interp = make_interpreter("model.tflite", threads=2)  # doctest: +SKIP
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BenchError(f"{path}: file not found")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    try:
        interp = load_interpreter(path, threads, use_xnnpack)
    except (ValueError, RuntimeError) as e:
        raise BenchError(f"{path}: LiteRT cannot load it ({one_line(e)})") from e
    return interp


def load_interpreter(model, threads=1, use_xnnpack=True):
    """Creates a LiteRT interpreter of a .tflite file or flatbuffer and
    allocates its tensors; LiteRT's own errors propagate (`make_interpreter`
    checks the file and turns them into a `BenchError`).

    Args:
        model: .tflite path, or the flatbuffer bytes.
        threads: `num_threads` of the interpreter (and of XNNPACK).
        use_xnnpack: See `make_interpreter`.

    Returns:
        An allocated `ai_edge_litert.interpreter.Interpreter`.

    Raises:
        ValueError, RuntimeError: LiteRT cannot load the model, or a
            delegate refuses to prepare it.

    Example:

    >>> interp = load_interpreter(flatbuffer, threads=1)  # doctest: +SKIP
    """
    source = {"model_content": model} if isinstance(model, bytes) else {
        "model_path": os.fspath(model)}
    resolver = (
        litert.OpResolverType.AUTO
        if use_xnnpack
        else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    return _allocated(**source, num_threads=int(threads), experimental_op_resolver_type=resolver)


def quantize(x, scale, zero_point, dtype):
    """Quantizes real values to an integer tensor type (affine, rounded).

    Args:
        x: Real-valued array.
        scale: Quantization scale (> 0).
        zero_point: Quantization zero point.
        dtype: Target integer numpy dtype.

    Returns:
        `clip(round(x / scale) + zero_point)` as `dtype`.

    Example:

    >>> quantize(np.array([0.0, 0.5, 100.0]), 0.5, -1, np.int8)
    array([ -1,   0, 127], dtype=int8)
    """
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, np.float64) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def _scale_zero_point(detail):
    params = detail.get("quantization_parameters", {})
    scales = params.get("scales", [])
    if len(scales) == 1 and scales[0] != 0:
        return float(scales[0]), int(params["zero_points"][0])
    return None


def to_model_input(x, detail, model="model", source="data"):
    """Converts data to what one model input takes (shape and dtype checked).

    Args:
        x: Examples, shape `(N, *example_shape)`.
        detail: One entry of `Interpreter.get_input_details()`.
        model: Model name for error messages.
        source: Data name for error messages.

    Returns:
        `x` in the input's dtype: float data is cast for float inputs and
        quantized with the input's scale/zero point for quantized inputs;
        data already in the input's dtype passes as it is.

    Raises:
        BenchError: If the per-example shape or the dtype does not match.

    Example:

    >>> detail = {"name": "in", "shape": np.array([1, 2]), "dtype": np.float32}
    >>> to_model_input(np.zeros((5, 2)), detail).dtype
    dtype('float32')
    """
    x = np.asarray(x)
    want_shape = tuple(int(d) for d in detail["shape"][1:])
    if x.ndim == 0 or tuple(x.shape[1:]) != want_shape:
        got = tuple(x.shape[1:]) if x.ndim else ()
        raise BenchError(
            f"{model}: {source} x has per-example shape {got} but input "
            f"'{detail['name']}' takes {want_shape}"
        )
    want = np.dtype(detail["dtype"])
    if x.dtype == want:
        return x
    qparams = _scale_zero_point(detail)
    if np.issubdtype(x.dtype, np.floating):
        if np.issubdtype(want, np.floating):
            return x.astype(want)
        if qparams is not None:
            return quantize(x, *qparams, want)
    raise BenchError(
        f"{model}: {source} x has dtype {x.dtype} but input '{detail['name']}' "
        f"takes {want.name} (give float data or data already in {want.name})"
    )


def from_model_output(y, detail):
    """Dequantizes an output tensor (float outputs pass through).

    Example:

    >>> detail = {"quantization_parameters": {"scales": [0.5],
    ...           "zero_points": [2]}}
    >>> from_model_output(np.array([4], np.int8), detail)
    array([1.])
    """
    qparams = _scale_zero_point(detail)
    if qparams is None or np.issubdtype(np.asarray(y).dtype, np.floating):
        return np.asarray(y)
    scale, zero_point = qparams
    return (np.asarray(y, np.float64) - zero_point) * scale


def run_signature(model, inputs, threads=1):
    """Runs a model's default signature on every example of `inputs`.

    Batch 1, one example at a time; float inputs are quantized for int8
    inputs (`to_model_input`) and int8 outputs dequantized
    (`from_model_output`).

    Args:
        model: A .tflite path or the flatbuffer bytes.
        inputs: `{signature input name: array (N, ...)}`, or one array for a
            single-input model.
        threads: Interpreter threads.

    Returns:
        `{signature output name: float32 array (N, ...)}`.

    Example:

    >>> outputs = run_signature("model.tflite", {"x": images})  # doctest: +SKIP
    """
    source = {"model_content": model} if isinstance(model, bytes) else {"model_path": model}
    runner = _allocated(**source, num_threads=int(threads)).get_signature_runner()
    in_details = runner.get_input_details()
    out_details = runner.get_output_details()
    if not isinstance(inputs, dict):
        if len(in_details) != 1:
            raise BenchError(f"the model takes {len(in_details)} inputs: give them by name")
        inputs = {next(iter(in_details)): inputs}
    unknown = sorted(set(inputs) - set(in_details))
    if unknown:
        raise BenchError(f"no model input named {unknown}: the model takes {sorted(in_details)}")
    count = len(next(iter(inputs.values())))
    results = {name: [] for name in out_details}
    for i in range(count):
        feed = {name: to_model_input(x[i : i + 1], in_details[name]) for name, x in inputs.items()}
        outputs = runner(**feed)
        for name, detail in out_details.items():
            results[name].append(np.asarray(from_model_output(outputs[name], detail), np.float32))
    return {name: np.concatenate(values) for name, values in results.items()}


def load_data(path):
    """Loads labelled data from an `.npz` with arrays `x` and `y`.

    Args:
        path: `.npz` file; `y` holds integer class ids `(N,)` or one-hot
            `(N, classes)` labels.

    Returns:
        `(x, labels)` with integer `labels` of shape `(N,)`.

    Raises:
        BenchError: On a missing file, missing keys or mismatched lengths.

    Example:

    >>> x, y = load_data("eval.npz")  # doctest: +SKIP
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BenchError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f or "y" not in f:
                raise BenchError(
                    f"{path}: needs arrays 'x' and 'y', found {sorted(f.files)}"
                )
            x, y = f["x"], f["y"]
    except (OSError, ValueError) as e:
        raise BenchError(f"{path}: not a readable .npz ({one_line(e)})") from e
    if y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    if len(y) != len(x):
        raise BenchError(f"{path}: x has {len(x)} examples but y has {len(y)}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise BenchError(f"{path}: y must hold integer class ids")
        y = y.astype(np.int64)
    return x, y


def _random_input(detail, rng):
    shape = [int(d) for d in detail["shape"]]
    dtype = np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        low, high = max(info.min, -128), min(info.max, 127)
        return rng.integers(low, high, size=shape, endpoint=True).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 1, size=shape, endpoint=True).astype(dtype)
    raise BenchError(f"input '{detail['name']}' has unsupported dtype {dtype}")


def fill_inputs(interp, sample=None, seed=0):
    """Sets every input of `interp`: `sample` for the first, random otherwise.

    Args:
        interp: An allocated interpreter.
        sample: Optional array already in the first input's dtype, with or
            without its batch axis.
        seed: Seed of the random inputs.

    Example:

    >>> fill_inputs(make_interpreter("model.tflite"))  # doctest: +SKIP
    """
    rng = np.random.default_rng(seed)
    for i, detail in enumerate(interp.get_input_details()):
        if i == 0 and sample is not None:
            value = np.asarray(sample).reshape(detail["shape"])
        else:
            value = _random_input(detail, rng)
        interp.set_tensor(detail["index"], value)


def measure_latency(
    path, threads=1, runs=100, warmup=10, use_xnnpack=True, sample=None,
    progress=None,
):
    """Times batch-1 invokes of a model on this host.

    Args:
        path: .tflite file.
        threads: Interpreter threads.
        runs: Timed invokes (>= 1).
        warmup: Untimed invokes before timing.
        use_xnnpack: See `make_interpreter`.
        sample: Optional input example (see `fill_inputs`); random otherwise.
        progress: Optional callable `progress(n)` told about invokes.

    Returns:
        `latency_stats` of the timed invokes, in milliseconds.

    Raises:
        BenchError: If the model cannot be loaded or invoked.

    Example:

    >>> measure_latency("model.tflite", runs=50)["median"]  # doctest: +SKIP
    0.031
    """
    (result,) = measure_latency_interleaved([path], threads, runs, warmup, use_xnnpack,
                                            [sample], rounds=1, progress=progress)
    if isinstance(result, BenchError):
        raise result
    return result


def measure_latency_interleaved(
    paths, threads=1, runs=100, warmup=10, use_xnnpack=True, samples=None,
    rounds=10, progress=None,
):
    """Times batch-1 invokes of several models side by side on this host.

    After `warmup` untimed invokes each, `runs` timed invokes per model are
    split into `rounds` rounds, and every round invokes each model in turn,
    so that noise on a shared host hits all models alike (timing one model
    after the other skews their ratios).

    Args:
        paths: .tflite files.
        threads, runs, warmup, use_xnnpack: As for `measure_latency`.
        samples: Optional input example per model (None: random inputs).
        rounds: Rounds the timed invokes are split into (at most `runs`).
        progress: Optional callable `progress(n)` told about invokes.

    Returns:
        One entry per path: its `latency_stats`, or the `BenchError` that
        stopped it (the other models are still timed).

    Example:

    >>> results = measure_latency_interleaved(["a.tflite", "b.tflite"],
    ...                                       runs=50)  # doctest: +SKIP
    >>> [r["median"] for r in results]  # doctest: +SKIP
    [0.031, 0.018]
    """
    if runs < 1 or warmup < 0 or rounds < 1:
        raise ValueError(f"need runs >= 1, warmup >= 0 and rounds >= 1, got {runs}, "
                         f"{warmup}, {rounds}")
    samples = list(samples) if samples is not None else [None] * len(paths)
    results, interps = [None] * len(paths), [None] * len(paths)
    for i, path in enumerate(paths):
        try:
            interp = make_interpreter(path, threads, use_xnnpack)
            fill_inputs(interp, samples[i])
        except BenchError as e:
            results[i] = e
            continue
        (warm,) = time_rounds([interp], [warmup], 1, progress=progress)  # times dropped
        if isinstance(warm, Exception):
            results[i] = BenchError(f"{path}: invoke failed ({one_line(warm)})")
        else:
            interps[i] = interp
    times = time_rounds(interps, [runs] * len(paths), min(rounds, runs), progress=progress)
    for i, t in enumerate(times):
        if isinstance(t, Exception):
            results[i] = BenchError(f"{paths[i]}: invoke failed ({one_line(t)})")
    return [result if result is not None else latency_stats(t)
            for result, t in zip(results, times, strict=True)]


def check_data(path, x, model_name=None, source="data"):
    """Checks (and converts) data against a model's first input, no invoke.

    Args:
        path: .tflite file.
        x: Examples.
        model_name: Name for error messages (defaults to `path`).
        source: Data name for error messages.

    Returns:
        `x` converted by `to_model_input`.

    Raises:
        BenchError: On a shape or dtype mismatch, or an unloadable model.
    """
    interp = make_interpreter(path, 1)
    detail = interp.get_input_details()[0]
    return to_model_input(x, detail, model_name or os.fspath(path), source)


def evaluate_accuracy(path, x, labels, threads=1, progress=None):
    """Top-1 accuracy of a classifier flatbuffer, one example per invoke.

    Args:
        path: .tflite file whose first output holds class scores on its last
            axis.
        x: Examples already converted by `to_model_input`.
        labels: Integer class ids, `(N,)`.
        threads: Interpreter threads.
        progress: Optional callable `progress(n)` told about each example.

    Returns:
        Fraction of examples whose arg-max output equals the label.

    Raises:
        BenchError: If the output is not a class-score vector.

    Example:

    >>> evaluate_accuracy("m.tflite", x, y)  # doctest: +SKIP
    0.84
    """
    interp = make_interpreter(path, threads)
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    if int(out["shape"][-1]) < 2:
        raise BenchError(
            f"{path}: accuracy needs class scores on the output's last axis, "
            f"output '{out['name']}' has shape {list(out['shape'])}"
        )
    correct = 0
    for i in range(len(x)):
        interp.set_tensor(inp["index"], x[i : i + 1].reshape(inp["shape"]))
        interp.invoke()
        scores = from_model_output(interp.get_tensor(out["index"]), out)
        correct += int(np.argmax(scores.reshape(-1)) == labels[i])
        if progress is not None:
            progress(1)
    return correct / max(len(x), 1)


def measure_memory(path, threads=1, warmup=1, use_xnnpack=True, timeout=120):
    """Peak memory a model adds to a fresh process (see `MEMORY_NOTE`).

    Runs `python -m tflite_bench.memprobe` so models measured one after the
    other do not share (or reuse) each other's freed memory.

    Args:
        path: .tflite file.
        threads: Interpreter threads.
        warmup: Invokes after allocation (>= 1 is useful: XNNPACK packs
            weights on the first one).
        use_xnnpack: See `make_interpreter`.
        timeout: Seconds before the probe is abandoned.

    Returns:
        Peak RSS increase in MiB.

    Raises:
        BenchError: If the probe fails.

    Example:

    >>> measure_memory("model.tflite")  # doctest: +SKIP
    3.4
    """
    cmd = [
        sys.executable, "-m", "tflite_bench.memprobe", os.fspath(path),
        f"--threads={int(threads)}", f"--warmup={int(warmup)}",
    ]
    if not use_xnnpack:
        cmd.append("--no-xnnpack")
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=child_env()
        )
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{path}: memory probe timed out after {timeout}s") from e
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["no output"]
        raise BenchError(f"{path}: memory probe failed ({lines[-1].strip()})")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["delta_mib"])
