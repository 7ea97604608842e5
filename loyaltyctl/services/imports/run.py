"""An import from start to end: the file read in batches, each batch applied by its
importer, and the transactions they run in.

With a rejects file each batch is committed on its own (an import killed half-way keeps
the batches it committed; run again, those rows are duplicates by their references), bad
rows go to the rejects file and the rest goes in. Without it the whole file is one
transaction: any bad row fails the import and nothing is written. A dry run is one
transaction, rolled back.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from loyaltyctl.errors import InvalidInput
from loyaltyctl.services.context import load_context
from loyaltyctl.services.imports.batch import BatchResult, Importer
from loyaltyctl.services.imports.member_rows import MemberImporter
from loyaltyctl.services.imports.reading import MEMBER_LAYOUT, TXN_LAYOUT, ImportFile, Layout
from loyaltyctl.services.imports.rejects import Rejected, RejectsFile
from loyaltyctl.services.imports.txn_rows import TxnImporter
from loyaltyctl.store.db import session_scope

DEFAULT_BATCH_ROWS = 10_000

IMPORTS: dict[str, tuple[Layout, type[Importer]]] = {
    "member": (MEMBER_LAYOUT, MemberImporter),
    "txn": (TXN_LAYOUT, TxnImporter),
}


@dataclass
class ImportSummary:
    file: str
    rows: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    dry_run: bool = False
    seconds: float = 0.0
    rejects_file: str | None = None
    first_rejected: list[Rejected] = field(default_factory=list)

    def add(self, result: BatchResult) -> None:
        self.rows += result.rows
        self.applied += result.applied
        self.duplicates += result.duplicates
        self.rejected += len(result.rejected)
        room = 5 - len(self.first_rejected)
        if room > 0:
            self.first_rejected.extend(result.rejected[:room])


class FileImport:
    """One file to import, of ``kind`` "member" or "txn". Opening it reads and checks the
    header (and, when batches are committed one by one, every JSON line's fields) and
    creates the rejects file, all before the database is touched; ``run`` imports it;
    ``close`` closes the rejects file."""

    def __init__(
        self,
        kind: str,
        file: Path,
        *,
        rejects: Path | None = None,
        dry_run: bool = False,
        fmt: str | None = None,
        rename: dict[str, str] | None = None,
        ignore: Iterable[str] = (),
    ) -> None:
        """``rename`` and ``ignore``: see ``ImportFile`` (``--map``, ``--ignore``)."""
        self.started = time.perf_counter()
        layout, self.importer_class = IMPORTS[kind]
        self.file = file
        self.source = ImportFile(file, layout, fmt, rename=rename, ignore=ignore)
        if rejects is not None and rejects.resolve() == file.resolve():
            raise InvalidInput("--rejects must not be the file being imported")
        self.dry_run = dry_run
        self.batch_by_batch = rejects is not None and not dry_run
        self.summary = ImportSummary(
            file=str(file), dry_run=dry_run, rejects_file=str(rejects) if rejects else None
        )
        if self.batch_by_batch:
            # Nothing may be committed before an unknown field is refused.
            self.source.check_fields()
        self.out = RejectsFile(rejects, self.source) if rejects is not None else None

    def __enter__(self) -> FileImport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.out is not None:
            self.out.close()

    def run(
        self,
        engine: Engine,
        *,
        program: str | None,
        now: datetime,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        on_batch: Callable[[int, BatchResult], Any] | None = None,
    ) -> ImportSummary:
        """Import the file into program ``program`` (None: the only one), ``batch_rows``
        rows at a time; ``on_batch(number, result)`` after each batch (committed, when
        batches are committed one by one). Raises InvalidInput, having written nothing,
        when a row is bad and there is no rejects file."""
        with _no_cycle_collection():
            return self._run(engine, program, now, batch_rows, on_batch)

    def _run(
        self,
        engine: Engine,
        program: str | None,
        now: datetime,
        batch_rows: int,
        on_batch: Callable[[int, BatchResult], Any] | None,
    ) -> ImportSummary:
        summary = self.summary
        out = self.out
        source = self.source
        importer_class = self.importer_class

        def record(number: int, result: BatchResult) -> None:
            summary.add(result)
            if out is not None:
                out.write(result.rejected)
            if on_batch is not None:
                on_batch(number, result)

        if self.batch_by_batch:
            with session_scope(engine, write=False) as session:
                ctx = load_context(session, program)
            importer = importer_class(ctx, now=now, keeps_locks=False)
            for number, rows in enumerate(source.batches(batch_rows), 1):
                with session_scope(engine) as session:
                    result = importer.apply(session, rows)
                record(number, result)
        else:
            with session_scope(engine, dry_run=self.dry_run) as session:
                ctx = load_context(session, program)
                importer = importer_class(ctx, now=now, keeps_locks=True)
                for number, rows in enumerate(source.batches(batch_rows), 1):
                    record(number, importer.apply(session, rows))
                importer.write_held(session)
                if summary.rejected and out is None:
                    raise _bad_rows(summary, self.file)
        summary.seconds = round(time.perf_counter() - self.started, 3)
        return summary


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Python's cycle collector off for the import: the rows it makes form no cycles,
    while the members, lots and activity it keeps between batches are hundreds of
    thousands of objects that every full collection walked again (a quarter of the
    import's time on 200,000 purchases)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _bad_rows(summary: ImportSummary, file: Path) -> InvalidInput:
    count = summary.rejected
    lines = [f"  line {r.row.line}: {_cut(r.reason)}" for r in summary.first_rejected]
    if count > len(lines):
        lines.append(f"  … and {count - len(lines)} more")
    what = "would be imported (dry run)" if summary.dry_run else "was imported"
    return InvalidInput(
        f"{count} bad row{'s' if count != 1 else ''} in {file}; nothing {what}:\n"
        + "\n".join(lines),
        hint="fix them, or pass --rejects FILE to import the good rows and set the bad ones "
        "aside (with --dry-run to only list them)",
    )


REASON_WIDTH = 200


def _cut(reason: str) -> str:
    """One reason on one line of reasonable length: a row may quote a huge value."""
    reason = " ".join(reason.split())
    return reason if len(reason) <= REASON_WIDTH else reason[: REASON_WIDTH - 1] + "…"


def stopped_note(summary: ImportSummary) -> str | None:
    """What an import that stopped part-way left in the database, or None when nothing
    was committed."""
    if not summary.rows:
        return None
    return (
        f"the import stopped after {summary.rows:,} rows of {summary.file}:"
        f" {summary.applied:,} applied, {summary.duplicates:,} duplicates,"
        f" {summary.rejected:,} rejected are committed; run the same command again to"
        " finish the job (rows already in are duplicates)"
    )
