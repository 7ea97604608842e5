"""A throwaway PostgreSQL cluster for the test run: initdb in a temp dir, a unix socket,
started as an unprivileged user, stopped and removed afterwards."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


def find_bindir() -> Path | None:
    for candidate in [os.environ.get("PG_BINDIR", "")] + sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), reverse=True
    ):
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _as_user(cmd: list[str], user: str | None) -> list[str]:
    if user is None:
        return cmd
    return ["runuser", "-u", user, "--", *cmd]


@dataclass
class Cluster:
    bindir: Path
    root: Path
    user: str | None
    port: int = 54329

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def socketdir(self) -> Path:
        return self.root / "sock"

    @property
    def role(self) -> str:
        """The database role connections use: the cluster's owner."""
        return self.user or os.environ.get("USER") or "postgres"

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy's URL of a database of the cluster."""
        return f"postgresql+psycopg://{self.role}@/{dbname}?host={self.socketdir}&port={self.port}"

    def dsn(self, dbname: str = "postgres") -> str:
        """The same database's URL for psycopg (libpq) itself."""
        return self.url(dbname).replace("postgresql+psycopg://", "postgresql://", 1)

    def start(self) -> None:
        self.socketdir.mkdir(parents=True, exist_ok=True)
        if self.user:
            shutil.chown(self.root, self.user)
            shutil.chown(self.socketdir, self.user)
        subprocess.run(
            _as_user(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.datadir),
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "-N",
                ],
                self.user,
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        opts = (
            f"-k {self.socketdir} -p {self.port} -c listen_addresses='' -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        subprocess.run(
            _as_user(
                [
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.datadir),
                    "-o",
                    opts,
                    "-w",
                    "-l",
                    str(self.root / "log"),
                    "start",
                ],
                self.user,
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        subprocess.run(
            _as_user(
                [
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.datadir),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                self.user,
            ),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> Cluster:
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError(
            "PostgreSQL binaries not found: run `make pg-install` (apt-get install postgresql)"
        )
    user = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="loyaltyctl-pg-"))
    os.chmod(root, 0o755)
    port = 20000 + os.getpid() % 20000
    cluster = Cluster(bindir=bindir, root=root, user=user, port=port)
    cluster.start()
    return cluster
