"""Program economics: ``report liability`` (roll-forward, ageing, cohorts, chain ladder,
deferred revenue, journal), ``report rewards|members|tiers --at-risk`` and the dashboard.

The hand-worked history is the one of docs/economics.md; the chain ladder reproduces
the Taylor-Ashe triangle's published factors and reserve."""

from __future__ import annotations

import csv
import html as html_lib
import itertools
import json
import re
import subprocess
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyaltyctl.rules.breakage import (
    RATE_SO_FAR,
    CohortFigures,
    develop,
    development_factors,
    estimate,
)
from loyaltyctl.services.economics import bucket_of
from tests.conftest import PROGRAMS, Cli, write_program
from tests.test_statements import CHROMIUM

NOW = "2026-05-02T12:00:00Z"
ROLL = (
    "opening_balance",
    "issued",
    "returned",
    "redeemed",
    "refunded",
    "expired",
    "adjusted_in",
    "adjusted_out",
    "closing_balance",
)

# ---- the chain ladder on a published triangle ----------------------------------------------

# Taylor and Ashe (1983), incremental paid claims by accident year and development year,
# the triangle Mack (1993) uses to illustrate the chain-ladder method.
TAYLOR_ASHE = """\
357848 766940 610542 482940 527326 574398 146342 139950 227229 67948
352118 884021 933894 1183289 445745 320996 527804 266172 425046
290507 1001799 926219 1016654 750816 146923 495992 280405
310608 1108250 776189 1562400 272482 352053 206286
443160 693190 991983 769488 504851 470639
396132 937085 847498 805037 705960
440832 847631 1131398 1063269
359480 1061648 1443370
376686 986608
344014"""


def test_chain_ladder_reproduces_the_taylor_ashe_factors_and_reserve() -> None:
    triangle = [
        list(itertools.accumulate(map(int, row.split()))) for row in TAYLOR_ASHE.split("\n")
    ]
    factors = development_factors(triangle)
    assert [round(float(f), 3) for f in factors] == [
        3.491, 1.747, 1.457, 1.174, 1.104, 1.086, 1.054, 1.077, 1.018,
    ]  # fmt: skip
    ultimates = [develop(row[-1], len(row) - 1, factors) for row in triangle]
    reserve = sum(u - row[-1] for u, row in zip(ultimates, triangle, strict=True))
    assert round(reserve) == 18_680_856
    assert round(ultimates[-1] - triangle[-1][-1]) == 4_625_811  # the latest year's reserve


def test_loyalty_estimate_caps_closes_and_falls_back() -> None:
    # Three quarterly cohorts (the docs' second example).
    est = estimate(
        [
            CohortFigures(10_000, 7_000, 0, (2_000, 5_000, 6_500, 7_000)),
            CohortFigures(12_000, 8_100, 3_900, (2_600, 6_240, 8_100)),
            CohortFigures(8_000, 3_700, 4_300, (1_500, 3_700)),
        ]
    )
    assert est.factors == [
        Fraction(14_940, 6_100),
        Fraction(14_600, 11_240),
        Fraction(7_000, 6_500),
    ]
    assert [c.expected for c in est.cohorts] == [0, 623, 1_476]
    assert (est.outstanding, est.expected, est.breakage) == (8_200, 2_099, 6_101)
    assert round(float(est.rate), 3) == 0.256
    # Nothing observed at two ages: the rate so far, and the output says so.
    only = estimate([CohortFigures(1_000, 200, 800, (200,)), CohortFigures(500, 0, 500, ())])
    assert only.method == RATE_SO_FAR
    assert [c.expected for c in only.cohorts] == [0, 67]  # 500 × 200/1500
    # A rate above 1 is capped; expected redemptions never exceed what is outstanding.
    capped = estimate([CohortFigures(100, 100, 0, (10, 100)), CohortFigures(100, 20, 80, (20,))])
    assert capped.cohorts[1].ultimate_rate == 1 and capped.cohorts[1].expected == 80


