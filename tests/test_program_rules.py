"""The program file: parsing, validation messages, export and template (no database)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from loyaltyctl.errors import InvalidInput, NotFound, ProgramInvalid
from loyaltyctl.rules.currency import is_currency, minor_digits
from loyaltyctl.rules.program import ProgramInfo, TierLevel, Tiers
from loyaltyctl.rules.program_export import (
    program_fingerprint,
    program_template,
    program_to_toml,
)
from loyaltyctl.rules.program_parse import parse_program
from loyaltyctl.services.program_files import load_program_file

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"
EXAMPLES = sorted(PROGRAMS.glob("*.toml"))

HEAD = """\
[program]
key = "test"
name = "Test"
currency = "USD"
"""


def problems(text: str, source: str = "p.toml") -> list[str]:
    with pytest.raises(ProgramInvalid) as info:
        parse_program(text, source)
    assert info.value.source == source
    return info.value.problems


def test_the_examples_are_there() -> None:
    names = {path.name for path in EXAMPLES}
    assert {"coffee.toml", "retail.toml", "airline.toml", "deli.toml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_program_parses_and_round_trips(path: Path) -> None:
    program, text = load_program_file(path)
    assert text == path.read_text(encoding="utf-8")
    exported = program_to_toml(program)
    again = parse_program(exported, "export")
    assert again == program
    assert program_fingerprint(again) == program_fingerprint(program)
    assert program_to_toml(again) == exported


def test_example_keys() -> None:
    keys = {load_program_file(path)[0].program.key for path in EXAMPLES}
    assert {"beans", "shopsmart", "skymiles", "deli"} <= keys


def test_deli_is_the_worked_example_program() -> None:
    program, _ = load_program_file(PROGRAMS / "deli.toml")
    assert program.program.point_value == Decimal("0.005")
    assert program.program.tz.key == "Europe/London"
    assert program.earn.per_unit == 5
    assert program.earn.exclude == ["tobacco"]
    assert program.earn.categories == {"coffee-beans": Decimal("3.0")}
    promo = program.earn.promotions[0]
    assert (promo.from_, promo.to, promo.multiplier) == (date(2026, 6, 6), date(2026, 6, 7), 2)
    assert program.expiry.policy == "rolling" and program.expiry.months == 6
    assert program.tiers.metric == "spend" and program.tiers.window == "calendar-year"
    assert program.tier_keys() == ["bronze", "silver"]
    assert program.tier("silver").multiplier == Decimal("1.25")
    assert program.tier("silver").name == "Silver"
    cookie = program.reward("cookie")
    assert cookie is not None and cookie.cost == 100 and cookie.valid_days == 14
    assert program.reward("nope") is None


def test_defaults() -> None:
    program = parse_program(HEAD)
    assert program.program.point_value == Decimal("0.01")
    assert program.program.timezone == "UTC"
    assert program.program.minor_digits == 2
    assert program.earn.per_unit == 1 and program.earn.rounding == "floor"
    assert program.earn.allow_negative is True and program.earn.bonus_qualifies is False
    assert program.expiry.policy == "never"
    assert program.tier_keys() == ["member"]
    assert program.tiers.levels[0].min == 0
    assert program.rewards == [] and program.branding is None


def test_decimals_are_exact() -> None:
    program = parse_program(
        HEAD.replace('currency = "USD"', 'currency = "usd"\npoint_value = "0.01"')
        + '[earn]\nper_unit = 1.25\n[earn.categories]\na = 0.1\nb = 3\nc = "2.50"\n'
    )
    assert program.program.currency == "USD"
    assert program.earn.per_unit == Decimal("1.25")
    assert str(program.earn.per_unit) == "1.25"
    assert program.program.point_value == Decimal("0.01")
    assert program.earn.categories == {"a": Decimal("0.1"), "b": Decimal(3), "c": Decimal("2.50")}
    assert all(isinstance(v, Decimal) for v in program.earn.categories.values())


@pytest.mark.parametrize("value", ["true", '"1e3"', '"abc"', '"1."', "nan", "inf", "[1]"])
def test_bad_decimal(value: str) -> None:
    (problem,) = problems(HEAD + f"[earn]\nper_unit = {value}\n")
    assert problem == "p.toml:6: earn.per_unit: expected a decimal number"


def test_dates_accept_strings_but_not_datetimes() -> None:
    promo = '[[earn.promotions]]\nname = "p"\nfrom = "2026-01-02"\nto = {to}\nmultiplier = 2\n'
    program = parse_program(HEAD + promo.format(to="2026-01-03"))
    assert program.earn.promotions[0].to == date(2026, 1, 3)
    (problem,) = problems(HEAD + promo.format(to="2026-01-03T10:00:00"))
    assert "earn.promotions[0].to: expected a date (YYYY-MM-DD)" in problem
    (problem,) = problems(HEAD + promo.format(to='"2026-02-30"'))
    assert 'earn.promotions[0].to: "2026-02-30" is not a real date' in problem


def test_broken_file_reports_every_problem_with_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(
        """\
