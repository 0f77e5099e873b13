"""`EvolutionSettings`: the checked arguments of an `EvolutionCallback`.

The callback runs the lifecycle (callbacks.py); what it was asked to do is
checked once, here, and read back as attributes (`evolution.generations`,
`evolution.precision`, ...). `lineage_config()` is the part a lineage
directory must match to be resumed; `auto_mode` decides `mode="auto"` as
Keras's own callbacks do.

Example:

>>> settings = EvolutionSettings(generations=3, precision="int4", ancestor_epochs=2)
>>> settings.precision.bits, settings.epochs_per_generation, settings.ancestor_epochs
(4, 1, 2)
>>> settings.max_epochs  # 2 + 3 generations x 1 epoch x (2 rollbacks + 1 attempt)
11
"""

import keras  # noqa: F401 (doctests)
import numpy as np

from keras_evosynth import environments, quantizers
from keras_evosynth.lineage import Lineage, check_writable
from keras_evosynth.selection import Selection


def _int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"EvolutionCallback: {name} must be an int, got {value!r}.")
    if value < minimum:
        raise ValueError(f"EvolutionCallback: {name} must be >= {minimum}, got {value!r}.")
    return int(value)


def auto_mode(model, monitor):
    """`mode="auto"` decided as Keras 3.15's callbacks decide it
    (`EarlyStopping`, `ModelCheckpoint`, ...: `MonitorCallback`).

    The loss (`"loss"` / `"val_loss"`) is minimized; any other monitor takes
    the direction of `model`'s compiled metric of that name (without
    `val_`): `"max"` for one that goes up (`accuracy`, `auc`, `f1_score`,
    `r2_score`), `"min"` for one that goes down (a metric wrapping a loss:
    `mae`, `mse`). None when neither tells: a per-output loss, a metric
    without a direction (a `MeanMetricWrapper` of your own function), a value
    another callback adds to the logs. The compiled metrics exist once
    `fit` has run a step. Keras records a metric's direction only in its
    `_direction` attribute, read here as Keras's own rule reads it.

    Args:
        model: The compiled model.
        monitor: The monitored name from the epoch logs.

    Returns:
        `"min"`, `"max"` or None.

    Example:

    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse", metrics=["mae", keras.metrics.R2Score()])
    >>> _ = model.fit(np.ones((4, 2)), np.ones((4, 1)), verbose=0)
    >>> [auto_mode(model, m) for m in ("val_loss", "mae", "val_r2_score", "score")]
    ['min', 'min', 'max', None]
    """
    name = monitor.removeprefix("val_")
    mode = "min" if name == "loss" else None
    compiled = []
    for metric in getattr(model, "metrics", None) or []:
        inner = getattr(metric, "metrics", None)  # the compiled metrics' containers
        if isinstance(inner, (list, tuple)):
            compiled.extend(inner)
    for metric in compiled:
        if metric.name == name and hasattr(metric, "_direction"):
            mode = "max" if metric._direction == "up" else "min"
    return mode


