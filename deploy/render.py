"""Every configuration file and systemd unit of one host, rendered from ``deploy/templates/``.

The same templates serve real hosts and ``make cluster``: only the ``Layout`` differs
(where files live: under ``/`` on a real host, under the host's own folder locally).

For real hosts::

    python -m deploy.render new-secrets --out secrets.json          # once per cluster, keep it safe
    python -m deploy.render hosts --inventory inventory.toml --secrets secrets.json --out build/deploy

writes ``build/deploy/<host>/etc/...``: copy each tree onto its host (see docs/operations.md,
"Running the same configuration on real hosts").
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

import jinja2

from deploy.secrets import Secrets, scram_sha_256_verifier
from deploy.topology import CLIENT, DB, HUB, LB, Host, Topology

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = Path(__file__).resolve().parent / "templates"
# Static, not templated: the same rules on every deployment (docs/monitoring.md).
ALERT_RULES = Path(__file__).resolve().parent / "prometheus" / "alliance-alerts.yml"
SETTING_PREFIX = "ALLIANCE_"


@dataclass(frozen=True)
class Layout:
    """Where things are on the hosts. ``hosts_root`` set: each host's files under ``hosts_root/<host>``."""

    app_dir: str = "/opt/alliance"
    venv_dir: str = "/opt/alliance/venv"
    # Shared by the database hosts (a network file system here; or replace archive-wal.sh).
    wal_archive_dir: str = "/srv/wal-archive"
    backup_scripts_dir: str = "/opt/alliance/deploy/backup"
    pg_bin_dir: str = "/usr/lib/postgresql/15/bin"
    hub_user: str = "alliance"
    hub_group: str = "alliance"
    haproxy_log: str = "/dev/log local0"
    # Real hosts: PgBouncer logs to the journal (stderr); locally also to a file.
    pgbouncer_logfile: bool = False
    # A PEM file with the certificate and its key: HAProxy then also serves HTTPS.
    tls_pem: str | None = None
    watchdog_mode: str = "automatic"
    # host:port of the operator's Alertmanager: Prometheus sends its alerts there (else they
    # are only on its /alerts page).
    alertmanager: str | None = None
    hosts_root: str | None = None

    def root(self, host: Host) -> str:
        """The prefix of every path on ``host``: "" on a real host."""
        return "" if self.hosts_root is None else f"{self.hosts_root}/{host.name}"


@dataclass(frozen=True)
class Tuning:
    """Sizes, kept small for `make cluster` (seven hosts on two cores); raise them for real hosts."""

    gunicorn_workers: int = 2
    gunicorn_threads: int = 2
    # Connections per hub process (and as many overflow), to the local PgBouncer.
    hub_pool_size: int = 3
    replica_max_lag_s: int = 10
    pgbouncer_pool_size: int = 8
    postgres_max_connections: int = 100
    postgres_shared_buffers: str = "32MB"
    postgres_effective_cache_size: str = "256MB"


@dataclass(frozen=True)
class RenderedFile:
    """One file for one host: its absolute path there, content, mode and owner."""

    path: str
    content: str
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"


@dataclass(frozen=True)
class Directory:
    """A folder a host's services need, with its owner (created by `make cluster`; by the packages on real hosts)."""

    path: str
    owner: str
    mode: int = 0o755
    group: str | None = None


def hub_settings() -> frozenset[str]:
    """Every ``ALLIANCE_*`` setting the hub in this checkout knows (it refuses any other)."""
    from alliance.config import Settings

    return frozenset(SETTING_PREFIX + item.name.upper() for item in fields(Settings))


def environment_value(value: object) -> str:
    """A value as systemd's EnvironmentFile reads it: double-quoted, newlines kept, \\ " ` $ escaped."""
    text = str(value)
    for special in ("\\", '"', "`", "$"):
        text = text.replace(special, "\\" + special)
    return f'"{text}"'


