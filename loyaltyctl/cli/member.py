"""``member enroll|show|find|list|update|suspend|reactivate|close|erase|merge``."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import typer

from loyaltyctl.cli.common import (
    AtOpt,
    JsonOpt,
    ProgramOpt,
    command,
    emit_json,
    now,
    open_session,
    print_fields,
    print_table,
    program_context,
    say,
)

app = typer.Typer(help="Members: enroll, look up, change status, erase.", no_args_is_help=True)

MemberArg = Annotated[str, typer.Argument(help="The member's id in your systems, e.g. M-1001.")]
NameOpt = Annotated[str | None, typer.Option("--name", help="Full name.")]
EmailOpt = Annotated[str | None, typer.Option("--email", help="E-mail address.")]
PhoneOpt = Annotated[str | None, typer.Option("--phone", help="Phone number.")]
BirthdayOpt = Annotated[str | None, typer.Option("--birthday", help="Birthday, YYYY-MM-DD.")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why (kept with the member).")]


def _birthday(text: str | None) -> date | None:
    from loyaltyctl.rules.timeutil import parse_day

    return parse_day(text, what="--birthday") if text else None


@app.command("enroll")
@command
def enroll(
    member: MemberArg,
    name: NameOpt = None,
    email: EmailOpt = None,
    phone: PhoneOpt = None,
    birthday: BirthdayOpt = None,
    at: AtOpt = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Enroll a member (with the program's signup bonus); an identical repeat is a no-op."""
    from loyaltyctl.rules.timeutil import parse_when
    from loyaltyctl.services.members import enroll as enroll_member

    born = _birthday(birthday)
    with open_session() as session:
        ctx = program_context(session, program)
        when = parse_when(at, ctx.spec.program.tz) if at is not None else now()
        result = enroll_member(
            session,
            ctx,
            member,
            name=name,
            email=email,
            phone=phone,
            birthday=born,
            at=when,
            now=now(),
        )
    if json_out:
        emit_json(result)
    elif result.duplicate:
        say(f"member {result.member} already enrolled in {result.program} (no change)")
    else:
        bonus = f", signup bonus {result.points} points" if result.points else ""
        say(f"enrolled {result.member} in {result.program} as {result.tier}{bonus}")


def _member_json(view: Any) -> dict[str, Any]:
    return {
        "member": view.member,
        "program": view.program,
        "status": view.status,
        "tier": view.tier,
        "balance": view.balance,
        "pending": view.pending,
        "available": view.available,
        "lifetime_earned": view.lifetime_earned,
        "qualifying": view.qualifying,
        "expiring": [{"date": e.date, "points": e.points} for e in view.expiring],
        "debt": view.debt,
        "tier_since": view.tier_since,
        "hold_until": view.hold_until,
        "enrolled_at": view.enrolled_at,
        "name": view.name,
        "email": view.email,
        "phone": view.phone,
        "birthday": view.birthday,
        "erased": view.erased,
        "status_reason": view.status_reason,
        "recent": view.recent,
        "tier_history": view.tier_history,
    }


def _print_member(view: Any) -> None:
    expiring = ", ".join(f"{e.points} on {e.date}" for e in view.expiring) or "none"
    pairs: list[tuple[str, Any]] = [
        ("member", view.member + (" (erased)" if view.erased else "")),
        ("program", view.program),
        ("status", view.status + (f" ({view.status_reason})" if view.status_reason else "")),
        ("tier", view.tier + (f" since {view.tier_since}" if view.tier_since else "")),
    ]
    if view.hold_until:
        pairs.append(("tier held until", view.hold_until))
    pairs += [
        ("balance", view.balance),
        ("available", view.available),
        ("pending", view.pending),
        ("lifetime earned", view.lifetime_earned),
        ("qualifying", view.qualifying),
        ("expiring", expiring),
    ]
    if view.debt:
        pairs.append(("debt", view.debt))
    for key in ("name", "email", "phone", "birthday"):
        value = getattr(view, key)
        if value:
            pairs.append((key, value))
    if view.tier_history:
        steps = [f"{s['tier']} from {s['from']} ({s['reason']})" for s in view.tier_history]
        pairs.append(("tier history", "; ".join(steps)))
    print_fields(pairs)
    if view.recent:
        print_table(
            ["at", "ref", "kind", "points"],
            [[r["at"], r["ref"], r["kind"], r["points"]] for r in view.recent],
            title="recent activity",
        )


@app.command("show")
@command
def show(member: MemberArg, program: ProgramOpt = None, json_out: JsonOpt = False) -> None:
    """Balance, tier, qualifying activity, next expiries and recent activity."""
    from loyaltyctl.services.members import show_member

    with open_session(write=False) as session:
        ctx = program_context(session, program)
        view = show_member(session, ctx, member, now=now())
    if json_out:
        emit_json(_member_json(view))
    else:
        _print_member(view)


