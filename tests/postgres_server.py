"""A throwaway PostgreSQL server for the test session: initdb into a temporary folder.

PostgreSQL refuses to run as root, so when the tests run as root (CI containers do)
the cluster is created and started as the ``postgres`` system user that Debian's
server package creates. The server listens on 127.0.0.1 only, on a free port.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SEARCH_DIRECTORIES = ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin")


def _binary(name: str) -> str:
    for directory in SEARCH_DIRECTORIES:
        candidate = Path(directory) / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found; run 'make test', which installs the PostgreSQL server")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PostgresServer:
    """A running cluster; ``url(database)`` gives a SQLAlchemy URL for one database."""

    directory: Path
    port: int
    user: str
    run_as: list[str]

    def url(self, database: str) -> str:
        """A psycopg URL for ``database`` on this server."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """Stop the server immediately and delete its files."""
        subprocess.run(
            [*self.run_as, _binary("pg_ctl"), "-D", str(self.directory / "data"), "-m", "immediate", "stop"],
            check=False, capture_output=True,
        )
        shutil.rmtree(self.directory, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """initdb, start on a free loopback port, and wait until it accepts connections."""
    directory = Path(tempfile.mkdtemp(prefix="alliance-pg-"))
    run_as: list[str] = []
    user = pwd.getpwuid(os.geteuid()).pw_name
    if os.geteuid() == 0:
        user = "postgres"
        shutil.chown(directory, user=user)
        run_as = ["runuser", "-u", user, "--"]
    data = directory / "data"
    port = _free_port()
    subprocess.run(
        [*run_as, _binary("initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync"],
        check=True, capture_output=True,
    )
    # Durability is pointless for a throwaway test cluster; speed is not.
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {directory} -c fsync=off -c synchronous_commit=off " \
              "-c full_page_writes=off -c max_connections=200"
    subprocess.run(
        [*run_as, _binary("pg_ctl"), "-D", str(data), "-o", options, "-l", str(directory / "server.log"), "-w", "start"],
        check=True, capture_output=True,
    )
    return PostgresServer(directory=directory, port=port, user=user, run_as=run_as)
