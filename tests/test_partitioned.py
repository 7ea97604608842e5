"""The ledger is shardable by member: on a PostgreSQL database whose member tables are
hash-partitioned by member (tests/partitioned.py, the layout of docs/scaling.md), every
unique key includes the member, the keys unique across members hold through tables of
their own, and a day's work through the CLI keeps every member's rows in its partition
and passes ``db check``. Scenario tests of the other modules run on this
layout as well: the tests marked ``partitioned``."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError

from tests.conftest import Cli, write_program
from tests.partitioned import DISTRIBUTED, KEYS, PARTITIONS, REFERENCE, strays

pytestmark = pytest.mark.partitioned(only=True)

PROGRAM = """
[program]
key = "shop"
name = "Shop"
currency = "USD"
timezone = "UTC"

[earn]
per_unit = 10

[expiry]
policy = "rolling"
months = 6
month_end = false

[tiers]
metric = "points"
window = "rolling-12-months"
hold_months = 12

[[tiers.levels]]
key = "bronze"
min = 0
multiplier = 1.0

[[tiers.levels]]
key = "gold"
min = 1000
multiplier = 2.0

[[rewards]]
key = "mug"
name = "Mug"
cost = 200
valid_days = 3650
"""


def _partitions_of(conn: Connection, table: str) -> int:
    return int(
        conn.execute(
            text("SELECT COUNT(*) FROM pg_inherits WHERE inhparent = CAST(:t AS regclass)"),
            {"t": table},
        ).scalar_one()
    )


def test_every_unique_key_of_a_member_table_includes_the_member(engine: Engine) -> None:
    with engine.connect() as conn:
        for table, column in DISTRIBUTED.items():
            assert _partitions_of(conn, table) == PARTITIONS, table
            keys = conn.execute(
                text(
                    "SELECT pg_get_indexdef(indexrelid), "
                    "ARRAY(SELECT attname FROM pg_attribute WHERE attrelid = indrelid "
                    "AND attnum = ANY(indkey)) FROM pg_index "
                    "WHERE indrelid = CAST(:t AS regclass) AND indisunique"
                ),
                {"t": table},
            ).all()
            assert keys, table
            for definition, columns in keys:
                assert column in columns, definition
        # Each key unique across members is the primary key of its own table, which is
        # distributed (partitioned) by that key.
        for key_table, (_table, cols) in KEYS.items():
            assert _partitions_of(conn, key_table) == PARTITIONS
            pk = conn.execute(
                text(
                    "SELECT ARRAY(SELECT attname FROM pg_attribute WHERE attrelid = indrelid "
                    "AND attnum = ANY(indkey)) FROM pg_index "
                    "WHERE indrelid = CAST(:t AS regclass) AND indisprimary"
                ),
                {"t": key_table},
            ).scalar_one()
            assert sorted(pk) == sorted(cols)
        # Foreign keys only from member tables to reference tables.
        fks = conn.execute(
            text(
                "SELECT conrelid::regclass::text, confrelid::regclass::text "
                "FROM pg_constraint WHERE contype = 'f'"
            )
        ).all()
        for source, target in fks:
            assert target not in DISTRIBUTED, (source, target)
            if source in DISTRIBUTED:
                assert target in REFERENCE, (source, target)


def _copy_row(conn: Connection, table: str, where: str, **changes: Any) -> None:
    """Insert a copy of one row of ``table`` with ``changes``: a writer that skipped the
    application's read checks."""
    columns = (
        conn.execute(
            text(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = :t AND column_name <> 'id' ORDER BY ordinal_position"
            ),
            {"t": table},
        )
        .scalars()
        .all()
    )
    select = ", ".join(f":{c}" if c in changes else c for c in columns)
    conn.execute(
        text(
            f"INSERT INTO {table} ({', '.join(columns)}) SELECT {select} FROM {table} WHERE {where}"
        ),
        changes,
    )


def _ids(conn: Connection, *codes: str) -> list[int]:
    return [
        int(conn.execute(text("SELECT id FROM member WHERE code = :c"), {"c": c}).scalar_one())
        for c in codes
    ]


def _two_members_with_a_voucher(cli: Cli, tmp_path: Path) -> str:
    cli("program", "load", str(write_program(tmp_path, PROGRAM)))
    for code in ("A", "B"):
        cli("member", "enroll", code)
    cli("txn", "post", "A", "--ref", "R1", "--amount", "30.00")
    voucher: str = cli.json("reward", "redeem", "A", "mug", "--ref", "RD1")["voucher"]
    cli("reward", "use", voucher, "--ref", "USE1")
    return voucher


