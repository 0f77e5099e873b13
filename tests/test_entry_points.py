"""The entry points (subprocesses, without TF_CPP_MIN_LOG_LEVEL in their
environment): silent unless `--verbose` (no TensorFlow, abseil or LiteRT
native log line on stderr), and `--help` lists every flag the app accepts
and exits 0. `tflite_bench.quiet` and `recipes.apputil.complete_help` on
their own."""

import functools
import importlib
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from absl import flags
from conftest import run_app

# what TensorFlow 2.21, abseil and LiteRT write on stderr of a CPU machine
NATIVE_LINES = ("absl::InitializeLog", "oneDNN", "cudart_stub", "cuInit", "cpu_feature_guard",
                "XNNPACK delegate", "E0000", "I0000", "W0000")  # fmt: skip
# the entry point must silence itself: none of the switches in its environment
UNSET = {"TF_CPP_MIN_LOG_LEVEL": None, "KERAS_EVOSYNTH_VERBOSE": None}
# the absl apps with a `define_flags(flag_values)`; the benchmarks but one
# run with -m slow (each --help imports TensorFlow: ~5-10 s here)
ABSL_APPS = [
    "recipes.quickstart",
    "recipes.classifier",
    "recipes.detectnet.train",
    "recipes.detectnet.evolve",
    "benchmarks.step_time",
    *[pytest.param(f"benchmarks.{name}", marks=pytest.mark.slow) for name in (
        "compaction_speed", "detectnet_width", "distillation", "kitti_stream", "latency_table",
        "latency_target", "latency_zoo", "layer_precision", "population_ray", "space_to_depth")],
]  # fmt: skip
ARGPARSE_APPS = [pytest.param(name, marks=pytest.mark.slow) for name in (
    "recipes.detectnet.tfmot_baseline", "benchmarks.tflite_bench_fashion")]  # fmt: skip


@functools.cache
def help_of(module):
    """`python -m module --help`, once per test session."""
    return run_app(module, "--help", timeout=300, env=UNSET)


@pytest.fixture(scope="module")
def helps(request):
    """`help_of`, run two at a time for the modules the selected tests ask for."""
    specs = [getattr(item, "callspec", None) for item in request.session.items
             if getattr(item, "module", None) is request.module]  # fmt: skip
    modules = {spec.params["module"] for spec in specs if spec and "module" in spec.params}
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(help_of, sorted(modules)))
    return help_of


def native_lines(stderr):
    return [line for line in stderr.splitlines() if any(text in line for text in NATIVE_LINES)]


@pytest.mark.parametrize("module", ABSL_APPS + ARGPARSE_APPS)
def test_help_imports_tensorflow_silently_and_exits_0(helps, module):
    result = helps(module)
    assert result.returncode == 0, result.stderr[-2000:]
    assert native_lines(result.stderr) == [], result.stderr[-2000:]
    assert re.search(r"--(\[no\])?verbose", result.stdout)  # the switch that lets them through


def _help_flags(stdout):
    """The flag names a `--help` lists: `  --name: ...`, `  --[no]name: ...`,
    `  -?,--[no]help: ...`."""
    return set(re.findall(r"^\s+(?:-\S,)?--(?:\[no\])?(\w+):", stdout, flags=re.MULTILINE))


@pytest.mark.parametrize("module", ABSL_APPS)
def test_help_lists_every_flag_of_the_app(helps, module):
    """Every flag the app's `define_flags` defines, the shared ones that
    `recipes.apputil` and `recipes.detectnet.train` define for it included
    (absl's own --help shows the main module's only, and exits 1)."""
    values = flags.FlagValues()
    importlib.import_module(module).define_flags(values)
    expected = {values[name].name for name in values
                if not values.find_module_defining_flag(name, "").startswith("absl.")}  # fmt: skip
    assert "verbose" in expected and len(expected) > 3
    listed = _help_flags(helps(module).stdout)
    assert sorted(expected - listed) == []


