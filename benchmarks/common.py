"""What the benchmark scripts share: timing flatbuffers side by side and
writing the JSON result."""

import json
import os

from tflite_bench.bench import host_facts


def save_result(path, result):
    """Adds the host facts to `result`, writes it as JSON to `path` (folders
    created) and says where."""
    result = {**result, "host": host_facts()}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {path}")


def time_side_by_side(flatbuffers, rounds, instances=1, budget_ms=40.0):
    """Median invoke ms of each flatbuffer (LiteRT, 1 thread), all timed in
    this process, interleaved round by round; each figure is the mean over
    `instances` interpreters of the model, so that one interpreter's
    placement in memory does not decide it."""
    import numpy as np

    from keras_evosynth.latency import _interpreter, time_interleaved

    interps = [_interpreter(f, 1) for f in flatbuffers for _ in range(instances)]
    times = time_interleaved(interps, rounds=rounds, budget_ms=budget_ms, max_runs=1000)
    return np.mean(np.reshape(times, (len(flatbuffers), instances)), axis=1)
