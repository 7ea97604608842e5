"""How a category name is compared: one spelling for the program file, the till's
transaction and the import row, so ``Beans`` and `` beans `` earn as ``beans``."""

from __future__ import annotations


def normalise_category(name: str | None) -> str | None:
    """Lowercase, runs of white space as one space, no space around; None or blank: None."""
    if name is None:
        return None
    text = " ".join(name.split()).lower()
    return text or None
