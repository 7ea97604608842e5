"""``events list`` and ``events pull``: the feed other programs (a CRM, a mailer) read."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from loyaltyctl.cli.common import (
    STATE,
    JsonOpt,
    ProgramOpt,
    command,
    err,
    now,
    open_session,
    print_table,
    program_context,
    say,
)
from loyaltyctl.errors import DeliveryFailed

if TYPE_CHECKING:
    from loyaltyctl.services.event_feed import Event

app = typer.Typer(
    help="The event feed: what changed, for a CRM or a mailer (JSON Lines).",
    no_args_is_help=True,
)

LimitOpt = Annotated[int | None, typer.Option("--limit", help="At most this many events.", min=1)]


def _rows(events: list[Event]) -> list[tuple[object, ...]]:
    import json

    return [
        (e.id, e.at, e.type, e.member or "", json.dumps(e.data, ensure_ascii=False)) for e in events
    ]


def _text(event: Event) -> str:
    import json

    from loyaltyctl.cli.common import cell

    data = json.dumps(event.data, ensure_ascii=False)
    return f"{event.id}  {cell(event.at)}  {event.type}  {event.member or '-'}  {data}"


@app.command("list")
@command
def list_(
    after: Annotated[int, typer.Option("--after", help="Only events after this id.")] = 0,
    type_: Annotated[
        str | None, typer.Option("--type", help="Only events of this type, e.g. txn.posted.")
    ] = None,
    limit: LimitOpt = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List the program's events, oldest first; --json writes JSON Lines.

    Reading moves no cursor: use `events pull` to consume the feed."""
    from loyaltyctl.services.event_feed import list_events

    with open_session(write=False) as session:
        ctx = program_context(session, program)
        events = list_events(session, ctx, after=after, type_=type_, limit=limit)
        if json_out:
            for event in events:
                sys.stdout.write(event.line() + "\n")
            sys.stdout.flush()
            return
        found = list(events)
    if not found:
        say("no events")
        return
    print_table(["id", "at", "type", "member", "data"], _rows(found))


@app.command("pull")
@command
def pull(
    consumer: Annotated[
        str, typer.Argument(help="Who reads (e.g. mailer): each consumer has its own cursor.")
    ],
    limit: LimitOpt = None,
    exec_: Annotated[
        str | None,
        typer.Option(
            "--exec",
            help="Run this shell command once per event, the event's JSON on its stdin; "
            "the cursor moves past an event only when it exits 0.",
        ),
    ] = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Deliver the events after CONSUMER's cursor and move the cursor past them.

    At least once, in id order: consumers de-duplicate by id. Without --exec the events
    go to stdout (JSON Lines with --json). With --exec the first event whose command
    fails stops the pull with exit 9; it comes again at the next pull. Two pulls of one
    consumer at once take turns."""
    from loyaltyctl.services.event_feed import pull_events
    from loyaltyctl.store.db import open_database

    def to_stdout(event: Event) -> bool:
        # Written and flushed before the cursor moves past it.
        sys.stdout.write((event.line() if json_out else _text(event)) + "\n")
        sys.stdout.flush()
        return True

    def to_command(event: Event) -> bool:
        assert exec_ is not None
        # The command's own output goes to stderr: stdout is ours (the events it took).
        done = subprocess.run(
            exec_, shell=True, input=event.line() + "\n", text=True, stdout=subprocess.PIPE
        )
        if done.stdout:
            sys.stderr.write(done.stdout)
        if done.returncode != 0:
            return False
        if json_out:
            sys.stdout.write(event.line() + "\n")
            sys.stdout.flush()
        return True

    engine = open_database(STATE.db)
    try:
        result = pull_events(
            engine,
            program,
            consumer,
            deliver=to_stdout if exec_ is None else to_command,
            limit=limit,
            save_each=exec_ is not None,
            clock=now,
        )
    finally:
        engine.dispose()
    if exec_ is None and not json_out and not result.delivered:
        err("no new events")
    elif exec_ is not None and not json_out:
        say(
            f"delivered {result.delivered} event{'s' if result.delivered != 1 else ''} "
            f"to {exec_}; consumer {result.consumer} is at event {result.cursor}"
        )
    if result.failed is not None:
        raise DeliveryFailed(
            f"{exec_} failed on event {result.failed.id} ({result.failed.type}); "
            f"consumer {result.consumer} stays at event {result.cursor}",
            hint="fix the command; the next pull delivers that event again",
        )