@pytest.mark.parametrize(
    ("expires", "bucket"),
    [
        (None, "never"),
        (date(2026, 3, 1), "0-30d"),  # past its date, no expiry run yet
        (date(2026, 4, 30), "0-30d"),
        (date(2026, 5, 1), "31-90d"),
        (date(2026, 6, 29), "31-90d"),
        (date(2026, 6, 30), "91-180d"),
        (date(2026, 9, 27), "91-180d"),
        (date(2026, 9, 28), "181-365d"),
        (date(2027, 3, 31), "181-365d"),
        (date(2027, 4, 1), ">365d"),
    ],
)
def test_ageing_buckets_count_days_from_the_end_of_the_period(
    expires: date | None, bucket: str
) -> None:
    assert bucket_of(expires, date(2026, 3, 31)) == bucket


# ---- the worked example of docs/economics.md -----------------------------------------------

SHOP = """\
[program]
key = "shop"
name = "Shop Points"
currency = "USD"
point_value = "0.01"
timezone = "UTC"

[earn]
per_unit = 1
signup_bonus = 0

[expiry]
policy = "rolling"
months = 3

[[rewards]]
key = "coupon"
name = "Coupon"
cost = 100
valid_days = 30
"""


def _run(cli: Cli, *args: str) -> Any:
    with freeze_time(NOW):
        return cli(*args)


def _redeem(cli: Cli, member: str, when: str, times: int = 1) -> list[str]:
    codes = []
    for _ in range(times):
        with freeze_time(NOW):
            out = cli.json("reward", "redeem", member, "coupon", "--at", when)
        codes.append(out["voucher"])
    return codes


@pytest.fixture
def shop(cli: Cli, tmp_path: Path) -> Cli:
    """docs/economics.md: four members, three monthly cohorts, a cancelled voucher, a
    return and an adjustment, January to March 2026."""
    _run(cli, "program", "load", str(write_program(tmp_path, SHOP)))
    for member, day in (("A", "01-02"), ("B", "01-02"), ("C", "02-01"), ("D", "03-01")):
        _run(cli, "member", "enroll", member, "--at", f"2026-{day}T09:00")
    post = ("txn", "post")
    _run(cli, *post, "A", "--ref", "P1", "--amount", "1000.00", "--at", "2026-01-05T10:00")
    _run(cli, *post, "B", "--ref", "P2", "--amount", "500.00", "--at", "2026-01-10T10:00")
    _redeem(cli, "A", "2026-01-20T10:00", 3)
    _redeem(cli, "B", "2026-02-10T10:00", 2)
    _run(cli, *post, "C", "--ref", "P3", "--amount", "800.00", "--at", "2026-02-12T10:00")
    c_vouchers = _redeem(cli, "C", "2026-02-20T10:00", 3)
    _run(cli, "reward", "cancel", c_vouchers[0], "--at", "2026-02-25T10:00")
    _run(cli, *post, "D", "--ref", "P4", "--amount", "400.00", "--at", "2026-03-03T10:00")
    _redeem(cli, "C", "2026-03-05T10:00")
    _run(
        cli, "txn", "return", "B", "--ref", "R1", "--original", "P2", "--amount", "100.00",
        "--at", "2026-03-10T10:00",
    )  # fmt: skip
    _run(
        cli, "txn", "adjust", "A", "--ref", "A1", "--points", "50", "--reason", "goodwill",
        "--at", "2026-03-15T10:00",
    )  # fmt: skip
    _redeem(cli, "A", "2026-03-25T10:00")
    _redeem(cli, "D", "2026-03-28T10:00")
    return cli


def liability(cli: Cli, *args: str) -> Any:
    with freeze_time(NOW):
        return cli.json("report", "liability", *args)


