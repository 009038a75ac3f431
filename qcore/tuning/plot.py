"""The picture of the fronts: predicted quality against Linear storage and against summed layer time.

Each panel draws the front (the least cost the solver finds for each
predicted quality level), every uniform candidate, the constraint, and the
tuned model (predicted, and measured end to end). matplotlib is an optional
dependency (``pip install 'qcore[tune]'``); it draws off-screen (Agg).
"""

from __future__ import annotations

import io
from pathlib import Path

from qcore.errors import QcoreError
from qcore.files import atomic_write
from qcore.tuning.choose import TuneResult, front, uniform


class PlotUnavailable(QcoreError):
    """matplotlib is not installed; the message says how to get the picture."""


def plot_fronts(result: TuneResult, path: Path) -> Path:
    """Write the PNG of both fronts to `path` (atomically); returns it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailable(f"{path.name} not drawn: the picture needs matplotlib "
                              "(pip install 'qcore[tune]')") from None
    profile = result.profile
    figure = Figure(figsize=(11, 4.5), dpi=110)
    axes = figure.subplots(1, 2)
    panels = (("size", lambda p: p.bytes / 2**20, "quantized Linear storage (MiB)"),
              ("latency", lambda p: p.seconds * 1e3, "Σ Linear kernel time (ms, measured per layer)"))
    for ax, (objective, x, label) in zip(axes, panels):
        line = [p for p in front(profile, objective) if p.predicted is not None]
        ax.step([x(p) for p in line], [p.predicted for p in line], where="post", color="0.4",
                label=f"front ({objective})")
        for c in profile.candidates:
            p = uniform(profile, c)
            if p.predicted is not None:
                ax.scatter([x(p)], [p.predicted], marker="s", zorder=3)
                ax.annotate(c.name, (x(p), p.predicted), textcoords="offset points", xytext=(4, 4), fontsize=7)
        tuned = result.point
        ax.scatter([x(tuned)], [tuned.predicted], marker="*", s=160, color="red", zorder=4,
                   label="tuned (predicted)")
        ax.scatter([x(tuned)], [result.measured], marker="x", s=70, color="red", zorder=4,
                   label=f"tuned (measured, {result.verified_on})")
        ax.axhline(result.constraint.min_quality, color="red", linestyle=":", linewidth=1,
                   label=result.constraint.describe())
        ax.set_xlabel(label)
        ax.set_ylabel(f"{profile.quality} (predicted; × measured)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    figure.suptitle(f"qcore tune, {result.objective} objective; {profile.hardware.cpu_model} "
                    f"({profile.hardware.fingerprint})", fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return atomic_write(path, buffer.getvalue())
