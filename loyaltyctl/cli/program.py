"""``program validate|load|list|show|export|versions|diff|simulate|new``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from loyaltyctl.cli.common import (
    JsonOpt,
    command,
    emit_json,
    err,
    is_terminal,
    now,
    open_session,
    print_fields,
    print_table,
    say,
    to_jsonable,
)
from loyaltyctl.errors import InvalidInput, ProgramInvalid

app = typer.Typer(
    help="Program files: validate, load as versions, show, diff, export, simulate.",
    no_args_is_help=True,
)


@app.command("validate")
@command
def validate(
    files: Annotated[list[Path], typer.Argument(help="Program TOML files.")],
    json_out: JsonOpt = False,
) -> None:
    """Check program files without a database; every problem is reported (exit 4)."""
    from loyaltyctl.services.program_files import load_program_file

    results = []
    problems: list[str] = []
    for path in files:
        try:
            spec, _ = load_program_file(path)
        except ProgramInvalid as exc:
            results.append({"file": str(path), "ok": False, "problems": exc.problems})
            problems.extend(exc.problems)
            continue
        except InvalidInput as exc:
            results.append({"file": str(path), "ok": False, "problems": [exc.message]})
            problems.append(exc.message)
            continue
        results.append({"file": str(path), "ok": True, "program": spec.program.key, "problems": []})
    if json_out:
        emit_json(results)
    else:
        for item in results:
            if item["ok"]:
                say(f"ok: {item['file']} (program {item['program']})")
    if problems:
        for problem in problems:
            err(f"error: {problem}")
        raise typer.Exit(4)


@app.command("load")
@command
def load(
    file: Annotated[Path, typer.Argument(help="Program TOML file.", metavar="FILE")],
    move_tier: Annotated[
        list[str] | None,
        typer.Option(
            "--move-tier",
            metavar="OLD=NEW",
            help="Members of tier OLD, which the new version drops, move to NEW (repeatable).",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Show what would change against the loaded version; load nothing."
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Load a program: a new program, a new version of a changed file, or a no-op.

    A new version may not change the currency, nor drop a tier members hold unless
    --move-tier says where they go (exit 6). With --dry-run, show the changes only."""
    if dry_run:
        _load_preview(file, json_out)
        return
    from loyaltyctl.services.program_guard import parse_moves
    from loyaltyctl.services.programs import load_program

    moves = parse_moves(move_tier)
    with open_session() as session:
        result = load_program(session, file, now=now(), move_tiers=moves)
    if json_out:
        emit_json(result)
        return
    message = {
        "created": f"loaded program {result.program} ({result.name}), version {result.version}",
        "new-version": f"loaded program {result.program}: new version {result.version}",
        "unchanged": f"program {result.program} unchanged (version {result.version})",
    }[result.status]
    say(message)


def _load_preview(file: Path, json_out: bool) -> None:
    from loyaltyctl.rules.program_diff import describe
    from loyaltyctl.services.programs import preview_load

    with open_session(write=False) as session:
        preview = preview_load(session, file)
    if json_out:
        emit_json(
            {
                "program": preview.program,
                "status": preview.status,
                "version": preview.version,
                "loaded_version": preview.loaded,
                "changes": preview.changes,
                "dry_run": True,
            }
        )
        return
    if preview.status == "created":
        say(f"would load new program {preview.program}, version 1 (nothing loaded: --dry-run)")
    elif preview.status == "unchanged":
        say(f"program {preview.program} unchanged (version {preview.version}): nothing to load")
    else:
        say(
            f"would load program {preview.program} version {preview.version}; "
            f"changes against version {preview.loaded} (nothing loaded: --dry-run):"
        )
        for change in preview.changes:
            say(f"  {describe(change)}")


@app.command("list")
@command
def list_(json_out: JsonOpt = False) -> None:
    """The loaded programs."""
    from loyaltyctl.services.programs import list_programs

    with open_session(write=False) as session:
        rows = list_programs(session)
    if json_out:
        emit_json(rows)
        return
    print_table(
        ["program", "name", "version", "members", "currency", "timezone", "loaded"],
        [
            [r.program, r.name, r.version, r.members, r.currency, r.timezone, r.loaded_at]
            for r in rows
        ],
    )


KeyArg = Annotated[str | None, typer.Argument(help="Program key (optional with one program).")]


