"""Population trials side by side: one candidate's trial, wherever it runs.

With `EvolutionCallback(population=K)` every candidate of a generation is
trained briefly on `trial_data` and scored on `selection_data`. A trial is a
pure function of the parent (weights and precisions), the candidate's masks
and its seeds (`run_trial`), so it gives the same fitness in the fitting
process (`executor=None`, one candidate after another) and on a Ray worker
(`RayExecutor`, candidates side by side, across machines).

Every trial starts from `keras.utils.set_random_seed(trial_seed(...))`, and
the generation's retraining after the population from another seed of the
same lineage: shuffling and other draws of the global generators are the
same whoever ran the trials. (A layer's own `SeedGenerator` state, e.g.
`Dropout`'s, is not part of the weights shipped back, so with dropout the
trials agree but the following retraining may not, bit for bit.)

Ray is optional: `pip install keras-evosynth[distributed]`.
"""

import itertools
import json
import os
import tempfile
import zipfile

import keras
import numpy as np
from keras import ops

from keras_evosynth import genetics, quantizers
from keras_evosynth.distill import ParentDistiller
from keras_evosynth.layers import EvoLayer

__all__ = ["RayExecutor", "run_trial", "trial_seed"]


def trial_seed(seed, generation, attempt, candidate):
    """The global seed a candidate's trial starts from (an int < 2**31).

    `candidate == population` seeds the retraining after the trials.

    >>> trial_seed(0, 1, 0, 2) == trial_seed(0, 1, 0, 2) != trial_seed(0, 1, 0, 3)
    True
    """
    keys = [int(seed), int(generation), int(attempt), int(candidate), 0x7472]
    return int(np.random.SeedSequence(keys).generate_state(1)[0] >> 1)


def data_for(data):
    """`(x, y[, sample_weight])` or a dataset as fit/evaluate keywords; a
    zero-argument callable (a dataset spec, e.g. a function building a
    `tf.data` pipeline from files) is called first, here."""
    if callable(data):
        data = data()
    if isinstance(data, tuple) and 1 <= len(data) <= 3:
        return dict(zip(("x", "y", "sample_weight"), data, strict=False))
    return {"x": data}


def evolved_net(model):
    """The network being evolved: the fitted model, or a `ParentDistiller`'s student."""
    return model.student if isinstance(model, ParentDistiller) else model


def evo_layers(model):
    from keras_evosynth.conversion import _walk

    return [layer for layer in _walk(evolved_net(model)) if isinstance(layer, EvoLayer)]


def retrace(model, traced):
    """Re-traces the compiled functions if the Evo layers' precisions are
    not `traced`; returns the precisions now."""
    now = [layer.precision for layer in evo_layers(model)]
    if now != traced:
        model.make_train_function(force=True)
        model.test_function = None
        model.predict_function = None
    return now


def apply_candidate(model, layers, masks, precision, reinitialize, traced):
    """Makes `model` (holding the parent) the candidate: writes the masks and
    `precision`, re-initializes with the seed `reinitialize` (None: inherit),
    re-traces if a precision changed and resets the optimizer. Returns the
    precisions traced now."""
    from keras_evosynth.callbacks import reinitialize_weights, reset_optimizer

    genetics.apply_masks(layers, masks, precision)
    if reinitialize is not None:
        reinitialize_weights(evolved_net(model), reinitialize)
    traced = retrace(model, traced)
    reset_optimizer(model)
    return traced


