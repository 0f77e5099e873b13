"""EvolutionCallback on a small CNN and scikit-learn's 8x8 digits."""

import hashlib
import json
import os

import keras
import numpy as np
import pytest

from keras_evosynth import evolvable, genetics
from keras_evosynth.callbacks import (
    EvolutionCallback,
    reinitialize_weights,
    reset_optimizer,
)
from keras_evosynth.environments import ConstantEnvironment, ResourceTarget
from keras_evosynth.stats import summary

L = keras.layers
VOLATILE = ("wall_time", "checkpoint")


@pytest.fixture(scope="module")
def digits():
    datasets = pytest.importorskip("sklearn.datasets")
    data = datasets.load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int32")
    return x[:1400], y[:1400], x[1400:], y[1400:]


def cnn(seed=0, metrics=("accuracy",)):
    keras.utils.set_random_seed(seed)
    base = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            L.Conv2D(32, 3, activation="relu", name="conv2"),
            L.MaxPooling2D(name="pool"),
            L.Flatten(name="flat"),
            L.Dense(10, activation="softmax", name="classifier"),
        ],
        name="digits_cnn",
    )
    model = evolvable(base)
    model.compile(
        keras.optimizers.Adam(3e-3),
        "sparse_categorical_crossentropy",
        metrics=list(metrics),
    )
    return model


def fit(model, data, callbacks, epochs, **kw):
    xt, yt, xv, yv = data
    return model.fit(
        xt,
        yt,
        validation_data=(xv, yv),
        epochs=epochs,
        batch_size=64,
        verbose=0,
        shuffle=False,
        callbacks=callbacks,
        **kw,
    )


def stable(records):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def settings(**kw):
    base = dict(
        generations=3,
        epochs_per_generation=2,
        ancestor_epochs=3,
        precision="int4",
        environment=ResourceTarget(fraction=0.6),
        seed=0,
        monitor="val_accuracy",
        verbose=0,
    )
    base.update(kw)
    return base


def quick(**kw):
    """Settings with one epoch per generation (ancestor included)."""
    return settings(epochs_per_generation=1, ancestor_epochs=1, **kw)


def test_evolves_digits_with_fewer_synapses_each_generation(digits, capsys):
    model = cnn()
    evolution = EvolutionCallback(**settings(verbose=1))
    history = fit(model, digits, [evolution], epochs=30)
    records = evolution.records
    assert [r["generation"] for r in records] == [0, 1, 2, 3]
    synapses = [r["synapses"] for r in records]
    assert all(a > b for a, b in zip(synapses, synapses[1:], strict=False))
    assert synapses[-1] < 0.45 * synapses[0]
    # Stated tolerance: the last offspring keeps val accuracy within 8 points.
    assert records[-1]["fitness"] >= records[0]["fitness"] - 0.08
    assert [r["bits"] for r in records] == [32, 4, 4, 4]
    assert evolution.done and len(history.history["loss"]) == 3 + 3 * 2
    # The compiled functions were re-traced at int4: evaluate agrees with an
    # eager forward pass of the evolved model.
    _, _, xv, yv = digits
    eager = np.mean(np.argmax(model(xv, training=False), axis=1) == yv)
    assert model.evaluate(xv, yv, verbose=0)[1] == pytest.approx(eager, abs=1e-6)
    # The classifier (model output) is protected: all 10 units survive.
    assert model.get_layer("classifier").count_clusters() == 10
    out = capsys.readouterr().out
    assert out.count("EvolutionCallback: generation") == 4
    assert "lineage complete" in out


