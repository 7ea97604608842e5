"""A statement as CSV: an opening row, one row per movement, a closing row.

Columns (stable): member, date, at, ref, kind, description, points, balance, backdated,
recorded_at, store. ``date`` is the program-local day; ``at`` and ``recorded_at`` are UTC.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING

from loyaltyctl.render.timefmt import instant

if TYPE_CHECKING:
    from loyaltyctl.services.statements import Statement

COLUMNS = (
    "member",
    "date",
    "at",
    "ref",
    "kind",
    "description",
    "points",
    "balance",
    "backdated",
    "recorded_at",
    "store",
)


def statement_csv(s: Statement) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerow(
        [
            s.member,
            s.first.isoformat(),
            "",
            "",
            "opening",
            "Opening balance",
            "",
            s.opening_balance,
            "",
            "",
            "",
        ]
    )
    for line in s.lines:
        writer.writerow(
            [
                s.member,
                line.date.isoformat(),
                instant(line.at),
                line.ref,
                line.kind,
                line.description,
                line.points,
                line.balance,
                "true" if line.backdated else "false",
                instant(line.recorded_at),
                line.store or "",
            ]
        )
    writer.writerow(
        [
            s.member,
            s.last.isoformat(),
            "",
            "",
            "closing",
            "Closing balance",
            "",
            s.closing_balance,
            "",
            "",
            "",
        ]
    )
    return out.getvalue()
