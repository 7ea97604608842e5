"""``make bench``: import, start-up, expiry, statement and simulation benchmarks, printed as a table
and recorded in docs/performance.md.

    .venv/bin/python -m bench [--quick] [--purchases N] [--members N] [--pg-purchases N]
                              [--runs N] [--no-record]
                              [--only import|expire|statements|economics|find|simulate]

Each figure is measured next to a floor taken in the same run on the same machine, so the
ratios mean something on any machine: for the import, raw sqlite3 or psycopg storing the
least a ledger must store for the file's purchases into minimal tables (the storage floor)
and storing the same rows as the import into loyaltyctl's schema (the same-rows floor);
for `expire`, the same work in raw SQL; for a single command, the bare import of SQLModel.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import platform
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_import import Figure, run  # noqa: E402

DOC = REPO / "docs" / "performance.md"


def other_bench(module: str, argv: list[str]) -> str:
    """Run another engineer's benchmark (``bench/<module>.py``, its ``main()`` reading
    ``sys.argv``) and return what it printed; absent or failing, say so."""
    try:
        bench = importlib.import_module(f"bench.{module}")
    except ModuleNotFoundError as exc:
        if exc.name in (f"bench.{module}", module):
            return f"(bench/{module}.py not present)"
        return f"(bench/{module}.py could not be imported: {exc})"
    main = getattr(bench, "main", None)
    if main is None:
        return f"(bench/{module}.py has no main())"
    out = io.StringIO()
    saved = sys.argv
    sys.argv = [f"bench/{module}.py", *argv]
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out):
            main()
    except SystemExit as exc:
        if exc.code not in (None, 0):
            out.write(f"\n(exited with {exc.code})")
    except Exception as exc:  # a broken neighbour must not lose the import figures
        out.write(f"\n(failed: {type(exc).__name__}: {exc})")
    finally:
        sys.argv = saved
    out.write(f"\n({time.perf_counter() - started:.1f} s in all)")
    return out.getvalue().strip()


def table(figures: list[Figure]) -> str:
    head = ["what", "size", "seconds", "rate", "floor (same run)", "floor s", "ratio", "target"]
    rows = [
        [
            f.what,
            f.size,
            "" if f.seconds is None else f"{f.seconds:.3f}",
            f.rate,
            f.floor,
            "" if f.floor_seconds is None else f"{f.floor_seconds:.3f}",
            f.ratio,
            f.target,
        ]
        for f in figures
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    pg = "not run"
    with contextlib.suppress(Exception):
        from tests.pgcluster import find_bindir

        bindir = find_bindir()
        if bindir is not None:
            pg = bindir.parent.name
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"{os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, PostgreSQL {pg}, load average {load} at the start"
    )


def record(section: str) -> None:
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Performance\n"
    DOC.write_text(text.rstrip("\n") + "\n\n" + section + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--purchases", type=int, help="purchases in the SQLite import")
    parser.add_argument("--members", type=int, help="members")
    parser.add_argument("--pg-purchases", type=int, help="purchases on PostgreSQL (0: skip)")
    parser.add_argument("--runs", type=int, help="repeats of each start-up timing")
    parser.add_argument("--expire-lots", type=int, help="lots for bench_expire.py")
    parser.add_argument("--statement-members", type=int, help="members for bench_statements.py")
    parser.add_argument("--find-members", type=int, help="members for bench_find.py")
    parser.add_argument("--simulate-purchases", type=int, help="purchases for bench_simulate.py")
    parser.add_argument(
        "--only",
        choices=("import", "expire", "statements", "economics", "find", "simulate"),
    )
    parser.add_argument("--no-record", action="store_true", help="do not write the docs page")
    args = parser.parse_args(argv)
    quick = args.quick
    purchases = args.purchases or (20_000 if quick else 1_000_000)
    members = args.members or (1_000 if quick else 20_000)
    pg_purchases = (
        args.pg_purchases if args.pg_purchases is not None else (10_000 if quick else 200_000)
    )
    runs = args.runs or (3 if quick else 7)
    expire_lots = args.expire_lots or (20_000 if quick else 200_000)
    statement_members = args.statement_members or (2_000 if quick else 20_000)
    find_members = args.find_members or (10_000 if quick else 100_000)
    # Smaller than the import's million: the simulation rebuilds that database first.
    simulate_purchases = args.simulate_purchases or (20_000 if quick else 200_000)
    os.environ.setdefault("NO_COLOR", "1")

    started = datetime.now(UTC)
    host = machine()
    print(f"loyaltyctl benchmarks, {host}", flush=True)
    parts: list[str] = []
    if args.only in (None, "import"):
        figures = run(members=members, purchases=purchases, pg_purchases=pg_purchases, runs=runs)
        parts.append(table(figures))
        print(parts[-1], flush=True)
    others: list[tuple[str, list[str]]] = []
    if args.only in (None, "expire"):
        others.append(("bench_expire", ["--lots", str(expire_lots)]))
    if args.only in (None, "statements"):
        others.append(("bench_statements", ["--members", str(statement_members)]))
    if args.only in (None, "economics"):
        others.append(("bench_economics", ["--members", str(statement_members)]))
    if args.only in (None, "find"):
        others.append(("bench_find", ["--members", str(find_members)]))
    if args.only in (None, "simulate"):
        others.append(("bench_simulate", ["--purchases", str(simulate_purchases)]))
    for module, module_argv in others:
        print(f"\n{module} {' '.join(module_argv)}", flush=True)
        output = other_bench(module, module_argv)
        print(output, flush=True)
        parts.append(f"`bench/{module}.py {' '.join(module_argv)}`:\n\n```\n{output}\n```")
    elapsed = (datetime.now(UTC) - started).total_seconds()
    title = f"## Run of {started:%Y-%m-%d %H:%M} UTC{' (--quick)' if quick else ''}"
    section = "\n\n".join([title, f"Machine: {host}. Took {elapsed:.0f} s.", *parts])
    if not args.no_record:
        record(section)
        print(f"\nrecorded in {DOC.relative_to(REPO)}")


if __name__ == "__main__":
    main()
