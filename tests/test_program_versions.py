"""`program versions|diff|export KEY@VERSION` and `program load --dry-run`."""

from __future__ import annotations

import tomllib
from pathlib import Path

from freezegun import freeze_time

from loyaltyctl.rules.program_diff import describe, diff_programs
from loyaltyctl.rules.program_parse import parse_program
from tests.conftest import PROGRAMS, Cli, write_program

EXTRA_PROMO = """
[[earn.promotions]]
name = "Winter"
from = 2026-12-01
to = 2026-12-24
multiplier = 1.5
"""


def _changed(source: str) -> str:
    text = source.replace("per_unit = 5", "per_unit = 6").replace("min = 200", "min = 150")
    return text.replace('name = "Summer double"', 'name = "Summer triple"') + EXTRA_PROMO


def test_diff_words_each_key() -> None:
    source = (PROGRAMS / "deli.toml").read_text()
    old = parse_program(source, "old.toml")
    new = parse_program(_changed(source), "new.toml")
    lines = [describe(c) for c in diff_programs(old, new)]
    assert lines == [
        "earn.per_unit: 5 → 6",
        "earn.promotions[Summer triple]: added",
        "earn.promotions[Winter]: added",
        "earn.promotions[Summer double]: removed",
        "tiers.levels[silver].min: 200 → 150",
    ]
    assert diff_programs(old, old) == []
    # 2 and 2.0 are the same rule.
    same = parse_program(source.replace("multiplier = 2.0", "multiplier = 2"), "same.toml")
    assert diff_programs(old, same) == []


def test_versions_diff_export_and_dry_run(cli: Cli, tmp_path: Path) -> None:
    source = (PROGRAMS / "deli.toml").read_text()
    path = write_program(tmp_path, source, "deli.toml")
    with freeze_time("2026-01-01T00:00:00Z"):
        cli("program", "load", str(path))
    changed = write_program(tmp_path, _changed(source), "deli2.toml")

    preview = cli.json("program", "load", str(changed), "--dry-run")
    assert (preview["status"], preview["version"], preview["loaded_version"]) == (
        "new-version",
        2,
        1,
    )
    assert {"path": "earn.per_unit", "old": "5", "new": "6"} in preview["changes"]
    text = cli("program", "load", str(changed), "--dry-run").stdout
    assert "earn.per_unit: 5 → 6" in text and "tiers.levels[silver].min: 200 → 150" in text
    assert [v["version"] for v in cli.json("program", "versions")] == [1], "loaded nothing"
    assert cli.json("program", "load", str(path), "--dry-run")["status"] == "unchanged"

    with freeze_time("2026-06-01T00:00:00Z"):
        cli("program", "load", str(changed))
    versions = cli.json("program", "versions", "deli")
    assert [(v["version"], v["loaded_at"][:10]) for v in versions] == [
        (1, "2026-01-01"),
        (2, "2026-06-01"),
    ]
    assert all(len(v["fingerprint"]) == 64 for v in versions)

    diff = cli.json("program", "diff", "deli@1", "deli@2")
    assert diff == cli.json("program", "diff", str(path), str(changed))
    assert {"path": "tiers.levels[silver].min", "old": "200", "new": "150"} in diff
    added = next(c for c in diff if c["path"] == "earn.promotions[Winter]")
    assert added["old"] is None and added["new"]["multiplier"] == "1.5"
    assert "earn.per_unit: 6 → 5" in cli("program", "diff", "deli@2", str(path)).stdout
    assert cli("program", "diff", "deli@1", str(path)).stdout.strip() == "no changes"
    cli("program", "diff", "deli@7", str(path), code=3)

    assert tomllib.loads(cli("program", "export", "deli@1").stdout)["earn"]["per_unit"] == 5
    assert tomllib.loads(cli("program", "export", "deli").stdout)["earn"]["per_unit"] == 6


def test_dry_run_of_a_new_program_creates_nothing(cli: Cli) -> None:
    preview = cli.json("program", "load", str(PROGRAMS / "deli.toml"), "--dry-run")
    assert (preview["status"], preview["version"]) == ("created", 1)
    cli("program", "show", "deli", code=3)
