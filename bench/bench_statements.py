"""Benchmark (not a test): bulk statements, the summary report and an export on a
generated program of N members (default 100,000).

    .venv/bin/python bench/bench_statements.py [--members N] [--format json|csv|html]
                                               [--db URL]

Without --db a fresh SQLite file in a temporary folder is used; a PostgreSQL URL must
point at an empty, throwaway database. Prints one line per figure.
"""

from __future__ import annotations

import argparse
import csv
import resource
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import Engine, insert, select

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loyaltyctl.render import render_statement  # noqa: E402
from loyaltyctl.services.context import load_context  # noqa: E402
from loyaltyctl.services.exports import export  # noqa: E402
from loyaltyctl.services.programs import load_program  # noqa: E402
from loyaltyctl.services.reports import summary  # noqa: E402
from loyaltyctl.services.statements import iter_statements  # noqa: E402
from loyaltyctl.store.db import make_engine, session_scope  # noqa: E402
from loyaltyctl.store.migrate import upgrade  # noqa: E402
from loyaltyctl.store.models import (  # noqa: E402
    Member,
    PointsEntry,
    PointsLot,
    ProgramRow,
    ProgramVersion,
    Txn,
)

NOW = datetime(2026, 7, 2, 8, tzinfo=UTC)
CHUNK = 20_000


