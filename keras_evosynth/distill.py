"""`ParentDistiller`: retrain an offspring with its parent's outputs as soft targets.

An offspring that lost filters starts far from where its parent was; the
parent's own outputs (a detector's coverage and box maps, a classifier's
probabilities) say, for every training input, what the network computed
before the cut, a denser signal than the labels alone.
`ParentDistiller(student)` is a Keras model that computes `student(x)` and
trains it on

    loss = (1 - alpha) * task loss(y, student(x))
           + alpha * sum over outputs of distillation_loss(teacher(x), student(x))

with `teacher` a frozen copy of the student's architecture. Compile and fit
it like the student (the same losses, metrics, callbacks). Given to
`EvolutionCallback`, the callback evolves `distiller.student` and loads each
accepted parent into `distiller.teacher` (generation 0 distils from the
ancestor as it was when training began); lineage checkpoints hold the
student, a plain evolvable model.

It is not Keras 3.15's `keras.distillation.Distiller` (see the class
docstring for why that one does not fit); `Distiller`, its former name, is
a deprecated alias (removed in 0.2.0).

Example:

>>> import keras, numpy as np
>>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="out")])
>>> distiller = ParentDistiller(student, alpha=0.5)
>>> distiller.compile("adam", "mse")
>>> x, y = np.ones((8, 4), "float32"), np.zeros((8, 2), "float32")
>>> _ = distiller.fit(x, y, epochs=1, verbose=0)
>>> bool(np.allclose(distiller.predict(x, verbose=0), student.predict(x, verbose=0)))
True
"""

import keras

from keras_evosynth._deprecation import warn_renamed
from keras_evosynth.conversion import copy_state


def _output_names(model):
    names = getattr(model, "output_names", None)
    return list(names) if names else [f"output_{i}" for i in range(len(model.outputs))]


