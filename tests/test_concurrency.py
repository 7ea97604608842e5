"""Two OS processes writing to the same member at once lose nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import PROGRAMS, Cli

EXE = str(Path(sys.executable).parent / "loyaltyctl")


def _poster(db_url: str, prefix: str, count: int) -> subprocess.Popen[str]:
    script = "\n".join(
        f"loyaltyctl txn post M1 --ref {prefix}{i} --amount 10.00" for i in range(count)
    )
    # One process posting in a loop keeps the interpreter warm; the loop is in a shell so
    # each post is a real, separate loyaltyctl process like a till would start.
    return subprocess.Popen(
        ["bash", "-c", f"set -e\nexport PATH={Path(EXE).parent}:$PATH\n{script}"],
        env={"LOYALTYCTL_DB": db_url, "PATH": "/usr/bin:/bin", "LOYALTYCTL_BUSY_TIMEOUT": "60"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_posting_to_one_member_lose_nothing(cli: Cli, db_url: str) -> None:
    cli("program", "load", str(PROGRAMS / "deli.toml"))
    cli("member", "enroll", "M1")
    count = 6
    procs = [_poster(db_url, "A", count), _poster(db_url, "B", count)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    shown = cli.json("member", "show", "M1")
    assert shown["balance"] == 25 + 2 * count * 50
    assert len(cli.json("txn", "list", "M1")) == 1 + 2 * count
    cli.check()


def test_installed_executable_runs_and_reports_errors(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    ok = subprocess.run(
        [EXE, "--db", str(db), "program", "load", str(PROGRAMS / "deli.toml")],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run(
        [EXE, "--db", str(db), "member", "show", "NOPE"], capture_output=True, text=True
    )
    assert missing.returncode == 3
    assert missing.stderr.startswith("error: member NOPE not found in program deli")
    assert "Traceback" not in missing.stderr
    usage = subprocess.run([EXE, "txn", "post"], capture_output=True, text=True)
    assert usage.returncode == 2
