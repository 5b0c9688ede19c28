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
import time
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


def _run_as_owner(server: PostgresServer, directory: Path) -> None:
    """Give ``directory`` to the user the server runs as (when the tests run as root)."""
    if server.run_as:
        shutil.chown(directory, user=server.user)


def start_replica(primary: PostgresServer) -> PostgresServer:
    """A streaming hot standby of ``primary`` (``pg_basebackup -R``), started on its own port.

    The replica takes the primary's options but its own port and socket folder; it
    follows the primary from the moment of the base backup.
    """
    directory = Path(tempfile.mkdtemp(prefix="alliance-pg-replica-"))
    _run_as_owner(primary, directory)
    subprocess.run(
        [*primary.run_as, _binary("pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", primary.user,
         "-D", str(directory / "data"), "-R", "-X", "stream", "--checkpoint=fast", "--no-sync"],
        check=True, capture_output=True, timeout=120,
    )
    port = _free_port()
    options = primary.options.replace(f"-p {primary.port}", f"-p {port}").replace(
        f"-k {primary.directory}", f"-k {directory}")
    replica = PostgresServer(directory=directory, port=port, user=primary.user, run_as=primary.run_as,
                             options=options)
    replica.start()
    return replica


@dataclass
class PgBouncer:
    """A running PgBouncer in front of one server; ``url(database)`` reaches any of its databases."""

    directory: Path
    port: int
    user: str
    process: subprocess.Popen  # type: ignore[type-arg]

    def url(self, database: str) -> str:
        """A psycopg URL for ``database`` through this PgBouncer."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """Stop PgBouncer (SIGTERM, then SIGKILL if it lingers) and delete its files."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


def _pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if found is None:
        raise RuntimeError("pgbouncer not found; install it (Debian: apt-get install pgbouncer)")
    return found


def start_pgbouncer(server: PostgresServer, *, pool_mode: str = "transaction", pool_size: int = 2,
                    settings: dict[str, str] | None = None) -> PgBouncer:
    """PgBouncer on a free loopback port in front of ``server``, every database passed through.

    ``pool_size`` server connections per database and user are shared by all clients,
    and handed out round robin (``server_round_robin``) so that consecutive
    transactions of one client land on different server connections, as they do under
    load. Runs as the server's user (PgBouncer refuses root). ``settings`` adds or
    overrides lines of the ``[pgbouncer]`` section.
    """
    directory = Path(tempfile.mkdtemp(prefix="alliance-pgbouncer-"))
    port = _free_port()
    lines = {
        "listen_addr": "127.0.0.1", "listen_port": str(port), "unix_socket_dir": "",
        "auth_type": "trust", "auth_file": str(directory / "userlist.txt"),
        "pool_mode": pool_mode, "default_pool_size": str(pool_size),
        "max_client_conn": "500", "server_round_robin": "1",
        "logfile": str(directory / "pgbouncer.log"), "pidfile": str(directory / "pgbouncer.pid"),
        **(settings or {}),
    }
    (directory / "userlist.txt").write_text(f'"{server.user}" ""\n')
    (directory / "pgbouncer.ini").write_text(
        f"[databases]\n* = host=127.0.0.1 port={server.port}\n\n[pgbouncer]\n"
        + "".join(f"{name} = {value}\n" for name, value in lines.items()))
    for path in (directory, directory / "userlist.txt", directory / "pgbouncer.ini"):
        _run_as_owner(server, path)
    process = subprocess.Popen([*server.run_as, _pgbouncer_binary(), str(directory / "pgbouncer.ini")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    bouncer = PgBouncer(directory=directory, port=port, user=server.user, process=process)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return bouncer
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                bouncer.stop()
                raise RuntimeError(f"PgBouncer did not start: {process.stderr.read().decode()[-2000:]}") from None
            time.sleep(0.05)
