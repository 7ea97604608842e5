"""Member statements: the figures of docs/ledger.md's member M1, golden CSV and HTML, past
statements that never change, bulk statements, and the HTML in a real browser."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import Engine, insert, select
from sqlmodel import Session

from loyaltyctl.render.colors import contrast, readable_text_on
from loyaltyctl.services.context import load_context
from loyaltyctl.services.ledger import find_member
from loyaltyctl.store.db import make_engine, session_scope
from loyaltyctl.store.models import (
    JobRun,
    Member,
    PointsEntry,
    PointsLot,
    ProgramRow,
    ProgramVersion,
    TierChangeRow,
    Txn,
    Voucher,
)
from tests.conftest import PROGRAMS, Cli, write_program
from tests.ormledger import Source, debit, expire_lot, open_lots, refund

GOLDEN = Path(__file__).parent / "golden"
UPDATE = bool(os.environ.get("UPDATE_GOLDEN"))
CHROMIUM = Path("/usr/bin/chromium")

# docs/ledger.md's member M1, steps 1-5, each recorded at noon UTC of its day (London is UTC+1
# in summer, so the local dates are the same).
M1_STEPS: list[tuple[str, tuple[str, ...]]] = [
    ("2026-01-05T12:00:00Z", ("member", "enroll", "M1", "--name", "Ada <Lovelace>")),
    (
        "2026-01-10T12:00:00Z",
        (
            "txn",
            "post",
            "M1",
            "--ref",
            "T1",
            "--line",
            "sandwiches=8.99",
            "--line",
            "coffee-beans=12.00",
            "--line",
            "tobacco=10.00",
        ),
    ),
    ("2026-06-06T12:00:00Z", ("txn", "post", "M1", "--ref", "T2", "--amount", "190.00")),
    ("2026-06-10T12:00:00Z", ("txn", "post", "M1", "--ref", "T3", "--amount", "10.00")),
    (
        "2026-06-12T12:00:00Z",
        ("txn", "return", "M1", "--ref", "R1", "--original", "T2", "--amount", "95.00"),
    ),
]
AFTER_JUNE = "2026-07-02T08:00:00Z"
FIRST_HALF = ("--from", "2026-01-01", "--to", "2026-06-30")


def at(cli: Cli, when: str, *args: str, code: int = 0) -> Any:
    with freeze_time(when):
        return cli(*args, code=code)


@pytest.fixture
def m1(deli: Cli) -> Cli:
    for when, args in M1_STEPS:
        at(deli, when, *args)
    return deli


def statement(cli: Cli, *args: str, when: str = AFTER_JUNE) -> str:
    return str(at(cli, when, "statement", *args).stdout)


# ---- ledger helpers (also used by test_reports) --------------------------------------------
# Rewards and nightly jobs live in other modules; these write the same entries through the
# ledger primitives so statements and reports can be tested on every kind of movement.


@pytest.fixture
def sessions(db_url: str) -> Iterator[Any]:
    engine = make_engine(db_url)

    def open_() -> Any:
        return session_scope(engine)

    yield open_
    engine.dispose()


def redeem_points(
    session: Session,
    code: str,
    points: int,
    *,
    when: datetime,
    now: datetime,
    voucher: str,
    valid_days: int = 14,
) -> None:
    ctx = load_context(session, None)
    member = find_member(session, ctx.id, code, lock=True)
    assert member.id is not None
    txn = Txn(
        program_id=ctx.id,
        member_id=member.id,
        ref=f"redeem-{voucher}",
        kind="redeem",
        occurred_at=when,
        recorded_at=now,
        payload="{}",
        points=-points,
        reason="Cookie",
        qual_at=when,
        program_version_id=ctx.latest.id,
        tier_after=member.tier,
    )
    session.add(txn)
    session.flush()
    debit(
        session,
        member,
        Source(ctx.latest.id, txn_id=txn.id),
        kind="redeem",
        points=points,
        at=when,
        now=now,
        lots=open_lots(session, member),
        allow_debt=False,
    )
    assert txn.id is not None
    session.add(
        Voucher(
            program_id=ctx.id,
            member_id=member.id,
            txn_id=txn.id,
            code=voucher,
            reward_key="cookie",
            reward_name="Cookie",
            reward_kind="item",
            points=points,
            issued_at=when,
            expires_at=when + timedelta(days=valid_days),
        )
    )
    session.flush()


def cancel_voucher(session: Session, voucher: str, *, now: datetime) -> None:
    ctx = load_context(session, None)
    row = session.exec(select(Voucher).where(Voucher.code == voucher)).one()[0]
    member = session.get(Member, row.member_id)
    assert member is not None
    txn = Txn(
        program_id=ctx.id,
        member_id=member.id,
        ref=f"cancel:{voucher}",
        kind="refund",
        occurred_at=now,
        recorded_at=now,
        payload="{}",
        points=row.points,
        reason=f"voucher {voucher} cancelled",
        qual_at=now,
        program_version_id=ctx.latest.id,
        tier_after=member.tier,
    )
    session.add(txn)
    session.flush()
    taken = session.exec(select(PointsEntry).where(PointsEntry.txn_id == row.txn_id)).all()
    lots = [(session.get(PointsLot, e[0].lot_id), -e[0].points) for e in taken]
    refund(
        session,
        member,
        Source(ctx.latest.id, txn_id=txn.id),
        kind="refund",
        taken=[(lot, pts) for lot, pts in lots if lot is not None],
        at=now,
        now=now,
    )
    row.status, row.cancelled_at, row.cancel_txn_id = "cancelled", now, txn.id
    session.add(row)
    session.flush()


def expire_due(session: Session, as_of: date, *, now: datetime) -> int:
    ctx = load_context(session, None)
    run = JobRun(
        program_id=ctx.id,
        job="expire",
        as_of=as_of,
        status="done",
        started_at=now,
        finished_at=now,
    )
    session.add(run)
    session.flush()
    lots = session.exec(
        select(PointsLot).where(PointsLot.expires_on <= as_of, PointsLot.remaining > 0)
    ).all()
    total = 0
    for (lot,) in lots:
        member = session.get(Member, lot.member_id)
        assert member is not None
        total += expire_lot(
            session, member, Source(ctx.latest.id, job_run_id=run.id), lot, now, now
        )
    return total


# ---- M1: figures, JSON fields, golden files ------------------------------------------------


def test_json_statement_has_the_contract_fields_and_m1_figures(m1: Cli) -> None:
    doc = json.loads(statement(m1, "M1", *FIRST_HALF, "--format", "json"))
    for key in (
        "member",
        "from",
        "to",
        "opening_balance",
        "lines",
        "closing_balance",
        "tier",
        "expiring",
    ):
        assert key in doc
    assert (doc["member"], doc["from"], doc["to"]) == ("M1", "2026-01-01", "2026-06-30")
    assert doc["opening_balance"] == 0
    assert [line["points"] for line in doc["lines"]] == [25, 224, 1900, 62, -950]
    assert [line["balance"] for line in doc["lines"]] == [25, 249, 2149, 2211, 1261]
    assert [line["ref"] for line in doc["lines"]] == ["signup:M1", "T1", "T2", "T3", "R1"]
    assert [line["kind"] for line in doc["lines"]] == ["bonus", "earn", "earn", "earn", "clawback"]
    for line in doc["lines"]:
        assert set(line) >= {"at", "ref", "kind", "points", "balance", "description"}
        assert line["at"].endswith("Z") and not line["backdated"]
    assert (
        doc["closing_balance"]
        == 1261
        == doc["opening_balance"] + sum(line["points"] for line in doc["lines"])
    )
    assert doc["totals"] == {
        "earned": 2186,
        "bonus": 25,
        "redeemed": 0,
        "expired": 0,
        "returned": -950,
        "adjusted": 0,
        "refunded": 0,
    }
    assert doc["tier"] == "silver" and doc["hold_until"] == "2027-06-06"
    # Lots due within 90 days after 2026-06-30: the signup lot and T1's.
    assert doc["expiring"] == [
        {"date": "2026-07-05", "points": 25},
        {"date": "2026-07-10", "points": 224},
    ]
    assert doc["tier_progress"]["activity"] == "125.99"
    assert doc["tier_progress"]["next_tier"] is None
    assert doc["vouchers"] == []
    m1.check()


def test_json_flag_and_period_shorthand(m1: Cli) -> None:
    by_period = statement(m1, "M1", "--period", "2026-06", "--json")
    by_days = statement(m1, "M1", "--from", "2026-06-01", "--to", "2026-06-30", "--format", "json")
    assert by_period == by_days
    doc = json.loads(by_period)
    assert doc["opening_balance"] == 249
    assert doc["tier_progress"]["window_from"] == "2026-01-01"


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing {path}: run with UPDATE_GOLDEN=1 once"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from the golden file"


def test_golden_csv(m1: Cli) -> None:
    golden("m1-2026-h1.csv", statement(m1, "M1", *FIRST_HALF, "--format", "csv"))


def test_golden_html(m1: Cli) -> None:
    html = statement(m1, "M1", *FIRST_HALF, "--format", "html")
    golden("m1-2026-h1.html", html)
    assert "Ada &lt;Lovelace&gt;" in html and "<Lovelace>" not in html
    assert '<th scope="col">' in html and '<th scope="row">' in html
    assert "@page" in html and "<link" not in html and "<script" not in html


def test_text_output_and_out_file(m1: Cli, tmp_path: Path) -> None:
    text = statement(m1, "M1", *FIRST_HALF)
    assert "1261" in text and "R1" in text
    target = tmp_path / "m1.html"
    out = statement(m1, "M1", *FIRST_HALF, "--format", "html", "--out", str(target))
    assert out == "" and target.read_text().startswith("<!DOCTYPE html>")


def test_bad_usage(m1: Cli) -> None:
    for args, code in [
        (("M1", "--from", "2026-06-30", "--to", "2026-06-01"), 4),
        (("M1", "--period", "2026-13"), 4),
        (("M1", "--from", "2026-06-01"), 2),
        (("M1", "--period", "2026-06", "--from", "2026-06-01"), 2),
        (("M1", "--all", "--period", "2026-06", "--out", "x"), 2),
        (("M1", "--period", "2026-06", "--format", "pdf"), 2),
        (("M404", "--period", "2026-06"), 3),
    ]:
        result = at(m1, AFTER_JUNE, "statement", *args, code=code)
        assert result.stderr.startswith("error: ")


# ---- past statements never change ----------------------------------------------------------


def test_past_statement_is_byte_identical_after_later_activity(
    m1: Cli, sessions: Any, tmp_path: Path
) -> None:
    before = {
        fmt: statement(m1, "M1", *FIRST_HALF, "--format", fmt) for fmt in ("json", "csv", "html")
    }
    # Later activity of every kind, dated after the period.
    at(m1, "2026-07-03T10:00:00Z", "txn", "post", "M1", "--ref", "T4", "--amount", "20.00")
    at(m1, "2026-07-04T09:00:00Z", "member", "enroll", "M2", "--at", "2026-02-01")
    now = datetime(2026, 7, 12, 9, tzinfo=UTC)
    with freeze_time(now), sessions() as session:
        redeem_points(session, "M1", 100, when=now, now=now, voucher="V-LATER")
        expire_due(session, date(2026, 7, 11), now=now)
    branded = (PROGRAMS / "deli.toml").read_text() + (
        '\n[branding]\ndisplay_name = "Deli Points"\nprimary_color = "#ffcc00"\n'
    )
    at(m1, "2026-07-13T09:00:00Z", "program", "load", str(write_program(tmp_path, branded)))
    for fmt, text in before.items():
        assert (
            statement(m1, "M1", *FIRST_HALF, "--format", fmt, when="2026-08-01T09:00:00Z") == text
        )
    july = json.loads(
        statement(m1, "M1", "--period", "2026-07", "--json", when="2026-08-01T09:00:00Z")
    )
    assert july["opening_balance"] == 1261
    assert july["closing_balance"] == july["opening_balance"] + sum(
        line["points"] for line in july["lines"]
    )
    # The new branding was loaded during July: July's statement shows it, June's did not.
    assert july["program_name"] == "Deli Points"
    m1.check()


def test_backdated_entries_land_in_their_period_flagged(m1: Cli) -> None:
    """History posted later with a past date belongs to the period it happened in (so
    migrated history gives complete statements), marked as recorded after that period."""
    before = json.loads(statement(m1, "M1", *FIRST_HALF, "--json"))
    at(
        m1,
        "2026-07-03T11:00:00Z",
        "txn",
        "post",
        "M1",
        "--ref",
        "LATE",
        "--amount",
        "40.00",
        "--at",
        "2026-06-20T12:00",
    )
    at(
        m1,
        "2026-07-03T12:00:00Z",
        "txn",
        "adjust",
        "M1",
        "--ref",
        "A1",
        "--points",
        "-30",
        "--reason",
        "correction",
        "--at",
        "2026-03-01",
    )
    after = json.loads(statement(m1, "M1", *FIRST_HALF, "--json", when="2026-08-01T09:00:00Z"))
    lines = {line["ref"]: line for line in after["lines"]}
    assert lines["LATE"]["backdated"] and lines["LATE"]["date"] == "2026-06-20"
    assert lines["A1"]["backdated"] and lines["A1"]["points"] == -30
    assert not lines["T2"]["backdated"]
    assert after["opening_balance"] == before["opening_balance"]
    assert after["closing_balance"] == after["opening_balance"] + sum(
        line["points"] for line in after["lines"]
    )
    assert after["closing_balance"] == before["closing_balance"] + lines["LATE"]["points"] - 30
    m1.check()


def test_vouchers_refunds_and_expiry_on_statements(m1: Cli, sessions: Any) -> None:
    redeemed = datetime(2026, 6, 15, 12, tzinfo=UTC)
    with freeze_time(redeemed), sessions() as session:
        redeem_points(
            session, "M1", 400, when=redeemed, now=redeemed, voucher="V-SAND", valid_days=30
        )
        redeem_points(session, "M1", 100, when=redeemed, now=redeemed, voucher="V-COOK")
    june_text = statement(m1, "M1", "--period", "2026-06", "--json")
    june = json.loads(june_text)
    # V-COOK lapsed on 2026-06-29 (valid 14 days): only V-SAND is live at the end of June.
    assert [v["code"] for v in june["vouchers"]] == ["V-SAND"]
    assert june["totals"]["redeemed"] == -500
    assert june["lines"][-1]["description"].startswith("Redeemed Cookie")
    cancelled = datetime(2026, 7, 1, 12, tzinfo=UTC)
    with freeze_time(cancelled), sessions() as session:
        cancel_voucher(session, "V-SAND", now=cancelled)
    expired = datetime(2026, 7, 11, 23, tzinfo=UTC)
    with freeze_time(expired), sessions() as session:
        assert expire_due(session, date(2026, 7, 11), now=expired) > 0
    july = json.loads(
        statement(m1, "M1", "--period", "2026-07", "--json", when="2026-08-01T09:00:00Z")
    )
    assert july["opening_balance"] == june["closing_balance"] == 761
    assert july["totals"]["refunded"] == 400
    assert july["totals"]["expired"] < 0
    refund_line = next(line for line in july["lines"] if line["kind"] == "refund")
    assert refund_line["description"] == "Voucher V-SAND cancelled: points returned"
    assert next(line for line in july["lines"] if line["kind"] == "expire")["ref"] == (
        "expire:2026-07-11"
    )
    # V-SAND was cancelled on 2026-07-01: nothing is live at the end of July.
    assert july["vouchers"] == []
    # June's statement is the same as before the cancellation and the expiry run.
    assert statement(m1, "M1", "--period", "2026-06", "--json", when="2026-08-01T09:00:00Z") == (
        june_text
    )
    m1.check()


# ---- bulk ------------------------------------------------------------------------------------


def bulk_members(engine: Engine, count: int, *, program: str = "deli") -> None:
    """``count`` members with a signup bonus and one purchase in June 2026 (a third of
    them also returned half of it), written with Core executemany, ledger invariants kept."""
    with engine.begin() as conn:
        program_id = conn.execute(
            select(ProgramRow.id).where(ProgramRow.key == program)
        ).scalar_one()
        version_id = conn.execute(
            select(ProgramVersion.id).where(ProgramVersion.program_id == program_id)
        ).scalar_one()
        first_member = (conn.execute(select(Member.id).order_by(Member.id.desc())).first() or (0,))[
            0
        ] + 1
        first_txn = (conn.execute(select(Txn.id).order_by(Txn.id.desc())).first() or (0,))[0] + 1
        first_lot = (
            conn.execute(select(PointsLot.id).order_by(PointsLot.id.desc())).first() or (0,)
        )[0] + 1
        enrolled = datetime(2026, 1, 5, 12, tzinfo=UTC)
        bought = datetime(2026, 6, 10, 12, tzinfo=UTC)
        returned = datetime(2026, 6, 20, 12, tzinfo=UTC)
        members, txns, lots, entries = [], [], [], []
        for i in range(count):
            mid, tid, lid = first_member + i, first_txn + 3 * i, first_lot + 2 * i
            code = f"B{i:06d}"
            earned = 50 + i % 100
            clawed = earned // 2 if i % 3 == 0 else 0
            balance = 25 + earned - clawed
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
                    "last_purchase_at": bought,
                }
            )
            common = {
                "program_id": program_id,
                "member_id": mid,
                "payload": "{}",
                "program_version_id": version_id,
                "tier_after": "bronze",
            }
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
                    original_id=None,
                    reason="signup bonus",
                    qual_points=0,
                    qual_spend_minor=0,
                    qual_visits=0,
                )
            )
            txns.append(
                dict(
                    common,
                    id=tid + 1,
                    ref=f"P-{code}",
                    kind="purchase",
                    occurred_at=bought,
                    recorded_at=bought,
                    points=earned,
                    balance_after=25 + earned,
                    qual_at=bought,
                    amount_minor=earned * 20,
                    original_id=None,
                    reason=None,
                    qual_points=earned,
                    qual_spend_minor=earned * 20,
                    qual_visits=1,
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
            lots.append(
                {
                    "id": lid + 1,
                    "member_id": mid,
                    "txn_id": tid + 1,
                    "kind": "earn",
                    "earned_at": bought,
                    "available_at": bought,
                    "expires_on": date(2026, 12, 10),
                    "points": earned,
                    "remaining": earned - clawed,
                }
            )
            entry = {"member_id": mid, "job_run_id": None, "program_version_id": version_id}
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
            entries.append(
                dict(
                    entry,
                    txn_id=tid + 1,
                    lot_id=lid + 1,
                    kind="earn",
                    points=earned,
                    at=bought,
                    recorded_at=bought,
                )
            )
            if clawed:
                txns.append(
                    dict(
                        common,
                        id=tid + 2,
                        ref=f"R-{code}",
                        kind="return",
                        occurred_at=returned,
                        recorded_at=returned,
                        points=-clawed,
                        balance_after=balance,
                        qual_at=bought,
                        amount_minor=earned * 10,
                        original_id=tid + 1,
                        reason=None,
                        qual_points=-clawed,
                        qual_spend_minor=-earned * 10,
                        qual_visits=0,
                    )
                )
                entries.append(
                    dict(
                        entry,
                        txn_id=tid + 2,
                        lot_id=lid + 1,
                        kind="clawback",
                        points=-clawed,
                        at=returned,
                        recorded_at=returned,
                    )
                )
        conn.execute(insert(Member), members)
        conn.execute(insert(Txn), txns)
        conn.execute(insert(PointsLot), lots)
        conn.execute(insert(PointsEntry), entries)
        conn.execute(
            insert(TierChangeRow),
            [
                {
                    "member_id": m["id"],
                    "tier": "bronze",
                    "effective_on": date(2026, 1, 5),
                    "reason": "enrol",
                    "recorded_at": enrolled,
                }
                for m in members
            ],
        )
        if conn.dialect.name == "postgresql":
            for table in ("member", "txn", "points_lot"):
                conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT MAX(id) FROM {table}))"
                )
    if engine.dialect.name == "postgresql":
        # What autovacuum would soon do after a bulk load: planner statistics.
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")


def test_bulk_statements_for_10000_members_match_single_ones(
    deli: Cli, engine: Engine, tmp_path: Path
) -> None:
    at(deli, "2026-01-05T12:00:00Z", "member", "enroll", "a/b")  # a name that needs quoting
    bulk_members(engine, 10_000)
    out = tmp_path / "june"
    result = at(
        deli,
        AFTER_JUNE,
        "statement",
        "--all",
        "--period",
        "2026-06",
        "--format",
        "json",
        "--out",
        str(out),
    )
    assert "wrote 10001 statements of 10001 members" in result.stdout
    assert result.stderr == ""
    index = (out / "index.csv").read_text().splitlines()
    assert index[0] == "member,file,opening_balance,closing_balance,lines,tier"
    assert len(index) == 10_002
    assert len(list(out.glob("*.json"))) == 10_001
    assert (out / "a%2Fb.json").exists()
    for code in ("B000000", "B000001", "B004999", "B009998", "B009999", "a/b"):
        row = next(line for line in index if line.startswith(f"{code},"))
        name = row.split(",")[1]
        single = statement(deli, code, "--period", "2026-06", "--json")
        assert (out / name).read_text() == single
    doc = json.loads((out / "B000003.json").read_text())
    assert [line["kind"] for line in doc["lines"]] == ["earn", "clawback"]
    assert doc["closing_balance"] == 25 + 53 - 26
    deli.check()


def test_only_active_skips_members_without_movements(deli: Cli, tmp_path: Path) -> None:
    at(deli, "2026-01-05T12:00:00Z", "member", "enroll", "QUIET")
    at(deli, "2026-01-05T12:00:00Z", "member", "enroll", "BUSY")
    at(deli, "2026-06-10T12:00:00Z", "txn", "post", "BUSY", "--ref", "X1", "--amount", "5.00")
    out = tmp_path / "csv"
    result = at(
        deli,
        AFTER_JUNE,
        "statement",
        "--all",
        "--period",
        "2026-06",
        "--format",
        "csv",
        "--out",
        str(out),
        "--only-active",
        "--json",
    )
    summary = json.loads(result.stdout)
    assert (summary["members"], summary["written"]) == (2, 1)
    assert sorted(p.name for p in out.iterdir()) == ["BUSY.csv", "index.csv"]


# ---- HTML in a real browser --------------------------------------------------------------


def png_pixels(data: bytes, max_rows: int) -> tuple[int, int, list[bytes]]:
    """Width, height and the first ``max_rows`` unfiltered RGB(A) rows of an 8-bit PNG
    (stdlib only; pure Python, so only as many rows as the checks need)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(min(height, max_rows)):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for x in range(stride):
            a = line[x - channels] if x >= channels else 0
            b = prev[x]
            c = prev[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + a) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + b) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def screenshot(html: Path, png: Path, profile: Path) -> None:
    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            "--window-size=1024,1400",
            html.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs headless Chromium at /usr/bin/chromium (apt-get install -y chromium)",
)
def test_html_statement_renders_in_headless_chromium(tmp_path: Path) -> None:
    html = tmp_path / "statement.html"
    shutil.copy(GOLDEN / "m1-2026-h1.html", html)
    png = tmp_path / "statement.png"
    screenshot(html, png, tmp_path / "profile")
    # The top 600 pixels hold the brand header, the summary and the first movements.
    width, height, rows = png_pixels(png.read_bytes(), max_rows=600)
    assert (width, height) == (1024, 1400)
    channels = len(rows[0]) // width
    pixels = [row[x : x + 3] for row in rows[::4] for x in range(0, len(row), channels * 4)]
    white = sum(1 for p in pixels if p == b"\xff\xff\xff")
    brand = sum(1 for p in pixels if p == bytes.fromhex("1f4e79"))
    dark = sum(1 for p in pixels if max(p) < 90)
    assert white < len(pixels) * 0.97, "the page is blank"
    assert brand > 300, "the brand header is missing"
    assert dark > 200, "no text was drawn"


@pytest.mark.parametrize(
    "color",
    ["#1f4e79", "#f2a900", "#ffffff", "#000000", "#777777", "#ffcc00", "#0055aa", "#76b900"],
)
def test_text_on_brand_colours_is_readable(color: str) -> None:
    assert contrast(readable_text_on(color), color) >= 4.5
