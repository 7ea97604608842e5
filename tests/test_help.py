"""Help a person reads: named values (URL, FILE, CATEGORY=AMOUNT), never Python types;
commands in the order of the work; Typer's shell completion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from loyaltyctl.cli.app import ORDER, main_command

EXE = Path(sys.executable).with_name("loyaltyctl")


def _commands(cmd: Any, path: list[str]) -> list[list[str]]:
    found = [path]
    for name, sub in (getattr(cmd, "commands", None) or {}).items():
        found += _commands(sub, [*path, name])
    return found


def test_no_help_shows_a_python_type() -> None:
    root = main_command()
    for path in _commands(root, []):
        out = subprocess.run(
            [str(EXE), *path, "--help"],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "100"},
            check=False,
        )
        assert out.returncode == 0, (path, out.stderr)
        for bad in ("<str>", "<int>", "<list", "<path>", "TEXT", "INTEGER"):
            assert bad not in out.stdout, (path, bad, out.stdout)


def test_the_values_people_type_are_named() -> None:
    out = subprocess.run(
        [str(EXE), "txn", "post", "--help"],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "100"}, check=False,
    ).stdout  # fmt: skip
    for shown in ("--line CATEGORY=AMOUNT", "--ref REF", "--at TIME", "--program KEY"):
        assert shown in out
    top = subprocess.run([str(EXE), "--help"], capture_output=True, text=True, check=False)
    assert "--db URL" in top.stdout


def test_commands_come_in_the_order_of_the_work() -> None:
    out = subprocess.run([str(EXE), "--help"], capture_output=True, text=True, check=False)
    listed = out.stdout.split("Commands:", 1)[1].splitlines()
    names = [line.split()[0] for line in listed if line.startswith("  ") and line.strip()]
    assert names == list(ORDER)


def test_shell_completion() -> None:
    env = {**os.environ, "_LOYALTYCTL_COMPLETE": "complete_bash"}
    done = subprocess.run(
        [str(EXE)],
        capture_output=True,
        text=True,
        env={**env, "COMP_WORDS": "loyaltyctl txn p", "COMP_CWORD": "2"},
        check=False,
    )
    assert done.returncode == 0 and done.stdout.split() == ["post"]
    for shell in ("bash", "zsh", "fish"):
        script = subprocess.run(
            [str(EXE), "--show-completion", shell], capture_output=True, text=True, check=False
        )
        assert script.returncode == 0 and "_LOYALTYCTL_COMPLETE" in script.stdout, shell
