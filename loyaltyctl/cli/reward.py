"""``reward list|redeem|use|cancel`` and ``voucher list|show``."""

from __future__ import annotations

from datetime import datetime
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
    to_jsonable,
)
from loyaltyctl.errors import InvalidInput

reward_app = typer.Typer(
    help="Rewards: the catalogue, redeeming points for vouchers, using and cancelling them.",
    no_args_is_help=True,
)
voucher_app = typer.Typer(
    help="Vouchers: look them up by member, status or code.", no_args_is_help=True
)

MemberArg = Annotated[str, typer.Argument(help="The member's id.")]
VoucherArg = Annotated[str, typer.Argument(help="The voucher code, e.g. ABCD-EFGH-JKMN.")]


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(reward_app, name="reward")
    app.add_typer(voucher_app, name="voucher")


def _terms(kind: str, value: str | None, product: str | None) -> str:
    """What the till gives, in a few words."""
    if kind == "discount-amount":
        return f"{value} off"
    if kind == "discount-percent":
        return f"{value}% off"
    if kind == "free-product":
        return f"free {product}"
    return "item"


@reward_app.command("list")
@command
def list_(
    member: Annotated[
        str | None,
        typer.Option("--member", help="Mark what this member can redeem now, and why not."),
    ] = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The rewards of the current program version: cost, tiers, stock left, validity."""
    from loyaltyctl.services.rewards import list_rewards

    with open_session(write=False) as session:
        ctx = program_context(session, program)
        lines = list_rewards(session, ctx, member=member, now=now())
    if json_out:
        emit_json(lines)
        return
    columns = ["reward", "name", "cost", "gives", "tiers", "stock left", "per member", "valid"]
    if member is not None:
        columns += ["redeemable", "why not"]
    rows: list[list[Any]] = []
    for r in lines:
        row: list[Any] = [
            r.reward,
            r.name,
            r.cost,
            _terms(r.kind, r.value, r.product),
            ", ".join(r.tiers) or "all",
            "unlimited" if r.stock_left is None else f"{r.stock_left} of {r.stock}",
            r.per_member or "",
            f"{r.valid_days} days",
        ]
        if member is not None:
            row += ["yes" if r.redeemable else "no", "; ".join(r.why_not)]
        rows.append(row)
    print_table(columns, rows)


def _redeem_json(result: Any) -> dict[str, Any]:
    return {
        "voucher": result.voucher,
        "reward": result.reward,
        "points": result.points,
        "balance": result.balance,
        "member": result.member,
        "ref": result.ref,
        "duplicate": result.duplicate,
        "name": result.name,
        "kind": result.kind,
        "value": result.value,
        "product": result.product,
        "status": result.status,
        "issued": result.issued,
        "expires": result.expires,
    }


@reward_app.command("redeem")
@command
def redeem(
    member: MemberArg,
    reward: Annotated[str, typer.Argument(help="The reward's key (see: reward list).")],
    ref: Annotated[
        str | None,
        typer.Option(
            "--ref",
            help="Your unique reference for this redemption; a retry with it is safe. "
            "Default: a new one.",
        ),
    ] = None,
    at: AtOpt = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Spend a member's points on a reward: issues a voucher (exit 6 says which rule refused)."""
    from loyaltyctl.rules.timeutil import parse_when
    from loyaltyctl.services.redemptions import redeem as redeem_reward

    if ref is not None and not ref.strip():
        raise InvalidInput("--ref must not be empty", hint="leave it out to get a new one")
    with open_session() as session:
        ctx = program_context(session, program)
        when = parse_when(at, ctx.spec.program.tz) if at is not None else None
        result = redeem_reward(
            session, ctx, member, reward, ref=ref.strip() if ref else None, at=when, now=now()
        )
    if json_out:
        emit_json(_redeem_json(result))
        return
    note = " (identical retry: nothing changed)" if result.duplicate else ""
    say(
        f"voucher {result.voucher} for {result.member}: {result.name} "
        f"({_terms(result.kind, result.value, result.product)}), {result.points:+d} points, "
        f"balance {result.balance}, valid until {result.expires:%Y-%m-%d %H:%M} UTC{note}"
    )


def _when(ctx: Any, at: str | None) -> datetime | None:
    """``--at`` in the program's zone, or now."""
    from loyaltyctl.rules.timeutil import parse_when

    if at is None:
        return None
    when = parse_when(at, ctx.spec.program.tz)
    if when > now():
        raise InvalidInput(f"--at {at} is in the future", hint="leave --at out to mean now")
    return when


@reward_app.command("use")
@command
def use(
    voucher: VoucherArg,
    ref: Annotated[
        str | None,
        typer.Option(
            "--ref", metavar="REF", help="The till's reference: a retry with it is a duplicate."
        ),
    ] = None,
    at: AtOpt = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """At the till: mark an issued voucher used (a used, cancelled or expired one: exit 6)."""
    from loyaltyctl.services.rewards import use_voucher

    with open_session() as session:
        ctx = program_context(session, program)
        view = use_voucher(session, ctx, voucher, now=now(), at=_when(ctx, at), ref=ref)
    if json_out:
        emit_json({**to_jsonable(view), "duplicate": view._duplicate})
        return
    if view._duplicate:
        say(f"voucher {view.code} was already used with ref {ref} (nothing changed)")
        return
    say(
        f"voucher {view.code} used: give {view.name} "
        f"({_terms(view.kind, view.value, view.product)}) to member {view.member}"
    )


@reward_app.command("cancel")
@command
def cancel(
    voucher: VoucherArg, at: AtOpt = None, program: ProgramOpt = None, json_out: JsonOpt = False
) -> None:
    """Cancel an issued voucher: its points go back with their original expiry dates."""
    from loyaltyctl.services.redemptions import cancel_voucher

    with open_session() as session:
        ctx = program_context(session, program)
        result = cancel_voucher(session, ctx, voucher, now=now(), at=_when(ctx, at))
    if json_out:
        emit_json(result)
        return
    if result.duplicate:
        say(f"voucher {result.voucher} was already cancelled (no change), balance {result.balance}")
        return
    parts = [f"{lot.points} expiring {lot.expires_on or 'never'}" for lot in result.lots]
    if result.debt_settled:
        parts.insert(0, f"{result.debt_settled} settling a debt")
    say(
        f"voucher {result.voucher} cancelled: {result.points:+d} points to {result.member} "
        f"({', '.join(parts)}), balance {result.balance}"
    )


@voucher_app.command("list")
@command
def voucher_list(
    member: Annotated[str | None, typer.Option("--member", help="Only this member's.")] = None,
    status: Annotated[
        str | None,
        typer.Option("--status", help="issued, used, cancelled or expired (as of now)."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, max=1_000_000, help="At most N.")
    ] = None,
    program: ProgramOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Vouchers, newest first."""
    from loyaltyctl.services.rewards import list_vouchers

    with open_session(write=False) as session:
        ctx = program_context(session, program)
        views = list_vouchers(session, ctx, member=member, status=status, now=now(), limit=limit)
    if json_out:
        emit_json(views)
        return
    print_table(
        ["code", "member", "reward", "gives", "status", "points", "issued", "expires"],
        [
            [
                v.code,
                v.member,
                v.reward,
                _terms(v.kind, v.value, v.product),
                v.status,
                v.points,
                v.issued_at,
                v.expires_at,
            ]
            for v in views
        ],
    )


@voucher_app.command("show")
@command
def voucher_show(
    voucher: VoucherArg, program: ProgramOpt = None, json_out: JsonOpt = False
) -> None:
    """One voucher: what it gives, whose it is, its status and dates."""
    from loyaltyctl.services.rewards import show_voucher

    with open_session(write=False) as session:
        ctx = program_context(session, program)
        view = show_voucher(session, ctx, voucher, now=now())
    if json_out:
        emit_json(view)
        return
    pairs: list[tuple[str, Any]] = [
        ("voucher", view.code),
        ("status", view.status),
        ("member", view.member),
        ("reward", f"{view.name} ({view.reward})"),
        ("gives", _terms(view.kind, view.value, view.product)),
        ("points", view.points),
        ("issued", view.issued_at),
        ("expires", view.expires_at),
        ("ref", view.ref),
    ]
    for label, value in (
        ("used", view.used_at),
        ("cancelled", view.cancelled_at),
        ("expired", view.expired_at),
        ("refund ref", view.cancel_ref),
    ):
        if value is not None:
            pairs.append((label, value))
    print_fields(pairs)
