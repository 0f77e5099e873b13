"""One candidate's trial, and the executors that run a generation's trials.

With `EvolutionCallback(population=K)` every candidate of a generation is
trained briefly on `trial_data` and scored on `selection_data`. A trial is a
pure function of the parent (weights and precisions), the candidate's masks
and its seeds (`run_trial`), so it gives the same fitness wherever it runs:
in the fitting process (`LocalExecutor`, the default: one candidate after
another) or on Ray workers (`keras_evosynth.distributed.RayExecutor`:
candidates side by side, across machines). Both executors have one method,
`run(model, spec, candidates, where) -> (fitnesses, fetch)`.

Every trial starts from `keras.utils.set_random_seed(trial_seed(...))`, and
the generation's retraining after the population from another seed of the
same lineage: shuffling and other draws of the global generators are the
same whoever ran the trials. (A layer's own `SeedGenerator` state, e.g.
`Dropout`'s, is not part of the weights shipped back, so with dropout the
trials agree but the following retraining may not, bit for bit.)

The model-state utilities the callback and the executors share live here
too: `reset_optimizer` (a fresh optimizer state for an offspring) and
`reinitialize_weights` (the paper's "newborn" variant).
"""

import weakref

import keras
import numpy as np

from keras_evosynth import conversion, genetics, quantizers
from keras_evosynth.conversion import _walk
from keras_evosynth.distill import ParentDistiller
from keras_evosynth.layers import EvoLayer
from keras_evosynth.selection import Selection

__all__ = ["LocalExecutor", "reinitialize_weights", "reset_optimizer", "run_trial",
           "trial_seed"]


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
    """The Evo layers of the network being evolved, in graph order."""
    return conversion.evo_layers(evolved_net(model))


# The Evo layers' precisions each compiled model's functions were traced
# with, known to the callback and the executors alike.
_TRACED = weakref.WeakKeyDictionary()


def mark_traced(model):
    """Records that `model`'s compiled functions match its Evo layers'
    precisions now (a model that has not been fit, or has just been)."""
    _TRACED[model] = [layer.precision for layer in evo_layers(model)]


def retrace(model):
    """Re-traces `model`'s compiled functions if its Evo layers' precisions
    changed since they were traced (a precision is a Python constant of the
    traced graph); a model never marked is re-traced once."""
    now = [layer.precision for layer in evo_layers(model)]
    if _TRACED.get(model) != now:
        model.make_train_function(force=True)
        model.test_function = None
        model.predict_function = None
        _TRACED[model] = now


def reset_optimizer(model):
    """Resets the optimizer state (slots, step counter) as if it were new.

    A fresh optimizer is built from the current one's config on the model's
    trainable variables and its variables are copied over, so the compiled
    train function keeps working (no re-compile). The learning rate stays
    what it is now; a schedule restarts from step 0.

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile("adam", "mse")
    >>> _ = model.fit(np.ones((4, 2)), np.ones((4, 1)), verbose=0)
    >>> reset_optimizer(model)
    >>> int(model.optimizer.iterations)
    0
    """
    optimizer = model.optimizer
    if optimizer is None or not optimizer.built:
        return
    fresh = type(optimizer).from_config(optimizer.get_config())
    fresh.build(model.trainable_variables)
    old, new = optimizer.variables, fresh.variables
    same_order = len(old) == len(new) and all(
        tuple(a.shape) == tuple(b.shape) for a, b in zip(old, new, strict=True)
    )
    if not same_order:  # e.g. a schedule instead of a learning-rate variable
        by_path = {v.path.split("/", 1)[-1]: v for v in new}
        new = [by_path.get(v.path.split("/", 1)[-1]) for v in old]
    for variable, value in zip(old, new, strict=True):
        if value is not None and tuple(value.shape) == tuple(variable.shape):
            variable.assign(value)


def reinitialize_weights(model, seed):
    """Re-initializes every weight that has a matching `<name>_initializer`
    on its layer (kernels, biases, BatchNorm statistics, ...), seeded, keeping
    the masks: the literal "trained like a newborn" variant.

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> before = model.get_weights()[0]
    >>> reinitialize_weights(model, seed=1)
    >>> bool((model.get_weights()[0] != before).any())
    True
    """
    rng = np.random.default_rng(seed)
    for layer in _walk(model):
        for variable in layer.weights:
            name = variable.path.rsplit("/", 1)[-1]
            initializer = getattr(layer, f"{name}_initializer", None)
            if not isinstance(initializer, keras.initializers.Initializer):
                continue
            config = initializer.get_config()
            if "seed" in config:
                config["seed"] = int(rng.integers(2**31 - 1))
            fresh = type(initializer).from_config(config)
            variable.assign(fresh(tuple(variable.shape), dtype=variable.dtype))
        if isinstance(layer, EvoLayer):
            synapses, clusters = layer.get_masks()
            layer.set_masks(synapse_mask=synapses, cluster_mask=clusters)


