"""Plots: a measurement's curve (rate dS/ds and cumulative S(s), S_NN and S_tot overlaid), a
sweep's S_NN against N with its log fit, and several measurements' curves on one time axis.

Drawn with matplotlib's object API on an Agg canvas (no pyplot state: safe in threads).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from app.schemas.sweeps import SweepFit, SweepRow
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
    return _png(fig)


def _png(fig: Figure) -> bytes:
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
def sweep_png(rows: Sequence[SweepRow], fits: Sequence[SweepFit], title: str = "") -> bytes:
    """S_NN (final epoch) against N on a log axis: one series per process (and network), error
    bars = the seeds' standard deviation, the fit a + b ln N, and S_tot where known."""
    fig = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    final = [r for r in rows if r.final]
    keys = list(dict.fromkeys((r.process, r.network) for r in final))
    for i, (process, network) in enumerate(keys):
        color = f"C{i % 10}"
        series = sorted((r for r in final if (r.process, r.network) == (process, network)),
                        key=lambda r: r.n_train)
        name = process if network is None else f"{process} [{network}]"
        n = [r.n_train for r in series]
        ax.errorbar(n, [r.mean for r in series], yerr=[r.spread or 0.0 for r in series],
                    fmt="o", color=color, capsize=3, label=f"S_NN {name}")
        fit = next((f for f in fits if (f.process, f.network) == (process, network)), None)
        if fit is not None and fit.a is not None and fit.b is not None and len(n) > 1:
            lo, hi = math.log(min(n)), math.log(max(n))
            xs = [math.exp(lo + (hi - lo) * k / 99) for k in range(100)]
            r2 = "" if fit.r_squared is None else f", R² = {fit.r_squared:.3f}"
            ax.plot(xs, [fit.a + fit.b * math.log(x) for x in xs], "-", color=color, alpha=0.7,
                    label=f"fit {fit.a:.4g} {'-' if fit.b < 0 else '+'} {abs(fit.b):.4g} ln N{r2}")
        totals = [(r.n_train, r.total_entropy) for r in series if r.total_entropy is not None]
        if totals:
            ax.plot([t[0] for t in totals], [t[1] for t in totals], "x--", color=color,
                    alpha=0.8, label=f"S_tot {name}")
    if not keys:
        ax.text(0.5, 0.5, "no finished measurements yet", ha="center", va="center",
                transform=ax.transAxes)
    else:
        ax.set_xscale("log")
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel("training points N")
    ax.set_ylabel("nats")
    ax.set_title(f"neural entropy vs N (final epoch; error bars: std over seeds) {title}".strip(),
                 fontsize=9)
    ax.grid(True, alpha=0.3)
    return _png(fig)


def compare_png(series: Sequence[tuple[str, Sequence[CurvePoint]]], title: str = "") -> bytes:
    """Rate and cumulative curves of several measurements on one time axis (bands: ±2 stderr)."""
    fig = Figure(figsize=(11, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax_rate, ax_cum = fig.subplots(1, 2)
    log_s = True
    for i, (label, points) in enumerate(series):
        color = f"C{i % 10}"
        s = _column(points, "s")
        log_s = log_s and bool(s) and min(s) > 0
        for ax, name in ((ax_rate, "rate"), (ax_cum, "cumulative")):
            y, se = _column(points, name), _column(points, f"{name}_stderr")
            ax.plot(s, y, color=color, label=label)
            if not all(math.isnan(v) for v in se):
                ax.fill_between(s, [a - 2 * e for a, e in zip(y, se, strict=True)],
                                [a + 2 * e for a, e in zip(y, se, strict=True)],
                                color=color, alpha=0.2, linewidth=0)
    if log_s:
        ax_rate.set_xscale("log")
    ax_rate.set_ylabel("nats per unit s")
    ax_rate.set_title("entropy production rate dS_NN/ds (bands: ±2 standard errors)", fontsize=9)
    ax_cum.set_ylabel("nats")
    ax_cum.set_title("cumulative S_NN(s)", fontsize=9)
    for ax in (ax_rate, ax_cum):
        ax.set_xlabel("s")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _png(fig)