@app.command("find")
@command
def find(
    text: Annotated[
        str, typer.Argument(help="A member id, an e-mail, a phone number or part of a name.")
    ],
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Find members by id, e-mail (any case), phone (any punctuation) or part of the name."""
    from loyaltyctl.services.member_find import find_members

    with open_session(write=False) as session:
        ctx = program_context(session, program)
        rows = find_members(session, ctx, text)
    if json_out:
        emit_json(rows)
        return
    print_table(
        ["member", "name", "email", "phone", "status", "tier", "balance"],
        [[r.member, r.name, r.email, r.phone, r.status, r.tier, r.balance] for r in rows],
    )


@app.command("merge")
@command
def merge(
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="The membership to fold in.")],
    target: Annotated[str, typer.Argument(metavar="TARGET", help="The membership that stays.")],
    ref: Annotated[
        str, typer.Option("--ref", help="Your unique reference for the merge; retries are safe.")
    ],
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Move everything of SOURCE (points with their dates, debt, activity, vouchers) to TARGET."""
    from loyaltyctl.errors import InvalidInput
    from loyaltyctl.services.merges import merge_members

    if not ref.strip():
        raise InvalidInput("--ref must not be empty", hint="give your reference, e.g. MRG-1")
    with open_session() as session:
        ctx = program_context(session, program)
        result = merge_members(session, ctx, source, target, ref=ref.strip(), now=now())
    if json_out:
        emit_json(result)
        return
    note = " (identical retry: nothing changed)" if result.duplicate else ""
    say(
        f"merged {result.source} into {result.target}: {result.points_moved} points moved, "
        f"balance {result.balance}, tier {result.tier}{note}"
    )


@app.command("list")
@command
def list_(
    tier: Annotated[str | None, typer.Option("--tier", help="Only this tier.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="active, suspended or closed.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=1_000_000, help="Rows per page.")
    ] = 100,
    page: Annotated[int, typer.Option("--page", min=1, max=10**12, help="Page number.")] = 1,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Members, by id, with filters and paging."""
    from loyaltyctl.services.members import list_members

    with open_session(write=False) as session:
        ctx = program_context(session, program)
        rows = list_members(
            session, ctx, tier=tier, status=status, limit=limit, offset=(page - 1) * limit
        )
    if json_out:
        emit_json(rows)
        return
    print_table(
        ["member", "status", "tier", "balance", "name", "enrolled"],
        [[r.member, r.status, r.tier, r.balance, r.name, r.enrolled_at] for r in rows],
    )


@app.command("update")
@command
def update(
    member: MemberArg,
    name: NameOpt = None,
    email: EmailOpt = None,
    phone: PhoneOpt = None,
    birthday: BirthdayOpt = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Change a member's personal details."""
    from loyaltyctl.services.members import update_member

    changes = {"name": name, "email": email, "phone": phone, "birthday": _birthday(birthday)}
    with open_session() as session:
        ctx = program_context(session, program)
        view = update_member(session, ctx, member, changes=changes, now=now())
    if json_out:
        emit_json(_member_json(view))
    else:
        say(f"updated member {view.member}")


def _status_command(
    action: str, member: str, reason: str | None, program: str | None, json_out: bool
) -> None:
    from loyaltyctl.services.members import change_status

    with open_session() as session:
        ctx = program_context(session, program)
        result = change_status(session, ctx, member, action, reason=reason, now=now())
    if json_out:
        emit_json(result)
    elif result.changed:
        say(f"member {result.member} is now {result.status}")
    else:
        say(f"member {result.member} is already {result.status} (no change)")


@app.command("suspend")
@command
def suspend(
    member: MemberArg,
    reason: ReasonOpt = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Suspend: the member can neither earn nor redeem; the balance stays."""
    _status_command("suspend", member, reason, program, json_out)


@app.command("reactivate")
@command
def reactivate(
    member: MemberArg,
    reason: ReasonOpt = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Make a suspended member active again."""
    _status_command("reactivate", member, reason, program, json_out)


@app.command("close")
@command
def close(
    member: MemberArg,
    reason: ReasonOpt = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Close the membership for good: no earning, no redeeming; the ledger stays."""
    _status_command("close", member, reason, program, json_out)


@app.command("erase")
@command
def erase(member: MemberArg, program: ProgramOpt = None, json_out: JsonOpt = False) -> None:
    """Remove name, e-mail, phone, birthday and status reason for good; the ledger stays."""
    from loyaltyctl.cli.common import STATE
    from loyaltyctl.services.members import erase_member
    from loyaltyctl.store.db import purge_freed_pages

    with open_session() as session:
        ctx = program_context(session, program)
        result = erase_member(session, ctx, member, now=now())
    purge_freed_pages(STATE.db)
    if json_out:
        emit_json(result)
    else:
        say(f"erased the personal data of member {result.member}; the ledger stays")
