"""Server-side SVG bar charts for the usage section: no script, no library, a few KB each.

Colours come from the page's stylesheet through classes, so the charts follow its theme.
"""

from __future__ import annotations

import datetime as dt
from typing import Sequence

from evsed import protocol as p

# A narrow drawing with large type: on a 390 px phone the chart is drawn about 340 px wide, and
# its labels stay about 10.5 px there (they were 7 px at 640 wide, 11 px type), 16 px on a desktop.
WIDTH, HEIGHT = 420, 180
FONT_PX = 13
PAD_LEFT, PAD_BOTTOM, PAD_TOP = 50, 24, 12
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;"})


def escape(text: str) -> str:
    """html.escape's result, without the html package's 0.5 MB table of entities loaded for it."""
    return text.translate(_ESCAPES)


def _nice_max(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above value: a readable axis top."""
    if value <= 0:
        return 1.0
    candidates = [m * 10**e for e in range(-2, 9) for m in (1, 2, 2.5, 5) if m * 10**e >= value]
    return min(candidates)


def bar_chart(values: Sequence[float], labels: Sequence[str], *, title: str, unit: str,
              label_every: int = 1) -> str:
    """Bars for values (one per label), a y axis in unit, every label_every-th label shown."""
    top = _nice_max(max(values, default=0))
    plot_w, plot_h = WIDTH - PAD_LEFT - 4, HEIGHT - PAD_BOTTOM - PAD_TOP
    slot = plot_w / max(1, len(values))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
           f'aria-label="{escape(title)}" class="chart">', f"<title>{escape(title)}</title>",
           f"<style>.g{{stroke:#8884;stroke-width:1}}.b{{fill:#2a9d8f}}.t{{font:{FONT_PX}px sans-serif;fill:#888}}</style>"]
    for frac in (0, 0.5, 1):
        y = PAD_TOP + plot_h * (1 - frac)
        out.append(f'<line class="g" x1="{PAD_LEFT}" x2="{WIDTH - 4}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="t" x="{PAD_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">'
                   f"{top * frac:g}{escape(unit) if frac == 1 else ''}</text>")
    for i, (value, label) in enumerate(zip(values, labels)):
        h = plot_h * max(0.0, value) / top
        x = PAD_LEFT + i * slot
        if h > 0:
            out.append(f'<rect class="b" x="{x + slot * 0.15:.1f}" y="{PAD_TOP + plot_h - h:.1f}" '
                       f'width="{slot * 0.7:.1f}" height="{h:.1f}"><title>{escape(label)}: {value:g} '
                       f"{escape(unit)}</title></rect>")
        if i % label_every == 0:
            out.append(f'<text class="t" x="{x + slot / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle">'
                       f"{escape(label)}</text>")
    out.append("</svg>")
    return "".join(out)


def energy_by_day(energy_wh_by_day: Sequence[int], month: str, title: str = "Energy per day") -> str:
    kwh = [round(wh / 1000, 1) for wh in energy_wh_by_day]
    return bar_chart(kwh, [str(d + 1) for d in range(len(kwh))], title=f"{title}, {month}",
                     unit=" kWh", label_every=5 if len(kwh) > 20 else 1)


def sessions_by_hour(counts: Sequence[int], month: str, title: str = "Sessions by hour of day") -> str:
    return bar_chart(counts, [f"{h:02d}" for h in range(24)], title=f"{title}, {month}",
                     unit="", label_every=4)


def plan_chart(plan: p.PlanNow, curve: Sequence[p.PricePoint], tz: dt.tzinfo, title: str) -> str:
    """A plan's prices from now to its departure as steps, its planned slots filled in."""
    by = _time(plan.by)
    steps = [(t0, min(t1, by), c.price) for c in curve
             for t0, t1 in [(_time(c.start), _time(c.end))] if t0 is not None and t1 is not None and by is not None
             and t0 < by and t1 > t0]
    slots = [(t0, t1) for s in plan.slots for t0, t1 in [(_time(s.start), _time(s.end))]
             if t0 is not None and t1 is not None]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
           f'aria-label="{escape(title)}" class="chart">', f"<title>{escape(title)}</title>",
           f"<style>.g{{stroke:#8884;stroke-width:1}}.u{{fill:#8886}}.b{{fill:#2a9d8f}}"
           f".t{{font:{FONT_PX}px sans-serif;fill:#888}}</style>"]
    if not steps:
        return "".join(out) + "</svg>"
    lo, hi = steps[0][0], steps[-1][1]
    bottom, top = min(0.0, *(price for _, _, price in steps)), _nice_max(max(price for _, _, price in steps))
    plot_w, plot_h = WIDTH - PAD_LEFT - 4, HEIGHT - PAD_BOTTOM - PAD_TOP

    def x(t: float) -> float:
        return PAD_LEFT + plot_w * (t - lo) / max(1.0, hi - lo)

    def y(price: float) -> float:
        return PAD_TOP + plot_h * (top - price) / (top - bottom)
    for frac in (0, 0.5, 1):
        price = bottom + (top - bottom) * frac
        out.append(f'<line class="g" x1="{PAD_LEFT}" x2="{WIDTH - 4}" y1="{y(price):.1f}" y2="{y(price):.1f}"/>')
        out.append(f'<text class="t" x="{PAD_LEFT - 4}" y="{y(price) + 4:.1f}" text-anchor="end">{price:.2f}</text>')
    for t0, t1, price in steps:
        pieces = sorted({t0, t1, *(t for a, b in slots for t in (a, b) if t0 < t < t1)})
        for a, b in zip(pieces, pieces[1:]):
            planned = any(s0 <= a and b <= s1 for s0, s1 in slots)
            top_y, base_y = sorted((y(price), y(0.0)))
            out.append(f'<rect class="{"b" if planned else "u"}" x="{x(a):.1f}" y="{top_y:.1f}" '
                       f'width="{max(0.5, x(b) - x(a)):.1f}" height="{max(0.5, base_y - top_y):.1f}"/>')
    hours = max(1, round((hi - lo) / 3600 / 6))  # about six labels
    t = dt.datetime.fromtimestamp(lo, tz).replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    while t.timestamp() < hi:
        out.append(f'<text class="t" x="{x(t.timestamp()):.1f}" y="{HEIGHT - 6}" text-anchor="middle">'
                   f'{t.strftime("%H:%M")}</text>')
        t += dt.timedelta(hours=hours)
    out.append("</svg>")
    return "".join(out)


def _time(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo else None
