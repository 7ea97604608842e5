"""Program files on disk: read one, decode it and hand its text to the rules' parser.

Problems of the file itself (cannot be read, not UTF-8) name the file, like the parser's
problems do; ``rules.program_parse`` never touches a file.
"""

from __future__ import annotations

from pathlib import Path

from loyaltyctl.errors import InvalidInput
from loyaltyctl.rules.program import Program
from loyaltyctl.rules.program_parse import parse_program


def read_program_file(path: Path) -> str:
    """The file's text, without the byte order mark some editors write."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read program file: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{path}: cannot read program file: not UTF-8 text (byte {exc.start})",
            hint="save the file as UTF-8",
        ) from exc
    # Editors on Windows may prepend a byte order mark, which TOML does not allow.
    return text.removeprefix("\ufeff")


def load_program_file(path: Path) -> tuple[Program, str]:
    """Read and validate a program file; returns the model and the file's text."""
    text = read_program_file(path)
    return parse_program(text, str(path)), text
