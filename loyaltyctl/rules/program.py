"""The program file's model: pydantic models and their validation with key paths.

Cross-checks that span several keys raise a ``program_rule`` error whose context carries
``(relative key path, message)`` pairs, so each problem is located at the key to fix rather
than at the table holding it. Turning TOML text into a model, with every problem located
at its line, is ``program_parse``; writing a model out is ``program_export``.
"""

from __future__ import annotations

import json
import math
import re
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from loyaltyctl.errors import NotFound
from loyaltyctl.rules.categories import normalise_category
from loyaltyctl.rules.currency import is_currency, minor_digits
from loyaltyctl.rules.limits import FIRST_YEAR, LAST_YEAR, MAX_POINTS, PROGRAM_KEY_LIMIT
from loyaltyctl.rules.timeutil import is_zone_name

__all__ = [
    "Branding",
    "Earn",
    "Expiry",
    "Program",
    "ProgramInfo",
    "Promotion",
    "Reward",
    "RewardKind",
    "TierLevel",
    "Tiers",
    "keypath",
]

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]

KEY_RE = re.compile(r"[a-z0-9][a-z0-9-]*")
_DECIMAL_RE = re.compile(r"[+-]?\d+(?:\.\d+)?")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MONTH_DAY_RE = re.compile(r"(\d{2})-(\d{2})")
_COLOR_RE = re.compile(r"#[0-9a-fA-F]{6}")
NOT_DECIMAL = "expected a decimal number"
NOT_DATE = "expected a date (YYYY-MM-DD)"
# The longest periods a program may give: from any day up to 2100 they keep every date
# it computes (expiry, hold end, voucher end, pending end) within the year 2999.
MAX_MONTHS = (LAST_YEAR - 2100) * 12
MAX_YEARS = LAST_YEAR - 2100
MAX_DAYS = (LAST_YEAR - 2100) * 365


class NotPlainNumber(float):
    """A TOML float written with an exponent (``1e-2``) or as inf/nan: the program file
    reader keeps its text so that validation can refuse it by name."""

    text: str

    def __new__(cls, text: str) -> NotPlainNumber:
        value = super().__new__(cls, float(text))
        value.text = text
        return value


_PLAIN_FLOAT = re.compile(r"[+-]?[0-9_]+(?:\.[0-9_]+)?")


def toml_float(text: str) -> float:
    """``parse_float`` for tomllib: plain decimals as floats, anything else marked."""
    return float(text) if _PLAIN_FLOAT.fullmatch(text) else NotPlainNumber(text)


def _raise_problems(problems: list[Problem]) -> None:
    if problems:
        summary = "; ".join(f"{keypath(loc)}: {msg}" for loc, msg in problems)
        raise PydanticCustomError(
            "program_rule", "{summary}", {"summary": summary, "problems": problems}
        )


def _to_decimal(value: Any) -> Any:
    # TOML floats go through their shortest repr so that 1.25 becomes exactly Decimal("1.25").
    if isinstance(value, NotPlainNumber):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(NOT_DECIMAL)
        raise ValueError(f"write {value.text} as a plain decimal number, such as 0.01")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool):
        raise ValueError(NOT_DECIMAL)
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, str) and _DECIMAL_RE.fullmatch(value):
        result = Decimal(value)
    else:
        raise ValueError(NOT_DECIMAL)
    if not result.is_finite():
        raise ValueError(NOT_DECIMAL)
    return result


def _to_date(value: Any) -> Any:
    if isinstance(value, datetime):
        raise ValueError(f"{NOT_DATE}, not a date and time")
    if isinstance(value, str) and _DATE_RE.fullmatch(value):
        try:
            value = date.fromisoformat(value)
        except ValueError:
            raise ValueError(f'"{value}" is not a real date') from None
    if isinstance(value, date):
        if not FIRST_YEAR <= value.year <= LAST_YEAR:
            raise ValueError(f"{value} is outside the years {FIRST_YEAR}-{LAST_YEAR}")
        return value
    raise ValueError(NOT_DATE)


