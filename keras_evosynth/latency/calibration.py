"""Measuring a table: `_Measurer` times the micro-models of a model's op
grids (coarse first, then refined where costs change and matter) and then
the whole model at a few fractions of its filters (the anchors), with
neutral weights (`_neutral_weights`), to fit its fixed remainder and
in-graph scale (`curve`).

A shared host drifts (a neighbour's load, clock changes): every batch of
micro-models, and the anchors, are timed interleaved with the uncut model
(the reference), and each batch's costs are re-anchored to the median of
the reference's times over the run (`_Measurer.reanchor`), so a batch timed
while the host ran 1.3x slower counts as if timed at the run's usual speed.
The spread the reference saw is recorded with the model (`drift`).
"""

import dataclasses
import datetime
import math
import os
import sys
import time
import warnings

import keras
import numpy as np

from keras_evosynth import genetics
from keras_evosynth._graph import trace
from keras_evosynth.channel_analysis import ChannelAnalysis
from keras_evosynth.latency.curve import _fit_anchors
from keras_evosynth.latency.expectation import kept_channels
from keras_evosynth.latency.grid import _coarse, _Grid
from keras_evosynth.latency.ops import fingerprint
from keras_evosynth.latency.timing import (
    Converters,
    int8_flatbuffer,
    interpreter,
    micro_model,
    null_flatbuffer,
    time_interleaved,
    whole_flatbuffer,
)

# Refinement stops before a grid would hold more points than this (2-D grids
# of wide layers would otherwise grow by whole rows for minutes).
MAX_GRID_POINTS = 96
#: Fractions of the sampled filters at which the whole model is timed to fit
#: the fixed remainder and the in-graph scale of op costs.
ANCHOR_KEEP = (1.0, 0.7, 0.4, 0.2, 0.1)
# Models with removable branches (`genetics.branches`) are also timed with
# these fractions of their branches removed, every other filter kept: the
# op sums a branch-removing environment reaches lie far below the uniform
# cuts' (thin ops cost per op), where the curve would only extrapolate.
ANCHOR_BRANCHES = (1.0, 0.5)
# `workers=None` converts micro-models in a pool of one process per core
# (at most MAX_WORKERS) when a measurement has this many op grids to fill.
PARALLEL_GRIDS = 12
MAX_WORKERS = 4


