"""What a new version of a loaded program may not change under its members' feet.

A new currency would make every recorded amount mean something else; a dropped tier
would leave the members who hold it in a tier the program no longer has. Both are
refused (exit 6); a dropped tier is allowed when ``--move-tier OLD=NEW`` says where its
members go, and they move in the same transaction as the load (a ``manual`` tier change
dated by the program-local day of the load).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, func, insert, literal, select, update
from sqlmodel import Session, col

from loyaltyctl.errors import InvalidInput, NotAllowed
from loyaltyctl.rules.program import Program
from loyaltyctl.store.models import Member, TierChangeRow


def parse_moves(values: list[str] | None) -> dict[str, str]:
    """``OLD=NEW`` options as a mapping; each OLD at most once."""
    moves: dict[str, str] = {}
    for value in values or []:
        old, sep, new = value.partition("=")
        old, new = old.strip(), new.strip()
        if not sep or not old or not new:
            raise InvalidInput(
                f"--move-tier {value!r} is not OLD=NEW", hint="e.g. --move-tier gold=silver"
            )
        if old in moves:
            raise InvalidInput(f"--move-tier names tier {old!r} twice")
        moves[old] = new
    return moves


def guard_new_version(
    session: Session,
    program_id: int,
    old: Program,
    new: Program,
    moves: dict[str, str],
    *,
    now: datetime,
) -> None:
    """Refuse what ``new`` may not change, and move the members ``moves`` names."""
    key = new.program.key
    if old.program.currency != new.program.currency:
        raise NotAllowed(
            f"program {key}: the new version changes the currency from "
            f"{old.program.currency} to {new.program.currency}",
            hint="every recorded amount is in the old currency; load the new one as a new"
            " program (another key)",
        )
    new_tiers = new.tier_keys()
    for old_tier, new_tier in moves.items():
        if old_tier not in old.tier_keys():
            raise InvalidInput(
                f"--move-tier {old_tier}={new_tier}: program {key} has no tier {old_tier!r}",
                hint=f"tiers now: {', '.join(old.tier_keys())}",
            )
        if new_tier not in new_tiers:
            raise InvalidInput(
                f"--move-tier {old_tier}={new_tier}: the new version has no tier {new_tier!r}",
                hint=f"its tiers: {', '.join(new_tiers)}",
            )
    held = dict(
        session.execute(
            select(col(Member.tier), func.count())
            .where(col(Member.program_id) == program_id)
            .group_by(col(Member.tier))
        ).all()
    )
    dropped = {tier: n for tier, n in held.items() if tier not in new_tiers and tier not in moves}
    if dropped:
        listed = ", ".join(
            f"{tier} ({n} member{'s' if n != 1 else ''})" for tier, n in dropped.items()
        )
        first = next(iter(dropped))
        raise NotAllowed(
            f"program {key}: the new version drops tiers that members hold: {listed}",
            hint=f"say where they go, e.g. --move-tier {first}={new_tiers[0]}",
        )
    day = now.astimezone(new.program.tz).date()
    for old_tier, new_tier in moves.items():
        if not held.get(old_tier):
            continue
        which = and_(col(Member.program_id) == program_id, col(Member.tier) == old_tier)
        session.execute(
            insert(TierChangeRow).from_select(
                ["member_id", "tier", "effective_on", "reason", "recorded_at"],
                select(
                    col(Member.id),
                    literal(new_tier),
                    literal(day),
                    literal("manual"),
                    literal(now, type_=TierChangeRow.__table__.c.recorded_at.type),  # type: ignore[attr-defined]
                ).where(which),
            )
        )
        session.execute(
            update(Member).where(which).values(tier=new_tier, tier_since=day, updated_at=now)
        )
