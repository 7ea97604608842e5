"""A statement as one JSON document (the fields of the contract (docs/cli.md) first)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from loyaltyctl.render.timefmt import day, instant

if TYPE_CHECKING:
    from loyaltyctl.services.statements import Statement


def statement_document(s: Statement) -> dict[str, Any]:
    progress = s.progress
    return {
        "member": s.member,
        "from": day(s.first),
        "to": day(s.last),
        "opening_balance": s.opening_balance,
        "lines": [
            {
                "at": instant(line.at),
                "ref": line.ref,
                "kind": line.kind,
                "points": line.points,
                "balance": line.balance,
                "date": day(line.date),
                "description": line.description,
                "recorded_at": instant(line.recorded_at),
                "backdated": line.backdated,
                "store": line.store,
            }
            for line in s.lines
        ],
        "closing_balance": s.closing_balance,
        "tier": s.tier,
        "expiring": [{"date": day(e.date), "points": e.points} for e in s.expiring],
        "name": s.name,
        "program": s.program,
        "program_name": s.program_name,
        "currency": s.currency,
        "timezone": s.timezone,
        "totals": dict(s.totals),
        "tier_name": s.tier_name,
        "hold_until": day(s.hold_until),
        "tier_progress": {
            "metric": progress.metric,
            "window_from": day(progress.window_from),
            "window_to": day(progress.window_to),
            "activity": progress.activity,
            "next_tier": progress.next_tier,
            "next_min": progress.next_min,
            "needed": progress.needed,
        },
        "vouchers": [
            {
                "code": v.code,
                "reward": v.reward,
                "name": v.name,
                "points": v.points,
                "issued_at": instant(v.issued_at),
                "expires_at": instant(v.expires_at),
            }
            for v in s.vouchers
        ],
    }


_compact = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode


def statement_json(s: Statement) -> str:
    """One key per line and one list item (a movement, an expiry) per line: readable, and
    encoded by the C encoder (``indent`` would make it pure Python, a third of the time of
    a bulk run)."""
    parts = []
    for key, value in statement_document(s).items():
        if isinstance(value, list) and value:
            text = "[\n" + ",\n".join(f"    {_compact(item)}" for item in value) + "\n  ]"
        else:
            text = _compact(value)
        parts.append(f"  {_compact(key)}: {text}")
    return "{\n" + ",\n".join(parts) + "\n}\n"
