"""``member import`` and ``txn import``: members and transactions in bulk from CSV or JSON
Lines files.

The options, the progress bar and the summary; which transactions the import runs in
(one per batch with ``--rejects``, one for the whole file without) is
``services.imports.run``'s.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from loyaltyctl.cli.common import (
    STATE,
    JsonOpt,
    ProgramOpt,
    command,
    emit_json,
    err,
    now,
    say,
)
from loyaltyctl.errors import InvalidInput, LoyaltyError

if TYPE_CHECKING:
    from loyaltyctl.services.imports.batch import BatchResult
    from loyaltyctl.services.imports.reading import ImportFile
    from loyaltyctl.services.imports.run import ImportSummary

FileArg = Annotated[
    Path, typer.Argument(help="A CSV file with a header row, or a JSON Lines file.")
]
RejectsOpt = Annotated[
    Path | None,
    typer.Option(
        "--rejects",
        help="Write bad rows to this file (the input's format, with line and reason) and "
        "import the rest, committing batch by batch. Without it any bad row fails the whole "
        "import and nothing is written.",
    ),
]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Report what the import would do; write nothing to the database."
    ),
]
FormatOpt = Annotated[
    str | None,
    typer.Option("--format", help="csv or jsonl. Default: from the file's extension."),
]

MapOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--map",
        help="COLUMN=FIELD: read the file's column COLUMN as FIELD (repeatable), e.g. "
        "--map Betrag=amount.",
    ),
]
IgnoreOpt = Annotated[
    list[str] | None,
    typer.Option("--ignore", help="Skip the file's column COLUMN (repeatable)."),
]

BATCH_ROWS_ENV = "LOYALTYCTL_IMPORT_BATCH_ROWS"
# Test hook: SIGKILL this process after that many batches, to prove a killed import
# re-runs to exactly-once.
DIE_AFTER_ENV = "LOYALTYCTL_TEST_DIE_AFTER_BATCHES"


def register(app: typer.Typer) -> None:
    """Add ``import`` to the ``member`` and ``txn`` groups main.py mounted."""
    from loyaltyctl.cli import member, txn

    member.app.command("import")(member_import)
    txn.app.command("import")(txn_import)


@command
def member_import(
    file: FileArg,
    rejects: RejectsOpt = None,
    dry_run: DryRunOpt = False,
    fmt: FormatOpt = None,
    map_: MapOpt = None,
    ignore: IgnoreOpt = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Enroll members from a file (as member enroll would, signup bonus included).

    Columns: member (required), name, email, phone, birthday, enrolled_at, and
    opening_balance / opening_expires for points brought from another system. A member
    already enrolled with the same details is a duplicate; with different ones, a conflict.
    CSV columns are separated by commas, semicolons or tabs (told from the header).
    """
    _run("member", file, rejects, dry_run, fmt, program, json_out, map_, ignore)