@app.command("show")
@command
def show(
    key: KeyArg = None,
    json_out: JsonOpt = False,
) -> None:
    """A loaded program: its current version's rules."""
    from loyaltyctl.services.programs import show_program

    with open_session(write=False) as session:
        detail = show_program(session, key)
    spec = detail.spec
    if json_out:
        emit_json(
            {
                "program": detail.program,
                "version": detail.version,
                "loaded_at": detail.loaded_at,
                "versions": [{"version": v, "loaded_at": at} for v, at in detail.versions],
                "spec": spec.model_dump(mode="json", by_alias=True),
            }
        )
        return
    print_fields(
        [
            ("program", f"{detail.program} — {spec.program.name}"),
            ("version", f"{detail.version} (loaded {detail.loaded_at:%Y-%m-%d %H:%M} UTC)"),
            ("currency", spec.program.currency),
            ("point value", str(spec.program.point_value)),
            ("time zone", spec.program.timezone),
            ("earning", f"{spec.earn.per_unit} points per 1.00, rounding {spec.earn.rounding}"),
            ("signup bonus", spec.earn.signup_bonus),
            ("expiry", _expiry_text(spec.expiry)),
            (
                "tiers",
                ", ".join(f"{lv.key} ≥ {lv.min} (×{lv.multiplier})" for lv in spec.tiers.levels)
                + f" by {spec.tiers.metric}, {spec.tiers.window}",
            ),
            ("rewards", ", ".join(f"{r.key} ({r.cost})" for r in spec.rewards) or "none"),
        ]
    )


def _expiry_text(expiry: object) -> str:
    from loyaltyctl.rules.program import Expiry

    assert isinstance(expiry, Expiry)
    if expiry.policy == "rolling":
        return f"rolling, {expiry.months} months" + (" to month end" if expiry.month_end else "")
    if expiry.policy == "fixed_date":
        return f"fixed date {expiry.day}, {expiry.years} year(s) after the year earned"
    if expiry.policy == "inactivity":
        return f"after {expiry.months} months without a purchase"
    return "never"


