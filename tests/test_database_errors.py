"""A database that cannot be used is exit 10, named, with what to do; never a traceback,
never a new file where a read-only command was pointed at a wrong path."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from loyaltyctl.cli.main import app
from tests.conftest import PROGRAMS
from tests.mounts import remount_read_only, tmpfs


def run(db: str, *args: str) -> Any:
    return CliRunner().invoke(app, ["--db", db, *args], catch_exceptions=False)


def one_error(result: Any, code: int, *words: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: ") and "internal error" not in result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)
    assert "Traceback" not in result.stderr


def fill(path: Path) -> None:
    """Fill the disk ``path`` is on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\x00" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def loaded_db(sqlite_template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "loaded.db"
    shutil.copy(sqlite_template, path)
    assert run(str(path), "program", "load", str(PROGRAMS / "deli.toml")).exit_code == 0
    assert run(str(path), "member", "enroll", "M1").exit_code == 0
    return path


@pytest.mark.parametrize("command", [["member", "list"], ["program", "list"], ["db", "check"]])
def test_a_mistyped_path_is_not_found_and_not_created(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "typo.db"
    one_error(run(str(path), *command), 10, f"no database at {path}")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_directory_is_not_a_database(tmp_path: Path) -> None:
    one_error(run(str(tmp_path), "member", "list"), 10, "is a directory")
    one_error(run(str(tmp_path), "member", "enroll", "M1"), 10, "is a directory")


@pytest.mark.parametrize(
    "content", [b"name,points\nM1,10\n", b"\x00" * 10, b"SQLite format 3\x00" + b"\xff" * 84]
)
def test_a_file_that_is_not_sqlite(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(content)
    before = digest(path)
    one_error(run(str(path), "member", "list"), 10, str(path))
    one_error(run(str(path), "member", "enroll", "M1"), 10, str(path))
    assert digest(path) == before


def test_a_corrupt_file(loaded_db: Path) -> None:
    with loaded_db.open("r+b") as f:
        f.seek(4096)
        f.write(b"\x13" * 4096 * 6)
    one_error(run(str(loaded_db), "member", "list"), 10, "corrupt", "backup")
    one_error(run(str(loaded_db), "db", "check"), 10, "corrupt")


def test_a_read_only_file_reads_and_refuses_writes(loaded_db: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "4m") as mount:
        path = mount / "ro.db"
        shutil.copy(loaded_db, path)
        remount_read_only(mount)
        before = digest(path)
        shown = run(str(path), "member", "show", "M1", "--json")
        assert shown.exit_code == 0, shown.stderr
        assert '"member": "M1"' in shown.stdout
        check = run(str(path), "db", "check", "--json")
        assert check.exit_code == 0 and '"ok": true' in check.stdout
        one_error(run(str(path), "member", "enroll", "M2"), 10, "read-only", str(path))
        one_error(run(str(path), "txn", "post", "M1", "--ref", "R", "--amount", "1"), 10)
        one_error(run(str(path), "expire", "--as-of", "2026-01-01"), 10, "read-only")
        assert digest(path) == before
        assert sorted(p.name for p in mount.iterdir()) == ["ro.db"]


def test_a_full_disk_under_the_database(sqlite_template: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "full", "400k") as mount:
        path = mount / "full.db"
        shutil.copy(sqlite_template, path)
        assert run(str(path), "program", "load", str(PROGRAMS / "deli.toml")).exit_code == 0
        filler = mount / "filler"
        fill(filler)
        rows = "member,name\n" + "".join(f"M{i},{'x' * 200}\n" for i in range(3000))
        members = tmp_path / "members.csv"
        members.write_text(rows)
        result = run(str(path), "member", "import", str(members))
        one_error(result, 10, str(path), "full")
        filler.unlink()
        assert run(str(path), "db", "check").exit_code == 0
        assert run(str(path), "member", "list", "--json").stdout.strip() == "[]"


@pytest.mark.parametrize(
    "url, words",
    [
        ("postgresql+psycopg://u@127.0.0.1:1/db", ["cannot be reached", "127.0.0.1"]),
        ("postgresql://u:secret@nohost.invalid/db", ["host name is unknown", "nohost.invalid"]),
        ("postgresql+psycopg://u@h:99999/db", ["port 99999"]),
        ("postgresql+psycopg://u@h:port/db", ["cannot read the database URL"]),
        ("postgresql+psycopg2://u@h/db", ["unsupported database driver"]),
        ("postgres+x://a/b", ["unsupported database URL"]),
        ("mysql://x/y", ["unsupported database URL"]),
        ("postgresql+psycopg://u@h", ["names no database"]),
    ],
)
def test_bad_postgresql_urls(url: str, words: list[str]) -> None:
    result = run(url, "member", "list")
    one_error(result, 10, *words)
    assert "secret" not in result.stderr


def test_a_misspelled_postgresql_database(pg_cluster: Any) -> None:
    one_error(run(pg_cluster.url("no_such_db"), "member", "list"), 10, "no_such_db")
    one_error(run(pg_cluster.url("no_such_db"), "db", "upgrade"), 10, "does not exist")


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e400", "abc", "99999999"])
def test_busy_timeout_must_be_a_sane_number(
    loaded_db: Path, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOYALTYCTL_BUSY_TIMEOUT", value)
    one_error(run(str(loaded_db), "member", "list"), 4, "LOYALTYCTL_BUSY_TIMEOUT")