def run_trial(model, layers, masks, spec, seeds, traced):
    """One candidate's trial on `model` (holding the parent): writes the
    masks, re-initializes if asked, re-traces if a precision changed, resets
    the optimizer, trains briefly from the trial seed and scores.

    Returns `(fitness, precisions traced now)`.

    Args:
        model: The compiled model being fit (a `ParentDistiller` or the network).
        layers: Its Evo layers, in the order of `masks`.
        masks: The candidate's `(synapse_mask, cluster_mask)` per layer.
        spec: Dict with `precision`, `trial_data`, `selection_data`,
            `trial_steps`, `monitor`, `trial_score` and `layers` (the names
            of `layers`).
        seeds: `(trial_seed, reinitialize_seed or None)`.
        traced: The precisions the compiled functions were traced with.
    """
    seed, reinitialize = seeds
    traced = apply_candidate(model, layers, masks, spec["precision"], reinitialize, traced)
    keras.utils.set_random_seed(seed)
    if spec["trial_data"] is not None:
        model.fit(
            **data_for(spec["trial_data"]),
            epochs=1,
            steps_per_epoch=spec["trial_steps"],
            verbose=0,
        )
    if spec.get("trial_score") is not None:
        return float(spec["trial_score"](evolved_net(model))), traced
    scores = model.evaluate(
        **data_for(spec["selection_data"]), verbose=0, return_dict=True
    )
    monitor = spec["monitor"]
    name = monitor[4:] if monitor.startswith("val_") else monitor
    if name not in scores:
        raise ValueError(
            f"EvolutionCallback: selection_data scores {sorted(scores)} lack "
            f"{name!r} (from monitor {monitor!r})."
        )
    return float(scores[name]), traced


def _ray():
    try:
        import ray
    except ImportError as error:
        raise ImportError(
            "RayExecutor needs Ray: pip install 'keras-evosynth[distributed]' "
            "(or pip install ray)."
        ) from error
    return ray


class _Trainer:
    """A Ray actor holding one copy of the model; it runs trials.

    The model is rebuilt once from the driver's `.keras` bytes; every
    generation only the parent's weights and precisions travel, and the
    compiled functions are re-traced only when a precision changes.
    """

    def __init__(self, threads):
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        self.key = None

    def trial(self, key, model_bytes, custom_objects, parent, spec, trial_data,
              selection_data, trial_score, masks, seeds):
        spec = dict(spec, trial_data=trial_data, selection_data=selection_data,
                    trial_score=trial_score)
        if key != self.key:
            with tempfile.TemporaryDirectory() as directory:
                path = os.path.join(directory, "model.keras")
                with open(path, "wb") as file:
                    file.write(model_bytes)
                self.model = keras.saving.load_model(path, custom_objects=custom_objects)
            self.key, self.traced = key, None
        weights, precisions, learning_rate = parent
        net = evolved_net(self.model)
        net.set_weights(weights)
        walked = evo_layers(self.model)
        for layer, precision in zip(walked, precisions, strict=True):
            layer.precision = quantizers.get(precision)
        by_name = {layer.name: layer for layer in walked}
        layers = [by_name[name] for name in spec["layers"]]  # the order of the masks
        if isinstance(self.model, ParentDistiller):
            self.model.load_teacher(net)
        if learning_rate is not None:
            self.model.optimizer.learning_rate = learning_rate
        fitness, self.traced = run_trial(self.model, layers, masks, spec, seeds, self.traced)
        return fitness, (net.get_weights(), [layer.precision.bits for layer in walked])


