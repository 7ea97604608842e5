"""How many points a purchase earns, and how much of them a return claws back.

Pure arithmetic on Decimals: points are integers only after the single rounding step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from loyaltyctl.errors import InvalidInput
from loyaltyctl.rules.limits import MAX_POINTS
from loyaltyctl.rules.money import from_minor, to_minor
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
    """The promotions of ``day`` that apply to a line of any of ``categories``: one
    without ``categories`` applies to every line, one with them only to those lines."""
    found = []
    for promo in program.earn.promotions:
        if promo.from_ <= day <= promo.to and (
            not promo.categories or any(c in promo.categories for c in categories)
        ):
            found.append((promo.name, promo.multiplier))
    return found


def check_category(program: Program, category: str | None) -> None:
    """With ``earn.known_categories``, a category the program names nowhere is refused
    rather than silently earning the base rate (a typo at the till)."""
    earn = program.earn
    if category is None or earn.known_categories is None:
        return
    if category not in earn.named_categories():
        known = ", ".join(sorted(earn.named_categories()))
        raise InvalidInput(
            f"unknown category {category!r} in program {program.program.key}",
            hint=f"categories: {known}",
        )


@dataclass(frozen=True)
class LineEarning:
    category: str | None
    amount: Decimal
    multiplier: Decimal  # the category's; 0 for an excluded category
    excluded: bool
    promotions: tuple[tuple[str, Decimal], ...]


@dataclass(frozen=True)
class Explanation:
    """Every part of a purchase's points, for people: ``txn show``, statements."""

    lines: tuple[LineEarning, ...]
    per_unit: Decimal
    tier: str
    tier_multiplier: Decimal
    promotions: tuple[tuple[str, Decimal], ...]
    rounding: str
    base: Decimal  # before rounding
    earning: Earning


def explain(program: Program, lines: list[Line], tier_key: str, day: date) -> Explanation:
    """``amount × per_unit × category multiplier × tier × the promotions of that line``
    per line, summed and rounded once for the whole purchase, with each part kept."""
    earn = program.earn
    tier_multiplier = program.tier(tier_key).multiplier
    total = Decimal(0)
    eligible = Decimal(0)
    applied: dict[str, Decimal] = {}
    parts: list[LineEarning] = []
    for line in lines:
        check_category(program, line.category)
        if line.category is not None and line.category in earn.exclude:
            parts.append(LineEarning(line.category, line.amount, Decimal(0), True, ()))
            continue
        multiplier = earn.categories.get(line.category, Decimal(1)) if line.category else Decimal(1)
        value = line.amount * earn.per_unit * multiplier * tier_multiplier
        promos = active_promotions(program, day, {line.category})
        for name, promo_multiplier in promos:
            value *= promo_multiplier
            applied[name] = promo_multiplier
        parts.append(LineEarning(line.category, line.amount, multiplier, False, tuple(promos)))
        total += value
        eligible += line.amount
    earning = Earning(
        points=capped(round_points(total, earn.rounding)),
        base=total,
        eligible_spend=eligible,
        promotions=tuple(applied),
    )
    return Explanation(
        lines=tuple(parts),
        per_unit=earn.per_unit,
        tier=tier_key,
        tier_multiplier=tier_multiplier,
        promotions=tuple(applied.items()),
        rounding=earn.rounding,
        base=total,
        earning=earning,
    )


def purchase_points(program: Program, lines: list[Line], tier_key: str, day: date) -> Earning:
    """The points of a purchase (see ``explain``)."""
    return explain(program, lines, tier_key, day).earning


def capped(points: int) -> int:
    """Earned points stay within what one ledger entry may carry."""
    if points > MAX_POINTS:
        raise InvalidInput(
            f"this purchase would earn {points:,} points, more than {MAX_POINTS:,}",
            hint="check the amount and the program's multipliers",
        )
    return points


def line_factors(
    program: Program, category: str | None, tier_key: str, day: date
) -> tuple[Decimal, ...] | None:
    """What ``purchase_points`` multiplies a one-line purchase's amount by, in its order
    (points per unit, category, tier, promotions): multiplying them in turn and rounding
    once gives exactly its points. None when the category is excluded (no points, no
    eligible spend).

    Bulk imports work these out once per category, tier and day instead of once per row."""
    earn = program.earn
    tier_multiplier = program.tier(tier_key).multiplier
    check_category(program, category)
    if category is not None and category in earn.exclude:
        return None
    multiplier = earn.categories.get(category, Decimal(1)) if category else Decimal(1)
    promos = active_promotions(program, day, {category})
    return (earn.per_unit, multiplier, tier_multiplier, *(m for _name, m in promos))


def points_with(amount: Decimal, factors: tuple[Decimal, ...], rounding: str) -> int:
    total = amount
    for factor in factors:
        total *= factor
    return capped(round_points(total, rounding))


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


@dataclass(frozen=True)
class Totals:
    """Amount (minor units), points and qualifying points and spend of a purchase, or
    summed over the returns of one purchase as stored (points negative)."""

    amount_minor: int = 0
    points: int = 0
    qual_points: int = 0
    qual_spend_minor: int = 0


@dataclass(frozen=True)
class ReturnShare:
    """What one return takes back, signed as stored on the return."""

    amount_minor: int
    points: int
    qual_points: int
    qual_spend_minor: int
    qual_visits: int

    @property
    def clawback(self) -> int:
        return -self.points

    def after(self, before: Totals) -> Totals:
        """The purchase's returns so far, this one included."""
        return Totals(
            before.amount_minor + self.amount_minor,
            before.points + self.points,
            before.qual_points + self.qual_points,
            before.qual_spend_minor + self.qual_spend_minor,
        )


def return_share(
    purchase: Totals, before: Totals, amount: Decimal, digits: int, *, ref: str, hint: str
) -> ReturnShare:
    """The share of ``purchase`` that returning ``amount`` more takes back, computed on
    the cumulative returned amount (so a purchase returned in parts gives back exactly
    what it earned); refuses returning more than is left."""
    original = from_minor(purchase.amount_minor, digits)
    returned_after = from_minor(before.amount_minor, digits) + amount
    if returned_after > original:
        left = original - from_minor(before.amount_minor, digits)
        raise InvalidInput(
            f"cannot return {amount} of purchase {ref}: only {left} of {original} is left "
            "to return",
            hint=hint,
        )

    def taken(total: int, taken_before: int) -> int:
        return cumulative_share(total, original, returned_after) + taken_before

    return ReturnShare(
        amount_minor=to_minor(amount, digits),
        points=-taken(purchase.points, before.points),
        qual_points=-taken(purchase.qual_points, before.qual_points),
        qual_spend_minor=-taken(purchase.qual_spend_minor, before.qual_spend_minor),
        qual_visits=-1 if returned_after == original else 0,
    )
