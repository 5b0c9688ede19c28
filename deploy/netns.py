"""Linux network namespaces as hosts: one per host, joined by a bridge that lives in its own namespace.

Nothing here touches the machine's own network namespace besides creating and deleting
the named namespaces (``ip netns``): the bridge, the veth pairs and every address live
inside the cluster's namespaces, so the subnet exists nowhere else and two clusters
with different prefixes never meet.

Code that must reach a cluster address runs either as a process inside a host's
namespace (``command``/``ip netns exec``), or in a thread that has entered one
(``in_namespace``): Linux keeps the network namespace per thread, so the rest of the
calling process stays where it was.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import subprocess
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence, TypeVar

NETNS_DIR = Path("/var/run/netns")
CLONE_NEWNET = 0x40000000
BRIDGE = "br0"
# A MAC address no host has: a neighbour entry pointing at it makes the bridge drop
# (flood to no one who wants) every packet for that address, silently, as a partition would.
NOWHERE_MAC = "02:00:00:00:00:01"
T = TypeVar("T")

_state = threading.local()


def available() -> str | None:
    """Why namespaces cannot be used here (not root, no ``ip``), or None if they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if subprocess.run(["which", "ip"], capture_output=True).returncode != 0:
        return "the ip command (iproute2) is not installed"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"'ip netns' does not work here: {probe.stderr.strip()}"
    return None


