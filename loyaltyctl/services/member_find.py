"""``member find``: a member by code, e-mail, phone or part of the name.

Code, e-mail and phone are index lookups (``member.email_key``, ``member.phone_rev``:
see ``rules.search``). Part of a name is a case-insensitive ``LIKE '%…%'`` over the
program's members: no index can serve a substring, so it reads every member row of the
program (about 10 ms per 100,000 members on SQLite), and it runs only when the text is
not an e-mail or a number. Erased members have no personal data and no search keys left,
so they are found by their code only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from loyaltyctl.rules.search import email_key, next_prefix, phone_query
from loyaltyctl.rules.versions import ProgramContext
from loyaltyctl.store.models import Member

MAX_FOUND = 100


@dataclass
class Found:
    member: str
    name: str | None
    email: str | None
    phone: str | None
    status: str
    tier: str
    balance: int


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def find_members(
    session: Session, ctx: ProgramContext, text: str, *, limit: int = MAX_FOUND
) -> list[Found]:
    """Members matching ``text``, exact code matches first, then by code."""
    text = text.strip()
    if not text:
        return []
    base = select(Member).where(Member.program_id == ctx.id)
    conditions: list[Any] = [Member.code == text]
    if "@" in text:
        conditions.append(Member.email_key == email_key(text))
    else:
        phone = phone_query(text)
        if phone is not None:
            prefixes, exact = phone
            for prefix in prefixes:
                conditions.append(
                    (col(Member.phone_rev) >= prefix)
                    & (col(Member.phone_rev) < next_prefix(prefix))
                )
            conditions.append(col(Member.phone_rev).in_(exact))
        elif any(ch.isalpha() for ch in text):
            pattern = "%" + _escape_like(text.lower()) + "%"
            conditions.append(func.lower(Member.name).like(pattern, escape="\\"))
    found: dict[int, Member] = {}
    # One query per condition, so each uses its own index (an OR would make the planner
    # scan whenever one branch cannot use one).
    for condition in conditions:
        for m in session.exec(base.where(condition).limit(limit)).all():
            assert m.id is not None
            found.setdefault(m.id, m)
    rows = sorted(found.values(), key=lambda m: (m.code != text, m.code))[:limit]
    return [Found(m.code, m.name, m.email, m.phone, m.status, m.tier, m.balance) for m in rows]
