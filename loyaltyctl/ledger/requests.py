"""What a caller asks the ledger to do, validated on construction.

A request that exists is valid: its ids, amounts, points and time are within the bounds
of ``rules.limits``, so every caller (the CLI, the importers, a Python program, the
simulator) gets the same refusals before anything is read or written. What needs the
database to decide (is the member known, is the ref already used) is the kernel's and
the services' concern.

``digits`` (the currency's decimals) and ``now`` are given on construction and not kept:
they are the context the values are checked against."""

from __future__ import annotations

import json
from dataclasses import InitVar, dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from loyaltyctl.errors import InvalidInput
from loyaltyctl.rules.categories import normalise_category
from loyaltyctl.rules.earning import Line
from loyaltyctl.rules.limits import (
    MAX_AMOUNT,
    check_amount,
    check_day,
    check_id,
    check_member,
    check_moment,
    check_points,
    check_ref,
    check_text,
)


def canonical(payload: dict[str, Any]) -> str:
    """The stored form of a request, compared on a retry: sorted keys, no spaces."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def _when(at: datetime | None, now: datetime) -> datetime:
    return check_moment(at, now) if at is not None else now


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True, kw_only=True)
class Purchase:
    member: str
    ref: str
    lines: tuple[Line, ...]
    at: datetime | None = None
    digits: InitVar[int]
    now: InitVar[datetime]
    when: datetime = field(init=False)
    kind = "purchase"

    def __post_init__(self, digits: int, now: datetime) -> None:
        _set(self, "member", check_member(self.member))
        _set(self, "ref", check_ref(self.ref))
        lines = tuple(self.lines)
        if not lines:
            raise InvalidInput("a purchase needs an amount or at least one line", hint="e.g. 12.50")
        for line in lines:
            what = f"line {line.category}" if line.category else "amount"
            check_amount(line.amount, digits, what)
            if line.category is not None:
                check_text(line.category, "category", 64)
        lines = tuple(Line(normalise_category(line.category), line.amount) for line in lines)
        total = sum((line.amount for line in lines), Decimal(0))
        if total == 0:
            raise InvalidInput(
                "a purchase of 0 earns nothing and is not recorded",
                hint="give the amount paid, e.g. 12.50",
            )
        if total > MAX_AMOUNT:
            raise InvalidInput(
                f"the purchase's lines add up to more than {MAX_AMOUNT:,} currency units",
                hint="check the amounts",
            )
        _set(self, "lines", lines)
        _set(self, "at", check_moment(self.at, now) if self.at is not None else None)
        _set(self, "when", _when(self.at, now))

    @property
    def amount(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0))

    def payload(self) -> dict[str, Any]:
        """Without its time: a retry without ``--at`` is the same request."""
        return {
            "kind": "purchase",
            "member": self.member,
            "lines": [[line.category, str(line.amount)] for line in self.lines],
        }


@dataclass(frozen=True, kw_only=True)
class Return:
    member: str
    ref: str
    original: str
    amount: Decimal
    at: datetime | None = None
    digits: InitVar[int]
    now: InitVar[datetime]
    when: datetime = field(init=False)
    kind = "return"

    def __post_init__(self, digits: int, now: datetime) -> None:
        _set(self, "member", check_member(self.member))
        _set(self, "ref", check_ref(self.ref))
        _set(self, "original", check_ref(self.original, "original"))
        check_amount(self.amount, digits)
        if self.amount == 0:
            raise InvalidInput("return amount 0 must be greater than zero", hint="e.g. 9.50")
        _set(self, "at", check_moment(self.at, now) if self.at is not None else None)
        _set(self, "when", _when(self.at, now))

    def payload(self) -> dict[str, Any]:
        return {
            "kind": "return",
            "member": self.member,
            "original": self.original,
            "amount": str(self.amount),
        }


@dataclass(frozen=True, kw_only=True)
class Adjust:
    member: str
    ref: str
    points: int
    reason: str
    at: datetime | None = None
    now: InitVar[datetime]
    when: datetime = field(init=False)
    kind = "adjust"

    def __post_init__(self, now: datetime) -> None:
        _set(self, "member", check_member(self.member))
        _set(self, "ref", check_ref(self.ref))
        check_points(self.points)
        if not self.reason.strip():
            raise InvalidInput("an adjustment needs a reason", hint="say why, e.g. 'goodwill'")
        check_text(self.reason, "reason", 500)
        _set(self, "at", check_moment(self.at, now) if self.at is not None else None)
        _set(self, "when", _when(self.at, now))

    def payload(self) -> dict[str, Any]:
        return {
            "kind": "adjust",
            "member": self.member,
            "points": self.points,
            "reason": self.reason,
        }


@dataclass(frozen=True, kw_only=True)
class Enroll:
    member: str
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    birthday: date | None = None
    at: datetime | None = None
    now: InitVar[datetime]
    when: datetime = field(init=False)

    def __post_init__(self, now: datetime) -> None:
        _set(self, "member", check_member(self.member))
        for key in ("name", "email", "phone"):
            value = getattr(self, key)
            if value is not None:
                check_text(value, key, 500)
        if self.birthday is not None:
            check_day(self.birthday, "birthday")
            if self.birthday > now.date():
                raise InvalidInput(
                    f"birthday {self.birthday.isoformat()} is in the future", hint="check it"
                )
        _set(self, "at", check_moment(self.at, now, "enrolled at") if self.at else None)
        _set(self, "when", _when(self.at, now))

    def details(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "email": self.email,
            "phone": self.phone,
            "birthday": self.birthday,
        }


@dataclass(frozen=True, kw_only=True)
class Opening:
    """Points a member brings from another system, credited at enrolment."""

    member: str
    points: int
    expires: date | None = None

    def __post_init__(self) -> None:
        _set(self, "member", check_member(self.member))
        check_points(self.points, "opening_balance")
        if self.points < 0:
            raise InvalidInput(
                f"opening_balance {self.points} is negative", hint="points carried over, e.g. 1200"
            )
        if self.expires is not None:
            check_day(self.expires, "opening_expires")


@dataclass(frozen=True, kw_only=True)
class Redeem:
    member: str
    reward: str
    ref: str | None = None
    at: datetime | None = None
    now: InitVar[datetime]
    when: datetime = field(init=False)

    def __post_init__(self, now: datetime) -> None:
        _set(self, "member", check_member(self.member))
        _set(self, "reward", check_id(self.reward, "reward", 64, "free-drink"))
        if self.ref is not None:
            _set(self, "ref", check_ref(self.ref, "--ref"))
        _set(self, "at", check_moment(self.at, now) if self.at is not None else None)
        _set(self, "when", _when(self.at, now))

    def payload(self) -> dict[str, Any]:
        return {"kind": "redeem", "member": self.member, "reward": self.reward}


@dataclass(frozen=True, kw_only=True)
class VoucherAction:
    """Using or cancelling a voucher at a time."""

    voucher: str
    at: datetime | None = None
    ref: str | None = None
    now: InitVar[datetime]
    when: datetime = field(init=False)

    def __post_init__(self, now: datetime) -> None:
        _set(self, "voucher", check_id(self.voucher, "voucher", 32, "V-7K3M9Q"))
        if self.ref is not None:
            _set(self, "ref", check_ref(self.ref, "--ref"))
        _set(self, "at", check_moment(self.at, now) if self.at is not None else None)
        _set(self, "when", _when(self.at, now))


class Names(NamedTuple):
    """What the caller calls a request's time and amount, for hints."""

    at: str
    amount: str


