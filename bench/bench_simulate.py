"""Benchmark (not a test): ``program simulate`` on the import benchmark's purchase
database, against the import of the same history.

    .venv/bin/python bench/bench_simulate.py [--purchases N] [--members N]

Builds the SQLite database of ``bench_import`` (the same generated year of a coffee
shop's sales, imported with the installed executable), then simulates the loaded
program itself (every delta must be 0) and a changed one (per_unit doubled), each timed
end to end as an operator runs it; then runs each economics report on the same database
with its time and peak memory. Prints one line per figure.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_import import EXE, PROGRAM, run_tool, write_members, write_txns  # noqa: E402


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
    for args_ in REPORTS:
        seconds, mib = timed_process([str(EXE), "--db", db, *args_, *_out(args_, work)])
        print(f"{' '.join(args_)} on this database: {seconds:.2f} s, peak RSS {mib:.0f} MiB")


# The economics reports on the same purchase database: each run as its own process,
# timed with its own peak memory (os.wait4 gives one child's resource usage).
REPORTS = (
    ("report", "liability", "--json"),
    ("report", "rewards", "--json"),
    ("report", "members", "--top", "10", "--by", "spend", "--json"),
    ("report", "tiers", "--at-risk", "--json"),
    ("report", "dashboard"),
)


def _out(args_: tuple[str, ...], work: Path) -> list[str]:
    return ["--out", str(work / "dashboard.html")] if "dashboard" in args_ else []


def timed_process(cmd: list[str]) -> tuple[float, float]:
    started = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"{' '.join(cmd[3:])} failed: {child.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss / 1024


if __name__ == "__main__":
    main()
