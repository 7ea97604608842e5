"""A corpus of bad input: every case gets its exit code, one ``error:`` line (never
"internal error", never a traceback) and leaves the database exactly as it was, on
SQLite and PostgreSQL. Random amounts, times and import rows never find an exit 1."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select, text
from typer.testing import CliRunner

from loyaltyctl.cli.main import app
from loyaltyctl.store.models import metadata
from tests.conftest import PROGRAMS

# ---- the database every case runs against -------------------------------------------------


@dataclass
class Corpus:
    url: str
    tmp: Path
    runner: CliRunner = field(default_factory=CliRunner)

    def run(self, *args: str, env: dict[str, str] | None = None, db: str | None = None) -> Any:
        return self.runner.invoke(
            app, ["--db", db or self.url, *args], env=env, catch_exceptions=False
        )

    def digest(self) -> str:
        """Every row of every table, in key order."""
        engine = create_engine(self.url)
        try:
            h = hashlib.sha256()
            with engine.connect() as conn:
                h.update(repr(conn.execute(text("SELECT * FROM alembic_version")).all()).encode())
                for table in metadata.sorted_tables:
                    order = list(table.primary_key.columns) or list(table.columns)
                    for row in conn.execute(select(table).order_by(*order)):
                        h.update(repr(tuple(row)).encode())
            return h.hexdigest()
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def corpus(backend: str, request: pytest.FixtureRequest, tmp_path_factory: Any) -> Iterator[Corpus]:
    tmp = tmp_path_factory.mktemp("corpus")
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copy(template, tmp / "corpus.db")
        url = f"sqlite:///{tmp / 'corpus.db'}"
        drop = None
    else:
        cluster = request.getfixturevalue("pg_cluster")
        name = f"corpus_{os.getpid()}"
        admin = create_engine(cluster.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name} TEMPLATE loyaltyctl_template"))
        url = cluster.url(name)
        drop = (admin, name)
    c = Corpus(url, tmp)
    env = {"LOYALTYCTL_BUSY_TIMEOUT": "10", "NO_COLOR": "1"}
    for args in (
        ["program", "load", str(PROGRAMS / "deli.toml")],
        ["member", "enroll", "M1", "--at", "2026-01-01"],
        ["txn", "post", "M1", "--ref", "P1", "--amount", "20.00", "--at", "2026-01-02"],
        ["txn", "adjust", "M1", "--ref", "A1", "--points", "200", "--reason", "start"],
        ["member", "enroll", "M2", "--at", "2026-01-01"],
        ["member", "close", "M2"],
    ):
        result = c.run(*args, env=env)
        assert result.exit_code == 0, (args, result.stderr)
    voucher = c.run("reward", "redeem", "M1", "cookie", "--json", env=env)
    assert voucher.exit_code == 0, voucher.stderr
    c.run("reward", "use", voucher.stdout.split('"voucher": "')[1].split('"')[0], env=env)
    yield c
    if drop is not None:
        admin, name = drop
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


# ---- the cases ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """``args`` (``{tmp}`` is the case's folder; ``files`` are written there first)."""

    id: str
    args: tuple[str, ...]
    code: int
    words: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    files: tuple[tuple[str, bytes], ...] = ()
    db: str | None = None


CASES: list[Case] = []


def case(id_: str, args: list[str], code: int = 4, *words: str, **kw: Any) -> None:
    CASES.append(Case(id_, tuple(args), code, tuple(words), **kw))


BAD_AMOUNTS = [
    "", " ", "-1", "-0.01", "1e3", "1E3", "NaN", "nan", "inf", "-inf", "Infinity", "1.001",
    "0.001", "0x10", "１２", "١٢", "1,000", "1 000", "12.5.0", "abc", "$5", "5$", "+-1",
    "1e-2", "1000000000.01", "99999999999999999999999", "0", "0.00", "--1", "1/2", "½",
    "12,50", "1_000", "\x00", "1\x00", "5 USD", "٣.٥",
]  # fmt: skip
for n, value in enumerate(BAD_AMOUNTS):
    case(f"amount-{n}", ["txn", "post", "M1", "--ref", f"BAD-A{n}", "--amount", value])
    case(f"line-{n}", ["txn", "post", "M1", "--ref", f"BAD-L{n}", "--line", f"beans={value}"])

BAD_TIMES = [
    "2026-13-01", "2026-02-30", "2026-00-10", "1899-12-31", "3000-01-01", "9999-12-31T23:59",
    "0001-01-01", "tomorrow", "now", "yesterday", "2026-01-01T25:00", "2026-01-01T12:61",
    "2026-01-01T12:00+25:00", "２０２６-01-01", "2099-01-01", "2030-06-01T00:00Z",
    "2026/01/01", "01/02/2026", "1700000000", "2026-01-01T12:00:00+14:01",
    "\x00", "2026-01-01\x00",
]  # fmt: skip
for n, value in enumerate(BAD_TIMES):
    case(f"at-{n}", ["txn", "post", "M1", "--ref", f"BAD-T{n}", "--amount", "1", "--at", value])
    case(f"as-of-{n}", ["expire", "--as-of", value])
case("at-empty", ["txn", "post", "M1", "--ref", "BAD-TE", "--amount", "1", "--at", ""])

BAD_MEMBERS = ["", " ", "M" * 129, "a\x00b", "a\tb", "a\nb", "\x7f", "M\udcff", "\x1b[31m"]
for n, value in enumerate(BAD_MEMBERS):
    case(f"member-enroll-{n}", ["member", "enroll", value])
    case(f"member-post-{n}", ["txn", "post", value, "--ref", f"BAD-M{n}", "--amount", "1"])
BAD_REFS = ["", "  ", "R" * 201, "r\x00", "r\nx", "R\udcff"]
for n, value in enumerate(BAD_REFS):
    case(f"ref-{n}", ["txn", "post", "M1", "--ref", value, "--amount", "1"])
    case(f"ref-adjust-{n}", ["txn", "adjust", "M1", "--ref", value, "--points", "1",
                             "--reason", "x"])  # fmt: skip
# Not whole numbers: Typer refuses them as a usage error (exit 2); whole numbers out of
# range are invalid input (exit 4).
BAD_POINTS = [("1.5", 2), ("1e3", 2), ("abc", 2), ("", 2), ("０", 2), ("0", 4),
              ("1000000000001", 4), ("-1000000000001", 4), ("99999999999999999999999", 4),
              ("1,000", 2), ("+-5", 2), ("٣", 2)]  # fmt: skip
for n, (value, code) in enumerate(BAD_POINTS):
    case(f"points-{n}", ["txn", "adjust", "M1", "--ref", f"BAD-P{n}", "--points", value,
                         "--reason", "x"], code)  # fmt: skip

# Not found, not allowed, conflicts: refused and nothing written.
case("unknown-member", ["txn", "post", "NOPE", "--ref", "BAD-N1", "--amount", "1"], 3)
case("closed-member", ["txn", "post", "M2", "--ref", "BAD-N2", "--amount", "1"], 6)
case("ref-conflict", ["txn", "post", "M1", "--ref", "P1", "--amount", "21.00",
                      "--at", "2026-01-02"], 5)  # fmt: skip
case("return-too-much", ["txn", "return", "M1", "--ref", "BAD-R1", "--original", "P1",
                         "--amount", "20.01"])  # fmt: skip
case("return-unknown", ["txn", "return", "M1", "--ref", "BAD-R2", "--original", "NOPE",
                        "--amount", "1"], 3)  # fmt: skip
case("redeem-unknown", ["reward", "redeem", "M1", "nope"], 3)
case("redeem-too-few", ["reward", "redeem", "M1", "sandwich"], 6)
case("voucher-unknown", ["reward", "use", "NOPE"], 3)
case("program-unknown", ["member", "list", "--program", "nope"], 3)
case("program-long", ["member", "list", "--program", "p" * 65])
case("tier-unknown", ["member", "list", "--tier", "x" * 1000], 4, "unknown tier")
case("birthday", ["member", "enroll", "M9", "--birthday", "2026-02-30"])
case("birthday-future", ["member", "enroll", "M9", "--birthday", "3000-01-01"])
case("enroll-future", ["member", "enroll", "M9", "--at", "2099-01-01"])
case("statement-dates", ["statement", "M1", "--from", "2026-02-01", "--to", "2026-01-01"])
case("statement-bad-date", ["statement", "M1", "--from", "2026-02-30", "--to", "2026-03-01"])
case("within", ["expire", "notices", "--within", "99999999999d"])
case("within-bad", ["expire", "notices", "--within", "soon"])
for n, (option, value) in enumerate(
    [
        ("--limit", "99999999999999999999999"),
        ("--limit", "0"),
        ("--page", "9223372036854775808"),
        ("--page", "-1"),
        ("--limit", "1e3"),
    ]  # fmt: skip
):
    case(f"paging-{n}", ["member", "list", option, value], 2, "Invalid value")
case("txn-list-limit", ["txn", "list", "M1", "--limit", "18446744073709551616"], 2)
case("voucher-list-limit", ["voucher", "list", "--limit", "18446744073709551617"], 2)

# Environment values.
for n, value in enumerate(["nan", "inf", "-inf", "-1", "abc", "1e400", "86401", " "]):
    case(f"busy-{n}", ["member", "list"], 4, "LOYALTYCTL_BUSY_TIMEOUT",
         env=(("LOYALTYCTL_BUSY_TIMEOUT", value),))  # fmt: skip
for n, value in enumerate(["0", "-5", "abc", "1.5", "٣"]):
    case(f"batch-{n}", ["txn", "import", "{tmp}/t.csv"], 4, "LOYALTYCTL_IMPORT_BATCH_ROWS",
         env=(("LOYALTYCTL_IMPORT_BATCH_ROWS", value),),
         files=(("t.csv", b"member,ref,amount\nM1,BAD-B,1\n"),))  # fmt: skip
    case(f"expire-batch-{n}", ["expire"], 4, "LOYALTYCTL_EXPIRE_BATCH",
         env=(("LOYALTYCTL_EXPIRE_BATCH", value),))  # fmt: skip

# Database URLs and paths: exit 10, and the corpus database untouched.
for n, url in enumerate(
    [
        "{tmp}",
        "{tmp}/missing.db",
        "{tmp}/no/dir/x.db",
        "{tmp}/notes.db",
        "postgresql+psycopg://u@127.0.0.1:1/db",
        "postgresql://u@nohost.invalid/db",
        "postgresql+psycopg://u@h:99999/db",
        "postgresql+psycopg://u@h:port/db",
        "mysql://u@h/db",
        "sqlite+pysqlite:///{tmp}/missing.db",
        "postgresql+psycopg://u@h",
        "postgres+x://a/b",
    ]  # fmt: skip
):
    case(f"url-{n}", ["member", "list"], 10, db=url, files=(("notes.db", b"not sqlite\n"),))

# Output paths.
for n, out in enumerate(["{tmp}", "{tmp}/no/dir/out.csv"]):
    case(f"out-export-{n}", ["export", "members", "--out", out, "--format", "csv"])
    case(f"out-notices-{n}", ["expire", "notices", "--out", out])
    case(f"out-statement-{n}", ["statement", "M1", "--from", "2026-01-01", "--to", "2026-01-31",
                                "--format", "json", "--out", out])  # fmt: skip
    case(f"out-rejects-{n}", ["txn", "import", "{tmp}/t.csv", "--rejects", out],
         files=(("t.csv", b"member,ref,amount\nM1,BAD-O,1\nNOPE,BAD-O2,1\n"),))  # fmt: skip
    case(f"out-program-{n}", ["program", "export", "deli", "--out", out])

# Program files: refused by validate and by load.
GOOD = (PROGRAMS / "deli.toml").read_text()
PROGRAM_EDITS = [
    ('point_value = "0.005"', "point_value = 5e-3"),
    ('point_value = "0.005"', "point_value = inf"),
    ('point_value = "0.005"', 'point_value = "1e-3"'),
    ('point_value = "0.005"', "point_value = -1"),
    ('currency = "USD"', 'currency = "XXQ"'),
    ('timezone = "Europe/London"', 'timezone = "Mars/Olympus"'),
    ('key = "deli"', 'key = "Deli Shop"'),
    ('key = "deli"', f'key = "{"d" * 65}"'),
    ("per_unit = 5", "per_unit = -5"),
    ("per_unit = 5", 'per_unit = "five"'),
    ("signup_bonus = 25", "signup_bonus = 1000000000001"),
    ("signup_bonus = 25", "signup_bonus = 2.5"),
    ("months = 6", "months = 1000000"),
    ("months = 6", "months = 0"),
    ("hold_months = 12", "hold_months = 99999"),
    ("from = 2026-06-06", "from = 3001-01-01"),
    ("to = 2026-06-07", "to = 2026-06-05"),
    ("valid_days = 14", "valid_days = 999999999"),
    ("cost = 100", "cost = 0"),
    ("cost = 100", "cost = 1000000000001"),
    ("coffee-beans = 3.0", 'coffee-beans = 3.0\n"Coffee-Beans" = 2.0'),
    ("coffee-beans = 3.0", "tobacco = 2.0"),
    ('rounding = "floor"', 'rounding = "banker"'),
    ("min = 200", "min = 0"),
    ("[earn]", "[earn]\nbogus = 1"),
    ('name = "Corner Deli Club"', 'name = ""'),
    ("[program]", "[program\n"),
    ("[program]", "\x00"),
]
for n, (old, new) in enumerate(PROGRAM_EDITS):
    body = GOOD.replace(old, new, 1).encode("utf-8", "surrogatepass")
    files = (("p.toml", body),)
    case(f"program-validate-{n}", ["program", "validate", "{tmp}/p.toml"], files=files)
    case(f"program-load-{n}", ["program", "load", "{tmp}/p.toml"], files=files)
case("program-binary", ["program", "load", "{tmp}/p.toml"], files=(("p.toml", b"\xff\xfe\x00"),))
case("program-missing", ["program", "load", "{tmp}/none.toml"])
case("program-dir", ["program", "load", "{tmp}"])
case("program-currency", ["program", "load", "{tmp}/p.toml"], 6, "currency",
     files=(("p.toml", GOOD.replace('"USD"', '"EUR"').encode()),))  # fmt: skip
case("program-drop-tier", ["program", "load", "{tmp}/p.toml"], 6, "bronze",
     files=(("p.toml", GOOD.replace('key = "bronze"', 'key = "copper"').encode()),))  # fmt: skip

# Import files that fail as a whole, and bad rows without --rejects: nothing written.
IMPORTS = [
    ("t.csv", b""),
    ("t.csv", b"\n\n"),
    ("t.csv", b"member,ref,amount,colour\nM1,BAD-I1,1,red\n"),
    ("t.csv", b"ref,amount\nBAD-I2,1\n"),
    ("t.csv", b"member,member,ref\nM1,M1,BAD-I3\n"),
    ("t.csv", b"member,ref,amount\nM1,BAD-I4,1\n\xff\xfe\n"),
    ("t.csv", b"member,ref,amount\nM1,BAD-I5,abc\n"),
    ("t.csv", b"member,ref,amount\nM1,BAD-I6,1,extra\n"),
    ("t.csv", b"member,ref,amount\nM1,BAD-I7,1\nNOPE,BAD-I8,1\n"),
    ("t.csv", b"member,ref,amount,at\nM1,BAD-I9,1,2099-01-01\n"),
    ("t.csv", b"member,ref,amount\nM1,BAD-I10,1e3\n"),
    ("t.csv", b"member,ref,amount\nM1,BAD-I11,\xef\xbc\x91\n"),
    ("t.csv", b'member,ref,amount\nM1,"BAD-I12\x00",1\n'),
    ("t.csv", b"member,ref,amount\nM1,P1,99\n"),
    ("t.csv", b"type,member,ref,points\nadjust,M1,BAD-I13,1.5\n"),
    ("t.csv", b"type,member,ref,points,reason\nadjust,M1,BAD-I14,99999999999999,x\n"),
    ("t.csv", b"type,member,ref,amount\nrefund,M1,BAD-I15,1\n"),
    ("t.csv", b"member,ref,amount\n" + b"M1,BAD-I16," + b"9" * 200_000 + b"\n"),
    ("t.jsonl", b'{"member": "M1", "ref": "BAD-J1", "amount": "1", "colour": "red"}\n'),
    ("t.jsonl", b'{"member": "M1", "ref": "BAD-J2", "amount": "1", "amount": "2"}\n'),
    ("t.jsonl", b"[" * 50_000 + b"]" * 50_000 + b"\n"),
    ("t.jsonl", b'{"member": "M1", "ref": "BAD-J3", "amount": "1", "category": "\\ud800"}\n'),
    ("t.jsonl", b'{"member": "M1", "ref": "BAD-J4", "amount": 1e3}\n'),
    ("t.jsonl", b'{"member": "M1", "ref": "BAD-J5", "amount": NaN}\n'),
    ("t.jsonl", b'{"member": "M1", "ref": "BAD-J6", "amount": true}\n'),
    ("t.jsonl", b'{"member": "M1", "ref": "BAD-J7", "amount": ["1"]}\n'),
    ("t.jsonl", b'"just a string"\n'),
    ("t.jsonl", b"{not json\n"),
    ("t.jsonl", b'{"member": "M1", "ref": "BAD-J8", "amount": "1"}\n\xff\n'),
    ("t.jsonl", b'{"member": "M1", "ref": "BAD-J9", "amount": 12345678901234567890123}\n'),
    ("t.txt", b"member,ref,amount\nM1,BAD-X,1\n"),
]
for n, (name, body) in enumerate(IMPORTS):
    case(f"import-{n}", ["txn", "import", "{tmp}/" + name], files=((name, body),))
case("import-missing", ["txn", "import", "{tmp}/none.csv"])
case("import-dir", ["txn", "import", "{tmp}", "--format", "csv"])
case("import-format", ["txn", "import", "{tmp}/t.csv", "--format", "xml"],
     files=(("t.csv", b"member,ref,amount\n"),))  # fmt: skip
case("member-import-bad", ["member", "import", "{tmp}/m.csv"],
     files=(("m.csv", b"member,birthday\nM7,2026-02-30\nM8,\n"),))  # fmt: skip
case("member-import-balance", ["member", "import", "{tmp}/m.csv"],
     files=(("m.csv", b"member,opening_balance\nM7,99999999999999999\n"),))  # fmt: skip
case("member-import-jsonl", ["member", "import", "{tmp}/m.jsonl"],
     files=(("m.jsonl", b'{"member": "M7", "name": "\\udc00"}\n'),))  # fmt: skip


def test_the_corpus_is_large() -> None:
    assert len(CASES) >= 200
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("item", CASES, ids=[c.id for c in CASES])
def test_bad_input(corpus: Corpus, item: Case, tmp_path: Path) -> None:
    for name, body in item.files:
        (tmp_path / name).write_bytes(body)
    args = [a.replace("{tmp}", str(tmp_path)) for a in item.args]
    db = item.db.replace("{tmp}", str(tmp_path)) if item.db else None
    before = corpus.digest()
    result = corpus.run(*args, env=dict(item.env) or None, db=db)
    after = corpus.digest()
    shown = (
        f"exit {result.exit_code}\nstdout: {result.stdout[:500]}\nstderr: {result.stderr[:2000]}"
    )
    assert result.exit_code == item.code, shown
    assert "internal error" not in result.stderr, shown
    assert "Traceback" not in result.stderr, shown
    if item.code == 2:
        assert "Error: " in result.stderr, shown
    elif item.code:
        first = result.stderr.splitlines()[0]
        assert first.startswith("error: ") and len(first) < 400, shown
    for word in item.words:
        assert word in result.stderr, (word, shown)
    assert before == after, f"the database changed\n{shown}"


# ---- random input -------------------------------------------------------------------------

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30) | st.sampled_from(
    ["1e3", "12.50", "-1", "2026-01-01", "2026-01-01T12:00", "NaN", "٣", "0", "9" * 30]
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(amount=TEXT, at=TEXT)
def test_random_amounts_and_times_never_crash(corpus: Corpus, amount: str, at: str) -> None:
    ref = "RND-" + hashlib.sha1(f"{amount!r}{at!r}".encode()).hexdigest()[:16]
    result = corpus.run("txn", "post", "M1", "--ref", ref, "--amount", amount, "--at", at)
    assert result.exit_code in (0, 2, 4, 5), (amount, at, result.stderr)
    assert "internal error" not in result.stderr


COLUMNS = ("type", "member", "ref", "amount", "at", "category", "original", "points", "reason")
CELL = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["M1", "M2", "NOPE", "P1", "1", "12.50", "return", "adjust", "2026-01-03", "beans", ""]
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=st.lists(st.fixed_dictionaries(dict.fromkeys(COLUMNS, CELL)), min_size=1, max_size=6),
    jsonl=st.booleans(),
)
def test_random_import_rows_never_crash(
    corpus: Corpus, tmp_path_factory: Any, rows: list[dict[str, str]], jsonl: bool
) -> None:
    import csv
    import io
    import json

    folder = tmp_path_factory.mktemp("rows")
    if jsonl:
        path = folder / "rows.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        path = folder / "rows.csv"
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        path.write_text(buffer.getvalue(), encoding="utf-8")
    result = corpus.run("txn", "import", str(path), "--rejects", str(folder / "rejects"))
    assert result.exit_code in (0, 4), result.stderr
    assert "internal error" not in result.stderr
