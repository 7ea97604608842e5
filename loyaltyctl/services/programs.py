"""Loading program files as versions, listing and exporting them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import and_, func
from sqlmodel import Session, col, select

from loyaltyctl.errors import InvalidInput, NotFound
from loyaltyctl.rules.program import Program
from loyaltyctl.rules.program_diff import Change, diff_programs
from loyaltyctl.rules.program_export import program_fingerprint
from loyaltyctl.services.context import load_context
from loyaltyctl.services.program_files import load_program_file
from loyaltyctl.services.program_guard import guard_new_version
from loyaltyctl.store.models import Member, ProgramRow, ProgramVersion


@dataclass
class LoadResult:
    program: str
    name: str
    version: int
    status: str  # "created" | "new-version" | "unchanged"


@dataclass
class ProgramSummary:
    program: str
    name: str
    version: int
    loaded_at: datetime
    members: int
    currency: str
    timezone: str


def load_program(
    session: Session, path: Path, *, now: datetime, move_tiers: dict[str, str] | None = None
) -> LoadResult:
    """A new program, a new version of a changed one, or a no-op for an unchanged file.
    ``move_tiers`` (old tier → new tier) moves the members of tiers a new version drops."""
    spec, source = load_program_file(path)
    fingerprint = program_fingerprint(spec)
    key = spec.program.key
    row = session.exec(select(ProgramRow).where(ProgramRow.key == key)).first()
    if row is None:
        row = ProgramRow(key=key, name=spec.program.name, created_at=now)
        session.add(row)
        session.flush()
        return _add_version(session, row, spec, source, fingerprint, 1, now, "created")
    latest = session.exec(
        select(ProgramVersion)
        .where(ProgramVersion.program_id == row.id)
        .order_by(col(ProgramVersion.version).desc())
    ).first()
    assert latest is not None
    if latest.fingerprint == fingerprint:
        return LoadResult(key, spec.program.name, latest.version, "unchanged")
    old = Program.model_validate_json(latest.spec)
    assert row.id is not None
    guard_new_version(session, row.id, old, spec, move_tiers or {}, now=now)
    row.name = spec.program.name
    session.add(row)
    return _add_version(
        session, row, spec, source, fingerprint, latest.version + 1, now, "new-version"
    )


def _add_version(
    session: Session,
    row: ProgramRow,
    spec: Program,
    source: str,
    fingerprint: str,
    version: int,
    now: datetime,
    status: str,
) -> LoadResult:
    assert row.id is not None
    session.add(
        ProgramVersion(
            program_id=row.id,
            version=version,
            fingerprint=fingerprint,
            source=source,
            spec=spec.model_dump_json(by_alias=True),
            loaded_at=now,
        )
    )
    session.flush()
    return LoadResult(row.key, spec.program.name, version, status)


def list_programs(session: Session) -> list[ProgramSummary]:
    latest = (
        select(ProgramVersion.program_id, func.max(ProgramVersion.version).label("version"))
        .group_by(col(ProgramVersion.program_id))
        .subquery()
    )
    members = (
        select(Member.program_id, func.count().label("members"))
        .group_by(col(Member.program_id))
        .subquery()
    )
    rows = session.exec(
        select(ProgramRow, ProgramVersion, members.c.members)
        .join(latest, latest.c.program_id == ProgramRow.id)
        .join(
            ProgramVersion,
            and_(
                col(ProgramVersion.program_id) == col(ProgramRow.id),
                col(ProgramVersion.version) == latest.c.version,
            ),
        )
        .outerjoin(members, members.c.program_id == ProgramRow.id)
        .order_by(col(ProgramRow.key))
    ).all()
    out = []
    for program, version, count in rows:
        spec = Program.model_validate_json(version.spec)
        out.append(
            ProgramSummary(
                program=program.key,
                name=program.name,
                version=version.version,
                loaded_at=version.loaded_at,
                members=int(count or 0),
                currency=spec.program.currency,
                timezone=spec.program.timezone,
            )
        )
    return out


@dataclass
class ProgramDetail:
    program: str
    version: int
    loaded_at: datetime
    versions: list[tuple[int, datetime]]
    spec: Program
    source: str


def show_program(session: Session, key: str | None) -> ProgramDetail:
    ctx = load_context(session, key)
    row = session.get(ProgramVersion, ctx.latest.id)
    assert row is not None
    return ProgramDetail(
        program=ctx.key,
        version=ctx.latest.version,
        loaded_at=ctx.latest.loaded_at,
        versions=[(v.version, v.loaded_at) for v in ctx.versions],
        spec=ctx.spec,
        source=row.source,
    )


# ---- versions, diffs, a load that only shows what it would change -------------------


@dataclass
class VersionRow:
    version: int
    loaded_at: datetime
    fingerprint: str


def list_versions(session: Session, key: str | None) -> list[VersionRow]:
    """Every loaded version of a program, oldest first."""
    ctx = load_context(session, key)
    rows = session.exec(
        select(ProgramVersion)
        .where(ProgramVersion.program_id == ctx.id)
        .order_by(col(ProgramVersion.version))
    ).all()
    return [VersionRow(r.version, r.loaded_at, r.fingerprint) for r in rows]


def version_ref(text: str) -> tuple[str, int] | None:
    """``KEY@VERSION`` → (key, version); None for anything else (a file name)."""
    key, at, number = text.rpartition("@")
    if not at or not key or not number.isascii() or not number.isdigit():
        return None
    return key, int(number)


def stored_version(session: Session, key: str, version: int) -> Program:
    """The model of one loaded version of a program."""
    ctx = load_context(session, key)
    for info in ctx.versions:
        if info.version == version:
            return info.spec
    known = ", ".join(str(info.version) for info in ctx.versions)
    raise NotFound(
        f"program {key} has no version {version} (versions: {known})",
        hint=f"see them with: loyaltyctl program versions {key}",
    )


def resolve_program(session: Session | None, ref: str) -> Program:
    """A program file, or ``KEY@VERSION`` of a loaded program (an existing file of that
    name wins: files are what people pass most)."""
    found = version_ref(ref)
    if found is None or Path(ref).exists():
        return load_program_file(Path(ref))[0]
    if session is None:
        raise InvalidInput(f"{ref} names a loaded version: it needs a database")
    return stored_version(session, *found)


@dataclass
class LoadPreview:
    program: str
    status: str  # "created" | "new-version" | "unchanged", as load would report
    version: int
    loaded: int | None
    changes: list[Change]


def preview_load(session: Session, path: Path) -> LoadPreview:
    """What ``load_program`` would do with ``path``, and the diff against the loaded
    version; writes nothing."""
    spec, _ = load_program_file(path)
    key = spec.program.key
    row = session.exec(select(ProgramRow).where(ProgramRow.key == key)).first()
    if row is None:
        return LoadPreview(key, "created", 1, None, [])
    ctx = load_context(session, key)
    latest = session.get(ProgramVersion, ctx.latest.id)
    assert latest is not None
    if latest.fingerprint == program_fingerprint(spec):
        return LoadPreview(key, "unchanged", latest.version, latest.version, [])
    changes = diff_programs(ctx.spec, spec)
    return LoadPreview(key, "new-version", latest.version + 1, latest.version, changes)