def read_environment_file(text: str) -> dict[str, str]:
    """Parse what ``environment_value`` writes (and plain KEY=value lines), as systemd would."""
    result: dict[str, str] = {}
    position, length = 0, len(text)
    while position < length:
        line_end = text.find("\n", position)
        line_end = length if line_end < 0 else line_end
        stripped = text[position:line_end].strip()
        if not stripped or stripped.startswith(("#", ";")):
            position = line_end + 1
            continue
        equals = text.index("=", position)
        name = text[position:equals].strip()
        position = equals + 1
        if position < length and text[position] == '"':
            position += 1
            value = []
            while text[position] != '"':
                if text[position] == "\\" and text[position + 1] in '\\"`$':
                    position += 1
                value.append(text[position])
                position += 1
            result[name] = "".join(value)
            position = text.find("\n", position)
            position = length if position < 0 else position + 1
        else:
            result[name] = text[position:line_end].strip()
            position = line_end + 1
    return result


def _environment(known_settings: frozenset[str]) -> jinja2.Environment:
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                                     keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)

    def setting(name: str, value: object) -> str:
        variable = SETTING_PREFIX + name
        if variable not in known_settings:
            # The hub would refuse to start with it: say so now, not on every hub host later.
            raise ValueError(f"hub.env.j2 sets {variable}, which the hub in this checkout does not know "
                             "(see docs/configuration.md)")
        return f"{variable}={environment_value(value)}"

    environment.globals["setting"] = setting
    return environment


def render_host(topology: Topology, host: Host, layout: Layout, secrets: Secrets, *, tuning: Tuning = Tuning(),
                known_settings: frozenset[str] | None = None) -> list[RenderedFile]:
    """Every file ``host`` needs, for its role (``known_settings``: the hub's, by default this checkout's)."""
    environment = _environment(hub_settings() if known_settings is None else known_settings)
    root = layout.root(host)
    app = {"user": "alliance", "database": "alliance",
           # A fixed salt per password: rendering twice gives the same file.
           "password_verifier": scram_sha_256_verifier(
               secrets.app_password,
               salt=hashlib.sha256(b"alliance role salt " + secrets.app_password.encode()).digest()[:16])}
    client_connections = (tuning.gunicorn_workers + 1) * tuning.hub_pool_size * 2
    context = {
        "cluster": topology.name, "subnet": str(topology.subnet), "host": host, "lb": topology.lb,
        "hubs": topology.hubs, "dbs": topology.dbs, "ports": topology.ports, "root": root, "layout": layout,
        "secrets": secrets, "app": app,
        "postgres": {"max_connections": tuning.postgres_max_connections,
                     "shared_buffers": tuning.postgres_shared_buffers,
                     "effective_cache_size": tuning.postgres_effective_cache_size},
        "gunicorn": {"workers": tuning.gunicorn_workers, "threads": tuning.gunicorn_threads},
        "hub": {"pool_size": tuning.hub_pool_size, "replica_max_lag_s": tuning.replica_max_lag_s},
        "hub_server_maxconn": tuning.gunicorn_workers * tuning.gunicorn_threads * 2,
        "pgbouncer": {"default_pool_size": tuning.pgbouncer_pool_size, "client_connections": client_connections},
    }

    def file(template: str, path: str, **options: object) -> RenderedFile:
        return RenderedFile(path=f"{root}{path}", content=environment.get_template(template).render(context),
                            **options)  # type: ignore[arg-type]

    if host.role == DB:
        return [
            file("etcd.env.j2", "/etc/default/etcd"),
            file("patroni.yml.j2", "/etc/patroni/config.yml", mode=0o640, group="postgres"),
            file("post-bootstrap.sh.j2", "/etc/patroni/post-bootstrap.sh", mode=0o750, group="postgres"),
        ]
    if host.role == HUB:
        return [
            file("pgbouncer.ini.j2", "/etc/pgbouncer/pgbouncer.ini", mode=0o640, group="postgres"),
            file("userlist.txt.j2", "/etc/pgbouncer/userlist.txt", mode=0o640, group="postgres"),
            file("hub.env.j2", "/etc/alliance/hub.env", mode=0o640, group=layout.hub_group),
            file("systemd/alliance-hub.service.j2", "/etc/systemd/system/alliance-hub.service"),
            file("systemd/alliance-scheduler.service.j2", "/etc/systemd/system/alliance-scheduler.service"),
            file("systemd/alliance-webhooks.service.j2", "/etc/systemd/system/alliance-webhooks.service"),
            file("systemd/alliance-db-upgrade.service.j2", "/etc/systemd/system/alliance-db-upgrade.service"),
        ]
    if host.role == LB:
        return [
            file("haproxy.cfg.j2", "/etc/haproxy/haproxy.cfg"),
            file("prometheus.yml.j2", "/etc/prometheus/prometheus.yml"),
            file("prometheus.env.j2", "/etc/default/prometheus"),
            RenderedFile(path=f"{root}/etc/prometheus/alliance-alerts.yml", content=ALERT_RULES.read_text()),
            # Prometheus reads it as the bearer token of its alliance-hub scrape job (no newline).
            RenderedFile(path=f"{root}/etc/prometheus/alliance-hub.token", content=secrets.metrics_token, mode=0o600,
                         owner="prometheus", group="prometheus"),
        ]
    if host.role == CLIENT:
        return []
    raise ValueError(f"unknown role {host.role!r}")


