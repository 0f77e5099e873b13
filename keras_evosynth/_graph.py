"""Flat view of a Keras model's call graph, for rewriting it layer by layer.

`trace(model)` reads a functional or Sequential model (nested models are
inlined) into a topologically ordered list of `Node`s whose arguments refer to
tensors by integer id; `Rebuilder` replays such a graph with new layers. Only
public Keras APIs are used: the functional graph comes from `get_config()`
(the `.keras` serialization format) and tensor shapes from
`compute_output_spec`.
"""

import dataclasses
import weakref

import keras


@dataclasses.dataclass(frozen=True)
class Ref:
    """A placeholder for tensor `tid` inside a node's call arguments."""

    tid: int


@dataclasses.dataclass
class Node:
    """One call of a (non-model) layer or operation.

    Attributes:
        layer: The original layer/operation.
        args, kwargs: The call arguments, tensors replaced by `Ref`s.
        inputs: Ids of the input tensors, in the order they appear.
        outputs: Ids of the output tensors (flattened).
        output_structure: The output spec structure (to repack outputs).
    """

    layer: object
    args: tuple
    kwargs: dict
    inputs: list
    outputs: list
    output_structure: object = None


@dataclasses.dataclass
class Graph:
    """A traced model: nodes in topological order and tensor specs."""

    name: str
    nodes: list
    specs: dict  # tid -> keras.KerasTensor (shape, dtype)
    inputs: object = None  # structure of tids
    outputs: object = None  # structure of tids
    input_names: dict = dataclasses.field(default_factory=dict)

    def new_tensor(self, spec):
        tid = len(self.specs)
        self.specs[tid] = keras.KerasTensor(tuple(spec.shape), dtype=spec.dtype)
        return tid

    def consumers(self):
        """tid -> list of nodes reading it."""
        result = {tid: [] for tid in self.specs}
        for node in self.nodes:
            for tid in dict.fromkeys(node.inputs):
                result[tid].append(node)
        return result


def _refs(structure):
    return [x.tid for x in keras.tree.flatten(structure) if isinstance(x, Ref)]


def _is_history(x):
    return (
        isinstance(x, (list, tuple))
        and len(x) == 3
        and isinstance(x[0], str)
        and all(isinstance(i, int) for i in x[1:])
    )


def _map_history(structure, fn):
    """Maps `[layer_name, node_index, tensor_index]` leaves of a config
    structure (`input_layers` / `output_layers`)."""
    if _is_history(structure):
        return fn(tuple(structure))
    if isinstance(structure, dict):  # sorted keys, like keras.tree.flatten
        return {k: _map_history(structure[k], fn) for k in sorted(structure)}
    return type(structure)(_map_history(v, fn) for v in structure)


class _Unresolved(Exception):
    pass


