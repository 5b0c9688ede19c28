"""The hosts of an alliance deployment and their addresses.

One load balancer (HAProxy, and Prometheus beside it), several hub hosts (gunicorn,
``alliance scheduler`` and PgBouncer each), and three database hosts (etcd, Patroni and
PostgreSQL each). A real deployment describes its hosts in an inventory file
(``deploy/inventory.example.toml``); ``make cluster`` uses ``Topology.local()``, the same
shape on a private subnet that only exists inside the cluster's network namespaces.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

LB, HUB, DB, CLIENT = "lb", "hub", "db", "client"


@dataclass(frozen=True)
class Ports:
    """Every port the deployment uses (the same on every host of a kind)."""

    http: int = 80
    https: int = 443
    pg_primary: int = 5000
    pg_replicas: int = 5001
    haproxy_stats: int = 8404
    hub: int = 8000
    pgbouncer: int = 6432
    postgres: int = 5432
    patroni: int = 8008
    etcd_client: int = 2379
    etcd_peer: int = 2380
    # `alliance scheduler --metrics-address` on each hub host (the hub's own are on `hub`'s /metrics).
    scheduler_metrics: int = 9108
    # `alliance webhooks deliver --metrics-address` on each hub host: delivery attempts by outcome.
    webhook_metrics: int = 9109
    # Prometheus (web interface and API) on the load balancer, on its private address.
    prometheus: int = 9090


PORTS = Ports()


@dataclass(frozen=True)
class Host:
    """One machine: its short name (``db1``), its role and its address on the cluster's network."""

    name: str
    role: str
    address: str


@dataclass(frozen=True)
class Topology:
    """The cluster's name (Patroni's scope, etcd's token), its subnet and its hosts."""

    name: str
    subnet: ipaddress.IPv4Network
    lb: Host
    hubs: tuple[Host, ...]
    dbs: tuple[Host, ...]
    # Not part of a real deployment: where `make cluster`'s tills and harness run.
    client: Host | None = None
    ports: Ports = field(default=PORTS)

    def __post_init__(self) -> None:
        names = [host.name for host in self.hosts]
        if len(set(names)) != len(names):
            raise ValueError(f"host names must be unique: {names}")
        for host in self.hosts:
            if ipaddress.ip_address(host.address) not in self.subnet:
                raise ValueError(f"{host.name}'s address {host.address} is outside {self.subnet}")
        if len(self.dbs) != 3:
            raise ValueError("the database tier is three hosts (etcd needs an odd quorum; Patroni one sync, one async)")
        if not self.hubs:
            raise ValueError("at least one hub host is needed")

    @property
    def hosts(self) -> tuple[Host, ...]:
        """Every host, load balancer first, then hub hosts, database hosts, and the client if any."""
        return (self.lb, *self.hubs, *self.dbs, *((self.client,) if self.client else ()))

    def host(self, name: str) -> Host:
        """The host called ``name`` (``KeyError`` if none)."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no host {name!r} in {self.name}; hosts: {', '.join(h.name for h in self.hosts)}")

    @classmethod
    def local(cls, name: str = "alliance", subnet: str = "10.77.0.0/24", hubs: int = 3) -> "Topology":
        """The `make cluster` shape: lb .10, hub1.. .21.., db1..3 .31..33, client .100."""
        network = ipaddress.ip_network(subnet)
        base = int(network.network_address)

        def at(offset: int) -> str:
            return str(ipaddress.ip_address(base + offset))

        return cls(
            name=name, subnet=network, lb=Host("lb", LB, at(10)),
            hubs=tuple(Host(f"hub{index}", HUB, at(20 + index)) for index in range(1, hubs + 1)),
            dbs=tuple(Host(f"db{index}", DB, at(30 + index)) for index in range(1, 4)),
            client=Host("client", CLIENT, at(100)),
        )

    @classmethod
    def from_inventory(cls, path: str | Path) -> "Topology":
        """Read an inventory file (TOML; see deploy/inventory.example.toml)."""
        data = tomllib.loads(Path(path).read_text())
        try:
            return cls(
                name=data["cluster"]["name"], subnet=ipaddress.ip_network(data["cluster"]["subnet"]),
                lb=Host(data["lb"]["name"], LB, data["lb"]["address"]),
                hubs=tuple(Host(item["name"], HUB, item["address"]) for item in data["hubs"]),
                dbs=tuple(Host(item["name"], DB, item["address"]) for item in data["dbs"]),
            )
        except KeyError as missing:
            raise ValueError(f"{path}: missing {missing}") from None
