"""`EvolutionCallback`: evolutionary synthesis inside `model.fit`.

Generation 0 is the model you fit (the ancestor). Every time a generation
has trained for its epochs, the callback measures it (the monitored metric
is its fitness), logs it, and synthesizes the next generation from it in
place: it samples which clusters and synapses survive (`genetics`) under the
environment's factors (`environment`), switches the Evo layers to the
offspring precision, resets the optimizer state, and lets `fit` retrain the
offspring. The lineage ends after `generations` offspring (or when
`stop_when` is met, or when rollbacks run out) and then stops training.

Example:

>>> import keras, numpy as np
>>> from keras_evosynth import evolvable
>>> model = evolvable(keras.Sequential([keras.Input((4,)),
...     keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)]))
>>> model.compile("adam", "mse")
>>> x, y = np.random.rand(64, 4), np.random.rand(64, 2)
>>> evolution = EvolutionCallback(generations=2, monitor="loss", verbose=0)
>>> history = model.fit(x, y, epochs=10, verbose=0, callbacks=[evolution])
>>> [r["generation"] for r in evolution.records]
[0, 1, 2]
>>> history.history["generation"]  # the epoch logs carry the lineage
[0, 1, 2]
>>> evolution.records[2]["synapses"] < evolution.records[0]["synapses"]
True
"""

import time

import keras
import numpy as np

from keras_evosynth import genetics, trials
from keras_evosynth._graph import check_graph_model
from keras_evosynth.distill import ParentDistiller
from keras_evosynth.lineage import epoch_logs, generation_record, progress_line, read_lineage
from keras_evosynth.selection import Selection
from keras_evosynth.settings import EvolutionSettings, auto_mode
from keras_evosynth.stats import summary
from keras_evosynth.synthesis import synthesize
from keras_evosynth.trials import reinitialize_weights, reset_optimizer

__all__ = ["EvolutionCallback", "auto_mode", "reinitialize_weights", "reset_optimizer"]


