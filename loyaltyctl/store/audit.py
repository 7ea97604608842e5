"""Who changed what: an ``audit`` row for every write that changed something, in the
same transaction as the change.

Recorded in one place, whatever the command: the CLI's command wrapper says who acts and
which command runs (``acting``); the store notes what changed as it writes — the bulk
writer's transactions and new members (``note_postings``) and, through a session
``before_flush`` hook, every row the ORM adds, changes or deletes — and a
``before_commit`` hook writes the notes. A transaction that changed nothing (an identical
retry, a read) writes nothing. Without ``acting`` (a Python caller that does not set it)
nothing is recorded.

Summaries never hold personal data (field names, not values), so erasing a member has
only the free-text reasons operators typed to remove (``scrub_member``)."""

from __future__ import annotations

import contextlib
import getpass
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, inspect, text
from sqlmodel import Session

from loyaltyctl.store.eventlog import stored_time
from loyaltyctl.store.rows import insert_rows

# Past this many members touched, one row for the whole command (an import) instead.
PER_MEMBER_LIMIT = 20
_NOTES = "audit_notes"
_COLUMNS = ("at", "actor", "command", "program_id", "member_id", "ref", "summary")


@dataclass(frozen=True)
class Acting:
    actor: str
    command: str


_acting: ContextVar[Acting | None] = ContextVar("loyaltyctl_acting", default=None)


def default_actor() -> str:
    value = os.environ.get("LOYALTYCTL_ACTOR", "").strip()
    if value:
        return value
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@contextlib.contextmanager
def acting(actor: str | None, command: str) -> Iterator[None]:
    """Record the writes made inside as ``command`` run by ``actor`` (default: the
    ``LOYALTYCTL_ACTOR`` environment variable, else the OS user)."""
    token = _acting.set(Acting((actor or default_actor())[:128], command[:64]))
    try:
        yield
    finally:
        _acting.reset(token)


@dataclass(frozen=True)
class Note:
    program_id: int | None
    member_id: int | None
    ref: str | None
    summary: str


class _Notes:
    """A transaction's notes, until it has touched more than ``PER_MEMBER_LIMIT``
    members; past that only what the one summary row says (how many transactions of how
    many members), so an import of a million rows holds no million notes until commit."""

    def __init__(self) -> None:
        self.kept: list[Note] = []
        self.members: set[int] = set()
        self.refs = 0
        self.program_id: int | None = None
        self.summed = False

    def add(self, note_: Note) -> None:
        if note_.member_id is not None:
            self.members.add(note_.member_id)
        if note_.ref:
            self.refs += 1
        if self.program_id is None and note_.program_id:
            self.program_id = note_.program_id
        if not self.summed:
            self.kept.append(note_)
            if len(self.members) > PER_MEMBER_LIMIT:
                self.summed = True
                self.kept = []

    def rows(self) -> list[Note]:
        if not self.summed:
            return self.kept
        summary = f"{self.refs} transactions of {len(self.members)} members"
        return [Note(self.program_id, None, None, summary)]


def note(session: Session, note_: Note) -> None:
    if _acting.get() is not None:
        notes = session.info.get(_NOTES)
        if notes is None:
            notes = session.info[_NOTES] = _Notes()
        notes.add(note_)


def note_postings(session: Session, program_id: int, txns: list[tuple[Any, ...]],
                  new_members: list[tuple[Any, ...]]) -> None:  # fmt: skip
    """What the bulk writer stores: each transaction (member, ref, kind and points) and
    each new member."""
    if _acting.get() is None:
        return
    for row in new_members:
        note(session, Note(program_id, row[0], None, f"member {row[2]} enrolled"))
    for t in txns:
        note(session, Note(program_id, t[2], t[3], f"{t[4]} {t[9]:+d} points"))


def _describe(obj: Any, state: str) -> Note | None:
    table = getattr(obj, "__tablename__", None)
    if table is None:
        return None
    program_id = getattr(obj, "program_id", None)
    member_id = getattr(obj, "member_id", None)
    if table == "member":
        member_id = obj.id
        changed = sorted(
            a.key
            for a in inspect(obj).attrs
            if a.history.has_changes() and a.key not in ("updated_at", "email_key", "phone_rev")
        )
        if "status" in changed:
            why = f" ({obj.status_reason})" if obj.status_reason else ""
            return Note(program_id, member_id, None, f"status {obj.status}{why}")
        if "erased_at" in changed or (changed and obj.erased_at is not None):
            return Note(program_id, member_id, None, "personal data erased")
        return Note(program_id, member_id, None, f"{state}: {', '.join(changed)}")
    if table == "job_run":
        return Note(program_id, None, None, f"{obj.job} run as of {obj.as_of} {obj.status}")
    if table == "program_version":
        return Note(program_id, None, None, f"program version {obj.version} loaded")
    if table == "voucher":
        return Note(program_id, member_id, None, f"voucher {obj.code} {obj.status}")
    return Note(program_id, member_id, None, f"{table} {state}")


def _collect(session: Session, _flush: Any, _instances: Any) -> None:
    if _acting.get() is None:
        return
    for state, objs in (("added", session.new), ("changed", session.dirty),
                        ("deleted", session.deleted)):  # fmt: skip
        for obj in objs:
            if state == "changed" and not session.is_modified(obj):
                continue
            found = _describe(obj, state)
            if found is not None:
                note(session, found)


def _write(session: Session) -> None:
    who = _acting.get()
    if who is None:
        return
    session.flush()  # ORM changes still pending are noted by the flush hook
    held: _Notes | None = session.info.pop(_NOTES, None)
    notes = held.rows() if held is not None else []
    if not notes:
        return
    at = datetime.now(UTC)
    connection = session.connection()
    at_v = stored_time(connection.dialect.name == "sqlite", at)
    rows = [(at_v, who.actor, who.command, n.program_id, n.member_id, n.ref, n.summary)
            for n in notes]  # fmt: skip
    insert_rows(connection, "audit", _COLUMNS, rows)


def _forget(session: Session) -> None:
    session.info.pop(_NOTES, None)


def scrub_member(session: Session, member_id: int) -> None:
    """Erasure: what operators typed about the member (reasons) leaves the audit too."""
    session.connection().execute(
        text("UPDATE audit SET summary = '(erased)' WHERE member_id = :m"), {"m": member_id}
    )


_installed = False


def install() -> None:
    global _installed
    if not _installed:
        event.listen(Session, "before_flush", _collect)
        event.listen(Session, "before_commit", _write)
        event.listen(Session, "after_rollback", _forget)
        _installed = True
