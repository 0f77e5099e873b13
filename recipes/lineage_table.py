"""The lineage table: every generation compacted, exported and benchmarked.

Shared by the recipes. Given the float32 ancestor (a plain Keras model) and
one or more lineage directories written by `EvolutionCallback`, it exports
the ancestor to float32 and int8 LiteRT and every accepted generation,
compacted, to int8; measures them side by side with `tflite_bench.compare`
(one process, one thread, batch 1); and writes one row per generation:
synapses, filters, MACs, synaptic efficiency, the task metric measured on the
*converted* flatbuffer, latency, and speedups vs the float32 and the int8
ancestor. Output: `lineage.md`, `lineage.json` and `lineage.png`.

Example (see `recipes/classifier.py` for a complete run):

>>> rows = [{"lineage": "int4", "generation": 1, "synapses": 10}]
>>> print(markdown_table(rows, [("lineage", "{}"), ("synapses", "{:,}")]))
| lineage | synapses |
|---|---|
| int4 | 10 |
"""

import json
import os

import keras
import numpy as np

import tflite_bench
from keras_evosynth.export import export_tflite
from keras_evosynth.lineage import read_lineage
from keras_evosynth.stats import summary

COLUMNS = [
    ("lineage", "{}"),
    ("generation", "{}"),
    ("rollbacks", "{}"),
    ("bits", "{}"),
    ("synapses", "{:,}"),
    ("filters", "{:,}"),
    ("macs", "{:,}"),
    ("synaptic_efficiency", "{:.2f}x"),
    ("metric", "{:.4f}"),
    ("latency_ms", "{:.4f}"),
    ("speedup_vs_float32", "{:.2f}x"),
    ("speedup_vs_int8", "{:.2f}x"),
    ("size_bytes", "{:,}"),
]


