"""Loading the program a command works on, with every version of it."""

from __future__ import annotations

from sqlmodel import Session, col, select

from loyaltyctl.errors import InvalidInput, NotFound
from loyaltyctl.rules.limits import PROGRAM_KEY_LIMIT, check_id
from loyaltyctl.rules.versions import ProgramContext, VersionInfo
from loyaltyctl.store.models import ProgramRow, ProgramVersion

__all__ = ["ProgramContext", "VersionInfo", "load_context"]


def load_context(session: Session, key: str | None) -> ProgramContext:
    """Find the program by key, or the only one when ``key`` is None."""
    if key is None:
        rows = session.exec(select(ProgramRow).order_by(col(ProgramRow.key)).limit(2)).all()
        if not rows:
            raise NotFound(
                "no program is loaded in this database",
                hint="load one with: loyaltyctl program load FILE.toml",
            )
        if len(rows) > 1:
            raise InvalidInput(
                "several programs are loaded: say which one with --program KEY",
                hint="see them with: loyaltyctl program list",
            )
        row = rows[0]
    else:
        key = check_id(key, "--program", PROGRAM_KEY_LIMIT, "beans")
        found = session.exec(select(ProgramRow).where(ProgramRow.key == key)).first()
        if found is None:
            raise NotFound(
                f"program {key!r} not found",
                hint="see loaded programs with: loyaltyctl program list",
            )
        row = found
    assert row.id is not None
    versions = session.exec(
        select(ProgramVersion)
        .where(ProgramVersion.program_id == row.id)
        .order_by(col(ProgramVersion.version))
    ).all()
    return ProgramContext(
        id=row.id,
        key=row.key,
        versions=[
            VersionInfo(id=v.id or 0, version=v.version, loaded_at=v.loaded_at, spec_json=v.spec)
            for v in versions
        ],
    )
