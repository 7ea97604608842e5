"""The program file: pydantic models, TOML parsing with located errors, export and template.

Validation errors are reported all at once, each as ``FILE:LINE: key.path: message``.
Cross-checks that span several keys raise a ``program_rule`` error whose context carries
``(relative key path, message)`` pairs, so each problem is located at the key to fix rather
than at the table holding it.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
import types
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Self, Union, get_args, get_origin
from zoneinfo import ZoneInfo, available_timezones

import tomli_w
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from loyaltyctl.errors import InvalidInput, NotFound, ProgramInvalid
from loyaltyctl.rules.currency import is_currency, minor_digits

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
    "load_program_file",
    "parse_program",
    "program_fingerprint",
    "program_template",
    "program_to_toml",
]

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]

_KEY_RE = re.compile(r"[a-z0-9][a-z0-9-]*")
_DECIMAL_RE = re.compile(r"[+-]?\d+(?:\.\d+)?")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MONTH_DAY_RE = re.compile(r"(\d{2})-(\d{2})")
_COLOR_RE = re.compile(r"#[0-9a-fA-F]{6}")
_NOT_DECIMAL = "expected a decimal number"
_NOT_DATE = "expected a date (YYYY-MM-DD)"


def _raise_problems(problems: list[Problem]) -> None:
    if problems:
        summary = "; ".join(f"{_keypath(loc)}: {msg}" for loc, msg in problems)
        raise PydanticCustomError(
            "program_rule", "{summary}", {"summary": summary, "problems": problems}
        )


def _to_decimal(value: Any) -> Any:
    # TOML floats go through their shortest repr so that 1.25 becomes exactly Decimal("1.25").
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool):
        raise ValueError(_NOT_DECIMAL)
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, str) and _DECIMAL_RE.fullmatch(value):
        result = Decimal(value)
    else:
        raise ValueError(_NOT_DECIMAL)
    if not result.is_finite():
        raise ValueError(_NOT_DECIMAL)
    return result


def _to_date(value: Any) -> Any:
    if isinstance(value, datetime):
        raise ValueError(f"{_NOT_DATE}, not a date and time")
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _DATE_RE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError(f'"{value}" is not a real date') from None
    raise ValueError(_NOT_DATE)


def _check_key(value: str) -> str:
    if not _KEY_RE.fullmatch(value):
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
        if value in _NOT_ZONES or (value not in _tzdata_zones() and value not in _zone_keys()):
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
# the machine it is loaded on.
_NOT_ZONES = frozenset({"localtime", "posixrules"})


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


class Promotion(_Model):
    name: Text
    from_: LocalDate = Field(alias="from")
    to: LocalDate
    multiplier: PositiveDec
    categories: list[Text] = []

    @model_validator(mode="after")
    def _dates_in_order(self) -> Self:
        if self.from_ > self.to:
            _raise_problems([(("to",), f"{self.to} is before from ({self.from_})")])
        return self


class Earn(_Model):
    per_unit: NonNegativeDec = Decimal(1)
    rounding: Literal["floor", "half-up", "ceil"] = "floor"
    exclude: list[Text] = []
    signup_bonus: NonNegativeInt = 0
    pending_days: NonNegativeInt = 0
    allow_negative: StrictBool = True
    categories: dict[str, PositiveDec] = {}
    promotions: list[Promotion] = []
    bonus_qualifies: StrictBool = False

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
    months: PositiveInt | None = None
    month_end: StrictBool = False
    day: str | None = None
    years: NonNegativeInt = 1

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


def _default_levels() -> list[TierLevel]:
    return [TierLevel(key="member", min=Decimal(0))]


class Tiers(_Model):
    metric: Literal["points", "spend", "visits"] = "points"
    window: Literal["rolling-12-months", "calendar-year"] = "rolling-12-months"
    hold_months: NonNegativeInt = 12
    downgrade: Literal["one-level", "to-qualified"] = "one-level"
    levels: list[TierLevel] = Field(default_factory=_default_levels)

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
    cost: PositiveInt
    tiers: list[str] = []
    stock: NonNegativeInt | None = None
    per_member: PositiveInt | None = None
    valid_days: PositiveInt = 30
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


# ---------------------------------------------------------------------------------------
# Parsing and error reporting


def parse_program(text: str, source: str = "<string>") -> Program:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProgramInvalid([_syntax_problem(str(exc), text, source)], source) from exc
    try:
        return Program.model_validate(data)
    except ValidationError as exc:
        problems = _validation_problems(exc, text, source)
        if any(err["loc"][:1] == ("rewards",) for err in exc.errors()):
            # A broken reward stops the cross-checks of the whole list; unknown tiers are
            # still worth reporting in the same pass.
            problems += _raw_reward_tier_problems(data, text, source, problems)
        raise ProgramInvalid(problems, source) from exc


def _raw_reward_tier_problems(
    data: dict[str, Any], text: str, source: str, already: list[str]
) -> list[str]:
    tiers = data.get("tiers")
    levels = tiers.get("levels") if isinstance(tiers, dict) else None
    if levels is None:
        known = [level.key for level in _default_levels()]
    elif isinstance(levels, list):
        known = [str(lv.get("key")) for lv in levels if isinstance(lv, dict)]
    else:
        return []
    rewards = data.get("rewards")
    if not isinstance(rewards, list):
        return []
    lines = _key_lines(text)
    found = []
    for i, reward in enumerate(rewards):
        wanted = reward.get("tiers") if isinstance(reward, dict) else None
        if not isinstance(wanted, list):
            continue
        loc: Loc = ("rewards", i, "tiers")
        for tier in wanted:
            if tier in known:
                continue
            line = _line_of(loc, lines)
            where = f"{source}:{line}" if line is not None else source
            msg = f'unknown tier "{tier}" (tiers: {", ".join(str(k) for k in known)})'
            problem = f"{where}: {_keypath(loc)}: {msg}"
            if problem not in already:
                found.append(problem)
    return found


def load_program_file(path: Path) -> tuple[Program, str]:
    """Read and validate a program file; returns the model and the file's text."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read program file: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{path}: cannot read program file: not UTF-8 text (byte {exc.start})",
            hint="save the file as UTF-8",
        ) from exc
    # Editors on Windows may prepend a byte order mark, which TOML does not allow.
    text = text.removeprefix("\ufeff")
    return parse_program(text, str(path)), text


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


