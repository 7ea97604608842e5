"""Files that are written whole or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from loyaltyctl.errors import InvalidInput


@contextmanager
def atomic_file(path: Path) -> Iterator[IO[str]]:
    """Written beside its final name and renamed into place, so a failed run never leaves
    a half-written file where a good one was expected."""
    parent = path.parent
    if not parent.is_dir():
        raise InvalidInput(
            f"cannot write {path}: folder {parent} does not exist",
            hint="create the folder or give another --out",
        )
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
