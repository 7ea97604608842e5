"""`txn show`: how a purchase's points were worked out, and statements that name the
promotions a purchase earned by (the HTML one rendered in headless Chromium)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Cli, write_program
from tests.test_statements import CHROMIUM, png_pixels, screenshot

PROGRAM = """
[program]
key = "cafe"
name = "Cafe"
currency = "USD"
timezone = "UTC"

[earn]
per_unit = 10
rounding = "floor"
exclude = ["gift-cards"]

[earn.categories]
beans = 2.0

[[earn.promotions]]
name = "Double beans week"
from = 2026-03-01
to = 2026-03-07
multiplier = 2.0
categories = ["beans"]

[expiry]
policy = "never"

[tiers]
metric = "points"
window = "rolling-12-months"

[[tiers.levels]]
key = "green"
min = 0

[[tiers.levels]]
key = "gold"
min = 150
multiplier = 1.5
"""


@pytest.fixture
def cafe(cli: Cli, tmp_path: Path) -> Cli:
    cli("program", "load", str(write_program(tmp_path, PROGRAM)))
    cli("member", "enroll", "M1", "--at", "2026-01-05")
    return cli


def test_a_purchase_explains_its_points(cafe: Cli) -> None:
    lines = ["--line", "beans=3.87", "--line", "drinks=2.00", "--line", "gift-cards=10.00"]
    cafe("txn", "post", "M1", "--ref", "P1", *lines, "--at", "2026-03-03T09:00")
    shown = cafe.json("txn", "show", "P1")
    # beans 3.87 × 10 × 2 (category) × 1 (green) × 2 (promotion) = 154.8
    # drinks 2.00 × 10 × 1 × 1 = 20; gift cards earn nothing: 174.8, floor → 174
    assert shown["points"] == 174
    assert shown["tier"] == "green" and shown["tier_multiplier"] == "1"
    assert shown["promotions"] == [{"name": "Double beans week", "multiplier": "2.0"}]
    assert shown["rounding"] == "floor"
    assert [(x["category"], x["amount"], x["excluded"]) for x in shown["lines"]] == [
        ("beans", "3.87", False),
        ("drinks", "2.00", False),
        ("gift-cards", "10.00", True),
    ]
    assert shown["lines"][0]["multiplier"] == "2.0"
    assert shown["lines"][0]["promotions"] == ["Double beans week"]
    assert shown["lines"][1]["promotions"] == []
    assert shown["program_version"] == 1
    assert shown["entries"] == [{"kind": "earn", "points": 174, "expires_on": None}]
    # The purchase took M1 past 150: gold counts from the next transaction, so this one is
    # explained at green; the next at gold.
    cafe("txn", "post", "M1", "--ref", "P2", "--amount", "10.00", "--at", "2026-03-10T09:00")
    second = cafe.json("txn", "show", "P2")
    assert (second["tier"], second["tier_multiplier"], second["points"]) == ("gold", "1.5", 150)
    text = cafe("txn", "show", "P1").stdout
    assert "Double beans week" in text and "174" in text
    cafe.check()


def test_show_of_an_unknown_ref_is_not_found(cafe: Cli) -> None:
    result = cafe("txn", "show", "NOPE", code=3)
    assert "transaction NOPE not found" in result.stderr


def test_statements_name_the_promotion(cafe: Cli, tmp_path: Path) -> None:
    cafe("txn", "post", "M1", "--ref", "P1", "--line", "beans=5.00", "--at", "2026-03-02T09:00")
    cafe("txn", "post", "M1", "--ref", "P2", "--amount", "5.00", "--at", "2026-04-02T09:00")
    period = ("--from", "2026-03-01", "--to", "2026-04-30")
    doc = json.loads(cafe("statement", "M1", *period, "--format", "json").stdout)
    text = cafe("statement", "M1", *period).stdout
    assert "Double beans week" in text
    html = tmp_path / "m1.html"
    cafe(
        "statement", "M1", "--from", "2026-03-01", "--to", "2026-04-30",
        "--format", "html", "--out", str(html),
    )  # fmt: skip
    page = html.read_text(encoding="utf-8")
    assert "Double beans week" in page
    assert page.count("Double beans week") == 1  # the April purchase had none
    assert [line["points"] for line in doc["lines"]] == [
        200,
        75,
    ]  # gold from the second purchase: 5.00 × 10 × 1.5
    if not CHROMIUM.exists():
        pytest.skip("needs headless Chromium at /usr/bin/chromium to render the page")
    png = tmp_path / "m1.png"
    screenshot(html, png, tmp_path / "profile")
    width, _height, rows = png_pixels(png.read_bytes(), max_rows=600)
    assert width == 1024
    channels = len(rows[0]) // width
    pixels = [row[x : x + 3] for row in rows[::4] for x in range(0, len(row), channels * 4)]
    dark = sum(1 for p in pixels if max(p) < 90)
    assert dark > 200, "no text was drawn"