class _Measurer:
    """Fills a table's entries for a list of ops, then fits the model's
    remainder and scale."""

    def __init__(self, table, ops, step, coarse, refine, rounds, verbose, backend=None,
                 dense_below=0, forms=(), workers=1):
        self.table, self.ops, self.backend = table, ops, backend
        self.workers = workers  # None: a pool when there are PARALLEL_GRIDS grids
        self.converters = None
        self.forms = list(forms)  # alternative forms of ops (space-to-depth)
        self.dense_below = dense_below
        self.step, self.coarse, self.refine, self.rounds = step, coarse, refine, rounds
        self.verbose = verbose
        self._null = None
        self.refusals = ""
        self.reference = None  # interpreter of the uncut model, timed with every batch (host)
        self.reference_ms = []  # its median invoke ms in each batch
        self.quiet_ms = None  # their median: what the costs are re-anchored to
        self.batch = -1  # index of the last timed batch

    def say(self, text):
        if self.verbose:
            print(text, file=sys.stderr, flush=True)

    def run(self, model):
        from tflite_bench.progress import Progress

        groups = {}
        for op in self.ops + self.forms:
            groups.setdefault(op.key, []).append(op)
        todo = []
        for ops in groups.values():
            entry = self.table.entries.get(ops[0].key)
            if entry is None or not all(entry.covers(op.cin, op.cout) for op in ops):
                todo.append(_Grid(ops, self.step))
        key = fingerprint(self.ops)
        if not todo and key in self.table.models:
            return
        start = time.perf_counter()
        plain = _plain(model)
        if todo and self.backend is None:
            self.reference = _reference(plain, self.table.threads, model.name)
        label = f"latency table of '{model.name}': {len(todo)} op signatures"
        workers = self.workers
        if workers is None:
            workers = min(os.cpu_count() or 1, MAX_WORKERS) if len(todo) >= PARALLEL_GRIDS else 1
        with Converters(workers) as self.converters, \
                Progress(label, 2 * len(todo) + 1, enabled=bool(self.verbose)) as bar:
            for grid in todo:  # coarse grids first, so refinement knows the total
                grid.measure(self, [
                    sorted(set(_coarse(c, self.coarse)) | a
                           | {v for v in c if v <= self.dense_below})
                    for c, a in zip(grid.candidates, grid.anchors, strict=True)
                ])
                self.table.entries[grid.key] = grid.entry()
                bar(1)
            total = sum(self.table._cost(op, op.cin, op.cout) for op in self.ops)
            for grid in todo:
                self._refine(grid, total)
                self.table.entries[grid.key] = grid.entry()
                self._save()
                bar(1)
            self.reanchor(todo)
            self._calibrate(model, key, plain)
            self._save()
            bar(1)
        self.say(f"latency table: {self.table.timed_points} grid points timed in "
                 f"{time.perf_counter() - start:.0f}s")

    def _save(self):
        if self.table.path is not None:
            self.table.save()

    def flatbuffer(self, op, cin, cout=None):
        """The int8 micro-model of `op` at `cin` (x `cout`) channels."""
        return int8_flatbuffer(micro_model(op.signature, cin, cout if op.two_d else cin))

    def flatbuffers(self, op, points):
        """The int8 micro-models of `op` at `points` (`(cin,)` or `(cin,
        cout)`), converted by the pool where there is one (`Converters`)."""
        if self.converters is None or self.converters.workers <= 1:
            return [self.flatbuffer(op, *point) for point in points]
        return self.converters.map([(op.signature, p[0], p[-1] if op.two_d else p[0])
                                    for p in points])  # fmt: skip

    def null(self):
        if self._null is None:
            self._null = null_flatbuffer()
        return self._null

    def time(self, flatbuffers):
        """Costs (ms) of micro-models, interleaved with the empty model (or
        from the backend); None for a micro-model the XNNPACK delegate
        refuses to prepare (its error message is in `self.refusals`)."""
        self.table.timed_points += len(flatbuffers)
        self.batch += 1
        if self.backend is not None:
            return [None if t is None else float(t) for t in self.backend.op_costs(flatbuffers)]
        interps = [interpreter(self.null(), self.table.threads)]
        if self.reference is not None:
            interps.append(self.reference)
        ready = []
        for flatbuffer in flatbuffers:
            try:
                interps.append(interpreter(flatbuffer, self.table.threads))
                ready.append(True)
            except RuntimeError as error:  # e.g. a requantization scale beyond 256
                self.refusals = str(error)[:200]
                ready.append(False)
        times = iter(time_interleaved(interps, rounds=self.rounds))
        null = next(times)
        if self.reference is not None:
            self.reference_ms.append(next(times))
        return [max(next(times) - null, 0.0) if ok else None for ok in ready]

    def reanchor(self, grids):
        """Re-anchors the costs of `grids` timed in this run to the run's
        median reference time: each point's cost times `median /
        reference ms of its batch` (1 where no reference was timed)."""
        if not self.reference_ms:
            return
        self.quiet_ms = float(np.median(self.reference_ms))
        factors = [self.quiet_ms / ms for ms in self.reference_ms]
        for grid in grids:
            grid.rescale(factors)
            self.table.entries[grid.key] = grid.entry()
        spread = max(self.reference_ms) / min(self.reference_ms)
        if spread > 1.05:
            self.say(f"latency table: the host drifted during the measurement (the uncut "
                     f"model took {min(self.reference_ms):.3f}-{max(self.reference_ms):.3f} ms, "
                     f"x{spread:.2f}); costs re-anchored to its median, "
                     f"{self.quiet_ms:.3f} ms")

    def _refine(self, grid, total):
        """Bisects where the cost changes, largest changes first, until no
        interval needs it or the grid holds `MAX_GRID_POINTS` points."""
        floor = 0.005 * total
        for _ in range(12):
            added = grid.split_points(self.refine, floor, per_axis=2)
            if not any(added):
                return
            grown = math.prod(len(a) + len(n) for a, n in zip(grid.axes, added, strict=True))
            if grown > MAX_GRID_POINTS:
                return
            grid.measure(self, [sorted(set(a) | set(n)) for a, n in zip(grid.axes, added,
                                                                         strict=True)])

    def _calibrate(self, model, key, plain):
        """Times the whole model at `ANCHOR_KEEP` fractions of its filters
        (and, with removable branches, at `ANCHOR_BRANCHES` of them removed)
        (interleaved with the empty model) and fits `whole = scale * grid sum
        + remainder` over them (least squares): the fixed remainder (input
        quantize, output dequantize, invoke overhead) and how op costs inside
        one graph differ from the same ops timed alone. The anchors are timed
        with the reference and re-anchored like the grids (`reanchor`)."""
        from keras_evosynth.conversion import evolvable

        rng = np.random.default_rng(0)
        data = [rng.uniform(0, 1, (4, *s[1:])).astype("float32") for s in plain.shapes]
        anchors, flatbuffers, interps = [], [], [interpreter(self.null(), self.table.threads)]
        plan = [{"keep": keep} for keep in ANCHOR_KEEP]
        # layers evolvable() does not know (SeparableConv2D, custom ones) stay
        # whole: fixed costs, priced in the remainder
        if genetics.branches(genetics.genomes_from_model(
                evolvable(plain.model, skip_unsupported=True))[0]):
            plan += [{"keep": 1.0, "branches": b} for b in ANCHOR_BRANCHES]
        cuts = [_anchor_model(self.table, plain, anchor["keep"], rng,
                              anchor.get("branches", 0.0)) for anchor in plan]
        converters = self.converters or Converters(1)
        converted = converters.convert_wholes([(cut, data) for cut, _ in cuts])
        for anchor, (_, grid_ms), whole in zip(plan, cuts, converted, strict=True):
            try:
                if isinstance(whole, RuntimeError):
                    raise whole
                interps.append(interpreter(whole, self.table.threads))
            except RuntimeError as error:  # XNNPACK may refuse a cut model
                if anchor == plan[0]:
                    raise
                warnings.warn(f"LatencyTable: the anchor {anchor} of '{model.name}' "
                              f"did not convert ({str(error)[:200]}); fitting without it.",
                              stacklevel=3)
                continue
            anchors.append({**anchor, "grid_ms": grid_ms})
            flatbuffers.append(whole)
        drift = {}
        if self.backend is not None:
            null_ms, wholes = 0.0, self.backend.invoke_ms(flatbuffers)
        else:
            if self.reference is not None:
                interps.insert(1, self.reference)
            null_ms, *wholes = time_interleaved(interps, rounds=max(self.rounds, 7))
            if self.reference is not None:
                reference_ms, *wholes = wholes
                self.quiet_ms = self.quiet_ms or reference_ms
                factor = self.quiet_ms / reference_ms
                null_ms, wholes = null_ms * factor, [ms * factor for ms in wholes]
                seen = [*self.reference_ms, reference_ms]
                drift = {"drift": {"reference_ms": self.quiet_ms, "batches": len(seen),
                                   "spread": max(seen) / min(seen)}}
        for anchor, whole_ms in zip(anchors, wholes, strict=True):
            anchor["whole_ms"] = float(whole_ms)
        scale, remainder = _fit_anchors(anchors)
        self.table.models[key] = {
            "name": model.name,
            "anchors": anchors,
            "scale": scale,
            "remainder_ms": remainder,
            "floor_ms": float(null_ms),
            "remainder_layers": self.ops.priced("remainder"),
            "untimed": self.ops.priced("untimed"),
            **drift,
            "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
        }
        self.table.timed_points += len(flatbuffers)


