"""Benchmark (not a test): ``loyaltyctl expire`` over N due lots (default 1,000,000) in a
SQLite file, against raw sqlite3 doing the same INSERT/UPDATEs on an identical copy.

    .venv/bin/python bench/bench_expire.py [--lots N] [--keep DIR]

The data is written with SQLAlchemy Core executemany in chunks (4 lots per member, each
member's lots from one bonus transaction, ledger invariants kept). ``expire`` runs as an
operator runs it: the installed executable, end to end. The raw side does the same work by
hand in one transaction with the same pragmas: every due lot emptied, one ``expire`` entry
per lot, the members' balances (and ``updated_at``), one ``points.expired`` event per
member, the run's row and its audit lines; the results are compared. Target: <= 3x.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, insert, select

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loyaltyctl.services.programs import load_program  # noqa: E402
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

AS_OF = "2026-07-01"
LOTS_PER_MEMBER = 4
CHUNK = 20_000
EXE = Path(sys.executable).parent / "loyaltyctl"

PROGRAM = """
[program]
key = "bench"
name = "Expiry bench"
currency = "USD"
timezone = "UTC"

[earn]
per_unit = 1

[expiry]
policy = "rolling"
months = 6
"""


def generate(engine: Engine, lots: int) -> None:
    with engine.begin() as conn:
        program_id = conn.execute(select(ProgramRow.id)).scalar_one()
        version_id = conn.execute(select(ProgramVersion.id)).scalar_one()
    members = (lots + LOTS_PER_MEMBER - 1) // LOTS_PER_MEMBER
    enrolled = datetime(2025, 1, 1, 9, tzinfo=UTC)
    lot_id = 0
    for start in range(0, members, CHUNK):
        member_rows, txn_rows, lot_rows, entry_rows = [], [], [], []
        for i in range(start, min(members, start + CHUNK)):
            mid = i + 1
            count = min(LOTS_PER_MEMBER, lots - i * LOTS_PER_MEMBER)
            sizes = [10 + (i + n) % 90 for n in range(count)]
            total = sum(sizes)
            member_rows.append(
                {"id": mid, "program_id": program_id, "code": f"M{i:07d}", "status": "active",
                 "tier": "member", "enrolled_at": enrolled, "balance": total, "debt": 0,
                 "updated_at": enrolled}
            )  # fmt: skip
            txn_rows.append(
                {"id": mid, "program_id": program_id, "member_id": mid, "ref": f"B{i}",
                 "kind": "bonus", "occurred_at": enrolled, "recorded_at": enrolled,
                 "payload": "{}", "points": total, "balance_after": total,
                 "tier_after": "member", "qual_at": enrolled, "qual_spend_minor": 0,
                 "program_version_id": version_id}
            )  # fmt: skip
            for n, size in enumerate(sizes):
                lot_id += 1
                shift = timedelta(days=(i + n) % 150)
                earned = enrolled + shift
                lot_rows.append(
                    {"id": lot_id, "member_id": mid, "txn_id": mid, "kind": "bonus",
                     "earned_at": earned, "available_at": earned,
                     "expires_on": date(2025, 7, 1) + shift, "points": size, "remaining": size}
                )  # fmt: skip
                entry_rows.append(
                    {"member_id": mid, "txn_id": mid, "lot_id": lot_id, "kind": "bonus",
                     "points": size, "at": earned, "recorded_at": earned,
                     "program_version_id": version_id}
                )  # fmt: skip
        with engine.begin() as conn:
            conn.execute(insert(Member), member_rows)
            conn.execute(insert(Txn), txn_rows)
            conn.execute(insert(PointsLot), lot_rows)
            conn.execute(insert(PointsEntry), entry_rows)


RAW_DUE = "remaining > 0 AND expires_on IS NOT NULL AND expires_on <= :as_of"


def raw_expire(path: Path) -> float:
    """The same expiry by hand, in one transaction: the run's row and its audit, one
    ``expire`` entry per due lot (dated as the tool dates it), one ``points.expired``
    event per member, the members' balances, the lots emptied, the run marked done."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    stamp = "2026-07-01 00:00:00.000000"
    params: dict[str, object] = {"as_of": AS_OF, "at": stamp, "start": f"{AS_OF} 00:00:00.000000"}
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    run_id = conn.execute(
        "INSERT INTO job_run (program_id, job, as_of, status, started_at, members, points, "
        "upgraded, downgraded) VALUES (1, 'expire', :as_of, 'running', :at, 0, 0, 0, 0)",
        params,
    ).lastrowid
    params["run"] = run_id
    conn.execute(
        "INSERT INTO points_entry (member_id, job_run_id, lot_id, kind, points, at, "
        "recorded_at, program_version_id) SELECT member_id, :run, id, 'expire', -remaining, "
        "MAX(earned_at, :start), :at, 1 FROM points_lot WHERE " + RAW_DUE,
        params,
    )
    conn.execute(
        "INSERT INTO event (at, type, program_id, member, data) "
        "SELECT :at, 'points.expired', 1, m.code, "
        "'{\"as_of\":\"' || :as_of || '\",\"points\":' || SUM(l.remaining) || '}' "
        "FROM points_lot l JOIN member m ON m.id = l.member_id "
        f"WHERE l.{RAW_DUE.replace(' AND ', ' AND l.')} GROUP BY m.code ORDER BY m.code",
        params,
    )
    conn.execute(
        "UPDATE member SET balance = balance - (SELECT SUM(l.remaining) FROM points_lot l "
        f"WHERE l.member_id = member.id AND l.{RAW_DUE.replace(' AND ', ' AND l.')}), "
        f"updated_at = :at WHERE id IN (SELECT member_id FROM points_lot WHERE {RAW_DUE})",
        params,
    )
    conn.execute(f"UPDATE points_lot SET remaining = 0 WHERE {RAW_DUE}", params)
    conn.execute(
        "UPDATE job_run SET status = 'done', finished_at = :at, "
        "members = (SELECT COUNT(*) FROM event WHERE type = 'points.expired'), "
        "points = -(SELECT SUM(points) FROM points_entry WHERE job_run_id = :run), "
        "detail = '{\"lots\": ' || (SELECT COUNT(*) FROM points_entry "
        "WHERE job_run_id = :run) || '}' WHERE id = :run",
        params,
    )
    conn.executemany(
        "INSERT INTO audit (at, actor, command, program_id, summary) "
        "VALUES (:at, 'bench', 'expire', 1, :summary)",
        [
            {**params, "summary": f"expire run as of {AS_OF} {state}"}
            for state in ("running", "done")
        ],
    )
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def tool_expire(path: Path) -> tuple[float, dict[str, object]]:
    started = time.perf_counter()
    done = subprocess.run(
        [str(EXE), "--db", str(path), "expire", "--as-of", AS_OF, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"loyaltyctl expire failed ({done.returncode}): {done.stderr}")
    result: dict[str, object] = json.loads(done.stdout)
    return elapsed, result


def totals(path: Path) -> tuple[object, ...]:
    """Balances, open points, expired points, expire entries, ``points.expired`` events
    and the points they report: equal on both sides when both did the same work."""
    conn = sqlite3.connect(path)
    row = conn.execute(
        "SELECT (SELECT SUM(balance) FROM member), (SELECT SUM(remaining) FROM points_lot), "
        "(SELECT -SUM(points) FROM points_entry WHERE kind = 'expire'), "
        "(SELECT COUNT(*) FROM points_entry WHERE kind = 'expire'), "
        "(SELECT COUNT(*) FROM event WHERE type = 'points.expired'), "
        "(SELECT SUM(json_extract(data, '$.points')) FROM event "
        "WHERE type = 'points.expired'), "
        "(SELECT members FROM job_run WHERE status = 'done'), "
        "(SELECT points FROM job_run WHERE status = 'done')"
    ).fetchone()
    conn.close()
    return tuple(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lots", type=int, default=1_000_000, help="due lots to expire")
    parser.add_argument("--keep", type=Path, help="write the databases here and keep them")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-expire-"))
    folder.mkdir(parents=True, exist_ok=True)
    tool_db, raw_db = folder / "expire-tool.db", folder / "expire-raw.db"
    for path in (tool_db, raw_db):
        path.unlink(missing_ok=True)
    program_file = folder / "bench.toml"
    program_file.write_text(PROGRAM, encoding="utf-8")

    engine = make_engine(f"sqlite:///{tool_db}")
    upgrade(engine)
    with session_scope(engine) as session:
        load_program(session, program_file, now=datetime(2025, 1, 1, tzinfo=UTC))
    started = time.perf_counter()
    generate(engine, args.lots)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    print(f"generated {args.lots:,} lots in {time.perf_counter() - started:.1f} s")
    shutil.copy(tool_db, raw_db)

    raw_seconds = raw_expire(raw_db)
    tool_seconds, result = tool_expire(tool_db)
    if totals(tool_db) != totals(raw_db) or result["lots"] != args.lots:
        raise SystemExit(f"results differ: {totals(tool_db)} vs {totals(raw_db)}, {result}")
    print(f"raw sqlite3, the same work:  {raw_seconds:7.2f} s")
    print(f"loyaltyctl expire (process): {tool_seconds:7.2f} s")
    print(f"ratio: {tool_seconds / raw_seconds:.2f}x (target: <= 3x)")
    if not args.keep:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
