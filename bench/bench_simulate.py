"""Benchmark (not a test): ``program simulate`` on the import benchmark's purchase
database, against the import of the same history.

    .venv/bin/python bench/bench_simulate.py [--purchases N] [--members N]

Builds the SQLite database of ``bench_import`` (the same generated year of a coffee
shop's sales, imported with the installed executable), then simulates the loaded
program itself (every delta must be 0) and a changed one (per_unit doubled), each timed
end to end as an operator runs it. Prints one line per figure.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_import import PROGRAM, run_tool, write_members, write_txns  # noqa: E402


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--purchases", type=int, default=200_000)
    parser.add_argument("--members", type=int, default=20_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="loyaltyctl-bench-simulate-"))
    db = str(work / "bench.db")
    program = work / "bench.toml"
    program.write_text(PROGRAM, encoding="utf-8")
    members_csv, txns_csv = work / "members.csv", work / "txns.csv"
    write_members(members_csv, args.members)
    counts = write_txns(txns_csv, args.members, args.purchases)
    rows = sum(counts.values())
    run_tool("program", "load", str(program), db=db)
    member_s, _ = run_tool("member", "import", str(members_csv), "--json", db=db)
    # Rows dated after today (the generated year may end later) are set aside.
    rejects = work / "rejects.csv"
    import_s, summary = run_tool(
        "txn", "import", str(txns_csv), "--rejects", str(rejects), "--json", db=db
    )
    rows = summary["applied"]
    imported = member_s + import_s
    print(f"history: {args.members:,} members, {rows:,} transactions imported of {counts}")
    print(f"import (member + txn import): {imported:.1f} s, {rows / imported:,.0f} rows/s")
    same_s, same = run_tool("program", "simulate", str(program), "--json", db=db)
    zero = all(v in (0, "0.00") for v in same["delta"].values()) and not same["members_changed"]
    print(
        f"simulate the loaded program: {same_s:.1f} s, {same['events'] / same_s:,.0f} events/s,"
        f" {same_s / imported:.2f}x the import; every delta 0: {zero}"
    )
    double = work / "double.toml"
    double.write_text(PROGRAM.replace("per_unit = 10", "per_unit = 20"), encoding="utf-8")
    double_s, changed = run_tool("program", "simulate", str(double), "--json", db=db)
    print(
        f"simulate per_unit doubled: {double_s:.1f} s; points issued "
        f"{changed['actual']['points_issued']:,} → {changed['simulated']['points_issued']:,}, "
        f"members changed {changed['members_changed']:,}"
    )
    print(f"peak memory of a child process: {peak_mib():.0f} MiB")


if __name__ == "__main__":
    main()