[program]
key = "beans"
name = "Beans"
currency = "USX"
timezone = "Mars/Base"

[earn]
per_unit = 10
rounding = "round"
bogus = 1

[[tiers.levels]]
key = "green"
min = 0

[[tiers.levels]]
key = "gold"
min = 3000
multiplier = 0

[[rewards]]
key = "free-drink"
name = "Free drink"
cost = 0
""",
        encoding="utf-8",
    )
    with pytest.raises(ProgramInvalid) as info:
        load_program_file(path)
    assert info.value.exit_code == 4
    src = str(path)
    assert info.value.problems == [
        f'{src}:4: program.currency: unknown currency "USX" (use an ISO 4217 code such as USD)',
        f'{src}:5: program.timezone: unknown time zone "Mars/Base" '
        "(use an IANA name such as Europe/London)",
        f'{src}:9: earn.rounding: must be one of "floor", "half-up" or "ceil"',
        f"{src}:10: earn.bogus: unknown key (allowed: per_unit, rounding, exclude, "
        "signup_bonus, pending_days, allow_negative, categories, promotions, bonus_qualifies, "
        "known_categories)",
        f"{src}:19: tiers.levels[1].multiplier: must be greater than 0",
        f"{src}:24: rewards[0].cost: must be at least 1",
    ]
    assert "6 problems in program file" in str(info.value)


def test_cross_checks_are_reported_with_unrelated_errors() -> None:
    text = HEAD + (
        "[earn]\nper_unit = -1\n"
        '[[rewards]]\nkey = "vip"\nname = "VIP"\ncost = 10\ntiers = ["platinum"]\n'
    )
    assert problems(text) == [
        "p.toml:6: earn.per_unit: must be at least 0",
        'p.toml:11: rewards[0].tiers: unknown tier "platinum" (tiers: member)',
    ]


def test_syntax_error_reports_line_and_column() -> None:
    assert problems(HEAD + "[earn]\nper_unit = = 3\n") == ["p.toml:6:12: Invalid value"]
    assert problems('[program]\nkey = "a"\nkey = "b"\n') == [
        "p.toml:3:10: Cannot overwrite a value"
    ]
    (problem,) = problems("[program")
    assert problem.startswith("p.toml:1:")


def test_missing_program_table_and_keys() -> None:
    assert problems("") == ["p.toml: program: required table [program] is missing"]
    assert problems('[program]\nkey = "x"\n') == [
        "p.toml:1: program.name: required key is missing",
        "p.toml:1: program.currency: required key is missing",
    ]


def test_unknown_key_in_an_array_of_tables() -> None:
    text = HEAD + '[[rewards]]\nkey = "a"\nname = "A"\ncost = 1\ncolour = "red"\n'
    (problem,) = problems(text)
    assert problem.startswith("p.toml:9: rewards[0].colour: unknown key (allowed: key, name, cost,")
    (problem,) = problems(HEAD + "[extras]\na = 1\n")
    assert problem.startswith("p.toml:5: extras: unknown key (allowed: program, earn, expiry,")


def test_unknown_tier_in_reward() -> None:
    text = HEAD + (
        '[[tiers.levels]]\nkey = "green"\nmin = 0\n'
        '[[tiers.levels]]\nkey = "gold"\nmin = 3000\n'
        '[[rewards]]\nkey = "a"\nname = "A"\ncost = 1\n'
        '[[rewards]]\nkey = "b"\nname = "B"\ncost = 1\n'
        'tiers = [\n  "gold",\n  "platinum",\n]\n'
        '[[rewards]]\nkey = "a"\nname = "C"\ncost = 1\n'
    )
    assert problems(text) == [
        'p.toml:19: rewards[1].tiers: unknown tier "platinum" (tiers: green, gold)',
        'p.toml:24: rewards[2].key: duplicate reward "a"',
    ]


def levels(*mins: str, metric: str = "points") -> str:
    blocks = "".join(f'[[tiers.levels]]\nkey = "t{i}"\nmin = {m}\n' for i, m in enumerate(mins))
    return HEAD + f'[tiers]\nmetric = "{metric}"\n' + blocks


def test_tier_thresholds_must_ascend_from_zero() -> None:
    assert problems(levels("10", "20")) == [
        "p.toml:9: tiers.levels[0].min: the first level must have min = 0"
    ]
    assert problems(levels("0", "500", "500")) == [
        'p.toml:15: tiers.levels[2].min: must be greater than the min of "t1" (500): '
        "levels go from lowest to highest"
    ]
    assert problems(levels("0", "500", "100")) == [
        'p.toml:15: tiers.levels[2].min: must be greater than the min of "t1" (500): '
        "levels go from lowest to highest"
    ]
    assert problems(HEAD + "[tiers]\nlevels = []\n") == [
        "p.toml:6: tiers.levels: at least one level is required (first with min = 0)"
    ]
    dup = HEAD + '[[tiers.levels]]\nkey = "a"\nmin = 0\n[[tiers.levels]]\nkey = "a"\nmin = 5\n'
    assert problems(dup) == ['p.toml:9: tiers.levels[1].key: duplicate tier "a"']


def test_tier_thresholds_units() -> None:
    assert problems(levels("0", "2.5")) == [
        "p.toml:12: tiers.levels[1].min: must be a whole number of points"
    ]
    assert parse_program(levels("0", "99.99", metric="spend")).tiers.levels[1].min == Decimal(
        "99.99"
    )
    assert problems(levels("0", '"99.999"', metric="spend")) == [
        "p.toml:12: tiers.levels[1].min: USD amounts have at most 2 decimals"
    ]


def test_tier_level_name_defaults_to_title_case() -> None:
    assert TierLevel(key="gold-plus", min=Decimal(100)).name == "Gold Plus"
    assert TierLevel(key="gold", name="Or", min=Decimal(100)).name == "Or"
    assert Tiers().levels[0].key == "member"


@pytest.mark.parametrize(
    ("code", "message"),
    [("USX", 'unknown currency "USX"'), ("", 'unknown currency ""'), ("XAU", "unknown currency")],
)
def test_bad_currency(code: str, message: str) -> None:
    (problem,) = problems(HEAD.replace('"USD"', f'"{code}"'))
    assert problem.startswith(f"p.toml:4: program.currency: {message}")


@pytest.mark.parametrize("zone", ["Mars/Base", "localtime", "", "../etc/passwd", "America"])
def test_bad_timezone(zone: str) -> None:
    (problem,) = problems(HEAD + f'timezone = "{zone}"\n')
    assert problem == (
        f'p.toml:5: program.timezone: unknown time zone "{zone}" '
        "(use an IANA name such as Europe/London)"
    )


def test_zones_known_without_walking_the_zone_directories_are_known_zones() -> None:
    """The quick check (tzdata's list) accepts nothing the full one would refuse."""
    from loyaltyctl.rules import timeutil

    quick = timeutil._tzdata_zones() - timeutil._NOT_ZONES
    assert "Europe/London" in quick
    assert quick <= timeutil._zone_keys()


def test_bad_program_key() -> None:
    (problem,) = problems(HEAD.replace('"test"', '"Test Program"'))
    assert problem.startswith('p.toml:2: program.key: invalid key "Test Program"')


def test_promotion_dates_in_order() -> None:
    text = HEAD + '[[earn.promotions]]\nname = "p"\nfrom = 2026-12-06\nto = 2026-12-05\n'
    text += "multiplier = 2.0\n"
    assert problems(text) == [
        "p.toml:8: earn.promotions[0].to: 2026-12-05 is before from (2026-12-06)"
    ]
    one_day = text.replace("to = 2026-12-05", "to = 2026-12-06")
    assert parse_program(one_day).earn.promotions[0].from_ == date(2026, 12, 6)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            "[earn.categories]\nbeans = 0\n",
            "p.toml:6: earn.categories.beans: must be greater than 0",
        ),
        (
            "[earn.categories]\nbeans = -2.0\n",
            "p.toml:6: earn.categories.beans: must be greater than 0",
        ),
        (
            '[[earn.promotions]]\nname = "p"\nfrom = 2026-01-01\nto = 2026-01-02\nmultiplier = 0\n',
            "p.toml:9: earn.promotions[0].multiplier: must be greater than 0",
        ),
        (
            '[[tiers.levels]]\nkey = "a"\nmin = 0\nmultiplier = -1\n',
            "p.toml:8: tiers.levels[0].multiplier: must be greater than 0",
        ),
        (
            "[program.x]\n",
            "p.toml:5: program.x: unknown key (allowed: key, name, currency, "
            "point_value, timezone)",
        ),
    ],
)
def test_multipliers_must_be_positive(section: str, expected: str) -> None:
    assert problems(HEAD + section) == [expected]


