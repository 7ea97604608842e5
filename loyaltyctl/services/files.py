"""Output files that are written whole or not at all.

A regular file (or a new one) is written to a temporary file beside it, flushed and
synced, and only then renamed over the old name: a full disk, a killed run or an error
half-way leaves the earlier file as it was. A character device, a FIFO or a socket
(``--out /dev/stdout``, a named pipe to another program) is written in place and never
replaced; ``-`` is stdout.

A disk that fails under the write (full, over quota, past the file-size limit, I/O
error, read-only) is ``Unusable`` (exit 10); a path that cannot be a file (no folder, a
directory, no permission) is ``InvalidInput`` (exit 4).
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from loyaltyctl.errors import InvalidInput, LoyaltyError, Unusable

_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})


def write_error(path: Path | str, exc: OSError, what: str = "--out") -> LoyaltyError:
    """What to report when writing ``path`` failed with ``exc``."""
    reason = exc.strerror or str(exc)
    if exc.errno in _DISK_ERRNOS:
        return Unusable(
            f"cannot write {path}: {reason}",
            hint="free some space (or choose another place) and run again;"
            " an earlier file at that path is intact",
        )
    return InvalidInput(
        f"cannot write {path}: {reason}", hint=f"check the {what} path and its folder"
    )


class OutputFile:
    """One output file: ``open()``, write to ``handle``, then ``commit()`` (or ``abort()``,
    which leaves whatever was at the path before)."""

    def __init__(self, path: Path | str, *, what: str = "--out", newline: str | None = "") -> None:
        self.path = Path(path)
        self.what = what
        self.newline = newline
        self.handle: IO[str] = sys.stdout
        self._tmp: str | None = None
        self._in_place = str(path) == "-"

    def open(self) -> IO[str]:
        if self._in_place:
            return self.handle
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            found = None
        except OSError as exc:
            raise write_error(self.path, exc, self.what) from exc
        if found is not None and stat.S_ISDIR(found.st_mode):
            raise InvalidInput(
                f"cannot write {self.path}: it is a directory",
                hint=f"give a file name to {self.what}",
            )
        try:
            if found is not None and not stat.S_ISREG(found.st_mode):
                # A device or a pipe: renaming over it would replace it with a file.
                self._in_place = True
                self.handle = open(self.path, "w", encoding="utf-8", newline=self.newline)  # noqa: SIM115
                return self.handle
            parent = self.path.parent
            if not parent.is_dir():
                raise InvalidInput(
                    f"cannot write {self.path}: folder {parent} does not exist",
                    hint=f"create the folder or give another {self.what}",
                )
            fd, self._tmp = tempfile.mkstemp(
                dir=parent, prefix=f".{self.path.name}.", suffix=".tmp"
            )
            # mkstemp's 0600 would make every output private; keep the old file's mode,
            # or what the umask gives a new file.
            os.fchmod(fd, stat.S_IMODE(found.st_mode) if found is not None else _default_mode())
            self.handle = os.fdopen(fd, "w", encoding="utf-8", newline=self.newline)
        except OSError as exc:
            self._discard()
            raise write_error(self.path, exc, self.what) from exc
        return self.handle

    def commit(self) -> None:
        try:
            self.handle.flush()
            if self._tmp is None:
                if self.handle is not sys.stdout:
                    self.handle.close()
                return
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self._tmp, self.path)
            self._tmp = None
            _sync_folder(self.path.parent)
        except OSError as exc:
            self._discard()
            raise write_error(self.path, exc, self.what) from exc

    def abort(self) -> None:
        self._discard()

    def _discard(self) -> None:
        if self.handle is not sys.stdout:
            try:
                self.handle.close()
            except OSError:
                pass  # the write that failed already said why
        if self._tmp is not None:
            Path(self._tmp).unlink(missing_ok=True)
            self._tmp = None


@contextmanager
def atomic_file(
    path: Path | str, *, what: str = "--out", newline: str | None = ""
) -> Iterator[IO[str]]:
    """Write ``path`` whole or not at all (see the module's docstring)."""
    out = OutputFile(path, what=what, newline=newline)
    handle = out.open()
    try:
        yield handle
    except OSError as exc:
        out.abort()
        if exc.errno in _DISK_ERRNOS:
            raise write_error(path, exc, what) from exc
        raise
    except BaseException:
        out.abort()
        raise
    out.commit()


def _default_mode() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder; the file itself is synced
    finally:
        os.close(fd)
