"""How many points a purchase earns, and how much of them a return claws back.

Pure arithmetic on Decimals: points are integers only after the single rounding step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from loyaltyctl.rules.program import Program

_ROUNDING = {"floor": ROUND_FLOOR, "half-up": ROUND_HALF_UP, "ceil": ROUND_CEILING}


@dataclass(frozen=True)
class Line:
    category: str | None
    amount: Decimal


@dataclass(frozen=True)
class Earning:
    points: int
    base: Decimal  # before rounding, for explanations
    eligible_spend: Decimal  # spend outside excluded categories (qualifying spend)
    promotions: tuple[str, ...]


def round_points(value: Decimal, rounding: str) -> int:
    return int(value.quantize(Decimal(1), rounding=_ROUNDING[rounding]))


def active_promotions(
    program: Program, day: date, categories: set[str | None]
) -> list[tuple[str, Decimal]]:
    found = []
    for promo in program.earn.promotions:
        if promo.from_ <= day <= promo.to and (
            not promo.categories or any(c in promo.categories for c in categories)
        ):
            found.append((promo.name, promo.multiplier))
    return found


def purchase_points(program: Program, lines: list[Line], tier_key: str, day: date) -> Earning:
    """``amount × per_unit × category multiplier`` per line, then × tier × promotions,
    rounded once for the whole purchase."""
    earn = program.earn
    base = Decimal(0)
    eligible = Decimal(0)
    for line in lines:
        if line.category is not None and line.category in earn.exclude:
            continue
        multiplier = earn.categories.get(line.category, Decimal(1)) if line.category else Decimal(1)
        base += line.amount * earn.per_unit * multiplier
        eligible += line.amount
    total = base * program.tier(tier_key).multiplier
    promos = active_promotions(program, day, {line.category for line in lines})
    for _name, multiplier in promos:
        total *= multiplier
    return Earning(
        points=round_points(total, earn.rounding),
        base=total,
        eligible_spend=eligible,
        promotions=tuple(name for name, _ in promos),
    )


def cumulative_share(total: int, original_amount: Decimal, returned_amount: Decimal) -> int:
    """The part of ``total`` that the returns so far take back.

    Computed on the cumulative returned amount, so returning everything in several parts
    takes back exactly ``total``: what stays is ``floor(total × kept / original)``.
    """
    if original_amount <= 0:
        return total
    kept_amount = original_amount - returned_amount
    kept = (Decimal(total) * kept_amount / original_amount).quantize(
        Decimal(1), rounding=ROUND_FLOOR
    )
    return total - int(kept)
