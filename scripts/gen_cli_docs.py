"""Write docs/cli.md and the stored top-level help (loyaltyctl/cli/help.txt) from the
commands themselves, so neither can drift.

Run `python scripts/gen_cli_docs.py` after changing a command; tests/test_docs.py fails
when either file is stale or a command has no help text.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from loyaltyctl.cli.app import main_command
from loyaltyctl.cli.main import HELP_FILE, PROG_NAME, STORED_COLUMNS

OUT = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
HELP_OUT = Path(HELP_FILE)

HEADER = """\
# Command reference

Generated from the commands' own help by `scripts/gen_cli_docs.py`; `make test` fails if
it is stale. The contract (names, exit codes, JSON fields) is also summarised here.

## Global options

`loyaltyctl [--db URL] [--debug] [--version] COMMAND …`

- `--db URL` or `LOYALTYCTL_DB`: a plain path is a SQLite file; `postgresql+psycopg://…`
  (or `postgresql://…`) is PostgreSQL. Without either: `$XDG_DATA_HOME/loyaltyctl/loyaltyctl.db`
  (`~/.local/share/loyaltyctl/loyaltyctl.db`). Every command brings the schema up to date
  on first use. Commands that only read never create a database (a path with none is
  exit 10, `not found: no database at PATH`) and work on a read-only file; commands that
  write say at once that it is read-only.
- `--program KEY` may be left out whenever exactly one program is loaded.
- `--json`: stdout holds exactly one JSON document; messages go to stderr.
- Times: ISO 8601; a date or time without an offset is in the program's time zone.
  JSON output gives instants in UTC (`2026-01-10T05:00:00Z`) and calendar dates as
  `YYYY-MM-DD`; money as decimal strings (`"12.50"`).
- `LOYALTYCTL_BUSY_TIMEOUT` (seconds, default 30): how long a command waits for a
  locked database or job lock before exit 7.
- `NO_COLOR` is honoured; tables are plain text when stdout is not a terminal.
- Help (`-h`, `--help`) is plain text, on a terminal too, at most 80 columns wide; the
  top-level help is printed from a stored copy without loading the rest of the program.

## Exit codes

| code | meaning |
| --- | --- |
| 0 | done (also: an identical retry of something already done) |
| 1 | internal error (a bug): one line on stderr, the traceback with `--debug` |
| 2 | usage error (unknown option, missing argument) |
| 3 | not found (program, member, transaction, reward, voucher) |
| 4 | invalid input (bad TOML, amount, date, CSV row, …) |
| 5 | conflict (a ref reused with a different payload, a duplicate enrollment with other data) |
| 6 | not allowed (insufficient points, tier, stock, limit, member suspended or closed) |
| 7 | busy (another run holds the job lock; the database stayed locked past the timeout) |
| 8 | `db check` found an inconsistency |
| 10 | database or output file unusable (not found, corrupt, unreachable, read-only, full) |

Errors are one line `error: …` on stderr, usually followed by `hint: …` with the fix.

## Commands
"""


def _param_line(param: Any) -> str | None:
    if getattr(param, "hidden", False) or param.name in {"help"}:
        return None
    if param.param_type_name == "argument":
        name = param.metavar or (param.name or "").upper()
        required = "" if param.required else " (optional)"
        return f"- `{name}`{required}: {getattr(param, 'help', '') or ''}".rstrip(": ")
    value = "" if getattr(param, "is_flag", False) or not param.metavar else f" {param.metavar}"
    opts = ", ".join(f"`{o}{value}`" for o in param.opts)
    extra = []
    if param.required:
        extra.append("required")
    if param.multiple:
        extra.append("repeatable")
    default = param.default
    if (
        not getattr(param, "is_flag", False)
        and default not in (None, (), [])
        and not param.required
    ):
        extra.append(f"default {default}")
    suffix = f" ({', '.join(extra)})" if extra else ""
    return f"- {opts}{suffix}: {param.help or ''}".rstrip(": ")


def _walk(cmd: Any, path: list[str], out: list[str]) -> None:
    commands = getattr(cmd, "commands", None)
    if path:
        out.append(f"### `loyaltyctl {' '.join(path)}`\n")
        text = (cmd.help or "").strip()
        if text:
            out.append(text + "\n")
        lines = [line for p in cmd.params if (line := _param_line(p))]
        if lines:
            out.append("\n".join(lines) + "\n")
    for name in commands or {}:  # in the order of the help: the order of the work
        _walk(commands[name], [*path, name], out)


def render() -> str:
    root = main_command()
    out = [HEADER]
    _walk(root, [], out)
    return "\n".join(out).rstrip() + "\n"


# Typer's app itself, in a process of its own: Click's CliRunner forces its own width.
LIVE_HELP = (
    f"from loyaltyctl.cli.app import main_command; main_command().main(prog_name={PROG_NAME!r})"
)


def live_help(
    args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the Typer app (never the stored help) with ``args``, output piped."""
    return subprocess.run(
        [sys.executable, "-c", LIVE_HELP, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def render_help() -> str:
    """`loyaltyctl --help` as the Typer app prints it from 80 columns up."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_COMPLETE")}
    env["COLUMNS"] = str(STORED_COLUMNS)
    result = live_help(["--help"], env)
    assert result.returncode == 0, result.stderr
    # The console script writes it without knowing the terminal's encoding.
    assert result.stdout.isascii(), "the top-level help must be ASCII"
    return result.stdout


def commands_without_help() -> list[str]:
    missing: list[str] = []

    def visit(cmd: Any, path: list[str]) -> None:
        if path and not (cmd.help or "").strip():
            missing.append(" ".join(path))
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            visit(sub, [*path, name])

    visit(main_command(), [])
    return missing


if __name__ == "__main__":
    outputs = {OUT: render(), HELP_OUT: render_help()}
    if "--check" in sys.argv:
        sys.exit(0 if all(p.exists() and p.read_text() == t for p, t in outputs.items()) else 1)
    for path, text in outputs.items():
        path.write_text(text)
        print(f"wrote {path}")