def apply_candidate(model, layers, masks, precision, reinitialize):
    """Makes `model` (holding the parent) the candidate: writes the masks and
    `precision` (a `SynapticPrecision` or None), re-initializes with the seed
    `reinitialize` (None: inherit), re-traces if a precision changed and
    resets the optimizer."""
    genetics.apply_masks(layers, masks, precision)
    if reinitialize is not None:
        reinitialize_weights(evolved_net(model), reinitialize)
    retrace(model)
    reset_optimizer(model)


def run_trial(model, layers, masks, spec, seeds):
    """One candidate's trial on `model` (holding the parent): writes the
    masks, re-initializes if asked, re-traces if a precision changed, resets
    the optimizer, trains briefly from the trial seed and scores.

    Returns the fitness (a float).

    Args:
        model: The compiled model being fit (a `ParentDistiller` or the network).
        layers: Its Evo layers, in the order of `masks`.
        masks: The candidate's `(synapse_mask, cluster_mask)` per layer.
        spec: Dict with `precision` (a `SynapticPrecision` or None),
            `trial_data`, `selection_data`, `trial_steps`, `monitor`, `mode`,
            `trial_score` and `layers` (the names of `layers`).
        seeds: `(trial_seed, reinitialize_seed or None)`.
    """
    seed, reinitialize = seeds
    apply_candidate(model, layers, masks, spec["precision"], reinitialize)
    keras.utils.set_random_seed(seed)
    if spec["trial_data"] is not None:
        model.fit(
            **data_for(spec["trial_data"]),
            epochs=1,
            steps_per_epoch=spec["trial_steps"],
            verbose=0,
        )
    if spec.get("trial_score") is not None:
        return float(spec["trial_score"](evolved_net(model)))
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
    return float(scores[name])


def snapshot(model):
    """The network's `(weights, precisions)`: what a trial changes."""
    return evolved_net(model).get_weights(), [layer.precision for layer in evo_layers(model)]


def restore(model, state):
    """Writes a `snapshot` back into the network."""
    weights, precisions = state
    evolved_net(model).set_weights(weights)
    for layer, precision in zip(evo_layers(model), precisions, strict=True):
        layer.precision = quantizers.get(precision)


class LocalExecutor:
    """Runs a generation's candidate trials one after another in the fitting
    process: the default executor of `EvolutionCallback(population=K)`.

    It keeps only the fittest candidate's trained weights (one copy of the
    network, whatever K is). `keras_evosynth.distributed.RayExecutor` has the
    same interface and gives the same lineage.

    Example:

    >>> import keras, numpy as np
    >>> from keras_evosynth import EvolutionCallback, evolvable
    >>> model = evolvable(keras.Sequential([keras.Input((4,)),
    ...     keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)]))
    >>> model.compile("sgd", "mse")
    >>> x, y = np.random.rand(32, 4), np.random.rand(32, 1)
    >>> evolution = EvolutionCallback(generations=1, population=2, monitor="loss",
    ...     selection_data=(x, y), executor=LocalExecutor(), verbose=0)
    >>> _ = model.fit(x, y, epochs=4, verbose=0, callbacks=[evolution])
    >>> evolution.records[-1]["candidate"] in (0, 1)
    True
    """

    def run(self, model, spec, candidates, where):
        """Runs `candidates` (a list of `(masks, seeds)`) for `model` (holding
        the parent); returns `(fitnesses, fetch)` where `fetch(i)` gives the
        fittest candidate's trained `snapshot` (only that one is kept). The
        model is left holding the last candidate: the caller restores the
        one it keeps. (`where` names the generation in errors.)"""
        parent = snapshot(model)
        by_name = {layer.name: layer for layer in evo_layers(model)}
        layers = [by_name[name] for name in spec["layers"]]
        selection, fitnesses, kept = Selection(spec["mode"]), [], {}
        for index, (masks, seeds) in enumerate(candidates):
            if index:  # the model holds the parent for the first
                restore(model, parent)
            fitnesses.append(run_trial(model, layers, masks, spec, seeds))
            if selection.fittest(fitnesses) == index:  # only the best's weights are kept
                kept = {index: snapshot(model)}
        return fitnesses, kept.__getitem__
