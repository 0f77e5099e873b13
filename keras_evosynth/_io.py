"""Atomic file writes: a killed process never leaves a half-written file."""

import contextlib
import os
import tempfile


def write_atomic(path, data):
    """Writes `data` (str or bytes) to `path` through a temporary file in the
    same folder, fsynced and moved into place with `os.replace`.

    Example:

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "a.txt")
    >>> write_atomic(path, "hello")
    >>> open(path).read()
    'hello'
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".part")
    try:
        with os.fdopen(fd, "w" if isinstance(data, str) else "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


@contextlib.contextmanager
def quiet_native_output(enabled=True):
    """Silences what native code (the TFLite converter's C++ logging) writes
    to the process's stdout and stderr file descriptors, for the duration.

    Python-level exceptions still propagate; set `enabled=False` (or the
    environment variable `KERAS_EVOSYNTH_VERBOSE=1`) to see the output.

    Example:

    >>> with quiet_native_output():
    ...     os.write(2, b"hidden\\n") > 0
    True
    """
    if not enabled or os.environ.get("KERAS_EVOSYNTH_VERBOSE") == "1":
        yield
        return
    import sys

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.flush()
    saved = []
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:  # pragma: no cover
        yield
        return
    try:
        for fd in (1, 2):
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(null, fd)
            except OSError:  # no such descriptor (embedded interpreters)
                pass
        yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
        os.close(null)
