"""Renderers of statements: JSON, CSV and HTML (Jinja2 templates in ``templates/``).

They turn a service's result into bytes and nothing else: no database, no clock, so the
same statement always renders to the same text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loyaltyctl.services.statements import Statement

FORMATS = ("json", "csv", "html")


def render_statement(statement: Statement, fmt: str) -> str:
    if fmt == "json":
        from loyaltyctl.render.statement_json import statement_json

        return statement_json(statement)
    if fmt == "csv":
        from loyaltyctl.render.statement_csv import statement_csv

        return statement_csv(statement)
    if fmt == "html":
        from loyaltyctl.render.statement_html import statement_html

        return statement_html(statement)
    raise ValueError(f"unknown statement format {fmt!r}")
