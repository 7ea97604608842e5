"""A loaded program with every version of it, and which version is in force when.

Plain data, read by services from the database and by the posting core and the rules
without one."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from loyaltyctl.rules.program import Program
from loyaltyctl.rules.timeutil import as_utc


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