class EvolutionSettings:
    """The arguments of `EvolutionCallback`, checked (see its docstring for
    each one). Raises `TypeError` / `ValueError` naming the argument.

    Attributes beyond the arguments: `precision` is a `SynapticPrecision`
    (or None), `environment` an `Environment`, `protect` a list (or None),
    `lineage` a `Lineage` (or None, from `directory`), `tolerance`,
    `max_rollbacks` and `stop_when` as `Selection` checked them.
    """

    def __init__(self, generations, epochs_per_generation=1, precision=None, environment=None,
                 seed=0, monitor="val_loss", mode="auto", ancestor_epochs=None, population=1,
                 selection_data=None, trial_data=None, trial_steps=None, trial_score=None,
                 executor=None, fitness_epochs=1, tolerance=None, max_rollbacks=2,
                 stop_when=None, reinitialize=False, protect=None, directory=None, verbose=1,
                 latency_table=None, learning_rate=None):
        self.generations = _int(generations, "generations", 1)
        self.epochs_per_generation = _int(epochs_per_generation, "epochs_per_generation", 1)
        self.ancestor_epochs = (self.epochs_per_generation if ancestor_epochs is None
                                else _int(ancestor_epochs, "ancestor_epochs", 1))
        self.precision = None if precision is None else quantizers.get(precision)
        self.environment = environments.get(environment)
        self.seed = _int(seed, "seed", 0)
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"EvolutionCallback: monitor must be a metric name, got {monitor!r}.")
        if mode not in ("auto", "min", "max"):
            raise ValueError(
                f"EvolutionCallback: mode must be 'auto', 'min' or 'max', got {mode!r}.")
        self.monitor, self.mode = monitor, mode
        self._check_population(population, selection_data, trial_data, trial_steps, trial_score,
                               executor)
        self.fitness_epochs = _int(fitness_epochs, "fitness_epochs", 1)
        if self.fitness_epochs > min(self.epochs_per_generation, self.ancestor_epochs):
            raise ValueError(
                f"EvolutionCallback: fitness_epochs={self.fitness_epochs} is more than the "
                f"epochs of a generation (epochs_per_generation={self.epochs_per_generation}, "
                f"ancestor_epochs={self.ancestor_epochs})."
            )
        if learning_rate is not None and not callable(learning_rate) and (
                isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float))
                or not learning_rate > 0):
            raise ValueError("EvolutionCallback: learning_rate must be a positive number or a "
                             f"callable (epoch, epochs) -> rate, got {learning_rate!r}.")
        self.learning_rate = learning_rate
        rules = Selection("min", tolerance, _int(max_rollbacks, "max_rollbacks", 0), stop_when)
        self.tolerance, self.max_rollbacks = rules.tolerance, rules.max_rollbacks
        self.stop_when = rules.stop_when
        self.latency_table = (latency_table if latency_table is not None
                              else getattr(self.environment, "latency_table", None))
        if isinstance(self.stop_when, dict) and "latency" in self.stop_when \
                and self.latency_table is None:
            raise ValueError(
                "EvolutionCallback: stop_when={'latency': ...} needs a latency table: "
                "pass latency_table=LatencyTable.measure(model) or a latency ResourceTarget."
            )
        if not isinstance(reinitialize, bool):
            raise TypeError(
                f"EvolutionCallback: reinitialize must be a bool, got {reinitialize!r}.")
        self.reinitialize = reinitialize
        if protect is not None and not (
                isinstance(protect, str) or all(isinstance(p, str) for p in protect)):
            raise TypeError(f"EvolutionCallback: protect must be layer names, got {protect!r}.")
        self.protect = [protect] if isinstance(protect, str) else protect
        self.lineage = None
        if directory is not None:
            check_writable(directory)
            self.lineage = Lineage(directory)
        self.verbose = verbose

    def _check_population(self, population, selection_data, trial_data, trial_steps,
                          trial_score, executor):
        self.population = _int(population, "population", 1)
        if self.population > 1 and selection_data is None and trial_score is None:
            raise ValueError(
                "EvolutionCallback: population > 1 needs selection_data=(x, y) "
                "(or trial_score=) to score the candidates."
            )
        if trial_score is not None and not callable(trial_score):
            raise TypeError(
                f"EvolutionCallback: trial_score must be a function, got {trial_score!r}.")
        if trial_data is not None and self.population == 1:
            raise ValueError("EvolutionCallback: trial_data is only used with population > 1.")
        if executor is not None and not callable(getattr(executor, "run", None)):
            raise TypeError(
                "EvolutionCallback: executor must be None or an executor such as "
                "keras_evosynth.trials.LocalExecutor() or "
                f"keras_evosynth.distributed.RayExecutor(), got {executor!r}."
            )
        if executor is not None and self.population == 1:
            raise ValueError(
                "EvolutionCallback: an executor runs population trials; pass population > 1.")
        self.selection_data, self.trial_data, self.trial_score = (
            selection_data, trial_data, trial_score)
        self.trial_steps = None if trial_steps is None else _int(trial_steps, "trial_steps", 1)
        self.executor = executor

    def learning_rate_at(self, generation, epoch):
        """The rate to set as epoch `epoch` (from 0) of `generation` starts,
        or None: leave the optimizer's (no `learning_rate`, or a number set
        at the generation's first epoch already).

        Example:

        >>> EvolutionSettings(2, 3, learning_rate=lambda e, n: 0.1 * (n - e)).learning_rate_at(1, 1)
        0.2
        """
        if self.learning_rate is None:
            return None
        if callable(self.learning_rate):
            epochs = self.ancestor_epochs if generation == 0 else self.epochs_per_generation
            return float(self.learning_rate(epoch, epochs))
        return float(self.learning_rate) if epoch == 0 else None

    @property
    def max_epochs(self):
        """The epochs a whole lineage can take: the ancestor's, then every
        generation retrained as often as rollbacks allow."""
        return self.ancestor_epochs + self.generations * self.epochs_per_generation * (
            self.max_rollbacks + 1)

    def epochs_left(self, records):
        """The most epochs `fit` still needs to complete a lineage whose
        records so far are `records` (0: it is complete)."""
        accepted = [r for r in records if r.get("accepted")]
        if not accepted:
            return self.max_epochs
        last = accepted[-1]
        rules = Selection("min", None, self.max_rollbacks, self.stop_when)
        failures = sum(1 for r in records
                       if r["generation"] == last["generation"] + 1 and not r["accepted"])
        if (last["generation"] >= self.generations or rules.stop_reached(last, records[0])
                or rules.exhausted(failures)):
            return 0
        return ((self.generations - last["generation"]) * (self.max_rollbacks + 1)
                - failures) * self.epochs_per_generation

    def lineage_config(self, mode=None):
        """The settings a lineage directory must match to be resumed (`mode`:
        the direction an "auto" mode resolved to, if stored so)."""
        return {
            "generations": self.generations,
            "epochs_per_generation": self.epochs_per_generation,
            "ancestor_epochs": self.ancestor_epochs,
            "precision": None if self.precision is None else self.precision.bits,
            "environment": environments.serialize(self.environment),
            "seed": self.seed,
            "monitor": self.monitor,
            "mode": mode or self.mode,
            "population": self.population,
            "trial_steps": self.trial_steps,
            "tolerance": self.tolerance,
            "max_rollbacks": self.max_rollbacks,
            "stop_when": self.stop_when if isinstance(self.stop_when, dict) else None,
            "reinitialize": self.reinitialize,
            "protect": self.protect,
            # only when set, so that lineages written before it still resume
            **({"fitness_epochs": self.fitness_epochs} if self.fitness_epochs > 1 else {}),
        }