@app.command("export")
@command
def export(
    key: Annotated[
        str | None,
        typer.Argument(
            help="Program key (optional with one program), or KEY@VERSION for an older version."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file.")] = None,
) -> None:
    """Write a loaded version back as TOML: the current one, or KEY@VERSION."""
    from loyaltyctl.rules.program_export import program_to_toml
    from loyaltyctl.services.programs import show_program, stored_version, version_ref

    found = version_ref(key) if key is not None else None
    with open_session(write=False) as session:
        spec = stored_version(session, *found) if found else show_program(session, key).spec
    text = program_to_toml(spec)
    if out is None:
        print(text, end="")
        return
    _write(out, text)
    err(f"wrote {out}")


@app.command("versions")
@command
def versions(
    key: KeyArg = None,
    json_out: JsonOpt = False,
) -> None:
    """Every loaded version of a program: number, load time, fingerprint."""
    from loyaltyctl.services.programs import list_versions

    with open_session(write=False) as session:
        rows = list_versions(session, key)
    if json_out:
        emit_json(rows)
        return
    print_table(
        ["version", "loaded", "fingerprint"],
        [[r.version, r.loaded_at, r.fingerprint[:12]] for r in rows],
    )


@app.command("diff")
@command
def diff(
    old: Annotated[str, typer.Argument(help="A program file, or KEY@VERSION of a loaded one.")],
    new: Annotated[str, typer.Argument(help="A program file, or KEY@VERSION of a loaded one.")],
    json_out: JsonOpt = False,
) -> None:
    """What changed from OLD to NEW, key by key (earn.per_unit: 10 → 12)."""
    from loyaltyctl.rules.program_diff import describe, diff_programs
    from loyaltyctl.services.programs import resolve_program, version_ref

    if any(version_ref(ref) is not None and not Path(ref).exists() for ref in (old, new)):
        with open_session(write=False) as session:
            before, after = resolve_program(session, old), resolve_program(session, new)
    else:
        before, after = resolve_program(None, old), resolve_program(None, new)
    changes = diff_programs(before, after)
    if json_out:
        emit_json(changes)
        return
    if not changes:
        say("no changes")
    for change in changes:
        say(describe(change))


@app.command("new")
@command
def new(
    key: Annotated[str, typer.Argument(help="Key of the new program.")] = "my-program",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file.")] = None,
    name: Annotated[str, typer.Option("--name", help="Display name.")] = "My Rewards",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Scaffold a commented starter program file."""
    from loyaltyctl.rules.program_export import program_template

    text = program_template(key=key, name=name)
    if out is None:
        print(text, end="")
        return
    if out.exists() and not force:
        raise InvalidInput(f"{out} already exists", hint="pass --force to overwrite it")
    _write(out, text)
    err(f"wrote {out}: edit it, then run: loyaltyctl program validate {out}")


def _write(out: Path, text: str) -> None:
    from loyaltyctl.services.files import atomic_file

    with atomic_file(out, newline=None) as handle:
        handle.write(text)


@app.command("simulate")
@command
def simulate(
    file: Annotated[Path, typer.Argument(help="The program file to try on the history.")],
    from_: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="FILE is in force from this day or time (program time zone). "
            "Default: the first enrolment or transaction.",
        ),
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="Replay up to the end of this day. Default: today.")
    ] = None,
    members_out: Annotated[
        Path | None,
        typer.Option(
            "--members-out",
            help="Write the members whose balance or tier differs (CSV, or JSON Lines for .jsonl).",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Replay the program's history under FILE in memory and compare it with the real
    ledger: points, liability, rates, tiers. Writes nothing to the database."""
    from loyaltyctl.rules.timeutil import parse_day, parse_when
    from loyaltyctl.services.program_files import load_program_file
    from loyaltyctl.services.simulate import simulate as run

    spec, _ = load_program_file(file)
    tz = spec.program.tz
    first = parse_when(from_, tz, what="--from") if from_ else None
    last = parse_day(to, what="--to") if to else None
    with open_session(write=False) as session:
        result = run(session, spec, first=first, last=last, now=now(), members_out=members_out)
    if json_out:
        data = to_jsonable(result)
        data.pop("first")
        data["from"] = data.pop("from_")
        order = ["program", "from", "to", "actual", "simulated", "delta", "tier_moves"]
        emit_json({**{k: data.pop(k) for k in order}, **data})
        return
    _render_simulation(result)


def _render_simulation(result: Any) -> None:
    from loyaltyctl.services.simulate import FIGURES

    print_table(
        ["figure", "actual", "simulated", "delta"],
        [
            [
                name,
                getattr(result.actual, name),
                getattr(result.simulated, name),
                _signed(result.delta[name]),
            ]
            for name in FIGURES
        ],  # fmt: skip
        title=f"program {result.program}: {result.from_} to {result.to}",
    )
    tiers = list(dict.fromkeys([*result.actual.tiers, *result.simulated.tiers]))
    print_table(
        ["tier", "actual", "simulated"],
        [[t, result.actual.tiers.get(t, 0), result.simulated.tiers.get(t, 0)] for t in tiers],
    )
    for move in result.tier_moves:
        say(f"{move['members']} member(s) {move['from']} → {move['to']}")
    say(
        f"members changed: {result.members_changed}; redemptions refused: "
        f"{result.redemptions_refused}"
        + (
            f" (cancellations skipped: {result.cancellations_skipped})"
            if result.cancellations_skipped
            else ""
        )
    )
    for kind, count in result.refused.items():
        say(f"refused by the rules: {count} {kind}")
    if result.members_out:
        err(f"wrote {result.members_out}")
    _liability_chart(result.monthly, result.currency)


def _signed(value: Any) -> str:
    text = str(value)
    return (
        text
        if text.startswith("-") or text in ("0", "0.0") or set(text) <= {"0", "."}
        else f"+{text}"
    )


def _liability_chart(months: list[Any], currency: str) -> None:
    """Month-end liability, actual beside simulated, as bars."""
    if not months:
        return
    from decimal import Decimal

    values = [
        (m.month, Decimal(m.actual_liability), Decimal(m.simulated_liability)) for m in months
    ]
    top = max(max(a, s) for _, a, s in values) or Decimal(1)
    width = 40

    def bar(value: Decimal) -> str:
        return "█" * int(value / top * width)

    if is_terminal():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"liability at month end ({currency})", title_justify="left", box=None)
        table.add_column("month")
        table.add_column("")
        table.add_column("", justify="right")
        table.add_column("bar")
        for month, actual, sim in values:
            table.add_row(month, "actual", str(actual), f"[blue]{bar(actual)}[/]")
            table.add_row("", "simulated", str(sim), f"[yellow]{bar(sim)}[/]")
        Console(no_color=bool(os.environ.get("NO_COLOR"))).print(table)
        return
    say(f"liability at month end ({currency})")
    for month, actual, sim in values:
        say(f"{month}  actual     {actual:>12}  {bar(actual)}")
        say(f"{'':7}  simulated  {sim:>12}  {bar(sim)}")
