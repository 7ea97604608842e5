"""Import rows that are not what they seem: duplicate JSON fields, deep nesting, lone
surrogates; rejects that keep each row's text; an import that stops part-way; voucher
uses retried with their ref; erasure that leaves nothing readable behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loyaltyctl.errors import Unusable
from tests.conftest import Cli
from tests.test_database_errors import one_error


@pytest.fixture
def shop(deli: Cli) -> Cli:
    deli("member", "enroll", "M1", "--at", "2026-01-01")
    return deli


def test_jsonl_rows_that_are_not_what_they_seem(shop: Cli, tmp_path: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    rows = [
        '{"member": "M1", "ref": "OK1", "amount": 12.50}',
        '{"member": "M1", "ref": "D1", "amount": "1.00", "amount": "900.00"}',
        deep,
        '{"member": "M1", "ref": "S1", "amount": "1.00", "category": "\\ud800"}',
        '{"member": "\\udfff", "ref": "S2", "amount": "1.00"}',
        '{"member": "M1", "ref": "S3", "\\ud800": "1.00"}',
        '{"member": "NOPE", "ref": "N1", "amount": 12.50, "at": "2026-02-01"}',
        '{"member": "M1", "ref": "OK2", "amount": "2.00"}',
    ]
    source = tmp_path / "txns.jsonl"
    source.write_text("\n".join(rows) + "\n", encoding="utf-8")
    rejects = tmp_path / "rejects.jsonl"
    summary = shop.json("txn", "import", str(source), "--rejects", str(rejects))
    assert (summary["applied"], summary["rejected"]) == (2, 6)
    written = rejects.read_text(encoding="utf-8").splitlines()
    reasons = [json.loads(line)["reason"] for line in written]
    assert "appears twice" in reasons[0]
    assert "nested too deeply" in reasons[1]
    assert "'category' holds a lone surrogate" in reasons[2]
    assert "'member' holds a lone surrogate" in reasons[3]
    assert "field name is not text" in reasons[4]
    # The row as it was written: its number keeps its two decimals.
    assert written[-1].endswith(
        '"member": "NOPE", "ref": "N1", "amount": 12.50, "at": "2026-02-01"}'
    )
    assert written[0].endswith('"amount": "1.00", "amount": "900.00"}')
    shop.check()


def test_without_rejects_a_bad_row_fails_with_a_short_message(shop: Cli, tmp_path: Path) -> None:
    source = tmp_path / "txns.jsonl"
    huge = "x" * 100_000
    lines = [f'{{"member": "M{huge}", "ref": "R{n}", "amount": "1"}}' for n in range(50)]
    source.write_text("\n".join(lines) + "\n")
    result = shop("txn", "import", str(source), code=None)
    one_error(result, 4, "50 bad rows", "… and 45 more")
    assert len(result.stderr) < 3000


def test_an_import_that_stops_says_what_is_in(
    shop: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loyaltyctl.services.imports.txn_rows import TxnImporter

    real = TxnImporter.apply
    calls = []

    def failing(self: TxnImporter, session: object, rows: list[object]) -> object:
        calls.append(1)
        if len(calls) == 3:
            raise Unusable("database X is on a full disk", hint="free some space")
        return real(self, session, rows)  # type: ignore[arg-type]

    monkeypatch.setattr(TxnImporter, "apply", failing)
    monkeypatch.setenv("LOYALTYCTL_IMPORT_BATCH_ROWS", "2")
    source = tmp_path / "txns.csv"
    source.write_text("member,ref,amount\n" + "".join(f"M1,R{n},1.00\n" for n in range(10)))
    result = shop("txn", "import", str(source), "--rejects", str(tmp_path / "rej.csv"), code=None)
    one_error(
        result, 10, "full disk", "stopped after 4 rows", "4 applied", "run the same command again"
    )
    monkeypatch.setattr(TxnImporter, "apply", real)
    summary = shop.json("txn", "import", str(source), "--rejects", str(tmp_path / "rej.csv"))
    assert (summary["applied"], summary["duplicates"]) == (6, 4)
    shop.check()


def test_a_voucher_use_retried_with_its_ref_is_a_duplicate(shop: Cli) -> None:
    shop("txn", "adjust", "M1", "--ref", "A", "--points", "500", "--reason", "test")
    voucher = shop.json("reward", "redeem", "M1", "cookie")["voucher"]
    first = shop.json("reward", "use", voucher, "--ref", "TILL-1")
    assert first["status"] == "used" and first["duplicate"] is False
    again = shop.json("reward", "use", voucher, "--ref", "TILL-1")
    assert again["duplicate"] is True and again["used_at"] == first["used_at"]
    one_error(shop("reward", "use", voucher, "--ref", "TILL-2", code=None), 6, "used")
    one_error(shop("reward", "use", voucher, code=None), 6)
    other = shop.json("reward", "redeem", "M1", "cookie")["voucher"]
    one_error(shop("reward", "use", other, "--ref", "TILL-1", code=None), 5, "TILL-1")
    shop("reward", "use", other, "--ref", "TILL-3")


def test_erase_clears_every_free_text_field(shop: Cli, db_url: str, backend: str) -> None:
    secret = "Zebediah-Quux-7731"
    shop("member", "enroll", "M2", "--name", secret, "--email", f"{secret}@example.com")
    shop("member", "suspend", "M2", "--reason", f"complaint by {secret}")
    shop("member", "erase", "M2")
    shown = shop.json("member", "show", "M2")
    assert secret not in json.dumps(shown)
    exported = shop("export", "members", "--out", "-", "--format", "jsonl").stdout
    assert secret not in exported
    if backend == "sqlite":
        path = Path(db_url.split(":///", 1)[1])
        for part in (path, path.with_name(path.name + "-wal")):
            if part.exists():
                assert secret.encode() not in part.read_bytes(), part
