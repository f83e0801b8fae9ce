"""The curve plot: rate dS/ds and cumulative S(s), S_NN and (when known) S_tot overlaid.

Drawn with matplotlib's object API on an Agg canvas (no pyplot state: safe in threads).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from core.contract import MeasurementSummary
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