def rss_mib() -> float:
    """Resident memory now (Linux), else the peak so far."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(engine: Engine, count: int) -> None:
    """Each member: a signup bonus in January, two purchases in June, a third of them a
    partial return; written with Core executemany in chunks, ledger invariants kept."""
    with engine.begin() as conn:
        program_id = conn.execute(select(ProgramRow.id)).scalar_one()
        version_id = conn.execute(select(ProgramVersion.id)).scalar_one()
    enrolled = datetime(2026, 1, 5, 12, tzinfo=UTC)
    buys = [datetime(2026, 6, 10, 12, tzinfo=UTC), datetime(2026, 6, 18, 15, tzinfo=UTC)]
    returned = datetime(2026, 6, 20, 12, tzinfo=UTC)
    for start in range(0, count, CHUNK):
        members, txns, lots, entries = [], [], [], []
        for i in range(start, min(count, start + CHUNK)):
            mid, tid, lid = i + 1, 4 * i + 1, 3 * i + 1
            code = f"M{i:07d}"
            earned = [50 + i % 100, 20 + i % 37]
            clawed = earned[0] // 2 if i % 3 == 0 else 0
            balance = 25 + sum(earned) - clawed
            members.append(
                {
                    "id": mid,
                    "program_id": program_id,
                    "code": code,
                    "status": "active",
                    "tier": "bronze",
                    "enrolled_at": enrolled,
                    "balance": balance,
                    "debt": 0,
                    "updated_at": enrolled,
                    "last_purchase_at": buys[1],
                    "name": f"Member {i}",
                    "email": f"m{i}@example.org",
                }
            )
            common = {
                "program_id": program_id,
                "member_id": mid,
                "payload": "{}",
                "program_version_id": version_id,
                "tier_after": "bronze",
                "reason": None,
                "original_id": None,
                "qual_visits": 0,
            }
            entry = {"member_id": mid, "job_run_id": None, "program_version_id": version_id}
            txns.append(
                dict(
                    common,
                    id=tid,
                    ref=f"signup:{code}",
                    kind="bonus",
                    occurred_at=enrolled,
                    recorded_at=enrolled,
                    points=25,
                    balance_after=25,
                    qual_at=enrolled,
                    amount_minor=None,
                    qual_points=0,
                    qual_spend_minor=0,
                )
            )
            lots.append(
                {
                    "id": lid,
                    "member_id": mid,
                    "txn_id": tid,
                    "kind": "bonus",
                    "earned_at": enrolled,
                    "available_at": enrolled,
                    "expires_on": date(2026, 7, 5),
                    "points": 25,
                    "remaining": 25,
                }
            )
            entries.append(
                dict(
                    entry,
                    txn_id=tid,
                    lot_id=lid,
                    kind="bonus",
                    points=25,
                    at=enrolled,
                    recorded_at=enrolled,
                )
            )
            running = 25
            for n, (when, points) in enumerate(zip(buys, earned, strict=True)):
                running += points
                txns.append(
                    dict(
                        common,
                        id=tid + 1 + n,
                        ref=f"P{n}-{code}",
                        kind="purchase",
                        occurred_at=when,
                        recorded_at=when,
                        points=points,
                        balance_after=running,
                        qual_at=when,
                        amount_minor=points * 20,
                        qual_points=points,
                        qual_spend_minor=points * 20,
                    )
                )
                left = points - (clawed if n == 0 else 0)
                lots.append(
                    {
                        "id": lid + 1 + n,
                        "member_id": mid,
                        "txn_id": tid + 1 + n,
                        "kind": "earn",
                        "earned_at": when,
                        "available_at": when,
                        "expires_on": date(2026, 12, 10),
                        "points": points,
                        "remaining": left,
                    }
                )
                entries.append(
                    dict(
                        entry,
                        txn_id=tid + 1 + n,
                        lot_id=lid + 1 + n,
                        kind="earn",
                        points=points,
                        at=when,
                        recorded_at=when,
                    )
                )
            if clawed:
                txns.append(
                    dict(
                        common,
                        id=tid + 3,
                        ref=f"R-{code}",
                        kind="return",
                        occurred_at=returned,
                        recorded_at=returned,
                        points=-clawed,
                        balance_after=balance,
                        qual_at=buys[0],
                        amount_minor=earned[0] * 10,
                        qual_points=-clawed,
                        qual_spend_minor=-earned[0] * 10,
                    )
                )
                entries.append(
                    dict(
                        entry,
                        txn_id=tid + 3,
                        lot_id=lid + 1,
                        kind="clawback",
                        points=-clawed,
                        at=returned,
                        recorded_at=returned,
                    )
                )
        with engine.begin() as conn:
            conn.execute(insert(Member), members)
            conn.execute(insert(Txn), txns)
            conn.execute(insert(PointsLot), lots)
            conn.execute(insert(PointsEntry), entries)


def bench_statements(engine: Engine, out: Path, fmt: str, count: int) -> None:
    started = time.perf_counter()
    written = 0
    rss_at_tenth = 0.0
    with session_scope(engine, write=False) as session:
        ctx = load_context(session, None)
        stream = iter_statements(
            session, ctx, first=date(2026, 6, 1), last=date(2026, 6, 30), now=NOW
        )
        with (out / "index.csv").open("w", newline="") as handle:
            index = csv.writer(handle, lineterminator="\n")
            for done, result in stream:
                assert result is not None
                name = f"{result.member}.{fmt}"
                (out / name).write_text(render_statement(result, fmt), encoding="utf-8")
                index.writerow([result.member, name, result.closing_balance])
                written += 1
                if done == max(1, count // 10):
                    rss_at_tenth = rss_mib()
    elapsed = time.perf_counter() - started
    print(
        f"statements --all --format {fmt}: {written} members in {elapsed:.1f} s "
        f"({written / elapsed:,.0f} statements/s)"
    )
    print(
        f"memory (RSS) after 10% of the members: {rss_at_tenth:.0f} MiB; at the end: "
        f"{rss_mib():.0f} MiB"
    )


def bench_report_and_export(engine: Engine, out: Path) -> None:
    with session_scope(engine, write=False) as session:
        ctx = load_context(session, None)
        started = time.perf_counter()
        result = summary(session, ctx, as_of=date(2026, 6, 30), now=NOW)
        print(
            f"report summary: {time.perf_counter() - started:.2f} s "
            f"({result.members} members, {result.points_outstanding} points outstanding)"
        )
        started = time.perf_counter()
        rows = 0
        with (out / "ledger.csv").open("w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            data = export(session, ctx, "ledger", since=None, now=NOW)
            writer.writerow(data.columns)
            for row in data.rows:
                writer.writerow(row)
                rows += 1
        elapsed = time.perf_counter() - started
        print(f"export ledger csv: {rows} rows in {elapsed:.1f} s ({rows / elapsed:,.0f} rows/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--format", default="json", choices=("json", "csv", "html"))
    parser.add_argument("--db", help="database URL (default: a temporary SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-statements-") as tmp:
        folder = Path(tmp)
        url = args.db or f"sqlite:///{folder / 'bench.db'}"
        engine = make_engine(url)
        upgrade(engine)
        with session_scope(engine) as session:
            load_program(session, (REPO / "programs" / "deli.toml"), now=NOW)
        started = time.perf_counter()
        generate(engine, args.members)
        print(
            f"generated {args.members} members in {time.perf_counter() - started:.1f} s "
            f"({engine.dialect.name})"
        )
        out = folder / "statements"
        out.mkdir()
        bench_statements(engine, out, args.format, args.members)
        bench_report_and_export(engine, folder)
        engine.dispose()


if __name__ == "__main__":
    main()
