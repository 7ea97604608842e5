#!/usr/bin/env bash
# The main job of an operator, end to end, on a fresh demo SQLite database built from
# programs/. Dates are fixed so the figures are the same on every run.
set -euo pipefail
cd "$(dirname "$0")/.."
db="${1:-demo/demo.db}"
mkdir -p "$(dirname "$db")"
rm -f "$db" "$db-wal" "$db-shm"
export LOYALTYCTL_DB="$db"
L=".venv/bin/loyaltyctl"

step() { printf '\n\033[1m$ loyaltyctl %s\033[0m\n' "$*"; "$L" "$@"; }

echo "Demo database: $db"
step program validate programs/coffee.toml programs/retail.toml programs/airline.toml
for f in programs/coffee.toml programs/retail.toml programs/airline.toml; do step program load "$f"; done
step program list

echo; echo "--- Beans Rewards: a coffee shop's year ---"
P=(--program beans)
step member enroll C-1001 --name "Ada Byron" --email ada@example.com --at 2026-01-15 "${P[@]}"
step member enroll C-1002 --name "Grace Hopper" --at 2026-02-01 "${P[@]}"
echo; echo "(a member from last year: gold in 2025, quiet since)"
step member enroll C-1003 --name "Alan Turing" --at 2025-01-10 "${P[@]}"
step txn post C-1003 --ref till-0900 --amount 320.00 --at 2025-02-14T09:00 "${P[@]}"
step txn post C-1001 --ref till-0001 --amount 4.50 --at 2026-01-15T08:30 "${P[@]}"
step txn post C-1001 --ref till-0002 --line beans=18.00 --line drinks=5.25 --at 2026-02-03T09:10 "${P[@]}"
step txn post C-1001 --ref till-0003 --amount 120.00 --category merch --at 2026-03-14T17:45 "${P[@]}"
step txn post C-1001 --ref till-0003 --amount 120.00 --category merch --at 2026-03-14T17:45 "${P[@]}"
step txn return C-1001 --ref ret-0001 --original till-0003 --amount 40.00 --at 2026-03-20T10:00 "${P[@]}"
step txn post C-1002 --ref till-0004 --amount 35.00 --at 2026-02-10T12:00 "${P[@]}"
step txn adjust C-1002 --ref goodwill-01 --points 250 --reason "spilled latte" --at 2026-02-11 "${P[@]}"
step reward list "${P[@]}"
step reward redeem C-1001 free-drink --ref redeem-0001 --at 2026-04-01T08:00 "${P[@]}"
step member show C-1001 "${P[@]}"
step txn list C-1001 "${P[@]}"

echo; echo "--- Nightly job, as cron runs it (here for 2026-11-01) ---"
step nightly --as-of 2026-11-01 "${P[@]}"
echo "(run again: nothing is expired twice)"
step expire --as-of 2026-11-01 "${P[@]}"
step member show C-1003 "${P[@]}"
step statement C-1001 --from 2026-01-01 --to 2026-10-31 --format csv "${P[@]}"
step report summary --as-of 2026-11-01 "${P[@]}"
step db check
echo
echo "Done. Explore further with: LOYALTYCTL_DB=$db $L --help"
