"""ParentDistiller: the loss it trains on, save/load, and EvolutionCallback loading
each parent into the teacher."""

import keras
import numpy as np
import pytest

from keras_evosynth import EvolutionCallback, ParentDistiller, evolvable
from keras_evosynth.environments import ResourceTarget


def _pair(seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((3,))
    h = keras.layers.Dense(4, activation="relu", name="hidden")(x)
    student = keras.Model(x, {"a": keras.layers.Dense(2, name="a")(h),
                              "b": keras.layers.Dense(1, name="b")(h)})
    teacher = keras.models.clone_model(student)  # fresh (different) weights
    return student, teacher


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype("float32")
    return x, {"a": rng.normal(size=(16, 2)).astype("float32"),
               "b": rng.normal(size=(16, 1)).astype("float32")}


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_loss_mixes_the_task_and_the_teacher(alpha):
    student, teacher = _pair()
    distiller = ParentDistiller(student, teacher, alpha=alpha,
                          distillation_loss={"a": "mse", "b": "mae"})
    distiller.compile("sgd", loss={"a": "mse", "b": "mse"})
    x, y = _data()
    loss = float(distiller.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)["loss"])
    s, t = student.predict(x, verbose=0), teacher.predict(x, verbose=0)
    task = np.mean((s["a"] - y["a"]) ** 2) + np.mean((s["b"] - y["b"]) ** 2)
    soft = np.mean((s["a"] - t["a"]) ** 2) + np.mean(np.abs(s["b"] - t["b"]))
    assert loss == pytest.approx((1 - alpha) * task + alpha * soft, rel=1e-5)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_loss_under_a_mixed_policy_matches_float32_maths(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        student, teacher = _pair()
        distiller = ParentDistiller(student, teacher, alpha=0.3, distillation_loss="mse")
        distiller.compile("sgd", loss={"a": "mse", "b": "mse"})
        x, y = _data()
        loss = float(distiller.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)["loss"])
        s, t = student.predict(x, verbose=0), teacher.predict(x, verbose=0)
        s, t = ({k: np.asarray(v, "float32") for k, v in d.items()} for d in (s, t))
        distiller.fit(x, y, epochs=1, verbose=0)  # trains: the mixed dtypes add up
    finally:
        keras.mixed_precision.set_global_policy("float32")
    task = np.mean((s["a"] - y["a"]) ** 2) + np.mean((s["b"] - y["b"]) ** 2)
    soft = np.mean((s["a"] - t["a"]) ** 2) + np.mean((s["b"] - t["b"]) ** 2)
    assert loss == pytest.approx(0.7 * task + 0.3 * soft, rel=2e-2)


def test_training_moves_the_student_only():
    student, teacher = _pair()
    before = [w.copy() for w in teacher.get_weights()]
    distiller = ParentDistiller(student, teacher, alpha=0.5)
    distiller.compile("sgd", loss={"a": "mse", "b": "mse"})
    old = [w.copy() for w in student.get_weights()]
    distiller.fit(*_data(), epochs=2, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, teacher.get_weights(), strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(old, student.get_weights(), strict=True))


def test_default_teacher_is_a_frozen_copy_and_the_model_round_trips(tmp_path):
    student, _ = _pair()
    distiller = ParentDistiller(student, alpha=0.25)
    x, y = _data()
    np.testing.assert_allclose(distiller.teacher.predict(x, verbose=0)["a"],
                               student.predict(x, verbose=0)["a"])
    assert not distiller.teacher.trainable
    distiller.compile("adam", loss={"a": "mse", "b": "mse"})
    distiller.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    again = keras.saving.load_model(path)
    assert isinstance(again, ParentDistiller) and again.alpha == 0.25
    for mine, theirs in ((again.student, distiller.student), (again.teacher, distiller.teacher)):
        for a, b in zip(mine.get_weights(), theirs.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(again.predict(x, verbose=0)["b"],
                               distiller.predict(x, verbose=0)["b"], rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"alpha": 1.5}, "alpha must be a number in \\[0, 1\\]"),
    ({"distillation_loss": {"a": "mse"}}, "lacks outputs \\['b'\\]"),
    ({"distillation_loss": ["mse"]}, "1 distillation losses for 2 outputs"),
])
def test_bad_arguments_are_refused(kwargs, match):
    student, teacher = _pair()
    with pytest.raises(ValueError, match=match):
        ParentDistiller(student, teacher, **kwargs)


