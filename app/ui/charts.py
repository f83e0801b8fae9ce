"""Server-drawn SVG charts for the dashboard, with the data for the hover script.

`render(chart)` returns the `<svg>` markup (lines, ±2 stderr bands, error bars, axes, ticks,
legend) and a JSON-ready dict that `static/ui.js` reads to show the values under the pointer (or
under the arrow keys: the chart is focusable). Coordinates are in the SVG's own units
(`WIDTH` x `HEIGHT`, scaled by CSS); x may be logarithmic. Values are rounded to 7 significant
digits in the hover data (one x list when the series share it) and to 0.1 unit in the drawing,
where each line keeps only the vertices that can show at one unit per pixel column (`decimate`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 44
N_COLORS = 6


@dataclass
class Series:
    """One series: `ys[i]` at `xs[i]`; `err[i]` is drawn as a ±2·err band (`style` line) or a
    ±err bar (`style` points); None values leave gaps."""

    name: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    err: Sequence[float | None] | None = None
    style: Literal["line", "dashed", "points"] = "line"
    color: int = 0
    err_label: str = "stderr"


@dataclass
class Chart:
    id: str
    title: str
    x_label: str
    y_label: str
    series: list[Series]
    x_log: bool = False
    band_sigmas: float = 2.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Rendered:
    svg: Markup
    data: dict[str, Any]


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _nice_step(span: float, n: int) -> float:
    raw = span / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def linear_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = _nice_step(hi - lo, n)
    first = math.ceil(lo / step - 1e-9) * step
    out, k = [], 0
    while first + k * step <= hi + 1e-9 * step and k < 50:
        out.append(round(first + k * step, 12))
        k += 1
    return out


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten in [lo, hi], with 2 and 5 multiples when fewer than three decades show."""
    d0, d1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    mults = (1.0,) if d1 - d0 > 3 else (1.0, 2.0, 5.0)
    ticks = [m * 10.0 ** d for d in range(d0, d1 + 1) for m in mults]
    inside = [t for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
    return inside or [lo, hi]


def fmt(v: float) -> str:
    """A short label: 4 significant digits."""
    return f"{v:.4g}"


def _r(v: float) -> str:
    return f"{v:.1f}"


class _Scale:
    def __init__(self, lo: float, hi: float, a: float, b: float, log: bool) -> None:
        self.log = log
        if log:
            lo, hi = math.log10(lo), math.log10(hi)
        if hi <= lo:
            pad = abs(lo) * 0.05 or 1.0
            lo, hi = lo - pad, hi + pad
        self.lo, self.hi, self.a, self.b = lo, hi, a, b

    def __call__(self, v: float) -> float:
        if self.log:
            v = math.log10(v)
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)

    def array(self, v: np.ndarray) -> np.ndarray:
        u = np.log10(v) if self.log else v
        return self.a + (u - self.lo) / (self.hi - self.lo) * (self.b - self.a)


def _array(values: Sequence[float | None]) -> np.ndarray:
    """float64 values, None as NaN."""
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


def _usable(x: np.ndarray, y: np.ndarray, x_log: bool) -> np.ndarray:
    ok = np.isfinite(x) & np.isfinite(y)
    if x_log:
        ok &= x > 0
    return ok


def _extent(chart: Chart) -> tuple[float, float, float, float]:
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for s in chart.series:
        sig = chart.band_sigmas if s.style != "points" else 1.0
        x, y = _array(s.xs), _array(s.ys)
        ok = _usable(x, y, chart.x_log)
        xs.append(x[ok])
        ys.append(y[ok])
        if s.err is not None:
            e = _array(s.err)[ok]
            has = np.isfinite(e)
            ys.extend((y[ok][has] - sig * e[has], y[ok][has] + sig * e[has]))
    x_all, y_all = np.concatenate(xs or [np.empty(0)]), np.concatenate(ys or [np.empty(0)])
    if not x_all.size:
        return (1.0, 10.0, 0.0, 1.0) if chart.x_log else (0.0, 1.0, 0.0, 1.0)
    y_lo, y_hi = float(y_all.min()), float(y_all.max())
    pad = (y_hi - y_lo) * 0.05 or (abs(y_hi) * 0.05 or 1.0)
    return float(x_all.min()), float(x_all.max()), y_lo - pad, y_hi + pad


