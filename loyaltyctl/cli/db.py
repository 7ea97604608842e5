"""``db upgrade`` and ``db check``."""

from __future__ import annotations

import typer

from loyaltyctl.cli.common import JsonOpt, command, emit_json, open_session, say
from loyaltyctl.errors import CheckFailed

app = typer.Typer(help="The database: schema upgrades and ledger checks.", no_args_is_help=True)


@app.command("upgrade")
@command
def upgrade(json_out: JsonOpt = False) -> None:
    """Bring the schema up to date (every command also does it on first use)."""
    from loyaltyctl.cli.common import STATE
    from loyaltyctl.store.db import (
        SCHEMA_HEAD,
        current_revision,
        ensure_schema,
        make_engine,
        resolve_url,
    )

    engine = make_engine(resolve_url(STATE.db))
    try:
        before = current_revision(engine)
        ensure_schema(engine)
    finally:
        engine.dispose()
    if json_out:
        emit_json({"revision": SCHEMA_HEAD, "previous": before, "upgraded": before != SCHEMA_HEAD})
    elif before == SCHEMA_HEAD:
        say(f"database schema is up to date (revision {SCHEMA_HEAD})")
    else:
        say(f"database schema upgraded from {before or 'empty'} to revision {SCHEMA_HEAD}")


@app.command("check")
@command
def check(json_out: JsonOpt = False) -> None:
    """Verify the ledger: balances, lots and debts recomputed from the entries (exit 8 if not)."""
    from loyaltyctl.services.check import check_database

    with open_session(write=False) as session:
        result = check_database(session)
    if json_out:
        emit_json({"ok": result.ok, "problems": result.problems})
    elif result.ok:
        say(f"ok: {result.members} members, {result.lots} lots, {result.entries} entries agree")
    else:
        for problem in result.problems:
            say(f"problem: {problem}")
    if not result.ok:
        raise CheckFailed(
            f"db check found {len(result.problems)} inconsistenc"
            f"{'y' if len(result.problems) == 1 else 'ies'}",
            hint="report this with the database file; no command should leave the ledger so",
        )
