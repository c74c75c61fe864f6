"""A throwaway PostgreSQL server for tests: a cluster made with ``initdb`` in a temporary directory, listening on a
free port of 127.0.0.1 only, stopped and deleted afterwards.

The tests start it themselves (CI only installs the distribution's ``postgresql`` package and never starts its
service), so a developer with PostgreSQL installed runs exactly what CI runs. The fixtures skip, with the reason,
only where PostgreSQL's binaries or the psycopg driver are missing. Use them from a test module with
``import postgres`` and ``postgres_url = postgres.postgres_url``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HOST = "127.0.0.1"
"""The only address the server listens on and the tests connect to."""
SUPERUSER = "postgres"
"""The cluster's superuser (``initdb -U``); local connections are trusted, so it has no password."""


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with both ``initdb`` and ``pg_ctl`` (Debian's layout), else
    the directory of ``initdb`` on PATH (other distributions, Homebrew); None when PostgreSQL is not installed."""
    candidates = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    candidates.sort(key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parent.name.split(".")], reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    return next((d for d in candidates if (d / "pg_ctl").is_file()), None)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    """A running throwaway cluster; :meth:`create_database` makes a fresh database for one test."""

    port: int
    directory: Path

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database``, through psycopg 3."""
        return f"postgresql+psycopg://{SUPERUSER}@{HOST}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(host=HOST, port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _as_owner(owner: str | None, command: list[str]) -> list[str]:
    """``command`` run as ``owner`` when we are root: the server refuses to run as root."""
    return ["runuser", "-u", owner, "--", *command] if owner else command


def _start(bin_dir: Path) -> tuple[PostgresServer, str | None]:
    """initdb and pg_ctl start a cluster in a fresh temporary directory; the server and the user it runs as."""
    owner = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError:
            pytest.skip("the tests run as root and there is no 'postgres' system user to run PostgreSQL as")
        owner = SUPERUSER
    # Under /tmp itself, not pytest's tmp_path: pytest's directories are private to root, and the server runs as
    # the postgres user when we are root.
    directory = Path(tempfile.mkdtemp(prefix="dlbench-pg-"))
    if owner:
        shutil.chown(directory, owner, owner)
    data = directory / "data"
    run = {"capture_output": True, "text": True, "timeout": 120}
    init = subprocess.run(_as_owner(owner, [str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust",
                                            "-E", "UTF8", "--no-sync"]), **run)
    if init.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {init.stdout}{init.stderr}")
    for _ in range(3):  # another process may take the free port between our check and the server's bind
        port = free_port()
        options = f"-p {port} -k {directory} -c listen_addresses={HOST} -c fsync=off -c synchronous_commit=off " \
                  f"-c full_page_writes=off"
        start = subprocess.run(_as_owner(owner, [str(bin_dir / "pg_ctl"), "-D", str(data), "-l",
                                                 str(directory / "server.log"), "-w", "-t", "60", "-o", options,
                                                 "start"]), **run)
        if start.returncode == 0:
            return PostgresServer(port, directory), owner
    log = (directory / "server.log").read_text(errors="replace") if (directory / "server.log").exists() else ""
    shutil.rmtree(directory, ignore_errors=True)
    raise RuntimeError(f"pg_ctl could not start PostgreSQL: {start.stdout}{start.stderr}\n{log[-2000:]}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster for the test session (one per xdist worker)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb or initdb on PATH); "
                    "install the postgresql package to run these tests")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("the psycopg driver is not installed: pip install 'psycopg[binary]' (it is in the dev extra)")
    server, owner = _start(bin_dir)
    try:
        yield server
    finally:
        subprocess.run(_as_owner(owner, [str(bin_dir / "pg_ctl"), "-D", str(server.directory / "data"), "-m",
                                         "immediate", "-w", "stop"]), capture_output=True, timeout=120)
        shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The SQLAlchemy URL of a fresh, empty database of the session's server, one per test."""
    return postgres_server.create_database(f"dlbench_{uuid.uuid4().hex[:12]}")