def test_detectnet_evolve_help_shows_the_shared_training_flags(helps):
    listed = _help_flags(helps("recipes.detectnet.evolve").stdout)
    assert {"kitti_root", "width", "image_height", "num_train", "out_dir", "strategy",
            "mixed_precision", "precisions", "population", "verbose"} <= listed  # fmt: skip
    # TensorFlow's and absl's flags stay under --helpfull
    assert not {"logtostderr", "verbosity", "helpxml"} & listed


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory):
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = tmp_path_factory.mktemp("quiet") / "tiny.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def test_tflite_bench_creates_interpreters_silently_unless_verbose(tiny_tflite):
    """A real run: the interpreters here and in the memory probe's child
    process; LiteRT announces its XNNPACK delegate only with --verbose."""
    args = [str(tiny_tflite), "--runs=2", "--warmup=1"]
    quiet = run_app("tflite_bench", *args, timeout=120, env=UNSET)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "tiny.tflite" in quiet.stdout and "mem MiB" in quiet.stdout
    assert native_lines(quiet.stderr) == [], quiet.stderr
    verbose = run_app("tflite_bench", *args, "--verbose", timeout=120, env=UNSET)
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    assert "Created TensorFlow Lite XNNPACK delegate for CPU." in verbose.stderr


@pytest.mark.parametrize(
    "argv, verbose",
    [
        ([], False),
        (["--out_dir=x", "--verbose"], True),
        (["-verbose"], True),
        (["--verbose=true"], True),
        (["--verbose=false"], False),
        (["--verbose", "--noverbose"], False),
        (["--", "--verbose"], False),
        (["--verbose_level=3"], False),
    ],
)
def test_verbose_is_read_from_argv_like_absl(monkeypatch, argv, verbose):
    from tflite_bench.quiet import verbose_requested

    monkeypatch.delenv("KERAS_EVOSYNTH_VERBOSE", raising=False)
    assert verbose_requested(argv) is verbose
    monkeypatch.setenv("KERAS_EVOSYNTH_VERBOSE", "1")  # a verbose parent's child
    assert verbose_requested(argv) is True


def test_quiet_startup_sets_the_environment(monkeypatch):
    from tflite_bench.quiet import quiet_startup

    # a copy of the environment, without the two switches (this process keeps its own)
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k not in UNSET})
    assert quiet_startup(["--verbose"]) is True
    assert os.environ["KERAS_EVOSYNTH_VERBOSE"] == "1" and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "1"  # a verbose run keeps the user's level
    assert quiet_startup(["--verbose"]) is True and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"
    del os.environ["KERAS_EVOSYNTH_VERBOSE"]
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"  # level 2 lets the E0000 cuInit line out
    assert quiet_startup([]) is False and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert "KERAS_EVOSYNTH_VERBOSE" not in os.environ


def test_import_quietly_shows_what_a_failed_import_wrote(tmp_path, monkeypatch, capfd):
    from tflite_bench.quiet import import_quietly

    (tmp_path / "noisy_ok.py").write_text("import os\nos.write(2, b'I0000 loading\\n')\n")
    (tmp_path / "noisy_bad.py").write_text(
        "import os\nos.write(2, b'F0000 check failed\\n')\nraise ImportError('broken')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_quietly("noisy_ok").__name__ == "noisy_ok"
    assert "I0000" not in capfd.readouterr().err
    with pytest.raises(ImportError, match="broken"):
        import_quietly("noisy_bad")
    assert "F0000 check failed" in capfd.readouterr().err
    sys.modules.pop("noisy_ok", None)


def test_complete_help_makes_flags_of_other_modules_key_flags_of_main():
    from recipes import apputil
    from recipes.detectnet import train

    values = flags.FlagValues()
    train.define_flags(values)  # some defined in recipes.apputil (define_distribution, ...)
    main = sys.argv[0]
    before = {flag.name for flag in values.get_key_flags_for_module(main)}
    apputil.complete_help(values)
    after = {flag.name for flag in values.get_key_flags_for_module(main)}
    assert before == set()  # what absl's --help listed for train as a dependency
    assert after == {values[name].name for name in values} and "strategy" in after