def test_resume_after_kill_gives_the_identical_lineage(digits, tmp_path):
    reference = EvolutionCallback(**settings(generations=2, directory=tmp_path / "a"))
    fit(cnn(), digits, [reference], epochs=30)

    class Killed(Exception):
        pass

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 5:  # in the middle of generation 2 (epochs 5-6)
                raise Killed

    run = tmp_path / "b"
    killed = EvolutionCallback(**settings(generations=2, directory=run))
    assert killed.epochs == 3 + 2 * 2 * 3  # ancestor + each generation tried 1 + 2 rollbacks times
    with pytest.raises(Killed):
        fit(cnn(), digits, [killed, Kill()], 30)
    files = sorted(os.listdir(run))
    assert files == [
        "evolution.json",
        "generation_000.keras",
        "generation_001.keras",
        "lineage.jsonl",
    ]
    before = {name: digest(run / name) for name in files if name.endswith(".keras")}
    log_before = (run / "lineage.jsonl").read_text()

    # A new process would build a fresh model; its weights come from the
    # checkpoint of generation 1.
    resumed = EvolutionCallback(**settings(generations=2, directory=run))
    assert resumed.epochs == 1 * 3 * 2  # generation 2 left: up to 3 tries of 2 epochs
    fit(cnn(seed=123), digits, [resumed], epochs=30)
    assert stable(resumed.records) == stable(reference.records)
    assert resumed.epochs == 0
    assert {n: digest(run / n) for n in before} == before
    assert (run / "lineage.jsonl").read_text().startswith(log_before)
    assert os.path.exists(run / "generation_002.keras")

    # A finished lineage needs no epoch; fit(epochs=0) restores its last model.
    again = EvolutionCallback(**settings(generations=2, directory=run))
    assert again.epochs == 0
    model = cnn(seed=7)
    fit(model, digits, [again], epochs=again.epochs)
    assert again.done and model.get_layer("conv2").count_synapses() < 32 * 144
    assert stable(again.records) == stable(reference.records)


def test_separate_fit_calls_match_one_fit(digits):
    one = EvolutionCallback(**settings(generations=2))
    fit(cnn(), digits, [one], epochs=20)
    split = EvolutionCallback(**settings(generations=2))
    model = cnn()
    for epochs in (2, 1, 3, 1):  # boundaries fall inside generations
        fit(model, digits, [split], epochs=epochs)
    assert stable(split.records) == stable(one.records)


def test_rollback_resamples_milder_then_accepts(digits):
    state = {}

    class Score(keras.callbacks.Callback):
        """Fitness 0 for every first attempt of an offspring, 1 otherwise."""

        def on_epoch_end(self, epoch, logs=None):
            evolution = state["evolution"]
            first_try = evolution.generation > 0 and evolution.attempt == 0
            logs["score"] = 0.0 if first_try else 1.0

    evolution = EvolutionCallback(
        **quick(
            generations=2,
            environment=ConstantEnvironment(0.4, 0.6),
            monitor="score",
            mode="max",
            tolerance=0.5,
        )
    )
    state["evolution"] = evolution
    fit(cnn(), digits, [Score(), evolution], epochs=20)
    records = evolution.records
    assert [(r["generation"], r["attempt"], r["accepted"]) for r in records] == [
        (0, 0, True),
        (1, 0, False),
        (1, 1, True),
        (2, 0, False),
        (2, 1, True),
    ]
    assert records[1]["cluster_factor"] == pytest.approx(0.4)
    assert records[2]["cluster_factor"] == pytest.approx(0.7)
    assert records[2]["synapse_factor"] == pytest.approx(0.8)
    assert records[1]["checkpoint"] is None


def test_adaptive_step_follows_the_lineage_history(digits, tmp_path):
    state = {}

    class Score(keras.callbacks.Callback):
        """Fitness 0 for the first attempt of generation 2, 1 otherwise."""

        def on_epoch_end(self, epoch, logs=None):
            evolution = state["evolution"]
            logs["score"] = 0.0 if (evolution.generation, evolution.attempt) == (2, 0) else 1.0

    def run(directory):
        evolution = EvolutionCallback(**quick(
            generations=3, monitor="score", mode="max", tolerance=0.5, directory=directory,
            environment=ResourceTarget(fraction=0.9, adaptive=True, grow=2.0, shrink=0.25)))
        state["evolution"] = evolution
        fit(cnn(), digits, [Score(), evolution], epochs=20)
        return evolution.records

    records = run(str(tmp_path / "a"))
    assert [(r["generation"], r["accepted"]) for r in records] == [
        (0, True), (1, True), (2, False), (2, True), (3, True)]
    # cut 0.1, accepted -> 0.2, rolled back -> 0.05, accepted -> 0.1
    assert [round(r["target"], 6) for r in records[1:]] == [0.9, 0.8, 0.95, 0.9]
    assert stable(run(str(tmp_path / "b"))) == stable(records)