def _resolve(data, env):
    """Turns serialized node arguments into Python values with `Ref`s."""
    if isinstance(data, dict):
        kind = data.get("class_name")
        if kind == "__keras_tensor__":
            key = tuple(data["config"]["keras_history"])
            if key not in env:
                raise _Unresolved(key)
            return Ref(env[key])
        if kind == "__tuple__":
            return tuple(_resolve(v, env) for v in data["config"]["value"])
        if kind is not None and "config" in data:
            return keras.saving.deserialize_keras_object(data)
        return {k: _resolve(v, env) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(_resolve(v, env) for v in data)
    return data


def _spec_of(graph, structure):
    return keras.tree.map_structure(
        lambda x: graph.specs[x.tid] if isinstance(x, Ref) else x, structure
    )


def _trace_call(graph, layer, args, kwargs):
    """Adds the call `layer(*args, **kwargs)`; returns the output tids."""
    if isinstance(layer, keras.Model):
        return _trace_model(graph, layer, _refs((args, kwargs)))
    spec = layer.compute_output_spec(*_spec_of(graph, args), **_spec_of(graph, kwargs))
    outputs = [graph.new_tensor(s) for s in keras.tree.flatten(spec)]
    graph.nodes.append(
        Node(layer, tuple(args), dict(kwargs), _refs((args, kwargs)), outputs, spec)
    )
    return outputs


def _trace_sequential(graph, model, inputs):
    (x,) = inputs
    for layer in model.layers:
        (x,) = _trace_call(graph, layer, (Ref(x),), {})
    return [x]


def _trace_functional(graph, model, inputs):
    config = model.get_config()
    ops = {op.name: op for op in model.operations}
    input_keys = []
    _map_history(config["input_layers"], input_keys.append)
    if len(input_keys) != len(inputs):
        raise ValueError(
            f"Model '{model.name}' expects {len(input_keys)} inputs, got {len(inputs)}."
        )
    env = dict(zip(input_keys, inputs, strict=True))
    pending = [
        (entry["name"], index, node)
        for entry in config["layers"]
        if entry["class_name"] != "InputLayer"
        for index, node in enumerate(entry.get("inbound_nodes", []))
    ]
    while pending:
        waiting = []
        for name, index, node in pending:
            try:
                args = _resolve(node.get("args", []), env)
                kwargs = _resolve(node.get("kwargs", {}), env)
            except _Unresolved:
                waiting.append((name, index, node))
                continue
            outputs = _trace_call(graph, ops[name], args, kwargs)
            for i, tid in enumerate(outputs):
                env[(name, index, i)] = tid
        if len(waiting) == len(pending):
            raise ValueError(
                f"Model '{model.name}': cannot order the call graph "
                f"(unresolved calls of {sorted({w[0] for w in waiting})})."
            )
        pending = waiting
    outputs = []
    _map_history(config["output_layers"], lambda key: outputs.append(env[key]))
    return outputs


def _trace_model(graph, model, inputs):
    if isinstance(model, keras.Sequential):
        return _trace_sequential(graph, model, inputs)
    return _trace_functional(graph, model, inputs)


def check_graph_model(model, who):
    """Raises TypeError unless `model` is a functional or Sequential Keras
    model (a graph of layers that can be walked); a subclassed model, whose
    `call` is Python code, is refused with what to do instead.

    Example:

    >>> class Net(keras.Model):
    ...     def call(self, x):
    ...         return x
    >>> check_graph_model(Net(), "compact()")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    TypeError: compact() needs a functional or Sequential Keras model; 'net' is a subclassed ...
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"{who} expects a keras.Model, got {type(model).__name__}.")
    from keras.src.models.functional import Functional

    if not isinstance(model, (Functional, keras.Sequential)):
        raise TypeError(
            f"{who} needs a functional or Sequential Keras model; '{model.name}' is a "
            f"subclassed keras.Model ({type(model).__name__}) whose call() cannot be walked "
            "layer by layer. Build it functionally (x = keras.Input(...); y = layer(x); ...; "
            "keras.Model(x, y)); functional models nested inside a functional model work."
        )


# model -> (ids of its layers, Graph): a graph depends on the model's layers
# and wiring only (never on weights or masks), so one generation's analyses
# (genomes, compaction, the latency table's channels) share one trace of the
# parent, and a lineage traces its network once. The graph holds its layers,
# so their ids cannot be reused while it is cached; adding or removing a
# layer (a Sequential) changes the key.
_TRACES = weakref.WeakKeyDictionary()


def trace(model, who="keras_evosynth"):
    """Flattens `model` (functional or Sequential, nested models inlined).

    The result is cached per model (read it, do not modify it): the same
    model traces once however many analyses read it.

    Args:
        model: A built Keras model.
        who: The caller, named in the error for a subclassed model.

    Returns:
        A `Graph`.

    Raises:
        TypeError: `model` is not a functional or Sequential Keras model.
        ValueError: The model is not built or its graph cannot be read.

    Example:

    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> g = trace(m)
    >>> [type(n.layer).__name__ for n in g.nodes], g.specs[g.outputs].shape
    (['Dense'], (None, 2))
    """
    check_graph_model(model, who)
    key = tuple(id(layer) for layer in model._flatten_layers(include_self=False))
    cached = _TRACES.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    if not model.built or not model.inputs:
        raise ValueError(
            f"Model '{model.name}' is not built with known inputs; give it an "
            "`Input` before compacting or exporting it."
        )
    graph = Graph(model.name, [], {})
    flat_inputs = [graph.new_tensor(t) for t in model.inputs]
    flat_outputs = _trace_model(graph, model, flat_inputs)
    if isinstance(model, keras.Sequential):
        graph.inputs, graph.outputs = flat_inputs[0], flat_outputs[0]
    else:
        config = model.get_config()
        names = []
        _map_history(config["input_layers"], lambda key: names.append(key[0]))
        graph.input_names = dict(zip(flat_inputs, names, strict=True))
        ins, outs = iter(flat_inputs), iter(flat_outputs)
        graph.inputs = _map_history(config["input_layers"], lambda _: next(ins))
        graph.outputs = _map_history(config["output_layers"], lambda _: next(outs))
    _TRACES[model] = (key, graph)
    return graph


class Rebuilder:
    """Replays a `Graph` with new layers.

    `tensors` maps original tids to new Keras tensors (None where a tensor was
    removed). Layer names are kept unique.
    """

    def __init__(self, graph, batch_shapes=None):
        self.graph = graph
        self.tensors = {}
        self.used_names = set()
        self.inputs = {}
        flat = keras.tree.flatten(graph.inputs)
        for tid, shape in zip(flat, batch_shapes or [None] * len(flat), strict=True):
            spec = graph.specs[tid]
            name = self.unique_name(graph.input_names.get(tid, "input_layer"))
            self.inputs[tid] = keras.Input(
                batch_shape=spec.shape if shape is None else tuple(shape),
                dtype=spec.dtype,
                name=name,
            )
            self.tensors[tid] = self.inputs[tid]

    def unique_name(self, name):
        candidate, i = name, 0
        while candidate in self.used_names:
            i += 1
            candidate = f"{name}_{i}"
        self.used_names.add(candidate)
        return candidate

    def arguments(self, node):
        """The node's call arguments with new tensors substituted."""

        def swap(x):
            return self.tensors[x.tid] if isinstance(x, Ref) else x

        return (
            keras.tree.map_structure(swap, node.args),
            keras.tree.map_structure(swap, node.kwargs),
        )

    def call(self, node, layer):
        """Calls `layer` like `node` did and records its outputs."""
        args, kwargs = self.arguments(node)
        outputs = keras.tree.flatten(layer(*args, **kwargs))
        for tid, tensor in zip(node.outputs, outputs, strict=True):
            self.tensors[tid] = tensor
        return outputs

    def model(self):
        def pick(tid):
            return self.tensors[tid]

        inputs = keras.tree.map_structure(pick, self.graph.inputs)
        outputs = keras.tree.map_structure(pick, self.graph.outputs)
        return keras.Model(inputs, outputs, name=self.graph.name)
