"""``program validate|load|list|show|export|versions|diff|new``."""

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
    file: Annotated[Path, typer.Argument(help="Program TOML file.")],
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Show what would change against the loaded version; load nothing."
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Load a program: a new program, a new version of a changed file, or a no-op."""
    if dry_run:
        _load_preview(file, json_out)
        return
    from loyaltyctl.services.programs import load_program

    with open_session() as session:
        result = load_program(session, file, now=now())
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
    out.write_text(text, encoding="utf-8")
    err(f"wrote {out}")


@app.command("versions")
@command
def versions(
    key: Annotated[
        str | None, typer.Argument(help="Program key (optional with one program).")
    ] = None,
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
    out.write_text(text, encoding="utf-8")
    err(f"wrote {out}: edit it, then run: loyaltyctl program validate {out}")
