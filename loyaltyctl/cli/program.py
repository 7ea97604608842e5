"""``program validate|load|list|show|export|new``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loyaltyctl.cli.common import (
    JsonOpt,
    command,
    emit_json,
    err,
    now,
    open_session,
    print_fields,
    print_table,
    say,
)
from loyaltyctl.errors import InvalidInput, ProgramInvalid

app = typer.Typer(
    help="Program files: validate, load as versions, show, export.", no_args_is_help=True
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
    json_out: JsonOpt = False,
) -> None:
    """Load a program: a new program, a new version of a changed file, or a no-op.

    A new version may not change the currency, nor drop a tier members hold unless
    --move-tier says where they go (exit 6)."""
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


@app.command("show")
@command
def show(
    key: Annotated[
        str | None, typer.Argument(help="Program key (optional with one program).")
    ] = None,
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
        str | None, typer.Argument(help="Program key (optional with one program).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file.")] = None,
) -> None:
    """Write the loaded (current) version back as TOML."""
    from loyaltyctl.rules.program_export import program_to_toml
    from loyaltyctl.services.programs import show_program

    with open_session(write=False) as session:
        detail = show_program(session, key)
    text = program_to_toml(detail.spec)
    if out is None:
        print(text, end="")
        return
    _write(out, text)
    err(f"wrote {out}")


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