def _segments(xs: Sequence[float | None], ys: Sequence[float | None], sx: _Scale, sy: _Scale,
              x_log: bool) -> list[np.ndarray]:
    """The runs of usable points as (n, 2) arrays of SVG coordinates (gaps split them)."""
    x, y = _array(xs), _array(ys)
    ok = _usable(x, y, x_log)
    idx = np.flatnonzero(ok)
    if not idx.size:
        return []
    pts = np.column_stack((sx.array(x[idx]), sy.array(y[idx])))
    cuts = np.flatnonzero(np.diff(idx) > 1) + 1
    return [seg for seg in np.split(pts, cuts) if len(seg)]


def decimate(points: np.ndarray, column: float = 1.0) -> np.ndarray:
    """The vertices that can show at `column` units per pixel column: per run of points in one
    column the first, the lowest, the highest and the last, in order (the line looks the same)."""
    pts = np.asarray(points, dtype=np.float64)
    n = len(pts)
    if n <= 4:
        return pts
    keys = np.floor(pts[:, 0] / column)
    new_run = np.r_[True, keys[1:] != keys[:-1]]
    run = np.cumsum(new_run)
    starts = np.flatnonzero(new_run)
    ends = np.r_[starts[1:], n] - 1
    by_low = np.lexsort((pts[:, 1], run))  # within each run, lowest y first
    by_high = np.lexsort((-pts[:, 1], run))
    firsts = np.r_[True, run[by_low][1:] != run[by_low][:-1]]
    keep = np.unique(np.concatenate((starts, ends, by_low[firsts], by_high[firsts])))
    return pts[keep]


def _path(points: np.ndarray) -> str:
    return "M" + "L".join(f"{x:.1f} {y:.1f}" for x, y in points.tolist())


def _round7(v: float | None) -> float | None:
    """7 significant digits: more than the read-out's 6, and a smaller page."""
    return None if v is None or not math.isfinite(v) else float(f"{v:.7g}")


