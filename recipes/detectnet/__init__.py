"""GoogLeNet-based DetectNet (NVIDIA DIGITS, KITTI cars) in Keras 3.

Importing the package registers the custom objects a saved DetectNet refers
to (`losses`), so `keras.models.load_model` works in a fresh process after
`import recipes.detectnet` (and, for evolved models, `import keras_evosynth`).
Inside the tfmot baseline's legacy-Keras process (`TF_USE_LEGACY_KERAS=1`)
nothing is imported.

One concept per module (import the one you need):

- `model`: the network (`detectnet(...)`), width multiplier, input size.
- `targets`: the DetectNet ground-truth encoder (coverage, bbox corners,
  1/w, 1/h, obj_norm, plus a DontCare weight channel).
- `losses`: the L2 coverage + 2 x L1 bbox loss as Keras losses.
- `postprocess`: box decoding and OpenCV-`groupRectangles`-equivalent
  clustering.
- `metrics`: DIGITS "mAP" (precision x recall / 100 at IoU 0.7).
- `kitti_ap`: a true average precision, KITTI-style (Easy/Moderate/Hard).
- `kitti`: KITTI label reader/writer and dataset loading.
- `scenes`: seeded generator of KITTI-format road scenes.
- `data`: the tf.data input pipeline (streamed KITTI folders, checks).
- `augment`: DIGITS' training augmentation on Keras' bounding-box layers.
- `callbacks`: the validation DIGITS mAP as a Keras callback.

See docs/detectnet.md.
"""

import os as _os

if _os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    from recipes.detectnet import losses  # noqa: F401,E402  (registers the saved losses)
