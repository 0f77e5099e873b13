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
from keras_evosynth.export import export_litert
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


def resources(model):
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
    family=None,
    spread="mAP_spread",
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
        space_to_depth: `export_litert`'s argument, for every exported row
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
        family: `{width: model}`, the same network trained from scratch at
            thinner widths (what a user tries first): rows of lineage
            `"family"` (with their `width`), exported like the ancestor
            (same rewrites) and timed with everything else; the JSON then
            holds `family_comparison(rows)` as `"versus_family"`, also
            written under the table.
        spread: The key of `evaluate`'s standard deviation of the metric,
            the noise `family_comparison` allows.

    Returns:
        The rows (list of dicts); also written to `out_dir/lineage.{md,json}`.
    """
    os.makedirs(out_dir, exist_ok=True)
    rows, paths = [], []

    def add(row, model, mode, rewrite=True, name=None):
        name = name or f"{row['lineage']}_g{row['generation']:03d}"
        path = os.path.join(out_dir, f"{name}_{mode}.tflite")
        report = export_litert(
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

    base = resources(ancestor)
    for mode in ("float32", "int8"):
        add({"lineage": f"ancestor-{mode}", "generation": 0, **base}, ancestor, mode)
    if space_to_depth is not None:
        add({"lineage": "ancestor-int8-plain", "generation": 0, **base}, ancestor, "int8",
            rewrite=False)
    skipped = {}
    for width, model in sorted((family or {}).items(), reverse=True):
        row = {"lineage": FAMILY, "generation": 0, "width": width, **resources(model)}
        try:
            add(row, model, "int8", name=f"{FAMILY}_w{width:g}")
        except RuntimeError as error:  # e.g. XNNPACK refuses a collapsed thin filter
            skipped[width] = str(error)
            log(f"family width {width:g}: not exported, left out of the table ({error})")
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
                    **resources(model),
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
    versus = family_comparison(rows, spread) if family else None
    if versus:
        versus["not_exported"] = skipped
        log(versus["summary"])
    write_table(rows, out_dir, report, extra_columns, rates, metric_name, summary, versus)
    return rows


FAMILY = "family"  # the rows of the network trained from scratch at thinner widths
NOT_EVOLVED = ("ancestor", "tfmot", FAMILY)


def _offspring(rows):
    """The evolved rows (generation >= 1): no ancestor, baseline or family row."""
    return [r for r in rows if not r["lineage"].startswith(NOT_EVOLVED)
            and r.get("generation", 0) >= 1]  # fmt: skip


def family_comparison(rows, spread="mAP_spread"):
    """Evolution against training thinner: for each family width, the best
    offspring (any lineage) no slower than it (measured latency), and the
    metric difference `offspring - family`. A width is won when the
    difference is >= 0 and lost by more than noise when it is below minus
    the larger of the two rows' `spread` (e.g. the bootstrap standard
    deviation of the mAP); without an offspring that fast the width is lost
    (difference None). `met`: the lineage wins at all but at most one width
    and loses none by more than noise.

    Example:

    >>> rows = [{"lineage": "family", "width": 0.5, "metric": 70.0, "latency_ms": 2.0,
    ...          "mAP_spread": 1.0},
    ...         {"lineage": "family", "width": 0.25, "metric": 60.0, "latency_ms": 1.0,
    ...          "mAP_spread": 1.0},
    ...         {"lineage": "int8", "generation": 1, "metric": 71.0, "latency_ms": 1.9,
    ...          "mAP_spread": 1.2},
    ...         {"lineage": "int8", "generation": 2, "metric": 59.5, "latency_ms": 0.9,
    ...          "mAP_spread": 1.2}]
    >>> result = family_comparison(rows)
    >>> [(w["width"], w["difference"], w["won"]) for w in result["widths"]]
    [(0.5, 1.0, True), (0.25, -0.5, False)]
    >>> result["wins"], result["lost_beyond_spread"], result["met"]
    (1, 0, True)
    """
    offspring = [r for r in _offspring(rows) if r.get("latency_ms")]
    widths = []
    for member in sorted((r for r in rows if r["lineage"] == FAMILY),
                         key=lambda r: -r["width"]):  # fmt: skip
        fast = [r for r in offspring if r["latency_ms"] <= member["latency_ms"]]
        item = {"width": member["width"], "family_metric": member["metric"],
                "family_latency_ms": member["latency_ms"], "offspring": None,
                "difference": None, "won": False, "beyond_spread": True}  # fmt: skip
        if fast:
            best = max(fast, key=lambda r: (r["metric"], -r["latency_ms"]))
            difference = best["metric"] - member["metric"]
            noise = max(member.get(spread) or 0.0, best.get(spread) or 0.0)
            item.update(offspring={k: best.get(k) for k in ("lineage", "generation", "metric",
                                                              "latency_ms", "synapses")},
                        difference=round(difference, 6), won=difference >= 0,
                        beyond_spread=difference < -noise)  # fmt: skip
        widths.append(item)
    wins = sum(w["won"] for w in widths)
    lost = sum(w["beyond_spread"] and not w["won"] for w in widths)
    met = bool(widths) and wins >= len(widths) - 1 and lost == 0
    cells = [f"{w['width']:g}: " + ("no offspring as fast" if w["difference"] is None
                                     else f"{w['difference']:+.3g}") for w in widths]
    return {"widths": widths, "wins": wins, "lost_beyond_spread": lost, "met": met,
            "summary": (f"versus the family trained from scratch (best offspring no slower, "
                        f"metric difference per width): {', '.join(cells)}; won {wins} of "
                        f"{len(widths)}, lost {lost} beyond the spread: "
                        f"{'met' if met else 'missed'}")}  # fmt: skip


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
    best = _fastest_within(rows, within)
    result = {"reference_metric": reference, "within": within, "targets": dict(targets)}
    if best is None:
        result.update(row=None, met=False, summary=(
            f"no offspring within {within:g} of the float32 ancestor ({reference:.1f})"))
        return result
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


def _fastest_within(rows, within):
    """The offspring row (generation >= 1) within `within` of the float32
    ancestor's metric that is fastest against it (fewer synapses on a tie),
    or None: `headline`'s pick."""
    reference = next(r["metric"] for r in rows if r["lineage"] == "ancestor-float32")
    evolved = [r for r in _offspring(rows) if r.get("speedup_vs_float32")
               and r["metric"] >= reference - within]  # fmt: skip
    return max(evolved, key=lambda r: (r["speedup_vs_float32"], -r["synapses"]), default=None)


