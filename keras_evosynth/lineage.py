"""The lineage directory: a JSON-lines log and one checkpoint per generation.

Layout of a lineage directory:

- `evolution.json`: the settings of the run (written once; a later run in
  the same directory must use the same settings, so it can resume);
- `lineage.jsonl`: one JSON object per line, one line per trained offspring
  (accepted or rolled back): generation, attempt, seed, factors, synapses,
  clusters, MACs, bits, metrics, fitness, wall time, checkpoint file;
- `generation_000.keras`, `generation_001.keras`, ...: the trained model of
  every accepted generation.

`generation_record` builds one record, `progress_line` prints it, `epoch_logs`
puts it in Keras's epoch logs.

Every file is written to a temporary file in the same directory and moved
into place with `os.replace`, so a killed process never leaves a half
written file; no existing file is ever overwritten (a checkpoint name that
is taken gets a `-1`, `-2`, ... suffix) and the log only ever grows. A log
whose last line is a partial record (left by another writer killed in the
middle of an append, or by a crash of the file system) is read without that
line, with a warning, and `Lineage.open` removes it from the file.

Example:

>>> import tempfile
>>> lineage = Lineage(tempfile.mkdtemp())
>>> lineage.open({"seed": 0})
[]
>>> lineage.append({"generation": 0, "synapses": 120, "accepted": True})
>>> [r["synapses"] for r in read_lineage(lineage.directory)]
[120]
"""

import json
import math
import os
import tempfile
import time
import warnings

from keras_evosynth import genetics
from keras_evosynth._io import write_atomic
from keras_evosynth.stats import summary

CONFIG_NAME = "evolution.json"
LOG_NAME = "lineage.jsonl"

# The resources a lineage record measures (the keys `stop_when` may name),
# and, for those an environment can restrict, the record field holding the
# amount it solves for (the genome's count; the latency table's prediction).
RESOURCES = ("synapses", "clusters", "macs", "bytes", "latency")
AMOUNT_FIELD = {"synapses": "genome_synapses", "macs": "genome_macs", "latency": "latency"}


def check_writable(directory):
    """Raises ValueError unless `directory` exists as (or can be created as)
    a writable directory. Creates nothing.

    Example:

    >>> check_writable(tempfile.gettempdir())
    """
    path = os.path.abspath(os.fspath(directory))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"Lineage directory {path!r} exists and is not a directory.")
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(
            f"Lineage directory {path!r} is not writable ({probe!r} does not allow creating files)."
        )


