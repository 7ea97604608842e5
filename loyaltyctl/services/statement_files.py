"""Statements of every member as files in a folder, one per member, with an index.

The files are named after the member ids (quoted, so any id gives a safe, distinct name);
``index.csv`` lists them and is written last, renamed into place, so its presence means
the run finished.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from urllib.parse import quote

from sqlmodel import Session

from loyaltyctl.errors import InvalidInput
from loyaltyctl.render import FORMATS, render_statement
from loyaltyctl.services.context import ProgramContext
from loyaltyctl.services.files import atomic_file
from loyaltyctl.services.statements import count_members, iter_statements

INDEX_NAME = "index.csv"
INDEX_COLUMNS = ("member", "file", "opening_balance", "closing_balance", "lines", "tier")

# (members done, members in all), called before the first member and after each one.
StatementProgress = Callable[[int, int], None]


@dataclass
class StatementFiles:
    first: date
    last: date
    format: str
    members: int  # members looked at
    written: int  # statement files written (fewer than members with only_active)
    out: Path
    index: Path


def statement_file_name(code: str, ext: str) -> str:
    """Member ids may hold any character: quoting keeps names safe and distinct."""
    name = quote(code, safe="-_.@+=")
    if name.startswith("."):
        name = "%2E" + name[1:]
    return f"{name}.{ext}"


def statement_folder(out: Path) -> Path:
    """``out``, created if missing; refused when it is a file."""
    if out.exists() and not out.is_dir():
        raise InvalidInput(f"--out {out} is a file", hint="give a folder for the statement files")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_statement_files(
    session: Session,
    ctx: ProgramContext,
    out: Path,
    *,
    first: date,
    last: date,
    fmt: str,
    now: datetime,
    only_active: bool = False,
    progress: StatementProgress | None = None,
) -> StatementFiles:
    """A ``fmt`` (json, csv or html) statement file per member in ``out``, and the index;
    with ``only_active`` only members with movements in the period get a file."""
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown statement format {fmt!r}", hint=f"use {', '.join(FORMATS)}")
    statement_folder(out)
    written = 0
    members = 0
    total = count_members(session, ctx)
    if progress:
        progress(0, total)
    stream = iter_statements(session, ctx, first=first, last=last, now=now, only_active=only_active)
    with atomic_file(out / INDEX_NAME) as index:
        writer = csv.writer(index, lineterminator="\n")
        writer.writerow(INDEX_COLUMNS)
        for members, result in stream:
            if progress:
                progress(members, total)
            if result is None:
                continue
            name = statement_file_name(result.member, fmt)
            with atomic_file(out / name, newline=None) as handle:
                handle.write(render_statement(result, fmt))
            writer.writerow(
                [
                    result.member,
                    name,
                    result.opening_balance,
                    result.closing_balance,
                    len(result.lines),
                    result.tier,
                ]
            )
            written += 1
    return StatementFiles(first, last, fmt, members, written, out, out / INDEX_NAME)
