"""Population trials on Ray workers: `RayExecutor`.

With `EvolutionCallback(population=K, executor=RayExecutor())` the
candidates of a generation are trained and scored side by side on Ray
actors, across machines, with the same lineage as the default
`keras_evosynth.trials.LocalExecutor` (a trial is a pure function of the
parent, the candidate's masks and its seeds: `trials.run_trial`). Only this
boundary turns precisions into bit-widths and models into `.keras` bytes.

Ray is optional: `pip install keras-evosynth[distributed]`.
"""

import itertools
import json
import os
import tempfile
import zipfile

import keras
from keras import ops

from keras_evosynth import quantizers
from keras_evosynth.distill import ParentDistiller
from keras_evosynth.trials import evo_layers, evolved_net, run_trial, trial_seed

__all__ = ["RayExecutor", "run_trial", "trial_seed"]


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
        bits = spec["precision"]
        spec = dict(spec, trial_data=trial_data, selection_data=selection_data,
                    trial_score=trial_score,
                    precision=None if bits is None else quantizers.get(bits))
        if key != self.key:
            with tempfile.TemporaryDirectory() as directory:
                path = os.path.join(directory, "model.keras")
                with open(path, "wb") as file:
                    file.write(model_bytes)
                self.model = keras.saving.load_model(path, custom_objects=custom_objects)
            self.key = key
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
        fitness = run_trial(self.model, layers, masks, spec, seeds)
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
        candidate i's trained `(weights, precision bits)` (a snapshot
        `trials.restore` writes back)."""
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
        precision = spec["precision"]
        shipped = dict(spec, trial_data=None, selection_data=None, trial_score=None,
                       precision=None if precision is None else precision.bits)
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