@dataclasses.dataclass(frozen=True)
class _Plain:
    """A measured model without its Evo layers, at batch 1.

    Attributes:
        model: The plain Keras model (`strip_evolvable` at batch 1).
        shapes: Its input batch shapes.
        originals: Ids of the layers it shares with the measured model
            (those compaction cannot re-create from their config): their
            weights are left alone.
    """

    model: keras.Model
    shapes: list
    originals: frozenset = frozenset()


def _plain(model):
    """`model` as a `_Plain`."""
    graph = trace(model)
    shapes = [(1, *graph.specs[t].shape[1:]) for t in keras.tree.flatten(graph.inputs)]
    plain = ChannelAnalysis(model, remove_channels=False).build(batch_shapes=shapes)
    return _Plain(plain, shapes,
                  frozenset(id(layer) for layer in model._flatten_layers(include_self=False)))


def _reference(plain, threads, name):
    """The interpreter of the uncut model (neutral weights, no rewrite) that
    every batch is timed with to follow the host's drift; None, with a
    warning, where it does not convert."""
    rng = np.random.default_rng(1)
    cut, _ = _anchor_model(None, plain, 1.0, rng)
    data = [rng.uniform(0, 1, (4, *s[1:])).astype("float32") for s in plain.shapes]
    try:
        return interpreter(whole_flatbuffer(cut, data), threads)
    except RuntimeError as error:
        warnings.warn(f"LatencyTable: the uncut '{name}' did not convert ({str(error)[:200]}); "
                      "its costs are not re-anchored to the host's drift.", stacklevel=3)
        return None


