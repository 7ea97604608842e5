"""``export members|transactions|ledger|vouchers``: stable columns, incremental exports,
and no personal data of erased members."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from loyaltyctl.services.exports import COLUMNS
from tests.conftest import Cli
from tests.test_statements import M1_STEPS, at, redeem_points, sessions  # noqa: F401

DOCUMENTED = {
    "members": "member,status,tier,tier_since,enrolled_at,balance,debt,last_purchase_at,name,"
    "email,phone,birthday,status_reason,erased,erased_at,updated_at",
    "transactions": "ref,member,kind,occurred_at,recorded_at,amount,currency,points,"
    "balance_after,tier_after,original,reason,program_version,store",
    "ledger": "entry_id,member,kind,points,at,recorded_at,txn_ref,job,job_as_of,lot_id,"
    "lot_expires_on,program_version",
    "vouchers": "voucher,member,reward,reward_name,reward_kind,reward_value,reward_product,"
    "points,status,issued_at,expires_at,used_at,cancelled_at,expired_at,ref,cancel_ref",
}
WHEN = "2026-07-20T09:00:00Z"


def export(cli: Cli, kind: str, *args: str, when: str = WHEN) -> str:
    with freeze_time(when):
        return str(cli("export", kind, "--out", "-", *args).stdout)


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture
def m1(deli: Cli) -> Cli:
    for when, args in M1_STEPS:
        at(deli, when, *args)
    return deli


def test_columns_are_the_documented_ones(m1: Cli) -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "exports.md").read_text()
    for kind, header in DOCUMENTED.items():
        assert ",".join(COLUMNS[kind]) == header
        assert export(m1, kind, "--format", "csv").splitlines()[0] == header
        for column in COLUMNS[kind]:
            assert f"`{column}`" in docs, f"{kind}.{column} is not in docs/exports.md"


def test_rows_in_both_formats(m1: Cli, tmp_path: Path) -> None:
    rows = csv_rows(export(m1, "transactions", "--format", "csv"))
    assert [(r["ref"], r["kind"], r["points"], r["balance_after"]) for r in rows] == [
        ("signup:M1", "bonus", "25", "25"),
        ("T1", "purchase", "224", "249"),
        ("T2", "purchase", "1900", "2149"),
        ("T3", "purchase", "62", "2211"),
        ("R1", "return", "-950", "1261"),
    ]
    assert rows[1]["amount"] == "30.99" and rows[4]["original"] == "T2"
    target = tmp_path / "ledger.jsonl"
    with freeze_time(WHEN):
        m1("export", "ledger", "--out", str(target))
    entries = [json.loads(line) for line in target.read_text().splitlines()]
    assert sum(e["points"] for e in entries) == 1261
    assert entries[0]["txn_ref"] == "signup:M1" and entries[0]["lot_expires_on"] == "2026-07-05"
    assert list(entries[0]) == list(COLUMNS["ledger"])
    members = csv_rows(export(m1, "members", "--format", "csv"))
    assert members[0]["balance"] == "1261" and members[0]["erased"] == "false"
    with freeze_time(WHEN):
        m1("export", "members", "--out", str(tmp_path / "members.txt"), code=2)
        m1("export", "members", "--out", str(tmp_path / "x.csv"), "--format", "xml", code=2)
        m1("export", "members", "--out", str(tmp_path / "none" / "x.csv"), code=4)


def test_since_exports_only_what_was_recorded_or_changed(m1: Cli) -> None:
    rows = csv_rows(export(m1, "transactions", "--format", "csv", "--since", "2026-06-07"))
    assert [r["ref"] for r in rows] == ["T3", "R1"]
    # A backdated purchase recorded later is exported as new, whatever its date.
    at(
        m1,
        "2026-07-03T10:00:00Z",
        "txn",
        "post",
        "M1",
        "--ref",
        "LATE",
        "--amount",
        "4.00",
        "--at",
        "2026-01-20",
    )
    at(m1, "2026-07-03T10:00:00Z", "member", "enroll", "M2", "--at", "2026-02-01")
    rows = csv_rows(export(m1, "transactions", "--format", "csv", "--since", "2026-07-01"))
    assert [r["ref"] for r in rows] == ["LATE", "signup:M2"]
    ledger = csv_rows(export(m1, "ledger", "--format", "csv", "--since", "2026-07-03T10:00"))
    assert {r["txn_ref"] for r in ledger} == {"LATE", "signup:M2"}
    # M1's row did not change but its balance did.
    members = csv_rows(export(m1, "members", "--format", "csv", "--since", "2026-07-01"))
    assert [r["member"] for r in members] == ["M1", "M2"]
    assert csv_rows(export(m1, "members", "--format", "csv", "--since", "2026-07-04")) == []


def test_erased_members_personal_data_never_leaves(m1: Cli, tmp_path: Path) -> None:
    secrets = ("Grace Hopper", "grace@example.org", "+44 20 7946 0000", "1906-12-09")
    at(
        m1,
        "2026-07-01T10:00:00Z",
        "member",
        "enroll",
        "M9",
        "--name",
        secrets[0],
        "--email",
        secrets[1],
        "--phone",
        secrets[2],
        "--birthday",
        secrets[3],
    )
    at(
        m1,
        "2026-07-01T11:00:00Z",
        "txn",
        "adjust",
        "M9",
        "--ref",
        "GW",
        "--points",
        "10",
        "--reason",
        f"goodwill for {secrets[0]}",
    )
    at(m1, "2026-07-01T12:00:00Z", "member", "suspend", "M9", "--reason", f"{secrets[1]} bounced")
    before = export(m1, "members", "--format", "csv")
    assert secrets[0] in before
    at(m1, "2026-07-02T12:00:00Z", "member", "erase", "M9")
    for kind in COLUMNS:
        for fmt in ("csv", "jsonl"):
            text = export(m1, kind, "--format", fmt)
            for secret in (*secrets, "Grace", "grace"):
                assert secret not in text, f"{secret!r} leaked in the {kind} {fmt} export"
    row = next(r for r in csv_rows(export(m1, "members", "--format", "csv")) if r["member"] == "M9")
    assert row["erased"] == "true" and row["erased_at"] == "2026-07-02T12:00:00Z"
    assert row["balance"] == "35"


def test_vouchers(m1: Cli, sessions: Any) -> None:  # noqa: F811
    moment = datetime(2026, 6, 15, 12, tzinfo=UTC)
    with freeze_time(moment), sessions() as session:
        redeem_points(session, "M1", 100, when=moment, now=moment, voucher="V-1")
    rows = [json.loads(line) for line in export(m1, "vouchers", "--format", "jsonl").splitlines()]
    assert len(rows) == 1 and list(rows[0]) == list(COLUMNS["vouchers"])
    # Valid 14 days: by 2026-07-20 it has lapsed even though no job marked it.
    assert rows[0]["status"] == "expired" and rows[0]["ref"] == "redeem-V-1"
    assert rows[0]["voucher"] == "V-1" and rows[0]["points"] == 100
    early = csv_rows(export(m1, "vouchers", "--format", "csv", when="2026-06-20T00:00:00Z"))
    assert early[0]["status"] == "issued"
    assert (
        export(
            m1, "vouchers", "--format", "csv", "--since", "2026-06-16", when="2026-06-20T00:00:00Z"
        ).count("\n")
        == 1
    )
    assert len(csv_rows(export(m1, "vouchers", "--format", "csv", "--since", "2026-06-16"))) == 1
