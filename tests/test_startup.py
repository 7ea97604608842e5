"""Start-up: help never loads the database layer or the templates; the installed
executable answers --help from its stored copy, byte for byte what the Typer app prints;
a run builds only the command it names.

The top-level help loads no pydantic either. A group's or command's help does, through
Typer itself: Typer 0.26+ converts option values with pydantic (``typer._adapters``) once
it processes the root options on the way to the subcommand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import typer

from loyaltyctl import __version__
from loyaltyctl.cli.app import NAMES, build_app, named_command
from tests.conftest import REPO

EXE = Path(sys.executable).parent / "loyaltyctl"
# The Typer app itself, never the stored help, under the console script's program name.
LIVE = "from loyaltyctl.cli.app import main_command; main_command().main(prog_name='loyaltyctl')"

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


def _env(columns: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"COLUMNS", "LINES"}}
    if columns is not None:
        env["COLUMNS"] = columns
    return env


@pytest.mark.parametrize("columns", [None, "80", "120", "79", "60"])
@pytest.mark.parametrize("args", [["--help"], ["-h"], []], ids=["--help", "-h", "no-args"])
def test_installed_executable_prints_the_live_help(args: list[str], columns: str | None) -> None:
    """Piped: from 80 columns up the stored copy, below it Typer; the same bytes either way
    (a bare ``loyaltyctl`` prints it to stderr with exit 2, as Click does)."""
    assert EXE.exists(), f"{EXE} missing: run make venv"
    env = _env(columns)
    got = subprocess.run([str(EXE), *args], capture_output=True, env=env, timeout=60)
    live = subprocess.run(
        [sys.executable, "-c", LIVE, *args], capture_output=True, env=env, cwd=REPO, timeout=60
    )
    assert (got.returncode, got.stdout, got.stderr) == (live.returncode, live.stdout, live.stderr)
    assert got.returncode == (0 if args else 2)
    assert b"txn" in (got.stdout or got.stderr)


def _on_terminal(command: list[str], columns: int) -> tuple[int, bytes, bytes]:
    """Run with stdout on a pseudo-terminal of that width: (exit code, terminal, stderr)."""
    pty = pytest.importorskip("pty")
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    # stderr to a file: nothing reads it while the terminal is drained.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, stdout=slave, stderr=err, env=_env(None), cwd=REPO)
        os.close(slave)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        os.close(master)
        proc.wait(timeout=60)
        err.seek(0)
        return proc.returncode, shown, err.read()


@pytest.mark.parametrize("columns", [100, 80, 60])
def test_help_on_a_terminal_is_the_same_plain_help(columns: int) -> None:
    got = _on_terminal([str(EXE), "--help"], columns)
    live = _on_terminal([sys.executable, "-c", LIVE, "--help"], columns)
    assert got == live
    assert got[1].startswith(b"Usage: loyaltyctl [OPTIONS] COMMAND")
    assert b"\x1b[" not in got[1]


def test_help_from_the_stored_copy_imports_no_typer() -> None:
    piped = subprocess.run(
        [sys.executable, "-X", "importtime", str(EXE), "--help"],
        capture_output=True,
        text=True,
        env=_env(None),
        timeout=60,
    )
    code, _, terminal = _on_terminal([sys.executable, "-X", "importtime", str(EXE), "-h"], 100)
    assert piped.returncode == 0 and code == 0
    for imported in (piped.stderr, terminal.decode()):
        assert "import time:" in imported
        assert "typer" not in imported and "loyaltyctl.cli.app" not in imported


def test_version_imports_no_typer() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(EXE), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout == f"loyaltyctl {__version__}\n"
    assert "import time:" in done.stderr and "typer" not in done.stderr


def test_python_m_names_itself_and_is_not_served_the_stored_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "loyaltyctl", "--help"], capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0
    assert out.stdout.startswith("Usage: python -m loyaltyctl [OPTIONS] COMMAND")


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["txn", "post", "M1"], "txn"),
        (["--db", "x.db", "member", "show"], "member"),
        (["--db=x.db", "--debug", "nightly"], "nightly"),
        (["--db", "--debug", "expire"], "expire"),  # "--debug" is the value of --db
        (["--db", "txn", "report"], "report"),
        ([], None),
        (["--db"], None),
        (["--version", "txn"], None),
        (["-h", "txn"], None),
        (["--", "txn"], None),
        (["--debug=1", "txn"], None),
        (["nosuch"], None),
        (["TXN"], None),
    ],
)
def test_named_command_reads_past_the_global_options(args: list[str], name: str | None) -> None:
    assert named_command(args) == name


def _tree(cmd: typer.core.TyperGroup, name: str) -> list[str]:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import gen_cli_docs
    finally:
        sys.path.pop(0)
    out: list[str] = []
    gen_cli_docs._walk(cmd.commands[name], [name], out)
    return out


def test_a_run_builds_the_command_it_names_as_the_full_app_does() -> None:
    full = typer.main.get_command(build_app())
    assert isinstance(full, typer.core.TyperGroup)
    assert set(full.commands) == NAMES
    for name in NAMES:
        only = typer.main.get_command(build_app(["--db", "x.db", name, "--help"]))
        assert isinstance(only, typer.core.TyperGroup)
        assert name in only.commands and len(only.commands) <= 3
        assert _tree(only, name) == _tree(full, name)
        assert only.params[0].opts == full.params[0].opts


def test_shell_completion_sees_every_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_LOYALTYCTL_COMPLETE", "bash_complete")
    only = typer.main.get_command(build_app(["txn"]))
    assert isinstance(only, typer.core.TyperGroup)
    assert set(only.commands) == NAMES


def test_txn_post_imports_only_the_txn_commands() -> None:
    code = (
        "import sys; from loyaltyctl.cli.app import build_app; import typer; "
        "typer.main.get_command(build_app(['--db', 'x.db', 'txn', 'post'])); "
        "print(sorted(m for m in sys.modules if m.startswith('loyaltyctl.cli.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    loaded = {m.rsplit(".", 1)[1] for m in json.loads(out.stdout.replace("'", '"'))}
    # imports adds ``txn import``, and ``member import`` beside it.
    assert loaded == {"app", "common", "imports", "member", "txn"}


def test_a_reader_that_goes_away_is_not_reported_as_a_bug(tmp_path: Path) -> None:
    """`loyaltyctl member list | head -1`: the output stops, no "internal error"."""
    db = str(tmp_path / "pipe.db")
    program = REPO / "programs" / "coffee.toml"
    members = tmp_path / "members.csv"
    members.write_text("member\n" + "".join(f"M{i:05d}\n" for i in range(3000)), encoding="utf-8")
    for args in (["program", "load", str(program)], ["member", "import", str(members)]):
        subprocess.run([str(EXE), "--db", db, *args], check=True, capture_output=True)
    reader = subprocess.Popen(
        [str(EXE), "--db", db, "member", "list", "--limit", "3000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.read(10)
    reader.stdout.close()
    with reader.stderr:
        stderr = reader.stderr.read().decode()
    assert reader.wait(timeout=60) in (0, 1)
    assert stderr == ""
