"""The Typer app: global options and the command groups.

A run registers only the top-level command its arguments name: Typer builds the Click
parameters of every registered command on each run, which for all of them took 55 ms of
a ``txn post`` (13 ms for the ``txn`` group alone) on a slow machine.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any, NoReturn

import typer

from loyaltyctl import __version__
from loyaltyctl.cli.common import STATE

HELP = "Run a customer loyalty program: points, tiers and rewards on an exact ledger."


def _version(value: bool) -> None:
    if value:
        print(f"loyaltyctl {__version__}")
        raise typer.Exit()


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
    actor: Annotated[
        str | None,
        typer.Option(
            "--actor",
            envvar="LOYALTYCTL_ACTOR",
            help="Who runs the command, for the audit (default: the OS user).",
            show_envvar=True,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Run a customer loyalty program: points, tiers and rewards on an exact ledger."""
    STATE.db = db_url
    STATE.debug = debug
    STATE.actor = actor
    STATE.display_tz = None


def _new_root() -> typer.Typer:
    app = typer.Typer(
        name="loyaltyctl",
        help=HELP,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        # --install-completion / --show-completion for bash, zsh and fish (Typer's own).
        add_completion=True,
        # Plain Click help, on a terminal too: Rich's help rendering imports its markdown
        # support, and the top-level help is printed from a stored copy (cli/main.py),
        # which only plain help can match byte for byte.
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(root)
    return app


def _db(app: typer.Typer) -> None:
    from loyaltyctl.cli import db

    app.add_typer(db.app, name="db")


def _program(app: typer.Typer) -> None:
    from loyaltyctl.cli import program

    app.add_typer(program.app, name="program")


def _member(app: typer.Typer) -> None:
    from loyaltyctl.cli import member

    _add_imports(app)
    app.add_typer(member.app, name="member")


def _txn(app: typer.Typer) -> None:
    from loyaltyctl.cli import txn

    _add_imports(app)
    app.add_typer(txn.app, name="txn")


_imports_added = False


def _add_imports(app: typer.Typer) -> None:
    # It adds ``import`` to the member and txn groups themselves, which every root built
    # in this process shares: once.
    global _imports_added
    if not _imports_added:
        from loyaltyctl.cli import imports

        imports.register(app)
        _imports_added = True


def _reward(app: typer.Typer) -> None:
    from loyaltyctl.cli import reward

    reward.register(app)


def _jobs(app: typer.Typer) -> None:
    from loyaltyctl.cli import jobs

    jobs.register(app)


def _events(app: typer.Typer) -> None:
    from loyaltyctl.cli import events

    app.add_typer(events.app, name="events")


_economics_added = False


def _statements(app: typer.Typer) -> None:
    from loyaltyctl.cli import statements

    statements.register(app)
    # The economics reports join the ``report`` group, which every root shares: once.
    global _economics_added
    if not _economics_added:
        from loyaltyctl.cli import economics

        economics.register(statements.report_app)
        _economics_added = True


def _audit(app: typer.Typer) -> None:
    from loyaltyctl.cli import audit

    app.add_typer(audit.app, name="audit")


# In the order of the help's command list; each with the top-level names it adds.
_REGISTER: list[tuple[tuple[str, ...], Callable[[typer.Typer], None]]] = [
    (("db",), _db),
    (("program",), _program),
    (("member",), _member),
    (("txn",), _txn),
    (("reward", "voucher"), _reward),
    (("expire", "tiers", "nightly"), _jobs),
    (("statement", "report", "export"), _statements),
    (("events",), _events),
    (("audit",), _audit),
]
NAMES = frozenset(name for names, _ in _REGISTER for name in names)


def named_command(args: Sequence[str]) -> str | None:
    """The top-level command ``args`` run, read past the global options the way Click
    parses them; None whenever anything else comes first (help, ``--version``, an unknown
    option or command), so that Click sees every command and answers as it always did."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--db", "--actor"):
            i += 2
        elif arg.startswith(("--db=", "--actor=")) or arg == "--debug":
            i += 1
        else:
            return arg if arg in NAMES else None
    return None


def _completing() -> bool:
    # Shell completion reads the words from the environment, not from argv.
    return any(k.startswith("_") and k.endswith("_COMPLETE") and v for k, v in os.environ.items())


def build_app(args: Sequence[str] | None = None) -> typer.Typer:
    """The root app with every command, or with only the one ``args`` certainly run."""
    only = None if args is None or _completing() else named_command(args)
    app = _new_root()
    for names, register in _REGISTER:
        if only is None or only in names:
            register(app)
    return app


@functools.cache
def full_app() -> typer.Typer:
    return build_app()


# What a person reads in the help for each value, by parameter name, instead of the
# Python type (``<str>``); a name not listed shows as itself in capitals.
METAVARS = {
    "db_url": "URL",
    "text": "QUERY",
    "amount": "AMOUNT",
    "as_of": "DATE",
    "at": "TIME",
    "birthday": "DATE",
    "category": "CATEGORY",
    "email": "EMAIL",
    "file": "FILE",
    "files": "FILE",
    "fmt": "FORMAT",
    "from_": "DATE",
    "to": "DATE",
    "key": "KEY",
    "limit": "N",
    "page": "N",
    "line": "CATEGORY=AMOUNT",
    "member": "MEMBER",
    "move_tier": "OLD=NEW",
    "name": "NAME",
    "original": "REF",
    "out": "FILE",
    "rejects": "FILE",
    "journal": "FILE",
    "members_out": "FILE",
    "period": "PERIOD",
    "phone": "PHONE",
    "points": "POINTS",
    "program": "KEY",
    "reason": "REASON",
    "ref": "REF",
    "reward": "REWARD",
    "since": "DATE|TIME",
    "status": "STATUS",
    "tier": "TIER",
    "voucher": "VOUCHER",
    "within": "DAYS",
}
# Top-level commands in the order of the work: set up, run the program day to day, the
# nightly jobs, then what is read out of it.
ORDER = (
    "db",
    "program",
    "member",
    "txn",
    "reward",
    "voucher",
    "expire",
    "tiers",
    "nightly",
    "statement",
    "report",
    "export",
    "events",
    "audit",
)


def finish(command: Any) -> Any:
    """The Click command of the app, with readable metavars and the order of the work."""
    _name_values(command)
    commands = getattr(command, "commands", None)
    if commands:
        rank = {name: i for i, name in enumerate(ORDER)}
        command.commands = dict(
            sorted(commands.items(), key=lambda item: rank.get(item[0], len(ORDER)))
        )
    return command


def _name_values(command: Any) -> None:
    for param in command.params:
        if param.metavar is None and not getattr(param, "is_flag", False):
            name = param.name or ""
            param.metavar = METAVARS.get(name, name.upper().rstrip("_"))
        if param.param_type_name == "argument":
            # The argument's name already says what it is; Typer would add ``<str>``.
            param.display_type_rich = _no_type
    for sub in (getattr(command, "commands", None) or {}).values():
        _name_values(sub)


def _no_type(*_args: Any, **_kwargs: Any) -> str:
    return ""


def main_command(args: Sequence[str] | None = None) -> Any:
    """The Click command ``run`` invokes (``args`` None: with every command)."""
    from typer.main import get_command

    return finish(get_command(build_app(args) if args is not None else full_app()))


def run(args: Sequence[str]) -> NoReturn:
    command = main_command(args)
    try:
        command.main(args=list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    sys.stdout.flush()
    sys.stderr.flush()
    # Every command's work is committed (or rolled back) and its engine disposed before
    # this point; unloading SQLAlchemy, pydantic and the models at exit costs more than
    # a single command, so the process ends here.
    os._exit(code)
