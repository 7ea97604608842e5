"""Amounts typed by people: exact decimals, never floats."""

from __future__ import annotations

import re
from decimal import Decimal

from loyaltyctl.errors import InvalidInput
from loyaltyctl.rules.limits import check_amount

# ASCII digits only: str.isdigit and \d would read full-width or Arabic-Indic digits.
_AMOUNT = re.compile(r"^[0-9]+(\.[0-9]+)?$")


def parse_amount(text: str, digits: int, *, what: str = "amount") -> Decimal:
    """``12.50`` → Decimal('12.50'); refuses signs, exponents, NaN and extra decimals."""
    raw = text.strip()
    if not _AMOUNT.match(raw):
        raise InvalidInput(
            f"{what} {text!r} is not a valid amount",
            hint="write a non-negative decimal number such as 12.50 (no sign, no exponent)",
        )
    return check_amount(Decimal(raw), digits, what)


def to_minor(amount: Decimal, digits: int) -> int:
    return int(amount.scaleb(digits))


def from_minor(minor: int, digits: int) -> Decimal:
    return Decimal(minor).scaleb(-digits)


def format_amount(amount: Decimal, digits: int) -> str:
    return f"{amount:.{digits}f}"
