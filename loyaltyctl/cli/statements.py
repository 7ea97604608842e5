"""``statement``, ``report summary`` and ``export …``: what members, the owner and other
systems see of the ledger. Read-only commands."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from loyaltyctl.cli.common import (
    JsonOpt,
    ProgramOpt,
    command,
    emit_json,
    err,
    now,
    open_session,
    print_fields,
    print_table,
    program_context,
    say,
)

if TYPE_CHECKING:
    from loyaltyctl.services.statements import Statement

FromOpt = Annotated[
    str | None, typer.Option("--from", help="First day of the period (program time zone).")
]
ToOpt = Annotated[str | None, typer.Option("--to", help="Last day of the period (inclusive).")]
PeriodOpt = Annotated[
    str | None,
    typer.Option("--period", help="A calendar month instead of --from/--to, e.g. 2026-10."),
]

report_app = typer.Typer(help="Reports on the whole program.", no_args_is_help=True)
export_app = typer.Typer(
    help="Export members, transactions, the ledger or vouchers as CSV or JSON Lines.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("statement")(statement)
    app.add_typer(report_app, name="report")
    app.add_typer(export_app, name="export")


# ---- shared helpers ----------------------------------------------------------------------


def _period_days(from_: str | None, to: str | None, period: str | None) -> tuple[date, date]:
    from loyaltyctl.rules.timeutil import parse_day
    from loyaltyctl.services.statements import month_days

    if period is not None:
        if from_ is not None or to is not None:
            raise _usage("give either --period or --from/--to, not both")
        return month_days(period)
    if from_ is None or to is None:
        raise _usage("a statement needs a period: --from D --to D, or --period YYYY-MM")
    return parse_day(from_, what="--from"), parse_day(to, what="--to")


def _usage(message: str) -> typer.Exit:
    """A usage error (exit 2), reported like every other error."""
    err(f"error: {message}")
    err("hint: see the options with: loyaltyctl statement --help")
    return typer.Exit(2)


def _progress_wanted() -> bool:
    return sys.stderr.isatty()


# ---- statement ---------------------------------------------------------------------------


@command
def statement(
    member: Annotated[
        str | None, typer.Argument(help="The member's id (or --all for every member).")
    ] = None,
    from_: FromOpt = None,
    to: ToOpt = None,
    period: PeriodOpt = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="text (a table, the default for one member), json, csv or html "
            "(default with --all: json).",
        ),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option("--out", help="File to write (one member; default stdout) or folder (--all)."),
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="A statement for every member, one file each in --out.")
    ] = False,
    only_active: Annotated[
        bool,
        typer.Option(
            "--only-active", help="With --all: only members with movements in the period."
        ),
    ] = False,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A member's points statement for a period: opening balance, every movement, totals,
    closing balance, tier progress, expiring points and vouchers."""
    first, last = _period_days(from_, to, period)
    if all_:
        if member is not None:
            raise _usage("give a MEMBER or --all, not both")
        if out is None:
            raise _usage("--all needs --out DIR for the statement files")
        chosen = fmt or "json"
        if chosen not in ("json", "csv", "html"):
            raise _usage("--all writes files: use --format json, csv or html")
        _statement_all(first, last, chosen, Path(out), only_active, program, json_out)
        return
    if member is None:
        raise _usage("give a MEMBER, or --all for every member")
    if only_active:
        raise _usage("--only-active goes with --all")
    chosen = fmt or ("json" if json_out else "text")
    if chosen not in ("text", "json", "csv", "html"):
        raise _usage(f"unknown --format {chosen!r}: use text, json, csv or html")
    if json_out and chosen != "json":
        raise _usage("--json goes with --format json only")
    from loyaltyctl.services.statements import statement_for

    with open_session(write=False) as session:
        ctx = program_context(session, program)
        result = statement_for(session, ctx, member, first=first, last=last, now=now())
    if chosen == "text":
        if out is not None:
            raise _usage("--out needs --format json, csv or html")
        _print_statement(result)
        return
    from loyaltyctl.render import render_statement

    text = render_statement(result, chosen)
    if out is None or out == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from loyaltyctl.services.files import atomic_file

    with atomic_file(Path(out)) as handle:
        handle.write(text)
    err(f"wrote the statement of {result.member} to {out}")


