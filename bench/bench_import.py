"""Benchmark (not a test): ``member import`` and ``txn import`` of a generated year of a
coffee shop's sales, and start-up costs, each next to a floor measured in the same run.

    .venv/bin/python bench/bench_import.py [--purchases N] [--members N] [--pg-purchases N]

The floors store exactly the rows the import stored (read back from its database) into a
copy of the database as it was before the import: raw ``sqlite3`` executemany in one
transaction with the same pragmas, and psycopg ``COPY`` on PostgreSQL. Reading the rows
back is not timed; the import is timed end to end as an operator runs it (the installed
executable, process start included).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
EXE = Path(sys.executable).parent / "loyaltyctl"

PROGRAM = """
[program]
key = "bench"
name = "Bench Coffee"
currency = "USD"
point_value = "0.002"
timezone = "America/New_York"

[earn]
per_unit = 10
exclude = ["gift-cards"]
signup_bonus = 100
allow_negative = true

[earn.categories]
beans = 2.0
merch = 1.5

[[earn.promotions]]
name = "Double points weekend"
from = 2025-12-05
to = 2025-12-06
multiplier = 2.0

[expiry]
policy = "rolling"
months = 12
month_end = true

[tiers]
metric = "points"
window = "rolling-12-months"

[[tiers.levels]]
key = "green"
min = 0

[[tiers.levels]]
key = "gold"
min = 6000
multiplier = 1.5