def ip(*arguments: str, namespace: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip [-n namespace] arguments``."""
    command = ["ip", *(["-n", namespace] if namespace else []), *arguments]
    result = subprocess.run(command, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")
    return result


def exists(namespace: str) -> bool:
    return (NETNS_DIR / namespace).exists()


def names(prefix: str) -> list[str]:
    """The namespaces whose names start with ``prefix-``."""
    listing = ip("netns", "list").stdout.split("\n")
    return sorted(line.split()[0] for line in listing if line.split() and line.split()[0].startswith(prefix + "-"))


def add(namespace: str) -> None:
    """Create ``namespace`` with its loopback up."""
    ip("netns", "add", namespace)
    ip("link", "set", "lo", "up", namespace=namespace)


def delete(namespace: str) -> None:
    if exists(namespace):
        ip("netns", "delete", namespace)


def pids(namespace: str) -> list[int]:
    """Every process whose network namespace is ``namespace``."""
    if not exists(namespace):
        return []
    result = ip("netns", "pids", namespace, check=False)
    return sorted(int(item) for item in result.stdout.split())


def command(namespace: str, argv: Sequence[str], *, user: str | None = None) -> list[str]:
    """``argv`` run inside ``namespace`` (as ``user`` if given); each step execs, so the pid is argv's."""
    prefix = ["ip", "netns", "exec", namespace]
    if user and user != "root":
        account = pwd.getpwnam(user)
        prefix += ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups", "--"]
    return [*prefix, *argv]


def run(namespace: str, argv: Sequence[str], *, user: str | None = None, check: bool = True,
        timeout: float | None = 120, env: dict[str, str] | None = None,
        cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion inside ``namespace``; its output is returned as text."""
    result = subprocess.run(command(namespace, argv, user=user), capture_output=True, text=True, timeout=timeout,
                            env=env, cwd=cwd)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} in {namespace} exited {result.returncode}: "
                           f"{(result.stderr or result.stdout).strip()[-2000:]}")
    return result


def bridge_port(host_name: str) -> str:
    """The bridge-side end of a host's veth pair, in the network namespace."""
    return f"p-{host_name}"[:15]


def build_network(network_namespace: str, hosts: dict[str, tuple[str, str, int]]) -> None:
    """The bridge in ``network_namespace``; each host's namespace gets eth0 with its address on it.

    ``hosts`` maps a host name to (its namespace, its address, the subnet's prefix length).
    """
    add(network_namespace)
    ip("link", "add", BRIDGE, "type", "bridge", namespace=network_namespace)
    ip("link", "set", BRIDGE, "up", namespace=network_namespace)
    for host_name, (namespace, address, prefix_length) in hosts.items():
        add(namespace)
        port = bridge_port(host_name)
        ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace, namespace=network_namespace)
        ip("link", "set", port, "master", BRIDGE, "up", namespace=network_namespace)
        ip("addr", "add", f"{address}/{prefix_length}", "dev", "eth0", namespace=namespace)
        ip("link", "set", "eth0", "up", namespace=namespace)


def set_link(network_namespace: str, host_name: str, up: bool) -> None:
    """Plug or unplug a host's cable: its bridge port up or down (the host sees no carrier)."""
    ip("link", "set", bridge_port(host_name), "up" if up else "down", namespace=network_namespace)


def drop_traffic_to(namespace: str, addresses: Sequence[str]) -> None:
    """From now on every packet ``namespace`` sends to ``addresses`` is lost without a word.

    A permanent neighbour entry sends them to a MAC address nobody has; connections time
    out, as across a real partition (a blackhole route would fail them at once instead).
    """
    for address in addresses:
        ip("neigh", "replace", address, "lladdr", NOWHERE_MAC, "nud", "permanent", "dev", "eth0", namespace=namespace)


def restore_traffic_to(namespace: str, addresses: Sequence[str]) -> None:
    """Undo ``drop_traffic_to`` (addresses that were not dropped are ignored)."""
    for address in addresses:
        entry = ip("neigh", "show", address, "dev", "eth0", namespace=namespace, check=False).stdout
        if NOWHERE_MAC in entry:
            ip("neigh", "del", address, "dev", "eth0", namespace=namespace, check=False)


def dropped_addresses(namespace: str) -> list[str]:
    """The addresses ``drop_traffic_to`` currently drops from ``namespace``."""
    listing = ip("neigh", "show", "dev", "eth0", namespace=namespace, check=False).stdout
    return [line.split()[0] for line in listing.splitlines() if NOWHERE_MAC in line]


_libc = ctypes.CDLL(None, use_errno=True)
_executors: dict[str, ThreadPoolExecutor] = {}
_executors_lock = threading.Lock()


def _enter(namespace: str) -> None:
    descriptor = os.open(NETNS_DIR / namespace, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(descriptor, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns into {namespace}: {os.strerror(error)}")
    finally:
        os.close(descriptor)
    _state.namespace = namespace


def current_namespace() -> str | None:
    """The namespace this thread entered with ``in_namespace``/``thread_in``, or None."""
    return getattr(_state, "namespace", None)


def in_namespace(namespace: str, function: Callable[..., T], *arguments: object, timeout: float | None = None,
                 **keywords: object) -> T:
    """Call ``function`` in a thread that lives in ``namespace`` and return its result.

    The threads are kept per namespace (a few each), so repeated calls cost a hand-over,
    not a ``setns``. ``forget_namespace`` drops them when the namespace goes.
    """
    future: Future[T] = executor(namespace).submit(function, *arguments, **keywords)
    return future.result(timeout)


def executor(namespace: str, workers: int = 4) -> ThreadPoolExecutor:
    """A pool of threads living in ``namespace`` (for many calls at once, e.g. tills)."""
    with _executors_lock:
        pool = _executors.get(namespace)
        if pool is None:
            pool = ThreadPoolExecutor(workers, thread_name_prefix=f"netns-{namespace}", initializer=_enter,
                                      initargs=(namespace,))
            _executors[namespace] = pool
        return pool


def thread_in(namespace: str, target: Callable[..., object], *arguments: object, name: str | None = None,
              daemon: bool = True) -> threading.Thread:
    """A started thread that enters ``namespace`` first and then runs ``target(*arguments)``."""

    def body() -> None:
        _enter(namespace)
        target(*arguments)

    thread = threading.Thread(target=body, name=name or f"in-{namespace}", daemon=daemon)
    thread.start()
    return thread


def forget_namespace(namespace: str) -> None:
    """Stop the threads kept for ``namespace``."""
    with _executors_lock:
        pool = _executors.pop(namespace, None)
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)