def _print_statement(s: Statement) -> None:
    print_fields(
        [
            ("member", s.member),
            ("program", s.program),
            ("period", f"{s.first} to {s.last}"),
            ("opening balance", s.opening_balance),
            ("closing balance", s.closing_balance),
            ("tier", s.tier),
            ("hold until", s.hold_until),
        ],
        title=f"{s.program_name}: statement",
    )
    print_table(
        ["date", "ref", "kind", "description", "points", "balance"],
        [
            [
                line.date,
                line.ref,
                line.kind,
                line.description + (" (backdated)" if line.backdated else ""),
                f"{line.points:+d}",
                line.balance,
            ]
            for line in s.lines
        ],
        title="movements",
    )
    if s.expiring:
        print_table(
            ["expires on", "points"], [[e.date, e.points] for e in s.expiring], title="expiring"
        )


def _statement_all(
    first: date,
    last: date,
    fmt: str,
    out: Path,
    only_active: bool,
    program: str | None,
    json_out: bool,
) -> None:
    from loyaltyctl.services.statement_files import statement_folder, write_statement_files

    statement_folder(out)
    with open_session(write=False) as session, _progress(json_out) as progress:
        ctx = program_context(session, program)
        result = write_statement_files(
            session,
            ctx,
            out,
            first=first,
            last=last,
            fmt=fmt,
            now=now(),
            only_active=only_active,
            progress=progress,
        )
    summary = {
        "from": result.first,
        "to": result.last,
        "format": result.format,
        "members": result.members,
        "written": result.written,
        "out": str(result.out),
        "index": str(result.index),
    }
    if json_out:
        emit_json(summary)
    else:
        say(
            f"wrote {result.written} statements of {result.members} members to {result.out} "
            f"(index: {result.index.name})"
        )


@contextmanager
def _progress(json_out: bool) -> Iterator[Any]:
    """A progress bar on stderr when it is a terminal; a no-op under cron or --json.

    It appears at the first report, which gives the number of members."""
    if json_out or not _progress_wanted():
        yield lambda done, total: None
        return
    from rich.console import Console
    from rich.progress import Progress

    bar: Any = None
    task: Any = None

    def report(done: int, total: int) -> None:
        nonlocal bar, task
        if bar is None:
            bar = Progress(console=Console(stderr=True), transient=True)
            task = bar.add_task("statements", total=total)
            bar.start()
        bar.update(task, completed=done)

    try:
        yield report
    finally:
        if bar is not None:
            bar.stop()


# ---- report summary ------------------------------------------------------------------------


