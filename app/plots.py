"""The curve plot: rate dS/ds and cumulative S(s), S_NN and (when known) S_tot overlaid.

Drawn with matplotlib's object API on an Agg canvas (no pyplot state: safe in threads).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from core.contract import Convergence, MeasurementSummary
from core.tables import CurvePoint


def _column(points: Sequence[CurvePoint], name: str) -> list[float]:
    return [math.nan if getattr(p, name) is None else float(getattr(p, name)) for p in points]


def curve_png(points: Sequence[CurvePoint], summary: MeasurementSummary, title: str = "") -> bytes:
    """PNG bytes of a two-panel figure: entropy-production rate (log s axis) and cumulative."""
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_rate, ax_cum = fig.subplots(1, 2)
    s = _column(points, "s")
    rate, rate_se = _column(points, "rate"), _column(points, "rate_stderr")
    cum, cum_se = _column(points, "cumulative"), _column(points, "cumulative_stderr")
    ax_rate.plot(s, rate, color="C0", label="dS_NN/ds")
    ax_rate.fill_between(s, [r - 2 * e for r, e in zip(rate, rate_se, strict=True)],
                         [r + 2 * e for r, e in zip(rate, rate_se, strict=True)],
                         color="C0", alpha=0.25, linewidth=0)
    ax_cum.plot(s, cum, color="C0", label="S_NN(s)")
    if not all(math.isnan(v) for v in cum_se):
        ax_cum.fill_between(s, [c - 2 * e for c, e in zip(cum, cum_se, strict=True)],
                            [c + 2 * e for c, e in zip(cum, cum_se, strict=True)],
                            color="C0", alpha=0.25, linewidth=0)
    total_rate, total_cum = _column(points, "total_rate"), _column(points, "total_cumulative")
    if not all(math.isnan(v) for v in total_rate):
        ax_rate.plot(s, total_rate, color="C3", linestyle="--", label="dS_tot/ds")
    if not all(math.isnan(v) for v in total_cum):
        ax_cum.plot(s, total_cum, color="C3", linestyle="--", label="S_tot(s)")
    if s and min(s) > 0:
        ax_rate.set_xscale("log")
    ax_rate.set_xlabel("s")
    ax_rate.set_ylabel("nats per unit s")
    ax_rate.set_title("entropy production rate (bands: ±2 standard errors)", fontsize=9)
    ax_cum.set_xlabel("s")
    ax_cum.set_ylabel("nats")
    ne, te = summary.neural_entropy, summary.total_entropy
    heading = f"cumulative entropy: S_NN = {ne.nats:.4g} ± {ne.stderr:.2g}"
    if te is not None:
        heading += f", S_tot = {te.nats:.4g}"
    ax_cum.set_title(heading, fontsize=9)
    for ax in (ax_rate, ax_cum):
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def convergence_plot_png(convergence: Convergence, title: str = "") -> bytes:
    """PNG bytes: a train job's S_NN estimates over the epochs (log axis, ±2 stderr bars), the
    fitted trend against log(epoch) over its window, where it extrapolates, and the verdict."""
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    points = convergence.trajectory
    epochs = [p.epoch for p in points]
    ax.errorbar(epochs, [p.nats for p in points], yerr=[2 * p.stderr for p in points], fmt="o",
                color="C0", markersize=3, capsize=2, label="S_NN estimates (±2 stderr)")
    window, ext, level = convergence.window, convergence.extrapolated, convergence.level_nats
    if window is not None and ext is not None and level is not None:
        first, last = window
        slope = (ext.nats - level) / math.log(ext.epoch / last)
        xs = [first, last, ext.epoch]
        ax.plot(xs, [level + slope * math.log(x / last) for x in xs], color="C1", linestyle="--",
                label="trend against log(epoch)")
    if convergence.stopped_at_epoch is not None:
        ax.axvline(convergence.stopped_at_epoch, color="C2", linewidth=1, label="stopped")
    if epochs and min(epochs) > 0:
        ax.set_xscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("S_NN (nats)")
    drift = convergence.relative_drift
    drift_text = "" if drift is None else f", {drift:+.1%} per doubling"
    ax.set_title(f"{convergence.verdict} (tolerance {convergence.tolerance:.0%}{drift_text})",
                 fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