[[rewards]]
key = "free-drink"
name = "Free drink"
cost = 1500
"""

TABLES = {
    "txn": (
        "id, program_id, member_id, ref, kind, occurred_at, recorded_at, amount_minor, payload, "
        "points, balance_after, tier_after, original_id, reason, qual_points, qual_spend_minor, "
        "qual_visits, qual_at, program_version_id"
    ),
    "points_lot": (
        "id, member_id, txn_id, kind, earned_at, available_at, expires_on, points, remaining"
    ),
    "points_entry": (
        "id, member_id, txn_id, job_run_id, lot_id, kind, points, at, recorded_at, "
        "program_version_id"
    ),
}
MEMBER_UPDATE = "balance, debt, tier, tier_since, last_purchase_at, id"


@dataclass
class Figure:
    """One line of the results table."""

    what: str
    size: str
    seconds: float
    rate: str = ""
    floor: str = ""
    floor_seconds: float | None = None
    target: str = ""

    @property
    def ratio(self) -> str:
        if self.floor_seconds is None or self.floor_seconds <= 0:
            return ""
        return f"{self.seconds / self.floor_seconds:.2f}x"


# ---- data ------------------------------------------------------------------------------


def write_members(path: Path, count: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["member", "name", "email", "enrolled_at"])
        for i in range(1, count + 1):
            out.writerow([f"M{i:07d}", f"Member {i}", f"m{i}@example.com", "2024-12-01"])


def write_txns(path: Path, members: int, purchases: int, seed: int = 7) -> dict[str, int]:
    """A year of purchases in time order, with returns (2%) of recent purchases and
    redemptions of a free drink (1%) written as adjustments."""
    rnd = random.Random(seed)
    # A year that has passed: the tool refuses transactions dated in the future.
    start = datetime(2025, 1, 1, 7, 0)
    step = 365 * 24 * 3600 / max(purchases, 1)
    recent: list[tuple[str, str, str]] = []
    counts = {"purchase": 0, "return": 0, "adjust": 0}
    weights = [1.0 / (1 + (i % 50)) for i in range(members)]  # some regulars, some rare
    codes = [f"M{i:07d}" for i in range(1, members + 1)]
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(
            ["type", "member", "ref", "amount", "at", "category", "original", "points", "reason"]
        )
        picks = iter(rnd.choices(codes, weights, k=purchases))
        for i in range(purchases):
            at = (start + timedelta(seconds=i * step)).strftime("%Y-%m-%dT%H:%M:%S")
            member = next(picks)
            cents = rnd.randrange(150, 6000)
            amount = f"{cents // 100}.{cents % 100:02d}"
            category = rnd.choice(("", "", "", "beans", "merch", "pastry", "gift-cards"))
            ref = f"T{i:08d}"
            out.writerow(["", member, ref, amount, at, category, "", "", ""])
            counts["purchase"] += 1
            recent.append((member, ref, amount))
            if len(recent) > 2000:
                recent.pop(0)
            roll = rnd.random()
            if roll < 0.02 and recent:
                who, original, paid = recent.pop(rnd.randrange(len(recent)))
                part = paid if rnd.random() < 0.5 else f"{float(paid) / 2:.2f}"
                out.writerow(["return", who, f"R{i:08d}", part, at, "", original, "", ""])
                counts["return"] += 1
            elif roll < 0.03:
                out.writerow(
                    ["adjust", member, f"D{i:08d}", "", at, "", "", "-1500", "redeemed free-drink"]
                )
                counts["adjust"] += 1
    return counts


# ---- running the tool ------------------------------------------------------------------


def run_tool(*args: str, db: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    done = subprocess.run(
        [str(EXE), "--db", db, *args], capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"loyaltyctl {' '.join(args)} failed: {done.stderr.strip()}")
    try:
        return elapsed, json.loads(done.stdout)
    except ValueError:
        return elapsed, {}


def children_peak_mib() -> float:
    """The largest resident memory of any child process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def median_wall(cmd: Sequence[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def startup_figures(db: str, runs: int) -> list[Figure]:
    """`loyaltyctl --help`, one `txn post` (process start included) and the import of
    SQLModel alone, each the median of ``runs``."""
    help_s = median_wall([str(EXE), "--help"], runs)
    sqlmodel_s = median_wall([sys.executable, "-c", "import sqlmodel"], runs)
    posts = []
    for i in range(runs):
        posts.append(
            run_tool(
                "txn",
                "post",
                "M0000001",
                "--ref",
                f"bench-post-{time.time_ns()}-{i}",
                "--amount",
                "4.50",
                "--json",
                db=db,
            )[0]
        )
    post_s = statistics.median(posts)
    return [
        Figure("loyaltyctl --help", f"median of {runs}", help_s, target="< 0.150 s"),
        Figure("python -c 'import sqlmodel'", f"median of {runs}", sqlmodel_s),
        Figure(
            "txn post (process start included)",
            f"median of {runs}",
            post_s,
            floor="import sqlmodel",
            floor_seconds=sqlmodel_s,
            target="<= 1.3x",
        ),
    ]


# ---- SQLite ----------------------------------------------------------------------------


def _sqlite_connect(path: Path) -> sqlite3.Connection:
    """The pragmas loyaltyctl's engine sets, and the page cache its imports use."""
    from loyaltyctl.store.bulk import SQLITE_CACHE_KIB

    con = sqlite3.connect(path, isolation_level=None)
    for pragma in (
        "journal_mode = WAL",
        "synchronous = FULL",
        "foreign_keys = ON",
        f"cache_size = -{SQLITE_CACHE_KIB}",
    ):
        con.execute(f"PRAGMA {pragma}")
    return con


def _max_ids(path: Path) -> dict[str, int]:
    con = sqlite3.connect(path)
    try:
        return {
            t: con.execute(f"SELECT COALESCE(MAX(id), 0) FROM {t}").fetchone()[0] for t in TABLES
        }
    finally:
        con.close()


def _chunked(cursor: Any, size: int = 50_000) -> Iterator[list[Any]]:
    while rows := cursor.fetchmany(size):
        yield rows


def sqlite_floor(before: Path, after: Path, since: dict[str, int], work: Path) -> float:
    """Raw sqlite3 executemany of the rows the import stored, in one transaction, into a
    copy of the database as it was before: only the writes are timed."""
    floor = work / "floor.db"
    shutil.copy(before, floor)
    src = sqlite3.connect(after)
    dst = _sqlite_connect(floor)
    elapsed = 0.0
    started = time.perf_counter()
    dst.execute("BEGIN IMMEDIATE")
    elapsed += time.perf_counter() - started
    for table, columns in TABLES.items():
        marks = ", ".join("?" * len(columns.split(",")))
        cur = src.execute(
            f"SELECT {columns} FROM {table} WHERE id > ? ORDER BY id", (since[table],)
        )
        for rows in _chunked(cur):
            started = time.perf_counter()
            dst.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
            elapsed += time.perf_counter() - started
    members = src.execute(f"SELECT {MEMBER_UPDATE} FROM member").fetchall()
    started = time.perf_counter()
    dst.executemany(
        "UPDATE member SET balance = ?, debt = ?, tier = ?, tier_since = ?, "
        "last_purchase_at = ? WHERE id = ?",
        members,
    )
    dst.execute("COMMIT")
    elapsed += time.perf_counter() - started
    src.close()
    dst.close()
    return elapsed


def bench_sqlite(members: int, purchases: int, work: Path, runs: int) -> list[Figure]:
    db_path = work / "bench.db"
    db = str(db_path)
    program = work / "bench.toml"
    program.write_text(PROGRAM, encoding="utf-8")
    members_csv = work / "members.csv"
    txns_csv = work / "txns.csv"
    write_members(members_csv, members)
    counts = write_txns(txns_csv, members, purchases)
    rows = sum(counts.values())
    run_tool("program", "load", str(program), db=db)

    member_s, _ = run_tool("member", "import", str(members_csv), "--json", db=db)
    before = work / "before.db"
    shutil.copy(db_path, before)  # the tool exited: its WAL is checkpointed and gone
    since = _max_ids(before)

    import_s, summary = run_tool("txn", "import", str(txns_csv), "--json", db=db)
    if summary.get("rejected"):
        raise RuntimeError(f"the benchmark file had rejected rows: {summary}")
    peak = children_peak_mib()
    floor_s = sqlite_floor(before, db_path, since, work)
    stored = {t: n - since[t] for t, n in _max_ids(db_path).items()}
    figures = [
        Figure(
            "member import (SQLite)",
            f"{members:,} members",
            member_s,
            rate=f"{members / member_s:,.0f} members/s",
        ),
        Figure(
            "txn import (SQLite)",
            f"{counts['purchase']:,} purchases + {counts['return']:,} returns + "
            f"{counts['adjust']:,} redemptions",
            import_s,
            rate=f"{counts['purchase'] / import_s:,.0f} purchases/s "
            f"({rows / import_s:,.0f} rows/s; peak RSS {peak:,.0f} MiB)",
            floor=f"sqlite3 executemany of the same {sum(stored.values()):,} rows",
            floor_seconds=floor_s,
            target=">= 50,000 purchases/s, <= 4x",
        ),
    ]
    figures += startup_figures(db, runs)
    return figures


# ---- PostgreSQL ------------------------------------------------------------------------


def pg_floor(cluster: Any, source: str, floor: str, since: dict[str, int]) -> float:
    """psycopg COPY of the rows the import stored into a copy of the database as it was
    before; the member caches by executemany. Only the writes are timed."""
    import psycopg

    def connect(name: str) -> Any:
        return psycopg.connect(cluster.url(name).replace("postgresql+psycopg", "postgresql"))

    elapsed = 0.0
    with connect(source) as src, connect(floor) as dst:
        for table, columns in TABLES.items():
            with src.cursor(name=f"read_{table}") as cur:
                cur.execute(
                    f"SELECT {columns} FROM {table} WHERE id > %s ORDER BY id", (since[table],)
                )
                with dst.cursor() as out:
                    while rows := cur.fetchmany(50_000):
                        started = time.perf_counter()
                        with out.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                            for row in rows:
                                copy.write_row(row)
                        elapsed += time.perf_counter() - started
        members = src.execute(f"SELECT {MEMBER_UPDATE} FROM member").fetchall()
        started = time.perf_counter()
        with dst.cursor() as out:
            out.executemany(
                "UPDATE member SET balance = %s, debt = %s, tier = %s, tier_since = %s, "
                "last_purchase_at = %s WHERE id = %s",
                members,
            )
        dst.commit()
        elapsed += time.perf_counter() - started
    return elapsed


def bench_postgres(members: int, purchases: int, work: Path) -> list[Figure]:
    sys.path.insert(0, str(REPO))
    from sqlalchemy import create_engine, text

    from tests.pgcluster import start_cluster

    cluster = start_cluster()
    try:
        admin = create_engine(cluster.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE bench"))
        db = cluster.url("bench")
        program = work / "bench.toml"
        program.write_text(PROGRAM, encoding="utf-8")
        members_csv = work / "pg-members.csv"
        txns_csv = work / "pg-txns.csv"
        write_members(members_csv, members)
        counts = write_txns(txns_csv, members, purchases)
        rows = sum(counts.values())
        run_tool("program", "load", str(program), db=db)
        member_s, _ = run_tool("member", "import", str(members_csv), "--json", db=db)
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE bench_floor TEMPLATE bench"))
        engine = create_engine(db)
        with engine.connect() as conn:
            since = {
                t: int(conn.execute(text(f"SELECT COALESCE(MAX(id), 0) FROM {t}")).scalar_one())
                for t in TABLES
            }
        engine.dispose()
        import_s, summary = run_tool("txn", "import", str(txns_csv), "--json", db=db)
        if summary.get("rejected"):
            raise RuntimeError(f"the benchmark file had rejected rows: {summary}")
        floor_s = pg_floor(cluster, "bench", "bench_floor", since)
        admin.dispose()
        return [
            Figure(
                "member import (PostgreSQL)",
                f"{members:,} members",
                member_s,
                rate=f"{members / member_s:,.0f} members/s",
            ),
            Figure(
                "txn import (PostgreSQL)",
                f"{counts['purchase']:,} purchases + {counts['return']:,} returns + "
                f"{counts['adjust']:,} redemptions",
                import_s,
                rate=f"{counts['purchase'] / import_s:,.0f} purchases/s "
                f"({rows / import_s:,.0f} rows/s)",
                floor="psycopg COPY of the same rows",
                floor_seconds=floor_s,
                target="<= 4x",
            ),
        ]
    finally:
        cluster.stop()


# ---- entry -----------------------------------------------------------------------------


def run(
    *, members: int, purchases: int, pg_purchases: int, runs: int, keep: Path | None = None
) -> list[Figure]:
    work = Path(tempfile.mkdtemp(prefix="loyaltyctl-bench-", dir=keep))
    try:
        figures = bench_sqlite(members, purchases, work, runs)
        if pg_purchases:
            try:
                figures += bench_postgres(
                    max(1, members * pg_purchases // purchases), pg_purchases, work
                )
            except RuntimeError as exc:
                print(f"PostgreSQL skipped: {exc}", file=sys.stderr)
        return figures
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--purchases", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--pg-purchases", type=int, default=200_000, help="0: skip PostgreSQL")
    parser.add_argument("--runs", type=int, default=7, help="repeats of the start-up timings")
    args = parser.parse_args(argv)
    for figure in run(
        members=args.members,
        purchases=args.purchases,
        pg_purchases=args.pg_purchases,
        runs=args.runs,
    ):
        print(figure)


if __name__ == "__main__":
    os.environ.setdefault("NO_COLOR", "1")
    main()
