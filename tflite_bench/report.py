"""`Row` and `Report`: the comparison table, its JSON and its bar plot."""

import dataclasses
import json
import os

from tflite_bench.errors import BenchError

LATENCY_KEYS = ("min", "median", "p90", "p95", "mean", "std", "runs")


@dataclasses.dataclass
class Row:
    """One model measured at one thread count on one backend.

    Attributes:
        model: Display name (the file name unless given).
        path: The .tflite file.
        backend: `"interpreter"` (LiteRT Python interpreter, this host),
            `"litert-tool"` (`ai_edge_litert.tools.benchmark_litert_model`) or
            `"adb:SERIAL"` (`benchmark_model` on an Android device).
        threads: CPU threads.
        size_bytes: File size.
        ops: Operator count per precision class (see
            `tflite_bench.modelinfo.classify_op`).
        op_types: Operator count per operator name.
        latency_ms: `min`, `median`, `p90`, `p95`, `mean`, `std` (ms, None
            where the backend does not report it) and `runs`.
        memory_mib: Memory figure in MiB (what it is: `memory_note`).
        memory_note: How `memory_mib` was measured.
        accuracy: Top-1 accuracy on the labelled data, or None.
        error: One-line error if this row could not be measured.
        extra: Backend-specific figures (init time, first invoke, ...).

    Example:

    >>> Row(model="a.tflite", path="a.tflite", backend="interpreter",
    ...     threads=1).median_ms is None
    True
    """

    model: str
    path: str
    backend: str
    threads: int | None = None
    size_bytes: int | None = None
    ops: dict | None = None
    op_types: dict | None = None
    latency_ms: dict | None = None
    memory_mib: float | None = None
    memory_note: str | None = None
    accuracy: float | None = None
    error: str | None = None
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def median_ms(self):
        """Median latency, or the mean where the backend gives no median."""
        if not self.latency_ms:
            return None
        median = self.latency_ms.get("median")
        return median if median is not None else self.latency_ms.get("mean")

    def to_dict(self):
        """JSON-able dict of all fields."""
        return dataclasses.asdict(self)


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def _ms(value):
    """Milliseconds with about four significant digits."""
    if value is None:
        return "-"
    return format(value, ".4f" if value < 1 else ".3f" if value < 100 else ".1f")


def _ratio(numerator, denominator):
    if numerator is None or not denominator:
        return None
    return numerator / denominator


