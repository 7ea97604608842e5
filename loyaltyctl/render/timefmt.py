"""How renderers write instants and dates: UTC with ``Z``, like every JSON output."""

from __future__ import annotations

from datetime import UTC, date, datetime


def instant(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def day(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None