def test_worked_example_reproduces_the_docs_to_the_cent(shop: Cli, tmp_path: Path) -> None:
    journal = tmp_path / "journal.csv"
    with freeze_time(NOW):
        r = shop.json(
            "report", "liability", "--from", "2026-02-01", "--to", "2026-03-31",
            "--journal", str(journal),
        )  # fmt: skip
    roll = {k: r[k] for k in ROLL}
    assert roll == {
        "opening_balance": 1200,
        "issued": 1200,
        "returned": 100,
        "redeemed": 800,
        "refunded": 100,
        "expired": 0,
        "adjusted_in": 50,
        "adjusted_out": 0,
        "closing_balance": 1650,
    }
    assert (r["from"], r["to"], r["currency"], r["point_value"]) == (
        "2026-02-01", "2026-03-31", "USD", "0.01",
    )  # fmt: skip
    assert (r["opening_value"], r["closing_value"]) == ("12.00", "16.50")
    assert r["ageing"] == [
        {"bucket": "0-30d", "points": 800},
        {"bucket": "31-90d", "points": 850},
        {"bucket": "91-180d", "points": 0},
        {"bucket": "181-365d", "points": 0},
        {"bucket": ">365d", "points": 0},
        {"bucket": "never", "points": 0},
    ]
    assert r["expiring"] == [
        {"month": "2026-04", "points": 800},
        {"month": "2026-05", "points": 500},
        {"month": "2026-06", "points": 350},
    ]
    assert r["cohorts"] == [
        {"cohort": "2026-01", "issued": 1400, "redeemed": 600, "expired": 0, "outstanding": 800,
         "ultimate_redemption_rate": 0.428571, "expected_redemptions": 0},
        {"cohort": "2026-02", "issued": 800, "redeemed": 300, "expired": 0, "outstanding": 500,
         "ultimate_redemption_rate": 0.45, "expected_redemptions": 60},
        {"cohort": "2026-03", "issued": 450, "redeemed": 100, "expired": 0, "outstanding": 350,
         "ultimate_redemption_rate": 0.426667, "expected_redemptions": 92},
    ]  # fmt: skip
    assert r["development_factors"] == [1.6, 1.2]
    assert r["estimate_method"] == "chain-ladder"
    assert r["expected_redemption_rate"] == round(152 / 1650, 6)
    assert r["expected_breakage_points"] == 1498
    assert r["deferred_revenue"] == "1.52"
    assert r["opening_deferred_revenue"] == "0.00"
    months = [(m["month"], m["opening_balance"], m["closing_balance"]) for m in r["months"]]
    assert months == [("2026-02", 1200, 1600), ("2026-03", 1600, 1650)]
    with journal.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(x["account"], x["debit"], x["credit"]) for x in rows] == [
        ("Sales", "1.11", ""),
        ("Loyalty liability", "", "1.11"),
        ("Loyalty liability", "7.00", ""),
        ("Loyalty revenue", "", "7.00"),
        ("Loyalty revenue", "7.41", ""),
        ("Loyalty liability", "", "7.41"),
    ]
    assert {x["date"] for x in rows} == {"2026-03-31"}
    debits = sum(Decimal(x["debit"] or 0) for x in rows)
    assert debits == sum(Decimal(x["credit"] or 0) for x in rows)
    # Closing balance = the members' balances that day.
    with freeze_time(NOW):
        shown = [shop.json("member", "show", m)["balance"] for m in "ABCD"]
    assert shown == [650, 200, 500, 300]
    shop.check()


def test_lots_past_their_date_age_as_due_until_the_expiry_run(shop: Cli) -> None:
    april = ("--from", "2026-04-01", "--to", "2026-04-30")
    before = liability(shop, *april)
    assert before["expired"] == 0
    # A's and B's January lots are past their date (5 and 10 April), C's is due on 12 May.
    assert before["ageing"][:2] == [
        {"bucket": "0-30d", "points": 800 + 500},
        {"bucket": "31-90d", "points": 350},
    ]
    _run(shop, "expire", "--as-of", "2026-04-30")
    after = liability(shop, *april)
    assert after["expired"] == 800
    assert after["closing_balance"] == 1650 - 800 == after["opening_balance"] - 800
    assert after["ageing"][0] == {"bucket": "0-30d", "points": 500}
    jan = next(c for c in after["cohorts"] if c["cohort"] == "2026-01")
    assert (jan["expired"], jan["outstanding"], jan["ultimate_redemption_rate"]) == (
        800, 0, round(600 / 1400, 6),
    )  # fmt: skip


