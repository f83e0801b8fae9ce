"""What the dashboard pages show, built from the services' public documents: the charts of a
measurement, a train job's S_NN trajectory, a sweep and a comparison, and the job rows that the
job list polls. No queries here (those stay in `app.services`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from app.schemas.compare import ComparePublic
from app.schemas.jobs import JobPublic
from app.schemas.sweeps import SweepFit, SweepRow
from app.ui.charts import Chart, Rendered, Series, render
from core.contract import Convergence


def _any(values: Sequence[float | None]) -> bool:
    return any(v is not None for v in values)


def measurement_charts(curve: Mapping[str, Sequence[float | None]]) -> list[Rendered]:
    """The rate chart (log s when every s > 0) and the cumulative chart, S_tot dashed, from the
    curve's columns (`app.services.measurements.curve_columns`)."""
    s = [float(v) for v in curve["s"] if v is not None]
    x_log = bool(s) and min(s) > 0
    rate = Series("dS_NN/ds", s, curve["rate"], curve["rate_stderr"])
    cum_err = curve["cumulative_stderr"]
    cum = Series("S_NN(s)", s, curve["cumulative"], cum_err if _any(cum_err) else None)
    rate_series, cum_series = [rate], [cum]
    total_rate, total_cum = curve["total_rate"], curve["total_cumulative"]
    if _any(total_rate):
        total_err = curve["total_rate_stderr"]
        rate_series.append(Series("dS_tot/ds", s, total_rate,
                                  total_err if _any(total_err) else None, "dashed", 3))
    if _any(total_cum):
        cum_series.append(Series("S_tot(s)", s, total_cum, None, "dashed", 3))
    return [
        render(Chart("chart-rate", "Entropy production rate (bands: ±2 standard errors)", "s",
                     "nats per unit s", rate_series, x_log=x_log)),
        render(Chart("chart-cumulative", "Cumulative entropy (bands: ±2 standard errors)", "s",
                     "nats", cum_series)),
    ]


def convergence_chart(conv: Convergence) -> Rendered:
    """S_NN estimates over the epochs (±2 stderr bars), and the fitted trend where there is one."""
    points = conv.trajectory
    epochs = [float(p.epoch) for p in points]
    series = [Series("S_NN estimate (±2 stderr)", epochs, [p.nats for p in points],
                     [2 * p.stderr for p in points], "points", 0, "2·stderr")]
    window, ext, level = conv.window, conv.extrapolated, conv.level_nats
    if window is not None and ext is not None and level is not None and ext.epoch > window[1]:
        first, last = window
        slope = (ext.nats - level) / math.log(ext.epoch / last)
        xs = [float(first), float(last), float(ext.epoch)]
        series.append(Series("trend against log(epoch)", xs,
                             [level + slope * math.log(x / last) for x in xs], None, "dashed", 1))
    x_log = bool(epochs) and min(epochs) > 0
    return render(Chart("chart-convergence", "S_NN over the epochs", "epoch", "S_NN (nats)",
                        series, x_log=x_log))


def sweep_chart(rows: Sequence[SweepRow], fits: Sequence[SweepFit]) -> Rendered:
    """S_NN of the final epoch against N (log axis) per process and network: error bars = the
    seeds' standard deviation (the pooled estimator stderr with one seed), the fit a + b ln N,
    and S_tot where known."""
    final = [r for r in rows if r.final]
    keys = list(dict.fromkeys((r.process, r.network) for r in final))
    series: list[Series] = []
    for i, (process, network) in enumerate(keys):
        rs = sorted((r for r in final if (r.process, r.network) == (process, network)),
                    key=lambda r: r.n_train)
        name = process if network is None else f"{process} [{network}]"
        n = [float(r.n_train) for r in rs]
        series.append(Series(f"S_NN {name}", n, [r.mean for r in rs],
                             [r.spread if r.spread is not None else r.stderr for r in rs],
                             "points", i, "error"))
        fit = next((f for f in fits if (f.process, f.network) == (process, network)), None)
        if fit is not None and fit.a is not None and fit.b is not None and len(n) > 1:
            lo, hi = math.log(min(n)), math.log(max(n))
            xs = [math.exp(lo + (hi - lo) * k / 48) for k in range(49)]
            series.append(Series(f"fit {name}", xs, [fit.a + fit.b * math.log(x) for x in xs],
                                 None, "line", i))
        totals = [(float(r.n_train), r.total_entropy) for r in rs if r.total_entropy is not None]
        if totals:
            series.append(Series(f"S_tot {name}", [t[0] for t in totals],
                                 [t[1] for t in totals], None, "dashed", i + 3))
    return render(Chart("chart-sweep", "Neural entropy against the number of training points",
                        "training points N", "nats", series, x_log=True))


def compare_charts(doc: ComparePublic) -> list[Rendered]:
    """Rate and cumulative curves of every compared measurement on the shared time axis."""
    rate, cum = [], []
    x_log = True
    for i, s in enumerate(doc.series):
        xs = [p.s for p in s.points]
        x_log = x_log and bool(xs) and min(xs) > 0
        rate.append(Series(s.label, xs, [p.rate for p in s.points],
                           [p.rate_stderr for p in s.points], "line", i))
        cerr = [p.cumulative_stderr for p in s.points]
        cum.append(Series(s.label, xs, [p.cumulative for p in s.points],
                          cerr if _any(cerr) else None, "line", i))
    return [
        render(Chart("chart-compare-rate", "Entropy production rate (bands: ±2 standard errors)",
                     "s", "nats per unit s", rate, x_log=x_log)),
        render(Chart("chart-compare-cumulative", "Cumulative S_NN(s)", "s", "nats", cum)),
    ]


def eta_text(seconds: float | None) -> str:
    """'1 h 02 min', '3 min 05 s', '42 s', or '' when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return ""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def job_row(job: JobPublic) -> dict[str, Any]:
    """One row of the job list (the page and its polling endpoint)."""
    p = job.progress
    fraction = 1.0 if job.status == "succeeded" else p.fraction
    return {
        "id": job.id, "type": job.type, "status": job.status, "phase": p.phase,
        "fraction": None if fraction is None else max(0.0, min(1.0, float(fraction))),
        "percent": None if fraction is None else int(round(100 * max(0.0, min(1.0, fraction)))),
        "epoch": p.epoch, "epochs": p.epochs,
        "eta_seconds": p.eta_seconds if job.status == "running" else None,
        "eta": eta_text(p.eta_seconds) if job.status == "running" else "",
        "device": job.device or "", "queue": job.queue,
        "created_at": job.created_at.isoformat(), "error": job.error or "",
        "cancel_requested": job.cancel_requested,
        "cancelable": job.status in ("queued", "running") and not job.cancel_requested,
        "url": f"/ui/jobs/{job.id}",
        "measurement_url": f"/ui/measurements/{job.measurement_id}" if job.measurement_id else "",
    }
