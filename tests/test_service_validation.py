"""Services called as a library refuse bad input themselves, and write nothing.

Every write service (purchases, returns, adjustments, enrolment, status changes,
redemptions, voucher use and cancellation, and the rows of ``member import`` and
``txn import``) is called directly, not through the CLI, with one bad value at a time.
It must raise the class of ``loyaltyctl.errors`` with the exit code of docs/cli.md (4 invalid
input, 3 an unknown member or reference), or for an import row reject it with that
kind of reason, and the database must be exactly as before (every table compared).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, text
from sqlmodel import Session

from loyaltyctl.errors import LoyaltyError
from loyaltyctl.rules.earning import Line
from loyaltyctl.services.context import ProgramContext, load_context
from loyaltyctl.services.imports.member_rows import MemberImporter
from loyaltyctl.services.imports.reading import SourceRow
from loyaltyctl.services.imports.txn_rows import TxnImporter
from loyaltyctl.services.members import change_status, enroll
from loyaltyctl.services.programs import load_program
from loyaltyctl.services.redemptions import cancel_voucher, redeem
from loyaltyctl.services.rewards import use_voucher
from loyaltyctl.services.txns import post_adjustment, post_purchase, post_return
from loyaltyctl.store.db import session_scope
from tests.conftest import write_program

PROGRAM = """
[program]
key = "val"
name = "Validation"
currency = "EUR"
timezone = "Europe/Berlin"

[earn]
per_unit = 1
signup_bonus = 100

[expiry]
policy = "rolling"
months = 12