def test_rewards_members_and_tiers_at_risk(shop: Cli) -> None:
    with freeze_time(NOW):
        rewards = shop.json("report", "rewards", "--from", "2026-01-01", "--to", "2026-03-31")
        members = shop.json("report", "members", "--top", "2", "--by", "spend")
        visits = shop.json("report", "members", "--by", "visits", "--to", "2026-01-31")
    assert rewards == [
        {"reward": "coupon", "name": "Coupon", "issued": 11, "used": 0, "cancelled": 1,
         "expired": 7, "live": 3, "points": 0, "cost": "0.00"},
    ]  # fmt: skip
    assert [(m["member"], m["spend"], m["points"], m["visits"], m["balance"]) for m in members] == [
        ("A", "1000.00", 1000, 1, 650),
        ("C", "800.00", 800, 1, 500),
    ]
    assert [(m["member"], m["balance"]) for m in visits] == [("A", 700), ("B", 500)]
    assert members[0]["last_purchase_at"] == "2026-01-05T10:00:00Z"


TIERED = """\
[program]
key = "tiered"
name = "Tiered"
currency = "USD"
timezone = "UTC"

[earn]
per_unit = 1

[tiers]
metric = "spend"
window = "rolling-12-months"
hold_months = 12

[[tiers.levels]]
key = "green"
min = 0

[[tiers.levels]]
key = "gold"
min = 300

[[tiers.levels]]
key = "platinum"
min = 1000
"""


def test_tiers_at_risk_lists_holds_ending_below_the_minimum(cli: Cli, tmp_path: Path) -> None:
    with freeze_time("2027-01-20T12:00:00Z"):
        cli("program", "load", str(write_program(tmp_path, TIERED)))
        for m in ("G", "H", "P"):
            cli("member", "enroll", m, "--at", "2026-01-02T09:00")
        cli("txn", "post", "G", "--ref", "g1", "--amount", "350.00", "--at", "2026-01-25T10:00")
        cli("txn", "post", "H", "--ref", "h1", "--amount", "350.00", "--at", "2026-03-25T10:00")
        # A partial return lowers the activity but keeps the tier until the review.
        cli("txn", "return", "H", "--ref", "h2", "--original", "h1", "--amount", "100.00",
            "--at", "2026-04-01T10:00")  # fmt: skip
        cli("txn", "post", "P", "--ref", "p1", "--amount", "1200.00", "--at", "2026-01-10T10:00")
        cli("txn", "post", "P", "--ref", "p2", "--amount", "400.00", "--at", "2026-12-01T10:00")
        risky = cli.json("report", "tiers", "--at-risk", "--as-of", "2027-01-15")
        wide = cli.json("report", "tiers", "--at-risk", "--within", "90d", "--as-of", "2027-01-15")
        cli("report", "tiers", "--as-of", "2027-01-15", code=2)
        cli("report", "tiers", "--at-risk", "--within", "soon", code=4)
    # G's hold ends on 2027-01-25 but its 350.00 still qualifies for gold; P's ended on
    # 2027-01-10 (awaiting the review) and only 400.00 of its window is left.
    assert risky == [
        {"member": "P", "tier": "platinum", "hold_until": "2027-01-10", "qualifying": "400.00",
         "needed": "600.00", "would_drop_to": "gold"},
    ]  # fmt: skip
    assert [(r["member"], r["hold_until"], r["needed"], r["would_drop_to"]) for r in wide] == [
        ("H", "2027-03-25", "50.00", "green"),
        ("P", "2027-01-10", "600.00", "gold"),
    ]


# ---- random histories: the identity, and the members' balances -------------------------------

