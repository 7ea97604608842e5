"""One engine: a random history gives the same ledger whichever way it goes in.

Each history (enrolments with and without opening balances, one- and several-line
purchases, partial, full and over-returns, adjustments both ways, identical retries,
redemptions, voucher cancellations, expiry runs and a second program version loaded
part-way) is applied to three fresh databases:

(a) one service call or command at a time;
(b) the importable operations of each stretch between two commands as one
    ``member import`` file and one ``txn import`` file, all or nothing;
(c) the same stretches imported in random batch sizes, some all or nothing (one
    transaction over several batches), some batch by batch with ``--rejects``.

What cannot be imported (several-line purchases, redemptions, cancellations, expiry runs,
program loads) runs as the same command at the same point in all three. The ledgers are
then compared by stable keys (references, member codes, version numbers), never by
database ids, and ``db check`` must pass on each.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import typer.main
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, inspect, text

from loyaltyctl.cli.main import app
from loyaltyctl.errors import LoyaltyError
from loyaltyctl.rules.earning import Line
from loyaltyctl.rules.money import parse_amount
from loyaltyctl.rules.timeutil import parse_when
from loyaltyctl.services.check import check_database
from loyaltyctl.services.context import load_context
from loyaltyctl.services.jobs import run_expire
from loyaltyctl.services.members import enroll
from loyaltyctl.services.programs import load_program
from loyaltyctl.services.redemptions import cancel_voucher, redeem
from loyaltyctl.services.txns import post_adjustment, post_purchase, post_return
from loyaltyctl.store.db import make_engine, session_scope

KEY = "eq"
TZ = ZoneInfo("Europe/Berlin")
# Every time of a history is before NOW (and before the real clock, which the import
# commands use for recorded_at only: every row states its time).
START = datetime(2024, 1, 8, 10, 0)
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
MEMBERS = ("M1", "M2", "M3", "M4")
BATCH_ROWS_ENV = "LOYALTYCTL_IMPORT_BATCH_ROWS"
TXN_COLUMNS = ["type", "member", "ref", "amount", "at", "category", "original", "points", "reason"]
MEMBER_COLUMNS = ["member", "enrolled_at", "opening_balance", "opening_expires"]
IMPORTABLE = frozenset(("enroll", "purchase", "return", "adjust"))
LABELS = {3: "not found:", 4: "invalid:", 5: "conflict:", 6: "not allowed:"}

PROGRAM = """
[program]
key = "{key}"
name = "Equivalence"
currency = "EUR"
timezone = "Europe/Berlin"

[earn]
per_unit = "{per_unit}"
rounding = "{rounding}"
exclude = ["gift"]
signup_bonus = {signup}
pending_days = {pending}
allow_negative = {allow_negative}
bonus_qualifies = {bonus_qualifies}

[earn.categories]
beans = "{beans}"

[[earn.promotions]]
name = "Spring"
from = 2024-04-01
to = 2024-04-30
multiplier = "{promo}"

[expiry]
policy = "rolling"
months = {months}
month_end = {month_end}

[tiers]
metric = "points"
window = "rolling-12-months"

[[tiers.levels]]
key = "basic"
min = 0

[[tiers.levels]]
key = "silver"
min = 400
multiplier = "{silver}"

[[tiers.levels]]
key = "gold"
min = 1500
multiplier = "{gold}"

[[rewards]]
key = "coffee"
name = "Coffee"
cost = 60
valid_days = 30

