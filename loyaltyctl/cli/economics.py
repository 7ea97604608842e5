"""``report liability|rewards|members|tiers|dashboard``: what the program costs and
earns. Read-only commands, added to the ``report`` group of cli/statements.py."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
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
    is_terminal,
    now,
    open_session,
    print_fields,
    print_table,
    program_context,
    to_jsonable,
)

if TYPE_CHECKING:
    from loyaltyctl.services.economics import LiabilityReport

FromOpt = Annotated[
    str | None, typer.Option("--from", help="First day of the period (program time zone).")
]
ToOpt = Annotated[
    str | None, typer.Option("--to", help="Last day of the period (inclusive; default today).")
]
AsOfOpt = Annotated[
    str | None, typer.Option("--as-of", help="The day the figures are for (default: today).")
]


def register(report_app: typer.Typer) -> None:
    report_app.command("liability")(report_liability)
    report_app.command("rewards")(report_rewards)
    report_app.command("members")(report_members)
    report_app.command("tiers")(report_tiers)
    report_app.command("dashboard")(report_dashboard)


def _day(text: str | None, what: str) -> date | None:
    from loyaltyctl.rules.timeutil import parse_day

    return parse_day(text, what=what) if text else None


def _renamed(data: Any) -> Any:
    """``from_`` is written ``from`` in JSON."""
    if isinstance(data, dict):
        return {("from" if k == "from_" else k): _renamed(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_renamed(v) for v in data]
    return data


# ---- liability -----------------------------------------------------------------------------


@command
def report_liability(
    from_: FromOpt = None,
    to: ToOpt = None,
    journal: Annotated[
        str | None,
        typer.Option("--journal", help="Also write the period's journal entries to this CSV file."),
    ] = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The points liability: roll-forward from --from (default: the first of --to's
    month) to --to, its value, ageing, points expiring by month, cohorts by month of
    earning and the expected redemptions (chain ladder) behind the deferred revenue."""
    from loyaltyctl.services.economics import liability

    first, last = _day(from_, "--from"), _day(to, "--to")
    with open_session(write=False) as session:
        ctx = program_context(session, program)
        result = liability(session, ctx, first=first, last=last, now=now())
    if journal is not None:
        _write_journal(result, Path(journal))
    if json_out:
        emit_json(_renamed(to_jsonable(result)))
        return
    _print_liability(result)


def _write_journal(result: LiabilityReport, path: Path) -> None:
    from loyaltyctl.services.economics import JOURNAL_COLUMNS
    from loyaltyctl.services.files import atomic_file

    with atomic_file(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(JOURNAL_COLUMNS)
        for e in result.journal:
            writer.writerow([e.date.isoformat(), e.account, e.debit, e.credit, e.memo])
    err(f"wrote {len(result.journal)} journal lines to {path}")


def _print_liability(r: LiabilityReport) -> None:
    cur = r.currency
    print_fields(
        [
            ("opening balance", f"{r.opening_balance} points ({r.opening_value} {cur})"),
            ("+ issued", r.issued),
            ("− returned", r.returned),
            ("− redeemed", r.redeemed),
            ("+ refunded", r.refunded),
            ("− expired", r.expired),
            ("+ adjusted in", r.adjusted_in),
            ("− adjusted out", r.adjusted_out),
            ("closing balance", f"{r.closing_balance} points ({r.closing_value} {cur})"),
            ("points in lots", r.points_in_lots),
            ("expected redemption rate", f"{r.expected_redemption_rate:.1%}"),
            ("expected breakage", f"{r.expected_breakage_points} points"),
            ("deferred revenue", f"{r.deferred_revenue} {cur} (was {r.opening_deferred_revenue})"),
            ("estimate", r.estimate_method),
        ],
        title=f"{r.program}: liability {r.from_} to {r.to} (point value {r.point_value} {cur})",
    )
    print_table(
        ("month", "opening", "issued", "returned", "redeemed", "refunded", "expired", "adj in",
         "adj out", "closing"),
        [
            (m.month, m.opening_balance, m.issued, m.returned, m.redeemed, m.refunded, m.expired,
             m.adjusted_in, m.adjusted_out, m.closing_balance)
            for m in r.months
        ],
        title="roll-forward by month",
    )  # fmt: skip
    bars("issued by month", [(m.month, m.issued) for m in r.months], "green")
    bars("redeemed by month", [(m.month, m.redeemed) for m in r.months], "cyan")
    bars("ageing (points in lots by time to expiry)", [(a.bucket, a.points) for a in r.ageing])
    if r.expiring:
        print_table(
            ("month", "points expiring"), [(x.month, x.points) for x in r.expiring],
            title="points expiring by month",
        )  # fmt: skip
    if r.cohorts:
        print_table(
            ("cohort", "issued", "redeemed", "expired", "outstanding", "ultimate rate",
             "expected"),
            [
                (c.cohort, c.issued, c.redeemed, c.expired, c.outstanding,
                 f"{c.ultimate_redemption_rate:.1%}", c.expected_redemptions)
                for c in r.cohorts
            ],
            title="cohorts by month of earning",
        )  # fmt: skip


def bars(title: str, rows: Sequence[tuple[str, int]], color: str = "blue") -> None:
    """A horizontal bar chart: Rich bars on a terminal, '#' bars when piped."""
    if not rows:
        return
    top = max((v for _, v in rows), default=0) or 1
    label = max(len(k) for k, _ in rows)
    if is_terminal():
        from rich.bar import Bar
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, title_justify="left", show_header=False, box=None)
        table.add_column(justify="right")
        table.add_column(width=40)
        table.add_column(justify="right")
        for key, value in rows:
            table.add_row(key, Bar(top, 0, max(value, 0), color=color), str(value))
        Console(no_color=bool(os.environ.get("NO_COLOR"))).print(table)
        return
    print(title)
    for key, value in rows:
        width = round(40 * max(value, 0) / top)
        print(f"{key.rjust(label)}  {'#' * width}{' ' * (40 - width)}  {value}")