OPTION_NAMES = Names("--at", "--amount")
COLUMN_NAMES = Names("at", "amount")


class TxnRow:
    """A purchase, return or adjustment as the kernel applies it: checked, its time
    resolved, the program version in force then and its program-local day known.

    The importers build these straight from a file's text for speed (with the same
    checks, see ``services.imports``); everyone else from a request's ``row``."""

    __slots__ = (
        "src",
        "kind",
        "member",
        "ref",
        "at",
        "when",
        "rules",
        "day",
        "amount",
        "category",
        "lines",
        "original",
        "points",
        "reason",
        "names",
        "store",
    )

    def __init__(
        self,
        src: Any,
        kind: str,
        member: str,
        ref: str,
        at: datetime | None,
        when: datetime,
        rules: Any,
        day: date,
        names: Names = COLUMN_NAMES,
    ) -> None:
        self.src = src
        self.kind = kind
        self.member = member
        self.ref = ref
        self.at = at
        self.when = when
        self.rules = rules
        self.day = day
        self.amount = Decimal(0)
        self.category: str | None = None
        # Several lines (single commands); None for a one-line purchase (category, amount).
        self.lines: tuple[Line, ...] | None = None
        self.original = ""
        self.points = 0
        self.reason = ""
        self.names = names
        # The shop or till it came from; stored, not compared on a retry.
        self.store: str | None = None

    def payload(self) -> dict[str, Any]:
        """The request as stored for retries (without its time)."""
        if self.kind == "purchase":
            lines = self.lines or (Line(self.category, self.amount),)
            return {
                "kind": "purchase",
                "member": self.member,
                "lines": [[line.category, str(line.amount)] for line in lines],
            }
        if self.kind == "return":
            return {
                "kind": "return",
                "member": self.member,
                "original": self.original,
                "amount": str(self.amount),
            }
        return {
            "kind": "adjust",
            "member": self.member,
            "points": self.points,
            "reason": self.reason,
        }