def _syntax_problem(message: str, text: str, source: str) -> str:
    match = _TOML_POSITION.search(message)
    if match:
        return f"{source}:{match[1]}:{match[2]}: {message[: match.start()]}"
    end = " (at end of document)"
    if message.endswith(end):
        lines = text.split("\n")
        return f"{source}:{len(lines)}:{len(lines[-1]) + 1}: {message.removesuffix(end)}"
    return f"{source}: {message}"


def _validation_problems(exc: ValidationError, text: str, source: str) -> list[str]:
    lines = _key_lines(text)
    found: list[tuple[int | None, str]] = []
    for error in exc.errors():
        loc: Loc = tuple(part for part in error["loc"] if part != "[key]")
        if error["type"] == "program_rule":
            pairs = [(loc + tuple(sub), msg) for sub, msg in error["ctx"]["problems"]]
        else:
            pairs = [(loc, _message(error, loc))]
        for full, msg in pairs:
            line = _line_of(full, lines)
            where = f"{source}:{line}" if line is not None else source
            found.append((line, f"{where}: {_keypath(full) or '(file)'}: {msg}"))
    found.sort(key=lambda item: item[0] or 0)
    return [problem for _, problem in found]


_SIMPLE_MESSAGES = {
    "string_type": "expected a string",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "decimal_type": _NOT_DECIMAL,
    "decimal_parsing": _NOT_DECIMAL,
    "date_type": _NOT_DATE,
    "date_parsing": _NOT_DATE,
    "list_type": 'expected a list, such as ["a", "b"]',
    "dict_type": "expected a table",
    "model_type": "expected a table",
    "model_attributes_type": "expected a table",
}