[[rewards]]
key = "bag"
name = "Bag"
cost = 350
valid_days = 90
per_member = 1
"""

program_params = st.fixed_dictionaries(
    {
        "per_unit": st.sampled_from(["1", "2", "0.5", "1.5"]),
        "rounding": st.sampled_from(["floor", "half-up", "ceil"]),
        "signup": st.sampled_from([0, 50, 100]),
        "pending": st.sampled_from([0, 0, 3]),
        "allow_negative": st.sampled_from(["true", "false"]),
        "bonus_qualifies": st.sampled_from(["true", "false"]),
        "beans": st.sampled_from(["2", "1.5", "3"]),
        "promo": st.sampled_from(["2", "1.5"]),
        "months": st.sampled_from([2, 3, 6]),
        "month_end": st.sampled_from(["true", "false"]),
        "silver": st.sampled_from(["1.25", "1.5"]),
        "gold": st.sampled_from(["2", "1.75"]),
    }
)


# ---- histories ----------------------------------------------------------------------


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _cents(text_: str) -> int:
    return int(Decimal(text_) * 100)


@st.composite
def histories(draw: st.DrawFn) -> dict[str, Any]:
    """A program (and a second version of it) and up to 30 operations on up to 4 members,
    in time order; a small model of the ledger keeps most operations sensible."""
    v1 = draw(program_params)
    v2 = draw(program_params)
    ops: list[dict[str, Any]] = []
    moment = START
    enrolled: list[str] = []
    purchases: list[list[Any]] = []  # [ref, member, cents left]
    redemptions: list[str] = []
    done: list[dict[str, Any]] = []  # importable operations, to retry
    v2_loaded = False
    expiry_days: list[str] = []
    size = draw(st.integers(min_value=12, max_value=30))
    for i in range(size):
        # Days from a list (integers would mostly be small): histories span months, so
        # lots expire and tier windows roll.
        days = draw(st.sampled_from([0, 0, 1, 3, 8, 15, 30, 45]))
        moment += timedelta(days=days, minutes=draw(st.integers(min_value=7, max_value=600)))
        if moment.hour < 4:  # stay clear of the night's clock changes
            moment += timedelta(hours=5)
        at = moment.isoformat(timespec="minutes")
        choices = ["enroll"] if len(enrolled) < len(MEMBERS) else []
        if enrolled:
            choices += ["purchase"] * 5 + ["multi", "adjust", "adjust"] + ["redeem", "expire"] * 2
            choices += ["return", "return"] if purchases else []
            choices += ["retry"] if done else []
            choices += ["cancel", "cancel"] if redemptions else []
            choices += [] if v2_loaded else ["load_v2"]
        kind = draw(st.sampled_from(choices))
        op: dict[str, Any] = {"op": kind, "at": at}
        if kind == "enroll":
            op["member"] = MEMBERS[len(enrolled)]
            enrolled.append(op["member"])
            opening = draw(st.sampled_from([None, None, 0, 120, 800]))
            if opening is not None:
                op["opening"] = opening
                if opening and draw(st.booleans()):
                    expires = moment.date() + timedelta(days=draw(st.integers(20, 400)))
                    op["opening_expires"] = expires.isoformat()
        elif kind in ("purchase", "multi"):
            count = 1 if kind == "purchase" else draw(st.integers(min_value=2, max_value=3))
            lines = [
                (
                    draw(st.sampled_from(["", "", "beans", "gift"])),
                    _money(draw(st.integers(min_value=1, max_value=30000))),
                )
                for _ in range(count)
            ]
            op.update(op="purchase", member=draw(st.sampled_from(enrolled)), lines=lines)
            op["ref"] = f"P{i}"
            purchases.append([op["ref"], op["member"], sum(_cents(a) for _, a in lines)])
        elif kind == "return":
            original = draw(st.sampled_from(purchases))
            how = draw(st.sampled_from(["full", "part", "part", "over"]))
            left = original[2]
            if how == "full" and left > 0:
                cents = left
            elif how == "part" and left > 1:
                cents = max(1, left * draw(st.integers(min_value=1, max_value=3)) // 4)
            else:
                cents = left + 1  # more than is left: refused
            original[2] = max(0, left - cents)
            op.update(member=original[1], ref=f"R{i}", original=original[0], amount=_money(cents))
        elif kind == "adjust":
            points = draw(st.sampled_from([25, 300, 1000, -40, -250, -2000]))
            op.update(member=draw(st.sampled_from(enrolled)), ref=f"A{i}", points=points)
            op["reason"] = draw(st.sampled_from(["goodwill", "correction, manual"]))
        elif kind == "retry":
            op = dict(draw(st.sampled_from(done)))
        elif kind == "redeem":
            op.update(member=draw(st.sampled_from(enrolled)), ref=f"V{i}")
            op["reward"] = draw(st.sampled_from(["coffee", "coffee", "coffee", "bag", "ghost"]))
            redemptions.append(op["ref"])
        elif kind == "cancel":
            op["redemption"] = draw(st.sampled_from(redemptions))
        elif kind == "expire":
            day = moment.date().isoformat()
            if expiry_days and draw(st.booleans()):
                day = draw(st.sampled_from(expiry_days))  # a repeated run: a no-op
            expiry_days.append(day)
            op["as_of"] = day
        elif kind == "load_v2":
            v2_loaded = True
        if op["op"] in IMPORTABLE and kind != "retry":
            done.append(op)
        ops.append(op)
    return {"v1": v1, "v2": v2, "ops": ops}


def importable(op: dict[str, Any]) -> bool:
    return op["op"] in IMPORTABLE and len(op.get("lines", [None])) == 1


# ---- databases ----------------------------------------------------------------------

_names = itertools.count()


@contextlib.contextmanager
def fresh_databases(
    backend: str, request: pytest.FixtureRequest, folder: Path, count: int
) -> Iterator[list[str]]:
    """``count`` fresh migrated databases of the backend, dropped afterwards (hypothesis
    runs many examples in one test call, so the function-scoped fixtures cannot serve)."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        urls = []
        for i in range(count):
            path = folder / f"db{i}.db"
            shutil.copy(template, path)
            urls.append(f"sqlite:///{path}")
        yield urls
        return
    cluster = request.getfixturevalue("pg_cluster")
    names = [f"eq_{os.getpid()}_{next(_names)}" for _ in range(count)]
    admin = create_engine(cluster.url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f"CREATE DATABASE {name} TEMPLATE loyaltyctl_template"))
        yield [cluster.url(name) for name in names]
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@contextlib.contextmanager
def tiny_caches() -> Iterator[None]:
    from unittest import mock

    from loyaltyctl.services.imports import batch

    with (
        mock.patch.object(batch, "MEMBER_CACHE_LIMIT", 2),
        mock.patch.object(batch, "LOT_CACHE_LIMIT", 3),
        mock.patch.object(batch, "TRACKER_LIMIT", 4),
    ):
        yield


