"""Output files are whole or absent: a full disk or a file-size limit is exit 10 and leaves
the earlier file as it was; a device or a FIFO given as the output stays what it is."""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import PROGRAMS, Cli
from tests.mounts import tmpfs
from tests.test_database_errors import fill, one_error

EXE = Path(sys.executable).with_name("loyaltyctl")
EARLIER = "the earlier file\n"


@pytest.fixture
def members(cli: Cli, tmp_path: Path) -> Cli:
    cli("program", "load", str(PROGRAMS / "deli.toml"))
    rows = "member,name,email\n" + "".join(
        f"M{i:05d},Member number {i},m{i}@example.com\n" for i in range(1500)
    )
    (tmp_path / "members.csv").write_text(rows)
    cli("member", "import", str(tmp_path / "members.csv"))
    return cli


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_full_disk_keeps_the_earlier_export(members: Cli, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "512k") as mount:
        out = mount / "members.csv"
        out.write_text(EARLIER)
        fill(mount / "filler")
        result = members("export", "members", "--out", str(out), code=None)
        one_error(result, 10, str(out), "No space left")
        assert out.read_text() == EARLIER
        assert leftovers(mount) == []
        (mount / "filler").unlink()
        members("export", "members", "--out", str(out))
        assert out.read_text().startswith("member,")


def test_a_full_disk_keeps_the_earlier_notices(members: Cli, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "64k") as mount:
        out = mount / "statement.json"
        out.write_text(EARLIER)
        fill(mount / "filler")
        result = members(
            "statement", "M00001", "--from", "2026-01-01", "--to", "2026-01-31",
            "--format", "json", "--out", str(out), code=None,
        )  # fmt: skip
        one_error(result, 10, str(out))
        assert out.read_text() == EARLIER
        assert leftovers(mount) == []


def test_a_file_size_limit_keeps_the_earlier_export(
    members: Cli, db_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "members.csv"
    out.write_text(EARLIER)
    limit = 48 * 1024  # above SQLite's 32 KiB -shm file, below the export

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run(
        [str(EXE), "--db", db_url, "export", "members", "--out", str(out)],
        capture_output=True,
        text=True,
        preexec_fn=limited,
        check=False,
    )
    assert done.returncode == 10, done.stderr
    assert done.stderr.startswith(f"error: cannot write {out}")
    assert out.read_text() == EARLIER
    assert leftovers(tmp_path) == []


def test_a_character_device_stays_one(members: Cli, tmp_path: Path) -> None:
    device = tmp_path / "null"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError as exc:
        pytest.skip(f"cannot create a device node here: {exc}")
    members("export", "members", "--out", str(device), "--format", "csv")
    members(
        "statement", "M00001", "--from", "2026-01-01", "--to", "2026-01-31",
        "--format", "csv", "--out", str(device),
    )  # fmt: skip
    members("program", "export", "deli", "--out", str(device))
    members("expire", "notices", "--out", str(device), "--format", "csv")
    assert stat.S_ISCHR(device.stat().st_mode)


def test_a_fifo_stays_one_and_gets_everything(members: Cli, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []

    def read() -> None:
        with fifo.open("rb") as f:
            received.append(f.read())

    reader = threading.Thread(target=read)
    reader.start()
    members("export", "members", "--out", str(fifo), "--format", "csv")
    reader.join(timeout=30)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    lines = received[0].decode().splitlines()
    assert lines[0].startswith("member,") and len(lines) == 1501


@pytest.mark.parametrize(
    "where, code, words",
    [
        ("{tmp}", 4, ["is a directory"]),
        ("{tmp}/no/such/folder/x.csv", 4, ["does not exist"]),
    ],
)
def test_bad_output_paths(
    members: Cli, tmp_path: Path, where: str, code: int, words: list[str]
) -> None:
    out = where.format(tmp=tmp_path)
    one_error(
        members("export", "members", "--out", out, "--format", "csv", code=None), code, *words
    )
    before = members.json("member", "show", "M00001")["balance"]
    txns = tmp_path / "txns.csv"
    txns.write_text("member,ref,amount\nM00001,R1,5.00\nNOPE,R2,1.00\n")
    one_error(members("txn", "import", str(txns), "--rejects", out, code=None), code, *words)
    assert members.json("member", "show", "M00001")["balance"] == before


def test_a_new_output_file_gets_the_usual_mode(members: Cli, tmp_path: Path) -> None:
    out = tmp_path / "new.csv"
    members("export", "members", "--out", str(out))
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~mask
