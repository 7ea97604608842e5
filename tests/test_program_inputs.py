"""Program files and categories: plain decimals, dates kept within 2999, categories that
match whatever their case and spaces, known categories, promotions by category, and new
versions that may not pull the ground from under members."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Cli, write_program
from tests.test_database_errors import one_error

PROGRAM = """
[program]
key = "shop"
name = "Shop"
currency = "USD"
timezone = "UTC"

[earn]
per_unit = 1
exclude = ["Gift Cards"]
{known}

[earn.categories]
"Coffee Beans" = 2.0

[[earn.promotions]]
name = "Beans week"
from = 2026-03-01
to = 2026-03-07
multiplier = 3.0
categories = ["coffee beans"]

[tiers]
metric = "points"
hold_months = 12

[[tiers.levels]]
key = "base"
min = 0

[[tiers.levels]]
key = "gold"
min = 100000
"""


def load(cli: Cli, tmp_path: Path, known: str = "", **replace: str) -> Path:
    text = PROGRAM.replace("{known}", known)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = write_program(tmp_path, text, f"shop-{len(list(tmp_path.glob('shop-*')))}.toml")
    cli("program", "load", str(path))
    return path


@pytest.mark.parametrize(
    "line, words",
    [
        ("point_value = 1e-2", ["plain decimal"]),
        ("point_value = 1E2", ["plain decimal"]),
        ("point_value = 0.5e1", ["plain decimal"]),
        ("point_value = inf", ["expected a decimal number"]),
        ("point_value = nan", ["expected a decimal number"]),
    ],
)
def test_decimals_are_plain(cli: Cli, tmp_path: Path, line: str, words: list[str]) -> None:
    text = PROGRAM.replace("{known}", "").replace('timezone = "UTC"', f'timezone = "UTC"\n{line}')
    path = write_program(tmp_path, text)
    one_error(cli("program", "validate", str(path), code=None), 4, *words)


@pytest.mark.parametrize(
    "old, new, words",
    [
        ("hold_months = 12", "hold_months = 20000", ["past the year 2999"]),
        ("per_unit = 1", "per_unit = 1\npending_days = 400000", ["past the year 2999"]),
        ("per_unit = 1", "per_unit = 1\nsignup_bonus = 1000000000001", ["at most"]),
        ("from = 2026-03-01", "from = 1899-12-31", ["outside the years"]),
        ("to = 2026-03-07", "to = 3000-01-01", ["outside the years"]),
        ('"Coffee Beans" = 2.0', '"Coffee Beans" = 2.0\n"coffee  beans" = 3.0', ["same category"]),
    ],
)
def test_numbers_that_would_break_dates_or_totals(
    cli: Cli, tmp_path: Path, old: str, new: str, words: list[str]
) -> None:
    text = PROGRAM.replace("{known}", "").replace(old, new)
    path = write_program(tmp_path, text)
    one_error(cli("program", "validate", str(path), code=None), 4, *words)
    one_error(cli("program", "load", str(path), code=None), 4, *words)


def test_expiry_months_and_voucher_days_are_bounded(cli: Cli, tmp_path: Path) -> None:
    text = PROGRAM.replace("{known}", "") + (
        '\n[expiry]\npolicy = "rolling"\nmonths = 999999\n'
        '\n[[rewards]]\nkey = "r"\nname = "R"\ncost = 10\nvalid_days = 99999999\n'
    )
    result = cli("program", "validate", str(write_program(tmp_path, text)), code=None)
    one_error(result, 4, "expiry.months", "rewards[0].valid_days")


def test_categories_match_whatever_their_case_and_spaces(cli: Cli, tmp_path: Path) -> None:
    load(cli, tmp_path)
    cli("member", "enroll", "M1", "--at", "2026-01-01")
    for n, spelling in enumerate(["Coffee Beans", " coffee  beans ", "COFFEE BEANS"]):
        out = cli.json("txn", "post", "M1", "--ref", f"B{n}", "--amount", "10",
                       "--category", spelling, "--at", "2026-02-01")  # fmt: skip
        assert out["points"] == 20
    out = cli.json("txn", "post", "M1", "--ref", "G", "--amount", "10",
                   "--category", "gift cards", "--at", "2026-02-01")  # fmt: skip
    assert out["points"] == 0
    rows = tmp_path / "txns.csv"
    rows.write_text("member,ref,amount,category,at\nM1,I1,10,  Coffee BEANS,2026-02-02\n")
    cli("txn", "import", str(rows))
    assert cli.json("member", "show", "M1")["balance"] == 80


def test_a_promotion_with_categories_multiplies_only_their_lines(cli: Cli, tmp_path: Path) -> None:
    load(cli, tmp_path)
    cli("member", "enroll", "M1", "--at", "2026-01-01")
    out = cli.json("txn", "post", "M1", "--ref", "P1", "--line", "Coffee Beans=10",
                   "--line", "pastry=10", "--at", "2026-03-02")  # fmt: skip
    # beans: 10 × 2 × 3 = 60; pastry: 10 × 1, no promotion = 10
    assert out["points"] == 70
    single = cli.json("txn", "post", "M1", "--ref", "P2", "--amount", "10",
                      "--category", "pastry", "--at", "2026-03-02")  # fmt: skip
    assert single["points"] == 10


def test_known_categories_refuse_a_typo(cli: Cli, tmp_path: Path) -> None:
    load(cli, tmp_path, known='known_categories = ["Pastry", "drinks"]')
    cli("member", "enroll", "M1", "--at", "2026-01-01")
    cli("txn", "post", "M1", "--ref", "OK", "--amount", "1", "--category", "PASTRY")
    cli("txn", "post", "M1", "--ref", "OK2", "--amount", "1", "--category", "coffee beans")
    before = cli.json("member", "show", "M1")["balance"]
    one_error(cli("txn", "post", "M1", "--ref", "T", "--amount", "1", "--category", "pastyr",
                  code=None), 4, "unknown category 'pastyr'")  # fmt: skip
    one_error(cli("txn", "post", "M1", "--ref", "T", "--line", "pastyr=1", "--line", "drinks=1",
                  code=None), 4, "unknown category")  # fmt: skip
    rows = tmp_path / "txns.csv"
    rows.write_text("member,ref,amount,category\nM1,I1,1,drinks\nM1,I2,1,drnks\n")
    rejects = tmp_path / "rejects.csv"
    summary = cli.json("txn", "import", str(rows), "--rejects", str(rejects))
    assert summary["applied"] == 1 and summary["rejected"] == 1
    assert "unknown category" in rejects.read_text()
    assert cli.json("member", "show", "M1")["balance"] == before + 1


def test_a_new_version_may_not_change_the_currency(cli: Cli, tmp_path: Path) -> None:
    load(cli, tmp_path)
    text = PROGRAM.replace("{known}", "").replace('currency = "USD"', 'currency = "EUR"')
    path = write_program(tmp_path, text, "eur.toml")
    one_error(cli("program", "load", str(path), code=None), 6, "currency", "USD", "EUR")
    assert cli.json("program", "show")["version"] == 1


def test_a_new_version_may_not_drop_a_held_tier(cli: Cli, tmp_path: Path) -> None:
    load(cli, tmp_path)
    cli("member", "enroll", "M1", "--at", "2026-01-01")
    cli("member", "enroll", "M2", "--at", "2026-01-01")
    renamed = PROGRAM.replace("{known}", "").replace('key = "base"', 'key = "basic"')
    path = write_program(tmp_path, renamed, "renamed.toml")
    one_error(cli("program", "load", str(path), code=None), 6, "base (2 members)",
              "--move-tier base=basic")  # fmt: skip
    one_error(cli("program", "load", str(path), "--move-tier", "base=nope", code=None), 4, "nope")
    one_error(cli("program", "load", str(path), "--move-tier", "base", code=None), 4, "OLD=NEW")
    cli("program", "load", str(path), "--move-tier", "base=basic")
    shown = cli.json("member", "show", "M1")
    assert shown["tier"] == "basic"
    assert shown["tier_history"][-1]["tier"] == "basic"
    assert shown["tier_history"][-1]["reason"] == "manual"
    cli.check()
