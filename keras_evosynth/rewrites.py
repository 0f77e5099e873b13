"""Exact rewrites that make a deployed model faster without changing it.

**Space-to-depth.** A strided convolution on few input channels (the 7x7/2
first convolution of GoogLeNet on an RGB image) runs far below the speed of
the layers after it: the CPU kernels vectorise over channels, and there are
three. With block size `s` equal to the stride, the same convolution is a
stride-1 convolution on the image rearranged into `s x s` blocks
(`SpaceToDepth`, `s*s*C` channels at `1/s` the resolution):

    y[i, j, f] = sum_{ky, kx, c} x_p[i*s + ky, j*s + kx, c] * w[ky, kx, c, f]

with `x_p` the zero-padded input. Write `ky = u*s + dy` (and `kx` alike):
`x_p[(i+u)*s + dy, (j+v)*s + dx, c]` is channel `(dy*s + dx)*C + c` of block
`(i+u, j+v)` (the order of `keras.ops.space_to_depth`), so

    y[i, j, f] = sum_{u, v, k} b[i+u, j+v, k] * w'[u, v, k, f],
    w'[u, v, (dy*s + dx)*C + c, f] = w[u*s + dy, v*s + dx, c, f]

(zero where `u*s + dy` is past the kernel): a `ceil(K/s) x ceil(K/s)`
stride-1 convolution. A top padding that is not a multiple of `s` is rounded
up to one and the kernel shifted down by the difference (zero rows on top),
so every padding lives in block space, where it is a quarter of the pixels
(or is the stride-1 convolution's own `"same"` padding). The result is the
original convolution exactly: same weights, zeros added.

**Several outputs per block.** With `outputs_per_block=m` the blocks are
`b = s*m` pixels wide and each block position computes the `m x m` outputs
it covers at once: sub-output `(dy, dx)` of filter `f` is output channel
`(dy*m + dx)*F + f` of a `ceil(((m-1)*s + e + K)/b)`-wide stride-1
convolution, whose kernel holds `w` shifted by `(dy*s + e, dx*s + e)` inside
the block grid, and `DepthToSpace(m)` puts the sub-outputs back in place
(`Cropping2D` removes the extra ones when the output size is not a multiple
of `m`). Fewer, wider pixels: on a Sapphire Rapids host DetectNet's 7x7/2
stem at 128x384 ran in 0.22 ms in int8 with `m = 2` against 1.05 ms with
`m = 1` and 2.14 ms direct (LiteRT 2.3, XNNPACK, 1 thread).

Whether it pays depends on the target: measured here (LiteRT 2.3, XNNPACK,
int8, 1 thread, AMD EPYC), DetectNet's conv1 at 128x384 ran 1.3x faster
rewritten; on another host 3.7x (DESIGN §5b). `LatencyTable.measure` times
the direct form and the rewrites (`outputs_per_block` 1 and 2) of every
eligible layer and `LatencyTable.space_to_depth_layers` names those where a
rewrite is faster, with its `outputs_per_block`; `compact` /
`export_litert` take that mapping (`space_to_depth=`).
"""

import dataclasses
import math

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="keras_evosynth")
class SpaceToDepth(keras.layers.Layer):
    """Rearranges `block_size x block_size` pixel blocks into channels.

    Channels-last: `(batch, H, W, C) -> (batch, H/b, W/b, b*b*C)`, output
    channel `(dy*b + dx)*C + c` holding pixel `(dy, dx)` of each block
    (`keras.ops.space_to_depth`; LiteRT's `SPACE_TO_DEPTH`). H and W must be
    multiples of the block size.

    Args:
        block_size: The block edge (>= 2).
        **kwargs: `keras.layers.Layer` arguments (`name`, ...).

    Example:

    >>> import numpy as np
    >>> x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    >>> y = SpaceToDepth(2)(x)
    >>> tuple(y.shape), [float(v) for v in y[0, 0, 0]]
    ((1, 2, 2, 4), [0.0, 1.0, 4.0, 5.0])
    """

    def __init__(self, block_size, **kwargs):
        super().__init__(**kwargs)
        self.block_size = _check_block_size(type(self).__name__, block_size)

    def call(self, inputs):
        return keras.ops.space_to_depth(inputs, self.block_size, data_format="channels_last")

    def compute_output_shape(self, input_shape):
        b = self.block_size
        *lead, h, w, c = input_shape
        for name, size in (("height", h), ("width", w)):
            if size is not None and size % b:
                raise ValueError(
                    f"SpaceToDepth '{self.name}': input {name} {size} is not a multiple "
                    f"of block_size {b}."
                )
        return (
            *lead,
            None if h is None else h // b,
            None if w is None else w // b,
            None if c is None else c * b * b,
        )

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


