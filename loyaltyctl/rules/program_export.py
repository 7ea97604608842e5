"""A program out again: as a TOML file, as a fingerprint, and a starter template."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from decimal import Decimal
from typing import Any

import tomli_w

from loyaltyctl.errors import InvalidInput
from loyaltyctl.rules.program import KEY_RE, Program, keypath

__all__ = ["program_fingerprint", "program_template", "program_to_toml"]


def _toml_number(value: Decimal) -> int | float | str:
    # A float is written only when it reads back as the same digits; otherwise a string,
    # which the parser accepts for every decimal key.
    text = format(value, "f")
    if "." not in text:
        return int(text)
    if repr(float(text)) == text:
        return float(text)
    return text


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _toml_number(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _emit_table(table: dict[str, Any], path: tuple[str, ...], out: list[str]) -> None:
    # tomli_w writes short arrays of tables inline; [[header]] blocks read like the original.
    plain = {k: v for k, v in table.items() if not isinstance(v, dict) and not _is_table_array(v)}
    if plain:
        out.append(tomli_w.dumps(plain))
    for key, value in table.items():
        header = ".".join(keypath((part,)) for part in (*path, key))
        if isinstance(value, dict):
            out.append(f"\n[{header}]\n")
            _emit_table(value, (*path, key), out)
        elif _is_table_array(value):
            for item in value:
                out.append(f"\n[[{header}]]\n")
                _emit_table(item, (*path, key), out)


def program_to_toml(program: Program) -> str:
    """The program as a TOML file that parses back to an equal model."""
    data = _plain(program.model_dump(by_alias=True, exclude_none=True))
    # Money is written as strings, like amounts on the command line.
    data["program"]["point_value"] = format(program.program.point_value, "f")
    for reward, dumped in zip(program.rewards, data["rewards"], strict=True):
        if reward.kind == "discount-amount" and reward.value is not None:
            dumped["value"] = format(reward.value, "f")
    if not data["rewards"]:
        del data["rewards"]
    out: list[str] = []
    _emit_table(data, (), out)
    return "".join(out).lstrip("\n")


def _canonical(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot fingerprint {type(value).__name__}")


def program_fingerprint(program: Program) -> str:
    """sha256 of the program's canonical JSON: equal programs, equal fingerprints.

    Decimals are normalised so that 2 and 2.0 (the same rule) do not make a new version.
    """
    canonical = json.dumps(
        program.model_dump(by_alias=True),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=_canonical,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _toml_string(value: str) -> str:
    return tomli_w.dumps({"v": value}).removeprefix("v = ").rstrip("\n")


_TEMPLATE = """\
# A loyaltyctl program file. Reference: docs/program-format.md
#   check it:  loyaltyctl program validate FILE
#   load it:   loyaltyctl program load FILE  (loading a changed file makes a new version)
# Keys left out take the default shown in brackets.

[program]
key = {key}          # stable identifier: lowercase letters, digits, dashes (required)
name = {name}        # shown to members and on statements (required)
currency = "USD"          # ISO 4217 code (required)
point_value = "0.01"      # what one point costs the business, for liability ["0.01"]
timezone = "UTC"          # IANA zone for typed dates and day boundaries ["UTC"]

[earn]
per_unit = 1              # points per 1.00 of eligible spend [1]
rounding = "floor"        # floor | half-up | ceil, once per transaction ["floor"]
exclude = []              # categories that earn nothing and do not qualify [[]]
signup_bonus = 0          # points given at enrollment [0]
pending_days = 0          # purchase points cannot be spent for this many days [0]
allow_negative = true     # a return may take the balance below zero (a debt) [true]
bonus_qualifies = false   # bonuses and adjustments count towards tiers [false]
# Categories the tills send; with this list, a category named nowhere in [earn] is
# refused (a typo would otherwise earn the base rate). Case and spaces do not matter.
# known_categories = ["food", "drinks"]   # [any category]

[earn.categories]         # multiplier by purchase category; others earn x1 [none]
# coffee-beans = 2.0

# One block per promotion; promotions active on a purchase's date multiply its points.
# [[earn.promotions]]
# name = "Double points weekend"
# from = 2026-12-05       # first day, program-local, inclusive
# to = 2026-12-06         # last day, inclusive
# multiplier = 2.0
# categories = []         # only these categories; empty: every category [[]]

[expiry]
policy = "never"          # rolling | fixed_date | inactivity | never ["never"]
# months = 12             # rolling: months after earning; inactivity: months without a purchase
# month_end = false       # rolling: move the date to the last day of its month [false]
# day = "12-31"           # fixed_date: the month-day points expire on
# years = 1               # fixed_date: points earned in year Y expire on `day` in Y + years [1]

[tiers]
metric = "points"         # points | spend | visits: what `min` counts ["points"]
window = "rolling-12-months"  # rolling-12-months | calendar-year ["rolling-12-months"]
hold_months = 12          # a tier is kept at least this long before a downgrade [12]
downgrade = "one-level"   # one-level | to-qualified ["one-level"]

# Levels from lowest to highest; the first has min = 0 and every member starts there.
[[tiers.levels]]
key = "member"
name = "Member"           # [key in title case]
min = 0                   # qualifying activity needed, in units of `metric`
multiplier = 1.0          # multiplies purchase points at this tier [1]

# [[tiers.levels]]
# key = "gold"
# min = 1000
# multiplier = 1.5

# One block per reward.
# [[rewards]]
# key = "free-coffee"     # lowercase letters, digits, dashes (required)
# name = "Free coffee"    # (required)
# cost = 500              # points (required)
# tiers = []              # tiers that may redeem it; empty: every tier [[]]
# stock = 100             # vouchers available in total [unlimited]
# per_member = 1          # live vouchers a member may hold at once [unlimited]
# valid_days = 30         # voucher lifetime in days [30]
# kind = "item"           # item | discount-amount | discount-percent | free-product ["item"]
# value = "5.00"          # discount-amount: currency amount; discount-percent: 0 < v <= 100
# product = "latte"       # free-product: the product given
# description = ""        # [""]

# Optional look of statements and reports.
# [branding]
# display_name = "My Rewards"
# primary_color = "#1f4e79"
# accent_color = "#f2a900"
# logo_text = "MR"
"""


def program_template(key: str = "my-program", name: str = "My Rewards") -> str:
    """A commented starter program file; it parses as it is."""
    if not KEY_RE.fullmatch(key):
        raise InvalidInput(
            f'invalid program key "{key}"',
            hint="use lowercase letters, digits and dashes, starting with a letter or digit",
        )
    return _TEMPLATE.replace("{key}", _toml_string(key)).replace("{name}", _toml_string(name))
