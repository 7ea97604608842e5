"""A member as a batch of postings sees it: balance, debt, tier, open lots; and what is
known of a stored transaction. Pure: no database, no I/O; the store loads these and
writes back what changed."""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from loyaltyctl.rules.timeutil import local_date, local_midnight


@dataclass(slots=True, eq=False)
class MemberState:
    """A member row as a batch changes it; ``lots`` only for members a debit may touch."""

    id: int
    code: str
    status: str
    tier: str
    tier_since: date | None
    enrolled_at: datetime
    balance: int
    debt: int
    last_purchase_at: datetime | None
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    birthday: date | None = None
    erased: bool = False
    lots: list[OpenLot] | None = None
    # The key of the last lot of the stored ones loaded in order (None: none of them);
    # ``lots_complete`` once every stored lot with points left is loaded.
    horizon: tuple[Any, ...] | None = None
    lots_complete: bool = False
    changed: bool = False
    new: bool = False
    _enrolled_day: date | None = None
    _enrolled_start: datetime | None = None

    def enrolled_day(self, tz: ZoneInfo) -> date:
        if self._enrolled_day is None:
            self._enrolled_day = local_date(self.enrolled_at, tz)
        return self._enrolled_day

    def before_enrolment(self, moment: datetime, tz: ZoneInfo) -> bool:
        """Whether ``moment`` falls on a program-local day before the enrolment day."""
        if self._enrolled_start is None:
            self._enrolled_start = local_midnight(self.enrolled_day(tz), tz)
        return moment < self._enrolled_start


class OpenLot:
    """A lot with points left that a debit of this batch may take from. ``row`` is the
    insert row of a lot made in this batch (its remainder is written on insert).

    ``key`` orders lots as the store reads them (``store.lookups._LOT_ORDER``: oldest-expiring
    first, no expiry last, then oldest earned, then id), on the values as stored: SQLite's
    ISO text sorts as its dates and times do, PostgreSQL's are dates and times."""

    __slots__ = ("id", "txn_id", "key", "remaining", "initial", "row")

    def __init__(
        self,
        id: int,
        txn_id: int,
        expires_on: Any,
        earned_at: Any,
        remaining: int,
        row: list[Any] | None = None,
    ) -> None:
        self.id = id
        self.txn_id = txn_id
        self.key = (expires_on is None, "" if expires_on is None else expires_on, earned_at, id)
        self.remaining = remaining
        self.initial = remaining
        self.row = row

    def stored_dates(self) -> tuple[Any, Any]:
        """(expires_on, earned_at) as stored, read back from ``key``."""
        expires = None if self.key[0] else self.key[1]
        return expires, self.key[2]


# OpenLot.key, read in C when a member's lots are sorted.
LOT_KEY = operator.attrgetter("key")


class KnownTxn:
    """What a batch needs to know about a stored (or just applied) transaction."""

    __slots__ = (
        "id",
        "kind",
        "member_id",
        "occurred_at",
        "amount_minor",
        "points",
        "qual_points",
        "qual_spend_minor",
        "qual_at",
        "payload_text",
    )

    def __init__(
        self,
        id: int,
        kind: str,
        member_id: int,
        occurred_at: datetime,
        amount_minor: int | None,
        points: int,
        qual_points: int,
        qual_spend_minor: int,
        qual_at: datetime,
        payload_text: str,
    ) -> None:
        self.id = id
        self.kind = kind
        self.member_id = member_id
        self.occurred_at = occurred_at
        self.amount_minor = amount_minor
        self.points = points
        self.qual_points = qual_points
        self.qual_spend_minor = qual_spend_minor
        self.qual_at = qual_at
        self.payload_text = payload_text

    def same_request(self, payload: dict[str, Any], at: datetime | None) -> bool:
        """services.txns._existing: the stored payload but its time equals the request's,
        and the time too when the request states one."""
        stored = json.loads(self.payload_text)
        same = {k: v for k, v in stored.items() if k != "at"} == payload
        return same and (at is None or self.occurred_at == at)
