"""Benchmark (not a test): ``member import`` and ``txn import`` of a generated year of a
coffee shop's sales, ``db check`` of the result, and start-up costs, each next to a floor
measured in the same run.

    .venv/bin/python bench/bench_import.py [--purchases N] [--members N] [--pg-purchases N]

Two floors for the import, both timed on the writes only (reading the rows back from the
import's database is not timed):

- the storage floor: the least a ledger must store for the file's purchases (each one's
  transaction with its unique reference, its lot, its entry; values read back from what
  the import stored) into fresh minimal tables with nothing but a partial index on the
  open lots by expiry date, in one transaction: raw ``sqlite3`` executemany with
  loyaltyctl's pragmas, psycopg ``COPY`` on PostgreSQL;
- the same-rows floor: exactly the rows the import stored (transactions, lots, entries,
  tier changes, events, audit, member caches), into a copy of the database as it was
  before the import (so with loyaltyctl's schema and indexes); the gap between the two
  floors is what the schema costs.

The import is timed end to end as an operator runs it (the installed executable, process
start included), and once more with the start-up of an import (a header-only file)
taken off. Each run of the executable reports its own peak resident memory (``wait4``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
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

# Every row an import writes (the member caches are MEMBER_UPDATE, below).
TABLES = {
    "txn": (
        "id, program_id, member_id, ref, kind, occurred_at, recorded_at, amount_minor, payload, "
        "points, balance_after, tier_after, original_id, reason, qual_points, qual_spend_minor, "
        "qual_visits, qual_at, program_version_id, store"
    ),
    "points_lot": (
        "id, member_id, txn_id, kind, earned_at, available_at, expires_on, points, remaining"
    ),
    "points_entry": (
        "id, member_id, txn_id, job_run_id, lot_id, kind, points, at, recorded_at, "
        "program_version_id"
    ),
    "tier_change": "id, member_id, tier, effective_on, reason, recorded_at, txn_id, job_run_id",
    "event": "id, at, type, program_id, member, data, once",
    "audit": "id, at, actor, command, program_id, member_id, ref, summary",
}
MEMBER_UPDATE = "balance, debt, tier, tier_since, last_purchase_at, id"

# The storage floor: per purchase the least a ledger must store, in tables with nothing
# but the unique reference and the partial index expiry runs need.
STORAGE_COLUMNS = {
    "txn": "id, program_id, member_id, ref, kind, occurred_at, amount_minor, points",
    "lot": "id, member_id, txn_id, expires_on, points, remaining",
    "entry": "id, member_id, txn_id, lot_id, kind, points, at",
}
# What the import stored for its purchases (and nothing for its returns and redemptions),
# read back in the storage floor's columns; ``:since`` is the last txn id before it.
STORAGE_SOURCE = {
    "txn": f"SELECT {STORAGE_COLUMNS['txn']} FROM txn WHERE kind = 'purchase' AND id > :since "
    "ORDER BY id",
    "lot": "SELECT l.id, l.member_id, l.txn_id, l.expires_on, l.points, l.remaining "
    "FROM points_lot l JOIN txn t ON t.id = l.txn_id "
    "WHERE t.kind = 'purchase' AND t.id > :since ORDER BY l.id",
    "entry": "SELECT e.id, e.member_id, e.txn_id, e.lot_id, e.kind, e.points, e.at "
    "FROM points_entry e JOIN txn t ON t.id = e.txn_id "
    "WHERE t.kind = 'purchase' AND t.id > :since ORDER BY e.id",
}
STORAGE_DDL = {
    "sqlite": (
        "CREATE TABLE txn (id INTEGER PRIMARY KEY, program_id INTEGER NOT NULL, "
        "member_id INTEGER NOT NULL, ref TEXT NOT NULL, kind TEXT NOT NULL, "
        "occurred_at TEXT NOT NULL, amount_minor INTEGER, points INTEGER NOT NULL, "
        "UNIQUE (program_id, ref))",
        "CREATE TABLE lot (id INTEGER PRIMARY KEY, member_id INTEGER NOT NULL, "
        "txn_id INTEGER NOT NULL, expires_on TEXT, points INTEGER NOT NULL, "
        "remaining INTEGER NOT NULL)",
        "CREATE TABLE entry (id INTEGER PRIMARY KEY, member_id INTEGER NOT NULL, "
        "txn_id INTEGER, lot_id INTEGER, kind TEXT NOT NULL, points INTEGER NOT NULL, "
        "at TEXT NOT NULL)",
        "CREATE INDEX lot_open ON lot (expires_on) WHERE remaining > 0",
    ),
    "postgresql": (
        "CREATE TABLE txn (id integer PRIMARY KEY, program_id integer NOT NULL, "
        "member_id integer NOT NULL, ref varchar(200) NOT NULL, kind varchar(16) NOT NULL, "
        "occurred_at timestamptz NOT NULL, amount_minor bigint, points bigint NOT NULL, "
        "UNIQUE (program_id, ref))",
        "CREATE TABLE lot (id integer PRIMARY KEY, member_id integer NOT NULL, "
        "txn_id integer NOT NULL, expires_on date, points bigint NOT NULL, "
        "remaining bigint NOT NULL)",
        "CREATE TABLE entry (id integer PRIMARY KEY, member_id integer NOT NULL, "
        "txn_id integer, lot_id integer, kind varchar(16) NOT NULL, points bigint NOT NULL, "
        "at timestamptz NOT NULL)",
        "CREATE INDEX lot_open ON lot (expires_on) WHERE remaining > 0",
    ),
}


@dataclass
class Figure:
    """One line of the results table."""

    what: str
    size: str
    seconds: float | None
    rate: str = ""
    floor: str = ""
    floor_seconds: float | None = None
    target: str = ""
    # A ratio of something other than seconds (peak memory), written out.
    ratio_text: str = ""

    @property
    def ratio(self) -> str:
        if self.ratio_text:
            return self.ratio_text
        if self.seconds is None or self.floor_seconds is None or self.floor_seconds <= 0:
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


@dataclass
class Run:
    """One run of the executable: wall time, its JSON output, its own peak RSS."""

    seconds: float
    output: dict[str, Any]
    peak_mib: float


def run_measured(*args: str, db: str) -> Run:
    """Run ``loyaltyctl --db DB ARGS``; ``wait4`` gives this child's own peak resident
    memory (RUSAGE_CHILDREN would be the largest of every child so far)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen([str(EXE), "--db", db, *args], stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if child.returncode != 0:
        raise RuntimeError(f"loyaltyctl {' '.join(args)} failed: {stderr.strip()}")
    try:
        output = json.loads(stdout)
    except ValueError:
        output = {}
    return Run(elapsed, output, usage.ru_maxrss / 1024)  # Linux reports KiB


def run_tool(*args: str, db: str) -> tuple[float, dict[str, Any]]:
    done = run_measured(*args, db=db)
    return done.seconds, done.output


def import_startup(db: str, header_only: Path, runs: int) -> float:
    """What an import costs before its first row: the median of ``runs`` imports of a file
    with only the header, on the benchmark's database (process start, imports, engine,
    program, the empty transaction)."""
    return statistics.median(
        run_tool("txn", "import", str(header_only), "--json", db=db)[0] for _ in range(runs)
    )


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


def storage_floor_sqlite(after: Path, since: int, work: Path) -> tuple[float, dict[str, int]]:
    """The storage floor on SQLite: the purchases' minimal rows by executemany into fresh
    minimal tables, in one transaction; creating the tables and reading the rows back
    are not timed. Returns the seconds and the rows stored per table."""
    floor = work / "storage-floor.db"
    src = sqlite3.connect(after)
    dst = _sqlite_connect(floor)
    for ddl in STORAGE_DDL["sqlite"]:
        dst.execute(ddl)
    stored = dict.fromkeys(STORAGE_COLUMNS, 0)
    started = time.perf_counter()
    dst.execute("BEGIN IMMEDIATE")
    elapsed = time.perf_counter() - started
    for table, columns in STORAGE_COLUMNS.items():
        marks = ", ".join("?" * len(columns.split(",")))
        for rows in _chunked(src.execute(STORAGE_SOURCE[table], {"since": since})):
            started = time.perf_counter()
            dst.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
            elapsed += time.perf_counter() - started
            stored[table] += len(rows)
    started = time.perf_counter()
    dst.execute("COMMIT")
    elapsed += time.perf_counter() - started
    src.close()
    dst.close()
    return elapsed, stored


def import_figures(
    backend: str,
    counts: dict[str, int],
    done: Run,
    startup_s: float,
    storage: tuple[float, dict[str, int]],
    same_rows: tuple[float, int],
    engine: str,
) -> list[Figure]:
    """The import against the storage floor (raw, and with the start-up taken off) and
    against the same-rows floor (the schema's share of the gap)."""
    purchases = counts["purchase"]
    rows = sum(counts.values())
    size = (
        f"{purchases:,} purchases + {counts['return']:,} returns + {counts['adjust']:,} redemptions"
    )
    storage_s, stored = storage
    same_s, same_n = same_rows
    write = "executemany" if backend == "SQLite" else "COPY"
    storage_floor = (
        f"storage floor: {engine} {write} of the purchases' {sum(stored.values()):,} rows "
        f"({stored['txn']:,} txn, {stored['lot']:,} lot, {stored['entry']:,} entry) into "
        f"minimal tables, {purchases / storage_s:,.0f} purchases/s"
    )
    target = ">= 50,000 purchases/s, <= 3x" if backend == "SQLite" else "<= 3x"
    net_s = done.seconds - startup_s
    figures = [
        Figure(
            f"txn import ({backend}), raw: process start included",
            size,
            done.seconds,
            rate=f"{purchases / done.seconds:,.0f} purchases/s ({rows / done.seconds:,.0f} "
            f"rows/s; peak RSS {done.peak_mib:,.0f} MiB)",
            floor=storage_floor,
            floor_seconds=storage_s,
            target=target,
        ),
        Figure(
            f"txn import ({backend}), start-up taken off ({startup_s:.3f} s)",
            size,
            net_s,
            rate=f"{purchases / net_s:,.0f} purchases/s",
            floor="the storage floor",
            floor_seconds=storage_s,
            target=target,
        ),
        Figure(
            f"txn import ({backend}) against the same rows, raw",
            size,
            done.seconds,
            floor=f"same-rows floor: {engine} {write} of the same {same_n:,} rows into "
            f"loyaltyctl's schema ({same_s / storage_s:.2f}x the storage floor: the schema's "
            "share)",
            floor_seconds=same_s,
            target="recorded",
        ),
    ]
    return figures


def bench_sqlite(members: int, purchases: int, work: Path, runs: int) -> list[Figure]:
    db_path = work / "bench.db"
    db = str(db_path)
    program = work / "bench.toml"
    program.write_text(PROGRAM, encoding="utf-8")
    members_csv = work / "members.csv"
    txns_csv = work / "txns.csv"
    write_members(members_csv, members)
    counts = write_txns(txns_csv, members, purchases)
    header_only = work / "header.csv"
    header_only.write_text(txns_csv.open(encoding="utf-8").readline(), encoding="utf-8")
    run_tool("program", "load", str(program), db=db)

    member_s, _ = run_tool("member", "import", str(members_csv), "--json", db=db)
    before = work / "before.db"
    shutil.copy(db_path, before)  # the tool exited: its WAL is checkpointed and gone
    since = _max_ids(before)

    done = run_measured("txn", "import", str(txns_csv), "--json", db=db)
    if done.output.get("rejected"):
        raise RuntimeError(f"the benchmark file had rejected rows: {done.output}")
    check = run_measured("db", "check", "--json", db=db)
    if not check.output.get("ok"):
        raise RuntimeError(f"db check found problems after the import: {check.output}")
    startup_s = import_startup(db, header_only, runs)
    same_s = sqlite_floor(before, db_path, since, work)
    stored = {t: n - since[t] for t, n in _max_ids(db_path).items()}
    storage = storage_floor_sqlite(db_path, since["txn"], work)
    (work / "floor.db").unlink(missing_ok=True)
    (work / "storage-floor.db").unlink(missing_ok=True)

    # The same generator at a fifth of the size, for the same members, in a fresh
    # database: an import whose memory is bounded peaks the same at both sizes.
    small_path = work / "small.db"
    small_db = str(small_path)
    small_csv = work / "small-txns.csv"
    small_counts = write_txns(small_csv, members, max(1, purchases // 5))
    run_tool("program", "load", str(program), db=small_db)
    run_tool("member", "import", str(members_csv), "--json", db=small_db)
    small = run_measured("txn", "import", str(small_csv), "--json", db=small_db)
    small_path.unlink()

    figures = [
        Figure(
            "member import (SQLite)",
            f"{members:,} members",
            member_s,
            rate=f"{members / member_s:,.0f} members/s",
        ),
        *import_figures(
            "SQLite",
            counts,
            done,
            startup_s,
            storage,
            (same_s, sum(stored.values())),
            "sqlite3",
        ),
        Figure(
            "txn import start-up (header-only file)",
            f"median of {runs}",
            startup_s,
            target="taken off above",
        ),
        Figure(
            "txn import (SQLite) peak RSS",
            f"{counts['purchase']:,} vs {small_counts['purchase']:,} purchases",
            None,
            rate=f"{done.peak_mib:,.0f} MiB vs {small.peak_mib:,.0f} MiB (the smaller import: "
            f"{small.seconds:.1f} s, {small_counts['purchase'] / small.seconds:,.0f} "
            "purchases/s)",
            floor=f"the import of {small_counts['purchase']:,} purchases, fresh database",
            ratio_text=f"{done.peak_mib / small.peak_mib:.2f}x (memory)",
            target="within 10% (<= 1.10x)",
        ),
        Figure(
            "db check (SQLite)",
            f"the database of the {counts['purchase']:,}-purchase import",
            check.seconds,
            rate=f"peak RSS {check.peak_mib:,.0f} MiB",
            target="recorded",
        ),
    ]
    figures += startup_figures(db, runs)
    return figures


# ---- PostgreSQL ------------------------------------------------------------------------


def _pg_connect(cluster: Any, name: str) -> Any:
    import psycopg

    return psycopg.connect(cluster.dsn(name))


def pg_floor(cluster: Any, source: str, floor: str, since: dict[str, int]) -> tuple[float, int]:
    """The same-rows floor on PostgreSQL: psycopg COPY of the rows the import stored into
    a copy of the database as it was before; the member caches by executemany. Only the
    writes are timed. Returns the seconds and the rows copied."""
    elapsed = 0.0
    copied = 0
    with _pg_connect(cluster, source) as src, _pg_connect(cluster, floor) as dst:
        for table, columns in TABLES.items():
            with src.cursor(name=f"read_{table}") as cur:
                cur.execute(
                    f"SELECT {columns} FROM {table} WHERE id > %s ORDER BY id", (since[table],)
                )
                seconds, count = _copy_timed(cur, dst, table, columns)
                elapsed += seconds
                copied += count
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
    return elapsed, copied


def _copy_timed(cur: Any, dst: Any, table: str, columns: str) -> tuple[float, int]:
    """COPY what ``cur`` reads into ``table`` of ``dst``, in chunks; only the COPY is
    timed. Returns the seconds and the rows copied."""
    elapsed = 0.0
    copied = 0
    with dst.cursor() as out:
        while rows := cur.fetchmany(50_000):
            started = time.perf_counter()
            with out.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            elapsed += time.perf_counter() - started
            copied += len(rows)
    return elapsed, copied


def pg_storage_floor(
    cluster: Any, source: str, floor: str, since: int
) -> tuple[float, dict[str, int]]:
    """The storage floor on PostgreSQL: psycopg COPY of the purchases' minimal rows into
    fresh minimal tables of an empty database, in one transaction. Creating the tables
    and reading the rows back are not timed."""
    elapsed = 0.0
    stored = dict.fromkeys(STORAGE_COLUMNS, 0)
    with _pg_connect(cluster, source) as src, _pg_connect(cluster, floor) as dst:
        for ddl in STORAGE_DDL["postgresql"]:
            dst.execute(ddl)
        dst.commit()
        for table, columns in STORAGE_COLUMNS.items():
            with src.cursor(name=f"read_{table}") as cur:
                cur.execute(STORAGE_SOURCE[table].replace(":since", "%(since)s"), {"since": since})
                seconds, stored[table] = _copy_timed(cur, dst, table, columns)
                elapsed += seconds
        started = time.perf_counter()
        dst.commit()
        elapsed += time.perf_counter() - started
    return elapsed, stored


def bench_postgres(members: int, purchases: int, work: Path, runs: int) -> list[Figure]:
    sys.path.insert(0, str(REPO))
    from sqlalchemy import create_engine, text

    from tests.pgcluster import start_cluster

    cluster = start_cluster()
    try:
        admin = create_engine(cluster.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE bench"))
            conn.execute(text("CREATE DATABASE bench_storage"))
        db = cluster.url("bench")
        program = work / "bench.toml"
        program.write_text(PROGRAM, encoding="utf-8")
        members_csv = work / "pg-members.csv"
        txns_csv = work / "pg-txns.csv"
        write_members(members_csv, members)
        counts = write_txns(txns_csv, members, purchases)
        header_only = work / "pg-header.csv"
        header_only.write_text(txns_csv.open(encoding="utf-8").readline(), encoding="utf-8")
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
        done = run_measured("txn", "import", str(txns_csv), "--json", db=db)
        if done.output.get("rejected"):
            raise RuntimeError(f"the benchmark file had rejected rows: {done.output}")
        startup_s = import_startup(db, header_only, runs)
        same_rows = pg_floor(cluster, "bench", "bench_floor", since)
        storage = pg_storage_floor(cluster, "bench", "bench_storage", since["txn"])
        admin.dispose()
        return [
            Figure(
                "member import (PostgreSQL)",
                f"{members:,} members",
                member_s,
                rate=f"{members / member_s:,.0f} members/s",
            ),
            *import_figures("PostgreSQL", counts, done, startup_s, storage, same_rows, "psycopg"),
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
                    max(1, members * pg_purchases // purchases), pg_purchases, work, runs
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
