"""Running a write again after it lost a race on a unique key.

Two writers inserting the same new reference (or member) at once: the loser's insert
fails at commit with an ``IntegrityError``. The operations are idempotent, so running
the loser's whole transaction again reports the winner's result as a duplicate, or a
conflict, as if the two had come one after the other.

Light on purpose: the error is recognised by its class's name and module, so importing
this (the CLI does at start-up) loads no SQLAlchemy.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def lost_unique_race(exc: BaseException) -> bool:
    """True for SQLAlchemy's ``IntegrityError``: a unique key taken meanwhile."""
    kind = type(exc)
    return kind.__name__ == "IntegrityError" and kind.__module__.startswith("sqlalchemy")


class _NeverRaised(Exception):
    pass


def _integrity_error() -> type[BaseException]:
    # Evaluated only when an exception is on its way; without SQLAlchemy loaded no
    # statement ran, so no unique key can have been lost.
    module = sys.modules.get("sqlalchemy.exc")
    return module.IntegrityError if module is not None else _NeverRaised


def retry_lost_race(func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """``func(*args, **kwargs)``, once more if it lost a race on a unique key.

    ``func`` must be the whole transaction, opened and committed inside it (for example
    ``with session_scope(engine) as session: return post_purchase(session, …)``): the
    race shows at commit, and the retry needs a fresh transaction that sees the winner."""
    try:
        return func(*args, **kwargs)
    except _integrity_error():
        pass
    return func(*args, **kwargs)