def _check_key(value: str) -> str:
    if len(value) > PROGRAM_KEY_LIMIT:
        raise ValueError(f'key "{value[:20]}…" is longer than {PROGRAM_KEY_LIMIT} characters')
    if not KEY_RE.fullmatch(value):
        raise ValueError(
            f'invalid key "{value}" (use lowercase letters, digits and dashes, '
            "starting with a letter or digit)"
        )
    return value


def _check_not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _check_color(value: str) -> str:
    if not _COLOR_RE.fullmatch(value):
        raise ValueError(f'invalid colour "{value}" (use #rrggbb, such as "#1f4e79")')
    return value


def _category(value: str) -> str:
    return normalise_category(value) or value


Dec = Annotated[Decimal, BeforeValidator(_to_decimal)]
PositiveDec = Annotated[Decimal, BeforeValidator(_to_decimal), Field(gt=0)]
NonNegativeDec = Annotated[Decimal, BeforeValidator(_to_decimal), Field(ge=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
PositiveInt = Annotated[int, Strict(), Field(ge=1)]
StrictBool = Annotated[bool, Strict()]
LocalDate = Annotated[date, BeforeValidator(_to_date)]
Key = Annotated[str, AfterValidator(_check_key)]
Text = Annotated[str, AfterValidator(_check_not_blank)]
Color = Annotated[str, AfterValidator(_check_color)]
Category = Annotated[str, AfterValidator(_check_not_blank), AfterValidator(_category)]
Months = Annotated[int, Strict(), Field(ge=1, le=MAX_MONTHS)]
Days = Annotated[int, Strict(), Field(ge=0, le=MAX_DAYS)]
PositiveDays = Annotated[int, Strict(), Field(ge=1, le=MAX_DAYS)]
PointsInt = Annotated[int, Strict(), Field(ge=0, le=MAX_POINTS)]
PositivePoints = Annotated[int, Strict(), Field(ge=1, le=MAX_POINTS)]


def _decimal_places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ProgramInfo(_Model):
    key: Key
    name: Text
    currency: str
    point_value: PositiveDec = Decimal("0.01")
    timezone: str = "UTC"

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        code = value.upper()
        if not is_currency(code):
            raise ValueError(f'unknown currency "{value}" (use an ISO 4217 code such as USD)')
        return code

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if not is_zone_name(value):
            raise ValueError(
                f'unknown time zone "{value}" (use an IANA name such as Europe/London)'
            )
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def minor_digits(self) -> int:
        return minor_digits(self.currency)

        # Some systems list their own aliases among the zones; a program file must not depend on
        return frozenset()


class Promotion(_Model):
    name: Text
    from_: LocalDate = Field(alias="from")
    to: LocalDate
    multiplier: PositiveDec
    categories: list[Category] = []

    @model_validator(mode="after")
    def _dates_in_order(self) -> Self:
        if self.from_ > self.to:
            _raise_problems([(("to",), f"{self.to} is before from ({self.from_})")])
        return self


class Earn(_Model):
    per_unit: NonNegativeDec = Decimal(1)
    rounding: Literal["floor", "half-up", "ceil"] = "floor"
    exclude: list[Category] = []
    signup_bonus: PointsInt = 0
    pending_days: Days = 0
    allow_negative: StrictBool = True
    categories: dict[str, PositiveDec] = {}
    promotions: list[Promotion] = []
    bonus_qualifies: StrictBool = False
    # When given, a purchase line of a category named nowhere in this section is refused.
    known_categories: list[Category] | None = None

    @field_validator("categories", mode="after")
    @classmethod
    def _category_names(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        problems: list[Problem] = []
        for name, multiplier in value.items():
            key = normalise_category(name)
            if key is None:
                problems.append(((name,), "a category name must not be empty"))
            elif key in out:
                problems.append(((name,), f'"{name}" is the same category as "{key}"'))
            else:
                out[key] = multiplier
        _raise_problems(problems)
        return out

    def named_categories(self) -> frozenset[str]:
        """Every category this section names."""
        names = set(self.categories) | set(self.exclude) | set(self.known_categories or ())
        for promo in self.promotions:
            names.update(promo.categories)
        return frozenset(names)

    @model_validator(mode="after")
    def _excluded_have_no_multiplier(self) -> Self:
        _raise_problems(
            [
                (("categories", name), f'"{name}" is excluded, so it cannot have a multiplier')
                for name in self.categories
                if name in self.exclude
            ]
        )
        return self


class Expiry(_Model):
    policy: Literal["rolling", "fixed_date", "inactivity", "never"] = "never"
    months: Months | None = None
    month_end: StrictBool = False
    day: str | None = None
    years: Annotated[int, Strict(), Field(ge=0, le=MAX_YEARS)] = 1

    @field_validator("day")
    @classmethod
    def _real_month_day(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = _MONTH_DAY_RE.fullmatch(value)
        if not match:
            raise ValueError(f'expected "MM-DD", such as "12-31", not "{value}"')
        if value == "02-29":
            raise ValueError('"02-29" is not in every year (use "02-28" or "03-01")')
        try:
            date(2001, int(match[1]), int(match[2]))
        except ValueError:
            raise ValueError(f'"{value}" is not a day of the year') from None
        return value

    @model_validator(mode="after")
    def _policy_needs(self) -> Self:
        problems: list[Problem] = []
        if self.policy in ("rolling", "inactivity") and self.months is None:
            problems.append((("months",), f'required when policy = "{self.policy}"'))
        if self.policy == "fixed_date":
            if self.day is None:
                problems.append((("day",), 'required when policy = "fixed_date" (e.g. "12-31")'))
            elif self.years == 0 and self.day != "12-31":
                # Points earned after `day` would expire before they were earned.
                problems.append((("years",), 'must be at least 1 unless day = "12-31"'))
        _raise_problems(problems)
        return self


class TierLevel(_Model):
    key: Key
    name: str = ""
    min: NonNegativeDec
    multiplier: PositiveDec = Decimal(1)

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("name") and isinstance(data.get("key"), str):
            return {**data, "name": data["key"].replace("-", " ").title()}
        return data


def default_levels() -> list[TierLevel]:
    return [TierLevel(key="member", min=Decimal(0))]


class Tiers(_Model):
    metric: Literal["points", "spend", "visits"] = "points"
    window: Literal["rolling-12-months", "calendar-year"] = "rolling-12-months"
    hold_months: Annotated[int, Strict(), Field(ge=0, le=MAX_MONTHS)] = 12
    downgrade: Literal["one-level", "to-qualified"] = "one-level"
    levels: list[TierLevel] = Field(default_factory=default_levels)

    @model_validator(mode="after")
    def _levels_consistent(self) -> Self:
        problems: list[Problem] = []
        if not self.levels:
            problems.append((("levels",), "at least one level is required (first with min = 0)"))
        seen: set[str] = set()
        for i, level in enumerate(self.levels):
            if level.key in seen:
                problems.append((("levels", i, "key"), f'duplicate tier "{level.key}"'))
            seen.add(level.key)
            if i == 0 and level.min != 0:
                problems.append((("levels", 0, "min"), "the first level must have min = 0"))
            if i > 0 and level.min <= self.levels[i - 1].min:
                previous = self.levels[i - 1]
                problems.append(
                    (
                        ("levels", i, "min"),
                        f'must be greater than the min of "{previous.key}" ({previous.min}): '
                        "levels go from lowest to highest",
                    )
                )
            if self.metric != "spend" and level.min != level.min.to_integral_value():
                problems.append((("levels", i, "min"), f"must be a whole number of {self.metric}"))
        _raise_problems(problems)
        return self


RewardKind = Literal["item", "discount-amount", "discount-percent", "free-product"]


class Reward(_Model):
    key: Key
    name: Text
    cost: PositivePoints
    tiers: list[str] = []
    stock: NonNegativeInt | None = None
    per_member: PositiveInt | None = None
    valid_days: PositiveDays = 30
    kind: RewardKind = "item"
    value: PositiveDec | None = None
    product: Text | None = None
    description: str = ""

    @model_validator(mode="after")
    def _kind_needs(self) -> Self:
        problems: list[Problem] = []
        discount = self.kind in ("discount-amount", "discount-percent")
        if discount and self.value is None:
            problems.append((("value",), f'required when kind = "{self.kind}"'))
        if not discount and self.value is not None:
            problems.append((("value",), "only discount rewards have a value"))
        if self.kind == "discount-percent" and self.value is not None and self.value > 100:
            problems.append((("value",), "a percentage must be at most 100"))
        if self.kind == "free-product" and self.product is None:
            problems.append((("product",), 'required when kind = "free-product"'))
        if self.kind != "free-product" and self.product is not None:
            problems.append((("product",), 'only kind = "free-product" has a product'))
        _raise_problems(problems)
        return self


class Branding(_Model):
    display_name: str | None = None
    primary_color: Color = "#1f4e79"
    accent_color: Color = "#f2a900"
    logo_text: str | None = None


class Program(_Model):
    program: ProgramInfo
    earn: Earn = Earn()
    expiry: Expiry = Expiry()
    tiers: Tiers = Tiers()
    rewards: list[Reward] = []
    branding: Branding | None = None

    # Field validators rather than one model validator: they still run when an unrelated
    # section has errors, so a broken file reports these problems in the same pass.
    @field_validator("tiers")
    @classmethod
    def _spend_in_currency(cls, tiers: Tiers, info: ValidationInfo) -> Tiers:
        info_ = info.data.get("program")
        if tiers.metric == "spend" and isinstance(info_, ProgramInfo):
            too_precise = f"{info_.currency} amounts have at most {info_.minor_digits} decimals"
            _raise_problems(
                [
                    (("levels", i, "min"), too_precise)
                    for i, level in enumerate(tiers.levels)
                    if _decimal_places(level.min) > info_.minor_digits
                ]
            )
        return tiers

    @field_validator("rewards")
    @classmethod
    def _rewards_consistent(cls, rewards: list[Reward], info: ValidationInfo) -> list[Reward]:
        problems: list[Problem] = []
        tiers = info.data.get("tiers")
        info_ = info.data.get("program")
        seen: set[str] = set()
        for i, reward in enumerate(rewards):
            if reward.key in seen:
                problems.append(((i, "key"), f'duplicate reward "{reward.key}"'))
            seen.add(reward.key)
            if isinstance(tiers, Tiers):
                known = [level.key for level in tiers.levels]
                for tier in reward.tiers:
                    if tier not in known:
                        problems.append(
                            ((i, "tiers"), f'unknown tier "{tier}" (tiers: {", ".join(known)})')
                        )
            if (
                reward.kind == "discount-amount"
                and reward.value is not None
                and isinstance(info_, ProgramInfo)
                and _decimal_places(reward.value) > info_.minor_digits
            ):
                problems.append(
                    (
                        (i, "value"),
                        f"{info_.currency} amounts have at most {info_.minor_digits} decimals",
                    )
                )
        _raise_problems(problems)
        return rewards

    def tier_keys(self) -> list[str]:
        """Tier keys from the lowest level to the highest."""
        return [level.key for level in self.tiers.levels]

    def tier(self, key: str) -> TierLevel:
        for level in self.tiers.levels:
            if level.key == key:
                return level
        raise NotFound(
            f'tier "{key}" not found in program {self.program.key}',
            hint=f"tiers: {', '.join(self.tier_keys())}",
        )

    def reward(self, key: str) -> Reward | None:
        return next((reward for reward in self.rewards if reward.key == key), None)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def keypath(loc: Loc) -> str:
    """``earn.promotions[0].to``: a key path as a program file spells it."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
            out += f".{name}" if out else name
    return out
