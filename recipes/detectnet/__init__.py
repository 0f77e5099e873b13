"""GoogLeNet-based DetectNet (NVIDIA DIGITS, KITTI cars) in Keras 3.

One concept per module (import the one you need; nothing heavy is imported
here):

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

See docs/detectnet.md.
"""
