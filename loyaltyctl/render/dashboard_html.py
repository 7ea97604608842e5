"""The program dashboard as one self-contained, printable HTML page: inline CSS and SVG
charts drawn here (bar geometry in Python, markup in the Jinja2 template), nothing
fetched from the network."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loyaltyctl.render.statement_html import environment

if TYPE_CHECKING:
    from loyaltyctl.services.insights import Dashboard

CHART_WIDTH = 640
CHART_HEIGHT = 180
SERIES = (("issued", "#2e7d32"), ("redeemed", "#1565c0"), ("expired", "#c62828"))


@dataclass
class Rect:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str


@dataclass
class Label:
    x: float
    y: float
    text: str


def month_bars(months: Sequence[object]) -> tuple[list[Rect], list[Label]]:
    """Grouped bars per month: issued, redeemed, expired (points)."""
    top = max((getattr(m, name) for m in months for name, _ in SERIES), default=0) or 1
    slot = CHART_WIDTH / max(len(months), 1)
    bar = slot * 0.8 / len(SERIES)
    plot = CHART_HEIGHT - 20
    rects, labels = [], []
    for i, m in enumerate(months):
        month = str(getattr(m, "month"))  # noqa: B009
        for j, (name, color) in enumerate(SERIES):
            value = int(getattr(m, name))
            height = plot * max(value, 0) / top
            x = i * slot + slot * 0.1 + j * bar
            rects.append(Rect(x, plot - height, bar, height, color, f"{month} {name}: {value:,}"))
        labels.append(Label(i * slot + slot / 2, CHART_HEIGHT - 5, month[2:]))
    return rects, labels


def hbars(rows: Sequence[tuple[str, int]], color: str) -> list[tuple[str, int, float]]:
    """(label, value, width in % of the largest) for CSS bars."""
    top = max((v for _, v in rows), default=0) or 1
    return [(k, v, round(100 * max(v, 0) / top, 2)) for k, v in rows]


def render_dashboard(d: Dashboard) -> str:
    rects, labels = month_bars(d.liability.months)
    return (
        environment()
        .get_template("dashboard.html.j2")
        .render(
            d=d,
            s=d.summary,
            li=d.liability,
            rects=rects,
            labels=labels,
            width=CHART_WIDTH,
            height=CHART_HEIGHT,
            series=SERIES,
            ageing=hbars([(a.bucket, a.points) for a in d.liability.ageing], "#1f4e79"),
            tiers=hbars(list(d.summary.tiers.items()), "#1f4e79"),
        )
    )


__all__ = ["render_dashboard"]
