"""The docs and the schema cannot drift from the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine

from loyaltyctl import __version__
from loyaltyctl.store.db import SCHEMA_HEAD
from loyaltyctl.store.migrate import head_revision
from tests.conftest import REPO, assert_models_match_schema


def test_cli_reference_is_current_and_every_command_has_help() -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import gen_cli_docs
    finally:
        sys.path.pop(0)
    assert gen_cli_docs.commands_without_help() == []
    stale = (REPO / "docs" / "cli.md").read_text() != gen_cli_docs.render()
    assert not stale, "docs/cli.md is stale: run .venv/bin/python scripts/gen_cli_docs.py"


def test_stored_top_level_help_is_current() -> None:
    """The console script prints loyaltyctl/cli/help.txt for --help without Typer."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import gen_cli_docs
    finally:
        sys.path.pop(0)
    stale = gen_cli_docs.HELP_OUT.read_text() != gen_cli_docs.render_help()
    assert not stale, (
        "loyaltyctl/cli/help.txt is stale: run .venv/bin/python scripts/gen_cli_docs.py"
    )


def test_readme_starts_with_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text()
    quickstart = readme[: readme.index("\n## ", readme.index("## Quickstart") + 1)]
    assert "make demo" in quickstart and "make test" in quickstart
    for page in ("program-format.md", "cli.md", "architecture.md", "ledger.md"):
        assert (REPO / "docs" / page).exists()
    assert (REPO / "CHANGELOG.md").exists()


def test_schema_head_constant_matches_migrations() -> None:
    assert head_revision() == SCHEMA_HEAD


def test_models_and_migrations_do_not_drift(engine: Engine) -> None:
    """`alembic check` against a database migrated to head."""
    from loyaltyctl.store.migrate import upgrade

    upgrade(engine)
    assert_models_match_schema(engine)


def test_version_flag() -> None:
    exe = Path(sys.executable).parent / "loyaltyctl"
    for command in ([sys.executable, "-m", "loyaltyctl"], [str(exe)]):
        out = subprocess.run([*command, "--version"], capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout == f"loyaltyctl {__version__}\n"


def test_python_api_page_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/python-api.md: its code blocks, run in order in one namespace, against a
    fresh SQLite file (the page's promise that the examples work)."""
    page = (REPO / "docs" / "python-api.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert len(blocks) >= 6
    monkeypatch.chdir(REPO)
    namespace: dict[str, object] = {"workdir": tmp_path, "print": lambda *a, **k: None}
    for block in blocks:
        exec(compile(block, "docs/python-api.md", "exec"), namespace)
    assert namespace["summary"].applied == 1  # type: ignore[attr-defined]
