"""``txn post|return|adjust|list``."""

from __future__ import annotations

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
from loyaltyctl.errors import InvalidInput

app = typer.Typer(
    help="Transactions: purchases, returns, adjustments, transfers.", no_args_is_help=True
)

MemberArg = Annotated[str, typer.Argument(help="The member's id.")]
RefOpt = Annotated[
    str,
    typer.Option("--ref", help="Your unique reference for this transaction; retries are safe."),
]


def _ref(ref: str) -> str:
    if not ref.strip():
        raise InvalidInput(
            "--ref must not be empty", hint="give your system's reference, e.g. T-1001"
        )
    return ref.strip()


def _render(result: Any, json_out: bool) -> None:
    if json_out:
        emit_json(
            {
                "ref": result.ref,
                "member": result.member,
                "points": result.points,
                "balance": result.balance,
                "tier": result.tier,
                "duplicate": result.duplicate,
                "kind": result.kind,
                "at": result.at,
            }
        )
        return
    note = " (identical retry: nothing changed)" if result.duplicate else ""
    say(
        f"{result.kind} {result.ref} for {result.member}: {result.points:+d} points, "
        f"balance {result.balance}, tier {result.tier}{note}"
    )


def _lines(
    amount: str | None, category: str | None, line: list[str] | None, digits: int
) -> list[Any]:
    from loyaltyctl.rules.earning import Line
    from loyaltyctl.rules.money import parse_amount

    if amount is not None and line:
        raise InvalidInput("give either --amount or --line, not both")
    if amount is not None:
        return [Line(category, parse_amount(amount, digits, what="--amount"))]
    if category is not None:
        raise InvalidInput("--category goes with --amount", hint="or use --line CATEGORY=AMOUNT")
    lines = []
    for item in line or []:
        cat, sep, value = item.partition("=")
        if not sep or not cat.strip():
            raise InvalidInput(
                f"--line {item!r} is not CATEGORY=AMOUNT", hint="write e.g. --line beans=12.00"
            )
        lines.append(Line(cat.strip(), parse_amount(value, digits, what=f"--line {cat.strip()}")))
    if not lines:
        raise InvalidInput("a purchase needs --amount or --line", hint="e.g. --amount 12.50")
    return lines