def _clean(value):
    """JSON-safe copy: numpy scalars to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _parse_line(line):
    """`(record, None)` for an intact log line (bytes), `(None, why)` otherwise."""
    try:
        record = json.loads(line)
    except ValueError as error:  # JSONDecodeError, or bytes that are not UTF-8
        return None, getattr(error, "msg", str(error))
    if not isinstance(record, dict):
        return None, f"a record must be a JSON object, found {type(record).__name__}"
    return record, None


def _read_log(path):
    """`(records, data, end, torn)` of a lineage log: its records, its bytes,
    where its intact part ends (the byte after the newline of the last
    record) and the line number of a torn last line (None when there is
    none). Raises ValueError for a damaged line before the last one."""
    with open(path, "rb") as f:
        data = f.read()
    records, end, bad, offset = [], 0, None, 0
    for number, line in enumerate(data.split(b"\n"), 1):
        offset += len(line) + 1
        if not line.strip():
            continue
        if bad is not None:  # the damaged line is followed by another record
            break
        record, why = _parse_line(line)
        if why is not None:
            bad = (number, why)
            continue
        records.append(record)
        end = min(offset, len(data))
    else:
        return records, data, end, None if bad is None else bad[0]
    number, why = bad
    raise ValueError(
        f"Lineage log {path} is damaged at line {number} ({why}), before its last "
        "record. Fix that line, or delete it and the ones after it to resume from the "
        "last intact record (their generation_*.keras checkpoints stay), or start a new "
        "lineage in another directory."
    )


def _drop_torn_tail(path, data, end):
    """Rewrites the log without its torn last line (atomically, and only if
    nothing changed it since it was read); returns whether it did."""
    with open(path, "rb") as f:
        if f.read() != data:
            return False
    write_atomic(path, data[:end])
    return True


def _warn_torn(path, line, repaired):
    warnings.warn(
        f"Lineage log {path}: line {line}, the last, is a partial record (the process "
        f"writing it was killed); dropped it{' from the file' if repaired else ''}. The "
        "records before it and their checkpoints are intact.",
        RuntimeWarning,
        stacklevel=3,
    )


def read_lineage(directory, repair=False):
    """Reads the records of a lineage directory (a list of dicts).

    A process killed while it appended a record can leave a partial (torn)
    last line: that line is dropped with one warning, since the records
    before it and their checkpoints are intact (a resumed lineage trains the
    offspring it described again). A damaged line anywhere else raises.

    Args:
        directory: The lineage directory.
        repair: Also remove a torn last line from the file (atomically), so
            that the next record starts on a clean line. `Lineage.open` (a
            resumed lineage) does; a plain reader, which may run beside the
            process that writes the lineage, need not.

    Returns:
        The records, oldest first (empty when there is no log yet).

    Raises:
        ValueError: A line before the last one is not a JSON object; the
            message names the file and the line.

    Example:

    >>> read_lineage(tempfile.mkdtemp())
    []
    """
    path = os.path.join(os.fspath(directory), LOG_NAME)
    if not os.path.exists(path):
        return []
    records, data, end, torn = _read_log(path)
    if torn is not None:
        repaired = repair and _drop_torn_tail(path, data, end)
        _warn_torn(path, torn, repaired)
    return records


class Lineage:
    """Reads and appends to one lineage directory.

    Args:
        directory: Where the lineage lives (created on `open`).
    """

    def __init__(self, directory):
        self.directory = os.path.abspath(os.fspath(directory))

    @property
    def log_path(self):
        return os.path.join(self.directory, LOG_NAME)

    @property
    def config_path(self):
        return os.path.join(self.directory, CONFIG_NAME)

    def open(self, config):
        """Creates the directory, checks or writes the settings, and returns
        the existing records (empty for a new lineage).

        Raises:
            ValueError: The directory holds a lineage with other settings.
        """
        config = _clean(config)
        os.makedirs(self.directory, exist_ok=True)
        if self.check(config) is None:
            write_atomic(self.config_path, json.dumps(config, indent=1) + "\n")
        return self.records()

    def check(self, config):
        """Checks `config` against the stored settings (creating nothing);
        returns them, or None when the directory holds no lineage yet.

        Raises:
            ValueError: The directory holds a lineage with other settings.
        """
        config = _clean(config)
        stored = self.stored_settings()
        if stored is not None:
            diff = sorted(
                key for key in set(stored) | set(config) if stored.get(key) != config.get(key)
            )
            if diff:
                details = "; ".join(
                    f"{k}: stored {stored.get(k)!r}, now {config.get(k)!r}" for k in diff
                )
                raise ValueError(
                    f"Lineage directory {self.directory!r} holds a lineage with "
                    f"other settings ({details}). Use the same settings to resume "
                    "it, or a new directory."
                )
        return stored

    def record_mode(self, mode):
        """Writes the direction `mode="auto"` resolved to (`"min"` or
        `"max"`) into the stored settings, so that a resumed lineage compares
        fitness the same way before its model has run a step (its compiled
        metrics, which `auto` reads, exist only then). Only a stored `"auto"`
        is replaced."""
        stored = self.stored_settings()
        if stored is not None and stored.get("mode") == "auto":
            stored["mode"] = mode
            write_atomic(self.config_path, json.dumps(stored, indent=1) + "\n")

    def stored_settings(self):
        """The settings the directory's lineage was started with, or None
        when it holds none yet.

        Raises:
            ValueError: The settings file is damaged.
        """
        if not os.path.exists(self.config_path):
            return None
        with open(self.config_path, encoding="utf-8") as f:
            try:
                return json.load(f)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"Lineage settings {self.config_path} are damaged ({error}); "
                    "restore them or start a new lineage in another directory."
                ) from None

    def records(self):
        """The records logged so far (a torn last line, left by a killed
        process, is dropped from the file: see `read_lineage`)."""
        return read_lineage(self.directory, repair=True)

    def append(self, record):
        """Appends one record: the log with the new line is written to a
        temporary file in one write, flushed, fsynced and moved into place
        (`os.replace`), so a killed process leaves either the old log or the
        new one, never a partial line."""
        existing = b""
        if os.path.exists(self.log_path):
            with open(self.log_path, "rb") as f:
                existing = f.read()
            last = existing.rstrip().rpartition(b"\n")[2]
            if last.strip() and _parse_line(last)[1] is not None:  # torn: see read_lineage
                _warn_torn(self.log_path, existing.rstrip().count(b"\n") + 1, True)
                existing = existing.rstrip()[: -len(last)]
            if existing and not existing.endswith(b"\n"):
                existing += b"\n"
        line = json.dumps(_clean(record), sort_keys=True)
        write_atomic(self.log_path, existing + line.encode("utf-8") + b"\n")

    def save_model(self, model, generation):
        """Saves `model` as `generation_<g>.keras` (atomically, never over an
        existing file); returns the file name (relative to the directory)."""
        base = f"generation_{generation:03d}"
        name, n = base + ".keras", 0
        while os.path.exists(os.path.join(self.directory, name)):
            n += 1
            name = f"{base}-{n}.keras"
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".keras")
        os.close(fd)
        try:
            model.save(tmp)
            with open(tmp, "rb+") as f:  # on disk before it takes its name
                os.fsync(f.fileno())
            os.replace(tmp, os.path.join(self.directory, name))
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        return name

    def load_model(self, record, into):
        """Loads the checkpoint of `record` into the model `into` (same
        architecture): its weights and masks, and each Evo layer's precision.

        Raises:
            ValueError: The checkpoint does not fit `into`.
        """
        import keras

        from keras_evosynth.conversion import copy_state

        path = self.path(record["checkpoint"])
        try:
            copy_state(keras.saving.load_model(path, compile=False), into)
        except Exception as error:  # Keras raises several types here
            raise ValueError(
                f"EvolutionCallback: cannot load the lineage checkpoint {path!r} "
                f"into model '{into.name}': {error}"
            ) from error

    def path(self, name):
        """Absolute path of a file named in a record."""
        return os.path.join(self.directory, name)


def generation_record(model, *, generation, attempt, candidate, accepted, seed, monitor,
                      fitness, logs, started, protect=None, latency_table=None, factors=None,
                      ancestor=None):
    """The lineage record of one trained offspring (or of generation 0).

    Args:
        model: The trained model (Evo layers).
        generation, attempt, candidate: Where it stands in the lineage.
        accepted: Whether selection kept it.
        seed: The lineage seed.
        monitor, fitness: The fitness metric's name and value.
        logs: The last epoch's logs (all metrics go into `metrics`).
        started: `time.perf_counter()` when its synthesis began.
        protect: Layer names never sampled (for the genome amounts).
        latency_table: Adds the predicted `latency` (ms).
        factors: The environment's `Factors` for this offspring.
        ancestor: Generation 0's record (None: this is generation 0), the
            reference of the efficiency ratios.

    Returns:
        A JSON-ready dict (`checkpoint` None; the caller fills it in).
    """
    stats = summary(model, print_fn=None)
    genomes, _ = genetics.genomes_from_model(model, None, protect)
    bits = sorted({row.bits for row in stats.layers})
    record = {
        "generation": generation,
        "attempt": attempt,
        "candidate": candidate,
        "accepted": accepted,
        "seed": seed,
        "synapses": stats.synapses,
        "total_synapses": stats.total_synapses,
        "clusters": stats.clusters,
        "total_clusters": stats.total_clusters,
        "macs": stats.macs,
        "bytes": stats.bytes,
        "bits": bits[0] if len(bits) == 1 else bits,
        "genome_synapses": genetics.amount(genomes, "synapses"),
        "genome_macs": (
            None
            if any(g.positions is None for g in genomes)
            else genetics.amount(genomes, "macs")
        ),
        "monitor": monitor,
        "fitness": fitness,
        "metrics": {k: float(v) for k, v in logs.items()},
        "wall_time": round(time.perf_counter() - started, 3),
        "checkpoint": None,
    }
    if latency_table is not None:
        record["latency"] = latency_table.predict(model)
    if factors is not None:
        record.update(
            cluster_factor=factors.cluster_factor,
            synapse_factor=factors.synapse_factor,
            target=factors.target,
            expected=factors.expected,
        )
        if factors.pressure is not None:
            record["pressure"] = factors.pressure
        if factors.removed:
            record["removed"] = factors.removed
    ancestor = record if ancestor is None else ancestor
    for key, name in (
        ("synapses", "synaptic_efficiency"),
        ("clusters", "cluster_efficiency"),
        ("macs", "mac_efficiency"),
    ):
        if record[key] and ancestor[key]:
            record[name] = ancestor[key] / record[key]
    return record


def epoch_logs(record):
    """The lineage's numbers that `EvolutionCallback` adds to Keras's epoch
    logs, from a record: `generation` (int), `synapses` (int: non-zero
    kernel weights at the generation's precision), `macs` (int: its
    multiply-accumulates, where the model's shapes give them) and `latency`
    (float: its predicted int8 latency in ms, with a latency table).

    Example:

    >>> epoch_logs({"generation": 2, "synapses": 900, "macs": None, "latency": 1.5})
    {'generation': 2, 'synapses': 900, 'latency': 1.5}
    """
    logs = {"generation": int(record["generation"]), "synapses": int(record["synapses"])}
    if record.get("macs") is not None:
        logs["macs"] = int(record["macs"])
    if record.get("latency") is not None:
        logs["latency"] = float(record["latency"])
    return logs


def progress_line(record, ancestor, generations):
    """The one-line summary `EvolutionCallback` prints for a record.

    Example:

    >>> r = {"generation": 1, "attempt": 0, "accepted": True, "synapses": 500,
    ...      "total_synapses": 1000, "synaptic_efficiency": 2.0, "clusters": 9,
    ...      "total_clusters": 12, "macs": None, "monitor": "val_loss",
    ...      "fitness": 0.25, "wall_time": 1.5}
    >>> line = progress_line(r, {"fitness": 0.2, "synapses": 1000}, 3).split(", ")
    >>> line[:3]
    ['EvolutionCallback: generation 1/3', 'synapses 500/1,000 (2.00x)', 'clusters 9/12']
    >>> line[3:]
    ['val_loss 0.2500 (ancestor 0.2000)', '1.5s']
    """
    r = record
    parts = [
        f"generation {r['generation']}/{generations}"
        + (f" (attempt {r['attempt'] + 1})" if r["attempt"] else ""),
        # against generation 0, the reference of synaptic_efficiency
        f"synapses {r['synapses']:,}/{ancestor.get('synapses') or r['total_synapses']:,}"
        f" ({r.get('synaptic_efficiency', 1.0):.2f}x)",
        f"clusters {r['clusters']}/{r['total_clusters']}",
    ]
    if r["macs"] is not None:
        parts.append(f"MACs {r['macs']:,} ({r.get('mac_efficiency', 1.0):.2f}x)")
    if r.get("latency") is not None:
        parts.append(f"predicted {r['latency']:.3g} ms"
                     + (f" ({ancestor['latency'] / r['latency']:.2f}x)"
                        if ancestor.get("latency") else ""))
    metric = f"{r['monitor']} {r['fitness']:.4f}"
    if r["generation"]:
        metric += f" (ancestor {ancestor['fitness']:.4f})"
    parts.append(metric)
    if "cluster_factor" in r:
        r_c = r["cluster_factor"]
        r_c = (f"{min(r_c):.3g}..{max(r_c):.3g}" if isinstance(r_c, (list, tuple))
               else f"{r_c:.3g}")
        parts.append(f"R_c={r_c} R_s={r['synapse_factor']:.3g}")
    parts.append(f"{r['wall_time']:.1f}s")
    if not r["accepted"]:
        parts.append("ROLLED BACK")
    return "EvolutionCallback: " + ", ".join(parts)
