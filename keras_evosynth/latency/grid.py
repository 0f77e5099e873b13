"""Grid maths of the latency table: the channel counts a grid axis uses
(`_axis_candidates`, `_coarse`), the grid of one op signature while it is
measured (`_Grid`) and once measured (`Entry`, read by linear
interpolation, channel counts rounded up to XNNPACK's `TILE`), and an op's
measured forms read as the fastest (`_Fastest`).
"""

import dataclasses
import itertools
import math

import numpy as np

#: Channel tile of XNNPACK's int8 kernels: `predict` rounds a live channel
#: count that is not a grid point up to a multiple of it.
TILE = 8


def _axis_candidates(maximum, step):
    """Channel counts a grid axis may use: multiples of `step` up to the
    maximum, the maximum itself, and `min(step, maximum)` at the bottom."""
    points = set(range(step, maximum + 1, step)) | {maximum, min(step, maximum)}
    return sorted(points)


def _coarse(candidates, count):
    if len(candidates) <= count:
        return list(candidates)
    picks = np.linspace(0, len(candidates) - 1, count).round().astype(int)
    return sorted({candidates[i] for i in picks})


def _tiled(count, axis, tile):
    """`count` rounded up to a multiple of `tile` unless it is a grid point
    (at most the axis maximum).

    >>> _tiled(61, [8, 16, 61], 8), _tiled(13, [8, 16, 61], 8), _tiled(62, [8, 16, 64], 8)
    (61, 16, 64)
    """
    if count in axis:
        return count
    return min(math.ceil(count / tile) * tile, axis[-1])


def _interp_1d(axis, values, x):
    """Linear interpolation, flat outside the measured range."""
    return float(np.interp(x, axis, values))


@dataclasses.dataclass
class Entry:
    """The measured grid of one op signature.

    Attributes:
        signature: The op signature (see `Op.signature`).
        axes: `[cin points]` (1-D ops) or `[cin points, cout points]`.
        ms: Costs in ms at the grid points (a list, or a list of rows).
    """

    signature: dict
    axes: list
    ms: list

    def cost(self, cin, cout=None, tile=None):
        """Interpolated cost (ms) at `cin` (and `cout`) live channels.

        With `tile`, a count that is not a grid point is first rounded up
        to a multiple of `tile` (at most the axis maximum): int8 kernels
        work on tiles of channels, so 61 filters cost what 64 cost.
        """
        if tile:
            cin = _tiled(cin, self.axes[0], tile)
            if cout is not None and len(self.axes) > 1:
                cout = _tiled(cout, self.axes[1], tile)
        if len(self.axes) == 1:
            return _interp_1d(self.axes[0], self.ms, cin)
        rows = np.asarray(self.ms, dtype=np.float64)
        col = [_interp_1d(self.axes[1], row, cout) for row in rows]
        return _interp_1d(self.axes[0], col, cin)

    def covers(self, cin, cout=None):
        if cin > self.axes[0][-1] + 1e-9:
            return False
        return len(self.axes) == 1 or cout <= self.axes[1][-1] + 1e-9

    def to_dict(self):
        return {"signature": self.signature, "axes": self.axes, "ms": self.ms}


class _Fastest:
    """An op's measured forms (direct, space-to-depth) read as one: the
    cost of the fastest at each channel count."""

    def __init__(self, entries):
        self.entries = entries
        self.axes = entries[0].axes

    def cost(self, cin, cout=None, tile=None):
        return min(e.cost(cin, cout, tile=tile) for e in self.entries)

    def covers(self, cin, cout=None):
        return all(e.covers(cin, cout) for e in self.entries)


class _Grid:
    """The grid of one op signature while it is being measured: its domain
    covers every op of the model sharing the signature, and each of those
    ops' own channel counts (the anchors) is a grid point."""

    def __init__(self, ops, step):
        self.op = ops[0]
        self.key = self.op.key
        cin = max(op.cin for op in ops)
        # One channel is a regime of its own (XNNPACK runs a 1x1 int8
        # convolution with one filter 3-4x faster than with 2 to 16), and
        # heavily cut models keep exactly one in many layers: always timed.
        self.candidates = [_axis_candidates(cin, step)]
        self.own = [{op.cin for op in ops}]
        if self.op.two_d:
            self.candidates.append(_axis_candidates(max(op.cout for op in ops), step))
            self.own.append({op.cout for op in ops})
        self.anchors = [{1, *own} for own in self.own]
        self.candidates = [sorted(set(c) | a) for c, a in
                           zip(self.candidates, self.anchors, strict=True)]
        self.values = {}  # point tuple -> ms
        self.batches = {}  # point tuple -> index of the timing batch it was timed in
        self.axes = [[] for _ in self.candidates]

    def measure(self, measurer, axes):
        """Times the points of `axes` not timed yet. The always-timed one
        channel is dropped from an axis where LiteRT refuses its micro-model
        (and is not an op's own count); any other refusal is an error."""
        axes = [list(a) for a in axes]
        points = [p for p in itertools.product(*axes) if p not in self.values]
        if points:
            flatbuffers = measurer.flatbuffers(self.op, points)
            times = measurer.time(flatbuffers)
            for point, ms in zip(points, times, strict=True):
                if ms is not None:
                    self.values[point] = ms
                    self.batches[point] = measurer.batch
                    continue
                axis = next((k for k, v in enumerate(point) if v == 1 and 1 not in self.own[k]),
                            None)
                if axis is None:
                    raise ValueError(
                        f"LatencyTable: LiteRT's XNNPACK delegate refuses the int8 "
                        f"micro-model of layer '{self.op.name}' at {point} channels "
                        f"({measurer.refusals}); this layer cannot be timed.")
                for values in (axes[axis], self.candidates[axis]):
                    if 1 in values:
                        values.remove(1)
        self.axes = axes

    def rescale(self, factors):
        """Multiplies each point's cost by `factors[batch]` of the batch it
        was timed in (the host's drift, `_Measurer.reanchor`)."""
        for point, batch in self.batches.items():
            self.values[point] *= factors[batch]

    def entry(self):
        if self.op.two_d:
            ms = [[self.values[(a, b)] for b in self.axes[1]] for a in self.axes[0]]
        else:
            ms = [self.values[(a,)] for a in self.axes[0]]
        return Entry(self.op.signature, [list(a) for a in self.axes], ms)

    def split_points(self, refine, floor, per_axis=None):
        """New axis points where neighbouring costs differ by more than
        `refine` (relative) and `floor` (ms); at most `per_axis` per axis,
        the intervals whose cost changes most first."""
        added = [set() for _ in self.axes]
        changes = [[] for _ in self.axes]
        for axis, points in enumerate(self.axes):
            others = [self.axes[k] for k in range(len(self.axes)) if k != axis]
            for low, high in zip(points, points[1:], strict=False):
                between = [c for c in self.candidates[axis] if low < c < high]
                if not between:
                    continue
                change = 0.0
                for rest in itertools.product(*others):
                    a = self.values[_insert(rest, axis, low)]
                    b = self.values[_insert(rest, axis, high)]
                    if abs(a - b) > refine * max(a, b, 1e-9) and abs(a - b) > floor:
                        change = max(change, abs(a - b))
                if change:
                    changes[axis].append((change, between[len(between) // 2]))
        for axis, found in enumerate(changes):
            found.sort(reverse=True)
            added[axis] = {value for _, value in found[:per_axis]}
        return added


def _insert(rest, axis, value):
    point = list(rest)
    point.insert(axis, value)
    return tuple(point)
