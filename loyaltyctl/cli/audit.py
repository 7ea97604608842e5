"""``audit list``."""

from __future__ import annotations

from typing import Annotated

import typer

from loyaltyctl.cli.common import (
    JsonOpt,
    ProgramOpt,
    command,
    emit_json,
    open_session,
    print_table,
    program_context,
)

app = typer.Typer(help="Who changed what: the audit of every write.", no_args_is_help=True)


@app.command("list")
@command
def list_(
    member: Annotated[str | None, typer.Option("--member", help="Only this member.")] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="From this time on (ISO 8601; no offset = program zone)."),
    ] = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Every change with who made it, the command and its reference, oldest first."""
    from loyaltyctl.rules.timeutil import parse_when
    from loyaltyctl.services.audit import list_audit

    with open_session(write=False) as session:
        ctx = program_context(session, program) if member or since else None
        when = parse_when(since, ctx.spec.program.tz) if since and ctx else None
        rows = list_audit(session, ctx, member=member, since=when)
    if json_out:
        emit_json(rows)
        return
    print_table(
        ["at", "actor", "command", "member", "ref", "summary"],
        [[r.at, r.actor, r.command, r.member, r.ref, r.summary] for r in rows],
    )