@pytest.mark.parametrize(
    ("table", "where", "changes"),
    [
        ("txn", "ref = 'R1'", {}),
        ("member", "code = 'A'", {"id": None}),
        ("voucher", "use_ref = 'USE1'", {"txn_id": -1, "use_ref": None}),
        ("voucher", "use_ref = 'USE1'", {"txn_id": -1, "code": "OTHERCODE"}),
    ],
    ids=["txn-ref", "member-code", "voucher-code", "voucher-use-ref"],
)
def test_a_key_unique_across_members_is_refused_for_another_member(
    cli: Cli, engine: Engine, tmp_path: Path, table: str, where: str, changes: dict[str, Any]
) -> None:
    """The same reference (member code, voucher code, voucher use) for another member:
    the database refuses it, as the unique index of the flat table did."""
    _two_members_with_a_voucher(cli, tmp_path)
    with engine.connect() as conn:
        a, b = _ids(conn, "A", "B")
        # Another member: B, or for a member row a new id (B's partition or not).
        values = {k: v for k, v in changes.items() if k != "id"}
        if table == "member":
            values["code"] = "A"
        else:
            values["member_id"] = b
        with pytest.raises(IntegrityError):
            _copy_row(conn, table, where, **values)
        conn.rollback()
        # The same row with a fresh key is taken: the refusal was the key's.
        fresh = dict(values)
        fresh.update({"txn": {"ref": "R2"}, "member": {"code": "C"}}.get(table, {}))
        if table == "voucher":
            fresh.update(code="FRESHCODE", use_ref="USE2")
        _copy_row(conn, table, where, **fresh)
        assert a != b
        conn.rollback()
    cli.check()


def test_two_writers_of_one_reference_for_two_members_one_wins(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    """Both insert the same new reference for different members (different partitions
    or not): the second waits for the first's key row and fails when it commits."""
    _two_members_with_a_voucher(cli, tmp_path)
    with engine.connect() as first, engine.connect() as second:
        a, b = _ids(first, "A", "B")
        first.rollback()
        _copy_row(first, "txn", "ref = 'R1'", ref="SAME", member_id=a)
        failed: list[BaseException] = []

        def other() -> None:
            try:
                _copy_row(second, "txn", "ref = 'R1'", ref="SAME", member_id=b)
                second.commit()
            except IntegrityError as exc:
                failed.append(exc)
                second.rollback()

        racer = threading.Thread(target=other)
        racer.start()
        racer.join(0.5)
        assert racer.is_alive()  # waiting on the first writer's uncommitted key
        first.commit()
        racer.join(10)
        assert not racer.is_alive() and len(failed) == 1
    with engine.connect() as conn:
        owners = conn.execute(
            text("SELECT member_id FROM txn WHERE ref = 'SAME' UNION ALL "
                 "SELECT member_id FROM txn_ref WHERE ref = 'SAME'")
        ).scalars().all()  # fmt: skip
        assert owners == [a, a]


def test_a_day_of_work_keeps_each_member_in_its_partition(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    """Enrolments, purchases, a return, a redemption used at the till, a transfer, a
    merge that moves a live voucher to another member's partition, the nightly jobs:
    every row stays with its member, the key tables with their rows, and db check
    passes."""
    with freeze_time("2025-01-01T12:00:00Z"):
        cli("program", "load", str(write_program(tmp_path, PROGRAM)))
        codes = [f"M{i}" for i in range(8)]
        for code in codes:
            cli("member", "enroll", code)
        for i, code in enumerate(codes):
            cli("txn", "post", code, "--ref", f"P{i}", "--amount", f"{20 + 10 * i}.00")
        cli("txn", "return", "M1", "--ref", "RET1", "--original", "P1", "--amount", "10.00")
        used = cli.json("reward", "redeem", "M2", "mug", "--ref", "RD2")["voucher"]
        cli("reward", "use", used, "--ref", "TILL-1")
        cli("reward", "use", used, "--ref", "TILL-1")  # a retry, recognised
        cli("txn", "transfer", "M3", "M4", "--points", "100", "--ref", "TR1")
    with engine.connect() as conn:
        part = dict(conn.execute(text("SELECT code, tableoid::regclass::text FROM member")).all())
    # A live voucher of a member in another partition than the target's moves with it.
    source = next(c for c in codes[5:] if part[c][-1] != part["M0"][-1])
    with freeze_time("2025-01-02T12:00:00Z"):
        moved = cli.json("reward", "redeem", source, "mug", "--ref", "RD9")["voucher"]
        out = cli.json("member", "merge", source, "M0", "--ref", "MG1")
        assert out["points_moved"] > 0
        cancelled = cli.json("reward", "cancel", moved)
        assert cancelled["member"] == "M0"
    with freeze_time("2025-09-01T12:00:00Z"):
        cli("nightly")
    cli.check()
    with engine.connect() as conn:
        for table in DISTRIBUTED:
            assert conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one() > 0, table
        for key_table in KEYS:
            assert conn.execute(text(f"SELECT COUNT(*) FROM {key_table}")).scalar_one() > 0
        assert strays(conn) == []
        assert conn.execute(
            text("SELECT m.code FROM voucher v JOIN member m ON m.id = v.member_id "
                 "WHERE v.code = :c"), {"c": moved}
        ).scalar_one() == "M0"  # fmt: skip
