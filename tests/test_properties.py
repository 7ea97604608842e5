"""Properties of the ledger for random histories (hypothesis), through the services."""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func
from sqlmodel import select

from loyaltyctl.errors import NotAllowed
from loyaltyctl.rules.earning import Line, line_factors, points_with, purchase_points
from loyaltyctl.rules.timeutil import LocalTimes, local_date, parse_when
from loyaltyctl.services.check import check_database
from loyaltyctl.services.context import load_context
from loyaltyctl.services.imports.reading import csv_records
from loyaltyctl.services.ledger import find_member
from loyaltyctl.services.members import enroll
from loyaltyctl.services.program_files import load_program_file
from loyaltyctl.services.programs import load_program
from loyaltyctl.services.txns import post_adjustment, post_purchase, post_return
from loyaltyctl.store.db import session_scope
from loyaltyctl.store.models import PointsEntry, PointsLot, Txn
from tests.conftest import PROGRAMS

START = datetime(2026, 1, 5, 12, tzinfo=UTC)
_members = itertools.count()

amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("500"), places=2)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("purchase"), amounts, st.sampled_from([None, "coffee-beans", "tobacco"])),
        st.tuples(st.just("return"), st.integers(0, 20), st.integers(1, 100)),
        st.tuples(st.just("adjust"), st.integers(-600, 600).filter(bool), st.none()),
        st.tuples(st.just("retry"), st.integers(0, 40), st.none()),
    ),
    min_size=1,
    max_size=25,
)


def _balance(engine: Engine, code: str) -> int:
    with session_scope(engine, write=False) as session:
        ctx = load_context(session, "deli")
        return find_member(session, ctx.id, code).balance


def _apply(engine: Engine, code: str, op: tuple, n: int, done: list, purchases: list) -> None:
    kind, a, b = op
    at = START + timedelta(hours=n)
    with session_scope(engine) as session:
        ctx = load_context(session, "deli")
        if kind == "purchase":
            ref = f"{code}-P{n}"
            post_purchase(session, ctx, code, ref=ref, lines=[Line(b, a)], at=at, now=at)
            purchases.append((ref, a))
            done.append(("purchase", ref, [Line(b, a)], at))
        elif kind == "return" and purchases:
            ref, amount = purchases[a % len(purchases)]
            left = amount - _returned(session, ref)
            part = (left * b / 100).quantize(Decimal("0.01"))
            if part <= 0:
                return
            post_return(
                session,
                ctx,
                code,
                ref=f"{code}-R{n}",
                original_ref=ref,
                amount=part,
                at=at,
                now=at,
            )
            done.append(("return", f"{code}-R{n}", (ref, part), at))
        elif kind == "adjust":
            post_adjustment(
                session, ctx, code, ref=f"{code}-A{n}", points=a, reason="test", at=at, now=at
            )
            done.append(("adjust", f"{code}-A{n}", a, at))


def _returned(session: object, ref: str) -> Decimal:
    from sqlmodel import Session

    assert isinstance(session, Session)
    original = session.exec(select(Txn).where(Txn.ref == ref)).one()
    total = session.exec(
        select(func.coalesce(func.sum(Txn.amount_minor), 0)).where(Txn.original_id == original.id)
    ).one()
    return Decimal(int(total)) / 100


def _retry(engine: Engine, code: str, item: tuple) -> None:
    kind, ref, data, at = item
    later = at + timedelta(days=1)
    with session_scope(engine) as session:
        ctx = load_context(session, "deli")
        if kind == "purchase":
            result = post_purchase(session, ctx, code, ref=ref, lines=data, at=at, now=later)
        elif kind == "return":
            result = post_return(
                session,
                ctx,
                code,
                ref=ref,
                original_ref=data[0],
                amount=data[1],
                at=None,
                now=later,
            )
        else:
            result = post_adjustment(
                session, ctx, code, ref=ref, points=data, reason="test", at=None, now=later
            )
        assert result.duplicate


def _assert_invariants(engine: Engine) -> None:
    with session_scope(engine, write=False) as session:
        result = check_database(session)
        assert result.ok, result.problems
        assert session.exec(select(func.count()).where(PointsLot.remaining < 0)).one() == 0


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
def test_random_histories_keep_the_ledger_exact(engine: Engine, ops: list) -> None:
    with session_scope(engine) as session:
        load_program(session, PROGRAMS / "deli.toml", now=START)
    code = f"H{next(_members)}"
    with session_scope(engine) as session:
        ctx = load_context(session, "deli")
        enroll(session, ctx, code, at=START, now=START)
    done: list = []
    purchases: list = []
    for n, op in enumerate(ops, start=1):
        if op[0] == "retry":
            if done:
                before = _balance(engine, code)
                _retry(engine, code, done[op[1] % len(done)])
                assert _balance(engine, code) == before
            continue
        try:
            _apply(engine, code, op, n, done, purchases)
        except NotAllowed:
            pass
        _assert_invariants(engine)
    # Returning what is left of every purchase claws back exactly what it earned.
    for i, (ref, amount) in enumerate(purchases):
        at = START + timedelta(days=30, hours=i)
        with session_scope(engine) as session:
            ctx = load_context(session, "deli")
            left = amount - _returned(session, ref)
            if left > 0:
                post_return(
                    session,
                    ctx,
                    code,
                    ref=f"{ref}-full",
                    original_ref=ref,
                    amount=left,
                    at=at,
                    now=at,
                )
    with session_scope(engine, write=False) as session:
        for ref, _ in purchases:
            original = session.exec(select(Txn).where(Txn.ref == ref)).one()
            clawed = session.exec(
                select(func.coalesce(func.sum(PointsEntry.points), 0))
                .join(Txn, Txn.id == PointsEntry.txn_id)
                .where(Txn.original_id == original.id)
            ).one()
            assert -clawed == original.points
    _assert_invariants(engine)


