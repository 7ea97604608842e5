"""The ledger laid out as Citus would shard it, on plain PostgreSQL: every member table
hash-partitioned by member, so that every unique key must include the member (Citus's
rule for a distributed table), and the keys that are unique across members kept in
tables of their own (see docs/scaling.md).

``partition(conn)`` converts a migrated database in place. Tests run scenarios on the
result (the ``postgresql-partitioned`` backend of tests/conftest.py) and
tests/test_partitioned.py checks the layout itself.
"""

from __future__ import annotations

import re

from sqlalchemy import Connection, text

PARTITIONS = 4

# Each member table and its distribution column: ``member`` is distributed by its own id,
# the others by ``member_id``, so a member and its rows land in the same partition
# (the same hash of the same integer, the same modulus): Citus's co-location.
DISTRIBUTED = {
    "member": "id",
    "txn": "member_id",
    "points_lot": "member_id",
    "points_entry": "member_id",
    "tier_change": "member_id",
    "voucher": "member_id",
}

# Tables whose rows every shard needs (Citus reference tables): foreign keys from the
# member tables to them may stay. Foreign keys to anything else (job_run, which stays on
# the coordinator) and into the member tables go.
REFERENCE = {"program", "program_version"}

# Keys unique across members: each becomes the primary key of a table of its own, which
# Citus distributes by that key; a trigger on the member table writes it in the same
# transaction, so a second row with the same key fails with a unique violation, as the
# unique index did. key table -> (member table, key columns)
KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "member_code": ("member", ("program_id", "code")),
    "txn_ref": ("txn", ("program_id", "ref")),
    "voucher_code": ("voucher", ("code",)),
    "voucher_use_ref": ("voucher", ("program_id", "use_ref")),
}


def _index_columns(definition: str) -> tuple[str, ...]:
    # The key's column list, not a partial index's WHERE (migration 0007 adds one).
    cols = re.search(r" USING \w+ \(([^)]*)\)", definition)
    assert cols is not None, definition
    return tuple(c.strip() for c in cols.group(1).split(","))


def _drop_foreign_keys(conn: Connection) -> None:
    rows = conn.execute(
        text(
            "SELECT c.conrelid::regclass::text, c.conname, c.confrelid::regclass::text "
            "FROM pg_constraint c WHERE c.contype = 'f'"
        )
    ).all()
    for table, name, target in rows:
        keep = table in DISTRIBUTED and target in REFERENCE
        touches = table in DISTRIBUTED or target in DISTRIBUTED
        if touches and not keep:
            conn.execute(text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))


def _convert(conn: Connection, table: str, column: str) -> None:
    """``table`` as a hash-partitioned table of the same name, columns, defaults, checks,
    rows and id sequence; primary key (id, member) and every unique index with the member
    added, except the keys of ``KEYS``, which move to their own tables."""
    indexes = conn.execute(
        text(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), i.indisunique "
            "FROM pg_index i WHERE i.indrelid = CAST(:t AS regclass) AND NOT i.indisprimary"
        ),
        {"t": table},
    ).all()
    seq = conn.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}).scalar_one()
    moved = {cols for key_table, cols in KEYS.values() if key_table == table}
    flat = f"{table}_flat"
    conn.execute(text(f"ALTER TABLE {table} RENAME TO {flat}"))
    conn.execute(text(f"ALTER TABLE {flat} RENAME CONSTRAINT pk_{table} TO pk_{flat}"))
    pk = "id" if column == "id" else f"id, {column}"
    conn.execute(
        text(
            f"CREATE TABLE {table} (LIKE {flat} INCLUDING DEFAULTS INCLUDING CONSTRAINTS, "
            f"CONSTRAINT pk_{table} PRIMARY KEY ({pk})) PARTITION BY HASH ({column})"
        )
    )
    for n in range(PARTITIONS):
        conn.execute(
            text(
                f"CREATE TABLE {table}_p{n} PARTITION OF {table} "
                f"FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER {n})"
            )
        )
    conn.execute(text(f"INSERT INTO {table} SELECT * FROM {flat}"))
    conn.execute(text(f"ALTER SEQUENCE {seq} OWNED BY {table}.id"))
    conn.execute(text(f"DROP TABLE {flat}"))
    for _name, definition, unique in indexes:
        cols = _index_columns(definition)
        if unique and cols in moved:
            continue
        if unique and column not in cols:
            listed = ", ".join(cols)
            definition = definition.replace(f"({listed})", f"({listed}, {column})")
        # The definitions name the table as it is called again now.
        conn.execute(text(definition.replace(f" ON public.{flat} ", f" ON public.{table} ")))


