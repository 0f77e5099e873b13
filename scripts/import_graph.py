"""The import graph of `keras_evosynth` and its cycles.

    python scripts/import_graph.py           # cycles only
    python scripts/import_graph.py --graph   # which module imports which (* lazy)

Module-level imports and imports inside functions ("lazy") both count: a
lazy import hides a cycle from Python, not from a reader.
"""

import ast
import itertools
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1] / "keras_evosynth"


def modules(root=ROOT):
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def graph(root=ROOT):
    """`{module: {imported module: lazy}}` inside the package (a module's
    imports of its own subpackages' parent are left out)."""
    found = modules(root)
    package = root.name

    def owner(name):  # the module a dotted name lives in
        while name and name not in found:
            name = name.rpartition(".")[0]
        return name

    edges = {name: {} for name in found}
    for name, path in found.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(package):
                targets = [owner(f"{node.module}.{alias.name}") for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [owner(a.name) for a in node.names if a.name.startswith(package)]
            else:
                continue
            for target in targets:
                if target and target != name and target != package \
                        and not name.startswith(target + "."):
                    edges[name][target] = edges[name].get(target, True) and id(node) not in top
    return edges


def cycles(edges, lazy=True):
    """The strongly connected components of more than one module (Tarjan)."""
    adjacency = {m: [t for t, is_lazy in d.items() if lazy or not is_lazy]
                 for m, d in edges.items()}
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], itertools.count()

    def visit(node):
        index[node] = low[node] = next(counter)
        stack.append(node)
        on_stack.add(node)
        for target in adjacency[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in adjacency:
        if node not in index:
            visit(node)
    return found


def main(argv):
    edges = graph()
    if "--graph" in argv:
        for name in sorted(edges):
            targets = sorted(t.removeprefix("keras_evosynth.") + ("*" if lazy else "")
                             for t, lazy in edges[name].items())
            print(f"{name.removeprefix('keras_evosynth.')}: {', '.join(targets)}")
    found = cycles(edges)
    print(f"cycles: {found or 'none'}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