def test_excluded_category_cannot_have_a_multiplier() -> None:
    text = HEAD + '[earn]\nexclude = ["tobacco"]\n[earn.categories]\ntobacco = 2\n'
    assert problems(text) == [
        'p.toml:8: earn.categories.tobacco: "tobacco" is excluded, so it cannot have a multiplier'
    ]


def reward(extra: str) -> str:
    return HEAD + '[[rewards]]\nkey = "r"\nname = "R"\n' + extra


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("cost = 0\n", "p.toml:8: rewards[0].cost: must be at least 1"),
        ("cost = -5\n", "p.toml:8: rewards[0].cost: must be at least 1"),
        ("cost = 1.5\n", "p.toml:8: rewards[0].cost: expected a whole number"),
        ('cost = "10"\n', "p.toml:8: rewards[0].cost: expected a whole number"),
        ("cost = 1\nstock = -1\n", "p.toml:9: rewards[0].stock: must be at least 0"),
        ("cost = 1\nper_member = 0\n", "p.toml:9: rewards[0].per_member: must be at least 1"),
        ("cost = 1\nvalid_days = 0\n", "p.toml:9: rewards[0].valid_days: must be at least 1"),
        (
            'cost = 1\nkind = "discount-amount"\n',
            'p.toml:5: rewards[0].value: required when kind = "discount-amount"',
        ),
        (
            'cost = 1\nkind = "discount-amount"\nvalue = "5.001"\n',
            "p.toml:10: rewards[0].value: USD amounts have at most 2 decimals",
        ),
        (
            'cost = 1\nkind = "discount-percent"\nvalue = 101\n',
            "p.toml:10: rewards[0].value: a percentage must be at most 100",
        ),
        ("cost = 1\nvalue = 5\n", "p.toml:9: rewards[0].value: only discount rewards have a value"),
        (
            'cost = 1\nkind = "free-product"\n',
            'p.toml:5: rewards[0].product: required when kind = "free-product"',
        ),
    ],
)
def test_reward_rules(extra: str, expected: str) -> None:
    assert problems(reward(extra)) == [expected]