ROLES = {"ancestor-float32": "ancestor_float32", "ancestor-int8": "ancestor_int8",
         FAMILY: "family"}  # fmt: skip


def deployed_models(rows, within=None):
    """The rows worth shipping: the float32 and int8 ancestors, every family
    width, every generation of the headline lineage (the lineage of
    `headline(rows, within)`'s row; without one, the first lineage), and the
    best offspring of every other lineage (the fastest within `within` of
    the float32 ancestor, else the highest metric).

    Example:

    >>> def row(lineage, generation, metric, speedup=1.0):
    ...     return {"lineage": lineage, "generation": generation, "metric": metric,
    ...             "synapses": 10, "synaptic_efficiency": 1.0, "speedup_vs_int8": 1.0,
    ...             "speedup_vs_float32": speedup}
    >>> rows = [row("ancestor-float32", 0, 60.0), row("ancestor-int8", 0, 59.8),
    ...         row("int8", 0, 59.9), row("int8", 1, 59.5, 4.0),
    ...         row("int4", 1, 50.0, 9.0), row("int4", 2, 55.0, 8.0)]
    >>> [(r["lineage"], r["generation"]) for r in deployed_models(rows, within=1.0)]
    [('ancestor-float32', 0), ('ancestor-int8', 0), ('int8', 0), ('int8', 1), ('int4', 2)]
    """
    chosen = [r for r in rows if r["lineage"] in ROLES]
    lineages = list(dict.fromkeys(r["lineage"] for r in rows
                                  if not r["lineage"].startswith(NOT_EVOLVED)))  # fmt: skip
    if not lineages:
        return chosen
    def fastest(label=None):  # `headline`'s pick, among one lineage's rows with a label
        mine = [r for r in rows if label is None or r["lineage"] in (label, "ancestor-float32")]
        return None if within is None else _fastest_within(mine, within)

    best = fastest()
    main = best["lineage"] if best else lineages[0]
    chosen += [r for r in rows if r["lineage"] == main]
    for label in lineages:
        offspring = [r for r in _offspring(rows) if r["lineage"] == label]
        if label != main and offspring:
            chosen.append(fastest(label) or max(offspring, key=lambda r: r["metric"]))
    return chosen


