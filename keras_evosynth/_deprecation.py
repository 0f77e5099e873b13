"""Deprecated aliases: public names renamed to match Keras 3.15, kept for one
release (they go in 0.2.0). Each alias warns once per process."""

import warnings

REMOVAL = "0.2.0"
_warned = set()


def warn_renamed(old, new):
    """Emits one `DeprecationWarning` per process for the alias `old`
    (`keras_evosynth.<old>`, now `<new>`), pointing at the caller's caller.

    Example:

    >>> import warnings
    >>> _warned.discard("doctest_alias")
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_renamed("doctest_alias", "doctest_name")
    ...     warn_renamed("doctest_alias", "doctest_name")
    >>> [str(w.message) for w in caught]   # doctest: +NORMALIZE_WHITESPACE
    ['keras_evosynth.doctest_alias is deprecated and will be removed in 0.2.0;
      use keras_evosynth.doctest_name (same arguments).']
    """
    if old in _warned:
        return
    _warned.add(old)
    warnings.warn(
        f"keras_evosynth.{old} is deprecated and will be removed in {REMOVAL}; "
        f"use keras_evosynth.{new} (same arguments).",
        DeprecationWarning,
        stacklevel=3,
    )