@app.command("post")
@command
def post(
    member: MemberArg,
    ref: RefOpt,
    amount: Annotated[str | None, typer.Option("--amount", help="Amount, e.g. 12.50.")] = None,
    category: Annotated[
        str | None, typer.Option("--category", help="Category of the whole amount.")
    ] = None,
    line: Annotated[
        list[str] | None,
        typer.Option("--line", help="CATEGORY=AMOUNT; repeat for several lines."),
    ] = None,
    at: AtOpt = None,
    store: Annotated[
        str | None, typer.Option("--store", help="The shop or till it was bought at.")
    ] = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Post a purchase: points by the program's earning rules, one lot, maybe an upgrade."""
    from loyaltyctl.rules.timeutil import parse_when
    from loyaltyctl.services.txns import post_purchase

    with open_session() as session:
        ctx = program_context(session, program)
        spec = ctx.spec
        lines = _lines(amount, category, line, spec.program.minor_digits)
        when = parse_when(at, spec.program.tz) if at is not None else None
        result = post_purchase(
            session, ctx, member, ref=_ref(ref), lines=lines, at=when, now=now(), store=store
        )
    _render(result, json_out)


@app.command("return")
@command
def return_(
    member: MemberArg,
    original: Annotated[str, typer.Option("--original", help="Reference of the purchase.")],
    amount: Annotated[str, typer.Option("--amount", help="Amount returned, e.g. 9.50.")],
    ref: RefOpt,
    at: AtOpt = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Return part or all of a purchase: claws back its points in proportion."""
    from loyaltyctl.rules.money import parse_amount
    from loyaltyctl.rules.timeutil import parse_when
    from loyaltyctl.services.txns import post_return

    with open_session() as session:
        ctx = program_context(session, program)
        spec = ctx.spec
        value = parse_amount(amount, spec.program.minor_digits, what="--amount")
        when = parse_when(at, spec.program.tz) if at is not None else None
        result = post_return(
            session,
            ctx,
            member,
            ref=_ref(ref),
            original_ref=original,
            amount=value,
            at=when,
            now=now(),
        )
    _render(result, json_out)


@app.command("adjust")
@command
def adjust(
    member: MemberArg,
    points: Annotated[int, typer.Option("--points", help="Signed points, e.g. 500 or -200.")],
    reason: Annotated[str, typer.Option("--reason", help="Why: goodwill, correction, …")],
    ref: RefOpt,
    at: AtOpt = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Add or remove points by hand; negative ones take the oldest-expiring points."""
    from loyaltyctl.rules.timeutil import parse_when
    from loyaltyctl.services.txns import post_adjustment

    with open_session() as session:
        ctx = program_context(session, program)
        when = parse_when(at, ctx.spec.program.tz) if at is not None else None
        result = post_adjustment(
            session,
            ctx,
            member,
            ref=_ref(ref),
            points=points,
            reason=reason,
            at=when,
            now=now(),
        )
    _render(result, json_out)


@app.command("transfer")
@command
def transfer(
    source: Annotated[str, typer.Argument(metavar="FROM", help="The member giving points.")],
    target: Annotated[str, typer.Argument(metavar="TO", help="The member receiving them.")],
    points: Annotated[int, typer.Option("--points", help="Points to move, e.g. 500.")],
    ref: RefOpt,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (kept with both).")] = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Move available points to another member; they keep their expiry dates."""
    from loyaltyctl.services.transfers import transfer as transfer_points

    with open_session() as session:
        ctx = program_context(session, program)
        result = transfer_points(
            session, ctx, source, target, points=points, ref=_ref(ref), reason=reason, now=now()
        )
    if json_out:
        emit_json(
            {
                "ref": result.ref,
                "member": result.member,
                "to": result.to,
                "points": result.points,
                "balance": result.balance,
                "tier": result.tier,
                "duplicate": result.duplicate,
                "kind": result.kind,
                "at": result.at,
                "to_balance": result.to_balance,
            }
        )
        return
    note = " (identical retry: nothing changed)" if result.duplicate else ""
    say(
        f"transfer {result.ref}: {-result.points} points from {result.member} to {result.to}, "
        f"balances {result.balance} and {result.to_balance}{note}"
    )


@app.command("list")
@command
def list_(
    member: MemberArg,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, max=1_000_000, help="Only the last N.")
    ] = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A member's transactions, oldest first, with the balance after each."""
    from loyaltyctl.services.txns import list_txns

    with open_session(write=False) as session:
        ctx = program_context(session, program)
        rows = list_txns(session, ctx, member, limit=limit)
    if json_out:
        emit_json(rows)
        return
    print_table(
        ["at", "ref", "kind", "amount", "points", "balance", "note"],
        [
            [r.at, r.ref, r.kind, r.amount, f"{r.points:+d}", r.balance, r.original or r.reason]
            for r in rows
        ],
    )


@app.command("show")
@command
def show(
    ref: Annotated[str, typer.Argument(help="The transaction's reference.", metavar="REF")],
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """How a transaction's points were worked out: lines, multipliers, promotions by
    name, rounding, program version, and the entries it made."""
    from loyaltyctl.services.txn_show import show_txn

    with open_session(write=False) as session:
        ctx = program_context(session, program)
        detail = show_txn(session, ctx, ref)
    if json_out:
        emit_json(detail)
        return
    print_fields(
        [
            ("ref", detail.ref),
            ("member", detail.member),
            ("kind", detail.kind),
            ("at", detail.at),
            ("amount", detail.amount),
            ("points", f"{detail.points:+d}"),
            ("program version", detail.program_version),
            ("reason", detail.reason),
        ],
        title=f"transaction {detail.ref}",
    )
    if detail.kind == "purchase":
        print_table(
            ["category", "amount", "multiplier", "promotions"],
            [
                [
                    line["category"] or "-",
                    line["amount"],
                    "excluded" if line["excluded"] else line["multiplier"],
                    ", ".join(line["promotions"]),
                ]
                for line in detail.lines
            ],
        )
        promos = ", ".join(f"{p['name']} ×{p['multiplier']}" for p in detail.promotions)
        say(
            f"{detail.per_unit} points per unit × category × tier {detail.tier} "
            f"×{detail.tier_multiplier}"
            + (f" × {promos}" if promos else "")
            + f" = {detail.before_rounding}, rounded {detail.rounding} → {detail.points}"
        )
    print_table(
        ["entry", "points", "expires"],
        [[e["kind"], f"{e['points']:+d}", e["expires_on"] or "-"] for e in detail.entries],
    )
