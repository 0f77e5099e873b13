"""What every benchmark script shares: writing its JSON result."""

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
