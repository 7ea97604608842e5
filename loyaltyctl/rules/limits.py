"""The bounds every value that enters the ledger is held to, whoever sends it.

One place for them, so the CLI, the importers and a Python caller refuse the same
values with the same words. Each check raises InvalidInput naming the value and where
it came from (``what``: an option, a column, a field)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from loyaltyctl.errors import InvalidInput

MEMBER_LIMIT = 128
REF_LIMIT = 200
PROGRAM_KEY_LIMIT = 64
# Above these a value is a typo or an attack, and past them 64-bit sums could overflow.
MAX_AMOUNT = Decimal(1_000_000_000)
MAX_POINTS = 1_000_000_000_000
FIRST_YEAR = 1900
LAST_YEAR = 2999
# A till's clock may run a little ahead of the server's.
CLOCK_SKEW = timedelta(minutes=5)


def check_text(value: str, what: str, limit: int | None = None) -> str:
    """Free text: no NUL (neither database stores it), at most ``limit`` characters."""
    if "\x00" in value:
        raise InvalidInput(f"{what} contains a NUL character", hint="remove it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # Bytes that were not UTF-8 on the command line, or a JSON "\\ud800" escape.
        raise InvalidInput(f"{what} is not UTF-8 text", hint="retype it") from None
    if limit is not None and len(value) > limit:
        raise InvalidInput(
            f"{what} is longer than {limit} characters",
            hint=f"shorten it to at most {limit} characters",
        )
    return value


def check_id(value: str, what: str, limit: int, example: str) -> str:
    """An identifier: surrounding spaces dropped, not empty, no control characters."""
    text = value.strip()
    if not text:
        raise InvalidInput(f"{what} is empty", hint=f"give one, e.g. {example}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise InvalidInput(f"{what} {text[:40]!r} contains a control character", hint="remove it")
    return check_text(text, what, limit)


def check_member(code: str, what: str = "member") -> str:
    return check_id(code, what, MEMBER_LIMIT, "M-1001")


def check_ref(ref: str, what: str = "ref") -> str:
    return check_id(ref, what, REF_LIMIT, "T-1001")


def check_amount(value: Decimal, digits: int, what: str = "amount") -> Decimal:
    """A money amount: finite, not negative, at most the currency's decimals, not absurd."""
    if not isinstance(value, Decimal) or not value.is_finite():
        raise InvalidInput(f"{what} {value!s} is not a finite decimal amount", hint="e.g. 12.50")
    if value < 0:
        raise InvalidInput(f"{what} {value} is negative", hint="amounts are never negative")
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > digits:
        raise InvalidInput(
            f"{what} {value} has more decimals than the currency allows ({digits})",
            hint=f"round it to {digits} decimal place{'s' if digits != 1 else ''}",
        )
    if value > MAX_AMOUNT:
        raise InvalidInput(
            f"{what} {value} is above {MAX_AMOUNT:,} currency units",
            hint="check the amount (a decimal point may be missing)",
        )
    return value


def check_points(value: int, what: str = "points", *, zero_ok: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} {value!r} is not a whole number", hint="e.g. 500 or -200")
    if value == 0 and not zero_ok:
        raise InvalidInput(f"{what} must not be 0", hint="give a positive or negative number")
    if abs(value) > MAX_POINTS:
        raise InvalidInput(
            f"{what} {value} is beyond ±{MAX_POINTS:,}", hint="check the number of points"
        )
    return value


def check_year(moment: datetime, what: str) -> None:
    check_day(moment.date(), what)


def check_day(day: date, what: str) -> date:
    """A calendar date a person gave (a birthday, an expiry date): within the years."""
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise InvalidInput(
            f"{what} {day.isoformat()} is outside the years {FIRST_YEAR}-{LAST_YEAR}",
            hint="check the date",
        )
    return day


def check_moment(moment: datetime, now: datetime, what: str = "--at") -> datetime:
    """When something happened: a UTC instant within the supported years, not after now
    (beyond a few minutes of clock skew)."""
    if moment.tzinfo is None:
        raise InvalidInput(f"{what} has no time zone", hint="give an aware datetime (UTC)")
    check_year(moment, what)
    moment = moment.astimezone(UTC)
    if moment > now + CLOCK_SKEW:
        raise InvalidInput(
            f"{what} {moment.isoformat(timespec='seconds')} is in the future",
            hint="record what has happened; leave the time out for now",
        )
    return moment