# ---- rewards, members, tiers ---------------------------------------------------------------


@command
def report_rewards(
    from_: FromOpt = None,
    to: ToOpt = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Vouchers issued in the period by reward and what became of them by its end: used,
    cancelled, expired, live; points spent on the used ones and their cost."""
    from loyaltyctl.services.insights import reward_report

    with open_session(write=False) as session:
        ctx = program_context(session, program)
        rows = reward_report(
            session, ctx, first=_day(from_, "--from"), last=_day(to, "--to"), now=now()
        )
    if json_out:
        emit_json(rows)
        return
    print_table(
        ("reward", "issued", "used", "cancelled", "expired", "live", "points", "cost"),
        [
            (r.reward, r.issued, r.used, r.cancelled, r.expired, r.live, r.points, r.cost)
            for r in rows
        ],
    )


@command
def report_members(
    top: Annotated[int, typer.Option("--top", help="How many members to list.")] = 10,
    by: Annotated[
        str, typer.Option("--by", help="Rank by spend (net of returns), points or visits.")
    ] = "spend",
    from_: Annotated[
        str | None, typer.Option("--from", help="First day of the period (default: all time).")
    ] = None,
    to: ToOpt = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The best members of the period by spend, points or visits, with their balance at
    its end, tier and last purchase. Members are shown by code only."""
    from loyaltyctl.services.insights import top_members

    with open_session(write=False) as session:
        ctx = program_context(session, program)
        rows = top_members(
            session,
            ctx,
            top=top,
            by=by,
            first=_day(from_, "--from"),
            last=_day(to, "--to"),
            now=now(),
        )
    if json_out:
        emit_json(rows)
        return
    print_table(
        ("member", "spend", "points", "visits", "balance", "tier", "last purchase"),
        [
            (r.member, r.spend, r.points, r.visits, r.balance, r.tier, r.last_purchase_at)
            for r in rows
        ],
    )
    bars(f"top members by {by}", [(r.member, _ranked(r, by)) for r in rows])


def _ranked(row: Any, by: str) -> int:
    value = getattr(row, by)
    return int(float(value)) if by == "spend" else int(value)


_WITHIN = re.compile(r"(\d+)d?")


@command
def report_tiers(
    at_risk: Annotated[
        bool, typer.Option("--at-risk", help="Members whose tier the next review would lower.")
    ] = False,
    within: Annotated[
        str, typer.Option("--within", help="Holds ending within this many days, e.g. 30d.")
    ] = "30d",
    as_of: AsOfOpt = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """With --at-risk: members whose tier hold ends within --within (or has ended) and
    whose qualifying activity is below their tier's minimum."""
    from loyaltyctl.errors import InvalidInput
    from loyaltyctl.services.insights import tiers_at_risk

    if not at_risk:
        err("error: say what to report: --at-risk")
        err("hint: loyaltyctl report tiers --at-risk --within 30d")
        raise typer.Exit(2)
    match = _WITHIN.fullmatch(within.strip())
    if match is None:
        raise InvalidInput(f"--within {within!r} is not a number of days", hint="e.g. 30d")
    with open_session(write=False) as session:
        ctx = program_context(session, program)
        rows = tiers_at_risk(
            session, ctx, within=int(match[1]), as_of=_day(as_of, "--as-of"), now=now()
        )
    if json_out:
        emit_json(rows)
        return
    print_table(
        ("member", "tier", "hold until", "qualifying", "needed", "would drop to"),
        [(r.member, r.tier, r.hold_until, r.qualifying, r.needed, r.would_drop_to) for r in rows],
    )


# ---- dashboard -----------------------------------------------------------------------------


@command
def report_dashboard(
    out: Annotated[str, typer.Option("--out", help="The HTML file to write.")],
    as_of: AsOfOpt = None,
    program: ProgramOpt = None,
) -> None:
    """One self-contained, printable HTML page (inline CSS and SVG, nothing fetched):
    the summary, the liability roll-forward by month over twelve months, ageing, tiers
    and rewards."""
    from loyaltyctl.render.dashboard_html import render_dashboard
    from loyaltyctl.services.files import atomic_file
    from loyaltyctl.services.insights import dashboard

    with open_session(write=False) as session:
        ctx = program_context(session, program)
        data = dashboard(session, ctx, as_of=_day(as_of, "--as-of"), now=now())
    with atomic_file(Path(out)) as handle:
        handle.write(render_dashboard(data))
    err(f"wrote the dashboard of {data.program} as of {data.as_of} to {out}")