_programs = itertools.count()
steps = st.lists(
    st.tuples(
        st.sampled_from(["purchase", "purchase", "return", "adjust", "redeem", "cancel", "expire"]),
        st.integers(0, 2),
        st.integers(1, 400),
        st.integers(0, 15),
    ),
    min_size=1,
    max_size=18,
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=steps, cut=st.integers(0, 200))
def test_closing_is_opening_plus_movements_and_the_members_balances(
    cli: Cli, tmp_path: Path, history: list, cut: int
) -> None:
    key = f"h{next(_programs)}"
    text = (PROGRAMS / "deli.toml").read_text(encoding="utf-8").replace('"deli"', f'"{key}"')
    p = ("--program", key)
    day = date(2026, 1, 5)
    members = [f"{key}-M{i}" for i in range(3)]
    purchases: list[tuple[str, str, Decimal]] = []
    vouchers: list[str] = []
    with freeze_time("2026-12-31T12:00:00Z"):
        cli("program", "load", str(write_program(tmp_path, text, f"{key}.toml")))
        for m in members:
            cli("member", "enroll", m, "--at", f"{day}T09:00", *p)
        for n, (kind, who, value, gap) in enumerate(history):
            day += timedelta(days=gap)
            at = ("--at", f"{day}T12:{n:02d}")
            m = members[who]
            if kind == "purchase":
                purchases.append((m, f"{key}-P{n}", Decimal(value)))
                cli("txn", "post", m, "--ref", f"{key}-P{n}", "--amount", f"{value}.00", *at, *p)
            elif kind == "return" and purchases:
                owner, ref, left = purchases[value % len(purchases)]
                part = min(left, Decimal(value % 50 + 1))
                if part > 0:
                    cli("txn", "return", owner, "--ref", f"{key}-R{n}", "--original", ref,
                        "--amount", f"{part}", *at, *p)  # fmt: skip
                    purchases[value % len(purchases)] = (owner, ref, left - part)
            elif kind == "adjust":
                points = value - 200
                cli("txn", "adjust", m, "--ref", f"{key}-A{n}", "--points", str(points or 1),
                    "--reason", "test", *at, *p, code=None)  # fmt: skip
            elif kind == "redeem":
                out = cli("reward", "redeem", m, "cookie", *at, *p, "--json", code=None)
                if out.exit_code == 0:
                    vouchers.append(json.loads(out.stdout)["voucher"])
            elif kind == "cancel" and vouchers:
                cli("reward", "cancel", vouchers[value % len(vouchers)], *at, *p, code=None)
            elif kind == "expire":
                cli("expire", "--as-of", str(day), *p)
        last = day + timedelta(days=1)
        first = date(2026, 1, 1) + timedelta(days=cut)
        first = min(first, last)
        whole = cli.json("report", "liability", "--from", "2026-01-01", "--to", str(last), *p)
        part = cli.json("report", "liability", "--from", str(first), "--to", str(last), *p)
        before = cli.json(
            "report", "liability", "--from", "2025-12-01", "--to", str(first - timedelta(days=1)),
            *p,
        )  # fmt: skip
        shown = sum(cli.json("member", "show", m, *p)["balance"] for m in members)
    for r in (whole, part, before):
        assert r["closing_balance"] == r["opening_balance"] + (
            r["issued"] - r["returned"] - r["redeemed"] + r["refunded"] - r["expired"]
            + r["adjusted_in"] - r["adjusted_out"]
        )  # fmt: skip
        assert sum(b["points"] for b in r["ageing"]) == r["points_in_lots"]
        assert sum(c["outstanding"] for c in r["cohorts"]) == r["points_in_lots"]
        for c in r["cohorts"]:
            assert c["issued"] == c["redeemed"] + c["expired"] + c["outstanding"]
            assert 0 <= c["expected_redemptions"] <= max(c["outstanding"], 0)
        months = r["months"]
        assert months[0]["opening_balance"] == r["opening_balance"]
        assert months[-1]["closing_balance"] == r["closing_balance"]
        assert 0 <= r["expected_breakage_points"] <= r["points_in_lots"]
    assert whole["opening_balance"] == 0
    assert whole["closing_balance"] == part["closing_balance"] == shown
    assert part["opening_balance"] == before["closing_balance"]


