"""The production topology on one machine: one Linux network namespace per host.

    python -m deploy.cluster up       # what `make cluster` runs
    python -m deploy.cluster status
    python -m deploy.cluster down     # what `make cluster-down` runs

Hosts (``Topology.local``): a load balancer ``lb`` (HAProxy, Prometheus), hub hosts ``hub1..3``
(gunicorn, ``alliance scheduler``, PgBouncer), database hosts ``db1..3`` (etcd, Patroni,
PostgreSQL 15) and ``client`` (for tills and test harnesses), in namespaces
``<prefix>-<host>``, joined by a bridge inside ``<prefix>-net`` on a subnet (10.77.0.0/24)
that exists only inside those namespaces. Each host runs the very files
``deploy.render`` makes for real hosts, rendered under ``<state>/hosts/<host>/``; the
hub's processes run their systemd units' ``ExecStart`` as those units' users. The only
thing in the machine's own namespace is a forwarder on 127.0.0.1 to the load balancer.

``Cluster`` is what the chaos harness and the tests drive::

    cluster = Cluster()                      # the `make cluster` one; Cluster(prefix=...) for another
    cluster.up()                             # or attach to a running one: Cluster() then cluster.status()
    cluster.primary()                        # Patroni's leader, from its REST API
    cluster.kill_postmaster()                # SIGKILL the primary's postmaster
    cluster.wait_for_primary(other_than="db1", timeout_s=30)
    cluster.stop_host("hub2"); cluster.start_host("hub2"); cluster.wait_hub_ready("hub2")
    cluster.cut_link("hub3"); cluster.restore_link("hub3")
    cluster.partition("db1", ["db2", "db3"]); cluster.heal("db1")
    cluster.switchover()                     # patronictl switchover to the synchronous standby
    cluster.in_client(function, ...)         # run Python inside the client's namespace (tills)
    cluster.run("hub1", [...])               # a command inside a host's namespace
    cluster.wait_prometheus_targets_up()     # Prometheus on lb scrapes every hub, scheduler and Patroni
    cluster.down()

Every process this starts is recorded (pid and start time) under ``<state>/run``;
``down`` stops those, then anything left in the cluster's namespaces, deletes the
namespaces and the state folder.
"""

from __future__ import annotations

import argparse
import configparser
import datetime
import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

from deploy import netns
from deploy.render import (
    Layout,
    Tuning,
    host_directories,
    hub_settings,
    read_environment_file,
    render_host,
    write_files,
)
from deploy.secrets import Secrets
from deploy.topology import DB, HUB, LB, Host, Topology

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STATE = ROOT / "test-artifacts" / "cluster"
DEFAULT_FORWARD_PORT = 8700
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REQUIRED_PROGRAMS = {"patroni": "patroni", "patronictl": "patroni", "etcd": "etcd-server", "etcdctl": "etcd-client",
                     "haproxy": "haproxy", "pgbouncer": "pgbouncer", "socat": "socat", "setpriv": "util-linux",
                     "prometheus": "prometheus"}
T = TypeVar("T")


class ClusterError(RuntimeError):
    """Something about the cluster that a person must act on; the message says what."""


@dataclass(frozen=True)
class Service:
    """One long-running process of one host, as its systemd unit would run it."""

    host: Host
    name: str
    argv: tuple[str, ...]
    user: str = "root"
    environment: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    stop_signal: int = signal.SIGTERM
    stop_timeout_s: float = 20.0


@dataclass
class Summary:
    """What `up` made, for printing."""

    lb_url: str
    forward_url: str
    seconds: float
    seed_output: str
    demo_keys: Path
    members: list[dict[str, object]]

    def text(self, cluster: "Cluster") -> str:
        roles = ", ".join(f"{member['name']} {member['role']} ({member['state']})" for member in self.members)
        seed = self.seed_output.strip()
        return "\n".join([
            f"cluster '{cluster.prefix}' is up in {self.seconds:.0f} s: {len(cluster.topology.hubs)} hub hosts, "
            f"{len(cluster.topology.dbs)} database hosts, one load balancer",
            f"  load balancer: {self.lb_url}  (inside the namespaces, e.g. "
            f"ip netns exec {cluster.namespace('client')} curl {self.lb_url}/readyz)",
            f"  from this machine: {self.forward_url}  (127.0.0.1 forwarder to the load balancer)",
            f"  web console: {self.forward_url}/console/   API reference: {self.forward_url}/docs",
            f"  HAProxy statistics: http://{cluster.topology.lb.address}:{cluster.topology.ports.haproxy_stats}/ "
            f"(inside the namespaces)",
            f"  Prometheus: {cluster.prometheus_url}/  (inside the namespaces; scrape targets at /targets, "
            f"alerts at /alerts)",
            f"  PostgreSQL (Patroni): {roles}",
            f"  demo partners' private keys: {self.demo_keys}",
            f"  state, logs and rendered configuration: {cluster.state_dir}",
            "",
            "demo data (alliance seed-demo):",
            *("  " + line for line in seed.splitlines()),
            "",
            f"stop it all with: make cluster-down   (python -m deploy.cluster down{cluster.cli_options()})",
        ])


