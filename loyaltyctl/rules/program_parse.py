"""TOML text to a validated program, every problem reported at once and located.

Each problem reads ``SOURCE:LINE: key.path: message``; SOURCE is whatever the caller
names the text by (a file's path when it came from one). Reading files is the services'
business (``services.program_files``): this module only ever sees text.
"""

from __future__ import annotations

import json
import re
import tomllib
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from loyaltyctl.errors import ProgramInvalid
from loyaltyctl.rules.program import (
    MAX_DAYS,
    MAX_MONTHS,
    MAX_YEARS,
    NOT_DATE,
    NOT_DECIMAL,
    Loc,
    Program,
    default_levels,
    keypath,
    toml_float,
)

__all__ = ["parse_program"]

_DATE_LIMITS = {MAX_DAYS, MAX_MONTHS, MAX_YEARS}


def parse_program(text: str, source: str = "<string>") -> Program:
    try:
        data = tomllib.loads(text, parse_float=toml_float)
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
        known = [level.key for level in default_levels()]
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
            problem = f"{where}: {keypath(loc)}: {msg}"
            if problem not in already:
                found.append(problem)
    return found


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
            found.append((line, f"{where}: {keypath(full) or '(file)'}: {msg}"))
    found.sort(key=lambda item: item[0] or 0)
    return [problem for _, problem in found]


_SIMPLE_MESSAGES = {
    "string_type": "expected a string",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "decimal_type": NOT_DECIMAL,
    "decimal_parsing": NOT_DECIMAL,
    "date_type": NOT_DATE,
    "date_parsing": NOT_DATE,
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
            return f"required table [{keypath(loc)}] is missing"
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
        limit = ctx.get("le")
        if limit in _DATE_LIMITS:
            return f"must be at most {limit}: more would put dates past the year 2999"
        return f"must be at most {limit}"
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