def render(chart: Chart) -> Rendered:
    """The SVG markup and the hover data of `chart`."""
    x_lo, x_hi, y_lo, y_hi = _extent(chart)
    sx = _Scale(x_lo, x_hi, LEFT, WIDTH - RIGHT, chart.x_log)
    sy = _Scale(y_lo, y_hi, HEIGHT - BOTTOM, TOP, False)
    title_id, desc_id = f"{chart.id}-title", f"{chart.id}-desc"
    names = ", ".join(s.name for s in chart.series)
    parts = [
        f'<svg id="{escape(chart.id)}" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'tabindex="0" aria-labelledby="{title_id} {desc_id}" data-chart="{escape(chart.id)}">',
        f'<title id="{title_id}">{escape(chart.title)}</title>',
        f'<desc id="{desc_id}">{escape(chart.y_label)} against {escape(chart.x_label)}: '
        f'{escape(names)}. Move the pointer over the chart, or focus it and use the arrow keys, '
        'to read the values.</desc>',
        f'<rect class="plot-area" x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" '
        f'height="{HEIGHT - TOP - BOTTOM}"/>',
    ]
    x_ticks = log_ticks(x_lo, x_hi) if chart.x_log else linear_ticks(x_lo, x_hi)
    for t in x_ticks:
        tx = sx(t)
        parts.append(f'<line class="grid" x1="{_r(tx)}" x2="{_r(tx)}" y1="{TOP}" '
                     f'y2="{HEIGHT - BOTTOM}"/><text class="tick" x="{_r(tx)}" '
                     f'y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{fmt(t)}</text>')
    for t in linear_ticks(y_lo, y_hi):
        ty = sy(t)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_r(ty)}" '
                     f'y2="{_r(ty)}"/><text class="tick" x="{LEFT - 6}" y="{_r(ty + 4)}" '
                     f'text-anchor="end">{fmt(t)}</text>')
    parts.append(f'<text class="axis-label" x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 6}" '
                 f'text-anchor="middle">{escape(chart.x_label)}</text>')
    parts.append(f'<text class="axis-label" transform="translate(14 {(TOP + HEIGHT - BOTTOM) / 2})'
                 f' rotate(-90)" text-anchor="middle">{escape(chart.y_label)}</text>')
    hover_series = []
    first = list(chart.series[0].xs) if chart.series else []
    shared_x = ([_round7(x) for x in first]
                if all(list(s.xs) == first for s in chart.series[1:]) else None)
    for s in chart.series:
        c = f"c{s.color % N_COLORS}"
        if s.err is not None and s.style != "points":
            ys_arr, es_arr = _array(s.ys), _array(s.err)
            k = chart.band_sigmas
            lo, hi = (ys_arr - k * es_arr).tolist(), (ys_arr + k * es_arr).tolist()
            for seg_lo, seg_hi in zip(_segments(s.xs, lo, sx, sy, chart.x_log),
                                      _segments(s.xs, hi, sx, sy, chart.x_log), strict=False):
                outline = np.concatenate((decimate(seg_hi), decimate(seg_lo)[::-1]))
                parts.append(f'<path class="band {c}" d="{_path(outline)}Z"/>')
        if s.style == "points":
            for i, (x, y) in enumerate(zip(s.xs, s.ys, strict=True)):
                if not _finite(x) or not _finite(y) or (chart.x_log and x <= 0):
                    continue
                assert y is not None
                px, py = sx(x), sy(y)
                bar = s.err[i] if s.err is not None else None
                if bar is not None and math.isfinite(bar):
                    y1, y2 = sy(y - bar), sy(y + bar)
                    parts.append(f'<path class="errbar {c}" d="M{_r(px)} {_r(y1)}V{_r(y2)}'
                                 f'M{_r(px - 4)} {_r(y1)}h8M{_r(px - 4)} {_r(y2)}h8"/>')
                parts.append(f'<circle class="dot {c}" cx="{_r(px)}" cy="{_r(py)}" r="3.5"/>')
        else:
            dash = " dashed" if s.style == "dashed" else ""
            for seg in _segments(s.xs, s.ys, sx, sy, chart.x_log):
                parts.append(f'<path class="line {c}{dash}" d="{_path(decimate(seg))}"/>')
        hover_series.append({
            "name": s.name, "color": s.color % N_COLORS, "err_label": s.err_label,
            "x": None if shared_x is not None else [_round7(x) for x in s.xs],
            "y": [_round7(y) for y in s.ys],
            "err": None if s.err is None else [_round7(e) for e in s.err],
        })
    # legend, top-left inside the plot
    for i, s in enumerate(chart.series):
        ly = TOP + 14 + 16 * i
        c = f"c{s.color % N_COLORS}"
        mark = (f'<circle class="dot {c}" cx="{LEFT + 18}" cy="{ly - 4}" r="3.5"/>'
                if s.style == "points" else
                f'<path class="line {c}{" dashed" if s.style == "dashed" else ""}" '
                f'd="M{LEFT + 8} {ly - 4}h20"/>')
        parts.append(f'<g class="legend">{mark}<text x="{LEFT + 34}" y="{ly}">'
                     f'{escape(s.name)}</text></g>')
    parts.append('<g class="cursor" hidden><line class="cursor-line" x1="0" x2="0" '
                 f'y1="{TOP}" y2="{HEIGHT - BOTTOM}"/></g>')
    parts.append("</svg>")
    data = {
        "id": chart.id, "x_label": chart.x_label, "x_log": chart.x_log,
        "band_sigmas": chart.band_sigmas,
        "plot": {"left": LEFT, "right": WIDTH - RIGHT, "top": TOP, "bottom": HEIGHT - BOTTOM,
                 "width": WIDTH, "height": HEIGHT},
        "x_domain": [sx.lo, sx.hi], "y_domain": [sy.lo, sy.hi],
        "x": shared_x, "series": hover_series, **chart.extra,
    }
    return Rendered(Markup("".join(parts)), data)