@keras.saving.register_keras_serializable(package="keras_evosynth")
class DepthToSpace(keras.layers.Layer):
    """The inverse of `SpaceToDepth`: channels back into pixel blocks.

    Channels-last: `(batch, H, W, b*b*C) -> (batch, H*b, W*b, C)`, input
    channel `(dy*b + dx)*C + c` going to pixel `(dy, dx)` of each block
    (`keras.ops.depth_to_space`; LiteRT's `DEPTH_TO_SPACE`).

    Args:
        block_size: The block edge (>= 2).
        **kwargs: `keras.layers.Layer` arguments (`name`, ...).

    Example:

    >>> import numpy as np
    >>> x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    >>> y = DepthToSpace(2)(SpaceToDepth(2)(x))
    >>> tuple(y.shape), bool(np.array_equal(y, x))
    ((1, 4, 4, 1), True)
    """

    def __init__(self, block_size, **kwargs):
        super().__init__(**kwargs)
        self.block_size = _check_block_size(type(self).__name__, block_size)

    def call(self, inputs):
        return keras.ops.depth_to_space(inputs, self.block_size, data_format="channels_last")

    def compute_output_shape(self, input_shape):
        b = self.block_size
        *lead, h, w, c = input_shape
        if c is not None and c % (b * b):
            raise ValueError(
                f"DepthToSpace '{self.name}': {c} input channels are not a multiple of "
                f"block_size**2 = {b * b}."
            )
        return (
            *lead,
            None if h is None else h * b,
            None if w is None else w * b,
            None if c is None else c // (b * b),
        )

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


def _check_block_size(layer, block_size):
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 2:
        raise ValueError(f"{layer}: block_size must be an int >= 2, got {block_size!r}.")
    return block_size


@dataclasses.dataclass(frozen=True)
class SpaceToDepthPlan:
    """How one convolution is rewritten (see the module docstring).

    Attributes:
        block: Block size (the convolution's stride x `outputs_per_block`).
        image_pad: `(bottom, right)` zero rows/columns added to the image so
            that its size is a multiple of `block` (usually 0).
        shift: `(top, left)` zero rows/columns prepended to the kernel.
        kernel_size: The stride-1 kernel's size, in blocks.
        block_pad: `((top, bottom), (left, right))` in blocks; negative =
            cropped.
        padding: `"same"` when `block_pad` is exactly the stride-1
            convolution's `"same"` padding (folded into it), else `"valid"`.
        outputs_per_block: `m`: each block computes `m x m` outputs
            (1: one; `DepthToSpace(m)` after the convolution otherwise).
        output_crop: `(bottom, right)` extra outputs cropped after
            `DepthToSpace` (the output size is not a multiple of `m`).
    """

    block: int
    image_pad: tuple
    shift: tuple
    kernel_size: tuple
    block_pad: tuple
    padding: str
    outputs_per_block: int = 1
    output_crop: tuple = (0, 0)