def test_teacher_with_other_outputs_is_refused():
    student, _ = _pair()
    x = keras.Input((3,))
    other = keras.Model(x, keras.layers.Dense(5)(x))
    with pytest.raises(ValueError, match="do not match the student's"):
        ParentDistiller(student, other)


def test_evolution_loads_every_parent_into_the_teacher(tmp_path):
    keras.utils.set_random_seed(0)
    base = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
        keras.layers.Flatten(),
        keras.layers.Dense(3, name="classifier"),
    ])
    student = evolvable(base)
    distiller = ParentDistiller(student, alpha=0.5)
    distiller.compile("adam", "sparse_categorical_crossentropy")
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            conv = distiller.teacher.get_layer("conv")
            seen.append((evolution.generation, int(conv.get_masks()[1].sum()),
                         int(student.get_layer("conv").get_masks()[1].sum())))

    evolution = EvolutionCallback(
        generations=2, environment=ResourceTarget(fraction=0.5, resource="macs",
                                                  solve="cluster", fixed_factor=np.e),
        precision="int8", seed=0, monitor="loss", verbose=0, directory=str(tmp_path))
    rng = np.random.default_rng(0)
    x = rng.random((32, 8, 8, 1), "float32")
    y = rng.integers(0, 3, 32)
    distiller.fit(x, y, epochs=3, callbacks=[evolution, Spy()], verbose=0)
    assert [r["generation"] for r in evolution.records] == [0, 1, 2]
    # the teacher holds the parent: all 8 filters in generation 1, generation 1's in 2
    (g0, t0, s0), (g1, t1, s1), (g2, t2, s2) = seen
    assert (g0, t0, s0) == (0, 8, 8)
    assert g1 == 1 and t1 == 8 and s1 < 8
    assert g2 == 2 and t2 == s1 and s2 <= s1
    assert distiller.teacher.get_layer("conv").precision.bits == 8
    saved = keras.saving.load_model(str(tmp_path / evolution.records[-1]["checkpoint"]))
    assert not isinstance(saved, ParentDistiller) and saved.get_layer("conv") is not None


def test_distiller_is_a_deprecated_alias_that_warns_once(monkeypatch, tmp_path):
    """`Distiller` (which shadowed `keras.distillation.Distiller`) still
    builds a `ParentDistiller`, warns once, and files saved under that name
    load as a `ParentDistiller`."""
    import warnings

    from keras_evosynth import Distiller, _deprecation

    monkeypatch.setattr(_deprecation, "_warned", set())
    student, teacher = _pair()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = Distiller(student, teacher, alpha=0.25, distillation_loss={"a": "mse", "b": "mae"})
        Distiller(student, alpha=0.5)
    (warning,) = caught
    assert warning.category is DeprecationWarning and warning.filename == __file__
    assert "use keras_evosynth.ParentDistiller" in str(warning.message)
    assert isinstance(old, ParentDistiller) and old.alpha == 0.25
    x, y = _data()
    old.compile("sgd", loss={"a": "mse", "b": "mse"})
    old.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "old.keras")
    old.save(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = keras.saving.load_model(path)
    assert type(again) is ParentDistiller and again.alpha == 0.25
    assert not [w for w in caught if w.category is DeprecationWarning
                and "keras_evosynth" in str(w.message)]
    np.testing.assert_allclose(again.predict(x, verbose=0)["a"], old.predict(x, verbose=0)["a"])
    np.testing.assert_allclose(again.teacher.predict(x, verbose=0)["b"],
                               teacher.predict(x, verbose=0)["b"])
