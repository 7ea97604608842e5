"""What changed between two programs, key by key, in words an owner reads.

``earn.per_unit: 10 → 12``, ``tiers.levels[gold].min: 3000 → 2500``,
``earn.promotions[Spring]: added``. Lists of tables are matched by what names their
items (a level's or reward's ``key``, a promotion's ``name``), not by position, so
inserting a level does not report every level after it as changed. Pure: two models in,
a list of changes out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from loyaltyctl.rules.program import Program, keypath

__all__ = ["Change", "describe", "diff_programs", "plain_value"]

# Lists of tables, and the field that names their items.
_NAMED = {
    ("earn", "promotions"): "name",
    ("tiers", "levels"): "key",
    ("rewards",): "key",
}


@dataclass(frozen=True)
class Change:
    """One key that differs: ``old`` None when it was added, ``new`` None when removed."""

    path: str
    old: Any
    new: Any


def diff_programs(old: Program, new: Program) -> list[Change]:
    """Every difference, in the order of the new program's keys (removed ones after)."""
    out: list[Change] = []
    _diff(old.model_dump(by_alias=True), new.model_dump(by_alias=True), (), out)
    return out


def _path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, _Named):
            text += f"[{part.name}]"
        else:
            text += keypath((part,)) if not text else "." + keypath((part,))
    return text


@dataclass(frozen=True)
class _Named:
    name: str


def _same(a: Any, b: Any) -> bool:
    # 2 and 2.0 are the same rule (the fingerprint normalises them too).
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        return a == b
    return bool(type(a) is type(b) and a == b) or (a is None and b is None)


def _diff(old: Any, new: Any, loc: tuple[Any, ...], out: list[Change]) -> None:
    plain = tuple(p for p in loc if not isinstance(p, _Named))
    if isinstance(old, dict) and isinstance(new, dict):
        for key in new:
            if key in old:
                _diff(old[key], new[key], (*loc, key), out)
            else:
                out.append(Change(_path((*loc, key)), None, plain_value(new[key])))
        for key in old:
            if key not in new:
                out.append(Change(_path((*loc, key)), plain_value(old[key]), None))
        return
    field = _NAMED.get(plain) if not any(isinstance(p, _Named) for p in loc) else None
    if field and isinstance(old, list) and isinstance(new, list):
        before = {item[field]: item for item in old}
        after = {item[field]: item for item in new}
        for name, item in after.items():
            where = (*loc, _Named(name))
            if name in before:
                _diff(before[name], item, where, out)
            else:
                out.append(Change(_path(where), None, plain_value(item)))
        for name, item in before.items():
            if name not in after:
                out.append(Change(_path((*loc, _Named(name))), plain_value(item), None))
        kept = [name for name in after if name in before]
        if kept != [name for name in before if name in after]:
            # Tier levels go from lowest to highest: their order is a rule too.
            out.append(
                Change(
                    _path(loc) + " order",
                    [n for n in before if n in after],
                    kept,
                )
            )
        return
    if not _same(old, new):
        out.append(Change(_path(loc), plain_value(old), plain_value(new)))


def plain_value(value: Any) -> Any:
    """JSON-ready: decimals as plain strings (``"0.01"``), dates as ISO text."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_value(v) for v in value]
    return value


def _words(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, list):
        return "[" + ", ".join(_words(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_words(v)}" for k, v in value.items()) + "}"
    return str(value)


def describe(change: Change) -> str:
    """One line for people: ``earn.per_unit: 10 → 12``, ``rewards[mug]: added``."""
    if change.old is None and isinstance(change.new, dict):
        return f"{change.path}: added"
    if change.new is None and isinstance(change.old, dict):
        return f"{change.path}: removed"
    return f"{change.path}: {_words(change.old)} → {_words(change.new)}"
