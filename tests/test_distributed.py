"""Population trials on a local Ray cluster of 2 CPU workers: the same
lineage as the sequential run, worker faults, driver resume, errors."""

import functools
import os
import sys
import types

import keras
import numpy as np
import pytest
import ray
import tensorflow as tf
from test_callbacks import cnn, fit, quick, stable

from keras_evosynth import distributed
from keras_evosynth.callbacks import EvolutionCallback
from keras_evosynth.distributed import RayExecutor

GENERATIONS, POPULATION = 2, 3
EPOCHS = 1 + GENERATIONS  # one epoch per generation, ancestor included
# Workers use this process's thread count: sums split by thread count differ
# in the last bit, and int4 rounding can turn that into another weight.
THREADS = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()


@pytest.fixture(scope="module")
def executor(cluster):
    """One executor (2 workers) for the module: workers start once."""
    with RayExecutor(threads=THREADS, max_retries=2) as shared:
        yield shared


@pytest.fixture(scope="module", autouse=True)
def cluster():
    # test functions shipped to the workers travel by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # a registered class from a module no worker can import (another test
    # module's, a notebook's): the model does not use it, so it must not travel
    module = types.ModuleType("not_on_the_workers")
    module.Elsewhere = type("Elsewhere", (keras.layers.Layer,), {"__module__": module.__name__})
    sys.modules[module.__name__] = module  # so pickled by reference
    keras.saving.register_keras_serializable("test_distributed")(module.Elsewhere)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    del sys.modules[module.__name__]


def settings(digits, trial_data=None, **kw):
    xt, yt, xv, yv = digits
    return quick(
        generations=GENERATIONS,
        population=POPULATION,
        selection_data=(xv[:200], yv[:200]),
        trial_data=(xt[:256], yt[:256]) if trial_data is None else trial_data,
        trial_steps=2,
        **kw,
    )


def evolve(digits, epochs=EPOCHS, model=None, **kw):
    evolution = EvolutionCallback(**settings(digits, **kw))
    fit(cnn() if model is None else model, digits, [evolution], epochs=epochs)
    return evolution


@pytest.fixture(scope="module")
def sequential(digits):
    return evolve(digits).records


def assert_same_lineage(records, expected):
    assert len(records) == len(expected) == 1 + GENERATIONS
    for got, want in zip(stable(records), stable(expected), strict=True):
        fitness, want_fitness = got.pop("fitness"), want.pop("fitness")
        assert fitness == pytest.approx(want_fitness, abs=1e-4)
        for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
            got.pop(key, None), want.pop(key, None)
        assert got == want  # candidates, masks' counts, factors, precisions


def test_ray_lineage_equals_the_sequential_one(digits, sequential, executor):
    evolution = evolve(digits, executor=executor)
    assert len(executor._workers) == 2  # the cluster holds 2 of 3 candidates
    assert_same_lineage(evolution.records, sequential)
    assert {r["candidate"] for r in evolution.records[1:]} <= set(range(POPULATION))


def _fewest_synapses(network):
    """A trial score that prefers the candidate with the fewest synapses."""
    return -sum(float(np.sum(layer.get_masks()[0])) for layer in distributed.evo_layers(network))


def test_trial_score_runs_on_the_workers(digits, executor):
    runs = [evolve(digits, executor=where, trial_score=_fewest_synapses).records
            for where in (None, executor)]
    assert_same_lineage(runs[1], runs[0])


def _data_once_killing(marker, x, y):
    """Trial data that kill the worker the first time they are built."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return x, y


def test_killed_worker_is_retried_with_the_same_lineage(digits, sequential, executor,
                                                        tmp_path):
    xt, yt = digits[0][:256], digits[1][:256]
    trial_data = functools.partial(_data_once_killing, str(tmp_path / "killed"), xt, yt)
    evolution = evolve(digits, executor=executor, trial_data=trial_data)
    assert os.path.exists(tmp_path / "killed")
    assert_same_lineage(evolution.records, sequential)


def _failing_data():
    raise OSError("cannot read trial shard 3")


def test_worker_error_names_the_candidate(digits, executor):
    # errors raised by a trial are not retried (only dead workers are)
    with pytest.raises(RuntimeError, match=r"candidate 0 of generation 1 .*trial shard 3"):
        evolve(digits, executor=executor, trial_data=_failing_data)


def test_driver_killed_mid_lineage_resumes(digits, sequential, executor, tmp_path):
    first = evolve(digits, epochs=2, executor=executor, directory=tmp_path)
    assert not first.done  # the driver stopped during generation 2
    model = cnn(seed=5)  # a fresh process: other weights until resumed
    second = evolve(digits, epochs=EPOCHS - 1, model=model, executor=executor,
                    directory=tmp_path)
    assert second.done
    assert_same_lineage(second.records, sequential)


def test_bad_executor_arguments():
    with pytest.raises(ValueError, match="population > 1"):
        EvolutionCallback(generations=1, executor=RayExecutor())
    with pytest.raises(TypeError, match="executor must be"):
        EvolutionCallback(generations=1, population=2, selection_data=(np.ones(1),),
                          executor="ray")
    with pytest.raises(ValueError, match="resources_per_candidate"):
        RayExecutor(resources_per_candidate={"CPU": -1})
    with pytest.raises(ValueError, match="num_workers"):
        RayExecutor(num_workers=0)
    with pytest.raises(ValueError, match="threads"):
        RayExecutor(threads=0)
    with pytest.raises(TypeError, match="trial_data must be"):
        RayExecutor()._put([np.ones(1)], "trial_data")


def test_without_ray_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"keras-evosynth\[distributed\]"):
        RayExecutor()


def test_trial_seeds_differ_per_candidate_and_are_stable():
    seeds = {distributed.trial_seed(0, 1, 0, c) for c in range(4)}
    assert len(seeds) == 4 and all(0 <= s < 2**31 for s in seeds)
    assert distributed.trial_seed(3, 2, 1, 0) == distributed.trial_seed(3, 2, 1, 0)
