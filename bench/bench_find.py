"""Benchmark (not a test): ``loyaltyctl member find`` on a program of N members (default
100,000) against a single ``member show``, both as an operator runs them (the installed
``loyaltyctl``, process start included), medians of a few runs.

    .venv/bin/python bench/bench_find.py [--members N] [--runs N]

Lookups by code, e-mail and phone are index lookups; a part of a name reads every
member row of the program (no index serves a substring), which is the slow case.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, select

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loyaltyctl.rules.search import email_key, phone_rev  # noqa: E402
from loyaltyctl.services.programs import load_program  # noqa: E402
from loyaltyctl.store.db import make_engine, session_scope  # noqa: E402
from loyaltyctl.store.migrate import upgrade  # noqa: E402
from loyaltyctl.store.models import Member, ProgramRow, TierChangeRow  # noqa: E402

EXE = Path(sys.executable).parent / "loyaltyctl"
NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)
CHUNK = 20_000


def generate(url: str, count: int) -> None:
    engine = make_engine(url)
    upgrade(engine)
    with session_scope(engine) as session:
        load_program(session, REPO / "programs" / "deli.toml", now=NOW)
    with engine.begin() as conn:
        program_id = conn.execute(select(ProgramRow.id)).scalar_one()
        for start in range(0, count, CHUNK):
            members, steps = [], []
            for i in range(start, min(count, start + CHUNK)):
                email = f"Person.{i}@Example.com"
                phone = f"+1 (555) {i // 10000:03d}-{i % 10000:04d}"
                members.append(
                    {
                        "id": i + 1, "program_id": program_id, "code": f"M{i:07d}",
                        "name": f"Person Number{i}", "email": email, "phone": phone,
                        "email_key": email_key(email), "phone_rev": phone_rev(phone),
                        "status": "active", "tier": "bronze", "enrolled_at": NOW,
                        "balance": 0, "debt": 0, "updated_at": NOW,
                    }
                )  # fmt: skip
                steps.append(
                    {"member_id": i + 1, "tier": "bronze", "effective_on": NOW.date(),
                     "reason": "enrol", "recorded_at": NOW}
                )  # fmt: skip
            conn.execute(insert(Member), members)
            conn.execute(insert(TierChangeRow), steps)
    engine.dispose()


def timed(url: str, *args: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(
            [str(EXE), "--db", url, *args, "--json"], capture_output=True, text=True
        )
        times.append(time.perf_counter() - started)
        if done.returncode != 0 or done.stdout.strip() in ("", "[]"):
            raise SystemExit(f"loyaltyctl {' '.join(args)} failed: {done.stderr or done.stdout}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    n = args.members
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'find.db'}"
        started = time.perf_counter()
        generate(url, n)
        print(f"generated {n:,} members in {time.perf_counter() - started:.1f} s")
        last = n - 1
        show = timed(url, "member", "show", f"M{last:07d}", runs=args.runs)
        print(f"member show (one member):         {show:6.3f} s")
        cases = [
            ("code", f"M{last:07d}"),
            ("e-mail", f"person.{last}@EXAMPLE.com"),
            ("phone", f"555{last // 10000:03d}{last % 10000:04d}"),
            ("part of the name", f"number{last}"),
        ]
        for what, text in cases:
            seconds = timed(url, "member", "find", text, runs=args.runs)
            print(f"member find by {what + ':':18s}{seconds:6.3f} s  ({seconds / show:.2f}x show)")


if __name__ == "__main__":
    main()