class MemberRow:
    """An enrolment (with details and maybe an opening balance) as the kernel applies it."""

    __slots__ = ("src", "code", "given", "at", "opening", "expires")

    def __init__(
        self,
        src: Any,
        code: str,
        given: dict[str, Any],
        at: datetime | None,
        opening: int,
        expires: date | None,
    ) -> None:
        self.src = src
        self.code = code
        self.given = given
        self.at = at
        self.opening = opening
        self.expires = expires


def txn_row(request: Purchase | Return | Adjust, rules_at: Any, tz_of: Any) -> TxnRow:
    """The kernel's form of a single command's request. ``rules_at(moment)`` gives the
    version rules in force then; ``tz_of(rules)`` its zone."""
    rules = rules_at(request.when)
    day = request.when.astimezone(tz_of(rules)).date()
    row = TxnRow(
        None, request.kind, request.member, request.ref, request.at, request.when, rules, day,
        OPTION_NAMES,
    )  # fmt: skip
    if isinstance(request, Purchase):
        row.amount = request.amount
        if len(request.lines) == 1:
            row.category = request.lines[0].category
        else:
            row.lines = request.lines
    elif isinstance(request, Return):
        row.amount = request.amount
        row.original = request.original
    else:
        row.points = request.points
        row.reason = request.reason
    return row


@dataclass(frozen=True, kw_only=True)
class Transfer:
    """Available points from one member to another (``txn transfer``)."""

    source: str
    target: str
    points: int
    ref: str
    reason: str | None = None
    now: InitVar[datetime]
    when: datetime = field(init=False)

    def __post_init__(self, now: datetime) -> None:
        _set(self, "source", check_member(self.source, "FROM"))
        _set(self, "target", check_member(self.target, "TO"))
        _set(self, "points", check_points(self.points, "--points"))
        if self.points <= 0:
            raise InvalidInput(
                f"--points {self.points} must be greater than zero",
                hint="give the points to move, e.g. --points 500",
            )
        _set(self, "ref", check_ref(self.ref, "--ref"))
        if self.reason is not None:
            _set(self, "reason", check_text(self.reason, "--reason") or None)
        _set(self, "when", now)

    def payload(self) -> dict[str, Any]:
        return {
            "kind": "transfer",
            "from": self.source,
            "to": self.target,
            "points": self.points,
            "reason": self.reason,
        }


@dataclass(frozen=True, kw_only=True)
class Merge:
    """One membership folded into another (``member merge``)."""

    source: str
    target: str
    ref: str
    now: InitVar[datetime]
    when: datetime = field(init=False)

    def __post_init__(self, now: datetime) -> None:
        _set(self, "source", check_member(self.source, "SOURCE"))
        _set(self, "target", check_member(self.target, "TARGET"))
        _set(self, "ref", check_ref(self.ref, "--ref"))
        _set(self, "when", now)

    def payload(self) -> dict[str, Any]:
        return {"kind": "merge", "from": self.source, "to": self.target}