class Report:
    """The result of `tflite_bench.compare`: rows plus how they were taken.

    Ratios compare each row with the first model's row on the same backend
    at the same thread count: `speedup` = baseline median / median (> 1 is
    faster), `size_ratio` = baseline bytes / bytes (> 1 is smaller).

    Args:
        rows: `Row`s, baseline model first.
        settings: How the rows were measured (threads, runs, ...).
        host: Facts about the measuring machine.

    Example:

    >>> rows = [Row("a", "a.tflite", "interpreter", 1, size_bytes=4000,
    ...             latency_ms={"median": 2.0}),
    ...         Row("b", "b.tflite", "interpreter", 1, size_bytes=1000,
    ...             latency_ms={"median": 0.5})]
    >>> report = Report(rows)
    >>> report.speedup(rows[1]), report.size_ratio(rows[1])
    (4.0, 4.0)
    """

    def __init__(self, rows, settings=None, host=None):
        self.rows = list(rows)
        self.settings = dict(settings or {})
        self.host = dict(host or {})

    @property
    def baseline_model(self):
        """Name of the baseline (first) model, or None for an empty report."""
        return self.rows[0].model if self.rows else None

    @property
    def errors(self):
        """`(model, error)` for every row that failed."""
        return [(r.model, r.error) for r in self.rows if r.error]

    @property
    def ok(self):
        """True when every row was measured."""
        return not self.errors

    def baseline_for(self, row):
        """The baseline model's row with `row`'s backend and thread count."""
        for other in self.rows:
            if (
                other.model == self.baseline_model
                and other.backend == row.backend
                and other.threads == row.threads
                and not other.error
            ):
                return other
        return None

    def speedup(self, row):
        """Baseline median latency / this row's (None if either is missing)."""
        base = self.baseline_for(row)
        return _ratio(base.median_ms, row.median_ms) if base else None

    def size_ratio(self, row):
        """Baseline file size / this row's (None if either is missing)."""
        base = self.baseline_for(row)
        if base is None:
            # Size does not depend on the backend: any baseline row will do.
            base = next(
                (r for r in self.rows if r.model == self.baseline_model
                 and r.size_bytes), None
            )
        return _ratio(base.size_bytes, row.size_bytes) if base else None

    def table(self):
        """The comparison as aligned text, failures listed below it.

        Example:

        >>> print(Report([Row("a", "a.tflite", "interpreter", 1,
        ...                   error="a.tflite: file not found")]).table())
        error: a.tflite: file not found
        """
        header = [
            "model", "backend", "thr", "size KiB", "ops i8/f/mix",
            "min ms", "median ms", "p90 ms", "speedup", "size x", "mem MiB",
            "acc %",
        ]
        lines = [header]
        for r in self.rows:
            if r.error:
                continue
            lat = r.latency_ms or {}
            ops = (
                f"{r.ops.get('int8', 0)}/{r.ops.get('float', 0)}/"
                f"{r.ops.get('mixed', 0)}" if r.ops else "-"
            )
            acc = None if r.accuracy is None else 100.0 * r.accuracy
            lines.append([
                r.model,
                r.backend,
                _fmt(r.threads, "d"),
                _fmt(None if r.size_bytes is None else r.size_bytes / 1024, ".1f"),
                ops,
                _ms(lat.get("min")),
                _ms(r.median_ms),
                _ms(lat.get("p90")),
                _fmt(self.speedup(r), ".2f") + ("x" if self.speedup(r) else ""),
                _fmt(self.size_ratio(r), ".2f") + ("x" if self.size_ratio(r) else ""),
                _fmt(r.memory_mib, ".1f"),
                _fmt(acc, ".2f"),
            ])
        widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
        out = []
        for n, line in enumerate(lines if len(lines) > 1 else []):
            cells = [
                str(c).ljust(w) if i < 2 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            ]
            out.append("  ".join(cells).rstrip())
            if n == 0:
                out.append("  ".join("-" * w for w in widths))
        if any(r.latency_ms and r.latency_ms.get("p90") is None
               and r.latency_ms.get("p95") is not None for r in self.rows):
            out.append("p90 '-': not reported by that backend (its p95 is in the JSON)")
        if out and (self.host or {}).get("processor"):
            out.append(f"host: {self.host['processor']}, {self.host.get('cpu_count')} CPUs, "
                       f"ai-edge-litert {self.host.get('ai_edge_litert')}")
        if self.rows and any(r.memory_note for r in self.rows):
            notes = sorted({f"{r.backend}: {r.memory_note}" for r in self.rows
                            if r.memory_note})
            out.extend(f"mem: {note}" for note in notes)
        for r in self.rows:
            if r.error:
                named = r.model in r.error or r.path in r.error
                out.append(f"error: {r.error}" if named else
                           f"error: {r.model}: {r.error}")
        return "\n".join(out)

    def to_dict(self):
        """JSON-able dict: settings, host, rows (with their ratios)."""
        rows = []
        for r in self.rows:
            d = r.to_dict()
            d["speedup"] = self.speedup(r) if not r.error else None
            d["size_ratio"] = self.size_ratio(r) if not r.error else None
            rows.append(d)
        return {
            "tool": "tflite_bench",
            "baseline": self.baseline_model,
            "settings": self.settings,
            "host": self.host,
            "rows": rows,
        }

    def to_json(self, path=None):
        """Returns the JSON text; also writes it to `path` if given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=False)
        if path is not None:
            with open(os.fspath(path), "w") as f:
                f.write(text + "\n")
        return text

    @classmethod
    def from_dict(cls, data):
        """Inverse of `to_dict` (ratios are recomputed, not read)."""
        fields = {f.name for f in dataclasses.fields(Row)}
        rows = [Row(**{k: v for k, v in d.items() if k in fields})
                for d in data.get("rows", [])]
        return cls(rows, data.get("settings"), data.get("host"))

    @classmethod
    def from_json(cls, path):
        """Reads a report written by `to_json`.

        Example:

        >>> Report.from_json("bench.json").table()  # doctest: +SKIP
        """
        with open(os.fspath(path)) as f:
            return cls.from_dict(json.load(f))

    def plot(self, path):
        """Bar plot: median latency per thread count, and file size.

        Needs matplotlib (the `plot` extra); drawn without pyplot, so no
        window or global backend is touched.

        Args:
            path: Image file to write (format from its extension).

        Raises:
            BenchError: If matplotlib is not installed or nothing was measured.
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as e:
            raise BenchError(
                "--plot needs matplotlib (pip install 'keras-evosynth[plot]')"
            ) from e
        good = [r for r in self.rows if not r.error and r.median_ms is not None]
        if not good:
            raise BenchError("nothing to plot: no model was measured")
        models = list(dict.fromkeys(r.model for r in good))
        groups = list(dict.fromkeys((r.backend, r.threads) for r in good))
        fig = Figure(figsize=(4 + 1.5 * len(groups), 4), layout="constrained")
        ax_lat, ax_size = fig.subplots(
            1, 2, gridspec_kw={"width_ratios": [max(len(groups), 1), 1]}
        )
        width = 0.8 / len(models)
        top = 0.0
        for m, model in enumerate(models):
            values = []
            for backend, threads in groups:
                row = next((r for r in good if r.model == model
                            and r.backend == backend and r.threads == threads), None)
                values.append(row.median_ms if row else 0.0)
            xs = [g + m * width for g in range(len(groups))]
            ax_lat.bar(xs, values, width, label=model)
            top = max([top, *values])
        ax_lat.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
        ax_lat.set_xticklabels([f"{b}\n{t} thr" for b, t in groups])
        ax_lat.set_ylabel("median latency (ms)")
        ax_lat.set_ylim(0, top * (1.2 + 0.1 * len(models)))  # room for legend
        ax_lat.legend(fontsize="small", loc="upper left")
        sizes = [next(r.size_bytes for r in good if r.model == m) or 0
                 for m in models]
        ax_size.bar(range(len(models)), [s / 1024 for s in sizes],
                    color=[f"C{i}" for i in range(len(models))])
        ax_size.set_xticks(range(len(models)))
        ax_size.set_xticklabels(models, rotation=30, ha="right", fontsize="small")
        ax_size.set_ylabel("file size (KiB)")
        fig.savefig(os.fspath(path))
        return path