def _custom_objects(config):
    """The registered custom objects a saved model's config names (only
    those: the registry may hold classes from modules workers cannot import)."""
    names, stack = set(), [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("registered_name"), str):
                names.add(item["registered_name"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    registry = keras.saving.get_custom_objects()
    return {name: registry[name] for name in sorted(names) if name in registry}


def _learning_rate(model):
    rate = getattr(model.optimizer, "learning_rate", None)
    try:
        return float(ops.convert_to_numpy(rate))
    except (TypeError, ValueError):
        return None  # a schedule: restarted by reset_optimizer


class RayExecutor:
    """Runs a generation's candidate trials as Ray actor tasks.

    Pass it as `EvolutionCallback(population=K, executor=RayExecutor())`.
    The driver still samples every candidate's masks from the seeded genome;
    each worker (a Ray actor with `resources_per_candidate`) rebuilds the
    model once from its `.keras` bytes and then, per candidate, receives the
    parent's weights (put once per generation into the object store) and
    the masks, trains on `trial_data`, scores on `selection_data` and
    returns the fitness; only the winner's trained weights come back. The
    lineage equals the sequential one for the same seed.

    Data reach the workers once: `(x, y)` arrays go into Ray's object store
    (read zero-copy by workers on the same node); a zero-argument callable
    (e.g. a function building a `tf.data` pipeline from files) is shipped
    instead and called on each worker. A `tf.data.Dataset` object cannot
    travel: wrap its construction in a function.

    A worker that dies mid-trial is restarted and the trial retried
    (`max_retries`); an error raised in a trial is re-raised with its
    candidate and generation. Custom objects (layers, losses, metrics)
    must be registered (`keras.saving.register_keras_serializable`) in
    modules the workers can import; on a multi-host cluster ship the code
    with `init_kwargs={"runtime_env": {"working_dir": "."}}`.

    Args:
        address: Ray cluster address (`"auto"`: the running cluster); None
            connects to `RAY_ADDRESS` or starts a local one. Ignored when Ray
            is already initialized.
        resources_per_candidate: Ray resources of one worker, e.g.
            `{"CPU": 1}` (default) or `{"GPU": 1}`; a worker uses as many
            TensorFlow threads as it has CPUs.
        num_workers: Workers to start; None: as many as candidates that the
            cluster's resources hold at once.
        threads: TensorFlow threads of a worker; None: its CPUs (at least 1).
            Results are bit-identical to the sequential run when the driver
            uses as many threads (reductions are split by thread count, and
            a low precision can round a last-bit difference apart).
        max_retries: Restarts of a dead worker and retries of its trial.
        init_kwargs: Further `ray.init` arguments (`num_cpus`,
            `runtime_env`, ...).

    Raises:
        ImportError: Ray is not installed (names the extra).

    Example (not run here: it starts Ray):

    >>> executor = RayExecutor(init_kwargs={"num_cpus": 2})  # doctest: +SKIP
    >>> evolution = EvolutionCallback(generations=3, population=4,
    ...     selection_data=(x_val, y_val), trial_data=(x, y),
    ...     executor=executor)  # doctest: +SKIP
    """

    def __init__(self, address=None, resources_per_candidate=None, num_workers=None,
                 threads=None, max_retries=3, init_kwargs=None):
        self._ray = _ray()
        resources = {"CPU": 1} if resources_per_candidate is None else dict(resources_per_candidate)
        if not resources or any(
            not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0
            for v in resources.values()
        ):
            raise ValueError(
                "RayExecutor: resources_per_candidate must map resource names to amounts "
                f">= 0, e.g. {{'CPU': 1}} or {{'GPU': 1}}; got {resources_per_candidate!r}."
            )
        if num_workers is not None and (isinstance(num_workers, bool)
                                        or not isinstance(num_workers, int) or num_workers < 1):
            raise ValueError(f"RayExecutor: num_workers must be an int >= 1, got {num_workers!r}.")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise ValueError(f"RayExecutor: threads must be an int >= 1, got {threads!r}.")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"RayExecutor: max_retries must be an int >= 0, got {max_retries!r}.")
        self.address, self.resources = address, resources
        self.num_workers, self.max_retries = num_workers, max_retries
        self.threads = threads or max(1, int(resources.get("CPU", 1)))
        self.init_kwargs = dict(init_kwargs or {})
        self._workers, self._data = [], {}
        self._shipped, self._payload = None, None  # the model saved last, its payload
        self._serials = itertools.count()

    def _start(self, population):
        ray = self._ray
        if not ray.is_initialized():
            ray.init(address=self.address, **{"include_dashboard": False, **self.init_kwargs})
        if self._workers:
            return
        total = ray.cluster_resources()
        fits = min(int(total.get(k, 0) // v) for k, v in self.resources.items() if v > 0) \
            if any(v > 0 for v in self.resources.values()) else population
        if fits < 1:
            raise ValueError(
                f"RayExecutor: the Ray cluster ({total}) cannot hold one worker with "
                f"resources_per_candidate={self.resources}."
            )
        count = self.num_workers or min(population, fits)
        others = {k: v for k, v in self.resources.items() if k not in ("CPU", "GPU")}
        actor = ray.remote(_Trainer).options(
            num_cpus=self.resources.get("CPU", 0),
            num_gpus=self.resources.get("GPU", 0),
            resources=others or None,
            max_restarts=self.max_retries,
            max_task_retries=self.max_retries,
            # the driver's TensorFlow log level, so that workers are as quiet
            runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL":
                                      os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")}},
        )
        self._workers = [actor.remote(self.threads) for _ in range(count)]

    def _put(self, value, where):
        """Puts `value` (`(x, y)` arrays or a function) into the object store
        once per run: workers on a node read arrays zero-copy, and a
        function's bound arguments travel once, not with every candidate."""
        if value is None:
            return None
        if not (isinstance(value, tuple) or callable(value)):
            raise TypeError(
                f"RayExecutor: {where} must be (x, y) arrays or a zero-argument function "
                f"returning a dataset (built on the worker); got {type(value).__name__}."
            )
        key = (where, id(value))
        if key not in self._data:
            self._data[key] = (value, self._ray.put(value))  # keeps `value` alive: stable id
        return self._data[key][1]

    def _model_ref(self, model):
        """`(serial, object ref of the .keras bytes, custom objects)` of the
        model, saved once per model."""
        if self._shipped is not model:
            with tempfile.TemporaryDirectory() as directory:
                path = os.path.join(directory, "model.keras")
                model.save(path)
                with open(path, "rb") as file:
                    blob = file.read()
                with zipfile.ZipFile(path) as archive:
                    config = json.loads(archive.read("config.json"))
            self._shipped = model
            self._payload = (next(self._serials), self._ray.put(blob), _custom_objects(config))
        return self._payload

    def run(self, model, spec, candidates, where):
        """Runs `candidates` (a list of `(masks, seeds)`) for `model` (holding
        the parent); returns `(fitnesses, fetch)` where `fetch(i)` gives
        candidate i's trained `(weights, precision bits)`."""
        ray = self._ray
        self._start(len(candidates))
        parent = ray.put((
            evolved_net(model).get_weights(),
            [layer.precision.bits for layer in evo_layers(model)],
            _learning_rate(model),
        ))
        # object refs as arguments of their own, so that Ray resolves them
        shared = [self._put(spec[name], name)
                  for name in ("trial_data", "selection_data", "trial_score")]
        shipped = dict(spec, trial_data=None, selection_data=None, trial_score=None)
        key, model_ref, custom = self._model_ref(model)
        refs = []
        for index, (masks, seeds) in enumerate(candidates):
            worker = self._workers[index % len(self._workers)]
            refs.append(worker.trial.options(num_returns=2).remote(
                key, model_ref, custom, parent, shipped, *shared, masks, seeds))

        def get(index, part):
            try:
                return ray.get(refs[index][part])
            except ray.exceptions.RayError as error:
                cause = getattr(error, "cause", None) or error
                raise RuntimeError(
                    f"EvolutionCallback: candidate {index} of {where} failed on a Ray "
                    f"worker: {type(cause).__name__}: {cause}"
                ) from error

        fitnesses = [get(index, 0) for index in range(len(candidates))]
        return fitnesses, lambda index: get(index, 1)

    def close(self):
        """Stops the workers (Ray itself stays up)."""
        for worker in self._workers:
            self._ray.kill(worker)
        self._workers, self._data = [], {}
        self._shipped, self._payload = None, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