def test_discount_rewards_parse() -> None:
    program = parse_program(
        reward('cost = 1\nkind = "discount-percent"\nvalue = 12.5\n')
        + '[[rewards]]\nkey = "s"\nname = "S"\ncost = 2\nkind = "discount-amount"\nvalue = "5"\n'
    )
    assert program.rewards[0].value == Decimal("12.5")
    assert program.rewards[1].value == Decimal(5)


def test_zero_decimal_currency() -> None:
    jpy = HEAD.replace("USD", "JPY")
    text = jpy + '[[rewards]]\nkey = "r"\nname = "R"\ncost = 1\nkind = "discount-amount"\n'
    assert parse_program(text + 'value = "500"\n').program.minor_digits == 0
    assert problems(text + 'value = "500.5"\n') == [
        "p.toml:10: rewards[0].value: JPY amounts have at most 0 decimals"
    ]


@pytest.mark.parametrize(
    ("expiry", "expected"),
    [
        ('policy = "rolling"\n', 'p.toml:5: expiry.months: required when policy = "rolling"'),
        ('policy = "inactivity"\n', 'p.toml:5: expiry.months: required when policy = "inactivity"'),
        ('policy = "rolling"\nmonths = 0\n', "p.toml:7: expiry.months: must be at least 1"),
        (
            'policy = "fixed_date"\n',
            'p.toml:5: expiry.day: required when policy = "fixed_date" (e.g. "12-31")',
        ),
        (
            'policy = "fixed_date"\nday = "02-29"\n',
            'p.toml:7: expiry.day: "02-29" is not in every year (use "02-28" or "03-01")',
        ),
        (
            'policy = "fixed_date"\nday = "04-31"\n',
            'p.toml:7: expiry.day: "04-31" is not a day of the year',
        ),
        (
            'policy = "fixed_date"\nday = "12/31"\n',
            'p.toml:7: expiry.day: expected "MM-DD", such as "12-31", not "12/31"',
        ),
        (
            'policy = "fixed_date"\nday = "06-30"\nyears = 0\n',
            'p.toml:8: expiry.years: must be at least 1 unless day = "12-31"',
        ),
        (
            'policy = "sometimes"\n',
            'p.toml:6: expiry.policy: must be one of "rolling", '
            '"fixed_date", "inactivity" or "never"',
        ),
    ],
)
def test_expiry_rules(expiry: str, expected: str) -> None:
    assert problems(HEAD + "[expiry]\n" + expiry) == [expected]