def deploy_bundle(rows, destination, input_size, within=None, log=print):
    """Copies the flatbuffers of `deployed_models(rows, within)` (as
    deployed: rewrites included) into `destination` with a `manifest.json`
    that lets anyone re-time and re-score them: `{"input_size": [H, W],
    "total_bytes", "models": [{"file", "role" ("ancestor_int8",
    "ancestor_float32", "offspring" or "family"), "lineage", "generation",
    "width", "synapses", "mAP"}]}` (`mAP`: the row's metric).

    Returns:
        The manifest (dict).
    """
    import shutil

    os.makedirs(destination, exist_ok=True)
    models = []
    for row in deployed_models(rows, within):
        name = os.path.basename(row["tflite"])
        shutil.copyfile(row["tflite"], os.path.join(destination, name))
        models.append({"file": name, "role": ROLES.get(row["lineage"], "offspring"),
                       "lineage": row["lineage"], "generation": row.get("generation", 0),
                       "width": row.get("width"), "synapses": row["synapses"],
                       "mAP": row["metric"]})  # fmt: skip
    total = sum(os.path.getsize(os.path.join(destination, m["file"])) for m in models)
    manifest = {"input_size": list(input_size), "total_bytes": total, "models": models}
    with open(os.path.join(destination, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, default=_json_default)
    log(f"deployed {len(models)} flatbuffers ({total / 1e6:.1f} MB) and manifest.json "
        f"to {destination}")  # fmt: skip
    return manifest


def write_table(rows, out_dir, report=None, extra_columns=(), rollback_rates=None,
                metric_name="metric", summary=None, versus=None):
    """Writes `lineage.md`, `lineage.json` and (with matplotlib) `lineage.png`
    (the metric, named `metric_name`, against synapses and against measured
    latency, one curve per lineage, the ancestors as reference points).

    `rollback_rates`: `{lineage: rate}` (see `rollbacks`), listed under the
    table and stored in the JSON; `summary`: e.g. `headline(rows, ...)`,
    stored in the JSON and its `"summary"` line written under the table;
    `versus`: `family_comparison(rows)`, likewise (the family is drawn as its
    own dashed series)."""
    with open(os.path.join(out_dir, "lineage.md"), "w") as f:
        f.write(markdown_table(rows, extra=extra_columns) + "\n")
        if rollback_rates:
            rates = ", ".join(f"{k} {v:.0%}" for k, v in rollback_rates.items())
            f.write(f"\nrollback rate (rolled-back / trained offspring): {rates}\n")
        for item in (summary, versus):
            if item:
                f.write(f"\n{item['summary']}\n")
    payload = {"rows": rows}
    if summary:
        payload["headline"] = summary
    if versus:
        payload["versus_family"] = versus
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
    from keras_evosynth.plotting import readable_log_ticks

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    evolved = [r["lineage"] for r in rows if not r["lineage"].startswith("ancestor")]
    for label in dict.fromkeys(evolved):
        mine = [r for r in rows if r["lineage"] == label]
        style, name = "o-", label
        if label == FAMILY:
            mine.sort(key=lambda r: r["synapses"])
            style, name = "s--k", "trained thinner from scratch"
        left.plot([r["synapses"] for r in mine], [r["metric"] for r in mine], style, label=name)
        timed = [r for r in mine if r.get("latency_ms")]
        right.plot([r["latency_ms"] for r in timed], [r["metric"] for r in timed], style,
                   label=name)
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