@report_app.command("summary")
@command
def report_summary(
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="The date the figures are for (default: --to, or today)."),
    ] = None,
    from_: Annotated[
        str | None, typer.Option("--from", help="First day of the period for period figures.")
    ] = None,
    to: Annotated[str | None, typer.Option("--to", help="Last day of the period.")] = None,
    by: Annotated[
        str | None,
        typer.Option(
            "--by", help="store: add the period's purchases, returns and points per store."
        ),
    ] = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The owner's numbers as of a date: members, points issued, redeemed, expired and
    outstanding, liability, redemption and breakage rates, members per tier."""
    from loyaltyctl.rules.timeutil import parse_day
    from loyaltyctl.services.reports import summary

    day = parse_day(as_of, what="--as-of") if as_of is not None else None
    first = parse_day(from_, what="--from") if from_ else None
    last = parse_day(to, what="--to") if to else None
    with open_session(write=False) as session:
        ctx = program_context(session, program)
        result = summary(session, ctx, as_of=day, first=first, last=last, now=now(), by=by)
    if json_out:
        data = _report_json(result)
        if result.stores is None:
            del data["stores"]
        emit_json(data)
        return
    period = result.period
    print_fields(
        [
            ("members", result.members),
            ("active members (90 days)", result.active_members),
            (f"new members {period.from_} to {period.to}", result.new_members),
            ("points issued", result.points_issued),
            ("points redeemed", result.points_redeemed),
            ("points expired", result.points_expired),
            ("points clawed back", result.points_clawed_back),
            (
                "points adjusted in / out",
                f"{result.points_adjusted_in} / {result.points_adjusted_out}",
            ),
            ("points outstanding", result.points_outstanding),
            ("points owed by members", result.points_debt),
            ("liability", f"{result.liability} {result.currency}"),
            ("redemption rate", f"{result.redemption_rate:.1%}"),
            ("breakage rate", f"{result.breakage_rate:.1%}"),
            *((f"tier {key}", count) for key, count in result.tiers.items()),
        ],
        title=f"{result.program}: summary as of {result.as_of}",
    )
    if result.stores is not None:
        print_table(
            [
                "store",
                "purchases",
                "sales",
                "returns",
                "returned",
                "earned",
                "clawed back",
                "members",
            ],
            [
                (
                    s.store or "(none)",
                    s.purchases,
                    s.sales,
                    s.returns,
                    s.returned,
                    s.points_earned,
                    s.points_clawed_back,
                    s.members,
                )  # fmt: skip
                for s in result.stores
            ],
            title=f"by store, {period.from_} to {period.to}",
        )


def _report_json(result: Any) -> dict[str, Any]:
    """JSON shape of the report: ``period.from_`` is written ``from``."""
    from loyaltyctl.cli.common import to_jsonable

    data: dict[str, Any] = to_jsonable(result)
    period = data["period"]
    data["period"] = {("from" if k == "from_" else k): v for k, v in period.items()}
    return data


# ---- export --------------------------------------------------------------------------------

SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="Only rows recorded or changed from this date or time on (program time zone).",
    ),
]
ExportFormatOpt = Annotated[
    str | None,
    typer.Option("--format", help="csv or jsonl (default: from the --out extension)."),
]
ExportOutOpt = Annotated[
    str, typer.Option("--out", help="File to write ('-' for stdout); replaced when complete.")
]


def _export(kind: str, since: str | None, fmt: str | None, out: str, program: str | None) -> None:
    from loyaltyctl.render.rows import FORMATS, write_rows
    from loyaltyctl.rules.timeutil import parse_when
    from loyaltyctl.services.exports import export

    chosen = fmt or {".csv": "csv", ".jsonl": "jsonl"}.get(Path(out).suffix.lower())
    if chosen is None:
        raise _usage("say --format csv or jsonl (the --out name does not tell)")
    if chosen not in FORMATS:
        raise _usage(f"unknown --format {chosen!r}: use csv or jsonl")
    with open_session(write=False) as session:
        ctx = program_context(session, program)
        when = parse_when(since, ctx.spec.program.tz, what="--since") if since is not None else None
        result = export(session, ctx, kind, since=when, now=now())
        from loyaltyctl.services.files import atomic_file

        # A write that fails part-way closes the stream (its server-side cursor on
        # PostgreSQL) while the session is still open.
        with closing_rows(result.rows) as rows, atomic_file(out) as handle:
            count = write_rows(handle, chosen, result.columns, rows)
    err(f"exported {count} rows of {kind} to {out}")


@export_app.command("members")
@command
def export_members(
    out: ExportOutOpt,
    since: SinceOpt = None,
    fmt: ExportFormatOpt = None,
    program: ProgramOpt = None,
) -> None:
    """Members with status, tier, balance and contact details (none for erased members)."""
    _export("members", since, fmt, out, program)


@export_app.command("transactions")
@command
def export_transactions(
    out: ExportOutOpt,
    since: SinceOpt = None,
    fmt: ExportFormatOpt = None,
    program: ProgramOpt = None,
) -> None:
    """Transactions (purchases, returns, adjustments, redemptions, …) with their points."""
    _export("transactions", since, fmt, out, program)


@export_app.command("ledger")
@command
def export_ledger(
    out: ExportOutOpt,
    since: SinceOpt = None,
    fmt: ExportFormatOpt = None,
    program: ProgramOpt = None,
) -> None:
    """Every points entry: the append-only ledger, for the accountant."""
    _export("ledger", since, fmt, out, program)


@export_app.command("vouchers")
@command
def export_vouchers(
    out: ExportOutOpt,
    since: SinceOpt = None,
    fmt: ExportFormatOpt = None,
    program: ProgramOpt = None,
) -> None:
    """Vouchers with their status and dates."""
    _export("vouchers", since, fmt, out, program)


@contextmanager
def closing_rows(rows: Iterable[Any]) -> Iterator[Iterable[Any]]:
    try:
        yield rows
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()
