"""Benchmark (not a test): the economics reports (``report liability`` with its cohorts
and journal, ``rewards``, ``members``, ``tiers --at-risk`` and the dashboard page) on the
generated program of bench_statements.py, at a quarter of N members and at N, with the
time and the peak of Python memory each takes: the reports are grouped SQL, so the peak
should not grow with the members.

    .venv/bin/python bench/bench_economics.py [--members N] [--db URL]

Without --db fresh SQLite files in a temporary folder are used; a PostgreSQL URL must
point at an empty, throwaway database (then only N is run). Prints one line per figure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_statements import NOW, generate  # noqa: E402
from loyaltyctl.render.dashboard_html import render_dashboard  # noqa: E402
from loyaltyctl.services.context import load_context  # noqa: E402
from loyaltyctl.services.economics import liability  # noqa: E402
from loyaltyctl.services.insights import (  # noqa: E402
    dashboard,
    reward_report,
    tiers_at_risk,
    top_members,
)
from loyaltyctl.services.programs import load_program  # noqa: E402
from loyaltyctl.store.db import make_engine, session_scope  # noqa: E402
from loyaltyctl.store.migrate import upgrade  # noqa: E402

FIRST, LAST = date(2026, 1, 1), date(2026, 7, 1)


def reports() -> list[tuple[str, Callable[[Any, Any], Any]]]:
    return [
        (
            "report liability (7 months)",
            lambda s, c: liability(s, c, first=FIRST, last=LAST, now=NOW),
        ),
        ("report rewards", lambda s, c: reward_report(s, c, first=FIRST, last=LAST, now=NOW)),
        ("report members --top 10 --by spend", lambda s, c: top_members(s, c, now=NOW)),
        ("report tiers --at-risk", lambda s, c: tiers_at_risk(s, c, as_of=LAST, now=NOW)),
        (
            "report dashboard (12 months)",
            lambda s, c: render_dashboard(dashboard(s, c, as_of=LAST, now=NOW)),
        ),
    ]


def bench(url: str, members: int) -> None:
    engine = make_engine(url)
    upgrade(engine)
    with session_scope(engine) as session:
        load_program(session, REPO / "programs" / "deli.toml", now=NOW)
    generate(engine, members)
    for what, run in reports():
        with session_scope(engine, write=False) as session:
            ctx = load_context(session, None)
            tracemalloc.start()
            started = time.perf_counter()
            run(session, ctx)
            elapsed = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        print(
            f"{what}, {members:,} members: "
            f"{elapsed:.3f} s, peak Python memory {peak / 2**20:.2f} MiB"
        )
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--db", help="database URL (default: temporary SQLite files)")
    args = parser.parse_args()
    if args.db:
        bench(args.db, args.members)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for n, size in enumerate((max(args.members // 4, 1), args.members)):
            bench(f"sqlite:///{Path(tmp) / f'economics{n}.db'}", size)


if __name__ == "__main__":
    main()
