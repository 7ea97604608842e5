"""The loaded program a command works on, with every version of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, col, select

from loyaltyctl.errors import InvalidInput, NotFound
from loyaltyctl.rules.program import Program
from loyaltyctl.rules.timeutil import as_utc
from loyaltyctl.store.models import ProgramRow, ProgramVersion


@dataclass
class VersionInfo:
    id: int
    version: int
    loaded_at: datetime
    spec_json: str
    _spec: Program | None = None

    @property
    def spec(self) -> Program:
        if self._spec is None:
            self._spec = Program.model_validate_json(self.spec_json)
        return self._spec


@dataclass
class ProgramContext:
    id: int
    key: str
    versions: list[VersionInfo] = field(default_factory=list)

    @property
    def latest(self) -> VersionInfo:
        return self.versions[-1]

    @property
    def spec(self) -> Program:
        return self.latest.spec

    def version_at(self, moment: datetime) -> VersionInfo:
        """The version in force at ``moment``: the first version covers everything before
        it was loaded (history migrated in); each later one applies from its load time."""
        moment = as_utc(moment)
        chosen = self.versions[0]
        for info in self.versions[1:]:
            if as_utc(info.loaded_at) <= moment:
                chosen = info
        return chosen


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
