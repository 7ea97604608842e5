"""``db check``: recompute every cache from the append-only entries, set-based."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text
from sqlmodel import Session


@dataclass
class CheckResult:
    ok: bool
    problems: list[str] = field(default_factory=list)
    members: int = 0
    lots: int = 0
    entries: int = 0


# Each query returns rows that break one invariant, as (what, detail...) for the message.
_CHECKS: list[tuple[str, str]] = [
    (
        "member {0} in program {1}: balance {2} but its entries sum to {3}",
        """
        SELECT m.code, p.key, m.balance, COALESCE(e.total, 0)
        FROM member m JOIN program p ON p.id = m.program_id
        LEFT JOIN (SELECT member_id, SUM(points) AS total FROM points_entry GROUP BY member_id) e
          ON e.member_id = m.id
        WHERE m.balance <> COALESCE(e.total, 0)
        """,
    ),
    (
        "member {0} in program {1}: balance {2} but lot remainders {3} less debt {4}",
        """
        SELECT m.code, p.key, m.balance, COALESCE(l.total, 0), m.debt
        FROM member m JOIN program p ON p.id = m.program_id
        LEFT JOIN (SELECT member_id, SUM(remaining) AS total FROM points_lot GROUP BY member_id) l
          ON l.member_id = m.id
        WHERE m.balance <> COALESCE(l.total, 0) - m.debt
        """,
    ),
    (
        "member {0} in program {1}: debt {2} but its debt entries sum to {3}",
        """
        SELECT m.code, p.key, m.debt, COALESCE(-e.total, 0)
        FROM member m JOIN program p ON p.id = m.program_id
        LEFT JOIN (SELECT member_id, SUM(points) AS total FROM points_entry
                   WHERE lot_id IS NULL GROUP BY member_id) e ON e.member_id = m.id
        WHERE m.debt <> COALESCE(-e.total, 0) OR m.debt < 0
        """,
    ),
    (
        "lot {0} of member {1}: remaining {2} but its entries sum to {3}",
        """
        SELECT l.id, m.code, l.remaining, COALESCE(e.total, 0)
        FROM points_lot l JOIN member m ON m.id = l.member_id
        LEFT JOIN (SELECT lot_id, SUM(points) AS total FROM points_entry
                   WHERE lot_id IS NOT NULL GROUP BY lot_id) e ON e.lot_id = l.id
        WHERE l.remaining <> COALESCE(e.total, 0)
        """,
    ),
    (
        "lot {0} of member {1}: remaining {2} outside 0..{3}",
        """
        SELECT l.id, m.code, l.remaining, l.points
        FROM points_lot l JOIN member m ON m.id = l.member_id
        WHERE l.remaining < 0 OR l.remaining > l.points
        """,
    ),
    (
        "entry {0}: belongs to neither a transaction nor a job run",
        "SELECT id FROM points_entry WHERE txn_id IS NULL AND job_run_id IS NULL",
    ),
    (
        "entry {0} of member {1} moves a lot of member {2}",
        """
        SELECT e.id, e.member_id, l.member_id FROM points_entry e
        JOIN points_lot l ON l.id = e.lot_id WHERE l.member_id <> e.member_id
        """,
    ),
    (
        "transaction {0} ({1}): records {2} points but its entries sum to {3}",
        """
        SELECT t.ref, t.kind, t.points, COALESCE(e.total, 0)
        FROM txn t
        LEFT JOIN (SELECT txn_id, SUM(points) AS total FROM points_entry
                   WHERE txn_id IS NOT NULL GROUP BY txn_id) e ON e.txn_id = t.id
        WHERE t.points <> COALESCE(e.total, 0)
        """,
    ),
    (
        "member {0} in program {1}: tier {2} but its tier history ends at {3}",
        """
        SELECT m.code, p.key, m.tier, COALESCE(h.tier, '(nothing)')
        FROM member m JOIN program p ON p.id = m.program_id
        LEFT JOIN (SELECT member_id, tier, ROW_NUMBER() OVER (
                     PARTITION BY member_id ORDER BY effective_on DESC, id DESC) AS n
                   FROM tier_change) h ON h.member_id = m.id AND h.n = 1
        WHERE h.tier IS NULL OR h.tier <> m.tier
        """,
    ),
    (
        "redemption {0}: took {1} points but voucher {2} cost {3}",
        """
        SELECT t.ref, -t.points, v.code, v.points
        FROM voucher v JOIN txn t ON t.id = v.txn_id
        WHERE t.points <> -v.points
        """,
    ),
]


# The references of the member ledger tables, which carry no foreign keys (a key checked
# on every insert costs every purchase a lookup per reference and stops the tables from
# being distributed by member): (table, column, referred table).
REFERENCES: tuple[tuple[str, str, str], ...] = (
    ("txn", "program_id", "program"),
    ("txn", "member_id", "member"),
    ("txn", "original_id", "txn"),
    ("txn", "program_version_id", "program_version"),
    ("points_lot", "member_id", "member"),
    ("points_lot", "txn_id", "txn"),
    ("points_entry", "member_id", "member"),
    ("points_entry", "txn_id", "txn"),
    ("points_entry", "job_run_id", "job_run"),
    ("points_entry", "lot_id", "points_lot"),
    ("points_entry", "program_version_id", "program_version"),
    ("tier_change", "member_id", "member"),
    ("tier_change", "txn_id", "txn"),
    ("tier_change", "job_run_id", "job_run"),
    ("voucher", "program_id", "program"),
    ("voucher", "member_id", "member"),
    ("voucher", "txn_id", "txn"),
    ("voucher", "cancel_txn_id", "txn"),
    ("audit", "member_id", "member"),
)


def _reference_check(table: str, column: str, referred: str) -> tuple[str, str]:
    return (
        f"{table} {{0}}: {column} {{1}} names no {referred} row",
        f"SELECT c.id, c.{column} FROM {table} c WHERE c.{column} IS NOT NULL AND NOT EXISTS "
        f"(SELECT 1 FROM {referred} r WHERE r.id = c.{column})",
    )


_CHECKS += [_reference_check(*reference) for reference in REFERENCES]
_CHECKS.append(
    (
        "transaction {0} of program {1} belongs to member {2} of another program",
        """
        SELECT t.ref, t.program_id, m.code FROM txn t JOIN member m ON m.id = t.member_id
        WHERE m.program_id <> t.program_id
        """,
    )
)


def check_database(session: Session, *, limit: int = 100) -> CheckResult:
    problems: list[str] = []
    bind = session.get_bind()
    if bind.dialect.name == "sqlite":
        # Damage in pages no query below reads would go unseen: SQLite's own check reads
        # every page (and writes nothing, so it runs on a read-only file too).
        found = [row[0] for row in session.execute(text("PRAGMA quick_check")).fetchmany(limit)]
        if found != ["ok"]:
            from loyaltyctl.errors import Unusable
            from loyaltyctl.store.db import describe

            raise Unusable(
                f"database {describe(str(bind.engine.url))} is corrupt: {'; '.join(found)}",
                hint="restore it from a backup; `sqlite3 FILE .recover` may save what is left",
            )
    for template, sql in _CHECKS:
        rows = session.execute(text(sql)).fetchmany(limit)
        problems.extend(template.format(*row) for row in rows)
    counts = session.execute(
        text(
            "SELECT (SELECT COUNT(*) FROM member), (SELECT COUNT(*) FROM points_lot), "
            "(SELECT COUNT(*) FROM points_entry)"
        )
    ).one()
    return CheckResult(
        ok=not problems,
        problems=problems,
        members=int(counts[0]),
        lots=int(counts[1]),
        entries=int(counts[2]),
    )
