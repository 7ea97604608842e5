"""What every command shares: global state, the error handler, sessions, output."""

from __future__ import annotations

import dataclasses
import errno
import functools
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer

from loyaltyctl.errors import LoyaltyError, Unusable
from loyaltyctl.services.retry import retry_lost_race

if TYPE_CHECKING:
    from sqlmodel import Session

    from loyaltyctl.services.context import ProgramContext


@dataclasses.dataclass
class State:
    db: str | None = None
    debug: bool = False
    # Who runs the command (--actor, LOYALTYCTL_ACTOR, else the OS user): the audit's.
    actor: str | None = None
    # The program's zone once a command has loaded one: people read local times.
    display_tz: tzinfo | None = None


STATE = State()

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Write one JSON document to stdout and nothing else.")
]
ProgramOpt = Annotated[
    str | None,
    typer.Option("--program", "-p", help="Program key; may be left out when only one is loaded."),
]
AtOpt = Annotated[
    str | None,
    typer.Option(
        "--at", help="When it happened (ISO 8601; no offset = program time zone). Default: now."
    ),
]

# A disk that is full, over quota or failing under an output file.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})

P = ParamSpec("P")
R = TypeVar("R")


def now() -> datetime:
    return datetime.now(UTC)


# A message quotes what it refuses: a line no longer than this whatever was typed.
MESSAGE_WIDTH = 300


def _cut(line: str) -> str:
    return line if len(line) <= MESSAGE_WIDTH else line[: MESSAGE_WIDTH - 1] + "…"


def report_error(exc: LoyaltyError) -> None:
    err("\n".join(_cut(line) for line in f"error: {exc.message}".split("\n")))
    if exc.hint:
        err(f"hint: {exc.hint}")


def command(func: Callable[P, R]) -> Callable[P, R]:
    """Turn domain errors into ``error: …`` on stderr and the contract's exit codes; anything
    else is a bug: one line, the traceback only with ``--debug``."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from loyaltyctl.store.audit import acting, install

        install()
        try:
            # Commands are idempotent and each is one whole transaction: one that lost a
            # race on a unique key runs again and reports the winner's result.
            with acting(STATE.actor, _command_name(func)):
                return retry_lost_race(func, *args, **kwargs)
        except (typer.Exit, typer.Abort, BrokenPipeError):
            # A reader that went away (`… | head`) is not a bug: Click ends quietly.
            raise
        except LoyaltyError as exc:
            report_error(exc)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err("interrupted: nothing of the unfinished transaction was written")
            raise typer.Exit(130) from None
        except Exception as exc:
            translated = _translate_environment_error(exc)
            if translated is not None:
                report_error(translated)
                raise typer.Exit(translated.exit_code) from None
            if STATE.debug:
                traceback.print_exc()
            err(f"error: internal error: {type(exc).__name__}: {exc}")
            if not STATE.debug:
                err("hint: run again with --debug for the traceback, and report it")
            raise typer.Exit(1) from None

    return wrapper


def _command_name(func: Callable[..., Any]) -> str:
    """``member merge``: the command's path without the program's name."""
    from typer.main import get_current_context

    try:
        return " ".join(get_current_context().command_path.split()[1:]) or func.__name__
    except RuntimeError:  # called from Python, outside a command line
        return func.__name__


def _translate_environment_error(exc: Exception) -> LoyaltyError | None:
    """A database or a disk that fails under a command is not a bug: exit 10, named."""
    if type(exc).__module__.startswith("sqlalchemy"):
        from loyaltyctl.store.db import describe, resolve_url, translate_database_error

        return translate_database_error(exc, describe(resolve_url(STATE.db, create=False)))
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        where = f" {exc.filename}" if exc.filename else ""
        return Unusable(
            f"cannot write{where}: {exc.strerror}",
            hint="free some space or choose another place; an earlier file there is intact",
        )
    return None


@contextmanager
def open_session(*, write: bool = True, dry_run: bool = False) -> Iterator[Session]:
    """One command, one database transaction, on the database of ``--db``."""
    from loyaltyctl.store.db import open_database, session_scope

    engine = open_database(STATE.db, write=write)
    try:
        with session_scope(engine, write=write, dry_run=dry_run) as session:
            yield session
    finally:
        engine.dispose()


def program_context(session: Session, key: str | None) -> ProgramContext:
    from loyaltyctl.services.context import load_context

    ctx = load_context(session, key)
    STATE.display_tz = ctx.spec.program.tz
    return ctx


# ---- output -------------------------------------------------------------------------


def err(message: str) -> None:
    print(message, file=sys.stderr)


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_jsonable(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not f.name.startswith("_")
        }
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def emit_json(data: Any) -> None:
    """Pretty for a person at a terminal; one line otherwise, so that a cron job's
    ``>> log.jsonl`` is JSON Lines."""
    indent = 2 if is_terminal() else None
    sys.stdout.write(json.dumps(to_jsonable(data), ensure_ascii=False, indent=indent) + "\n")
    sys.stdout.flush()


def is_terminal() -> bool:
    return sys.stdout.isatty()


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(STATE.display_tz or UTC).strftime("%Y-%m-%d %H:%M %Z")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def print_table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None
) -> None:
    """A Rich table on a terminal; aligned plain text when piped."""
    if is_terminal():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for name in columns:
            table.add_column(name)
        for row in rows:
            table.add_row(*(cell(v) for v in row))
        Console(no_color=bool(os.environ.get("NO_COLOR"))).print(table)
        return
    text_rows = [list(columns), *[[cell(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in text_rows) for i in range(len(columns))]
    if title:
        print(title)
    for row in text_rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def print_fields(pairs: Sequence[tuple[str, Any]], *, title: str | None = None) -> None:
    """Key: value lines, for one record."""
    if is_terminal():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, show_header=False, title_justify="left", box=None)
        table.add_column(style="bold")
        table.add_column()
        for key, value in pairs:
            table.add_row(key, cell(value))
        Console(no_color=bool(os.environ.get("NO_COLOR"))).print(table)
        return
    if title:
        print(title)
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        print(f"{key.ljust(width)}  {cell(value)}")


def say(message: str) -> None:
    """A one-line result for people, on stdout."""
    print(message)