[[rewards]]
key = "coffee"
name = "Coffee"
cost = 50
valid_days = 365
"""

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
AT = datetime(2026, 3, 2, 10, tzinfo=UTC)
FUTURE = NOW + timedelta(minutes=6)
BEFORE_1900 = datetime(1899, 12, 31, 12, tzinfo=UTC)
AFTER_2999 = datetime(3000, 1, 1, 12, tzinfo=UTC)
LONG_REF = "R" * 201
LONG_CODE = "M" * 129
INVALID, NOT_FOUND = 4, 3


@dataclass
class Seed:
    voucher: str


def seed(engine: Engine, tmp_path: Path) -> Seed:
    """A member M1 with its signup bonus, a purchase P1 and a coffee voucher."""
    path = write_program(tmp_path, PROGRAM, "val.toml")
    with session_scope(engine) as session:
        load_program(session, path, now=datetime(2026, 1, 1, tzinfo=UTC))
    with session_scope(engine) as session:
        ctx = load_context(session, "val")
        enroll(session, ctx, "M1", at=datetime(2026, 1, 2, 9, tzinfo=UTC), now=NOW)
        post_purchase(
            session,
            ctx,
            "M1",
            ref="P1",
            lines=[Line(None, Decimal("120.00"))],
            at=datetime(2026, 2, 1, 10, tzinfo=UTC),
            now=NOW,
        )
        voucher = redeem(
            session, ctx, "M1", "coffee", ref="V1", at=datetime(2026, 2, 2, 10, tzinfo=UTC), now=NOW
        )
    return Seed(voucher.voucher)


def snapshot(engine: Engine) -> dict[str, list[str]]:
    """Every row of every table, as text, sorted."""
    with engine.connect() as conn:
        tables = sorted(inspect(conn).get_table_names())
        return {
            table: sorted(
                repr(tuple(row)) for row in conn.execute(text(f'SELECT * FROM "{table}"'))
            )
            for table in tables
        }


def written(before: dict[str, list[str]], after: dict[str, list[str]]) -> dict[str, str]:
    """Per table that changed: rows added and removed (an update is one of each)."""
    changes: dict[str, str] = {}
    for table in sorted(set(before) | set(after)):
        old, new = before.get(table, []), after.get(table, [])
        added = sum(1 for r in new if r not in old)
        removed = sum(1 for r in old if r not in new)
        if added or removed:
            changes[table] = f"+{added} -{removed}"
    return changes


Call = Callable[[Session, ProgramContext, Seed], Any]


def _purchase(
    code: str = "M1", ref: str = "P9", amount: Decimal = Decimal("10.00"), at: datetime = AT
) -> Call:
    return lambda s, c, _: post_purchase(
        s, c, code, ref=ref, lines=[Line(None, amount)], at=at, now=NOW
    )


def _return(
    code: str = "M1",
    ref: str = "R9",
    original: str = "P1",
    amount: Decimal = Decimal("10.00"),
    at: datetime = AT,
) -> Call:
    return lambda s, c, _: post_return(
        s, c, code, ref=ref, original_ref=original, amount=amount, at=at, now=NOW
    )


def _adjust(
    code: str = "M1",
    ref: str = "A9",
    points: int = 10,
    reason: str = "goodwill",
    at: datetime = AT,
) -> Call:
    return lambda s, c, _: post_adjustment(
        s, c, code, ref=ref, points=points, reason=reason, at=at, now=NOW
    )


def _enroll(code: str = "M2", at: datetime = AT) -> Call:
    return lambda s, c, _: enroll(s, c, code, at=at, now=NOW)


def _status(code: str = "M1", action: str = "suspend") -> Call:
    return lambda s, c, _: change_status(s, c, code, action, reason="test", now=NOW)


def _redeem(code: str = "M1", ref: str | None = "V9", at: datetime = AT) -> Call:
    return lambda s, c, _: redeem(s, c, code, "coffee", ref=ref, at=at, now=NOW)


def _use(code: str | None = None, at: datetime = AT) -> Call:
    return lambda s, c, seed_: use_voucher(
        s, c, seed_.voucher if code is None else code, at=at, now=NOW
    )


def _cancel(code: str | None = None, at: datetime = AT) -> Call:
    return lambda s, c, seed_: cancel_voucher(
        s, c, seed_.voucher if code is None else code, at=at, now=NOW
    )


D = Decimal
CALLS: list[tuple[str, Call, int]] = [
    # purchases
    ("purchase-empty-ref", _purchase(ref=""), INVALID),
    ("purchase-blank-ref", _purchase(ref="   "), INVALID),
    ("purchase-long-ref", _purchase(ref=LONG_REF), INVALID),
    ("purchase-empty-member", _purchase(code=""), INVALID),
    ("purchase-long-member", _purchase(code=LONG_CODE), INVALID),
    ("purchase-unknown-member", _purchase(code="NOBODY"), NOT_FOUND),
    ("purchase-negative", _purchase(amount=D("-5.00")), INVALID),
    ("purchase-zero", _purchase(amount=D("0")), INVALID),
    ("purchase-over-precise", _purchase(amount=D("1.234")), INVALID),
    ("purchase-nan", _purchase(amount=D("NaN")), INVALID),
    ("purchase-infinity", _purchase(amount=D("Infinity")), INVALID),
    ("purchase-huge", _purchase(amount=D("1000000000.01")), INVALID),
    ("purchase-future", _purchase(at=FUTURE), INVALID),
    ("purchase-before-1900", _purchase(at=BEFORE_1900), INVALID),
    ("purchase-after-2999", _purchase(at=AFTER_2999), INVALID),
    (
        "purchase-no-lines",
        lambda s, c, _: post_purchase(s, c, "M1", ref="P9", lines=[], at=AT, now=NOW),
        INVALID,
    ),
    # returns
    ("return-empty-ref", _return(ref=""), INVALID),
    ("return-blank-ref", _return(ref="  "), INVALID),
    ("return-long-ref", _return(ref=LONG_REF), INVALID),
    ("return-long-member", _return(code=LONG_CODE), INVALID),
    ("return-unknown-member", _return(code="NOBODY"), NOT_FOUND),
    ("return-unknown-original", _return(original="NOPE"), NOT_FOUND),
    ("return-negative", _return(amount=D("-1.00")), INVALID),
    ("return-zero", _return(amount=D("0.00")), INVALID),
    ("return-over-precise", _return(amount=D("1.001")), INVALID),
    ("return-nan", _return(amount=D("NaN")), INVALID),
    ("return-infinity", _return(amount=D("Infinity")), INVALID),
    ("return-huge", _return(amount=D("1000000000.01")), INVALID),
    ("return-future", _return(at=FUTURE), INVALID),
    ("return-before-1900", _return(at=BEFORE_1900), INVALID),
    ("return-after-2999", _return(at=AFTER_2999), INVALID),
    # adjustments
    ("adjust-empty-ref", _adjust(ref=""), INVALID),
    ("adjust-blank-ref", _adjust(ref=" \t"), INVALID),
    ("adjust-long-ref", _adjust(ref=LONG_REF), INVALID),
    ("adjust-long-member", _adjust(code=LONG_CODE), INVALID),
    ("adjust-unknown-member", _adjust(code="NOBODY"), NOT_FOUND),
    ("adjust-zero", _adjust(points=0), INVALID),
    ("adjust-too-many", _adjust(points=10**12 + 1), INVALID),
    ("adjust-too-few", _adjust(points=-(10**12) - 1), INVALID),
    ("adjust-empty-reason", _adjust(reason="  "), INVALID),
    ("adjust-future", _adjust(at=FUTURE), INVALID),
    ("adjust-before-1900", _adjust(at=BEFORE_1900), INVALID),
    ("adjust-after-2999", _adjust(at=AFTER_2999), INVALID),
    # enrolment
    ("enroll-empty-member", _enroll(code=""), INVALID),
    ("enroll-blank-member", _enroll(code="   "), INVALID),
    ("enroll-long-member", _enroll(code=LONG_CODE), INVALID),
    ("enroll-future", _enroll(at=FUTURE), INVALID),
    ("enroll-before-1900", _enroll(at=BEFORE_1900), INVALID),
    ("enroll-after-2999", _enroll(at=AFTER_2999), INVALID),
    # status changes
    ("suspend-unknown-member", _status(code="NOBODY"), NOT_FOUND),
    ("reactivate-unknown-member", _status(code="NOBODY", action="reactivate"), NOT_FOUND),
    ("close-unknown-member", _status(code="NOBODY", action="close"), NOT_FOUND),
    ("suspend-empty-member", _status(code=""), INVALID),
    ("suspend-long-member", _status(code=LONG_CODE), INVALID),
    ("status-unknown-action", _status(action="explode"), INVALID),
    # redemptions
    ("redeem-empty-ref", _redeem(ref=""), INVALID),
    ("redeem-blank-ref", _redeem(ref="  "), INVALID),
    ("redeem-long-ref", _redeem(ref=LONG_REF), INVALID),
    ("redeem-long-member", _redeem(code=LONG_CODE), INVALID),
    ("redeem-unknown-member", _redeem(code="NOBODY"), NOT_FOUND),
    ("redeem-future", _redeem(at=FUTURE), INVALID),
    ("redeem-before-1900", _redeem(at=BEFORE_1900), INVALID),
    ("redeem-after-2999", _redeem(at=AFTER_2999), INVALID),
    # vouchers
    ("use-unknown-voucher", _use(code="ABCD-EFGH-JKMN"), NOT_FOUND),
    ("use-empty-voucher", _use(code="  "), INVALID),
    ("use-future", _use(at=FUTURE), INVALID),
    ("use-before-1900", _use(at=BEFORE_1900), INVALID),
    ("use-after-2999", _use(at=AFTER_2999), INVALID),
    ("cancel-unknown-voucher", _cancel(code="ABCD-EFGH-JKMN"), NOT_FOUND),
    ("cancel-empty-voucher", _cancel(code=""), INVALID),
    ("cancel-future", _cancel(at=FUTURE), INVALID),
    ("cancel-before-1900", _cancel(at=BEFORE_1900), INVALID),
    ("cancel-after-2999", _cancel(at=AFTER_2999), INVALID),
]


@pytest.fixture
def seeded(engine: Engine, tmp_path: Path) -> Iterator[tuple[Engine, Seed]]:
    yield engine, seed(engine, tmp_path)


@pytest.mark.parametrize(("call", "code"), [c[1:] for c in CALLS], ids=[c[0] for c in CALLS])
def test_service_refuses_bad_input_and_writes_nothing(
    seeded: tuple[Engine, Seed], call: Call, code: int
) -> None:
    engine, data = seeded
    before = snapshot(engine)
    error: BaseException | None = None
    try:
        with session_scope(engine) as session:
            call(session, load_context(session, "val"), data)
    except Exception as exc:  # what it raised is the finding: report every kind
        error = exc
    changes = written(before, snapshot(engine))
    assert isinstance(error, LoyaltyError) and error.exit_code == code, (
        f"expected a LoyaltyError with exit code {code}, got {error!r}; written: {changes}"
    )
    assert not changes


# ---- import rows ----------------------------------------------------------------------

LABELS = {INVALID: "invalid:", NOT_FOUND: "not found:"}
# Columns in the importers' layout order.
MEMBER_FIELDS = (
    "member",
    "name",
    "email",
    "phone",
    "birthday",
    "enrolled_at",
    "opening_balance",
    "opening_expires",
)
TXN_FIELDS = (
    "type",
    "member",
    "ref",
    "amount",
    "at",
    "category",
    "original",
    "points",
    "reason",
    "store",
)
GOOD_MEMBER = {"member": "M2", "enrolled_at": "2026-03-01T10:00", "opening_balance": "500"}
GOOD_PURCHASE = {"member": "M1", "ref": "P9", "amount": "10.00", "at": "2026-03-02T10:00"}
GOOD_RETURN = {"type": "return", **GOOD_PURCHASE, "ref": "R9", "original": "P1"}
GOOD_ADJUST = {
    "type": "adjust",
    "member": "M1",
    "ref": "A9",
    "points": "10",
    "reason": "goodwill",
    "at": "2026-03-02T10:00",
}
LOCAL_FUTURE = "2026-06-01T14:10"  # 12:10 UTC in Berlin's summer time: NOW + 10 minutes

MEMBER_ROWS: list[tuple[str, dict[str, str], int]] = [
    ("empty-member", {"member": ""}, INVALID),
    ("long-member", {"member": LONG_CODE}, INVALID),
    ("opening-negative", {"opening_balance": "-5"}, INVALID),
    ("opening-exponent", {"opening_balance": "1e3"}, INVALID),
    ("opening-nan", {"opening_balance": "NaN"}, INVALID),
    ("opening-decimal", {"opening_balance": "10.5"}, INVALID),
    ("opening-huge", {"opening_balance": str(10**12 + 1)}, INVALID),
    ("enrolled-future", {"enrolled_at": LOCAL_FUTURE}, INVALID),
    ("enrolled-before-1900", {"enrolled_at": "1899-12-31"}, INVALID),
    ("enrolled-after-2999", {"enrolled_at": "3000-01-01"}, INVALID),
    ("opening-expires-before-1900", {"opening_expires": "1899-12-31"}, INVALID),
    ("opening-expires-after-2999", {"opening_expires": "3000-01-01"}, INVALID),
    ("birthday-before-1900", {"birthday": "1899-12-31"}, INVALID),
    ("birthday-after-2999", {"birthday": "3000-01-01"}, INVALID),
]

TXN_ROWS: list[tuple[str, dict[str, str], int]] = [
    ("purchase-empty-ref", {**GOOD_PURCHASE, "ref": ""}, INVALID),
    ("purchase-long-ref", {**GOOD_PURCHASE, "ref": LONG_REF}, INVALID),
    ("purchase-long-member", {**GOOD_PURCHASE, "member": LONG_CODE}, INVALID),
    ("purchase-unknown-member", {**GOOD_PURCHASE, "member": "NOBODY"}, NOT_FOUND),
    ("purchase-negative", {**GOOD_PURCHASE, "amount": "-5.00"}, INVALID),
    ("purchase-zero", {**GOOD_PURCHASE, "amount": "0.00"}, INVALID),
    ("purchase-over-precise", {**GOOD_PURCHASE, "amount": "1.234"}, INVALID),
    ("purchase-nan", {**GOOD_PURCHASE, "amount": "NaN"}, INVALID),
    ("purchase-infinity", {**GOOD_PURCHASE, "amount": "Infinity"}, INVALID),
    ("purchase-huge", {**GOOD_PURCHASE, "amount": "1000000000.01"}, INVALID),
    ("purchase-future", {**GOOD_PURCHASE, "at": LOCAL_FUTURE}, INVALID),
    ("purchase-before-1900", {**GOOD_PURCHASE, "at": "1899-12-31T10:00"}, INVALID),
    ("purchase-after-2999", {**GOOD_PURCHASE, "at": "3000-01-01T10:00"}, INVALID),
    ("return-unknown-original", {**GOOD_RETURN, "original": "NOPE"}, NOT_FOUND),
    ("return-zero", {**GOOD_RETURN, "amount": "0"}, INVALID),
    ("return-over-precise", {**GOOD_RETURN, "amount": "0.001"}, INVALID),
    ("return-huge", {**GOOD_RETURN, "amount": "1000000000.01"}, INVALID),
    ("return-future", {**GOOD_RETURN, "at": LOCAL_FUTURE}, INVALID),
    ("adjust-zero", {**GOOD_ADJUST, "points": "0"}, INVALID),
    ("adjust-too-many", {**GOOD_ADJUST, "points": str(10**12 + 1)}, INVALID),
    ("adjust-too-few", {**GOOD_ADJUST, "points": str(-(10**12) - 1)}, INVALID),
    ("adjust-blank-reason", {**GOOD_ADJUST, "reason": ""}, INVALID),
    ("adjust-before-1900", {**GOOD_ADJUST, "at": "1899-12-31T10:00"}, INVALID),
    ("adjust-after-2999", {**GOOD_ADJUST, "at": "3000-01-01T10:00"}, INVALID),
]


def _source(fields: tuple[str, ...], values: dict[str, str]) -> SourceRow:
    row = [values.get(name, "").strip() for name in fields]
    return SourceRow(2, row, [values.get(name, "") for name in fields], None)


def _import_one(
    engine: Engine, importer_class: Any, fields: tuple[str, ...], values: dict[str, str]
) -> Any:
    with session_scope(engine) as session:
        ctx = load_context(session, "val")
        importer = importer_class(ctx, now=NOW, keeps_locks=True)
        return importer.apply(session, [_source(fields, values)])


def _check_rejected(engine: Engine, run: Callable[[], Any], code: int) -> None:
    before = snapshot(engine)
    error: BaseException | None = None
    result = None
    try:
        result = run()
    except Exception as exc:
        error = exc
    changes = written(before, snapshot(engine))
    reasons = [r.reason for r in result.rejected] if result is not None else []
    assert error is None, f"the import raised {error!r} instead of rejecting the row"
    assert len(reasons) == 1 and reasons[0].startswith(LABELS[code]), (
        f"expected the row rejected as {LABELS[code]!r}, got {reasons}; written: {changes}"
    )
    assert not changes


@pytest.mark.parametrize(
    ("values", "code"), [r[1:] for r in MEMBER_ROWS], ids=[r[0] for r in MEMBER_ROWS]
)
def test_member_import_rejects_bad_rows_and_writes_nothing(
    seeded: tuple[Engine, Seed], values: dict[str, str], code: int
) -> None:
    engine, _ = seeded
    row = {**GOOD_MEMBER, **values}
    _check_rejected(engine, lambda: _import_one(engine, MemberImporter, MEMBER_FIELDS, row), code)


@pytest.mark.parametrize(
    ("values", "code"), [r[1:] for r in TXN_ROWS], ids=[r[0] for r in TXN_ROWS]
)
def test_txn_import_rejects_bad_rows_and_writes_nothing(
    seeded: tuple[Engine, Seed], values: dict[str, str], code: int
) -> None:
    engine, _ = seeded
    _check_rejected(engine, lambda: _import_one(engine, TxnImporter, TXN_FIELDS, values), code)


def test_the_good_rows_and_calls_go_in(seeded: tuple[Engine, Seed]) -> None:
    """The baselines the cases above spoil one value of are accepted as they are."""
    engine, data = seeded
    for values, importer_class, fields in (
        (GOOD_MEMBER, MemberImporter, MEMBER_FIELDS),
        (GOOD_PURCHASE, TxnImporter, TXN_FIELDS),
        (GOOD_RETURN, TxnImporter, TXN_FIELDS),
        (GOOD_ADJUST, TxnImporter, TXN_FIELDS),
    ):
        result = _import_one(engine, importer_class, fields, values)
        assert result.applied == 1 and not result.rejected, result.rejected
    for call in (
        _purchase(ref="P10"),
        _return(ref="R10"),
        _adjust(ref="A10"),
        _enroll(code="M3"),
        _redeem(ref="V10"),
        _use(),
        _status(),
    ):
        with session_scope(engine) as session:
            call(session, load_context(session, "val"), data)