def test_fitness_is_the_mean_of_the_last_epochs(digits, tmp_path):
    class Score(keras.callbacks.Callback):
        """Logs the epoch number (0, 1, 2, ...) as the score."""

        def on_epoch_end(self, epoch, logs=None):
            logs["score"] = float(epoch)

    evolution = EvolutionCallback(**settings(
        generations=2, epochs_per_generation=3, ancestor_epochs=2, fitness_epochs=2,
        monitor="score", mode="max", directory=str(tmp_path / "lineage")))
    fit(cnn(), digits, [Score(), evolution], epochs=8)
    records = evolution.records
    # epochs 0-1 ancestor, 2-4 generation 1, 5-7 generation 2
    assert [r["fitness_values"] for r in records] == [[0.0, 1.0], [2.0, 3.0, 4.0],
                                                      [5.0, 6.0, 7.0]]
    assert [r["fitness"] for r in records] == [0.5, 3.5, 6.5]
    assert evolution.settings()["fitness_epochs"] == 2
    assert "fitness_epochs" not in EvolutionCallback(generations=1).settings()
    with pytest.raises(ValueError, match="fitness_epochs=3 is more than the epochs"):
        EvolutionCallback(generations=1, epochs_per_generation=3, ancestor_epochs=2,
                          fitness_epochs=3)


