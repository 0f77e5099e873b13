"""Plots of a lineage: a metric against synapses (or MACs), generation by
generation. Needs matplotlib (`pip install keras-evosynth[plot]`)."""

import os

from keras_evosynth.lineage import read_lineage


def readable_log_ticks(axis):
    """Labels a log-scale matplotlib axis at 1, 2 and 5 x 10^k only, written
    out with thousands separators (`12,000`, not `1.2x10^4`), minor ticks
    unlabelled, so that labels never run into each other.

    Example:

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> _, ax = plt.subplots()
    >>> _ = ax.plot([2e3, 3e5], [0, 1]); ax.set_xscale("log"); readable_log_ticks(ax.xaxis)
    >>> ax.figure.canvas.draw()
    >>> [t.get_text() for t in ax.get_xticklabels() if t.get_text()][:4]
    ['1,000', '2,000', '5,000', '10,000']
    """
    from matplotlib import ticker

    axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(
        lambda value, _: f"{value:,.0f}" if value >= 1 else f"{value:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def plot_lineage(lineage, metric=None, resource="synapses", path=None, ax=None):
    """Plots a metric against synapses (or MACs) for each generation.

    Needs matplotlib (`pip install keras-evosynth[plot]`).

    Args:
        lineage: A lineage directory, or a list of records.
        metric: Record metric to plot; None: the fitness (the monitored
            metric).
        resource: `"synapses"`, `"clusters"`, `"macs"` or `"bytes"`.
        path: If given, the figure is saved there.
        ax: Matplotlib axes to draw on (a new figure otherwise).

    Returns:
        The matplotlib `Axes`.

    Example:

    >>> records = [{"generation": g, "synapses": 100 // (g + 1),
    ...             "fitness": 0.9 - g / 50, "accepted": True} for g in range(3)]
    >>> ax = plot_lineage(records)
    >>> ax.get_xlabel()
    'synapses'
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "plot_lineage needs matplotlib: pip install keras-evosynth[plot]"
        ) from error
    records = (read_lineage(lineage, repair=False)
               if isinstance(lineage, (str, os.PathLike)) else lineage)
    if not records:
        raise ValueError("plot_lineage: the lineage has no records.")

    def value(record):
        if metric is None:
            return record.get("fitness")
        return record.get("metrics", {}).get(metric, record.get(metric))

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    kept = [r for r in records if r.get("accepted", True)]
    dropped = [r for r in records if not r.get("accepted", True)]
    ax.plot([r[resource] for r in kept], [value(r) for r in kept], "o-", label="accepted")
    for r in kept:
        ax.annotate(
            str(r["generation"]),
            (r[resource], value(r)),
            textcoords="offset points",
            xytext=(4, 4),
        )
    if dropped:
        ax.plot(
            [r[resource] for r in dropped],
            [value(r) for r in dropped],
            "x",
            color="gray",
            label="rolled back",
        )
    ax.set_xscale("log")
    readable_log_ticks(ax.xaxis)
    ax.invert_xaxis()
    ax.set_xlabel(resource)
    ax.set_ylabel(metric or "fitness")
    ax.legend()
    ax.grid(True, alpha=0.3)
    if path is not None:
        ax.figure.savefig(path, dpi=120, bbox_inches="tight")
    return ax