class Cluster:
    """One local cluster: its namespaces, processes, files, and the failures the chaos harness injects."""

    def __init__(self, prefix: str = "alliance", state_dir: str | Path | None = None, subnet: str = "10.77.0.0/24",
                 hubs: int = 3, forward_port: int = DEFAULT_FORWARD_PORT, tuning: Tuning = Tuning()) -> None:
        self.prefix = prefix
        self.state_dir = Path(state_dir) if state_dir else (DEFAULT_STATE if prefix == "alliance"
                                                             else DEFAULT_STATE.with_name(f"cluster-{prefix}"))
        self.topology = Topology.local(name="alliance", subnet=subnet, hubs=hubs)
        self.forward_port = forward_port
        self.tuning = tuning
        self.layout = Layout(
            app_dir=str(ROOT), venv_dir=str(Path(sys.prefix)), wal_archive_dir=str(self.state_dir / "wal-archive"),
            backup_scripts_dir=str(ROOT / "deploy" / "backup"), hub_user="root", hub_group="root",
            haproxy_log="stdout format raw local0 info", pgbouncer_logfile=True,
            tls_pem=str(self.state_dir / "hosts" / "lb" / "etc" / "haproxy" / "certs" / "alliance.pem"),
            watchdog_mode="off", hosts_root=str(self.state_dir / "hosts"),
        )
        self.secrets_path = self.state_dir / "secrets.json"
        self.log_dir = self.state_dir / "logs"
        self.run_dir = self.state_dir / "run"
        self.seed_instance = self.state_dir / "seed-instance"
        self._children: dict[tuple[str, str], subprocess.Popen[bytes]] = {}

    # Names and places

    def namespace(self, host_name: str) -> str:
        """The network namespace of host ``host_name`` (``net`` is the bridge's)."""
        return f"{self.prefix}-{host_name}"

    @property
    def network_namespace(self) -> str:
        return self.namespace("net")

    def namespaces(self) -> list[str]:
        return [self.namespace(host.name) for host in self.topology.hosts] + [self.network_namespace]

    @property
    def lb_url(self) -> str:
        """The partner API and console, as seen inside the namespaces."""
        return f"http://{self.topology.lb.address}"

    @property
    def prometheus_url(self) -> str:
        """Prometheus on the load balancer (web interface and API), as seen inside the namespaces."""
        return f"http://{self.topology.lb.address}:{self.topology.ports.prometheus}"

    @property
    def forward_url(self) -> str:
        """The partner API and console, from this machine's 127.0.0.1."""
        recorded = self.run_dir / "forward-port"
        port = int(recorded.read_text()) if recorded.exists() else self.forward_port
        return f"http://127.0.0.1:{port}"

    @property
    def demo_keys(self) -> Path:
        """The demo partners' private keys (``<key id>.pem``), written by ``alliance seed-demo``."""
        return self.seed_instance / "demo-keys"

    def root(self, host_name: str) -> Path:
        """The folder standing for ``host_name``'s file system root."""
        return Path(self.layout.root(self.topology.host(host_name)))

    def data_dir(self, host_name: str) -> Path:
        return self.root(host_name) / "var" / "lib" / "postgresql" / "15" / self.topology.name

    def patroni_config(self, host_name: str) -> Path:
        return self.root(host_name) / "etc" / "patroni" / "config.yml"

    def hub_environment(self, host_name: str = "hub1") -> dict[str, str]:
        """The ``ALLIANCE_*`` settings of the hub's processes on ``host_name``."""
        return read_environment_file((self.root(host_name) / "etc" / "alliance" / "hub.env").read_text())

    def cli_options(self) -> str:
        return "" if self.prefix == "alliance" else f" --prefix {self.prefix}"

    def secrets(self) -> Secrets:
        return Secrets.load(self.secrets_path)

    # Services

    def services(self, host_name: str) -> list[Service]:
        """The host's long-running processes, in start order (what Debian's and our units run)."""
        host = self.topology.host(host_name)
        root = self.layout.root(host)
        if host.role == DB:
            etcd_environment = read_environment_file(Path(f"{root}/etc/default/etcd").read_text())
            return [
                Service(host, "etcd", ("/usr/bin/etcd",), user="etcd", environment=etcd_environment,
                        stop_timeout_s=10),
                Service(host, "patroni", ("/usr/bin/patroni", f"{root}/etc/patroni/config.yml"), user="postgres",
                        environment={"HOME": f"{root}/var/lib/postgresql"}, stop_timeout_s=40),
            ]
        if host.role == HUB:
            return [
                # Debian's pgbouncer.service stops it with SIGINT: safe shutdown, waiting for transactions.
                Service(host, "pgbouncer", ("/usr/sbin/pgbouncer", f"{root}/etc/pgbouncer/pgbouncer.ini"),
                        user="postgres", stop_signal=signal.SIGINT, stop_timeout_s=15),
                self._unit_service(host, "hub", f"{root}/etc/systemd/system/alliance-hub.service"),
                self._unit_service(host, "scheduler", f"{root}/etc/systemd/system/alliance-scheduler.service"),
                self._unit_service(host, "webhooks", f"{root}/etc/systemd/system/alliance-webhooks.service"),
            ]
        if host.role == LB:
            # Debian's prometheus.service: /usr/bin/prometheus $ARGS, ARGS from /etc/default/prometheus.
            prometheus_arguments = read_environment_file(Path(f"{root}/etc/default/prometheus").read_text())["ARGS"]
            return [
                # Debian's haproxy.service: master-worker mode, master socket for reloads.
                Service(host, "haproxy", ("/usr/sbin/haproxy", "-Ws", "-f", f"{root}/etc/haproxy/haproxy.cfg",
                                          "-p", f"{root}/run/haproxy.pid", "-S", f"{root}/run/haproxy/master.sock"),
                        stop_timeout_s=10),
                Service(host, "prometheus", ("/usr/bin/prometheus", *shlex.split(prometheus_arguments)),
                        user="prometheus", stop_timeout_s=20),
            ]
        return []

    def _unit_service(self, host: Host, name: str, unit_path: str) -> Service:
        unit = read_unit(Path(unit_path))
        environment = read_environment_file(Path(unit["EnvironmentFile"]).read_text())
        for assignment in shlex.split(unit.get("Environment", "")):
            variable, _, value = assignment.partition("=")
            environment[variable] = value
        return Service(host, name, tuple(shlex.split(unit["ExecStart"])), user=unit.get("User", "root"),
                       environment=environment, cwd=unit.get("WorkingDirectory"),
                       stop_timeout_s=float(unit.get("TimeoutStopSec", "30")))

    def service(self, host_name: str, name: str) -> Service:
        for item in self.services(host_name):
            if item.name == name:
                return item
        raise KeyError(f"{host_name} runs no {name}; it runs {', '.join(s.name for s in self.services(host_name))}")

    def _pid_file(self, host_name: str, name: str) -> Path:
        return self.run_dir / f"{host_name}.{name}.pid"

    def log_path(self, host_name: str, name: str) -> Path:
        """Where a service's standard output and error go."""
        return self.log_dir / f"{host_name}.{name}.log"

    def start(self, host_name: str, name: str) -> int:
        """Start one service in its host's namespace (unless it runs); returns its pid."""
        current = self.pid(host_name, name)
        if current is not None:
            return current
        item = self.service(host_name, name)
        environment = {"PATH": BASE_PATH, "LANG": "C.UTF-8", "HOME": "/root", **item.environment}
        return self._spawn(host_name, name, netns.command(self.namespace(host_name), item.argv, user=item.user),
                           environment, item.cwd)

    def _spawn(self, host_name: str, name: str, argv: Sequence[str], environment: dict[str, str],
               cwd: str | None) -> int:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path(host_name, name).open("ab") as log:
            log.write(f"--- {datetime.datetime.now().isoformat(timespec='seconds')} starting {name}\n".encode())
            log.flush()
            process = subprocess.Popen(list(argv), env=environment, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self._children[(host_name, name)] = process
        self._pid_file(host_name, name).write_text(f"{process.pid} {_start_time(process.pid)}\n")
        return process.pid

    def pid(self, host_name: str, name: str) -> int | None:
        """The pid of a service this cluster started, if it still runs."""
        child = self._children.get((host_name, name))
        if child is not None and child.poll() is not None:
            self._children.pop((host_name, name), None)
        path = self._pid_file(host_name, name)
        try:
            pid_text, start_text = path.read_text().split()
        except (OSError, ValueError):
            return None
        pid = int(pid_text)
        return pid if _start_time(pid) == start_text and _is_live(pid) else None

    def running(self, host_name: str, name: str) -> bool:
        return self.pid(host_name, name) is not None

    def signal(self, host_name: str, name: str, signal_number: int) -> bool:
        """Send a signal to a service's main process; False if it was not running."""
        pid = self.pid(host_name, name)
        if pid is None:
            return False
        os.kill(pid, signal_number)
        return True

    def stop(self, host_name: str, name: str, *, timeout_s: float | None = None) -> None:
        """Stop a service as its unit would (its stop signal, then SIGKILL after the timeout)."""
        item = self.service(host_name, name)
        pid = self.pid(host_name, name)
        if pid is None:
            return
        os.kill(pid, item.stop_signal)
        if not self._wait_gone(host_name, name, item.stop_timeout_s if timeout_s is None else timeout_s):
            self.kill(host_name, name)

    def kill(self, host_name: str, name: str) -> int | None:
        """SIGKILL a service's main process (a crash); returns the pid killed, if any."""
        pid = self.pid(host_name, name)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            self._wait_gone(host_name, name, 10)
        return pid

    def _wait_gone(self, host_name: str, name: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.pid(host_name, name) is not None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def start_host(self, host_name: str) -> None:
        """Start every service of a host (those not running)."""
        for item in self.services(host_name):
            self.start(host_name, item.name)

    def stop_host(self, host_name: str) -> None:
        """Stop a host's services gracefully, last started first."""
        for item in reversed(self.services(host_name)):
            self.stop(host_name, item.name)

    def kill_host(self, host_name: str) -> list[int]:
        """SIGKILL every process in a host's namespace (a power cut); returns their pids."""
        victims = netns.pids(self.namespace(host_name))
        for pid in victims:
            _kill_quietly(pid, signal.SIGKILL)
        for item in self.services(host_name):
            self._wait_gone(host_name, item.name, 10)
        return victims

    # Running things inside hosts

    def run(self, host_name: str, argv: Sequence[str], *, user: str | None = None, check: bool = True,
            timeout: float | None = 120, environment: dict[str, str] | None = None,
            cwd: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside a host's namespace; returns its output."""
        env = {"PATH": BASE_PATH, "LANG": "C.UTF-8", "HOME": "/root", **(environment or {})}
        return netns.run(self.namespace(host_name), argv, user=user, check=check, timeout=timeout, env=env, cwd=cwd)

    def popen(self, host_name: str, argv: Sequence[str], *, user: str | None = None,
              environment: dict[str, str] | None = None, **options: object) -> subprocess.Popen[bytes]:
        """Start a command inside a host's namespace (the caller owns it)."""
        env = {"PATH": BASE_PATH, "LANG": "C.UTF-8", "HOME": "/root", **(environment or {})}
        return subprocess.Popen(netns.command(self.namespace(host_name), argv, user=user), env=env,
                                **options)  # type: ignore[call-overload]

    def alliance(self, arguments: Sequence[str], *, host_name: str = "hub1", check: bool = True,
                 overrides: dict[str, str] | None = None,
                 timeout: float | None = 300) -> subprocess.CompletedProcess[str]:
        """Run the ``alliance`` command on a hub host with that host's settings (and ``overrides``)."""
        environment = {**self.hub_environment(host_name), **(overrides or {})}
        return self.run(host_name, [str(Path(self.layout.venv_dir) / "bin" / "alliance"), *arguments], check=check,
                        environment=environment, cwd=str(ROOT), timeout=timeout)

    def in_namespace(self, host_name: str, function: Callable[..., T], *arguments: object,
                     timeout: float | None = None, **keywords: object) -> T:
        """Call ``function`` in a thread inside ``host_name``'s namespace (sockets it opens are there)."""
        return netns.in_namespace(self.namespace(host_name), function, *arguments, timeout=timeout, **keywords)

    def in_client(self, function: Callable[..., T], *arguments: object, timeout: float | None = None,
                  **keywords: object) -> T:
        """``in_namespace("client", ...)``: where tills and harnesses run."""
        return self.in_namespace("client", function, *arguments, timeout=timeout, **keywords)

    def http(self, url: str, *, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None,
             from_host: str = "client", timeout_s: float = 3.0) -> tuple[int, bytes]:
        """One HTTP request from inside ``from_host``'s namespace: (status, body); OSError if no answer."""
        return self.in_namespace(from_host, _http_request, method, url, body, headers or {}, timeout_s)

    # Patroni's view

    def patroni_views(self, *, from_host: str = "client") -> dict[str, dict[str, object]]:
        """Each answering Patroni's ``GET /cluster``, by database host.

        A Patroni cut off from etcd's quorum answers with what it last knew, so views can differ.
        """
        views = {}
        for db in self.topology.dbs:
            try:
                status, body = self.http(f"http://{db.address}:{self.topology.ports.patroni}/cluster",
                                         from_host=from_host, timeout_s=2)
            except OSError:
                continue
            if status == 200:
                views[db.name] = json.loads(body)
        return views

    def members(self) -> list[dict[str, object]]:
        """Patroni's members (name, role leader/sync_standby/replica, state, lag, timeline, ...).

        The view whose leader is the node answering GET /primary, i.e. a current one; while
        there is no primary (mid-failover), any view. ``ClusterError`` if no Patroni answers.
        """
        views = self.patroni_views()
        if not views:
            raise ClusterError("no Patroni answered GET /cluster")
        primary = self.primary()
        for view in views.values():
            leaders = [m["name"] for m in view.get("members", []) if m.get("role") == "leader"]  # type: ignore[union-attr]
            if primary is not None and leaders == [primary]:
                return list(view["members"])  # type: ignore[call-overload]
        return list(next(iter(views.values()))["members"])  # type: ignore[call-overload]

    def primary(self) -> str | None:
        """The member whose own REST API says it is a running primary (GET /primary answers 200)."""
        for db in self.topology.dbs:
            try:
                status, _ = self.http(f"http://{db.address}:{self.topology.ports.patroni}/primary", timeout_s=2)
            except OSError:
                continue
            if status == 200:
                return db.name
        return None

    def sync_standby(self) -> str | None:
        """The synchronous standby Patroni chose, if any."""
        return next((str(m["name"]) for m in self._members_or_empty() if m.get("role") == "sync_standby"), None)

    def replicas(self) -> list[str]:
        return [str(m["name"]) for m in self._members_or_empty() if m.get("role") in ("replica", "sync_standby")]

    def _members_or_empty(self) -> list[dict[str, object]]:
        try:
            return self.members()
        except ClusterError:
            return []

    def wait_for_primary(self, *, other_than: str | None = None, timeout_s: float = 60.0) -> str:
        """Return the primary once there is one (not ``other_than``); ``ClusterError`` after the timeout."""
        return _wait(lambda: (lambda name: name if name and name != other_than else None)(self.primary()),
                     f"a primary{' other than ' + other_than if other_than else ''}", timeout_s)

    def wait_replication(self, *, timeout_s: float = 90.0) -> list[dict[str, object]]:
        """Return Patroni's members once there is a leader, a synchronous standby and every replica streams."""

        def settled() -> list[dict[str, object]] | None:
            members = self._members_or_empty()
            roles = [m.get("role") for m in members]
            replicas = [m for m in members if m.get("role") in ("replica", "sync_standby")]
            healthy = all(m.get("state") in ("running", "streaming") for m in members) and all(
                isinstance(m.get("lag"), int) for m in replicas)
            timelines = {m.get("timeline") for m in members}
            leader = next((m["name"] for m in members if m.get("role") == "leader"), None)
            if (len(members) == len(self.topology.dbs) and roles.count("leader") == 1 and "sync_standby" in roles
                    and len(replicas) == len(self.topology.dbs) - 1 and healthy and len(timelines) == 1
                    and leader == self.primary()):
                return members
            return None

        return _wait(settled, "Patroni's leader, synchronous standby and streaming replicas", timeout_s)

    def switchover(self, candidate: str | None = None, *, timeout_s: float = 60.0) -> str:
        """A planned switchover (``patronictl switchover``) to ``candidate`` (default: the synchronous standby).

        Returns the new primary once its own REST API says so.
        """
        leader = self.wait_for_primary(timeout_s=timeout_s)
        candidate = candidate or _wait(self.sync_standby, "a synchronous standby", timeout_s)
        self.patronictl(candidate, ["switchover", "--leader", leader, "--candidate", candidate, "--force"])
        return self.wait_for_primary(other_than=leader, timeout_s=timeout_s)

    def patronictl(self, host_name: str, arguments: Sequence[str], *,
                   check: bool = True) -> subprocess.CompletedProcess[str]:
        """``patronictl -c <host's config> arguments`` inside a database host's namespace."""
        return self.run(host_name, ["patronictl", "-c", str(self.patroni_config(host_name)), *arguments], check=check,
                        timeout=120)

    def postmaster_pid(self, host_name: str) -> int | None:
        """The pid of PostgreSQL's postmaster on a database host, if it runs."""
        try:
            pid = int((self.data_dir(host_name) / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            return None
        return pid if command.endswith(b"postgres") and _is_live(pid) else None

    def kill_postmaster(self, host_name: str | None = None) -> tuple[str, int]:
        """SIGKILL the postmaster of ``host_name`` (default: the primary); returns (host, pid)."""
        host_name = host_name or self.primary()
        if host_name is None:
            raise ClusterError("no primary to kill")
        pid = self.postmaster_pid(host_name)
        if pid is None:
            raise ClusterError(f"PostgreSQL does not run on {host_name}")
        os.kill(pid, signal.SIGKILL)
        return host_name, pid

    # The network

    def cut_link(self, host_name: str) -> None:
        """Unplug a host: its bridge port goes down; its packets go nowhere, its sockets see silence."""
        netns.set_link(self.network_namespace, host_name, up=False)

    def restore_link(self, host_name: str) -> None:
        netns.set_link(self.network_namespace, host_name, up=True)

    def partition(self, host_name: str, others: Iterable[str]) -> None:
        """Silently drop traffic between ``host_name`` and each of ``others``, both ways."""
        others = list(others)
        host = self.topology.host(host_name)
        netns.drop_traffic_to(self.namespace(host_name), [self.topology.host(o).address for o in others])
        for other in others:
            netns.drop_traffic_to(self.namespace(other), [host.address])

    def heal(self, host_name: str | None = None) -> None:
        """Undo ``partition`` for ``host_name`` (default: every partition)."""
        target = self.topology.host(host_name).address if host_name else None
        for host in self.topology.hosts:
            namespace = self.namespace(host.name)
            dropped = netns.dropped_addresses(namespace)
            if host_name is None or host.name == host_name:
                netns.restore_traffic_to(namespace, dropped)
            else:
                netns.restore_traffic_to(namespace, [address for address in dropped if address == target])

    # HAProxy's view

    def haproxy_command(self, command: str) -> str:
        """A command on HAProxy's admin socket (``show stat``, ``disable server hubs/hub1``, ...)."""
        path = self.root("lb") / "run" / "haproxy" / "admin.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(5)
            connection.connect(str(path))
            connection.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := connection.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def haproxy_servers(self) -> dict[str, dict[str, str]]:
        """``backend/server`` -> HAProxy's ``show stat`` row (``status`` UP, DOWN, MAINT...).

        {} if HAProxy is not up.
        """
        try:
            lines = self.haproxy_command("show stat").splitlines()
        except OSError:
            return {}
        if not lines or not lines[0].startswith("# "):
            return {}
        header = lines[0][2:].split(",")
        result = {}
        for line in lines[1:]:
            if not line:
                continue
            # Read by name; a newer HAProxy may add columns, so lengths are not compared.
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("svname") not in ("FRONTEND", "BACKEND"):
                result[f"{row['pxname']}/{row['svname']}"] = row
        return result

    def wait_hub_ready(self, host_name: str, *, timeout_s: float = 60.0) -> None:
        """Return once the hub on ``host_name`` answers its readiness check and HAProxy sends it requests."""
        host = self.topology.host(host_name)

        def ready() -> bool:
            try:
                status, _ = self.http(f"http://{host.address}:{self.topology.ports.hub}/readyz", timeout_s=3)
            except OSError:
                return False
            return status == 200 and self.haproxy_servers().get(f"hubs/{host_name}", {}).get("status") == "UP"

        _wait(ready, f"the hub on {host_name} to be ready and UP in HAProxy", timeout_s)

    def wait_lb_routes_primary(self, *, timeout_s: float = 60.0) -> str:
        """Return the database host HAProxy's primary port routes to, once there is one."""

        def routed() -> str | None:
            servers = self.haproxy_servers()
            up = [key.split("/")[1] for key, row in servers.items()
                  if key.startswith("postgres_primary/") and row.get("status") == "UP"]
            return up[0] if len(up) == 1 else None

        return _wait(routed, "HAProxy to route its PostgreSQL primary port to one node", timeout_s)

    # Prometheus's view

    def prometheus_targets(self) -> list[dict[str, str]]:
        """Prometheus's active scrape targets: job, host, instance, health (up, down, unknown) and last error."""
        status, body = self.http(f"{self.prometheus_url}/api/v1/targets?state=active", timeout_s=5)
        if status != 200:
            raise ClusterError(f"Prometheus answered {status} to /api/v1/targets")
        return [{"job": target["labels"].get("job", ""), "host": target["labels"].get("host", ""),
                 "instance": target["labels"].get("instance", ""), "health": target["health"],
                 "last_error": target.get("lastError", "")}
                for target in json.loads(body)["data"]["activeTargets"]]

    def wait_prometheus_targets_up(self, *, timeout_s: float = 60.0) -> list[dict[str, str]]:
        """Return Prometheus's targets once its last scrape of each succeeded (it scrapes every 15 s).

        ``ClusterError`` after the timeout, naming the targets not up and why.
        """
        last: list[dict[str, str]] = []

        def all_up() -> list[dict[str, str]] | None:
            nonlocal last
            try:
                last = self.prometheus_targets()
            except (OSError, ClusterError, ValueError, KeyError):
                return None
            return last if last and all(target["health"] == "up" for target in last) else None

        try:
            return _wait(all_up, "every Prometheus target to be up", timeout_s, interval_s=1.0)
        except ClusterError as error:
            down = [f"{t['job']} {t['host']} ({t['health']}: {t['last_error']})" for t in last if t["health"] != "up"]
            raise ClusterError(f"{error}; not up: {', '.join(down) or 'no targets'}") from None

    # Bringing it up and down

    def check_tools(self) -> None:
        missing = sorted({package for program, package in REQUIRED_PROGRAMS.items() if shutil.which(program) is None})
        if not Path(self.layout.pg_bin_dir, "postgres").exists():
            missing.append("postgresql-15")
        if missing:
            raise ClusterError(f"missing Debian packages: {' '.join(missing)}; run scripts/ensure-cluster-tools.sh "
                               "and scripts/ensure-prometheus.sh (make cluster does)")
        reason = netns.available()
        if reason:
            raise ClusterError(reason)
        if not Path(self.layout.backup_scripts_dir, "archive-wal.sh").exists():
            raise ClusterError(f"{self.layout.backup_scripts_dir}/archive-wal.sh "
                               "(PostgreSQL's archive_command) is missing")

    def exists(self) -> bool:
        return any(netns.exists(name) for name in self.namespaces()) or self.state_dir.exists()

    def up(self, *, seed: bool = True, echo: Callable[[str], None] = print) -> Summary:
        """Build and start the whole cluster; returns once every part is ready (about a minute)."""
        started = time.monotonic()
        if self.exists():
            raise ClusterError(f"cluster '{self.prefix}' already exists (namespaces or {self.state_dir}); "
                               f"remove it first: python -m deploy.cluster down{self.cli_options()}")
        self.check_tools()
        try:
            return self._up(started, seed, echo)
        except BaseException:
            echo(f"start-up failed; logs are in {self.log_dir} (kept until `down`)")
            raise

    def _up(self, started: float, seed: bool, echo: Callable[[str], None]) -> Summary:
        self.state_dir.mkdir(parents=True)
        os.chmod(self.state_dir, 0o755)
        echo(f"[{_elapsed(started)}] generating the cluster's secrets and rendering every host's configuration")
        Secrets.generate(Path(self.layout.venv_dir) / "bin" / "alliance").save(self.secrets_path)
        self._choose_forward_port()
        self._render()
        echo(f"[{_elapsed(started)}] network namespaces {self.prefix}-*, bridge on {self.topology.subnet}")
        netns.build_network(self.network_namespace, {
            host.name: (self.namespace(host.name), host.address, self.topology.subnet.prefixlen)
            for host in self.topology.hosts})
        echo(f"[{_elapsed(started)}] etcd on {', '.join(db.name for db in self.topology.dbs)}")
        for db in self.topology.dbs:
            self.start(db.name, "etcd")
        self.wait_etcd()
        first, *others = [db.name for db in self.topology.dbs]
        echo(f"[{_elapsed(started)}] Patroni on {first} initialises PostgreSQL")
        self.start(first, "patroni")
        self.wait_for_primary(timeout_s=90)
        echo(f"[{_elapsed(started)}] Patroni on {', '.join(others)} (replicas); HAProxy and Prometheus; PgBouncer on "
             "the hub hosts")
        for name in others:
            self.start(name, "patroni")
        self.start("lb", "haproxy")
        self.start("lb", "prometheus")
        for hub in self.topology.hubs:
            self.start(hub.name, "pgbouncer")
        self.wait_lb_routes_primary()
        echo(f"[{_elapsed(started)}] alliance db upgrade (straight to the primary)")
        self.migrate()
        seed_output = ""
        if seed:
            echo(f"[{_elapsed(started)}] alliance seed-demo")
            seed_output = self.seed_demo()
        hubs = ", ".join(h.name for h in self.topology.hubs)
        echo(f"[{_elapsed(started)}] gunicorn, alliance scheduler and webhook deliveries on {hubs}")
        for hub in self.topology.hubs:
            self.start(hub.name, "hub")
            self.start(hub.name, "scheduler")
            self.start(hub.name, "webhooks")
        self.start_forwarder()
        for hub in self.topology.hubs:
            self.wait_hub_ready(hub.name, timeout_s=120)
        members = self.wait_replication()
        summary = Summary(lb_url=self.lb_url, forward_url=self.forward_url, seconds=time.monotonic() - started,
                          seed_output=seed_output, demo_keys=self.demo_keys, members=members)
        (self.state_dir / "summary.txt").write_text(summary.text(self) + "\n")
        return summary

    def _render(self) -> None:
        secrets = self.secrets()
        known_settings = hub_settings()
        for host in self.topology.hosts:
            for directory in host_directories(host, self.layout):
                path = Path(directory.path)
                path.mkdir(parents=True, exist_ok=True)
                os.chmod(path, directory.mode)
                shutil.chown(path, user=directory.owner, group=directory.group or directory.owner)
            write_files(render_host(self.topology, host, self.layout, secrets, tuning=self.tuning,
                                    known_settings=known_settings))
        archive = Path(self.layout.wal_archive_dir)
        archive.mkdir(parents=True, exist_ok=True)
        os.chmod(archive, 0o700)
        shutil.chown(archive, user="postgres", group="postgres")
        # The hosts' folders must be passable for the service users.
        for folder in [self.state_dir / "hosts", *(self.state_dir / "hosts").iterdir()]:
            os.chmod(folder, 0o755)
        self._make_certificate()

    def _make_certificate(self) -> None:
        """A self-signed certificate for the load balancer's HTTPS port (a real one on real hosts)."""
        write_self_signed_certificate(Path(str(self.layout.tls_pem)), [self.topology.lb.address, "127.0.0.1"],
                                      f"{self.prefix} cluster load balancer")

    def wait_etcd(self, *, timeout_s: float = 60.0) -> None:
        """Return once every etcd member answers healthy."""

        def healthy() -> bool:
            for db in self.topology.dbs:
                try:
                    status, body = self.http(f"http://{db.address}:{self.topology.ports.etcd_client}/health",
                                             timeout_s=2)
                except OSError:
                    return False
                if status != 200 or json.loads(body).get("health") != "true":
                    return False
            return True

        _wait(healthy, "every etcd member to be healthy", timeout_s)

    def migrate(self, *, host_name: str = "hub1", attempts: int = 5) -> str:
        """``alliance db upgrade``, which goes to ALLIANCE_MIGRATION_DATABASE_URL: the primary, through HAProxy."""
        for attempt in range(1, attempts + 1):
            result = self.alliance(["db", "upgrade"], host_name=host_name, check=False)
            if result.returncode == 0:
                return result.stdout
            if attempt == attempts:
                raise ClusterError(f"alliance db upgrade failed: {(result.stderr or result.stdout).strip()[-2000:]}")
            time.sleep(2)
        raise AssertionError("unreachable")

    def seed_demo(self, *, host_name: str = "hub1") -> str:
        """``alliance seed-demo`` once.

        The demo refuses production, so it runs as development with the cluster's keys.
        """
        self.seed_instance.mkdir(parents=True, exist_ok=True)
        result = self.alliance(["seed-demo", "--host", "127.0.0.1", "--port", self.forward_url.rsplit(":", 1)[1]],
                               host_name=host_name, overrides={"ALLIANCE_ENVIRONMENT": "development",
                                                               "ALLIANCE_INSTANCE_PATH": str(self.seed_instance)},
                               check=False)
        if result.returncode != 0:
            raise ClusterError(f"alliance seed-demo failed: {(result.stderr or result.stdout).strip()[-2000:]}")
        return result.stdout

    def _choose_forward_port(self) -> None:
        """The forwarder's port: the one asked for if free, else any free one (recorded for later commands)."""
        port = self.forward_port if self.forward_port and _port_free(self.forward_port) else _free_port()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "forward-port").write_text(str(port))

    def start_forwarder(self) -> int:
        """socat on 127.0.0.1:<port> of this machine to the load balancer, each connection from the client host."""
        port = int(self.forward_url.rsplit(":", 1)[1])
        # socat's own address syntax: the colons of the inner address are escaped.
        target = (f"EXEC:ip netns exec {self.namespace('client')} socat STDIO "
                  f"TCP\\:{self.topology.lb.address}\\:{self.topology.ports.http}")
        return self._spawn("local", "forwarder",
                           ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr", target],
                           {"PATH": BASE_PATH}, None)

    def status(self) -> str:
        """A few lines: each host's services, Patroni's members, HAProxy's view."""
        if not self.exists():
            return f"cluster '{self.prefix}' is not running"
        lines = [f"cluster '{self.prefix}' ({self.state_dir})"]
        for host in self.topology.hosts:
            try:
                states = [(item.name, self.pid(host.name, item.name)) for item in self.services(host.name)]
            except OSError:  # its files are not rendered (yet)
                states = []
            services = ", ".join(f"{name} {f'pid {pid}' if pid else 'STOPPED'}" for name, pid in states)
            cut = "  [link cut]" if _link_down(self, host.name) else ""
            lines.append(f"  {host.name:<7} {host.address:<12} {services or '-'}{cut}")
        forwarder = self.pid("local", "forwarder")
        lines.append(f"  forwarder {self.forward_url} {'pid ' + str(forwarder) if forwarder else 'STOPPED'}")
        try:
            for member in self.members():
                lines.append(f"  patroni {member['name']}: {member['role']} {member['state']} "
                             f"timeline {member.get('timeline', '?')} lag {member.get('lag', '-')}")
        except (ClusterError, OSError) as error:
            lines.append(f"  patroni: {error}")
        try:
            servers = self.haproxy_servers()
            lines.append("  haproxy: " + ", ".join(f"{key} {row.get('status')}"
                                                  for key, row in sorted(servers.items())))
        except OSError as error:
            lines.append(f"  haproxy: {error}")
        return "\n".join(lines)

    def down(self, *, echo: Callable[[str], None] = print) -> None:
        """Stop every process this cluster started, delete its namespaces and its state folder."""
        if self.run_dir.exists():
            self._stop_recorded()
        for name in self.namespaces():
            leftovers = netns.pids(name)
            for pid in leftovers:
                _kill_quietly(pid, signal.SIGKILL)
            if leftovers:
                echo(f"killed {len(leftovers)} leftover processes in {name}")
            _wait(lambda name=name: not netns.pids(name), f"the processes of {name} to end", 20)
        for name in self.namespaces():
            netns.forget_namespace(name)
            netns.delete(name)
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        for child in self._children.values():
            child.poll()
        self._children.clear()
        echo(f"cluster '{self.prefix}' removed (namespaces and {self.state_dir})")

    def _stop_recorded(self) -> None:
        forwarder = self.pid("local", "forwarder")
        if forwarder is not None:
            _kill_quietly(-forwarder, signal.SIGTERM)  # its process group: the per-connection children too
        tiers = [[(h.name, service) for service in ("hub", "scheduler", "webhooks") for h in self.topology.hubs],
                 [(h.name, "pgbouncer") for h in self.topology.hubs] + [("lb", "haproxy"), ("lb", "prometheus")],
                 [(d.name, "patroni") for d in self.topology.dbs],
                 [(d.name, "etcd") for d in self.topology.dbs]]
        # The last etcd member to stop waits several seconds to hand its leadership to
        # members already gone: after 2 s it is killed.
        timeouts = {"etcd": 2.0}
        with ThreadPoolExecutor(8) as pool:
            for tier in tiers:
                list(pool.map(lambda item: self._stop_quietly(*item, timeout_s=timeouts.get(item[1])), tier))
        # A postmaster whose Patroni was killed earlier: stopped by PostgreSQL itself, so
        # its shared memory is released too.
        for db in self.topology.dbs:
            if self.postmaster_pid(db.name) is not None:
                subprocess.run(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--",
                                f"{self.layout.pg_bin_dir}/pg_ctl", "-D", str(self.data_dir(db.name)), "-m",
                                "immediate", "-w", "-t", "20", "stop"], capture_output=True, env={"PATH": BASE_PATH})

    def _stop_quietly(self, host_name: str, name: str, *, timeout_s: float | None = None) -> None:
        try:
            self.stop(host_name, name, timeout_s=timeout_s)
        except (KeyError, OSError, ValueError):
            self.kill(host_name, name)


def write_self_signed_certificate(path: Path, addresses: Sequence[str], name: str) -> None:
    """A PEM file with a 30-day self-signed certificate for ``addresses`` and its key (mode 0600).

    As HAProxy reads it.
    """
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.SubjectAlternativeName(
                       [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]), critical=False)
                   .sign(key, hashes.SHA256()))
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(certificate.public_bytes(serialization.Encoding.PEM))
        file.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))


