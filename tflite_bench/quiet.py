"""Silent by default: the native log lines of TensorFlow and LiteRT.

What a CPU machine shows on stderr otherwise, and what hides each line
(measured with TensorFlow 2.21 and ai-edge-litert 2.3):

- While TensorFlow's shared libraries load, before any setting is read,
  abseil writes `WARNING: All log messages before absl::InitializeLog() is
  called are written to STDERR`, `I0000 ... port.cc] oneDNN custom
  operations are on ...` and `I0000 ... cudart_stub.cc] Could not find cuda
  drivers ...`, twice (libtensorflow_framework and the profiler plugin each
  carry an abseil). `TF_CPP_MIN_LOG_LEVEL` does not reach them, whatever its
  value: only sending stderr elsewhere while `import tensorflow` runs does.
- Later lines obey `TF_CPP_MIN_LOG_LEVEL` as it is when TensorFlow loads:
  2 hides `cpu_feature_guard.cc] This TensorFlow binary is optimized ...`,
  and 3 is needed for the `E0000 ... cuda_platform.cc] failed call to
  cuInit` of a machine without a GPU driver (so no GPU is hidden:
  `CUDA_VISIBLE_DEVICES` and `TF_ENABLE_ONEDNN_OPTS` are left alone).
- LiteRT's `INFO: Created TensorFlow Lite XNNPACK delegate for CPU.` comes
  from its minimal logger when the first interpreter of the process
  allocates its tensors; no setting reaches that logger from Python.

So an entry point calls `quiet_startup()` before anything imports
TensorFlow (`python -m recipes.<app>` and `python -m benchmarks.<name>` do
it in their package's `__init__`, see `launched_as_module_of`), and code
that creates a LiteRT interpreter or runs the converter wraps it in
`quiet_native_output()`. `--verbose`, or `KERAS_EVOSYNTH_VERBOSE=1` (set by
`quiet_startup` for a verbose run, so that child processes inherit it),
lets everything through.
"""

import contextlib
import importlib.util
import os
import sys
import tempfile

# "1": show the native log lines (a verbose run sets it; children inherit it)
VERBOSE_ENV = "KERAS_EVOSYNTH_VERBOSE"
_ABSL_TRUE = ("true", "t", "1")  # absl's spellings of a true boolean flag value


def verbose_requested(argv=None):
    """Whether `argv` (default `sys.argv[1:]`) asks for `--verbose`, in any of
    absl's spellings (`--verbose`, `-verbose`, `--verbose=true`,
    `--noverbose`; the last one wins, nothing after `--` counts), or the
    environment has `KERAS_EVOSYNTH_VERBOSE=1`. Read before the flags are
    parsed, so a `--verbose` given in a `--flagfile` is not seen.

    Example:

    >>> saved = os.environ.pop(VERBOSE_ENV, None)  # the examples read argv only
    >>> verbose_requested(["--out_dir=runs/x", "--verbose"])
    True
    >>> verbose_requested(["--verbose", "--noverbose"]), verbose_requested(["--verbose=0"])
    (False, False)
    >>> verbose_requested(["--", "--verbose"])
    False
    >>> if saved is not None:
    ...     os.environ[VERBOSE_ENV] = saved
    """
    if os.environ.get(VERBOSE_ENV) == "1":
        return True
    verbose = False
    for arg in sys.argv[1:] if argv is None else argv:
        if arg == "--":
            break
        if not arg.startswith("-"):
            continue
        name, equals, value = arg.lstrip("-").partition("=")
        if name == "verbose":
            verbose = not equals or value.lower() in _ABSL_TRUE
        elif name == "noverbose":
            verbose = False
    return verbose


def _flush_python_streams():
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.flush()


@contextlib.contextmanager
def _redirected(target_fd, fds=(1, 2)):
    """Points the process's file descriptors `fds` at `target_fd` for the
    duration (what native code writes included), then restores them."""
    _flush_python_streams()
    saved = []
    try:
        for fd in fds:
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(target_fd, fd)
            except OSError:  # no such descriptor (embedded interpreters)
                pass
        yield
    finally:
        _flush_python_streams()  # what Python printed inside goes where the block sent it
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)


@contextlib.contextmanager
def quiet_native_output(enabled=True):
    """Silences what native code (the TFLite converter's C++ logging,
    LiteRT's delegate announcement) writes to the process's stdout and
    stderr file descriptors, for the duration.

    Python-level exceptions still propagate; set `enabled=False` (or the
    environment variable `KERAS_EVOSYNTH_VERBOSE=1`) to see the output.

    Example:

    >>> with quiet_native_output():
    ...     os.write(2, b"hidden\\n") > 0
    True
    """
    if not enabled or os.environ.get(VERBOSE_ENV) == "1":
        yield
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:  # pragma: no cover
        yield
        return
    try:
        with _redirected(null):
            yield
    finally:
        os.close(null)


def import_quietly(name):
    """`importlib.import_module(name)` with the process's stderr sent to a
    temporary file: what the import wrote (native code included) is shown
    only when it fails, above the traceback.

    Example:

    >>> import_quietly("json").__name__
    'json'
    """
    with tempfile.TemporaryFile() as captured:
        try:
            with _redirected(captured.fileno(), fds=(2,)):
                return importlib.import_module(name)
        except BaseException:
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            sys.stderr.flush()
            raise


def quiet_startup(argv=None, import_tensorflow=True):
    """Makes this process silent unless verbose; call it before anything
    imports TensorFlow.

    Verbose (`verbose_requested(argv)`): sets `KERAS_EVOSYNTH_VERBOSE=1`
    (read by `quiet_native_output`, inherited by child processes) and
    `TF_CPP_MIN_LOG_LEVEL=0` unless it is set. Otherwise: sets
    `TF_CPP_MIN_LOG_LEVEL=3` (level 2 still lets the `E0000 ... cuInit` line
    through) and, with `import_tensorflow` and TensorFlow installed but not
    yet imported, imports it with stderr hidden (the lines it writes while
    its libraries load); a failing import shows them with its traceback.

    Args:
        argv: The arguments to look for `--verbose` in (default
            `sys.argv[1:]`).
        import_tensorflow: Import TensorFlow now (False for a program that
            does not use it: only the environment is set).

    Returns:
        Whether the run is verbose.
    """
    if verbose_requested(argv):
        os.environ[VERBOSE_ENV] = "1"
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return True
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if (import_tensorflow and "tensorflow" not in sys.modules
            and importlib.util.find_spec("tensorflow") is not None):  # fmt: skip
        import_quietly("tensorflow")
    return False


def launched_as_module_of(package):
    """True while `python -m <package>.<module>` (or `-m <package>`) imports
    `package`: Python sets `sys.argv[0]` to `"-m"` until the module itself
    runs, so a package's `__init__` can silence the process before its
    modules import TensorFlow, and does nothing when the package is merely
    imported by another program.

    Example:

    >>> launched_as_module_of("recipes")  # under pytest
    False
    """
    if sys.argv[:1] != ["-m"]:
        return False
    args = getattr(sys, "orig_argv", [])
    for i, arg in enumerate(args[1:], start=1):
        if arg == "-m":
            target = args[i + 1] if i + 1 < len(args) else ""
            break
        if arg.startswith("-m"):
            target = arg[2:]
            break
    else:
        return False
    return target == package or target.startswith(package + ".")
