"""The use cases the CLI runs, called from Python: nightly jobs and bulk statements."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import Engine

from loyaltyctl.services.context import load_context
from loyaltyctl.services.nightly import run_nightly
from loyaltyctl.services.statement_files import write_statement_files
from loyaltyctl.store.db import session_scope
from tests.conftest import Cli


def clock() -> datetime:
    return datetime(2028, 6, 1, 12, tzinfo=UTC)


def test_run_nightly_from_python(deli: Cli, engine: Engine) -> None:
    deli("member", "enroll", "M1", "--at", "2026-01-05")
    deli("txn", "post", "M1", "--ref", "T1", "--amount", "20.00", "--at", "2026-01-05")
    seen: list[tuple[int, int]] = []
    first = run_nightly(
        engine,
        None,
        as_of=date(2028, 6, 1),
        progress=lambda done, total: seen.append((done, total)),
        clock=clock,
    )
    assert (first.program, first.as_of, first.dry_run) == ("deli", date(2028, 6, 1), False)
    assert first.expire.members == 1 and first.expire.points_expired > 0
    assert first.expire.already_done is False and first.tiers.already_done is False
    assert seen and seen[-1][0] == seen[-1][1]
    again = run_nightly(engine, "deli", as_of=date(2028, 6, 1), clock=clock)
    assert again.expire.already_done and again.tiers.already_done
    assert again.expire.points_expired == first.expire.points_expired
    deli.check()


def test_statement_files_from_python(deli: Cli, engine: Engine, tmp_path: Path) -> None:
    for code in ("M1", ".hidden"):
        deli("member", "enroll", code, "--at", "2026-01-05")
    deli("txn", "post", "M1", "--ref", "T1", "--amount", "20.00", "--at", "2026-06-05")
    seen: list[tuple[int, int]] = []
    out = tmp_path / "new" / "june"
    with session_scope(engine, write=False) as session:
        result = write_statement_files(
            session,
            load_context(session, "deli"),
            out,
            first=date(2026, 6, 1),
            last=date(2026, 6, 30),
            fmt="json",
            now=datetime(2026, 7, 2, tzinfo=UTC),
            progress=lambda done, total: seen.append((done, total)),
        )
    assert (result.members, result.written, result.index) == (2, 2, out / "index.csv")
    assert seen == [(0, 2), (1, 2), (2, 2)]
    assert sorted(p.name for p in out.iterdir()) == ["%2Ehidden.json", "M1.json", "index.csv"]
    assert json.loads((out / "M1.json").read_text())["member"] == "M1"