def test_expiry_fixed_date_end_of_year_same_year() -> None:
    text = HEAD + '[expiry]\npolicy = "fixed_date"\nday = "12-31"\nyears = 0\n'
    assert parse_program(text).expiry.years == 0


def test_branding_colours() -> None:
    ok = parse_program(HEAD + '[branding]\nprimary_color = "#AABBCC"\n')
    assert ok.branding is not None and ok.branding.accent_color == "#f2a900"
    (problem,) = problems(HEAD + '[branding]\naccent_color = "red"\n')
    assert problem.startswith('p.toml:6: branding.accent_color: invalid colour "red"')


def test_strict_scalars() -> None:
    assert problems(HEAD + "[earn]\nsignup_bonus = true\nallow_negative = 1\n") == [
        "p.toml:6: earn.signup_bonus: expected a whole number",
        "p.toml:7: earn.allow_negative: expected true or false",
    ]
    assert problems("earn = 5\n" + HEAD) == ["p.toml:1: earn: expected a table"]


def test_quoted_and_dotted_keys_are_located() -> None:
    text = HEAD + '[earn]\ncategories."gift cards" = 0\nexclude = [\n  "a",\n]\nper_unit = -1\n'
    assert problems(text) == [
        'p.toml:6: earn.categories."gift cards": must be greater than 0',
        "p.toml:10: earn.per_unit: must be at least 0",
    ]
    multiline = HEAD + '[[rewards]]\nkey = "r"\nname = "R"\ndescription = """\ncost = 5\n"""\n'
    multiline += "cost = 0\n"
    assert problems(multiline) == ["p.toml:11: rewards[0].cost: must be at least 1"]


def test_tier_lookup() -> None:
    program = parse_program(HEAD)
    assert program.tier("member").multiplier == 1
    with pytest.raises(NotFound):
        program.tier("gold")