def read_unit(path: Path) -> dict[str, str]:
    """The [Service] section of a systemd unit file (one value per key)."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return dict(parser["Service"])


def _http_request(method: str, url: str, body: bytes | None, headers: dict[str, str],
                  timeout_s: float) -> tuple[int, bytes]:
    if netns.current_namespace() is None:
        raise RuntimeError("cluster addresses are only reached from inside a host's namespace")
    scheme, rest = url.split("://", 1)
    authority, _, path = rest.partition("/")
    host, _, port = authority.partition(":")
    connection_class = http.client.HTTPConnection if scheme == "http" else http.client.HTTPSConnection
    connection = connection_class(host, int(port) if port else None, timeout=timeout_s)
    try:
        connection.request(method, "/" + path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _wait(condition: Callable[[], T], what: str, timeout_s: float, interval_s: float = 0.25) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def _start_time(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _is_live(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _kill_quietly(pid: int, signal_number: int) -> None:
    try:
        os.kill(pid, signal_number)
    except ProcessLookupError:
        pass


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _link_down(cluster: Cluster, host_name: str) -> bool:
    if not netns.exists(cluster.network_namespace):
        return False
    result = netns.ip("link", "show", netns.bridge_port(host_name), namespace=cluster.network_namespace, check=False)
    return "state DOWN" in result.stdout and ",UP" not in result.stdout.split(">")[0]


def _elapsed(started: float) -> str:
    return f"{time.monotonic() - started:5.1f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--prefix", default="alliance", help="namespace prefix (default: alliance)")
    parser.add_argument("--state-dir", default=None, help="default: test-artifacts/cluster")
    parser.add_argument("--forward-port", type=int, default=DEFAULT_FORWARD_PORT,
                        help="127.0.0.1 port of the forwarder to the load balancer (default: %(default)s)")
    parser.add_argument("--no-seed", action="store_true", help="up: skip alliance seed-demo")
    arguments = parser.parse_args(argv)
    cluster = Cluster(prefix=arguments.prefix, state_dir=arguments.state_dir, forward_port=arguments.forward_port)
    try:
        if arguments.command == "up":
            saved = cluster.state_dir / "summary.txt"
            if cluster.exists() and saved.exists():
                print(f"cluster '{cluster.prefix}' is already running; as it was started:\n")
                print(saved.read_text())
                print(cluster.status())
                return 0
            summary = cluster.up(seed=not arguments.no_seed)
            print(summary.text(cluster))
        elif arguments.command == "down":
            cluster.down()
        else:
            print(cluster.status())
    except ClusterError as error:
        print(f"cluster: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
