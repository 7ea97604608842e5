"""Member merges: both members (locked in code order on PostgreSQL), the source's open
lots, qualifying activity and live vouchers loaded for the posting core
(``ledger.merges``), its postings written with the store's bulk writer, then the source
marked ``merged`` and its vouchers handed over, all in the session's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from loyaltyctl.ledger import merges
from loyaltyctl.ledger.requests import Merge
from loyaltyctl.ledger.transfers import refuse_same
from loyaltyctl.rules.timeutil import local_date
from loyaltyctl.rules.versions import ProgramContext
from loyaltyctl.services import events
from loyaltyctl.services.tiering import window_activity
from loyaltyctl.services.transfers import batch_of_two, earlier_pair
from loyaltyctl.store.lookups import fetch_lots_with_availability, fetch_taken_lots


@dataclass
class MergeResult:
    ref: str
    source: str
    target: str
    points_moved: int
    balance: int
    tier: str
    duplicate: bool


def _activity(session: Session, member_id: int) -> list[merges.Activity]:
    rows: Any = session.connection().execute(
        text(
            "SELECT qual_at, SUM(qual_points), SUM(qual_spend_minor), SUM(qual_visits) "
            "FROM txn WHERE member_id = :m AND (qual_points <> 0 OR qual_spend_minor <> 0 "
            "OR qual_visits <> 0) GROUP BY qual_at ORDER BY qual_at"
        ),
        {"m": member_id},
    )
    found = [merges.Activity(at, int(p), int(s), int(v)) for at, p, s, v in rows]
    return [a for a in found if a.points or a.spend_minor or a.visits]


def _live_vouchers(session: Session, member_id: int) -> list[merges.LiveVoucher]:
    rows = (
        session.connection()
        .execute(
            text(
                "SELECT id, code, points, txn_id FROM voucher "
                "WHERE member_id = :m AND status = 'issued' ORDER BY id"
            ),
            {"m": member_id},
        )
        .all()
    )
    return [
        merges.LiveVoucher(
            vid, code, cost, [(lot, taken) for lot, taken, _ in fetch_taken_lots(session, txn)]
        )
        for vid, code, cost, txn in rows
    ]


def merge_members(
    session: Session, ctx: ProgramContext, source: str, target: str, *, ref: str, now: datetime
) -> MergeResult:
    """Fold ``source`` into ``target`` (see ``ledger.merges``). An identical retry reports
    the original result."""
    request = Merge(source=source, target=target, ref=ref, now=now)
    driver, bulk, src, dst = batch_of_two(session, ctx, request.source, request.target, now)
    done = earlier_pair(session, ctx, request.ref, "merge", request.payload())
    if done is not None:
        out, inn = done
        return MergeResult(
            out.ref, src.code, dst.code, -out.points, inn.balance_after, inn.tier_after, True
        )
    when = request.when
    rules = driver.book.at(when)
    refuse_same(src, dst, "merge")
    merges.refuse(src, "source")
    merges.refuse(dst, "target")
    lots = fetch_lots_with_availability(session, src.id)
    activity = _activity(session, src.id)
    vouchers = _live_vouchers(session, src.id)
    today = local_date(when, rules.tz)
    combined = window_activity(session, rules.spec, src.id, today) + window_activity(
        session, rules.spec, dst.id, today
    )
    postings = driver._new_batch(
        bulk,
        2 + len(vouchers) + len(activity),
        len(lots) + sum(len(v.taken) for v in vouchers),
    )
    merged = merges.merge(
        driver.kernel, src, dst, rules, request, lots=lots, activity=activity,
        vouchers=vouchers, combined=combined,
    )  # fmt: skip
    driver._finish(bulk, postings)
    now_s = bulk.ts(now)
    bulk.update(
        "member",
        ("status", "status_reason", "updated_at"),
        [("merged", f"merged into {dst.code}", now_s, src.id)],
    )
    bulk.move("voucher", {v: {"member_id": dst.id, "txn_id": t} for v, t in merged.vouchers})
    events.record(
        session,
        ctx.id,
        "member.merged",
        src.code,
        {
            "into": dst.code,
            "ref": request.ref,
            "points_moved": merged.points_moved,
            "balance": merged.balance,
            "tier": merged.tier,
            "vouchers_moved": len(merged.vouchers),
        },
        now=now,
    )
    return MergeResult(
        request.ref, src.code, dst.code, merged.points_moved, merged.balance, merged.tier, False
    )
