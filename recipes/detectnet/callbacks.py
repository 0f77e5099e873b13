"""The validation score as a Keras callback (DIGITS mAP in the epoch logs)."""

import keras

from recipes.detectnet import data, evaluate

BATCH = 20


def detection_scores(model, source, image_size, scale, fit="pad"):
    """`evaluate.score` of the model's predictions on a validation source
    (`recipes.detectnet.data`; streamed, 20 images per batch).

    Under a `tf.distribute` strategy with R replicas, a last batch of fewer
    than R images leaves a replica without data, which TensorFlow 2.21 fails
    on (BatchNormalization: "Incompatible shapes: [0,...]"): the last batch is
    padded with copies of the first image and their outputs dropped.
    """
    labels = data.labels_of(source)
    images = data.dataset(source, image_size, BATCH, targets=False, fit=fit)
    strategy = getattr(model, "distribute_strategy", None)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    last = len(labels) % BATCH
    if 0 < last < replicas:
        single = images.unbatch()
        images = single.concatenate(single.take(1).repeat(replicas - last)).batch(BATCH)
    outputs = model.predict(images, verbose=0)
    outputs = {name: value[: len(labels)] for name, value in outputs.items()}
    return evaluate.score(outputs, labels, scale=scale)


class DetectionScore(keras.callbacks.Callback):
    """Adds `detection_mAP` and `detection_mAP_spread` (DIGITS, on a
    validation source) to the epoch logs, so that the callbacks after it
    (`EvolutionCallback(monitor="detection_mAP")`, TensorBoard) see them;
    put it before them.

    Args:
        source: The validation source (`data.scan` examples or
            `(images, labels)`).
        image_size: `(height, width)` of the network input.
        scale: `evaluate.kitti_scale` of the input height.
        fit: How files reach the input size (`data.scan`).
        on_epoch: Optional `(epoch, result, logs)` hook with the full
            `evaluate.score` dict.
    """

    def __init__(self, source, image_size, scale, fit="pad", on_epoch=None):
        super().__init__()
        self.source, self.image_size, self.scale, self.fit = source, image_size, scale, fit
        self.on_epoch = on_epoch

    def on_epoch_end(self, epoch, logs=None):
        result = detection_scores(self.model, self.source, self.image_size, self.scale, self.fit)
        if logs is not None:
            logs["detection_mAP"] = result["mAP"]
            logs["detection_mAP_spread"] = result["mAP_spread"]
        if self.on_epoch is not None:
            self.on_epoch(epoch, result, logs if logs is not None else {})