@keras.saving.register_keras_serializable(package="keras_evosynth")
class ParentDistiller(keras.Model):
    """A student trained on labels and on a frozen teacher's outputs.

    Args:
        student: The model being trained (functional or Sequential).
        teacher: A model with the student's outputs (same structure), e.g.
            the parent; None: a frozen copy of `student` as it is now (same
            architecture, weights copied).
        alpha: Weight of the distillation term in [0, 1] (0: labels only,
            1: teacher only).
        distillation_loss: A Keras loss (name, function or `Loss`) applied
            to every output, `student(x)` against `teacher(x)`; or a dict /
            list of them matching the outputs. Default `"mse"`.
        **kwargs: `keras.Model` arguments (`name`).

    Attributes:
        student, teacher: The two models (the teacher is not trainable).

    Why not `keras.distillation.Distiller` (Keras 3.15): what evolution needs
    of it was tried, with the student and teacher of `tests/test_distill.py`
    (two outputs `{"a", "b"}`), `FeatureDistillation(loss={"a": "mse", "b":
    "mae"})` as the per-output distillation loss:

    - `compile(loss={"a": "mse", "b": "mse"})` on dict outputs cannot
      train or evaluate: Keras keeps the loss dict on the model as a
      `TrackedDict`, which `tree.map_structure` refuses to pair with the
      data's dict ("Custom node type mismatch").
    - Its student loss bypasses the compiled loss: `loss_weights` are
      ignored without a word (DetectNet compiles with them), the per-output
      `<output>_loss` logs are gone, and with several per-example losses
      (`"mse"`) the term is summed over the batch rather than averaged
      (2.60 per sample read 41.6 at batch 16, 20.8 at batch 8).
    - Under `mixed_float16` the distillation term is computed in float16
      (the outputs' dtype), not float32.
    - A saved distiller with that per-output `FeatureDistillation` does not
      load (`ValueError: Unknown config as a dict`: its `from_config` hands
      the dict of losses to `keras.losses.deserialize`).
    - The teacher is required (no frozen copy by default) and its weighting
      is the complement of ours (`student_loss_weight = 1 - alpha`).

    Building on it would mean overriding `compile`, `compute_loss` and
    `get_config`/`from_config`, everything but the constructor's checks, so
    this stays a `keras.Model` of its own, named so that it does not shadow
    Keras's class.
    """

    def __init__(self, student, teacher=None, alpha=0.5, distillation_loss="mse", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(student, keras.Model):
            raise TypeError(
                f"ParentDistiller: student must be a keras.Model, got {type(student)}."
            )
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"ParentDistiller: alpha must be a number in [0, 1], got {alpha!r}.")
        if teacher is None:
            teacher = keras.models.clone_model(student)
            teacher.set_weights(student.get_weights())
        student_out = keras.tree.flatten(student.outputs)
        teacher_out = keras.tree.flatten(teacher.outputs)
        if [tuple(t.shape[1:]) for t in student_out] != [tuple(t.shape[1:]) for t in teacher_out]:
            raise ValueError(
                "ParentDistiller: the teacher's outputs "
                f"{[tuple(t.shape) for t in teacher_out]} do not match the student's "
                f"{[tuple(t.shape) for t in student_out]}."
            )
        teacher.trainable = False
        self.student, self.teacher = student, teacher
        self.alpha = float(alpha)
        self.distillation_loss = distillation_loss
        self._distill_fns = self._per_output(distillation_loss, student)

    @staticmethod
    def _per_output(spec, student):
        names = _output_names(student)
        if isinstance(spec, dict):
            missing = set(names) - set(spec)
            if missing:
                raise ValueError(
                    f"ParentDistiller: distillation_loss lacks outputs {sorted(missing)}."
                )
            return [keras.losses.get(spec[n]) for n in names]
        if isinstance(spec, (list, tuple)):
            if len(spec) != len(names):
                raise ValueError(f"ParentDistiller: {len(spec)} distillation losses for "
                                 f"{len(names)} outputs.")
            return [keras.losses.get(s) for s in spec]
        return [keras.losses.get(spec)] * len(names)

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        task = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                    training=training)
        if self.alpha == 0.0:
            return task
        soft, pred = self._ordered(self.teacher(x, training=False)), self._ordered(y_pred)
        # in float32 like Keras's own losses: under a mixed policy the
        # outputs are bfloat16 / float16 while the task loss is float32
        distill = sum(
            keras.ops.mean(fn(keras.ops.cast(keras.ops.stop_gradient(t), "float32"),
                              keras.ops.cast(p, "float32")))
            for fn, t, p in zip(self._distill_fns, soft, pred, strict=True)
        )  # fmt: skip
        return (1.0 - self.alpha) * task + self.alpha * keras.ops.cast(distill, task.dtype)

    def _ordered(self, outputs):
        """Outputs as a list in `student.output_names` order."""
        if isinstance(outputs, dict):
            return [outputs[name] for name in _output_names(self.student)]
        return keras.tree.flatten(outputs)

    def load_teacher(self, model):
        """Copies `model`'s weights (and Evo layers' precisions) into the
        teacher, which must share its architecture."""
        copy_state(model, self.teacher)

    def get_config(self):
        return {
            **super().get_config(),
            "student": keras.saving.serialize_keras_object(self.student),
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "alpha": self.alpha,
            "distillation_loss": keras.saving.serialize_keras_object(self.distillation_loss),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("student", "teacher", "distillation_loss"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_evosynth")
class Distiller(ParentDistiller):
    """Deprecated alias of `ParentDistiller` (same arguments), removed in
    0.2.0: the name shadowed Keras 3.15's `keras.distillation.Distiller`.
    Warns once per process; `.keras` files saved under this name load as a
    `ParentDistiller`."""

    def __init__(self, *args, **kwargs):
        warn_renamed("Distiller", "ParentDistiller")
        super().__init__(*args, **kwargs)

    @classmethod
    def from_config(cls, config):
        return ParentDistiller.from_config(config)
