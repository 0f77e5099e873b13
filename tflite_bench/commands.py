"""Running external commands (the default runner that tests replace)."""

import os
import subprocess

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_command(cmd, timeout=None):
    """Runs `cmd` (a list of strings), capturing text stdout and stderr.

    This is the default `runner` of the tool and device backends; tests
    inject their own callable with the same signature to check command
    lines without the tools or a device.

    Args:
        cmd: Program and arguments.
        timeout: Seconds, or None.

    Returns:
        A `subprocess.CompletedProcess` with `returncode`, `stdout`, `stderr`.

    Raises:
        FileNotFoundError: If the program is not on PATH.
        subprocess.TimeoutExpired: On timeout.

    Example:

    >>> run_command(["echo", "hi"]).stdout
    'hi\\n'
    """
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def error_line(text, first=False,
               markers=("ERROR", "Error", "error", "Failed", "failed")):
    """The last (or first) line of tool output that looks like an error.

    Falls back to the last line when none looks like one.

    Example:

    >>> error_line("INFO: ok\\nERROR: Could not open 'x.tflite'.\\nINFO: bye")
    "ERROR: Could not open 'x.tflite'."
    """
    lines = [line.strip(" \u2514") for line in (text or "").splitlines()
             if line.strip()]
    for line in (lines if first else reversed(lines)):
        if any(m in line for m in markers):
            return line
    return lines[-1] if lines else "no output"


def child_env():
    """Environment for `python -m tflite_bench...` children: this process's,
    with the directory holding `tflite_bench` first on PYTHONPATH (so a
    source checkout works without installing).

    Example:

    >>> child_env()["PYTHONPATH"].split(os.pathsep)[0] == _PACKAGE_ROOT
    True
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p
    )
    return env
