"""The one exception type of `tflite_bench`."""


class BenchError(Exception):
    """A benchmark could not run: bad file, bad data, missing tool or device.

    Its message is one line, meant to be shown to the user as it is.

    Example:

    >>> str(BenchError("model.tflite: file not found"))
    'model.tflite: file not found'
    """


def one_line(error):
    """Returns the first non-empty line of an exception's (or text's) message.

    Args:
        error: An exception or a string.

    Returns:
        A single line (possibly empty if the message is).

    Example:

    >>> one_line(ValueError("bad input\\nmore detail"))
    'bad input'
    """
    text = str(error)
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__ if isinstance(error, BaseException) else ""