def _message(error: ErrorDetails, loc: Loc) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "missing":
        model = _model_at(loc)
        if model is not None:
            return f"required table [{_keypath(loc)}] is missing"
        return "required key is missing"
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        if parent is None:
            return "unknown key"
        allowed = [field.alias or name for name, field in parent.model_fields.items()]
        return f"unknown key (allowed: {', '.join(allowed)})"
    if kind == "literal_error":
        return f"must be one of {str(ctx.get('expected', '')).replace(chr(39), chr(34))}"
    if kind == "greater_than":
        return f"must be greater than {ctx.get('gt')}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}"
    if kind in _SIMPLE_MESSAGES:
        return _SIMPLE_MESSAGES[kind]
    return error["msg"]


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            options = [arg for arg in get_args(tp) if arg is not type(None)]
            if len(options) != 1:
                return tp
            tp = options[0]
        else:
            return tp


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model class a key path points into, by walking the schema from Program."""
    tp: Any = Program
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(part, int):
            if get_origin(tp) is not list:
                return None
            tp = get_args(tp)[0]
        elif isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {field.alias or name: field for name, field in tp.model_fields.items()}
            field = fields.get(part) or tp.model_fields.get(part)
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _keypath(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
            out += f".{name}" if out else name
    return out


_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
_KEY_EXPR = rf"{_PART}(?:\s*\.\s*{_PART})*"
_PART_RE = re.compile(_PART)
_ARRAY_HEADER_RE = re.compile(rf"\s*\[\[\s*({_KEY_EXPR})\s*\]\]")
_TABLE_HEADER_RE = re.compile(rf"\s*\[\s*({_KEY_EXPR})\s*\]")
_KEY_VALUE_RE = re.compile(rf"\s*({_KEY_EXPR})\s*=(.*)")


def _split_key(expr: str) -> tuple[str, ...]:
    parts: list[str] = []
    for match in _PART_RE.finditer(expr):
        raw = match.group()
        if raw.startswith('"'):
            try:
                parts.append(json.loads(raw))
            except ValueError:
                parts.append(raw[1:-1])
        elif raw.startswith("'"):
            parts.append(raw[1:-1])
        else:
            parts.append(raw)
    return tuple(parts)


def _bracket_depth_change(value: str) -> int:
    depth = 0
    quote: str | None = None
    escaped = False
    for char in value:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\" and quote == '"':
                escaped = True
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "#":
            break
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
    return depth


def _key_lines(text: str) -> dict[Loc, int]:
    """Best-effort map from key path (as pydantic reports it) to the 1-based line defining it."""
    found: dict[Loc, int] = {}
    arrays: dict[Loc, int] = {}
    table: Loc = ()
    close_string: str | None = None
    depth = 0

    def resolve(parts: tuple[str, ...]) -> Loc:
        path: Loc = ()
        for part in parts:
            path += (part,)
            if path in arrays:
                path += (arrays[path] - 1,)
        return path

    for number, line in enumerate(text.splitlines(), 1):
        if close_string:
            if close_string in line:
                close_string = None
            continue
        if depth > 0:
            depth += _bracket_depth_change(line)
            continue
        if match := _ARRAY_HEADER_RE.match(line):
            parts = _split_key(match[1])
            base = resolve(parts[:-1]) + (parts[-1],)
            arrays[base] = arrays.get(base, 0) + 1
            table = base + (arrays[base] - 1,)
            found.setdefault(base, number)
            found.setdefault(table, number)
        elif match := _TABLE_HEADER_RE.match(line):
            table = resolve(_split_key(match[1]))
            for size in range(1, len(table) + 1):
                found.setdefault(table[:size], number)
        elif match := _KEY_VALUE_RE.match(line):
            found.setdefault(table + _split_key(match[1]), number)
            value = match[2].lstrip()
            for quotes in ('"""', "'''"):
                if value.startswith(quotes) and quotes not in value[3:]:
                    close_string = quotes
            if not close_string:
                depth = max(0, _bracket_depth_change(value))
    return found


def _line_of(loc: Loc, lines: dict[Loc, int]) -> int | None:
    for size in range(len(loc), 0, -1):
        if loc[:size] in lines:
            return lines[loc[:size]]
    return None


# ---------------------------------------------------------------------------------------
# Export, fingerprint and template


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
        header = ".".join(_keypath((part,)) for part in (*path, key))
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
    if not _KEY_RE.fullmatch(key):
        raise InvalidInput(
            f'invalid program key "{key}"',
            hint="use lowercase letters, digits and dashes, starting with a letter or digit",
        )
    return _TEMPLATE.replace("{key}", _toml_string(key)).replace("{name}", _toml_string(name))