def _key_table(conn: Connection, name: str, table: str, cols: tuple[str, ...]) -> None:
    member = DISTRIBUTED[table]
    source = conn.execute(
        text(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = CAST(:t AS regclass) AND attname = ANY(:c)"
        ),
        {"t": table, "c": list(cols)},
    ).all()
    types = dict(source)
    defs = ", ".join(f"{c} {types[c]} NOT NULL" for c in cols)
    # Distributed by the key itself (its last column: the reference or the code).
    conn.execute(
        text(
            f"CREATE TABLE {name} ({defs}, member_id integer NOT NULL, "
            f"CONSTRAINT pk_{name} PRIMARY KEY ({', '.join(cols)})) "
            f"PARTITION BY HASH ({cols[-1]})"
        )
    )
    for n in range(PARTITIONS):
        conn.execute(
            text(
                f"CREATE TABLE {name}_p{n} PARTITION OF {name} "
                f"FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER {n})"
            )
        )
    present = " AND ".join(f"{c} IS NOT NULL" for c in cols)
    col_list = ", ".join(cols)
    old_match = " AND ".join(f"{c} = OLD.{c}" for c in cols)
    old_present = " AND ".join(f"OLD.{c} IS NOT NULL" for c in cols)
    new_present = " AND ".join(f"NEW.{c} IS NOT NULL" for c in cols)
    new_values = ", ".join(f"NEW.{c}" for c in cols)
    # A row that moves to another member (a merge's live vouchers) is deleted and
    # inserted again, so both are handled; an UPDATE in place that changes the key (a
    # voucher's use reference, set once) replaces the key row.
    conn.execute(
        text(
            f"CREATE FUNCTION {name}_keep() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            "  IF TG_OP IN ('DELETE', 'UPDATE') THEN\n"
            f"    IF {old_present} THEN DELETE FROM {name} WHERE {old_match}; END IF;\n"
            "  END IF;\n"
            "  IF TG_OP IN ('INSERT', 'UPDATE') THEN\n"
            f"    IF {new_present} THEN\n"
            f"      INSERT INTO {name} ({col_list}, member_id) "
            f"VALUES ({new_values}, NEW.{member});\n"
            "    END IF;\n"
            "  END IF;\n"
            "  RETURN NULL;\n"
            "END $$"
        )
    )
    conn.execute(
        text(
            f"CREATE TRIGGER {name}_keep AFTER INSERT OR DELETE OR UPDATE OF {col_list}, "
            f"{member} ON {table} FOR EACH ROW EXECUTE FUNCTION {name}_keep()"
        )
    )
    conn.execute(
        text(
            f"INSERT INTO {name} ({col_list}, member_id) "
            f"SELECT {col_list}, {member} FROM {table} WHERE {present}"
        )
    )


def _fixed_distribution_column(conn: Connection, table: str, column: str) -> None:
    """Refuse an UPDATE that changes ``column``, as Citus refuses to change a distributed
    table's distribution column (PostgreSQL would move the row to another partition): the
    tool moves a row to another member by deleting and inserting it."""
    conn.execute(
        text(
            f"CREATE TRIGGER {table}_fixed_{column} BEFORE UPDATE OF {column} ON {table} "
            f"FOR EACH ROW WHEN (NEW.{column} IS DISTINCT FROM OLD.{column}) "
            "EXECUTE FUNCTION refuse_new_distribution()"
        )
    )


def partition(conn: Connection) -> None:
    """Convert the migrated database of ``conn`` (in its transaction)."""
    _drop_foreign_keys(conn)
    conn.execute(
        text(
            "CREATE FUNCTION refuse_new_distribution() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            "  RAISE EXCEPTION 'the distribution column of % cannot change', TG_TABLE_NAME;\n"
            "END $$"
        )
    )
    for table, column in DISTRIBUTED.items():
        _convert(conn, table, column)
        _fixed_distribution_column(conn, table, column)
    for name, (table, cols) in KEYS.items():
        _key_table(conn, name, table, cols)


def strays(conn: Connection) -> list[str]:
    """What breaks the layout's promises: a row outside its member's partition (the
    partitions of one number are co-located), a key row without its member row or the
    other way round."""
    found: list[str] = []
    for table, column in DISTRIBUTED.items():
        if table == "member":
            continue
        # Partition n of every table holds the same members: compare the suffixes.
        n = conn.execute(
            text(
                f"SELECT COUNT(*) FROM {table} t JOIN member m ON m.id = t.{column} "
                "WHERE right(t.tableoid::regclass::text, 3) "
                "<> right(m.tableoid::regclass::text, 3)"
            )
        ).scalar_one()
        if n:
            found.append(f"{n} rows of {table} outside their member's partition")
    # A row that names a transaction or a lot names one of its own member: joins by those
    # ids can include the member (co-located joins on Citus).
    for table, ref, target in (
        ("points_entry", "txn_id", "txn"),
        ("points_entry", "lot_id", "points_lot"),
        ("points_lot", "txn_id", "txn"),
        ("tier_change", "txn_id", "txn"),
        ("voucher", "txn_id", "txn"),
        ("voucher", "cancel_txn_id", "txn"),
        # A return undoes its member's purchase (a transfer's or a merge's two halves
        # name each other across members: a link, never joined on).
        ("txn", "original_id", "txn"),
    ):
        only = " AND t.kind = 'return'" if table == "txn" else ""
        n = conn.execute(
            text(
                f"SELECT COUNT(*) FROM {table} t JOIN {target} o ON o.id = t.{ref} "
                f"WHERE o.member_id <> t.member_id{only}"
            )
        ).scalar_one()
        if n:
            found.append(f"{n} rows of {table} name a {target} row of another member")
    for key_table, (table, cols) in KEYS.items():
        on = " AND ".join(f"k.{c} = t.{c}" for c in cols)
        n = conn.execute(
            text(
                f"SELECT COUNT(*) FROM {key_table} k FULL JOIN "
                f"(SELECT * FROM {table} WHERE {cols[-1]} IS NOT NULL) t "
                f"ON {on} AND k.member_id = t.{DISTRIBUTED[table]} "
                "WHERE k.member_id IS NULL OR t.id IS NULL"
            )
        ).scalar_one()
        if n:
            found.append(f"{n} rows of {key_table} and {table} without each other")
    return found
