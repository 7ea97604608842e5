"""Times typed by people are in the program's zone; everything stored is UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from loyaltyctl.errors import InvalidInput


def parse_when(text: str, tz: ZoneInfo, *, what: str = "--at") -> datetime:
    """ISO 8601 date or date-time; without an offset it is local to ``tz``. Returns UTC."""
    raw = text.strip()
    try:
        if len(raw) == 10:
            value = datetime.combine(date.fromisoformat(raw), time())
        else:
            value = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise InvalidInput(
            f"{what} {text!r} is not an ISO 8601 date or time",
            hint="write e.g. 2026-11-22 or 2026-11-22T14:30 or 2026-11-22T14:30+01:00",
        ) from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.astimezone(UTC)


def parse_day(text: str, *, what: str = "date") -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError as exc:
        raise InvalidInput(
            f"{what} {text!r} is not an ISO 8601 date", hint="write e.g. 2026-11-22"
        ) from exc


def local_date(moment: datetime, tz: ZoneInfo) -> date:
    return moment.astimezone(tz).date()


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant at which ``day`` starts in ``tz``."""
    return datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)


def end_of_local_day(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant at which ``day`` ends (exclusive) in ``tz``."""
    return local_midnight(day + timedelta(days=1), tz)


def as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
