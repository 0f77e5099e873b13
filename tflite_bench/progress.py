"""A one-line progress bar on stderr (redrawn in place on a terminal)."""

import sys
import time


class Progress:
    """Counts steps of one task and draws `label [#####.....] 50/100`.

    On a terminal the line is redrawn in place (at most ten times a second);
    elsewhere (logs, CI) it prints the label when the task starts and one
    line with the elapsed time when it ends. `enabled=False` prints nothing.

    Args:
        label: What is being measured.
        total: Number of steps.
        stream: Where to draw (default `sys.stderr`).
        enabled: Draw at all.

    Example:

    >>> import io
    >>> out = io.StringIO()
    >>> with Progress("a.tflite t=1", total=2, stream=out) as bar:
    ...     bar(1)
    ...     bar(1)
    >>> out.getvalue().splitlines()[-1].startswith("a.tflite t=1 done 2/2")
    True
    """

    width = 24

    def __init__(self, label, total, stream=None, enabled=True):
        self.label = label
        self.total = max(int(total), 0)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.count = 0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_draw = 0.0
        self._start = time.perf_counter()

    def __enter__(self):
        self._start = time.perf_counter()
        if self.enabled and not self._tty:
            self.stream.write(f"{self.label} ...\n")
            self.stream.flush()
        return self

    def __call__(self, n=1):
        """Advances by `n` steps."""
        self.count += n
        if not (self.enabled and self._tty):
            return
        now = time.perf_counter()
        if now - self._last_draw >= 0.1 or self.count >= self.total:
            self._last_draw = now
            self.stream.write("\r" + self._bar())
            self.stream.flush()

    def _bar(self):
        filled = self.width * self.count // self.total if self.total else self.width
        bar = "#" * filled + "." * (self.width - filled)
        return f"{self.label} [{bar}] {self.count}/{self.total}"

    def __exit__(self, exc_type, exc, tb):
        if not self.enabled:
            return False
        elapsed = time.perf_counter() - self._start
        status = "failed" if exc_type else "done"
        line = f"{self.label} {status} {self.count}/{self.total} in {elapsed:.2f}s"
        self.stream.write(f"\r{line}\033[K\n" if self._tty else f"{line}\n")
        self.stream.flush()
        return False