@functools.cache
def _command() -> Any:
    return typer.main.get_command(app)


def run_cli(db: str, *args: str, batch_rows: int | None = None) -> tuple[int, str, str]:
    """``loyaltyctl --db DB ARGS`` in-process: exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    saved = os.environ.get(BATCH_ROWS_ENV)
    if batch_rows is not None:
        os.environ[BATCH_ROWS_ENV] = str(batch_rows)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = _command().main(
                    ["--db", db, *args], prog_name="loyaltyctl", standalone_mode=False
                )
            except Exception as exc:  # usage errors are raised when not standalone
                code = getattr(exc, "exit_code", 1)
    finally:
        if saved is None:
            os.environ.pop(BATCH_ROWS_ENV, None)
        else:
            os.environ[BATCH_ROWS_ENV] = saved
    return (code if isinstance(code, int) else 0), out.getvalue(), err.getvalue()


# ---- applying a history ---------------------------------------------------------------


def _when(at: str) -> datetime:
    return parse_when(at, TZ)


def txn_row(op: dict[str, Any]) -> dict[str, str]:
    row = {"member": op["member"], "ref": op["ref"], "at": op["at"]}
    if op["op"] == "purchase":
        category, amount = op["lines"][0]
        row.update(type="purchase", amount=amount, category=category)
    elif op["op"] == "return":
        row.update(type="return", amount=op["amount"], original=op["original"])
    else:
        row.update(type="adjust", points=str(op["points"]), reason=op["reason"])
    return row


def member_row(op: dict[str, Any]) -> dict[str, str]:
    row = {"member": op["member"], "enrolled_at": op["at"]}
    if "opening" in op:
        row["opening_balance"] = str(op["opening"])
    if "opening_expires" in op:
        row["opening_expires"] = op["opening_expires"]
    return row


def write_file(path: Path, columns: list[str], rows: list[dict[str, str]]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


@dataclass
class Db:
    """One database and the way a history goes into it."""

    url: str
    folder: Path
    engine: Engine = field(init=False)
    files: Iterator[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.engine = make_engine(self.url)

    def load(self, spec: dict[str, Any], at: datetime) -> Any:
        path = self.folder / f"program-{next(self.files)}.toml"
        path.write_text(PROGRAM.format(key=KEY, **spec), encoding="utf-8")
        with session_scope(self.engine) as session:
            return load_program(session, path, now=at).version

    def service(self, op: dict[str, Any]) -> Any:
        """One operation as one service call in one transaction; its outcome."""
        try:
            with session_scope(self.engine) as session:
                return self._call(session, op)
        except LoyaltyError as exc:
            return ("error", exc.exit_code)

    def _call(self, session: Any, op: dict[str, Any]) -> Any:
        ctx = load_context(session, KEY)
        kind = op["op"]
        at = _when(op["at"])
        if kind == "enroll":
            r = enroll(session, ctx, op["member"], at=at, now=NOW)
            return ("ok", r.duplicate, r.balance, r.tier)
        if kind == "purchase":
            lines = [Line(c or None, parse_amount(a, 2)) for c, a in op["lines"]]
            r = post_purchase(
                session, ctx, op["member"], ref=op["ref"], lines=lines, at=at, now=NOW
            )
        elif kind == "return":
            r = post_return(
                session,
                ctx,
                op["member"],
                ref=op["ref"],
                original_ref=op["original"],
                amount=parse_amount(op["amount"], 2),
                at=at,
                now=NOW,
            )
        elif kind == "adjust":
            r = post_adjustment(
                session,
                ctx,
                op["member"],
                ref=op["ref"],
                points=op["points"],
                reason=op["reason"],
                at=at,
                now=NOW,
            )
        elif kind == "redeem":
            v = redeem(session, ctx, op["member"], op["reward"], ref=op["ref"], at=at, now=NOW)
            return ("ok", v.duplicate, v.points, v.balance)
        elif kind == "cancel":
            code = session.execute(
                text("SELECT v.code FROM voucher v JOIN txn t ON t.id = v.txn_id WHERE t.ref = :r"),
                {"r": op["redemption"]},
            ).scalar()
            if code is None:
                return ("no voucher",)
            c = cancel_voucher(session, ctx, code, at=at, now=NOW)
            return ("ok", c.duplicate, c.points, c.balance, c.debt_settled)
        elif kind == "expire":
            e = run_expire(session, ctx, as_of=date.fromisoformat(op["as_of"]), now=NOW)
            return ("ok", e.already_done, e.members, e.points_expired, e.lots)
        else:
            raise AssertionError(kind)
        return ("ok", r.duplicate, r.points, r.balance, r.tier)

    def command(self, op: dict[str, Any], spec: dict[str, Any]) -> Any:
        if op["op"] == "load_v2":
            return ("ok", self.load(spec, _when(op["at"])))
        return self.service(op)

    def one_by_one(self, op: dict[str, Any]) -> Any:
        """(a): an importable operation on its own. An opening balance can only come in
        through ``member import``: a file of that one row."""
        if op["op"] == "enroll" and "opening" in op:
            summary = self.import_file("member", [member_row(op)], batch_rows=None, rejects=True)
            if summary["rejected"]:
                return ("error", summary["reasons"][0])
            return ("ok", bool(summary["duplicates"]))
        outcome = self.service(op)
        if outcome[0] == "error":
            return ("error", LABELS[outcome[1]])
        return ("ok", outcome[1])

    def import_file(
        self,
        kind: str,
        rows: list[dict[str, str]],
        *,
        batch_rows: int | None,
        rejects: bool = False,
        suffix: str = ".csv",
    ) -> dict[str, Any]:
        n = next(self.files)
        path = self.folder / f"{kind}-{n}{suffix}"
        write_file(path, TXN_COLUMNS if kind == "txn" else MEMBER_COLUMNS, rows)
        args = [kind, "import", str(path), "--json"]
        bad = self.folder / f"{kind}-{n}-bad{suffix}"
        if rejects:
            args += ["--rejects", str(bad)]
        code, out, err = run_cli(self.url, *args, batch_rows=batch_rows)
        assert code == 0, f"{kind} import exit {code}: {err}\n{rows}"
        summary = json.loads(out)
        summary["reasons"] = []
        summary["lines"] = []
        if rejects and bad.exists():
            if suffix == ".csv":
                with bad.open(newline="", encoding="utf-8") as fh:
                    found = [(int(r["line"]), r["reason"]) for r in csv.DictReader(fh)]
            else:
                found = [
                    (int(obj["line"]), obj["reason"])
                    for obj in map(json.loads, bad.read_text(encoding="utf-8").splitlines())
                ]
            summary["lines"] = [line for line, _ in found]
            summary["reasons"] = [reason.split(":")[0] + ":" for _, reason in found]
        return summary

    def close(self) -> None:
        self.engine.dispose()


@dataclass
class Plan:
    """How the stretches of way (c) are imported, drawn by hypothesis."""

    batch_rows: list[int]
    rejects: list[bool]
    suffixes: list[str]
    n: int = 0

    def next(self) -> tuple[int, bool, str]:
        i = self.n
        self.n += 1
        pick = i % len(self.batch_rows)
        return self.batch_rows[pick], self.rejects[pick], self.suffixes[pick]


def apply_imported(
    db: Db,
    history: dict[str, Any],
    expected: dict[int, Any],
    plan: Plan | None,
) -> list[Any]:
    """(b) with ``plan`` None, else (c): stretches of importable operations as import
    files, commands between them. Returns the commands' outcomes."""
    outcomes: list[Any] = []
    stretch: list[tuple[int, dict[str, Any]]] = []

    def flush() -> None:
        for kind in ("member", "txn"):
            items = [(i, op) for i, op in stretch if (op["op"] == "enroll") == (kind == "member")]
            if not items:
                continue
            to_row = member_row if kind == "member" else txn_row
            batch_rows, rejects, suffix = plan.next() if plan else (None, False, ".csv")
            if not rejects:  # all or nothing: only the rows the commands took
                items = [(i, op) for i, op in items if expected[i][0] == "ok"]
                if not items:
                    continue
            summary = db.import_file(
                kind,
                [to_row(op) for _, op in items],
                batch_rows=batch_rows,
                rejects=rejects,
                suffix=suffix,
            )
            # Line numbers: CSV has its header on line 1, JSON Lines starts at 1.
            first = 2 if suffix == ".csv" else 1
            rejected = {
                items[line - first][0]: r
                for line, r in zip(summary["lines"], summary["reasons"], strict=True)
            }
            want_rejected = {i: expected[i][1] for i, _ in items if expected[i][0] == "error"}
            assert rejected == want_rejected, (kind, items)
            oks = [expected[i] for i, _ in items if expected[i][0] == "ok"]
            assert summary["duplicates"] == sum(1 for o in oks if o[1]), (kind, items)
            assert summary["applied"] == sum(1 for o in oks if not o[1]), (kind, items)
        stretch.clear()

    for i, op in enumerate(history["ops"]):
        if importable(op):
            stretch.append((i, op))
            continue
        flush()
        outcomes.append(db.command(op, history["v2"]))
    flush()
    return outcomes