# ---- the dashboard -------------------------------------------------------------------------


def _cell(html: str, ident: str) -> str:
    match = re.search(rf'id="{ident}">([^<]*)<', html)
    assert match, ident
    return match[1].replace(",", "")


def _rows(html: str, table: str) -> list[list[str]]:
    body = html.split(f'<table id="{table}">', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body.split("<tbody>", 1)[1], flags=re.S)
    cells = [re.findall(r"<t[hd][^>]*>([^<]*)<", row) for row in rows]
    return [[html_lib.unescape(c) for c in row if c] for row in cells]


def test_dashboard_figures_equal_the_json_reports(shop: Cli, tmp_path: Path) -> None:
    page = tmp_path / "dashboard.html"
    with freeze_time(NOW):
        shop("report", "dashboard", "--out", str(page), "--as-of", "2026-03-31")
        li = shop.json("report", "liability", "--from", "2025-04-01", "--to", "2026-03-31")
        summary = shop.json("report", "summary", "--as-of", "2026-03-31")
        rewards = shop.json("report", "rewards", "--from", "2025-04-01", "--to", "2026-03-31")
    html = page.read_text(encoding="utf-8")
    assert int(_cell(html, "members")) == summary["members"]
    assert int(_cell(html, "points-outstanding")) == li["closing_balance"]
    assert _cell(html, "closing-value") == li["closing_value"]
    assert _cell(html, "deferred-revenue") == li["deferred_revenue"]
    assert int(_cell(html, "points-issued")) == summary["points_issued"]
    assert int(_cell(html, "expected-breakage")) == li["expected_breakage_points"]
    keys = ("opening_balance", "issued", "returned", "redeemed", "refunded", "expired",
            "adjusted_in", "adjusted_out", "closing_balance")  # fmt: skip
    assert _rows(html, "roll-forward") == [
        [m["month"], *(str(m[k]) for k in keys)] for m in li["months"]
    ]
    assert len(li["months"]) == 12
    assert _rows(html, "ageing") == [[a["bucket"], str(a["points"])] for a in li["ageing"]]
    assert _rows(html, "tiers") == [[k, str(v)] for k, v in summary["tiers"].items()]
    assert _rows(html, "rewards") == [
        [r["name"], *(str(r[k]) for k in ("issued", "used", "cancelled", "expired", "live",
                                           "points", "cost"))]
        for r in rewards
    ]  # fmt: skip
    # Self-contained: nothing to fetch.
    assert not re.search(r"https?://", html)
    assert not re.search(r"<(link|script|img|iframe)\b|\bsrc=|url\(", html)


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs headless Chromium at /usr/bin/chromium (apt-get install -y chromium)",
)
def test_dashboard_renders_in_headless_chromium_without_errors(shop: Cli, tmp_path: Path) -> None:
    from tests.test_statements import png_pixels

    page = tmp_path / "dashboard.html"
    with freeze_time(NOW):
        shop("report", "dashboard", "--out", str(page), "--as-of", "2026-03-31")
    png = tmp_path / "dashboard.png"
    flags = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
        "--v=0",
    ]  # fmt: skip
    shot = subprocess.run(
        [*flags, f"--screenshot={png}", "--window-size=1024,1400", page.as_uri()],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    dom = subprocess.run(
        [*flags, "--dump-dom", page.as_uri()],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    for run in (shot, dom):
        console = [line for line in run.stderr.splitlines() if "CONSOLE" in line]
        assert console == [], console
    assert 'id="roll-forward"' in dom.stdout and "<svg" in dom.stdout
    width, _, rows = png_pixels(png.read_bytes(), max_rows=400)
    channels = len(rows[0]) // width
    pixels = [row[x : x + 3] for row in rows[::4] for x in range(0, len(row), channels * 4)]
    assert sum(1 for p in pixels if p == bytes.fromhex("1f4e79")) > 300, "no header drawn"
    assert sum(1 for p in pixels if max(p) < 90) > 200, "no text drawn"
