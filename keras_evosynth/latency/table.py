"""`LatencyTable`: per-op int8 LiteRT costs on one target (measured,
cached as JSON, loaded), and the predicted latency of a model compacted.
"""

import json
import math
import os
import sys
import warnings

import numpy as np

from keras_evosynth._io import write_atomic
from keras_evosynth.latency.calibration import _Measurer
from keras_evosynth.latency.curve import _curve, _whole
from keras_evosynth.latency.expectation import LatencyExpectation, kept_channels
from keras_evosynth.latency.grid import TILE, Entry, _Fastest
from keras_evosynth.latency.ops import (
    UNTIMED,
    OpList,
    fingerprint,
    model_ops,
    pricing_summary,
    space_to_depth_forms,
)
from keras_evosynth.latency.timing import cpu_name, runtime_name

FORMAT = "keras_evosynth.latency/5"


def _slug(text):
    keep = "".join(c if c.isalnum() else "-" for c in text.lower())
    return "-".join(p for p in keep.split("-") if p)[:60]


class LatencyTable:
    """Per-op int8 LiteRT latency on one target, to predict models' latency.

    Build it with `LatencyTable.measure(model)` (times micro-models on this
    host), load one with `LatencyTable.load(path)`; `predict(model)` gives
    milliseconds for a masked Evo model (as if compacted) or a compacted
    plain one. A table belongs to one CPU, runtime version and thread
    count (its `cpu`, `runtime`, `threads`).

    Args:
        threads: Interpreter threads the costs were measured with.
        cpu: Processor name.
        runtime: LiteRT runtime name and version.
        entries: `{signature key: Entry}`.
        models: `{fingerprint: {"name", "anchors", "scale",
            "remainder_ms", "floor_ms", "remainder_layers", "untimed",
            "measured"}}`, one per measured architecture (`anchors`:
            `keep`, `grid_ms`, `whole_ms` of each timed whole model;
            `floor_ms`: the empty model's invoke; `remainder_layers` and
            `untimed`: the layers priced in the fixed remainder, see
            `model_ops`).
        path: The JSON file the table lives in (None: memory only).

    Example:

    >>> import keras, tempfile
    >>> model = keras.Sequential([keras.Input((8, 8, 3)),
    ...     keras.layers.Conv2D(8, 3), keras.layers.GlobalAveragePooling2D()])
    >>> folder = tempfile.mkdtemp()
    >>> table = LatencyTable.measure(model, cache_dir=folder, verbose=0)
    >>> table.predict(model) > 0
    True
    >>> again = LatencyTable.measure(model, cache_dir=folder, verbose=0)
    >>> again.timed_points  # nothing re-timed
    0
    """

    def __init__(self, threads=1, cpu=None, runtime=None, entries=None, models=None, path=None):
        self.threads = int(threads)
        self.cpu = cpu or cpu_name()
        self.runtime = runtime or runtime_name()
        self.entries = dict(entries or {})
        self.models = dict(models or {})
        self.path = path
        self.timed_points = 0

    # ------------------------------------------------------------ persistence
    def to_dict(self):
        return {
            "format": FORMAT,
            "cpu": self.cpu,
            "runtime": self.runtime,
            "threads": self.threads,
            "entries": {k: e.to_dict() for k, e in sorted(self.entries.items())},
            "models": self.models,
        }

    @classmethod
    def from_dict(cls, data, path=None):
        """Rebuilds a table from `to_dict()` output (checked)."""
        where = f" in {path}" if path else ""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise ValueError(
                f"LatencyTable: not a latency table of this version{where} (format "
                f"{found!r}, expected {FORMAT!r})."
            )
        try:
            entries = {}
            for key, e in data["entries"].items():
                entry = Entry(e["signature"], e["axes"], e["ms"])
                shape = [len(a) for a in entry.axes]
                if np.asarray(entry.ms, dtype=np.float64).shape != tuple(shape):
                    raise ValueError(f"entry {key[:60]}... has {shape} axes but other costs")
                entries[key] = entry
            return cls(data["threads"], data["cpu"], data["runtime"], entries,
                       data.get("models", {}), path)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"LatencyTable: damaged table{where}: {error}") from None

    def save(self, path=None):
        """Writes the table as JSON (atomically) to `path` or `self.path`."""
        path = path or self.path
        if path is None:
            raise ValueError("LatencyTable.save: no path given and the table has none.")
        write_atomic(path, json.dumps(self.to_dict(), indent=1))
        self.path = path
        return path

    @classmethod
    def load(cls, path):
        """Reads a table written by `save` (or a device table).

        Raises:
            ValueError: The file is not valid JSON or not a latency table.
        """
        try:
            with open(path) as f:
                data = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"LatencyTable: {path} is not valid JSON ({error}); delete it to re-measure."
            ) from None
        return cls.from_dict(data, path)

    @staticmethod
    def cache_path(cache_dir, threads=1, cpu=None, runtime=None):
        """The cache file for a CPU, runtime (default: this host's) and
        `threads`."""
        name = (f"latency_{_slug(cpu or cpu_name())}_{_slug(runtime or runtime_name())}_"
                f"{int(threads)}t.json")
        return os.path.join(cache_dir, name)

    # ------------------------------------------------------------- measuring
    @classmethod
    def measure(cls, model, threads=1, cache_dir=None, step=8, coarse=3, refine=0.1,
                rounds=5, verbose=1, backend=None, dense_below=32, space_to_depth_below=16,
                untimed="raise", workers=None):
        """Times `model`'s ops on this host and returns the table.

        Args:
            model: A built Keras model with a fixed input size (masked Evo
                or plain); its ops are timed at their full channel counts
                and below.
            threads: LiteRT interpreter threads.
            cache_dir: Folder of the JSON cache (created); the table for
                this CPU/runtime/threads is read from it first and written
                back after every op, so a killed measurement loses nothing.
                None: memory only.
            step: Channel grid step (XNNPACK tiles are 8 wide).
            coarse: Grid points per axis before refinement.
            dense_below: Every multiple of `step` up to this channel count
                is a grid point from the start: thin int8 layers are not
                monotone in their channels (DESIGN.md §5b), so linear
                interpolation there needs every tile.
            refine: Relative cost change between grid neighbours above which
                the interval is bisected (down to `step`).
            space_to_depth_below: Strided convolutions with at most this many
                input channels (an RGB stem) are also timed in their exact
                space-to-depth form (`keras_evosynth.rewrites`); `predict`
                then costs the faster form, and `space_to_depth_layers`
                names the layers to deploy rewritten. 0: never.
            rounds: Interleaved timing rounds per batch of micro-models.
            verbose: 1 draws a progress bar on stderr, 0 is silent.
            backend: None times on this host with the LiteRT interpreter;
                an object with `cpu`, `runtime`, `threads`,
                `op_costs(flatbuffers) -> [ms or None]` (None: the runtime
                refused that micro-model) and `invoke_ms(flatbuffers)
                -> [ms]` times elsewhere, e.g. `tflite_bench.device.AdbOpTimer`
                on an Android device through `benchmark_model
                --enable_op_profiling` (then `threads` is the backend's).
            untimed: What to do with a layer the table cannot time whose
                channels follow evolvable layers (`model_ops`): `"raise"`
                (default) names it; `"ignore"` prices it in the fixed
                remainder the whole-model anchors measure, as if cutting
                its inputs saved nothing, and records it (the model's
                `untimed` in `models`, the table's repr). Layers whose size
                no offspring changes (`Normalization`, `LayerNormalization`,
                custom layers compaction keeps whole, ...) are priced in the
                fixed remainder either way (the model's `remainder_layers`).

            workers: Processes converting the micro-models (the TFLite
                converter is single-threaded and most of the measuring
                time; timing still runs alone, between conversion
                batches). None: one per core, at most 4, when the model has
                at least 12 op signatures to time, else 1 (this process).

        Returns:
            A `LatencyTable` (`timed_points` says how many grid points were
            timed now).

        Raises:
            ValueError: Bad arguments, or (with `untimed="raise"`) a layer
                that cannot be timed, named with its class.
        """
        for name, value, low in (("threads", threads, 1), ("step", step, 1),
                                 ("coarse", coarse, 2), ("rounds", rounds, 1),
                                 ("dense_below", dense_below, 0),
                                 ("space_to_depth_below", space_to_depth_below, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"LatencyTable.measure: {name} must be an int >= {low}, "
                                 f"got {value!r}.")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                    or workers < 1):
            raise ValueError(f"LatencyTable.measure: workers must be None or an int >= 1, "
                             f"got {workers!r}.")
        if untimed not in UNTIMED:
            raise ValueError(f"LatencyTable.measure: untimed must be one of {UNTIMED}, "
                             f"got {untimed!r}.")
        ops = model_ops(model, untimed=untimed)
        cpu, runtime = ((cpu_name(), runtime_name()) if backend is None
                        else (backend.cpu, backend.runtime))
        threads = threads if backend is None else int(backend.threads)
        table = None
        if cache_dir is not None:
            os.makedirs(cache_dir, exist_ok=True)
            path = cls.cache_path(cache_dir, threads, cpu, runtime)
            if os.path.exists(path):
                try:
                    table = cls.load(path)
                except ValueError as error:
                    aside = path + ".damaged"
                    os.replace(path, aside)
                    warnings.warn(f"{error} Moved it to {aside}; re-measuring.", stacklevel=2)
                else:
                    if (table.cpu, table.runtime, table.threads) != (cpu, runtime, threads):
                        warnings.warn(
                            f"LatencyTable: {path} was measured on {table.cpu}, "
                            f"{table.runtime}, {table.threads} thread(s); re-measuring.",
                            stacklevel=2,
                        )
                        table = None
            if table is None:
                table = cls(threads, cpu, runtime, path=path)
            table.path = path
        else:
            table = cls(threads, cpu, runtime)
        table.timed_points = 0
        forms = [f for op in ops for f in space_to_depth_forms(op, space_to_depth_below)]
        _Measurer(table, ops, step, coarse, refine, rounds, verbose, backend,
                  dense_below, forms, workers).run(model)
        if verbose:
            print(f"latency table of '{model.name}': {pricing_summary(ops)}", file=sys.stderr,
                  flush=True)
        return table

    # ------------------------------------------------------------ predicting
    def _entry(self, op):
        """The op's `Entry`, or the fastest of it and its measured
        space-to-depth forms (`_Fastest`) where there are any."""
        entry = self.entries.get(op.key)
        if entry is None:
            raise ValueError(
                f"LatencyTable: no measurement for layer '{op.name}' ({op.signature['op']}, "
                f"input {op.signature.get('input', op.signature.get('inputs'))}) in this "
                f"table ({self.cpu}, {self.threads} thread(s)); measure the model with "
                "LatencyTable.measure(model)."
            )
        others = [self.entries.get(f.key) for f in space_to_depth_forms(op, math.inf)]
        others = [e for e in others if e is not None]
        return _Fastest([entry, *others]) if others else entry

    def space_to_depth_layers(self, model):
        """`{layer name: outputs_per_block}` of `model`'s strided
        convolutions that this table measured faster as `SpaceToDepth` + a
        stride-1 convolution (+ `DepthToSpace` for `outputs_per_block` > 1),
        at the channels `compact` keeps, with the fastest form: what
        `compact(model, space_to_depth=table)` and `export_litert(...,
        space_to_depth=table)` rewrite, and what `predict` assumes.

        Example:

        >>> import keras
        >>> m = keras.Sequential([keras.Input((32, 32, 3)),
        ...     keras.layers.Conv2D(8, 3, name="plain"), keras.layers.Flatten()])
        >>> LatencyTable.measure(m, verbose=0).space_to_depth_layers(m)
        {}
        """
        return self._rewritten(*kept_channels(model))

    def _rewritten(self, ops, live):
        """`space_to_depth_layers` from `kept_channels` output."""
        chosen = {}
        for op, (cin, cout) in zip(ops, live, strict=True):
            entry = self._entry(op)
            if isinstance(entry, _Fastest) and cout:
                costs = [e.cost(cin, cout, tile=TILE) for e in entry.entries]
                best = int(np.argmin(costs))
                if best > 0:
                    chosen[op.name] = entry.entries[best].signature.get("outputs_per_block", 1)
        return chosen

    def _anchor(self, ops, model_name):
        """`(scale, remainder_ms, floor_ms, curve)` of the model's
        architecture (`curve`: `_curve` of its anchors)."""
        key = fingerprint(ops)
        if key not in self.models:
            untimed = ops.priced("untimed") if isinstance(ops, OpList) else []
            how = "LatencyTable.measure(model, untimed='ignore')" if untimed else (
                "LatencyTable.measure(model)")
            hint = f" (its layers {untimed} cannot be timed)" if untimed else ""
            raise ValueError(
                f"LatencyTable: the architecture of model '{model_name}' was not measured "
                f"in this table (its fixed remainder is unknown); call {how} on it or on "
                f"its ancestor{hint}."
            )
        record = self.models[key]
        scale = record.get("scale", 1.0)
        points = [(a["grid_ms"], a["whole_ms"]) for a in record.get("anchors", ())]
        return scale, record["remainder_ms"], record.get("floor_ms", 0.0), _curve(points, scale)

    def op_costs(self, model):
        """`{layer name: ms}` of every timed op at the channels the
        compacted model keeps."""
        ops, live = kept_channels(model)
        return {op.name: self._cost(op, *n) for op, n in zip(ops, live, strict=True)}

    def _cost(self, op, cin, cout):
        if not cout:  # compaction drops the op
            return 0.0
        entry = self._entry(op)
        if not entry.covers(cin, cout):
            raise ValueError(
                f"LatencyTable: layer '{op.name}' has {cin} input / {cout} output "
                f"channels, beyond the measured grid (up to {entry.axes[0][-1]}"
                + (f" / {entry.axes[1][-1]}" if len(entry.axes) > 1 else "")
                + "); measure this model."
            )
        return entry.cost(cin, cout if op.two_d else None, tile=TILE)

    def predict(self, model):
        """Predicted int8 latency (ms) of `model` compacted, on this table's
        target: the sum of its ops' interpolated costs at the channels
        `compact` keeps, read on its architecture's anchor curve (`_whole`),
        never below the empty model's invoke time. A strided convolution whose
        space-to-depth forms were measured costs the fastest of its forms:
        the model as `export_litert(..., space_to_depth=table)` deploys it.

        Raises:
            ValueError: A layer or architecture the table has not measured,
                or channel counts beyond the measured grid.
        """
        return self._predict(*kept_channels(model), model.name)

    def _predict(self, ops, live, model_name):
        total = sum(self._cost(op, *n) for op, n in zip(ops, live, strict=True))
        return _whole(self._anchor(ops, model_name), total)

    def expectation(self, model, genomes):
        """The expected predicted latency of an offspring of `model`.

        Args:
            model: The parent (built, with Evo layers).
            genomes: `genetics.genomes_from_model(model, ...)[0]`.

        Returns:
            A `LatencyExpectation`.
        """
        return LatencyExpectation(self, model, genomes)

    def untimed_layers(self):
        """`{model name: [layer names]}` of the measured architectures whose
        layers `measure(..., untimed="ignore")` priced in the fixed
        remainder although their channels follow evolvable layers."""
        found = {}
        for record in self.models.values():
            if record.get("untimed"):
                found.setdefault(record.get("name", "?"), []).extend(record["untimed"])
        return found

    def __repr__(self):
        untimed = sorted({n for names in self.untimed_layers().values() for n in names})
        return (f"LatencyTable({len(self.entries)} ops, {len(self.models)} models, "
                f"{self.cpu!r}, {self.runtime}, threads={self.threads}"
                + (f", untimed={untimed}" if untimed else "") + ")")