@command
def txn_import(
    file: FileArg,
    rejects: RejectsOpt = None,
    dry_run: DryRunOpt = False,
    fmt: FormatOpt = None,
    map_: MapOpt = None,
    ignore: IgnoreOpt = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Post purchases, returns and adjustments from a file, in file order.

    Columns: type (purchase by default, return, adjust), member, ref, amount, at, category,
    original (returns), points and reason (adjustments), store (the shop or till). Rows
    already posted with the same data are duplicates, so running a file again changes
    nothing. CSV columns are separated by commas, semicolons or tabs (told from the header).
    """
    _run("txn", file, rejects, dry_run, fmt, program, json_out, map_, ignore)


def _run(
    kind: str,
    file: Path,
    rejects: Path | None,
    dry_run: bool,
    fmt: str | None,
    program: str | None,
    json_out: bool,
    map_: list[str] | None,
    ignore: list[str] | None,
) -> None:
    from loyaltyctl.services.imports.run import DEFAULT_BATCH_ROWS, FileImport, stopped_note
    from loyaltyctl.store.db import open_database

    batch_rows = _env_count(BATCH_ROWS_ENV, DEFAULT_BATCH_ROWS)
    die_after = _env_count(DIE_AFTER_ENV, 0)
    rename = _mapping(map_ or [])
    with FileImport(
        kind, file, rejects=rejects, dry_run=dry_run, fmt=fmt, rename=rename, ignore=ignore or ()
    ) as job:
        engine = open_database(STATE.db)
        progress = _Progress(job.source, enabled=not json_out and sys.stderr.isatty())

        def advance(number: int, result: BatchResult) -> None:
            progress.advance(result)
            if die_after and number >= die_after:
                os.kill(os.getpid(), signal.SIGKILL)

        try:
            with progress:
                summary = job.run(
                    engine, program=program, now=now(), batch_rows=batch_rows, on_batch=advance
                )
        except BaseException as exc:
            # Batches committed before the failure stay: say so, and how to finish.
            note = stopped_note(job.summary) if job.batch_by_batch else None
            if note and isinstance(exc, LoyaltyError):
                exc.hint = f"{exc.hint}\nhint: {note}" if exc.hint else note
            elif note:
                err(f"note: {note}")
            raise
        finally:
            engine.dispose()
    _render(kind, summary, json_out)


def _mapping(items: list[str]) -> dict[str, str]:
    """``--map COLUMN=FIELD`` options as {COLUMN: FIELD}."""
    found: dict[str, str] = {}
    for item in items:
        column, sep, field = item.partition("=")
        if not sep or not column.strip() or not field.strip():
            raise InvalidInput(
                f"--map {item!r} is not COLUMN=FIELD", hint="e.g. --map Betrag=amount"
            )
        found[column.strip()] = field.strip()
    return found


def _env_count(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise InvalidInput(f"{name}={raw!r} is not a positive whole number")
    return int(raw)


def _render(kind: str, summary: ImportSummary, json_out: bool) -> None:
    if json_out:
        emit_json(
            {
                "file": summary.file,
                "rows": summary.rows,
                "applied": summary.applied,
                "duplicates": summary.duplicates,
                "rejected": summary.rejected,
                "dry_run": summary.dry_run,
                "seconds": summary.seconds,
                "rejects_file": summary.rejects_file,
            }
        )
        return
    rate = summary.rows / summary.seconds if summary.seconds else 0.0
    rejected = f"{summary.rejected} rejected"
    if summary.rejected and summary.rejects_file:
        rejected += f" (in {summary.rejects_file})"
    note = " — dry run, nothing written" if summary.dry_run else ""
    say(
        f"{kind} import of {summary.file}: {summary.rows} rows, {summary.applied} applied, "
        f"{summary.duplicates} duplicates, {rejected} in {summary.seconds:.2f} s "
        f"({rate:,.0f} rows/s){note}"
    )
    if summary.rejected and summary.rejects_file:
        err(f"warning: {rejected}")


class _Progress:
    """Rows and rows per second on stderr, only for a person at a terminal."""

    def __init__(self, source: ImportFile, *, enabled: bool) -> None:
        self.source = source
        self.enabled = enabled
        self.rows = 0
        self.started = time.perf_counter()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if not self.enabled:
            return self
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(
            TextColumn("importing"),
            BarColumn(),
            TextColumn("{task.fields[rows]:,} rows"),
            TextColumn("{task.fields[rate]:,.0f} rows/s"),
            TimeElapsedColumn(),
            console=Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR"))),
        )
        self._task = self._bar.add_task(
            "import", total=max(self.source.count_lines(), 1), rows=0, rate=0.0
        )
        self._bar.start()
        return self

    def advance(self, result: BatchResult) -> None:
        self.rows += result.rows
        if self._bar is None:
            return
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self._bar.update(
            self._task, completed=result.last_line, rows=self.rows, rate=self.rows / elapsed
        )

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
