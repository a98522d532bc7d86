"""The Costs page's chart: inline SVG drawn on the server (stacked bars per day and project, budgets as lines).

No charting script, nothing for the CSP to allow: the browser gets markup, and every label is escaped.
"""

from __future__ import annotations

from markupsafe import Markup, escape

W, H = 900, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 14, 34
PALETTE = 8


def _nice(v: float) -> float:
    """A round axis maximum at or above ``v``: four gridline steps of 1, 2, 2.5 or 5 times a power of ten."""
    if v <= 0:
        return 1.0
    for exp in range(-3, 9):
        for m in (1, 2, 2.5, 5):
            if m * 10**exp * 4 >= v:
                return m * 10**exp * 4
    return v


def cost_chart(days: list[str], series: dict[str, dict[str, float]], lines: list[tuple[str, float]],
               projects: list[str]) -> Markup:
    """``series[day][project]`` = USD; ``lines`` = (label, daily limit); ``projects`` fixes the colours."""
    top = max([sum(series.get(d, {}).values()) for d in days] + [v for _, v in lines] + [0.0])
    ymax = _nice(top * 1.05)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    bw = pw / max(len(days), 1)

    def y(v: float) -> float:
        return TOP + ph - (v / ymax) * ph

    out = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="cost per day, last {len(days)} days" '
           'xmlns="http://www.w3.org/2000/svg">']
    for i in range(5):
        v = ymax * i / 4
        out.append(f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}"/>')
        out.append(f'<text class="axis" x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">${v:.2f}</text>')
    colour = {p: i % PALETTE for i, p in enumerate(projects)}
    for i, d in enumerate(days):
        x = LEFT + i * bw
        base = 0.0
        for proj, usd in sorted(series.get(d, {}).items()):
            if usd <= 0:
                continue
            y0, y1 = y(base), y(base + usd)
            out.append(f'<rect class="bar c{colour.get(proj, 0)}" x="{x + 1:.1f}" y="{y1:.1f}" '
                       f'width="{max(bw - 2, 1):.1f}" height="{max(y0 - y1, 0.5):.1f}">'
                       f'<title>{escape(d)} {escape(proj)}: ${usd:.4f}</title></rect>')
            base += usd
        if i % 5 == 0 or i == len(days) - 1:
            out.append(f'<text class="axis" x="{x + bw / 2:.1f}" y="{H - BOTTOM + 16}" '
                       f'text-anchor="middle">{escape(d[5:])}</text>')
    for label, v in lines:
        out.append(f'<line class="budget" x1="{LEFT}" x2="{W - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}">'
                   f'<title>{escape(label)}: ${v:.2f} a day</title></line>')
        out.append(f'<text class="budget-label" x="{W - RIGHT - 4}" y="{y(v) - 4:.1f}" '
                   f'text-anchor="end">{escape(label)} ${v:.2f}</text>')
    out.append("</svg>")
    return Markup("".join(out))
