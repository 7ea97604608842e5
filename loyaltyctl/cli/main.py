"""The ``loyaltyctl`` console script.

``loyaltyctl --help``, ``-h`` and a bare ``loyaltyctl`` print a stored copy of the help
the Typer app renders (``help.txt``, written by ``scripts/gen_cli_docs.py``) without
importing Typer, whose import alone takes longer than the 150 ms help may take on a slow
machine; ``--version`` alone is answered the same way. Everything else, and help in any
situation the copy was not rendered for, runs the Typer app of ``cli/app.py``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

HELP_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "help.txt")
PROG_NAME = "loyaltyctl"
# Click fits help to the terminal but never wider than 80 columns: from 80 columns up,
# the rendering is the stored one.
STORED_COLUMNS = 80


def _columns() -> int:
    """The terminal width as ``shutil.get_terminal_size()`` reports it to Click's help
    formatter; shutil itself takes 12 ms to import."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
        columns = columns or 80
    return columns


def stored_help(args: list[str]) -> tuple[str, int] | None:
    """The stored help and the exit code Click would give with it, when ``args`` ask for
    exactly what it holds; None otherwise."""
    if args == ["--help"] or args == ["-h"]:
        code = 0
    elif not args:
        code = 2  # no_args_is_help: Click prints the help to stderr as a usage error
    else:
        return None
    # Click names the program after argv[0], or "python -m loyaltyctl" under -m.
    main_module = sys.modules.get("__main__")
    if getattr(main_module, "__package__", None) not in (None, ""):
        return None
    if os.path.basename(sys.argv[0]) != PROG_NAME:
        return None
    if os.environ.get(f"_{PROG_NAME.upper()}_COMPLETE"):
        return None
    if _columns() < STORED_COLUMNS:
        return None
    try:
        with open(HELP_FILE, encoding="ascii") as f:
            return f.read(), code
    except (OSError, ValueError):
        return None


def version_text(args: list[str]) -> tuple[str, int] | None:
    """What ``--version`` alone prints (the app's eager ``--version`` option), without
    importing Typer."""
    if args != ["--version"]:
        return None
    from loyaltyctl import __version__

    return f"{PROG_NAME} {__version__}\n", 0


def main() -> None:
    args = sys.argv[1:]
    found = version_text(args) or stored_help(args)
    if found is None:
        from loyaltyctl.cli.app import run

        run(args)
    text, code = found
    stream = sys.stdout if code == 0 else sys.stderr
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        code = 1  # what Click does when the reader goes away
    os._exit(code)


def __getattr__(name: str) -> Any:
    # ``from loyaltyctl.cli.main import app`` (tests, scripts): the app with every command,
    # built on first use so that the console script does not import Typer for help.
    if name == "app":
        from loyaltyctl.cli.app import full_app

        return full_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
