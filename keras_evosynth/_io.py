"""Atomic file writes: a killed process never leaves a half-written file;
`quiet_native_output` (`tflite_bench.quiet`, the one place that silences
native log lines) re-exported for the modules that hide the converter's."""

import contextlib
import os
import tempfile

from tflite_bench.quiet import quiet_native_output  # noqa: F401


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