def markdown_table(rows, columns=COLUMNS, extra=()):
    """Rows (dicts) as a Markdown table; missing values print as `-`.

    `extra` adds `(key, format)` columns after `metric`.
    """
    at = [key for key, _ in columns].index("metric") + 1 if extra else 0
    columns = list(columns[:at]) + list(extra) + list(columns[at:]) if extra else columns

    def cell(row, key, spec):
        value = row.get(key)
        return "-" if value is None else spec.format(value)

    lines = ["| " + " | ".join(key for key, _ in columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    for row in rows:
        lines.append("| " + " | ".join(cell(row, k, s) for k, s in columns) + " |")
    return "\n".join(lines)


def accepted_generations(directory):
    """`(generation, checkpoint path, record)` of every accepted generation."""
    out = []
    for record in read_lineage(directory):
        if record.get("accepted", True) and record.get("checkpoint"):
            out.append(
                (record["generation"], os.path.join(directory, record["checkpoint"]), record)
            )
    return sorted(out, key=lambda item: item[0])


def rollbacks(directory):
    """`({generation: rolled-back offspring}, rollback rate)` of a lineage:
    the rate is rolled-back over all trained offspring (generation 0 left
    out), 0 for a lineage without offspring.

    >>> import json, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with open(os.path.join(folder, "lineage.jsonl"), "w") as f:
    ...     for g, ok in [(0, True), (1, False), (1, True), (2, False), (2, False)]:
    ...         print(json.dumps({"generation": g, "accepted": ok}), file=f)
    >>> rollbacks(folder)
    ({1: 1, 2: 2}, 0.75)
    """
    failed, trained = {}, 0
    for record in read_lineage(directory):
        if record.get("generation", 0) == 0:
            continue
        trained += 1
        if not record.get("accepted", True):
            failed[record["generation"]] = failed.get(record["generation"], 0) + 1
    return failed, (sum(failed.values()) / trained if trained else 0.0)


def baseline_sparsity(ancestor, lineages):
    """The kernel sparsity at which a baseline has as many synapses as the
    smallest accepted generation of `lineages`.

    Returns:
        `(sparsity, smallest synapses, summary of the ancestor)`.
    """
    stats = summary(ancestor, print_fn=None)
    smallest = min(
        record["synapses"]
        for directory in lineages.values()
        for _, _, record in accepted_generations(directory)
    )
    return round(1.0 - smallest / stats.synapses, 4), smallest, stats


def _stats(model):
    """The resource columns of a model's row (bits: one value, or the list)."""
    stats = summary(model, print_fn=None)
    bits = sorted({layer.bits for layer in stats.layers})
    return {
        "bits": bits[0] if len(bits) == 1 else bits,
        "synapses": stats.synapses,
        "filters": stats.clusters,
        "macs": stats.macs,
    }


def build_table(
    ancestor,
    lineages,
    representative,
    out_dir,
    evaluate,
    eval_data=None,
    runs=100,
    threads=1,
    log=print,
    extra_columns=(),
    baselines=(),
    space_to_depth=None,
    metric_name="metric",
    within=None,
):
    """Exports, measures and tabulates the ancestor and the lineages.

    Args:
        ancestor: The float32 ancestor (plain Keras model).
        lineages: `{label: lineage directory}`.
        representative: Input samples for int8 calibration.
        out_dir: Where the .tflite files and the table go.
        evaluate: `evaluate(tflite_path) -> dict`, the task metrics computed
            on the converted flatbuffer; its `"metric"` entry is the headline
            (accuracy, DIGITS mAP, ...), the others become extra columns.
        eval_data: Optional `(x, y)`; tflite_bench then also reports top-1.
        runs: Timed invokes per model.
        threads: LiteRT threads.
        log: Progress printer.
        extra_columns: `(key, format)` of metrics from `evaluate` to show in
            `lineage.md` next to `metric`.
        baselines: Already exported models to measure in the same table
            (e.g. the tfmot baseline): dicts with `lineage`, `tflite` and the
            resource columns (`synapses`, `filters`, `macs`, `bits`).
        space_to_depth: `export_tflite`'s argument, for every exported row
            (e.g. the `LatencyTable` a latency-target lineage evolved
            against, so that the rows deploy what it predicted). With it, the
            table also has an `ancestor-int8-plain` row: the ancestor
            converted without the rewrites, what the converter alone gives
            (`speedup_vs_int8` stays relative to the rewritten
            `ancestor-int8`, so that it measures what evolution adds).
        metric_name: What `evaluate`'s `"metric"` is (e.g. `"DIGITS mAP"`),
            for the plot's axes.
        within: With it, `headline(rows, within)` (the best generation
            within that much of the float32 ancestor's metric, against
            `TARGETS`) is logged, written under the table and stored in the
            JSON as `"headline"`.

    Returns:
        The rows (list of dicts); also written to `out_dir/lineage.{md,json}`.
    """
    os.makedirs(out_dir, exist_ok=True)
    rows, paths = [], []

    def add(row, model, mode, rewrite=True):
        path = os.path.join(out_dir, f"{row['lineage']}_g{row['generation']:03d}_{mode}.tflite")
        report = export_tflite(
            model, representative, path=path, mode=mode,
            space_to_depth=space_to_depth if rewrite else None,
        )
        row.update(size_bytes=report.size_bytes, tflite=path, **evaluate(path))
        log(
            f"exported {os.path.basename(path)}: {report.size_bytes:,} bytes, "
            f"metric {row['metric']:.4f}"
        )
        rows.append(row)
        paths.append(path)

    base = _stats(ancestor)
    for mode in ("float32", "int8"):
        add({"lineage": f"ancestor-{mode}", "generation": 0, **base}, ancestor, mode)
    if space_to_depth is not None:
        add({"lineage": "ancestor-int8-plain", "generation": 0, **base}, ancestor, "int8",
            rewrite=False)
    rates = {}
    for label, directory in lineages.items():
        failed, rates[label] = rollbacks(directory)
        for generation, checkpoint, record in accepted_generations(directory):
            model = keras.models.load_model(checkpoint)
            add(
                {
                    "lineage": label,
                    "generation": generation,
                    "rollbacks": failed.get(generation, 0) if generation else None,
                    "keras_fitness": record.get("fitness"),
                    **_stats(model),
                },
                model,
                "int8",
            )
            keras.backend.clear_session()
    for baseline in baselines:
        row = {"generation": 0, **baseline}
        row.update(size_bytes=os.path.getsize(row["tflite"]), **evaluate(row["tflite"]))
        rows.append(row)
        paths.append(row["tflite"])
    log(f"benchmarking {len(paths)} flatbuffers ({runs} runs, {threads} thread(s))")
    report = tflite_bench.compare(
        paths, threads=(threads,), runs=runs, warmup=10, data=eval_data, memory=False
    )
    latency = {row.path: row.median_ms for row in report.rows}
    float_ms, int8_ms = latency[paths[0]], latency[paths[1]]
    for row in rows:
        row["latency_ms"] = latency.get(row["tflite"])
        row["synaptic_efficiency"] = base["synapses"] / max(row["synapses"], 1)
        if row["latency_ms"]:
            row["speedup_vs_float32"] = float_ms / row["latency_ms"]
            row["speedup_vs_int8"] = int8_ms / row["latency_ms"]
    summary = None if within is None else headline(rows, within)
    if summary:
        log(summary["summary"])
    write_table(rows, out_dir, report, extra_columns, rates, metric_name, summary)
    return rows


# the seed's DetectNet headline: >= 10x fewer synapses, >= 5x faster than the
# float32 ancestor, >= 2.5x faster than the int8 ancestor, at preserved accuracy
TARGETS = {"synaptic_efficiency": 10.0, "speedup_vs_float32": 5.0, "speedup_vs_int8": 2.5}


def headline(rows, within, targets=TARGETS):
    """The best offspring (generation >= 1; baselines left out) whose metric
    is within `within` of the float32 ancestor's (the fastest against the
    float32 ancestor; fewer synapses on a tie), checked against `targets`
    (`{column: minimum}`).

    Example:

    >>> rows = [{"lineage": "ancestor-float32", "generation": 0, "metric": 60.0},
    ...         {"lineage": "int8", "generation": 1, "metric": 59.5, "synapses": 40,
    ...          "synaptic_efficiency": 10.5, "speedup_vs_float32": 4.0, "speedup_vs_int8": 1.5},
    ...         {"lineage": "int8", "generation": 2, "metric": 55.0, "synapses": 20,
    ...          "synaptic_efficiency": 21.0, "speedup_vs_float32": 6.0, "speedup_vs_int8": 2.6}]
    >>> result = headline(rows, within=1.0)
    >>> result["row"]["generation"], result["met"], result["checks"]["synaptic_efficiency"]
    (1, False, True)
    >>> result["summary"].split(": ")[1]
    'int8 generation 1 at 59.5'
    >>> result["summary"].split(", ")[1]
    'speedup_vs_float32 4.00x (>= 5x: missed)'
    """
    reference = next(r["metric"] for r in rows if r["lineage"] == "ancestor-float32")
    evolved = [r for r in rows if not r["lineage"].startswith(("ancestor", "tfmot"))
               and r.get("generation", 0) >= 1 and r.get("speedup_vs_float32")
               and r["metric"] >= reference - within]  # fmt: skip
    result = {"reference_metric": reference, "within": within, "targets": dict(targets)}
    if not evolved:
        result.update(row=None, met=False, summary=(
            f"no offspring within {within:g} of the float32 ancestor ({reference:.1f})"))
        return result
    best = max(evolved, key=lambda r: (r["speedup_vs_float32"], -r["synapses"]))
    checks = {k: best[k] >= v for k, v in targets.items()}
    parts = [f"{k} {best[k]:.2f}x (>= {v:g}x: {'met' if checks[k] else 'missed'})"
             for k, v in targets.items()]
    result.update(row={k: best.get(k) for k in ("lineage", "generation", "metric", "synapses",
                                                  "latency_ms", *targets)},
                  checks=checks, met=all(checks.values()),
                  summary=(f"best within {within:g} of the float32 ancestor ({reference:.1f}): "
                           f"{best['lineage']} generation {best['generation']} at "
                           f"{best['metric']:.1f}: " + ", ".join(parts)))  # fmt: skip
    return result


def write_table(rows, out_dir, report=None, extra_columns=(), rollback_rates=None,
                metric_name="metric", summary=None):
    """Writes `lineage.md`, `lineage.json` and (with matplotlib) `lineage.png`
    (the metric, named `metric_name`, against synapses and against measured
    latency, one curve per lineage, the ancestors as reference points).

    `rollback_rates`: `{lineage: rate}` (see `rollbacks`), listed under the
    table and stored in the JSON; `summary`: e.g. `headline(rows, ...)`,
    stored in the JSON and its `"summary"` line written under the table."""
    with open(os.path.join(out_dir, "lineage.md"), "w") as f:
        f.write(markdown_table(rows, extra=extra_columns) + "\n")
        if rollback_rates:
            rates = ", ".join(f"{k} {v:.0%}" for k, v in rollback_rates.items())
            f.write(f"\nrollback rate (rolled-back / trained offspring): {rates}\n")
        if summary:
            f.write(f"\n{summary['summary']}\n")
    payload = {"rows": rows}
    if summary:
        payload["headline"] = summary
    if rollback_rates:
        payload["rollback_rate"] = dict(rollback_rates)
    if report is not None:
        payload["benchmark"] = report.to_dict()
    with open(os.path.join(out_dir, "lineage.json"), "w") as f:
        json.dump(payload, f, indent=1, default=_json_default)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    from keras_evosynth.lineage import readable_log_ticks

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    evolved = [r["lineage"] for r in rows if not r["lineage"].startswith("ancestor")]
    for label in dict.fromkeys(evolved):
        mine = [r for r in rows if r["lineage"] == label]
        left.plot([r["synapses"] for r in mine], [r["metric"] for r in mine], "o-", label=label)
        timed = [r for r in mine if r.get("latency_ms")]
        right.plot([r["latency_ms"] for r in timed], [r["metric"] for r in timed], "o-",
                   label=label)
    for row, marker in zip([r for r in rows if r["lineage"].startswith("ancestor")], "sDv",
                           strict=False):
        name = row["lineage"].replace("-", " ")
        left.plot(row["synapses"], row["metric"], marker, color="gray", label=name)
        if row.get("latency_ms"):
            right.plot(row["latency_ms"], row["metric"], marker, color="gray", label=name)
    left.set(xscale="log", xlabel="synapses", ylabel=f"{metric_name} (LiteRT)",
             title=f"{metric_name} vs synapses")
    readable_log_ticks(left.xaxis)
    right.set(xlabel="LiteRT latency (ms, 1 thread, batch 1)", ylabel=f"{metric_name} (LiteRT)",
              title=f"{metric_name} vs measured latency")
    left.legend(fontsize="small")
    right.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "lineage.png"), dpi=100)
    plt.close(fig)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
