"""One error hierarchy; each class carries the exit code of the contract's table.

Services raise these; the CLI's single handler prints ``error: …`` plus the hint on
stderr and exits with ``exit_code``.
"""

from __future__ import annotations


class LoyaltyError(Exception):
    """Base of every error the tool reports to its user."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class NotFound(LoyaltyError):
    exit_code = 3


class InvalidInput(LoyaltyError):
    exit_code = 4


class Conflict(LoyaltyError):
    exit_code = 5


class NotAllowed(LoyaltyError):
    exit_code = 6


class Busy(LoyaltyError):
    exit_code = 7


class CheckFailed(LoyaltyError):
    exit_code = 8


class DeliveryFailed(LoyaltyError):
    """``events pull --exec``: the command refused an event; the cursor stops before it."""

    exit_code = 9


class Unusable(LoyaltyError):
    """The database or an output file cannot be used: not found, not a database, corrupt,
    unreachable, read-only for a write, disk full. The message names it; the hint says
    what to do."""

    exit_code = 10


class ProgramInvalid(InvalidInput):
    """A program file failed to parse or validate; ``problems`` lists every one."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        self.source = source
        head = f"{source}: " if source else ""
        count = len(problems)
        message = f"{head}{count} problem{'s' if count != 1 else ''} in program file\n" + "\n".join(
            f"  {p}" for p in problems
        )
        super().__init__(message, hint="fix the file and run: loyaltyctl program validate FILE")
