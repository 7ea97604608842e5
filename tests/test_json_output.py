"""``--json`` is one line per document when stdout is not a terminal (cron appends JSON
Lines) and indented for a person at a terminal."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROGRAMS, Cli

EXE = Path(sys.executable).with_name("loyaltyctl")


def test_nightly_appended_twice_is_json_lines(cli: Cli, db_url: str, tmp_path: Path) -> None:
    cli("program", "load", str(PROGRAMS / "deli.toml"))
    log = tmp_path / "nightly.jsonl"
    for _ in range(2):
        # What a crontab line does: stdout appended to a file, under a shell.
        done = subprocess.run(
            f'"{EXE}" --db "{db_url}" nightly --json >> "{log}"',
            shell=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PATH": "/usr/bin:/bin"},
            check=False,
        )
        assert done.returncode == 0, done.stderr
    lines = log.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    documents = [json.loads(line) for line in lines]
    assert documents[0]["expire"]["already_done"] is False
    assert documents[1]["expire"]["already_done"] is True


def test_json_is_indented_on_a_terminal(cli: Cli, db_url: str) -> None:
    cli("program", "load", str(PROGRAMS / "deli.toml"))
    primary, secondary = pty.openpty()
    try:
        done = subprocess.run(
            [str(EXE), "--db", db_url, "program", "list", "--json"],
            stdout=secondary,
            stderr=subprocess.PIPE,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        os.close(secondary)
        out = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(primary)
    text = out.decode().replace("\r\n", "\n")
    assert text.startswith("[\n  {\n")
    assert json.loads(text)[0]["program"] == "deli"


def test_json_is_one_line_when_piped(cli: Cli) -> None:
    cli("program", "load", str(PROGRAMS / "deli.toml"))
    out = cli("program", "list", "--json").stdout
    assert out.count("\n") == 1 and json.loads(out)[0]["program"] == "deli"
