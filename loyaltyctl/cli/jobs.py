"""``expire`` (and ``expire notices``), ``tiers review``, ``nightly``: the jobs cron runs.

Each job takes the program's job lock (a second runner waits ``LOYALTYCTL_BUSY_TIMEOUT``
seconds, then exits 7 naming the holder) and runs in one transaction of its own; the
runs, lock included, are services/nightly.py's, and this module parses and renders.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

from loyaltyctl.cli.common import (
    STATE,
    JsonOpt,
    ProgramOpt,
    command,
    emit_json,
    err,
    now,
    print_table,
    program_context,
    say,
    to_jsonable,
)
from loyaltyctl.errors import InvalidInput

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from loyaltyctl.services.jobs import ExpireResult, Progress
    from loyaltyctl.services.tier_review import TierResult

# Test hook: after the first batch of expiry entries is written (not yet committed), touch
# this file and wait, so a test can kill the run half-way. Not for production use.
STALL_ENV = "LOYALTYCTL_TEST_STALL_FILE"
BATCH_ENV = "LOYALTYCTL_EXPIRE_BATCH"

AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="The day to run for (YYYY-MM-DD in the program's time zone). Default: today.",
    ),
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Work it out and report; change nothing.")
]

expire_app = typer.Typer(
    help="Expire the points due by a date (run nightly from cron); `notices` lists what "
    "will expire soon.",
    invoke_without_command=True,
)
tiers_app = typer.Typer(
    help="Tier reviews: holds, requalification, downgrades.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add ``expire``, ``tiers`` and ``nightly`` to the root app."""
    app.add_typer(expire_app, name="expire")
    app.add_typer(tiers_app, name="tiers")
    app.command("nightly")(nightly)


# ---- plumbing ------------------------------------------------------------------------


@contextmanager
def _database() -> Iterator[Engine]:
    from loyaltyctl.store.db import open_database

    engine = open_database(STATE.db)
    try:
        yield engine
    finally:
        engine.dispose()


def _as_of_day(as_of: str | None) -> date | None:
    from loyaltyctl.rules.timeutil import parse_day

    return parse_day(as_of, what="--as-of") if as_of is not None else None


def _batch_size() -> int:
    from loyaltyctl.services.jobs import EXPIRE_BATCH

    raw = os.environ.get(BATCH_ENV)
    if not raw:
        return EXPIRE_BATCH
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise InvalidInput(
            f"{BATCH_ENV}={raw!r} is not a positive number of lots", hint="e.g. 100000"
        )
    return int(raw)


@contextmanager
def _progress(json_out: bool, label: str) -> Iterator[Progress]:
    """A progress bar on stderr when it is a terminal (never with --json or under cron).

    It appears at the first report, so not while the run waits for the job lock."""
    bar: Any = None
    task: Any = None
    wanted = not json_out and sys.stderr.isatty()
    stall = os.environ.get(STALL_ENV)

    def report(done: int, total: int) -> None:
        nonlocal bar, task
        if wanted and bar is None:
            from rich.console import Console
            from rich.progress import Progress as Bar

            bar = Bar(console=Console(stderr=True), transient=True)
            task = bar.add_task(label, total=None)
            bar.start()
        if bar is not None:
            bar.update(task, completed=done, total=total)
        if stall and done > 0:
            Path(stall).write_text(str(os.getpid()), encoding="utf-8")
            time.sleep(600)

    try:
        yield report
    finally:
        if bar is not None:
            bar.stop()


# ---- expire --------------------------------------------------------------------------


def _expire_json(result: ExpireResult) -> dict[str, Any]:
    return {
        "as_of": result.as_of,
        "program": result.program,
        "members": result.members,
        "points_expired": result.points_expired,
        "lots": result.lots,
        "already_done": result.already_done,
        "dry_run": result.dry_run,
    }