def host_directories(host: Host, layout: Layout) -> list[Directory]:
    """The folders ``host``'s services write to (made by Debian's packages, or systemd, on real hosts)."""
    root = layout.root(host)
    if host.role == DB:
        return [Directory(f"{root}/var/lib/etcd", "etcd", 0o700), Directory(f"{root}/var/lib/postgresql", "postgres"),
                Directory(f"{root}/var/lib/postgresql/15", "postgres", 0o700),
                Directory(f"{root}/run/postgresql", "postgres", 0o2775),
                Directory(f"{root}/var/log/postgresql", "postgres", 0o750)]
    if host.role == HUB:
        return [Directory(f"{root}/run/pgbouncer", "postgres"), Directory(f"{root}/var/log/pgbouncer", "postgres"),
                Directory(f"{root}/var/lib/alliance", layout.hub_user, 0o750),
                # alliance-hub.service's RuntimeDirectory: gunicorn's workers' metrics files.
                Directory(f"{root}/run/alliance/metrics", layout.hub_user, 0o700)]
    if host.role == LB:
        return [Directory(f"{root}/run/haproxy", "root"),
                Directory(f"{root}/var/lib/prometheus/metrics2", "prometheus", 0o750)]
    return []


def write_files(files: list[RenderedFile], *, destination_root: Path | None = None, chown: bool = True) -> None:
    """Write rendered files (under ``destination_root`` if given), with their modes and, as root, owners."""
    for item in files:
        target = Path(item.path) if destination_root is None else destination_root / item.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(item.content)
        os.chmod(target, item.mode)
        if chown and os.geteuid() == 0:
            shutil.chown(target, user=item.owner, group=item.group)


def _layout_from(data: dict[str, object]) -> Layout:
    known = {item.name for item in fields(Layout)} - {"hosts_root"}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown [layout] keys: {', '.join(sorted(unknown))}")
    return replace(Layout(), **data)  # type: ignore[arg-type]


def _tuning_from(data: dict[str, object]) -> Tuning:
    unknown = set(data) - {item.name for item in fields(Tuning)}
    if unknown:
        raise ValueError(f"unknown [tuning] keys: {', '.join(sorted(unknown))}")
    return replace(Tuning(), **data)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.render", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    new_secrets = commands.add_parser("new-secrets", help="make a cluster's passwords and hub keys (JSON, mode 0600)")
    new_secrets.add_argument("--out", type=Path, required=True)
    new_secrets.add_argument("--alliance", default=str(Path(sys.executable).parent / "alliance"),
                             help="the hub's alliance program (default: next to this Python)")
    hosts = commands.add_parser("hosts", help="render every host's files from an inventory")
    hosts.add_argument("--inventory", type=Path, required=True)
    hosts.add_argument("--secrets", type=Path, required=True)
    hosts.add_argument("--out", type=Path, required=True)
    arguments = parser.parse_args(argv)
    if arguments.command == "new-secrets":
        if arguments.out.exists():
            parser.error(f"{arguments.out} exists; a cluster's secrets are made once")
        Secrets.generate(arguments.alliance).save(arguments.out)
        print(f"wrote {arguments.out}")
        return 0
    inventory = tomllib.loads(arguments.inventory.read_text())
    topology = Topology.from_inventory(arguments.inventory)
    layout = _layout_from(inventory.get("layout", {}))
    tuning = _tuning_from(inventory.get("tuning", {}))
    secrets = Secrets.load(arguments.secrets)
    for host in topology.hosts:
        files = render_host(topology, host, layout, secrets, tuning=tuning)
        write_files(files, destination_root=arguments.out / host.name, chown=False)
        print(f"{host.name} ({host.role}, {host.address}): {', '.join(item.path for item in files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
