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
    options: str = ""

    def url(self, database: str) -> str:
        """A psycopg URL for ``database`` on this server."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """Stop the server immediately and delete its files."""
        self.stop_immediately(check=False)
        shutil.rmtree(self.directory, ignore_errors=True)

    def stop_immediately(self, *, check: bool = True) -> None:
        """``pg_ctl stop -m immediate``: abort every backend without a checkpoint, as a crash would."""
        subprocess.run(
            [*self.run_as, _binary("pg_ctl"), "-D", str(self.directory / "data"), "-m", "immediate", "-w", "stop"],
            check=check, capture_output=True,
        )

    def start(self) -> None:
        """Start the (stopped) cluster again with its options; returns once it accepts connections."""
        subprocess.run(
            [*self.run_as, _binary("pg_ctl"), "-D", str(self.directory / "data"), "-o", self.options,
             "-l", str(self.directory / "server.log"), "-w", "start"],
            check=True, capture_output=True,
        )


def start_postgres(*, durable: bool = False) -> PostgresServer:
    """initdb, start on a free loopback port, and wait until it accepts connections.

    ``durable`` keeps fsync and synchronous commit on, so a commit PostgreSQL has
    acknowledged survives a crash or an immediate-mode stop (the chaos tests rely on it).
    """
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
        [*run_as, _binary("initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8",
         *([] if durable else ["--no-sync"])],
        check=True, capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {directory} -c max_connections=200"
    if not durable:
        # Durability is pointless for a throwaway test cluster; speed is not.
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    else:
        options += " -c fsync=on -c synchronous_commit=on -c full_page_writes=on"
    server = PostgresServer(directory=directory, port=port, user=user, run_as=run_as, options=options)
    server.start()
    return server


def terminate_backend(url: str, pid: int) -> bool:
    """End one server session from another, as a restart or an administrator would; waits until it has ended."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True) as admin:
        return bool(admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()[0])  # type: ignore[index]