def space_to_depth_plan(kernel_size, strides, padding, input_size, dilation=(1, 1),
                        outputs_per_block=1):
    """The rewrite of a strided convolution, or the reason there is none.

    Args:
        kernel_size, strides, dilation: Pairs, as in `keras.layers.Conv2D`.
        padding: `"same"` or `"valid"`.
        input_size: `(height, width)` of the input.
        outputs_per_block: `m` >= 1: blocks of `stride * m` pixels, each
            computing `m x m` outputs (see the module docstring).

    Returns:
        `(plan, None)` with a `SpaceToDepthPlan`, or `(None, reason)`.

    Raises:
        ValueError: `outputs_per_block` is not an int >= 1.

    Example:

    >>> plan, _ = space_to_depth_plan((7, 7), (2, 2), "same", (128, 384))
    >>> plan.kernel_size, plan.padding
    ((4, 4), 'same')
    >>> plan, _ = space_to_depth_plan((7, 7), (2, 2), "same", (128, 384), outputs_per_block=2)
    >>> plan.block, plan.kernel_size, plan.padding
    (4, (3, 3), 'same')
    >>> space_to_depth_plan((3, 3), (1, 1), "same", (8, 8))[1]
    'stride 1'
    """
    m = outputs_per_block
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"space_to_depth_plan: outputs_per_block must be an int >= 1, "
                         f"got {m!r}.")
    m = int(m)
    strides = tuple(int(s) for s in strides)
    if strides[0] != strides[1]:
        return None, f"unequal strides {strides}"
    stride = strides[0]
    if stride < 2:
        return None, f"stride {stride}"
    if tuple(int(d) for d in dilation) != (1, 1):
        return None, f"dilation {tuple(dilation)}"
    if padding not in ("same", "valid"):
        return None, f"padding {padding!r}"
    if any(d is None for d in input_size):
        return None, "unknown input size"
    block = stride * m
    image_pad, shift, sizes, pads, crop = [], [], [], [], []
    for size, k in zip(input_size, kernel_size, strict=True):
        size, k = int(size), int(k)
        if padding == "same":
            out = math.ceil(size / stride)
            before = max((out - 1) * stride + k - size, 0) // 2
        else:
            out = (size - k) // stride + 1
            before = 0
        if out < 1:
            return None, "kernel larger than the input"
        out_blocks = math.ceil(out / m)
        top_blocks = math.ceil(before / block)
        e = top_blocks * block - before
        kb = math.ceil(((m - 1) * stride + e + k) / block)
        image_blocks = math.ceil(size / block)
        bottom_blocks = out_blocks + kb - 1 - top_blocks - image_blocks
        image_pad.append(image_blocks * block - size)
        shift.append(e)
        sizes.append(kb)
        pads.append((top_blocks, bottom_blocks))
        crop.append(out_blocks * m - out)
    same = all(p == ((kb - 1) // 2, kb - 1 - (kb - 1) // 2)
               for p, kb in zip(pads, sizes, strict=True))
    return SpaceToDepthPlan(
        block=block,
        image_pad=tuple(image_pad),
        shift=tuple(shift),
        kernel_size=tuple(sizes),
        block_pad=tuple(pads),
        padding="same" if same and any(kb > 1 for kb in sizes) else "valid",
        outputs_per_block=m,
        output_crop=tuple(crop),
    ), None


def space_to_depth_kernel(kernel, plan):
    """The stride-1 kernel on the block tensor (exact: the same weights).

    Args:
        kernel: `(K_h, K_w, C, F)` array.
        plan: Its `SpaceToDepthPlan`.

    Returns:
        `(kb_h, kb_w, b*b*C, m*m*F)` array (`b = plan.block`,
        `m = plan.outputs_per_block`).

    Example:

    >>> plan, _ = space_to_depth_plan((3, 3), (2, 2), "valid", (9, 9))
    >>> blocks = space_to_depth_kernel(np.ones((3, 3, 1, 1)), plan)
    >>> blocks.shape, int(blocks.sum())    # the 9 weights and 7 zeros
    ((2, 2, 4, 1), 9)
    """
    kernel = np.asarray(kernel)
    b, m = plan.block, plan.outputs_per_block
    s = b // m  # the original stride
    kh, kw, c, f = kernel.shape
    (eh, ew), (bh, bw) = plan.shift, plan.kernel_size
    full = np.zeros((bh * b, bw * b, c, m, m, f), kernel.dtype)
    for dy in range(m):
        for dx in range(m):
            top, left = eh + dy * s, ew + dx * s
            full[top:top + kh, left:left + kw, :, dy, dx] = kernel
    blocks = full.reshape(bh, b, bw, b, c, m * m * f).transpose(0, 2, 1, 3, 4, 5)
    return blocks.reshape(bh, bw, b * b * c, m * m * f)


def space_to_depth_weights(kernel, bias, plan):
    """`[kernel]` or `[kernel, bias]` of the rewritten convolution: the
    kernel by `space_to_depth_kernel`, the bias repeated for each of the
    `m x m` sub-outputs.

    Example:

    >>> plan, _ = space_to_depth_plan((3, 3), (2, 2), "same", (8, 8), outputs_per_block=2)
    >>> [w.shape for w in space_to_depth_weights(np.ones((3, 3, 1, 2)), np.arange(2.0), plan)]
    [(2, 2, 16, 8), (8,)]
    """
    weights = [space_to_depth_kernel(kernel, plan)]
    if bias is not None:
        weights.append(np.tile(np.asarray(bias), plan.outputs_per_block ** 2))
    return weights


def apply_space_to_depth(x, plan, conv_config, name):
    """Builds `SpaceToDepth` (+ padding), the stride-1 `Conv2D` and, with
    several outputs per block, `DepthToSpace` (+ cropping) on `x`.

    Args:
        x: The original convolution's input (a Keras tensor).
        plan: A `SpaceToDepthPlan`.
        conv_config: The original `Conv2D`'s config (filters, activation,
            use_bias, regularizers ... are kept).
        name: Name of the new convolution (the blocks layer is
            `f"{name}_space_to_depth"`).

    Returns:
        `(y, conv)`: the output tensor and the new `Conv2D`, whose weights
        the caller sets (`space_to_depth_weights`).
    """
    layers = keras.layers
    if any(plan.image_pad):
        x = layers.ZeroPadding2D(((0, plan.image_pad[0]), (0, plan.image_pad[1])),
                                 name=f"{name}_image_pad")(x)
    x = SpaceToDepth(plan.block, name=f"{name}_space_to_depth")(x)
    if plan.padding == "valid":
        grow = tuple((max(a, 0), max(b, 0)) for a, b in plan.block_pad)
        crop = tuple((max(-a, 0), max(-b, 0)) for a, b in plan.block_pad)
        if any(map(any, grow)):
            x = layers.ZeroPadding2D(grow, name=f"{name}_block_pad")(x)
        if any(map(any, crop)):
            x = layers.Cropping2D(crop, name=f"{name}_block_crop")(x)
    m = plan.outputs_per_block
    config = dict(conv_config)
    config.update(name=name, kernel_size=plan.kernel_size, strides=(1, 1),
                  padding=plan.padding, dilation_rate=(1, 1),
                  filters=conv_config["filters"] * m * m)
    conv = layers.Conv2D.from_config(config)
    y = conv(x)
    if m > 1:
        y = DepthToSpace(m, name=f"{name}_depth_to_space")(y)
        if any(plan.output_crop):
            y = layers.Cropping2D(((0, plan.output_crop[0]), (0, plan.output_crop[1])),
                                  name=f"{name}_output_crop")(y)
    return y, conv
