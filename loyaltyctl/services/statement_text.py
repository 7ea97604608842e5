"""How a ledger movement reads on a member's statement: one line of words per
transaction or job run, naming the promotions a purchase earned by."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from loyaltyctl.rules.earning import Line, explain
from loyaltyctl.rules.money import format_amount, from_minor
from loyaltyctl.rules.timeutil import local_date
from loyaltyctl.rules.versions import ProgramContext


def promotions_of(ctx: ProgramContext, row: Any, at: datetime) -> tuple[str, ...]:
    """The promotions a purchase earned by, by name (only programs that have some pay
    for working it out)."""
    if row.kind != "earn" or row.txn_kind != "purchase" or row.payload is None:
        return ()
    version = next((v for v in ctx.versions if v.id == row.program_version_id), None)
    if version is None or not version.spec.earn.promotions:
        return ()
    spec = version.spec
    stored = json.loads(row.payload).get("lines") or ()
    lines = [Line(category, Decimal(amount)) for category, amount in stored]
    day = local_date(at, spec.program.tz)
    return explain(spec, lines, spec.tiers.levels[0].key, day).earning.promotions


def describe(row: Any, digits: int, currency: str, promotions: tuple[str, ...] = ()) -> str:
    amount = (
        f"{format_amount(from_minor(row.amount_minor, digits), digits)} {currency}"
        if row.amount_minor is not None
        else ""
    )
    kind = row.kind
    if kind == "earn":
        named = f" ({', '.join(promotions)})" if promotions else ""
        return f"Purchase {amount}".strip() + named
    if kind == "clawback":
        of = f" of {row.original_ref}" if row.original_ref else ""
        return f"Return{of} ({amount})" if amount else f"Return{of}"
    if kind == "redeem":
        name = row.reward_name or row.reason or "reward"
        return f"Redeemed {name}" + (f" (voucher {row.voucher_code})" if row.voucher_code else "")
    if kind == "refund":
        code = row.cancelled_code
        return f"Voucher {code} cancelled: points returned" if code else "Points returned"
    if kind == "expire":
        return f"Points expired (run of {row.as_of.isoformat()})" if row.as_of else "Points expired"
    if kind == "bonus":
        return _capitalised(row.reason) if row.reason else "Bonus"
    if kind == "adjust":
        return f"Adjustment: {row.reason}" if row.reason else "Adjustment"
    return _capitalised(row.reason or kind)


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]
