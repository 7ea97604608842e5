"""`program validate|load|list|show|export|new` through the CLI."""

from __future__ import annotations

import tomllib
from pathlib import Path

from freezegun import freeze_time

from tests.conftest import PROGRAMS, Cli, write_program

BROKEN = """
[program]
key = "bad"
name = "Bad"
currency = "USX"
timezone = "Mars/Base"

[[tiers.levels]]
key = "green"
min = 0

[[rewards]]
key = "gift"
name = "Gift"
cost = 0
tiers = ["platinum"]
"""


def test_validate_every_example_program(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from loyaltyctl.cli.main import app

    files = sorted(str(p) for p in PROGRAMS.glob("*.toml"))
    result = CliRunner().invoke(app, ["program", "validate", *files])
    assert result.exit_code == 0, result.stderr
    assert not (tmp_path / "xdg").exists(), "validate must not need a database"


def test_validate_broken_file_reports_every_problem(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from loyaltyctl.cli.main import app

    path = write_program(tmp_path, BROKEN, "bad.toml")
    result = CliRunner().invoke(app, ["program", "validate", str(path)])
    assert result.exit_code == 4
    err = result.stderr
    assert "Traceback" not in err
    for needle in (
        "bad.toml:5",
        "program.currency",
        "program.timezone",
        "rewards[0].tiers",
        "platinum",
        "rewards[0].cost",
    ):
        assert needle in err, needle
    syntax = write_program(tmp_path, "[program\nkey = 1\n", "syntax.toml")
    result = CliRunner().invoke(app, ["program", "validate", str(syntax)])
    assert result.exit_code == 4 and "syntax.toml:1" in result.stderr
    missing = CliRunner().invoke(app, ["program", "validate", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 4 and "nope.toml" in missing.stderr


def test_load_versions_list_show_export(cli: Cli, tmp_path: Path) -> None:
    source = (PROGRAMS / "deli.toml").read_text()
    path = write_program(tmp_path, source, "deli.toml")
    with freeze_time("2026-01-01T00:00:00Z"):
        assert cli.json("program", "load", str(path))["status"] == "created"
        assert cli.json("program", "load", str(path))["status"] == "unchanged"
    path.write_text(source.replace("per_unit = 5", "per_unit = 6"))
    with freeze_time("2026-06-01T00:00:00Z"):
        loaded = cli.json("program", "load", str(path))
    assert (loaded["status"], loaded["version"]) == ("new-version", 2)
    listed = cli.json("program", "list")
    assert [(p["program"], p["version"]) for p in listed] == [("deli", 2)]
    shown = cli.json("program", "show", "deli")
    assert shown["spec"]["earn"]["per_unit"] in ("6", 6)
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    exported = cli("program", "export", "deli").stdout
    assert tomllib.loads(exported)["earn"]["per_unit"] == 6
    out = tmp_path / "export.toml"
    cli("program", "export", "--out", str(out))
    assert tomllib.loads(out.read_text())["program"]["key"] == "deli"
    cli("program", "show", "nope", code=3)


def test_first_version_applies_to_history_later_ones_from_their_load(
    cli: Cli, tmp_path: Path
) -> None:
    source = (PROGRAMS / "deli.toml").read_text()
    path = write_program(tmp_path, source, "deli.toml")
    with freeze_time("2026-03-01T00:00:00Z"):
        cli("program", "load", str(path))
        cli("member", "enroll", "M1", "--at", "2026-01-01")
        # Dated before version 1 was loaded: version 1 still applies (migrated history).
        assert (
            cli.json("txn", "post", "M1", "--ref", "A", "--amount", "10.00", "--at", "2026-01-02")[
                "points"
            ]
            == 50
        )
    path.write_text(source.replace("per_unit = 5", "per_unit = 6"))
    with freeze_time("2026-06-01T00:00:00Z"):
        cli("program", "load", str(path))
        assert (
            cli.json("txn", "post", "M1", "--ref", "B", "--amount", "10.00", "--at", "2026-05-01")[
                "points"
            ]
            == 50
        )
        assert cli.json("txn", "post", "M1", "--ref", "C", "--amount", "10.00")["points"] == 60
    cli.check()


def test_new_scaffolds_a_valid_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from loyaltyctl.cli.main import app

    out = tmp_path / "starter.toml"
    runner = CliRunner()
    assert runner.invoke(app, ["program", "new", "corner-shop", "--out", str(out)]).exit_code == 0
    assert runner.invoke(app, ["program", "validate", str(out)]).exit_code == 0
    again = runner.invoke(app, ["program", "new", "corner-shop", "--out", str(out)])
    assert again.exit_code == 4 and "--force" in again.stderr


def test_program_must_be_named_when_several_are_loaded(cli: Cli) -> None:
    cli("program", "load", str(PROGRAMS / "deli.toml"))
    cli("program", "load", str(PROGRAMS / "coffee.toml"))
    result = cli("member", "enroll", "M1", code=4)
    assert "--program" in result.stderr
    cli("member", "enroll", "M1", "--program", "beans")
    cli("member", "show", "M1", "--program", "deli", code=3)


def test_database_errors_are_clear(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from loyaltyctl.cli.main import app

    result = CliRunner().invoke(app, ["--db", str(tmp_path / "no" / "dir.db"), "program", "list"])
    assert result.exit_code == 10 and "not found: no database at" in result.stderr
    result = CliRunner().invoke(app, ["--db", str(tmp_path / "no" / "dir.db"), "db", "upgrade"])
    assert result.exit_code == 10 and "does not exist" in result.stderr
    result = CliRunner().invoke(app, ["--db", "mysql://x/y", "program", "list"])
    assert result.exit_code == 10 and "unsupported database URL" in result.stderr