@pytest.mark.parametrize("learning_rate, expected", [
    (lambda e, n: 0.001 * (e + 1) * n, [0.001, 0.002, 0.004, 0.002, 0.004]),
    (0.004, [0.004] * 5),
])
def test_learning_rate_restarts_every_generation(digits, learning_rate, expected):
    rates = []

    class Spy(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                rates.append(float(self.model.optimizer.learning_rate))

    evolution = EvolutionCallback(**settings(
        generations=2, epochs_per_generation=2, ancestor_epochs=1, learning_rate=learning_rate))
    model = cnn()
    model.optimizer.learning_rate = 0.02  # the constant rate is set over this
    fit(model, digits, [evolution, Spy()], epochs=5)
    assert rates == pytest.approx(expected)
    with pytest.raises(ValueError, match="learning_rate must be a positive number"):
        EvolutionCallback(generations=1, learning_rate=-1.0)


def test_rollbacks_exhausted_keep_the_parent(digits):
    class Score(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            layer = self.model.get_layer("conv2")
            logs["kept"] = layer.count_synapses() / (32 * 16 * 9)

    evolution = EvolutionCallback(
        **quick(
            generations=3,
            environment=ConstantEnvironment(0.5, 0.5),
            monitor="kept",
            mode="max",
            tolerance=0.0,
            max_rollbacks=1,
        )
    )
    model = cnn()
    history = fit(model, digits, [Score(), evolution], epochs=20)
    assert [r["accepted"] for r in evolution.records] == [True, False, False]
    assert evolution.done and len(history.history["loss"]) == 3
    # The model is the ancestor again: full masks, float32.
    conv2 = model.get_layer("conv2")
    assert conv2.get_masks()[0].all() and conv2.precision.bits == 32


def test_population_keeps_the_fittest_candidate(digits, tmp_path):
    xt, yt, xv, yv = digits
    evolution = EvolutionCallback(
        **quick(
            generations=1,
            population=3,
            selection_data=(xv, yv),
            directory=tmp_path,
        )
    )
    model = cnn()
    fit(model, digits, [evolution], epochs=5)
    chosen = evolution.records[1]
    # Replay the three candidates from the ancestor checkpoint.
    scores, masks = [], []
    for candidate in range(3):
        parent = keras.saving.load_model(tmp_path / "generation_000.keras")
        genomes, layers = genetics.genomes_from_model(parent, "int4")
        sampled = genetics.sample_masks(
            genomes,
            chosen["cluster_factor"],
            chosen["synapse_factor"],
            seed=0,
            generation=1,
            candidate=candidate,
        )
        genetics.apply_masks(layers, sampled, "int4")
        parent.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        scores.append(parent.evaluate(xv, yv, verbose=0)[1])
        masks.append(sampled)
    assert chosen["candidate"] == int(np.argmax(scores))
    conv2 = model.get_layer("conv2")
    np.testing.assert_array_equal(conv2.get_masks()[1], masks[chosen["candidate"]][1][1])


def test_an_executor_of_ones_own_runs_the_same_lineage(digits):
    from keras_evosynth.trials import LocalExecutor

    xt, yt, xv, yv = digits

    class Counting(LocalExecutor):  # the one-method interface RayExecutor shares
        calls = []

        def run(self, model, spec, candidates, where):
            self.calls.append((where, len(candidates), spec["precision"].bits, spec["mode"]))
            return super().run(model, spec, candidates, where)

    lineages = []
    for executor in (None, Counting()):
        evolution = EvolutionCallback(**quick(generations=2, population=2,
                                              selection_data=(xv[:100], yv[:100]),
                                              executor=executor))
        assert isinstance(evolution.executor, LocalExecutor)
        fit(cnn(), digits, [evolution], epochs=evolution.epochs)
        lineages.append(stable(evolution.records))
    assert lineages[0] == lineages[1]
    assert Counting.calls[0] == ("generation 1 (attempt 0)", 2, 4, "max")
    assert len(Counting.calls) == len(lineages[1]) - 1  # one run per synthesis


def test_population_with_trial_training_and_stop_when(digits):
    xt, yt, xv, yv = digits
    evolution = EvolutionCallback(
        **quick(
            generations=5,
            population=2,
            selection_data=(xv, yv),
            trial_data=(xt, yt),
            trial_steps=2,
            stop_when={"synapses": 0.7},
        )
    )
    fit(cnn(), digits, [evolution], epochs=10)
    assert evolution.done
    last = evolution.records[-1]
    assert last["synapses"] <= 0.7 * evolution.records[0]["synapses"]
    assert all(
        r["synapses"] > 0.7 * evolution.records[0]["synapses"] for r in evolution.records[:-1]
    )


def test_trial_score_chooses_the_candidate(digits):
    xt, yt, _, _ = digits
    scores = iter([0.2, 0.9, 0.5])
    networks = []

    def score(network):
        networks.append(network)
        return next(scores)

    evolution = EvolutionCallback(
        **quick(generations=1, population=3, trial_data=(xt, yt), trial_steps=1,
                trial_score=score)
    )
    model = cnn()
    fit(model, digits, [evolution], epochs=2)
    assert evolution.records[1]["candidate"] == 1
    assert networks == [model] * 3


def test_reinitialize_weights_keeps_masks_and_is_seeded():
    model = cnn()
    conv = model.get_layer("conv2")
    mask = np.random.default_rng(0).random(tuple(conv.kernel.shape)) < 0.5
    conv.set_masks(synapse_mask=mask)
    before = keras.ops.convert_to_numpy(conv.kernel)
    reinitialize_weights(model, seed=1)
    first = keras.ops.convert_to_numpy(conv.kernel)
    assert not first[~mask].any()
    assert not np.allclose(first[mask], before[mask])
    reinitialize_weights(model, seed=1)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(conv.kernel), first)


def test_reinitialize_option_trains_newborns(digits, monkeypatch):
    from keras_evosynth import trials

    calls = []

    def spy(model, seed):
        before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
        reinitialize_weights(model, seed)
        after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
        calls.append((seed, any(not np.array_equal(a, b) for a, b in zip(before, after,
                                                                          strict=True))))

    monkeypatch.setattr(trials, "reinitialize_weights", spy)
    evolution = EvolutionCallback(
        **quick(
            generations=1,
            reinitialize=True,
        )
    )
    fit(cnn(), digits, [evolution], epochs=3)
    assert [r["generation"] for r in evolution.records] == [0, 1]
    assert calls and all(changed for _, changed in calls)  # the offspring was re-initialized
    assert calls[0][0][1] == 1  # seeded by (seed, generation, attempt, candidate)
    assert evolution.records[1]["fitness"] > 0.1  # it learned something


def test_reset_optimizer_clears_slots_keeps_learning_rate(digits):
    model = cnn()
    fit(model, digits, [], epochs=1)
    model.optimizer.learning_rate = 0.0123
    reset_optimizer(model)
    optimizer = model.optimizer
    assert int(optimizer.iterations) == 0
    assert float(optimizer.learning_rate) == pytest.approx(0.0123)
    slots = [v for v in optimizer.variables if "momentum" in v.path]
    assert slots and all(not np.any(keras.ops.convert_to_numpy(v)) for v in slots)


# ------------------------------------------------------------- mode="auto"
def _unknown_direction(y_true, y_pred):
    return keras.ops.mean(y_pred, axis=-1)


def _three_way_net(*metrics):
    keras.utils.set_random_seed(0)
    model = evolvable(keras.Sequential([
        keras.Input((4,)), L.Dense(8, activation="relu", name="hidden"),
        L.Dense(3, activation="softmax", name="out")]))
    model.compile("adam", "categorical_crossentropy", metrics=list(metrics))
    return model


@pytest.fixture(scope="module")
def three_way():
    """A fitted 3-class evolvable net compiled with metrics of every kind,
    and its data."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 4), "float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 64)]
    model = _three_way_net(
        "accuracy", keras.metrics.F1Score(average="macro"), keras.metrics.R2Score(), "mae",
        keras.metrics.MeanMetricWrapper(_unknown_direction, name="score"))
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    return model, x, y


# The old rule (max for names ending in acc, auc, precision, recall, iou,
# map, f1) called f1_score and r2_score "min" and guessed "min" for score.
@pytest.mark.parametrize("monitor, mode", [
    ("loss", "min"), ("val_loss", "min"), ("val_accuracy", "max"), ("val_f1_score", "max"),
    ("r2_score", "max"), ("val_mae", "min"), ("score", None), ("val_hidden_loss", None),
])
def test_auto_mode_decides_as_keras_callbacks_do(three_way, monitor, mode):
    from keras_evosynth.callbacks import auto_mode

    model = three_way[0]
    assert auto_mode(model, monitor) == mode
    reference = keras.callbacks.EarlyStopping(monitor=monitor, mode="auto")
    reference.set_model(model)
    try:
        reference._set_monitor_op()  # Keras's own rule
    except ValueError:
        assert mode is None
    else:
        assert mode == ("max" if reference.monitor_op is keras.ops.greater else "min")


def test_auto_mode_is_decided_once_the_metrics_exist(three_way, tmp_path):
    _, x, y = three_way
    model = _three_way_net(keras.metrics.F1Score(average="macro"))  # metrics not built yet
    evolution = EvolutionCallback(generations=1, monitor="val_f1_score", verbose=0,
                                  directory=str(tmp_path / "run"))
    assert evolution.mode == "auto" and evolution.settings()["mode"] == "auto"
    assert EvolutionCallback(generations=1, monitor="val_loss").mode == "min"
    model.fit(x, y, validation_data=(x, y), epochs=2, verbose=0, callbacks=[evolution])
    assert evolution.mode == evolution.selection.mode == "max"
    assert [r["generation"] for r in evolution.records] == [0, 1]
    with open(tmp_path / "run" / "evolution.json") as f:
        assert json.load(f)["mode"] == "max"  # the direction "auto" resolved to
    # resumed with mode="auto" by a model that has not run a step (a killed
    # driver's successor): the stored direction is used from the start
    again = EvolutionCallback(generations=1, monitor="val_f1_score", verbose=0,
                              directory=str(tmp_path / "run"))
    again.set_model(_three_way_net(keras.metrics.F1Score(average="macro")))
    again.on_train_begin()
    assert again.done and again.mode == again.selection.mode == "max"


def test_auto_mode_without_a_direction_fails_on_the_first_batch(three_way):
    _, x, y = three_way
    model = _three_way_net(keras.metrics.MeanMetricWrapper(_unknown_direction, name="score"))
    with pytest.raises(ValueError, match="cannot tell whether monitor 'score' is better high or "
                                         "low.*Pass mode='max' or mode='min'"):
        model.fit(x, y, epochs=2, verbose=0,
                  callbacks=[EvolutionCallback(generations=1, monitor="score", verbose=0)])
    assert int(model.optimizer.iterations) == 1


def test_auto_mode_resumes_a_lineage_in_its_stored_direction(three_way, tmp_path):
    """A lineage written when "auto" read the metric's name stored the mode
    it chose; asked "auto" again, it goes on in that direction."""
    _, x, y = three_way
    directory = tmp_path / "run"
    first = EvolutionCallback(generations=2, monitor="score", mode="max", verbose=0,
                              directory=str(directory))
    model = _three_way_net(keras.metrics.MeanMetricWrapper(_unknown_direction, name="score"))
    model.fit(x, y, epochs=2, verbose=0, callbacks=[first])  # generations 0 and 1
    resumed = EvolutionCallback(generations=2, monitor="score", verbose=0,
                                directory=str(directory))
    model.fit(x, y, epochs=1, verbose=0, callbacks=[resumed])
    assert resumed.mode == "max"
    assert [r["generation"] for r in resumed.records] == [0, 1, 2]


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"generations": 0}, ValueError, "generations"),
        ({"generations": 1.5}, TypeError, "generations"),
        ({"epochs_per_generation": 0}, ValueError, "epochs_per_generation"),
        ({"ancestor_epochs": 0}, ValueError, "ancestor_epochs"),
        ({"precision": "int9"}, ValueError, "int9"),
        ({"environment": 0.5}, TypeError, "environment"),
        ({"seed": -1}, ValueError, "seed"),
        ({"mode": "up"}, ValueError, "mode"),
        ({"monitor": ""}, TypeError, "monitor"),
        ({"population": 2}, ValueError, "selection_data"),
        ({"population": 2, "trial_score": 1.0}, TypeError, "trial_score must be"),
        ({"trial_data": ([0], [0])}, ValueError, "trial_data"),
        ({"tolerance": -0.1}, ValueError, "tolerance"),
        ({"max_rollbacks": -1}, ValueError, "max_rollbacks"),
        ({"stop_when": {"latency": 0.5}}, ValueError, "latency"),
        ({"stop_when": {"synapses": 2.0}}, ValueError, "stop_when"),
        ({"stop_when": 0.5}, TypeError, "stop_when"),
        ({"reinitialize": "yes"}, TypeError, "reinitialize"),
        ({"protect": [1]}, TypeError, "protect"),
    ],
)
def test_bad_arguments_fail_in_init(kwargs, error, match):
    with pytest.raises(error, match=match):
        EvolutionCallback(**{"generations": 2, **kwargs})


def test_unwritable_directory_fails_in_init(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not writable"):
        EvolutionCallback(generations=2, directory=tmp_path / "file" / "run")


def test_missing_metric_fails_on_the_first_batch(digits, tmp_path):
    model = cnn(metrics=())  # no accuracy
    evolution = EvolutionCallback(**settings(directory=tmp_path))
    with pytest.raises(ValueError, match="needs the metric 'accuracy'"):
        fit(model, digits, [evolution], epochs=5)
    assert int(model.optimizer.iterations) == 1
    assert sorted(os.listdir(tmp_path)) == ["evolution.json"]


def test_missing_validation_fails_on_the_first_epoch(digits):
    xt, yt, _, _ = digits
    model = cnn()
    evolution = EvolutionCallback(**settings(ancestor_epochs=3))
    with pytest.raises(ValueError, match="pass validation_data"):
        model.fit(xt, yt, epochs=5, verbose=0, callbacks=[evolution])
    assert evolution.records == []


def test_model_without_evo_layers_fails_before_training(digits):
    plain = keras.Sequential([keras.Input((8, 8, 1)), L.Flatten(), L.Dense(10)])
    plain.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="no evolvable layer"):
        fit(plain, digits, [EvolutionCallback(generations=1, verbose=0)], 2)
    assert int(plain.optimizer.iterations) == 0


def test_other_settings_in_the_directory_fail_before_training(digits, tmp_path):
    EvolutionCallback(**settings(directory=tmp_path))
    assert os.listdir(tmp_path) == []  # __init__ writes nothing
    first = EvolutionCallback(**quick(generations=1, directory=tmp_path))
    fit(cnn(), digits, [first], epochs=2)
    before = {n: digest(tmp_path / n) for n in os.listdir(tmp_path)}
    model = cnn()
    other = EvolutionCallback(**quick(generations=1, seed=5, directory=tmp_path))
    with pytest.raises(ValueError, match=r"settings \(seed: stored 0, now 5\)"):
        other.epochs  # noqa: B018 (the budget of another lineage is refused too)
    with pytest.raises(ValueError, match=r"settings \(seed: stored 0, now 5\)"):
        fit(model, digits, [other], epochs=2)
    assert int(model.optimizer.iterations) == 0
    assert {n: digest(tmp_path / n) for n in os.listdir(tmp_path)} == before


def test_epoch_logs_carry_the_lineage_to_csv_logger(digits, tmp_path):
    import csv

    class Table:
        """A stand-in latency table: 1 ms per 100 synapses."""

        def predict(self, model):
            return summary(model, print_fn=None).synapses / 100

    state = {}

    class Score(keras.callbacks.Callback):
        """Fitness 0 for the first attempt of generation 1, 1 otherwise."""

        def on_epoch_end(self, epoch, logs=None):
            evolution = state["evolution"]
            logs["score"] = 0.0 if (evolution.generation, evolution.attempt) == (1, 0) else 1.0

    evolution = state["evolution"] = EvolutionCallback(**settings(
        generations=2, epochs_per_generation=2, ancestor_epochs=1, precision=None,
        monitor="score", mode="max", tolerance=0.5, latency_table=Table()))
    path, too_early = tmp_path / "log.csv", tmp_path / "early.csv"
    model = cnn()
    history = fit(model, digits, [Score(), keras.callbacks.CSVLogger(too_early), evolution,
                                  keras.callbacks.CSVLogger(path)], epochs=20)
    # one more epoch once the lineage is complete: the last generation again
    fit(model, digits, [Score(), evolution, keras.callbacks.CSVLogger(path, append=True)],
        epochs=1)
    records = evolution.records
    assert [(r["generation"], r["accepted"]) for r in records] == [
        (0, True), (1, False), (1, True), (2, True)]
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["epoch", "accuracy", "generation", "latency", "loss", "macs",
                                 "score", "synapses", "val_accuracy", "val_loss"]
    # epoch 0 the ancestor, 1-2 generation 1 (rolled back), 3-4 generation 1
    # again, 5-6 generation 2, then the completed lineage's generation 2
    trained = [records[i] for i in (0, 1, 1, 2, 2, 3, 3, 3)]
    assert [int(row["generation"]) for row in rows] == [0, 1, 1, 1, 1, 2, 2, 2]
    assert [int(row["synapses"]) for row in rows] == [r["synapses"] for r in trained]
    assert [int(row["macs"]) for row in rows] == [r["macs"] for r in trained]
    assert [float(row["latency"]) for row in rows] == [r["synapses"] / 100 for r in trained]
    assert len({r["synapses"] for r in records}) == 4  # four different offspring
    assert history.history["generation"] == [0, 1, 1, 1, 1, 2, 2]
    assert "generation" not in records[0]["metrics"]
    # a logger before the callback runs before the numbers are in the logs
    with open(too_early, newline="") as f:
        assert "generation" not in next(csv.reader(f))


def test_torn_lineage_log_resumes_and_damage_fails_before_training(digits, tmp_path):
    import warnings

    fit(cnn(), digits, [EvolutionCallback(**quick(generations=2, directory=tmp_path))], 2)
    log = tmp_path / "lineage.jsonl"
    intact = log.read_text()
    assert intact.count("\n") == 2  # generations 0 and 1
    log.write_text(intact + '{"accepted": true, "generation": 2, "syn')  # killed mid-append
    resumed = EvolutionCallback(**quick(generations=2, directory=tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(cnn(), digits, [resumed], epochs=20)
    torn = [w for w in caught if "partial record" in str(w.message)]
    assert len(torn) == 1 and "line 3, the last" in str(torn[0].message)
    assert [r["generation"] for r in resumed.records] == [0, 1, 2] and resumed.done
    lines = log.read_text().splitlines()
    assert log.read_text().startswith(intact) and len(lines) == 3
    assert [json.loads(line)["generation"] for line in lines] == [0, 1, 2]

    log.write_text(intact.replace("\n", "\n{\n", 1))  # damage before the last line
    model = cnn()
    with pytest.raises(ValueError, match=r"lineage.jsonl is damaged at line 2 "):
        fit(model, digits, [EvolutionCallback(**quick(generations=2, directory=tmp_path))], 2)
    assert int(model.optimizer.iterations) == 0