class EvolutionCallback(keras.callbacks.Callback):
    """Evolves the model being fit, one offspring every few epochs.

    Shaped like `keras.callbacks.EarlyStopping`: the arguments are checked
    when it is built (`EvolutionSettings`, read back as attributes), the
    model is reached through `self.model`, and the work happens at epoch
    ends. Generation 0 (the ancestor) trains `ancestor_epochs` epochs, each
    offspring `epochs_per_generation`; epochs are counted across `fit` calls,
    so one long `fit` and several short ones evolve the same way. Give `fit`
    enough epochs: `evolution.epochs` is the most the lineage can still need
    (`ancestor_epochs + generations * epochs_per_generation`, each
    generation retried as often as rollbacks allow; less for a resumed
    lineage, 0 for a complete one); training stops when the lineage is
    complete. After that the callback only fills in the epoch logs (below).

    Epoch logs: at the end of every epoch the callback adds the lineage's
    numbers to the `logs` dict that Keras hands the callbacks
    (`lineage.epoch_logs`: `generation`, `synapses`, and `macs` / `latency`
    where the record has them, always numbers), so that `History`,
    `keras.callbacks.CSVLogger` and `keras.callbacks.TensorBoard` record them
    next to the metrics. `generation` is the one trained in that epoch (a
    rolled back attempt counts as its generation; once the lineage is
    complete, the last accepted one); on an epoch that ends a generation the
    values are its record's (they are not part of its `metrics`). Keras calls
    the callbacks in list order with one dict, so a logger only sees these
    keys if it comes after this callback:
    `callbacks=[evolution, keras.callbacks.CSVLogger(path)]` (`History` and
    the progress bar, which Keras appends to the list, always see them).
    Callbacks that add the monitored metric go before it.

    Args:
        generations: Number of offspring to synthesize (>= 1).
        epochs_per_generation: Epochs each offspring is retrained (>= 1).
        precision: Synaptic precision of the offspring (`"int4"`, 8, ...);
            it also shapes the cluster probabilities. None keeps the layers'.
        environment: An `Environment` (`ConstantEnvironment`,
            `ResourceTarget`) or its config; None: `ResourceTarget(0.7)`.
        seed: Seed of the lineage; the same seed on the same parent gives
            the same offspring.
        monitor: Fitness metric from the epoch logs (`"val_loss"`, ...).
        mode: `"auto"`, `"min"` or `"max"`. `"auto"` decides as Keras's
            callbacks do (`auto_mode`): the loss is minimized, a compiled
            metric goes its own direction (accuracy up, `mae` down); the
            decision is made once the compiled metrics exist (after the
            first batch), and a monitor that neither names (a per-output
            loss, a value another callback logs) fails there: pass `"max"`
            or `"min"` for it.
        ancestor_epochs: Epochs of generation 0 (default:
            `epochs_per_generation`).
        population: Offspring sampled per generation; with more than 1 each
            candidate is (optionally) trained briefly on `trial_data` and
            scored on `selection_data`, and the fittest is kept.
        selection_data: `(x, y)`, a dataset or a zero-argument function
            returning one, to score candidates (required when
            `population > 1`); the monitor without `val_` is read from
            `model.evaluate` on it.
        trial_data: Like `selection_data`, for a brief training of every
            candidate; None scores candidates untrained. Each trial starts
            from a seed of its own (`trials.trial_seed`), so it is the
            same wherever it runs.
        trial_steps: Batches of `trial_data` per candidate (None: one epoch).
        trial_score: A function `(network) -> fitness` (in the monitor's units
            and mode) that scores a candidate after its trial instead of
            `model.evaluate` on `selection_data`, for a fitness that is not a
            compiled metric (e.g. a detection mAP); it must be picklable to
            run on Ray workers (a module-level function or a
            `functools.partial` of one).
        executor: Where the population's trials run: None (a
            `keras_evosynth.trials.LocalExecutor`), one after another in this
            process; a `keras_evosynth.distributed.RayExecutor`, side by side
            on Ray workers (same lineage). Both have one method,
            `run(model, spec, candidates, where)`.
        fitness_epochs: Fitness is the mean of the monitor over the last
            this many epochs of a generation (ancestor included; at most
            `epochs_per_generation` and `ancestor_epochs`), so that one noisy
            epoch neither rolls back a good offspring nor keeps a bad one.
            With more than 1, records hold the epochs' values as
            `fitness_values`.
        tolerance: If the fitness of an offspring is worse than the
            ancestor's by more than this (in the metric's units), it is
            rolled back: the parent is restored and resampled with a milder
            environment (the cut halves per rollback).
        max_rollbacks: Rollbacks allowed per generation; after that the
            lineage ends with the parent.
        stop_when: End the lineage early: a dict `{resource: fraction}` (the
            offspring has at most that fraction of the ancestor's synapses,
            clusters, macs, bytes or predicted latency) or a callable
            `record -> bool`.
        reinitialize: Re-initialize the surviving weights of each offspring
            (the paper's literal "newborn" variant) instead of inheriting.
        protect: Evo layer names never sampled; None: the layers feeding the
            model outputs (classifier, detection heads).
        directory: Lineage directory (JSON-lines log and one `.keras` per
            generation); an existing lineage there is resumed.
        learning_rate: The optimizer's learning rate within each generation
            (generation 0 too): a number, set when a retraining starts, or a
            callable `(epoch, epochs) -> rate` called at every epoch, `epoch`
            counted from 0 within the generation and `epochs` its length,
            e.g. `lambda e, n: 3e-4 * 0.5 ** e` (a decay restarted for every
            offspring). None leaves the rate to the optimizer.
        latency_table: A `LatencyTable` whose prediction (ms) goes into
            every record as `"latency"` (and serves `stop_when={"latency":
            f}`); default: the environment's table, if it has one.
        verbose: 1 prints one line per generation, 0 is silent.

    Attributes:
        config: The checked arguments (`EvolutionSettings`); each one also
            reads as an attribute of the callback (`evolution.generations`).
        epochs: The most epochs `fit` still needs (0: the lineage is
            complete).
        mode: The direction in use (`"auto"` until it is decided).
        records: The lineage records (dicts), one per trained offspring.
        generation: The generation being trained now.
        done: True once the lineage is complete.

    Example:

    >>> EvolutionCallback(generations=3, precision="int4", seed=1).generations
    3
    """

    def __init__(
        self,
        generations,
        epochs_per_generation=1,
        precision=None,
        environment=None,
        seed=0,
        monitor="val_loss",
        mode="auto",
        ancestor_epochs=None,
        population=1,
        selection_data=None,
        trial_data=None,
        trial_steps=None,
        trial_score=None,
        executor=None,
        fitness_epochs=1,
        tolerance=None,
        max_rollbacks=2,
        stop_when=None,
        reinitialize=False,
        protect=None,
        directory=None,
        verbose=1,
        latency_table=None,
        learning_rate=None,
    ):
        super().__init__()
        self.config = EvolutionSettings(
            generations, epochs_per_generation, precision, environment, seed, monitor, mode,
            ancestor_epochs, population, selection_data, trial_data, trial_steps, trial_score,
            executor, fitness_epochs, tolerance, max_rollbacks, stop_when, reinitialize, protect,
            directory, verbose, latency_table, learning_rate)
        if self.population > 1 and executor is None:
            self.config.executor = trials.LocalExecutor()
        # `self.mode` is the direction in use, "auto" until `auto_mode` can
        # tell (the loss: at once); `config.mode` stays as asked
        self.mode = "min" if mode == "auto" and monitor.removeprefix("val_") == "loss" else mode
        self.selection = Selection(  # an "auto" mode is set in `_decide_mode`
            "min" if self.mode == "auto" else self.mode, self.tolerance, self.max_rollbacks,
            self.stop_when)
        self.records = []
        self.generation = 0
        self.done = False
        self._started = False
        self._pending = []

    def __getattr__(self, name):
        # the checked arguments read as attributes: `evolution.generations`, ...
        config = self.__dict__.get("config")
        if config is not None and name in vars(config):
            return vars(config)[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def epochs(self):
        """The most epochs `fit` needs to complete the lineage from where it
        stands (0: it is complete): the whole budget for a new lineage, what
        is left for one resumed from `directory` or one fitting now. Pass it
        to `fit`; the callback stops training once the lineage is complete.

        Raises:
            ValueError: `directory` holds a lineage with other settings.
        """
        if self._started:
            return 0 if self.done else self.config.epochs_left(self.records)
        if self.lineage is None:
            return self.config.max_epochs
        self.lineage.check(self._lineage_config())
        return self.config.epochs_left(read_lineage(self.lineage.directory))

    # ------------------------------------------------------------- settings
    def settings(self):
        """The settings a lineage directory must match to be resumed."""
        return self.config.lineage_config()

    def _lineage_config(self):
        """`settings()`, with the direction an "auto" mode was stored with:
        a lineage goes on in the direction it was started with."""
        stored = self.lineage.stored_settings() or {}
        if self.config.mode == "auto" and stored.get("mode") in ("min", "max"):
            return self.config.lineage_config(stored["mode"])
        return self.settings()

    # ---------------------------------------------------------------- hooks
    def on_train_begin(self, logs=None):
        self._monitor_checked = False
        check_graph_model(self._net, "EvolutionCallback")
        if self.mode == "auto":  # decided here if the compiled metrics exist already
            self._decide_mode(auto_mode(self.model, self.monitor))
        if not self._started:
            self._start()
        if self.done:
            self._say(
                "EvolutionCallback: the lineage is complete; further training fine-tunes "
                "its last offspring."
                if (self.params or {}).get("epochs") else
                "EvolutionCallback: the lineage is complete; nothing to train "
                "(fit was given 0 epochs: evolution.epochs)."
            )
        self._flush()

    def on_epoch_begin(self, epoch, logs=None):
        self._flush()
        rate = None if self.done else self.config.learning_rate_at(
            self.generation, self._epochs_done)
        if rate is None:
            return
        try:
            self.model.optimizer.learning_rate = rate
        except (TypeError, ValueError, AttributeError) as error:
            raise ValueError(
                "EvolutionCallback: cannot set the optimizer's learning rate "
                f"({error}); compile with a plain rate (not a LearningRateSchedule) "
                "to use learning_rate=."
            ) from None

    def on_train_end(self, logs=None):
        self._flush()

    def on_train_batch_end(self, batch, logs=None):
        # A `val_<name>` monitor needs the compiled metric `<name>`, which the
        # batch logs already show: fail after one batch, not one generation.
        # (Other names may be added to the epoch logs by other callbacks.)
        if self._monitor_checked or self.done or not logs:
            return
        self._monitor_checked = True
        base = self.monitor[4:]
        if self.monitor.startswith("val_") and base not in logs:
            raise ValueError(
                f"EvolutionCallback: monitor {self.monitor!r} needs the metric "
                f"{base!r}, but the model logs {sorted(logs)}. Compile the model "
                "with that metric or choose another monitor."
            )
        self._check_mode()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            logs = {}
        if self.done:
            logs.update(self._lineage_logs())
            return
        self._check_mode()
        self._epochs_done += 1
        wanted = self.ancestor_epochs if self.generation == 0 else self.epochs_per_generation
        first = not self._monitor_seen
        if (first or self._epochs_done >= wanted) and self.monitor not in logs:
            raise ValueError(
                f"EvolutionCallback: monitor {self.monitor!r} is not in the epoch "
                f"logs {sorted(logs)}; pass validation_data to fit for 'val_*' "
                "metrics or choose another monitor."
            )
        self._monitor_seen = True
        if self.monitor in logs:
            self._values.append(float(logs[self.monitor]))
        if self._epochs_done < wanted:
            logs.update(self._lineage_logs())
            return
        values = self._values[-self.fitness_epochs:]
        self._complete(dict(logs), float(np.mean(values)) if len(values) > 1 else values[0])
        logs.update(self._lineage_logs(self.records[-1]))

    def _lineage_logs(self, record=None):
        """The epoch logs' lineage numbers (see the class docstring): those of
        `record`, or measured on the model now."""
        if record is None:
            stats = summary(self._net, print_fn=None)
            generation = (
                [r for r in self.records if r["accepted"]][-1]["generation"]
                if self.done
                else self.generation
            )
            record = {"generation": generation, "synapses": stats.synapses, "macs": stats.macs}
            if self.latency_table is not None:
                record["latency"] = self.latency_table.predict(self._net)
        return epoch_logs(record)

    # ----------------------------------------------------------------- mode
    def _decide_mode(self, mode):
        """Sets the direction in use (`mode` None: not yet known) and keeps
        it in the lineage's settings (`Lineage.record_mode`)."""
        if mode is not None:
            self.mode = self.selection.mode = mode
            if self.lineage is not None and self._started:
                self.lineage.record_mode(mode)

    def _check_mode(self):
        """Decides an "auto" mode now that the compiled metrics exist, or
        fails as Keras's callbacks do when the model does not say."""
        if self.mode != "auto":
            return
        self._decide_mode(auto_mode(self.model, self.monitor))
        if self.mode == "auto":
            raise ValueError(
                f"EvolutionCallback: mode='auto' cannot tell whether monitor "
                f"{self.monitor!r} is better high or low: as in Keras's callbacks, "
                "'auto' minimizes the loss and follows the direction of a compiled "
                f"metric named {self.monitor.removeprefix('val_')!r}, and the model "
                "has none with a direction. Pass mode='max' or mode='min'."
            )

    # ---------------------------------------------------------------- state
    @property
    def _net(self):
        """The model being evolved: the fitted model, or a `ParentDistiller`'s student."""
        return trials.evolved_net(self.model)

    def _keep_parent(self):
        """Remembers the current model as the parent (and, under a
        `ParentDistiller`, makes it the teacher)."""
        self._parent = trials.snapshot(self.model)
        if isinstance(self.model, ParentDistiller):
            self.model.load_teacher(self._net)

    def _start(self):
        genomes, _ = genetics.genomes_from_model(self._net, self.precision, self.protect)
        if self.environment.resource == "macs" or (
            isinstance(self.stop_when, dict) and "macs" in self.stop_when
        ):
            genetics.amount(genomes, "macs")  # raises for unknown sizes
        if self.latency_table is not None:
            self.latency_table.predict(self._net)  # raises for unmeasured layers
        trials.mark_traced(self.model)
        self._epochs_done = 0
        self._values = []
        self._started = True
        self._monitor_seen = False
        self._clock = time.perf_counter()
        self._factors = None
        self._candidate = 0
        self.attempt = 0
        if isinstance(self.model, ParentDistiller):  # generation 0 distils from the ancestor
            self.model.load_teacher(self._net)
        if self.lineage is not None:
            settings = self._lineage_config()
            if settings["mode"] != self.config.mode:  # "auto", stored decided
                self._decide_mode(settings["mode"])
            records = self.lineage.open(settings)
            if self.config.mode == "auto" and self.mode != "auto":  # decided already
                self.lineage.record_mode(self.mode)
            if any(r.get("accepted") for r in records):
                self._resume(records)

    def _say(self, text):
        """Queues a progress line; it is printed at the next epoch begin (or
        train end), after Keras's progress bar has finished its line."""
        if self.verbose:
            self._pending.append(text)

    def _flush(self):
        for text in self._pending:
            print(text, flush=True)
        self._pending = []

    def _stop_reached(self, record):
        return self.selection.stop_reached(record, self.records[0] if self.records else record)

    # ----------------------------------------------------------- lifecycle
    def _record(self, logs, fitness, accepted):
        return generation_record(
            self._net,
            generation=self.generation,
            attempt=self.attempt,
            candidate=self._candidate,
            accepted=accepted,
            seed=self.seed,
            monitor=self.monitor,
            fitness=fitness,
            logs=logs,
            started=self._clock,
            protect=self.protect,
            latency_table=self.latency_table,
            factors=self._factors,
            ancestor=self.records[0] if self.records else None,
        )

    def _complete(self, logs, fitness):
        self._epochs_done = 0
        values, self._values = self._values, []
        accepted = self.generation == 0 or self.selection.accepts(
            fitness, self.records[0]["fitness"]
        )
        record = self._record(logs, fitness, accepted)
        if self.fitness_epochs > 1:
            record["fitness_values"] = values
        if accepted and self.lineage is not None:
            record["checkpoint"] = self.lineage.save_model(self._net, self.generation)
        self.records.append(record)
        if self.lineage is not None:
            self.lineage.append(record)
        self._say(progress_line(record, self.records[0], self.generations))
        if accepted:
            self._keep_parent()
            if self.generation >= self.generations or self._stop_reached(record):
                return self._finish()
            self.generation += 1
            self.attempt = 0
        else:
            trials.restore(self.model, self._parent)
            self.attempt += 1
            if self.selection.exhausted(self.attempt):
                trials.retrace(self.model)
                return self._finish(rolled_back=True)
        self._synthesize()

    def _finish(self, rolled_back=False):
        self.done = True
        self.model.stop_training = True
        final = [r for r in self.records if r["accepted"]][-1]
        why = (
            f"generation {self.generation} failed {self.attempt} times; kept its parent"
            if rolled_back
            else "done"
        )
        self._say(
            f"EvolutionCallback: lineage complete ({why}): generation "
            f"{final['generation']}, {final['synapses']:,} synapses "
            f"({final.get('synaptic_efficiency', 1.0):.2f}x fewer than the ancestor)."
        )

    def _resume(self, records):
        accepted = [r for r in records if r["accepted"]]
        last = accepted[-1]
        self.lineage.load_model(last, into=self._net)
        trials.retrace(self.model)
        self.records = list(records)
        self._keep_parent()
        self.generation = last["generation"]
        failures = sum(
            1 for r in records if r["generation"] == last["generation"] + 1 and not r["accepted"]
        )
        self._say(
            f"EvolutionCallback: resuming the lineage in {self.lineage.directory} "
            f"after generation {last['generation']}."
        )
        if self.generation >= self.generations or self._stop_reached(last):
            self.done = True
        elif self.selection.exhausted(failures):
            self.generation, self.attempt = last["generation"] + 1, failures
            self.done = True
        else:
            self.generation, self.attempt = last["generation"] + 1, failures
            self._synthesize()

    # ----------------------------------------------------------- synthesis
    def _synthesize(self):
        """Turns the model (holding the parent) into the next offspring."""
        self._clock = time.perf_counter()
        self._factors, self._candidate = synthesize(
            self.model, self.config, self.records, self.generation, self.attempt, self.mode,
            self.selection)