def _expire_text(result: ExpireResult) -> str:
    members = f"{result.members} member{'s' if result.members != 1 else ''}"
    if result.already_done:
        return (
            f"points expiry as of {result.as_of} was already done in program {result.program} "
            f"({result.points_expired} points of {members}): nothing changed"
        )
    dry = " (dry run: nothing written)" if result.dry_run else ""
    return (
        f"expired {result.points_expired} points of {members} ({result.lots} lots) as of "
        f"{result.as_of} in program {result.program}{dry}"
    )


@expire_app.callback()
@command
def expire(
    typer_ctx: typer.Context,
    as_of: AsOfOpt = None,
    dry_run: DryRunOpt = False,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Expire every lot of points due by the as-of date.

    A later date catches up on missed nights; running again for a date changes nothing."""
    if typer_ctx.invoked_subcommand is not None:
        return
    from loyaltyctl.services.nightly import run_expire_job

    with _database() as engine:
        # Settled before the run waits for the job lock: a bad setting need not wait.
        day = _as_of_day(as_of)
        batch = _batch_size()
        with _progress(json_out, "expiring points") as progress:
            result = run_expire_job(
                engine,
                program,
                as_of=day,
                dry_run=dry_run,
                batch_size=batch,
                progress=progress,
                clock=now,
            )
    if json_out:
        emit_json(_expire_json(result))
    else:
        say(_expire_text(result))


_WITHIN = re.compile(r"^\s*(\d+)\s*([dw]?)\s*$")


# Notices look ahead at most ten years: further is a typo, and past 2999 a crash.
MAX_WITHIN_DAYS = 3660


def parse_within(text: str) -> int:
    """``30d``, ``4w`` or ``30`` → days."""
    match = _WITHIN.match(text) if text.isascii() else None
    days = int(match[1]) * (7 if match[2] == "w" else 1) if match else 0
    if not 1 <= days <= MAX_WITHIN_DAYS:
        raise InvalidInput(
            f"--within {text!r} is not a period of 1 to {MAX_WITHIN_DAYS} days",
            hint="write a number of days or weeks: 30d, 4w",
        )
    return days


NOTICE_FIELDS = ["member", "name", "email", "status", "date", "points", "balance"]


@expire_app.command("notices")
@command
def notices(
    within: Annotated[
        str, typer.Option("--within", help="How far ahead to look: 30d, 4w (days or weeks).")
    ] = "30d",
    as_of: AsOfOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to this file instead of stdout.")
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="csv or jsonl. Default: from --out's extension, else csv."),
    ] = None,
    program: ProgramOpt = None,
) -> None:
    """List the points that will expire soon, per member and date, for an e-mail tool.

    Covers the days after the as-of day up to --within (the as-of day's own run takes
    what is due on it). CSV with a header, or JSON Lines."""
    from loyaltyctl.rules.timeutil import parse_day
    from loyaltyctl.services.jobs import expiry_notices, resolve_as_of
    from loyaltyctl.store.db import session_scope

    days = parse_within(within)
    kind = _notice_format(fmt, out)
    day = parse_day(as_of, what="--as-of") if as_of is not None else None
    with _database() as engine, session_scope(engine, write=False) as session:
        ctx = program_context(session, program)
        start = resolve_as_of(ctx, day, now=now())
        rows = expiry_notices(session, ctx, as_of=start, days=days)
        if out is None:
            _write_notices(sys.stdout, rows, kind)
            return
        from loyaltyctl.services.files import atomic_file

        with atomic_file(out) as handle:
            count = _write_notices(handle, rows, kind)
    err(f"wrote {count} notice{'s' if count != 1 else ''} to {out}")


def _notice_format(fmt: str | None, out: Path | None) -> str:
    if fmt is None:
        return "jsonl" if out is not None and out.suffix.lower() in (".jsonl", ".ndjson") else "csv"
    if fmt not in ("csv", "jsonl"):
        raise InvalidInput(
            f"--format {fmt!r} is not csv or jsonl", hint="use --format csv or jsonl"
        )
    return fmt


def _write_notices(handle: IO[str], rows: Iterator[Any], kind: str) -> int:
    count = 0
    if kind == "csv":
        writer = csv.DictWriter(handle, fieldnames=NOTICE_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in to_jsonable(row).items()})
            count += 1
    else:
        for row in rows:
            handle.write(json.dumps(to_jsonable(row), ensure_ascii=False) + "\n")
            count += 1
    handle.flush()
    return count


# ---- tiers review -------------------------------------------------------------------------


def _tiers_json(result: TierResult) -> dict[str, Any]:
    return {
        "as_of": result.as_of,
        "program": result.program,
        "members": result.members,
        "upgraded": result.upgraded,
        "downgraded": result.downgraded,
        "requalified": result.requalified,
        "already_done": result.already_done,
        "dry_run": result.dry_run,
    }


_SHOWN_CHANGES = 50


def _tiers_text(result: TierResult) -> None:
    if result.already_done:
        say(
            f"tier review as of {result.as_of} was already done in program {result.program} "
            f"({result.upgraded} up, {result.downgraded} down): nothing changed"
        )
        return
    dry = " (dry run: nothing written)" if result.dry_run else ""
    say(
        f"reviewed {result.members} member{'s' if result.members != 1 else ''} as of "
        f"{result.as_of} in program {result.program}: {result.upgraded} upgraded, "
        f"{result.downgraded} downgraded, {result.requalified} requalified{dry}"
    )
    if result.changes:
        shown = result.changes[:_SHOWN_CHANGES]
        print_table(
            ["member", "from", "to", "hold from", "why"],
            [[c.member, c.before, c.after, c.since, c.why] for c in shown],
        )
        if len(result.changes) > len(shown):
            say(f"… and {len(result.changes) - len(shown)} more")


@tiers_app.command("review")
@command
def review(
    as_of: AsOfOpt = None,
    dry_run: DryRunOpt = False,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Review tiers: requalify or move down members whose hold ended.

    Also moves down, whatever the hold, a member whose tier was bought and returned, and
    moves up anyone whose window qualifies for a higher tier."""
    from loyaltyctl.services.nightly import run_tier_review_job

    with _database() as engine:
        day = _as_of_day(as_of)
        result = run_tier_review_job(engine, program, as_of=day, dry_run=dry_run, clock=now)
    if json_out:
        emit_json(_tiers_json(result))
    else:
        _tiers_text(result)


# ---- nightly ---------------------------------------------------------------------------


@command
def nightly(
    as_of: AsOfOpt = None,
    within: Annotated[
        str,
        typer.Option(
            "--within",
            help="Announce points expiring this far ahead as points.expiring events "
            "(once per member and date): 30d, 4w.",
        ),
    ] = "30d",
    dry_run: DryRunOpt = False,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run points expiry, tier review and voucher expiry: one crontab line.

    One summary, one exit code. Each job is recorded per as-of date: running again
    changes nothing, a later date catches up on missed nights. Points expiring within
    --within get a points.expiring event, once per member and expiry date."""
    from loyaltyctl.services.nightly import run_nightly

    with _database() as engine:
        # Settled before the run waits for the job lock: a bad setting need not wait.
        day = _as_of_day(as_of)
        days = parse_within(within)
        batch = _batch_size()
        with _progress(json_out, "expiring points") as progress:
            result = run_nightly(
                engine,
                program,
                as_of=day,
                dry_run=dry_run,
                batch_size=batch,
                progress=progress,
                clock=now,
                within=days,
            )
    vouchers = result.vouchers
    if not vouchers.available:
        err("warning: this build has no voucher expiry (loyaltyctl.services.rewards); skipped")
    if json_out:
        emit_json(
            {
                "as_of": result.as_of,
                "program": result.program,
                "dry_run": result.dry_run,
                "expire": _expire_json(result.expire),
                "tiers": _tiers_json(result.tiers),
                "vouchers": {"expired": vouchers.expired, "already_done": vouchers.already_done},
                "expiring": {
                    "within_days": result.expiring.within,
                    "events": result.expiring.events,
                },
            }
        )
        return
    say(_expire_text(result.expire))
    _tiers_text(result.tiers)
    done = " (already done)" if vouchers.already_done else ""
    say(f"expired {vouchers.expired} voucher{'s' if vouchers.expired != 1 else ''}{done}")
