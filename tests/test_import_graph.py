"""The package's import graph has no cycles, lazy imports included
(scripts/import_graph.py), and the analysis finds one where there is."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
import_graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(import_graph)


def test_the_package_has_no_import_cycle():
    edges = import_graph.graph()
    assert "keras_evosynth.trials" in edges["keras_evosynth.callbacks"]
    assert "keras_evosynth.callbacks" not in edges["keras_evosynth.distributed"]
    assert import_graph.cycles(edges) == []


def test_a_lazy_import_cycle_is_found(tmp_path):
    package = tmp_path / "keras_evosynth"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from keras_evosynth import b\n")
    (package / "b.py").write_text("def f():\n    from keras_evosynth.a import g\n")
    (package / "c.py").write_text("import keras_evosynth.a\n")
    edges = import_graph.graph(package)
    assert edges["keras_evosynth.b"] == {"keras_evosynth.a": True}  # lazy
    assert edges["keras_evosynth.a"] == {"keras_evosynth.b": False}
    assert import_graph.cycles(edges) == [["keras_evosynth.a", "keras_evosynth.b"]]
    assert import_graph.cycles(edges, lazy=False) == []