@settings(max_examples=300, deadline=None)
@given(
    program=st.sampled_from(sorted(PROGRAMS.glob("*.toml"))),
    cents=st.integers(min_value=0, max_value=10**9),
    category=st.sampled_from(
        [None, "beans", "merch", "gift-cards", "pastry", "electronics", "taxes-and-fees"]
        + ["tobacco", "business", "coffee-beans", "organic", "own-brand", "partner-hotel", "x"]
    ),
    day=st.dates(min_value=date(2025, 1, 1), max_value=date(2028, 12, 31)),
    tier_pick=st.integers(min_value=0, max_value=10),
)
def test_cached_line_factors_earn_what_purchase_points_earns(
    program: Path, cents: int, category: str | None, day: date, tier_pick: int
) -> None:
    """The import's per-(category, tier, day) factors give every one-line purchase the
    points and eligible spend of the rule the commands use."""
    spec, _source = load_program_file(program)
    tiers = spec.tier_keys()
    tier = tiers[tier_pick % len(tiers)]
    amount = Decimal(cents).scaleb(-spec.program.minor_digits)
    expected = purchase_points(spec, [Line(category, amount)], tier, day)
    factors = line_factors(spec, category, tier, day)
    if factors is None:
        assert (expected.points, expected.eligible_spend) == (0, 0)
    else:
        assert points_with(amount, factors, spec.earn.rounding) == expected.points
        assert expected.eligible_spend == amount


ZONES = [
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",  # moves its clocks by 30 minutes
    "Pacific/Apia",  # skipped a whole day in 2011
    "America/St_Johns",
    "Asia/Kolkata",
    "UTC",
]


@settings(max_examples=500, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    moment=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 12, 31)),
    sep=st.sampled_from(["T", " "]),
    spec=st.sampled_from(["seconds", "minutes", "microseconds"]),
)
def test_local_times_read_as_parse_when_reads_them(
    zone: str, moment: datetime, sep: str, spec: str
) -> None:
    """The import's per-hour offsets give every local time the UTC time and local day
    that parse_when and local_date give, or step aside (times the clocks skip or repeat
    included)."""
    tz = ZoneInfo(zone)
    clock = LocalTimes(tz)
    text = moment.isoformat(sep, spec)
    for probe in (moment.replace(minute=0, second=0, microsecond=0).isoformat(sep), text):
        found = clock.parse(probe)  # the first one fills the hour's cache
    expected = parse_when(text, tz)
    if found is not None:
        assert found == (expected, local_date(expected, tz))
    else:
        # Stepping aside is right only when the offset changes somewhere in the hour
        # (Lord Howe's clocks move by 30 minutes, so the repeat may start mid-hour).
        assert any(
            tz.utcoffset(moment.replace(minute=m, fold=f)) != tz.utcoffset(moment)
            for m in (0, 59)
            for f in (0, 1)
        ) or tz.utcoffset(moment) != tz.utcoffset(moment.replace(fold=1))


def test_local_times_step_aside_around_clock_changes() -> None:
    clock = LocalTimes(ZoneInfo("America/New_York"))
    assert clock.parse("2026-03-08T02:30:00") is None  # skipped
    assert clock.parse("2026-11-01T01:30:00") is None  # repeated
    assert clock.parse("2026-11-01T01:30:00-04:00") is None  # an offset: parse_when reads it
    assert clock.parse("2026-11-01") is None
    assert clock.parse("not a time at all") is None
    when, day = clock.parse("2026-11-01T02:30:00") or (None, None)
    assert when == datetime(2026, 11, 1, 7, 30, tzinfo=UTC) and day == date(2026, 11, 1)


def _records(read: Callable[[io.StringIO], Iterator[tuple[int, list[str]]]], text: str) -> list:
    out: list = []
    try:
        for start, fields in read(io.StringIO(text, newline="")):
            out.append((start, fields))
    except csv.Error:
        out.append("error")
    return out


def _reference_records(fh: io.StringIO) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(fh)
    end = 0
    for fields in reader:
        start, end = end + 1, reader.line_num
        yield start, fields


@settings(max_examples=500, deadline=None)
@given(text=st.text(alphabet='ab ,"\n\r\x00é', max_size=60))
def test_csv_records_read_as_csv_reader_does(text: str) -> None:
    """The import's CSV reader (commas split directly on lines without quotes) gives the
    records and start lines of csv.reader, quoted fields over several lines included."""
    assert _records(csv_records, text) == _records(_reference_records, text)
