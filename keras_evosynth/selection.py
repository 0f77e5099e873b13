"""Natural selection's rules, and the record each offspring leaves.

`EvolutionCallback` (callbacks.py) runs the lifecycle inside `model.fit`;
what it decides after every retraining lives here, as plain logic on
numbers and records:

- `Selection`: how fitness compares (`mode`), whether an offspring is kept
  (`tolerance` against the ancestor), when rollbacks run out
  (`max_rollbacks`), when the lineage has reached `stop_when`, and which of
  several candidates is the fittest;
- `generation_record(...)`: the lineage record of one trained offspring
  (resources, fitness, factors; the format `lineage.jsonl` holds).

Example:

>>> rules = Selection("max", tolerance=2.0, max_rollbacks=1, stop_when={"synapses": 0.5})
>>> rules.accepts(fitness=61.0, ancestor_fitness=62.5), rules.accepts(59.0, 62.5)
(True, False)
>>> rules.exhausted(attempt=2)
True
>>> rules.stop_reached({"synapses": 40}, {"synapses": 100})
True
"""

import time

from keras_evosynth import environment as environment_lib
from keras_evosynth import genetics
from keras_evosynth.stats import summary

STOP_RESOURCES = ("synapses", "clusters", "macs", "bytes", "latency")


class Selection:
    """Accept / roll back / stop rules of a lineage.

    Args:
        mode: `"min"` or `"max"`: whether lower or higher fitness is better.
        tolerance: An offspring whose fitness is worse than the ancestor's
            by more than this is rolled back; None: every offspring is kept.
        max_rollbacks: Rollbacks allowed per generation.
        stop_when: `{resource: fraction of the ancestor}` or a callable
            `record -> bool`, or None.
    """

    def __init__(self, mode, tolerance=None, max_rollbacks=2, stop_when=None):
        if mode not in ("min", "max"):
            raise ValueError(f"EvolutionCallback: mode must be 'min' or 'max', got {mode!r}.")
        if tolerance is not None:
            if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)):
                raise TypeError(
                    f"EvolutionCallback: tolerance must be a number, got {tolerance!r}."
                )
            if not tolerance >= 0:
                raise ValueError(f"EvolutionCallback: tolerance must be >= 0, got {tolerance!r}.")
        self.mode = mode
        self.tolerance = None if tolerance is None else float(tolerance)
        self.max_rollbacks = max_rollbacks
        self.stop_when = _check_stop_when(stop_when)

    def worse_by(self, fitness, reference):
        """How much worse `fitness` is than `reference` (negative: better)."""
        return fitness - reference if self.mode == "min" else reference - fitness

    def better(self, fitness, than):
        """True when `fitness` beats `than` (None: anything does)."""
        return than is None or self.worse_by(fitness, than) < 0

    def accepts(self, fitness, ancestor_fitness):
        """True unless `fitness` is worse than the ancestor's by more than
        the tolerance."""
        if self.tolerance is None:
            return True
        return self.worse_by(fitness, ancestor_fitness) <= self.tolerance

    def exhausted(self, attempt):
        """True once a generation has failed more than `max_rollbacks` times."""
        return attempt > self.max_rollbacks

    def stop_reached(self, record, ancestor):
        """Whether `record` meets `stop_when` (fractions of `ancestor`)."""
        if self.stop_when is None:
            return False
        if callable(self.stop_when):
            return bool(self.stop_when(record))
        return any(
            record.get(k) is not None and ancestor.get(k) and record[k] <= v * ancestor[k]
            for k, v in self.stop_when.items()
        )


def _check_stop_when(stop_when):
    if stop_when is None or callable(stop_when):
        return stop_when
    if not isinstance(stop_when, dict) or not stop_when:
        raise TypeError(
            "EvolutionCallback: stop_when must be a dict {resource: fraction} "
            f"or a callable(record) -> bool, got {stop_when!r}."
        )
    for key, value in stop_when.items():
        if key not in STOP_RESOURCES:
            raise ValueError(
                f"EvolutionCallback: stop_when resource {key!r} is not one of "
                f"{STOP_RESOURCES}."
            )
        environment_lib._check_fraction(value, f"stop_when[{key!r}]")
    return dict(stop_when)


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
