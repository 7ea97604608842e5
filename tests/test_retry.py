"""The retry after a lost race on a unique key, as library callers and the CLI use it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from loyaltyctl.services.retry import lost_unique_race, retry_lost_race


def flaky(errors: list[Exception]) -> tuple[list[int], Callable[[int], int]]:
    calls: list[int] = []

    def work(value: int) -> int:
        calls.append(value)
        if errors:
            raise errors.pop(0)
        return value * 2

    return calls, work


def test_a_lost_race_runs_the_work_once_more() -> None:
    calls, work = flaky([IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))])
    assert retry_lost_race(work, 21) == 42
    assert calls == [21, 21]


def test_only_once() -> None:
    race = IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))
    calls, work = flaky([race, race])
    with pytest.raises(IntegrityError):
        retry_lost_race(work, 1)
    assert calls == [1, 1]


@pytest.mark.parametrize(
    "error", [ValueError("x"), OperationalError("SELECT", {}, Exception("database is locked"))]
)
def test_other_errors_are_not_retried(error: Exception) -> None:
    calls, work = flaky([error])
    with pytest.raises(type(error)):
        retry_lost_race(work, 1)
    assert calls == [1]
    assert not lost_unique_race(error)
