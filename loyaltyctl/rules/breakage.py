"""Expected redemptions of outstanding points: the chain-ladder method on cohorts.

Pure arithmetic on exact fractions (no database, no clock): ``report liability`` feeds
it each cohort's points and cumulative redemptions by age, and the docs' worked
examples feed it published triangles. See docs/economics.md for the formulas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

CHAIN_LADDER = "chain-ladder"
RATE_SO_FAR = "redemption rate so far"


def development_factors(
    triangle: Sequence[Sequence[int]], tail: int | None = None
) -> list[Fraction]:
    """Age-to-age factors ``f_k = Σ D[c][k+1] / Σ D[c][k]`` over the rows observed at
    both ages (volume-weighted averages). Each row holds one cohort's cumulative figure
    at ages 0, 1, … as far as it is observed. A factor with nothing to develop from is 1;
    so is every factor from age ``tail`` on (nothing can happen after that age)."""
    longest = max((len(row) for row in triangle), default=0)
    factors: list[Fraction] = []
    for k in range(longest - 1):
        pairs = [(row[k], row[k + 1]) for row in triangle if len(row) > k + 1]
        before = sum(a for a, _ in pairs)
        if (tail is not None and k >= tail) or before <= 0:
            factors.append(Fraction(1))
        else:
            factors.append(Fraction(sum(b for _, b in pairs), before))
    return factors


def develop(latest: int, age: int, factors: Sequence[Fraction]) -> Fraction:
    """A figure observed at ``age`` developed to ultimate: × f_age × f_age+1 × …"""
    value = Fraction(latest)
    for factor in factors[age:]:
        value *= factor
    return value


@dataclass(frozen=True)
class CohortFigures:
    """One cohort at the evaluation date: ``issued`` and ``redeemed`` net, ``outstanding``
    still in its lots, ``developed`` its cumulative redemptions at each observed age
    (may be empty when no age is complete yet: then ``redeemed`` stands for age 0)."""

    issued: int
    redeemed: int
    outstanding: int
    developed: tuple[int, ...]


@dataclass(frozen=True)
class CohortEstimate:
    ultimate_rate: Fraction
    expected: int  # future redemptions, in points


@dataclass(frozen=True)
class Estimate:
    method: str
    factors: list[Fraction]
    cohorts: list[CohortEstimate]
    outstanding: int
    expected: int

    @property
    def rate(self) -> Fraction:
        """Share of the outstanding points members are expected to redeem."""
        return Fraction(self.expected, self.outstanding) if self.outstanding > 0 else Fraction(0)

    @property
    def breakage(self) -> int:
        return self.outstanding - self.expected


def _points(value: Fraction) -> int:
    return int(Decimal(value.numerator / Decimal(value.denominator)).quantize(0, ROUND_HALF_UP))


def _cohort(c: CohortFigures, urr: Fraction) -> CohortEstimate:
    urr = min(Fraction(1), max(Fraction(0), urr))
    expected = _points(c.issued * urr - c.redeemed)
    return CohortEstimate(urr, min(c.outstanding, max(0, expected)))


def estimate(cohorts: Sequence[CohortFigures], tail: int | None = None) -> Estimate:
    """Ultimate redemption rate and expected future redemptions of each cohort.

    A closed cohort (nothing outstanding) has its final rate. An open one last observed
    at age k: ``D[k] / issued × f_k × f_k+1 × …`` capped at 1. With fewer than two ages
    observed anywhere there are no factors: every open cohort gets the program's
    redemption rate so far (all redeemed / all issued)."""
    triangle = [c.developed for c in cohorts if c.developed]
    factors = development_factors(triangle, tail)
    method = CHAIN_LADDER if factors else RATE_SO_FAR
    issued = sum(c.issued for c in cohorts)
    so_far = Fraction(sum(c.redeemed for c in cohorts), issued) if issued > 0 else Fraction(0)
    found: list[CohortEstimate] = []
    for c in cohorts:
        if c.issued <= 0:
            found.append(CohortEstimate(Fraction(0), 0))
        elif c.outstanding <= 0:
            found.append(_cohort(c, Fraction(c.redeemed, c.issued)))
        elif method == RATE_SO_FAR:
            found.append(_cohort(c, max(so_far, Fraction(c.redeemed, c.issued))))
        else:
            age = max(len(c.developed) - 1, 0)
            latest = c.developed[-1] if c.developed else c.redeemed
            found.append(_cohort(c, develop(latest, age, factors) / c.issued))
    outstanding = sum(max(c.outstanding, 0) for c in cohorts)
    return Estimate(method, factors, found, outstanding, sum(e.expected for e in found))


__all__ = [
    "CHAIN_LADDER",
    "RATE_SO_FAR",
    "CohortEstimate",
    "CohortFigures",
    "Estimate",
    "develop",
    "development_factors",
    "estimate",
]