# ---- comparing ledgers ----------------------------------------------------------------


def _rows(conn: Any, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in conn.execute(text(sql))]


def _sorted(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return sorted(rows, key=lambda r: [(v is None, str(v)) for v in r])


def dump(engine: Engine) -> dict[str, Any]:
    """The ledger by stable keys: references, member codes, version numbers, a lot as
    (its transaction's reference, its place among that transaction's lots). Voucher codes
    are random, so they are replaced by the reference of the redemption that issued them."""
    with engine.connect() as conn:
        codes = dict(
            _rows(conn, "SELECT v.code, t.ref FROM voucher v JOIN txn t ON t.id = v.txn_id")
        )

        def plain(value: Any) -> Any:
            if isinstance(value, str):
                for code, ref in codes.items():
                    value = value.replace(code, f"<{ref}>")
            return value

        lots = _rows(
            conn, "SELECT l.id, t.ref FROM points_lot l JOIN txn t ON t.id = l.txn_id ORDER BY l.id"
        )
        lot_key: dict[int, tuple[str, int]] = {}
        seen: dict[str, int] = {}
        for lot_id, ref in lots:
            seen[ref] = seen.get(ref, -1) + 1
            lot_key[lot_id] = (plain(ref), seen[ref])
        out: dict[str, Any] = {}
        out["txn"] = _sorted(
            [
                tuple(plain(v) for v in row)
                for row in _rows(
                    conn,
                    """SELECT t.ref, t.kind, m.code, t.occurred_at, t.amount_minor, t.payload,
                       t.points, t.balance_after, t.tier_after, o.ref, t.reason, t.qual_points,
                       t.qual_spend_minor, t.qual_visits, t.qual_at, pv.version
                       FROM txn t JOIN member m ON m.id = t.member_id
                       JOIN program_version pv ON pv.id = t.program_version_id
                       LEFT JOIN txn o ON o.id = t.original_id""",
                )
            ]
        )
        out["entry"] = _sorted(
            [
                (
                    code,
                    plain(ref),
                    job,
                    str(as_of) if as_of is not None else None,
                    kind,
                    points,
                    at,
                    lot_key.get(lot_id) if lot_id is not None else None,
                    version,
                )
                for code, ref, job, as_of, kind, points, at, lot_id, version in _rows(
                    conn,
                    """SELECT m.code, t.ref, j.job, j.as_of, e.kind, e.points, e.at, e.lot_id,
                       pv.version
                       FROM points_entry e JOIN member m ON m.id = e.member_id
                       JOIN program_version pv ON pv.id = e.program_version_id
                       LEFT JOIN txn t ON t.id = e.txn_id
                       LEFT JOIN job_run j ON j.id = e.job_run_id""",
                )
            ]
        )
        out["lot"] = _sorted(
            [
                (lot_key[lot_id], *rest)
                for lot_id, *rest in _rows(
                    conn,
                    """SELECT l.id, m.code, l.kind, l.earned_at, l.available_at, l.expires_on,
                       l.points, l.remaining
                       FROM points_lot l JOIN member m ON m.id = l.member_id""",
                )
            ]
        )
        out["member"] = _rows(
            conn,
            """SELECT code, status, tier, tier_since, balance, debt, last_purchase_at,
               enrolled_at FROM member ORDER BY code""",
        )
        out["voucher"] = _sorted(
            [
                tuple(plain(v) for v in row)
                for row in _rows(
                    conn,
                    """SELECT t.ref, m.code, v.reward_key, v.points, v.status, v.issued_at,
                       v.expires_at, v.used_at, v.cancelled_at, c.ref
                       FROM voucher v JOIN txn t ON t.id = v.txn_id
                       JOIN member m ON m.id = v.member_id
                       LEFT JOIN txn c ON c.id = v.cancel_txn_id""",
                )
            ]
        )
        out["job_run"] = _rows(
            conn,
            "SELECT job, as_of, status, members, points, upgraded, downgraded FROM job_run "
            "ORDER BY job, as_of",
        )
        out["program_version"] = _rows(
            conn, "SELECT version, fingerprint, loaded_at FROM program_version ORDER BY version"
        )
        if inspect(conn).has_table("tier_change"):
            out["tier_change"] = _tier_changes(conn, plain)
    return out


def _tier_changes(conn: Any, plain: Any) -> list[tuple[Any, ...]]:
    """The tier_change table, whatever its columns: ids of other tables become their
    stable keys, its own id and recording times are left out."""
    columns = [c["name"] for c in inspect(conn).get_columns("tier_change")]
    members = dict(_rows(conn, "SELECT id, code FROM member"))
    txns = dict(_rows(conn, "SELECT id, ref FROM txn"))
    runs = {
        i: (job, str(as_of)) for i, job, as_of in _rows(conn, "SELECT id, job, as_of FROM job_run")
    }
    versions = dict(_rows(conn, "SELECT id, version FROM program_version"))
    maps = {
        "member_id": members,
        "txn_id": txns,
        "job_run_id": runs,
        "program_version_id": versions,
    }
    kept = [c for c in columns if c not in ("id", "recorded_at", "created_at", "updated_at")]
    rows = _rows(conn, "SELECT " + ", ".join(kept) + " FROM tier_change")
    out = []
    for row in rows:
        values = []
        for name, value in zip(kept, row, strict=True):
            if name in maps:
                value = maps[name].get(value, value)
            elif name.endswith("_id"):
                value = "<id>" if value is not None else None
            values.append(plain(value))
        out.append(tuple(values))
    return _sorted(out)


def _events(
    history: dict[str, Any], expected: dict[int, Any], commands: list[Any], ledger: dict[str, Any]
) -> None:
    """What the history exercised (``--hypothesis-show-statistics``)."""
    kinds = [op["op"] for op in history["ops"] if not importable(op)]
    for kind, outcome in zip(kinds, commands, strict=True):
        event(f"{kind}: {outcome[:2] if outcome[0] == 'error' else outcome[0]}")
        if kind == "expire" and outcome[0] == "ok" and outcome[3]:
            event("expire: points expired")
    for outcome in expected.values():
        event(f"importable: {outcome[0]} {outcome[1]}")
    if any(row[5] for row in ledger["member"]):
        event("a member in debt")
    if any(row[2] != "basic" for row in ledger["member"]):
        event("a member above the first tier")
    if any(row[-1] == 2 for row in ledger["txn"]):
        event("transactions under version 2")


def assert_checked(engine: Engine) -> None:
    with session_scope(engine, write=False) as session:
        result = check_database(session)
    assert result.ok, result.problems


def _diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    lines = []
    for table in a:
        left, right = a[table], b.get(table)
        if left != right:
            only_a = [r for r in left if r not in (right or [])]
            only_b = [r for r in (right or []) if r not in left]
            lines.append(f"{table}: only in (a) {only_a[:6]}\n  only in the other {only_b[:6]}")
    return "\n".join(lines)


# ---- the test -----------------------------------------------------------------------------

plans = st.builds(
    Plan,
    batch_rows=st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=6),
    rejects=st.lists(st.booleans(), min_size=6, max_size=6),
    suffixes=st.lists(st.sampled_from([".csv", ".jsonl"]), min_size=6, max_size=6),
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories(), plan=plans)
def test_commands_and_imports_book_the_same_ledger(
    backend: str, request: pytest.FixtureRequest, history: dict[str, Any], plan: Plan
) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        fresh_databases(backend, request, Path(tmp), 3) as urls,
    ):
        folder = Path(tmp)
        single, whole, batched = dbs = [Db(url, folder) for url in urls]
        try:
            start = parse_when(START.isoformat(), TZ) - timedelta(days=1)
            for db in dbs:
                db.load(history["v1"], start)

            expected: dict[int, Any] = {}
            commands: list[Any] = []
            for i, op in enumerate(history["ops"]):
                if importable(op):
                    expected[i] = single.one_by_one(op)
                else:
                    commands.append(single.command(op, history["v2"]))

            assert apply_imported(whole, history, expected, None) == commands
            # Batches with caches so small that every one of them is dropped and read
            # again (members, the lots kept for debits, qualifying activity): what a
            # large file does, on a small one.
            with tiny_caches():
                assert apply_imported(batched, history, expected, plan) == commands

            reference = dump(single.engine)
            _events(history, expected, commands, reference)
            for db in dbs:
                assert_checked(db.engine)
            for name, db in (("(b) one file", whole), ("(c) batches", batched)):
                got = dump(db.engine)
                assert got == reference, f"{name} differs from (a):\n{_diff(reference, got)}"
        finally:
            for db in dbs:
                db.close()
