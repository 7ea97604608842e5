"""The ``loyaltyctl`` entry point: global options and the command groups."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from loyaltyctl import __version__
from loyaltyctl.cli import db, imports, jobs, member, program, reward, statements, txn
from loyaltyctl.cli.common import STATE

app = typer.Typer(
    name="loyaltyctl",
    help="Run a customer loyalty program: points, tiers and rewards on an exact ledger.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Rich help on a terminal; plain Click help when piped, which is three times faster
    # to print because Rich's markdown support is never imported.
    rich_markup_mode="rich" if sys.stdout.isatty() else None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(db.app, name="db")
app.add_typer(program.app, name="program")
app.add_typer(member.app, name="member")
app.add_typer(txn.app, name="txn")
# Each of these modules adds its own commands (groups or top-level commands).
reward.register(app)
jobs.register(app)
statements.register(app)
imports.register(app)


def _version(value: bool) -> None:
    if value:
        print(f"loyaltyctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    db_url: Annotated[
        str | None,
        typer.Option(
            "--db",
            envvar="LOYALTYCTL_DB",
            help="Database: a SQLite file path or a postgresql+psycopg:// URL.",
            show_envvar=True,
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of bugs.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Run a customer loyalty program: points, tiers and rewards on an exact ledger."""
    STATE.db = db_url
    STATE.debug = debug
    STATE.display_tz = None


def main() -> None:
    try:
        app()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    sys.stdout.flush()
    sys.stderr.flush()
    # Every command's work is committed (or rolled back) and its engine disposed before
    # this point; unloading SQLAlchemy, pydantic and the models at exit costs more than
    # a single command, so the process ends here.
    os._exit(code)


if __name__ == "__main__":
    main()
