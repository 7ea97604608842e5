"""Rules of each program version with the values a batch derives from them per row,
cached; and the qualifying activity of members, kept in memory across batches."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from loyaltyctl.rules.earning import line_factors
from loyaltyctl.rules.expiry import lot_expiry
from loyaltyctl.rules.program import Program
from loyaltyctl.rules.tiers import window_bounds
from loyaltyctl.rules.timeutil import local_date, local_midnight
from loyaltyctl.rules.versions import ProgramContext, VersionInfo

# Qualifying activity kept in memory between batches (member-days); past this the cache is
# dropped and reloaded from the database, so memory stays bounded however large the file.
TRACKER_LIMIT = 200_000
# Earning factors kept per (category, tier, day): past this many the cache starts again,
# so a file of free-text categories cannot grow it without bound.
FACTOR_CACHE_LIMIT = 100_000


class VersionRules:
    def __init__(self, info: VersionInfo) -> None:
        spec = info.spec
        self.id = info.id
        self.spec: Program = spec
        self.tz: ZoneInfo = spec.program.tz
        self.tz_name = spec.program.timezone
        self.digits = spec.program.minor_digits
        self.pending = timedelta(days=spec.earn.pending_days)
        self.allow_negative = spec.earn.allow_negative
        self.bonus_qualifies = spec.earn.bonus_qualifies
        self.signup_bonus = spec.earn.signup_bonus
        levels = spec.tiers.levels
        self.first_tier = levels[0].key
        self.tier_index = {level.key: i for i, level in enumerate(levels)}
        self.top = len(levels) - 1
        self.metric = spec.tiers.metric
        # Thresholds in the unit the ledger stores (minor units for spend): a total below
        # the next level's cannot upgrade, whatever qualified_level would say.
        scale = Decimal(10) ** self.digits if self.metric == "spend" else Decimal(1)
        self.next_min = [levels[i + 1].min * scale for i in range(self.top)]
        self.view = 0
        self.rounding = spec.earn.rounding
        self._expiry: dict[date, date | None] = {}
        self._window: dict[date, tuple[int, int]] = {}
        self._factors: dict[tuple[str | None, str, date], tuple[Decimal, ...] | None] = {}

    def factors(self, category: str | None, tier: str, day: date) -> tuple[Decimal, ...] | None:
        """``line_factors`` of a one-line purchase, worked out once per category, tier
        and day."""
        key = (category, tier, day)
        try:
            return self._factors[key]
        except KeyError:
            if len(self._factors) > FACTOR_CACHE_LIMIT:
                self._factors.clear()
            value = self._factors[key] = line_factors(self.spec, category, tier, day)
            return value

    def expires(self, day: date) -> date | None:
        try:
            return self._expiry[day]
        except KeyError:
            value = self._expiry[day] = lot_expiry(self.spec.expiry, day)
            return value

    def window(self, day: date) -> tuple[int, int]:
        """The qualifying window ending on ``day`` as ordinals [first, end)."""
        try:
            return self._window[day]
        except KeyError:
            start, end = window_bounds(self.spec.tiers, day)
            value = self._window[day] = (start.toordinal(), end.toordinal())
            return value


class RuleBook:
    """Every version of the program, and the (time zone, metric) pairs their tier windows
    are counted in."""

    def __init__(self, ctx: ProgramContext) -> None:
        self.ctx = ctx
        self.versions = [VersionRules(info) for info in ctx.versions]
        self._by_id = {rules.id: rules for rules in self.versions}
        keys: list[tuple[str, str]] = []
        for rules in self.versions:
            key = (rules.tz_name, rules.metric)
            if key not in keys:
                keys.append(key)
            rules.view = keys.index(key)
        self.views = [(ZoneInfo(tz), metric) for tz, metric in keys]
        latest = ctx.spec.program
        # Typed times and amounts are read as the commands read them: in the latest version.
        self.tz = latest.tz
        self.digits = latest.minor_digits

    def at(self, moment: datetime) -> VersionRules:
        if len(self.versions) == 1:
            return self.versions[0]
        return self._by_id[self.ctx.version_at(moment).id]


class Activity:
    """One member's qualifying activity per program-local day (one time zone, one
    metric), complete from day ``start`` on, with the last window summed kept so that a
    window moving forward costs only the days it moves."""

    __slots__ = ("days", "start", "lo", "hi", "total")

    def __init__(self, start: int) -> None:
        self.days: dict[int, int] = {}
        self.start = start
        self.lo = 0
        self.hi = 0
        self.total = 0

    def add(self, day: int, value: int) -> bool:
        if day < self.start:
            return False
        days = self.days
        fresh = day not in days
        days[day] = days.get(day, 0) + value
        if self.lo <= day < self.hi:
            self.total += value
        return fresh

    def window(self, lo: int, hi: int) -> int:
        assert lo >= self.start, "qualifying activity was not loaded for this window"
        if (
            lo >= self.lo
            and hi >= self.hi
            and (lo - self.lo) + (hi - self.hi) <= 64 + len(self.days)
        ):
            get = self.days.get
            total = self.total
            for day in range(self.hi, hi):
                total += get(day, 0)
            for day in range(self.lo, lo):
                total -= get(day, 0)
        else:
            total = sum(v for d, v in self.days.items() if lo <= d < hi)
        self.lo, self.hi, self.total = lo, hi, total
        return total


class Tracker:
    """Qualifying activity of the members whose tier may still go up, loaded from the
    ledger once and kept up to date with the rows the import adds."""

    def __init__(self, views: list[tuple[ZoneInfo, str]]) -> None:
        self.views = views
        self.zones = [tz.key for tz, _ in views]
        # The metric when every version counts the same way in the same zone.
        self.single = views[0][1] if len(views) == 1 else None
        self.members: dict[int, list[Activity]] = {}
        self.size = 0

    def clear(self) -> None:
        self.members.clear()
        self.size = 0

    def drop(self, member_id: int) -> None:
        acts = self.members.pop(member_id, None)
        if acts:
            self.size -= sum(len(a.days) for a in acts)

    def fresh(self, member_id: int) -> None:
        """A member new in this batch: no activity anywhere before."""
        self.members[member_id] = [Activity(0) for _ in self.views]

    def add(
        self,
        member_id: int,
        qual_at: datetime,
        points: int,
        spend: int,
        visits: int,
        local: tuple[str, date] | None = None,
    ) -> None:
        """Count a transaction's qualifying activity; ``local`` is its program-local day
        in one time zone when the caller knows it already."""
        acts = self.members.get(member_id)
        if acts is None:
            return
        if self.single is not None and local is not None and local[0] == self.zones[0]:
            value = (
                points if self.single == "points" else spend if self.single == "spend" else visits
            )
            if value and acts[0].add(local[1].toordinal(), value):
                self.size += 1
            return
        for (tz, metric), name, act in zip(self.views, self.zones, acts, strict=True):
            value = points if metric == "points" else spend if metric == "spend" else visits
            if not value:
                continue
            day = local[1] if local is not None and local[0] == name else local_date(qual_at, tz)
            if act.add(day.toordinal(), value):
                self.size += 1

    def activity(self, member_id: int, view: int, lo: int, hi: int) -> int:
        return self.members[member_id][view].window(lo, hi)

    def missing(self, needs: dict[int, int]) -> tuple[list[int], datetime | None]:
        """Make room for each member's activity from day ``needs[id]`` (an ordinal): the
        members whose activity must be read, and from when (None: none). The reader then
        passes what it read to ``add``."""
        missing = {
            member_id: start
            for member_id, start in needs.items()
            if member_id not in self.members
            or any(act.start > start for act in self.members[member_id])
        }
        if not missing:
            return [], None
        for member_id in missing:
            self.drop(member_id)
        first = min(missing.values())
        since = min(local_midnight(date.fromordinal(first), tz) for tz, _ in self.views)
        for member_id in missing:
            self.members[member_id] = [Activity(first) for _ in self.views]
        return list(missing), since
