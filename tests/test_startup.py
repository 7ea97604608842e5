"""Start-up: help never loads the database layer or the templates; the installed
executable answers --help.

The top-level help loads no pydantic either. A group's or command's help does, through
Typer itself: Typer 0.26+ converts option values with pydantic (``typer._adapters``) once
it processes the root options on the way to the subcommand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

DATABASE_AND_TEMPLATES = {"sqlalchemy", "sqlmodel", "alembic", "jinja2", "psycopg"}
HEAVY = DATABASE_AND_TEMPLATES | {"pydantic", "pydantic_core"}

HELPS = [
    ["member", "--help"],
    ["txn", "--help"],
    ["txn", "import", "--help"],
    ["member", "import", "--help"],
    ["txn", "post", "--help"],
]

PROBE = """
import json, sys
from loyaltyctl.cli.main import app
for args in json.loads(sys.argv[1]):
    try:
        app(args, prog_name="loyaltyctl")
    except SystemExit as exc:
        assert exc.code in (0, None), (args, exc.code)
heavy = set(json.loads(sys.argv[2]))
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""


def probe(args: list[str], modules: set[str]) -> list[str]:
    """Run ``loyaltyctl ARGS`` in a fresh interpreter; the modules of ``modules`` it loaded."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps([args]), json.dumps(sorted(modules))],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    *help_text, loaded = out.stdout.strip().splitlines()
    assert "Usage" in "\n".join(help_text)
    return list(json.loads(loaded))


def test_top_level_help_loads_no_heavy_module() -> None:
    assert probe(["--help"], HEAVY) == []


@pytest.mark.parametrize("args", HELPS, ids=lambda a: " ".join(a))
def test_command_help_loads_no_database_layer(args: list[str]) -> None:
    assert probe(args, DATABASE_AND_TEMPLATES) == []


def test_installed_executable_answers_help() -> None:
    exe = Path(sys.executable).parent / "loyaltyctl"
    assert exe.exists(), f"{exe} missing: run make venv"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "member" in out.stdout and "txn" in out.stdout
