"""Small architectures written against a `keras` module argument.

Each builder is called as `build(input_shape, num_classes, keras=module)`,
so the same function builds a Keras 3 model (`import keras`) for evolution
and a `tf_keras` model for the tfmot baseline: the same architecture on both
sides of the comparison. A user architecture for
`python -m tflite_bench.baselines.tfmot --arch pkg.module:function` follows
the same signature. Outputs are logits.
"""

import importlib


def small_cnn(input_shape, num_classes, keras):
    """Conv(16)-pool-Conv(32)-pool-Dense(64)-Dense(classes).

    Example:

    >>> import keras
    >>> small_cnn((28, 28, 1), 10, keras).output_shape
    (None, 10)
    """
    layers = keras.layers
    return keras.Sequential([
        keras.Input(shape=tuple(input_shape)),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dense(num_classes),
    ], name="small_cnn")


def lenet5(input_shape, num_classes, keras):
    """LeNet-5 (ReLU, average pooling).

    Example:

    >>> import keras
    >>> lenet5((28, 28, 1), 10, keras).count_params()
    61706
    """
    layers = keras.layers
    return keras.Sequential([
        keras.Input(shape=tuple(input_shape)),
        layers.Conv2D(6, 5, padding="same", activation="relu"),
        layers.AveragePooling2D(2),
        layers.Conv2D(16, 5, activation="relu"),
        layers.AveragePooling2D(2),
        layers.Flatten(),
        layers.Dense(120, activation="relu"),
        layers.Dense(84, activation="relu"),
        layers.Dense(num_classes),
    ], name="lenet5")


BUILTIN = {"small_cnn": small_cnn, "lenet5": lenet5}


def resolve(arch):
    """Returns the builder named `arch`: a builtin name or `module:function`.

    Raises:
        ValueError: If the name is unknown or cannot be imported.

    Example:

    >>> resolve("lenet5").__name__
    'lenet5'
    """
    if arch in BUILTIN:
        return BUILTIN[arch]
    module_name, sep, attr = arch.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"--arch must be one of {sorted(BUILTIN)} or 'package.module:function',"
            f" got {arch!r}"
        )
    try:
        builder = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"--arch {arch!r}: cannot import it ({e})") from e
    if not callable(builder):
        raise ValueError(f"--arch {arch!r} is not callable")
    return builder
