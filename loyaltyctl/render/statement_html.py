"""A statement as a self-contained, printable HTML page (Jinja2, autoescaped)."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from loyaltyctl.render.colors import readable_text_on

if TYPE_CHECKING:
    from jinja2 import Environment

    from loyaltyctl.services.statements import Statement, TierProgress

TOTAL_LABELS = {
    "earned": "Earned on purchases",
    "bonus": "Bonuses",
    "redeemed": "Redeemed",
    "expired": "Expired",
    "returned": "Taken back for returns",
    "adjusted": "Adjustments",
    "refunded": "Returned from cancelled vouchers",
}


@cache
def environment() -> Environment:
    """Built once: bulk statements render thousands of pages with the compiled template."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("loyaltyctl.render", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["points"] = points
    env.filters["signed"] = signed
    return env


def points(value: int) -> str:
    return f"{value:,}".replace("-", "\u2212")


def signed(value: int) -> str:
    return ("+" if value > 0 else "") + points(value)


def progress_phrase(p: TierProgress, currency: str) -> str:
    unit = {"points": "points", "spend": currency, "visits": "visits"}[p.metric]
    window = f"{p.window_from.isoformat()} to {p.window_to.isoformat()}"
    if p.next_tier is None:
        return f"{p.activity} {unit} from {window}; this is the highest tier"
    return (
        f"{p.activity} of {p.next_min} {unit} from {window}: "
        f"{p.needed} {unit} more for {p.next_tier_name}"
    )


def progress_percent(p: TierProgress) -> int:
    if p.next_min is None or p.needed is None:
        return 100
    from decimal import Decimal

    target = Decimal(p.next_min)
    if target <= 0:
        return 100
    return max(0, min(100, int((target - Decimal(p.needed)) * 100 / target)))


def statement_context(s: Statement) -> dict[str, Any]:
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    from loyaltyctl.services.statements import EXPIRING_DAYS

    primary = s.branding.primary_color
    return {
        "s": s,
        "tz": ZoneInfo(s.timezone),
        "expiring_until": s.last + timedelta(days=EXPIRING_DAYS),
        "primary": primary,
        "on_primary": readable_text_on(primary),
        "accent": s.branding.accent_color,
        "totals": [(TOTAL_LABELS.get(key, key.title()), value) for key, value in s.totals.items()],
        "progress": progress_phrase(s.progress, s.currency),
        "progress_percent": progress_percent(s.progress),
        "backdated": any(line.backdated for line in s.lines),
    }


def statement_html(s: Statement) -> str:
    return environment().get_template("statement.html.j2").render(statement_context(s))