def _anchor_model(table, plain, keep, rng, branches=0.0):
    """`(plain model, grid sum ms)`: `plain` (a `_Plain`) with `keep` of each sampled
    layer's filters kept at random (at least one) and `branches` of its
    removable branches (`genetics.branches`, every `1 / branches`-th in
    graph order) removed, compacted, with neutral weights
    (`_neutral_weights`; the layers of `plain.originals` keep theirs).
    Without a `table`: not rewritten, and its grid sum is None."""
    from keras_evosynth.conversion import evolvable

    evo = evolvable(plain.model, skip_unsupported=True)
    if keep < 1.0 or branches > 0.0:
        genomes, layers = genetics.genomes_from_model(evo)
        members = list(genetics.branches(genomes).values())
        count = round(branches * len(members))
        removed = {m for i in range(count) for m in members[i * len(members) // count]}
        for index, (genome, layer) in enumerate(zip(genomes, layers, strict=True)):
            n = genome.cluster_mask.size
            if index in removed:
                layer.set_masks(cluster_mask=np.zeros(n, bool))
            elif not genome.protected and keep < 1.0:
                mask = np.zeros(n, bool)
                mask[rng.choice(n, size=max(1, round(keep * n)), replace=False)] = True
                layer.set_masks(cluster_mask=mask)
    grid_ms, rewrites = None, {}
    if table is not None:
        ops, live = kept_channels(evo)
        grid_ms = sum(table._cost(op, *n) for op, n in zip(ops, live, strict=True))
        rewrites = table._rewritten(ops, live)
    cut = ChannelAnalysis(evo, remove_channels=True).build(batch_shapes=plain.shapes,
                                                          space_to_depth=rewrites)
    _neutral_weights(cut, rng, plain.originals)
    return cut, grid_ms


_NEUTRAL = {"bias": 0.0, "beta": 0.0, "moving_mean": 0.0, "gamma": 1.0, "moving_variance": 1.0}


def _mirrored(values, identity, other):
    """`identity` where `values` is it, else `other` (same shape): a neutral
    setting that keeps the operators the converter emits (it folds a
    multiplication by 1 or an addition of 0 away, not others)."""
    values = np.asarray(keras.ops.convert_to_numpy(values), np.float64)
    return np.where(values == identity, identity, other).astype("float32")


def _neutral_preprocessing(layer):
    """`Rescaling` and `Normalization` made harmless for the calibration
    data (positive values stay positive: a mean subtraction would leave a
    ReLU nothing) with the same operators as the original: a scale or
    variance other than 1 stays a multiplication, an offset or mean other
    than 0 an addition (measured: an int8 `Normalization` with a mean costs
    a SUB and a MUL at full input resolution; with mean 0 and variance 1 the
    converter removes it)."""
    if isinstance(layer, keras.layers.Rescaling):
        layer.scale = _mirrored(layer.scale, 1.0, 0.5)
        layer.offset = _mirrored(layer.offset, 0.0, 0.5)
        if not np.ndim(layer.scale):
            layer.scale = float(layer.scale)
        if not np.ndim(layer.offset):
            layer.offset = float(layer.offset)
    elif isinstance(layer, keras.layers.Normalization) and layer.built:
        shift = 0.5 if layer.invert else -0.5  # (x + 0.5) / 2, or x * 2 + 0.5
        for name, identity, other in (("mean", 0.0, shift), ("variance", 1.0, 4.0)):
            # an adapted layer's statistics are its variables (its `mean`
            # tensor is only refreshed by `finalize_state`)
            adapted = getattr(layer, f"adapt_{name}", None) if layer.input_mean is None else None
            value = _mirrored(getattr(layer, name) if adapted is None else adapted,
                              identity, other)
            if adapted is not None:
                adapted.assign(value)
                value = value.reshape(layer._broadcast_shape)
            setattr(layer, name, keras.ops.convert_to_tensor(value))


def _neutral_weights(model, rng, originals=()):
    """Kernels uniform in `[0, 2 / fan-in]`, biases 0, batch norms identity,
    `Rescaling` and `Normalization` neutral (`_neutral_preprocessing`);
    layers whose id is in `originals` (shared with the user's model) are
    left alone.

    Positive inputs then stay positive and of the same mean through every
    layer: no output is constant on the calibration data (a cut can leave a
    layer a few filters, and a ReLU that is never positive gets an int8
    scale whose requantization XNNPACK refuses), and nothing overflows.
    Latency does not depend on the values, except where the converter
    folds a layer away (a multiplication by 1), so those keep their kind."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if id(layer) in originals:
            continue
        _neutral_preprocessing(layer)
        for variable in layer.weights:
            shape = tuple(variable.shape)
            if variable.name == "kernel" and len(shape) >= 2:
                depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
                fan_in = max(1, math.prod(shape[:2] if depthwise else shape[:-1]))
                variable.assign(rng.uniform(0.0, 2.0 / fan_in, shape).astype(variable.dtype))
            elif variable.name in _NEUTRAL:
                variable.assign(np.full(shape, _NEUTRAL[variable.name], variable.dtype))
