"""The classifier the recipes evolve, and its LiteRT accuracy.

Example:

>>> model = compile_classifier(build_cnn((8, 8, 1), num_classes=10, width=4))
>>> model.output_shape
(None, 10)
"""

import keras


def build_cnn(input_shape, num_classes, width=32, keras=keras):
    """The ancestor: conv-BN-ReLU blocks, global pooling, a dense head.

    `keras` is the Keras module to build with: the same function builds the
    tf_keras model of the tfmot baseline
    (`--arch recipes.classification:build_cnn`), the same architecture on
    both sides of the comparison.
    """
    layers = keras.layers
    inputs = keras.Input(tuple(input_shape))
    x = inputs
    for i, filters in enumerate((width, 2 * width, 4 * width)):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)  # short runs: fresh statistics
        x = layers.ReLU()(x)
        if i < 2 and x.shape[1] >= 4:
            x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(4 * width, activation="relu")(x)
    outputs = layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name="cnn")


def compile_classifier(model, learning_rate=1e-3):
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def tflite_accuracy(x, y):
    """`evaluate(path)` for the lineage table: top-1 of the flatbuffer, and
    its `metric_spread`, the binomial standard error sqrt(p (1 - p) / n) of
    that accuracy over the `n` images (what a bootstrap over them gives)."""
    import math

    import tflite_bench

    def evaluate(path):
        report = tflite_bench.compare(
            [path], runs=1, warmup=0, data=(x, y), memory=False, progress=False
        )
        accuracy = report.rows[0].accuracy
        return {"metric": accuracy, "metric_spread": math.sqrt(accuracy * (1 - accuracy) / len(y))}

    return evaluate
