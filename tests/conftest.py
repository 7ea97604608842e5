"""Each test gets its own real database: a SQLite file, or a PostgreSQL database copied
from a migrated template in a throwaway cluster started once per run."""

from __future__ import annotations

import functools
import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.testing
from sqlalchemy import Engine, create_engine, text
from typer.testing import CliRunner

# Imported before any test freezes time: pydantic builds its schemas at import, and under
# freezegun `date` would be freezegun's FakeDate class.
import loyaltyctl.rules.program  # noqa: F401
from loyaltyctl.cli.main import app
from loyaltyctl.store.db import make_engine
from loyaltyctl.store.migrate import upgrade

REPO = Path(__file__).resolve().parent.parent
PROGRAMS = REPO / "programs"
BACKENDS = ["sqlite", "postgresql"]
# The ledger sharded by member (tests/partitioned.py), for the tests marked
# ``partitioned``: they run on it too whenever they run on PostgreSQL (on it only with
# ``partitioned(only=True)``).
PARTITIONED = "postgresql-partitioned"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        action="append",
        choices=[*BACKENDS, PARTITIONED],
        help="Run database tests only on this backend (repeatable). Default: both.",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        chosen = list(metafunc.config.getoption("--backend") or BACKENDS)
        mark = metafunc.definition.get_closest_marker("partitioned")
        if mark is not None and "postgresql" in chosen and PARTITIONED not in chosen:
            chosen.append(PARTITIONED)
        if mark is None and PARTITIONED in chosen:
            chosen.remove(PARTITIONED)
        if mark is not None and mark.kwargs.get("only"):
            chosen = [b for b in chosen if b == PARTITIONED]
        metafunc.parametrize("backend", chosen, scope="session")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test touches the user's default database or environment."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("LOYALTYCTL_DB", raising=False)
    monkeypatch.setenv("LOYALTYCTL_BUSY_TIMEOUT", "10")
    monkeypatch.setenv("NO_COLOR", "1")


def assert_models_match_schema(engine: Engine) -> None:
    """`alembic check`: the models and the database's migrated schema agree."""
    from alembic import command

    from loyaltyctl.store.migrate import alembic_config

    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.check(cfg)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    from tests.pgcluster import start_cluster

    cluster = start_cluster()
    try:
        admin = create_engine(cluster.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE loyaltyctl_template"))
        admin.dispose()
        engine = make_engine(cluster.url("loyaltyctl_template"))
        upgrade(engine)
        engine.dispose()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_partitioned(pg_cluster: Any) -> Any:
    """A second template in the session's cluster: the migrated schema partitioned by
    member."""
    from tests.partitioned import partition

    admin = create_engine(pg_cluster.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE loyaltyctl_partitioned TEMPLATE loyaltyctl_template"))
    admin.dispose()
    engine = make_engine(pg_cluster.url("loyaltyctl_partitioned"))
    with engine.begin() as conn:
        partition(conn)
    engine.dispose()
    return pg_cluster


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


_counter = itertools.count()


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database of the backend under test."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "loyalty.db"
        shutil.copy(template, path)
        yield f"sqlite:///{path}"
        return
    template_db = "loyaltyctl_template"
    if backend == PARTITIONED:
        template_db = "loyaltyctl_partitioned"
        request.getfixturevalue("pg_partitioned")
    cluster = request.getfixturevalue("pg_cluster")
    name = f"t_{os.getpid()}_{next(_counter)}"
    admin = create_engine(cluster.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name} TEMPLATE {template_db}"))
    yield cluster.url(name)
    if backend == PARTITIONED:
        from tests.partitioned import strays

        # Whatever the scenario did, each row is still with its member and each key in
        # its key table.
        layout = create_engine(cluster.url(name))
        with layout.connect() as conn:
            found = strays(conn)
        layout.dispose()
        assert found == []
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


# Typer's CliRunner builds the Click command tree on every call, most of a call's time;
# the tree of one app object is the same every time, so it is built once per process
# (typer is pinned to a minor version, whose testing module has this seam).
typer.testing._get_command = functools.lru_cache(maxsize=16)(typer.testing._get_command)  # type: ignore[attr-defined]


class Cli:
    """Runs loyaltyctl in-process through Typer's CliRunner against one database."""

    def __init__(self, db: str) -> None:
        self.db = db
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int | None = 0) -> Any:
        result = self.runner.invoke(app, ["--db", self.db, *args], catch_exceptions=False)
        if code is not None:
            assert result.exit_code == code, (
                f"exit {result.exit_code} != {code} for {args}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def json(self, *args: str, code: int = 0) -> Any:
        import json

        result = self(*args, "--json", code=code)
        return json.loads(result.stdout)

    def check(self) -> None:
        """The ledger invariants hold: run after every scenario."""
        data = self.json("db", "check")
        assert data == {"ok": True, "problems": []}


@pytest.fixture
def cli(db_url: str) -> Cli:
    return Cli(db_url)


def write_program(tmp_path: Path, text_: str, name: str = "program.toml") -> Path:
    path = tmp_path / name
    path.write_text(text_, encoding="utf-8")
    return path


@pytest.fixture
def deli(cli: Cli) -> Cli:
    """The worked-examples program of docs/ledger.md, loaded."""
    cli("program", "load", str(PROGRAMS / "deli.toml"))
    return cli