def test_models_are_frozen_and_strict() -> None:
    program = parse_program(HEAD)
    with pytest.raises(ValueError):
        program.program.name = "Other"  # type: ignore[misc]
    with pytest.raises(ValueError):
        ProgramInfo.model_validate({"key": "a", "name": "A", "currency": "USD", "extra": 1})


def test_export_keeps_exact_values_and_quotes_odd_keys() -> None:
    text = HEAD.replace("USD", "EUR") + (
        'point_value = "0.0125"\n[earn]\nper_unit = 0.10\n'
        '[earn.categories]\n"gift cards" = 1.1\nx = "0.30000000000000004"\n'
        '[[rewards]]\nkey = "r"\nname = "Say \\"hi\\""\ncost = 1\nkind = "discount-amount"\n'
        'value = "5.50"\n'
    )
    program = parse_program(text)
    exported = program_to_toml(program)
    assert 'point_value = "0.0125"' in exported
    assert 'value = "5.50"' in exported
    assert '"gift cards" = 1.1' in exported
    again = parse_program(exported)
    assert again == program
    assert again.earn.categories["x"] == Decimal("0.30000000000000004")


def test_fingerprint_is_semantic() -> None:
    base = HEAD + "[earn]\nper_unit = 2\n"
    same = "# a comment\n" + HEAD + "\n[earn]\nper_unit = 2.0   # trailing\n"
    other = HEAD + "[earn]\nper_unit = 3\n"
    fingerprint = program_fingerprint(parse_program(base))
    assert len(fingerprint) == 64
    assert program_fingerprint(parse_program(same)) == fingerprint
    assert program_fingerprint(parse_program(other)) != fingerprint
    explicit = HEAD + '[[tiers.levels]]\nkey = "member"\nname = "Member"\nmin = 0\n'
    assert program_fingerprint(parse_program(explicit)) == program_fingerprint(parse_program(HEAD))


def test_template_parses() -> None:
    program = parse_program(program_template(), "template")
    assert program.program.key == "my-program" and program.program.name == "My Rewards"
    custom = parse_program(program_template("corner-deli", 'Deli "Club" \\ Rewards'))
    assert custom.program.key == "corner-deli"
    assert custom.program.name == 'Deli "Club" \\ Rewards'
    with pytest.raises(InvalidInput):
        program_template("Not A Key")


def test_template_mentions_every_key() -> None:
    template = program_template()
    for key in [
        "per_unit", "rounding", "exclude", "signup_bonus", "pending_days", "allow_negative",
        "bonus_qualifies", "policy", "months", "month_end", "day", "years", "metric", "window",
        "hold_months", "downgrade", "multiplier", "cost", "stock", "per_member", "valid_days",
        "kind", "value", "product", "description", "primary_color", "accent_color", "logo_text",
        "display_name", "point_value", "timezone",
    ]:  # fmt: skip
        assert f"{key} =" in template, key


def test_load_program_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(InvalidInput) as info:
        load_program_file(missing)
    assert str(info.value) == f"{missing}: cannot read program file: No such file or directory"
    assert not isinstance(info.value, ProgramInvalid)
    with pytest.raises(InvalidInput, match="cannot read program file"):
        load_program_file(tmp_path)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(HEAD.replace("Test", "Caf\xe9").encode("latin-1"))
    with pytest.raises(InvalidInput, match="not UTF-8"):
        load_program_file(latin)
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + HEAD.encode())
    program, text = load_program_file(bom)
    assert program.program.key == "test" and text == HEAD


def test_currencies() -> None:
    assert minor_digits("USD") == 2 and minor_digits("EUR") == 2
    for code in ["JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF", "PYG"]:
        assert minor_digits(code) == 0, code
    for code in ["BHD", "KWD", "JOD", "OMR", "TND", "LYD", "IQD"]:
        assert minor_digits(code) == 3, code
    assert is_currency("GBP") and not is_currency("usd") and not is_currency("XXX")
    with pytest.raises(InvalidInput):
        minor_digits("USX")
