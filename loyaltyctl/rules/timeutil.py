"""Times typed by people are in the program's zone; everything stored is UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from importlib import resources
from zoneinfo import ZoneInfo, available_timezones

from loyaltyctl.errors import InvalidInput
from loyaltyctl.rules.limits import check_day, check_year


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
    # Before converting: year 1 or 9999 would overflow in another zone.
    check_year(value, what)
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.astimezone(UTC)


def parse_day(text: str, *, what: str = "date") -> date:
    try:
        day = date.fromisoformat(text.strip())
    except ValueError as exc:
        raise InvalidInput(
            f"{what} {text!r} is not an ISO 8601 date", hint="write e.g. 2026-11-22"
        ) from exc
    return check_day(day, what)


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


class LocalTimes:
    """``parse_when`` and ``local_date`` for many naive local times in one zone, as bulk
    imports read them: the UTC offset is worked out once per local hour.

    ``parse`` answers None for anything it does not read the same way for certain (an
    offset or date alone given, a time the clocks skip or repeat, a bad value): the
    caller then uses ``parse_when``, which also words the errors."""

    LIMIT = 100_000

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self._offsets: dict[int, timedelta | None] = {}

    def parse(self, text: str) -> tuple[datetime, date] | None:
        """The UTC time and the local day of ``text`` (already stripped)."""
        if len(text) < 16:
            return None
        try:
            local = datetime.fromisoformat(text)
        except ValueError:
            return None
        if local.tzinfo is not None:
            return None
        hour = local.toordinal() * 24 + local.hour
        try:
            offset = self._offsets[hour]
        except KeyError:
            if len(self._offsets) > self.LIMIT:
                self._offsets.clear()
            offset = self._offsets[hour] = steady_offset(local, self.tz)
        if offset is None:
            return None
        # replace(tzinfo=tz).astimezone(UTC), and the local day is the one written.
        return (local - offset).replace(tzinfo=UTC), local.date()


def steady_offset(local: datetime, tz: ZoneInfo) -> timedelta | None:
    """The UTC offset of every time in ``local``'s hour in ``tz``, or None when the clocks
    change in that hour (times skipped or repeated)."""
    start = local.replace(minute=0, second=0, microsecond=0)
    end = start + timedelta(hours=1, microseconds=-1)
    offsets = {tz.utcoffset(t.replace(fold=fold)) for t in (start, end) for fold in (0, 1)}
    return offsets.pop() if len(offsets) == 1 else None


# Some systems list their own aliases among the zones; a program file must not depend on
# the machine it is loaded on.
_NOT_ZONES = frozenset({"localtime", "posixrules"})


def is_zone_name(name: str) -> bool:
    """An IANA zone name that every machine knows. Like ``ZoneInfo`` itself this reads the
    zone database, the one thing outside the program that rules look at."""
    return name not in _NOT_ZONES and (name in _tzdata_zones() or name in _zone_keys())


@cache
def _zone_keys() -> frozenset[str]:
    return frozenset((available_timezones() | {"UTC"}) - _NOT_ZONES)


@cache
def _tzdata_zones() -> frozenset[str]:
    """The zones the tzdata package lists in one file, all of which ``available_timezones()``
    returns too; that one also walks the system's zone directories, which took 60 ms of
    every command reading a program (a stored program is validated again)."""
    try:
        with resources.files("tzdata").joinpath("zones").open("r") as f:
            return frozenset(line.strip() for line in f if line.strip())
    except (ImportError, FileNotFoundError):
        return frozenset()
