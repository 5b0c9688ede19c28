"""What every benchmark module shares: figures, the machine, databases, servers, wrk.

Each module has ``run(context) -> list[dict]``; ``context`` holds "postgres" (a durable
``tests.postgres_server.PostgresServer``), "venv_python", "scale" ("full" or "quick")
and "artifacts" (a folder under test-artifacts/bench/). Figures are dicts with the keys
of ``figure()``; values are measured, never typed in. Timings are floats internally
(they are not money) and printed as decimal strings.
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

REPOSITORY = Path(__file__).resolve().parent.parent
ARTIFACTS = REPOSITORY / "test-artifacts" / "bench"
# One server setting for every HTTP server in the benchmarks (hub, bare Flask, probe):
# gthread workers overlap the wait for PostgreSQL's commit flush with other requests.
GUNICORN_WORKERS = 3
GUNICORN_THREADS = 4
WRK_THREADS = 2
WRK_CONNECTIONS = 12
# The partner API's per-partner limits would turn a load test into a rate-limit test;
# 0 switches each off for the benchmark hub (and only there).
RATE_LIMITS_OFF = {"ALLIANCE_PARTNER_RATE_PER_S": "0", "ALLIANCE_PARTNER_BURST": "0",
                   "ALLIANCE_PARTNER_MAX_IN_FLIGHT": "0"}


# ---------------------------------------------------------------- figures and printing

def decimal_text(value: float | int | Decimal, places: int = 2) -> str:
    """A measured number as exact decimal text, rounded half-even to ``places``."""
    quantum = Decimal(1).scaleb(-places)
    return str(Decimal(str(value)).quantize(quantum, rounding=ROUND_HALF_EVEN))


def figure(benchmark: str, name: str, value: float | int | Decimal, unit: str, *, floor: str | None = None,
           floor_value: float | int | Decimal | None = None, ratio: float | Decimal | None = None,
           ratio_unit: str = "%", target: str = "", met: bool | None = None, note: str = "",
           places: int = 2) -> dict:  # type: ignore[type-arg]
    """One row of the results table."""
    ratio_text = None
    if ratio is not None:
        ratio_text = (decimal_text(Decimal(str(ratio)) * 100, 1) + "%" if ratio_unit == "%"
                      else decimal_text(ratio, 2) + ratio_unit)
    return {
        "benchmark": benchmark, "figure": name, "value": decimal_text(value, places), "unit": unit, "floor": floor,
        "floor_value": None if floor_value is None else decimal_text(floor_value, places), "ratio": ratio_text,
        "target": target, "met": met, "note": note,
    }


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (0 < fraction <= 1)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def median(values: Sequence[float]) -> float:
    """The median of ``values``."""
    return statistics.median(values)


def table(figures: Iterable[dict]) -> str:  # type: ignore[type-arg]
    """The figures as a Markdown table."""
    lines = ["| benchmark | figure | value | floor | ratio | target | met | note |",
             "|---|---|---|---|---|---|---|---|"]
    for row in figures:
        floor = "" if row["floor"] is None else f"{row['floor']}: {row['floor_value']}"
        met = {True: "yes", False: "**no**", None: ""}[row["met"]]
        lines.append(f"| {row['benchmark']} | {row['figure']} | {row['value']} {row['unit']} | {floor} | "
                     f"{row['ratio'] or ''} | {row['target']} | {met} | {row['note']} |")
    return "\n".join(lines)


def machine() -> dict[str, str]:
    """CPU model, cores, memory and Python version of this machine."""
    cpu_model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    memory_kib = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal")), 0)
    return {"cpu": cpu_model, "cores": str(os.cpu_count()), "memory": f"{memory_kib // 1024 // 1024} GiB",
            "python": platform.python_version(), "platform": platform.platform()}


# ---------------------------------------------------------------- PostgreSQL

def admin_url(server, database: str = "postgres") -> str:  # type: ignore[no-untyped-def]
    """A plain psycopg connection string for ``database`` on the benchmark server."""
    return f"host=127.0.0.1 port={server.port} user={server.user} dbname={database}"


def create_database(server, name: str) -> str:  # type: ignore[no-untyped-def]
    """Create an empty database (dropping one of that name); returns its SQLAlchemy URL."""
    with psycopg.connect(admin_url(server), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    return server.url(name)


def server_version(server) -> str:  # type: ignore[no-untyped-def]
    """The PostgreSQL server's version string."""
    with psycopg.connect(admin_url(server), autocommit=True) as connection:
        return connection.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]


def durability(server) -> str:  # type: ignore[no-untyped-def]
    """fsync and synchronous_commit as the server runs them."""
    with psycopg.connect(admin_url(server), autocommit=True) as connection:
        fsync = connection.execute("SHOW fsync").fetchone()[0]  # type: ignore[index]
        synchronous = connection.execute("SHOW synchronous_commit").fetchone()[0]  # type: ignore[index]
    return f"fsync={fsync}, synchronous_commit={synchronous}"


# ---------------------------------------------------------------- the hub

def hub_environment(database_url: str, instance_path: Path) -> dict[str, str]:
    """``ALLIANCE_*`` settings of a benchmark hub (rate limits off; see RATE_LIMITS_OFF)."""
    return {"ALLIANCE_DATABASE_URL": database_url, "ALLIANCE_INSTANCE_PATH": str(instance_path),
            "ALLIANCE_ENVIRONMENT": "development", "ALLIANCE_DATABASE_POOL_SIZE": str(GUNICORN_THREADS + 1),
            **RATE_LIMITS_OFF}


def migrated_hub(server, database: str, artifacts: Path):  # type: ignore[no-untyped-def]
    """A fresh database migrated to head and an in-process hub app on it; returns (app, environment)."""
    from alliance import create_app, migrate
    from alliance.config import Settings

    url = create_database(server, database)
    instance_path = artifacts / f"instance-{database}"
    instance_path.mkdir(parents=True, exist_ok=True)
    environment = hub_environment(url, instance_path)
    app = create_app(Settings.from_env(environment))
    migrate.upgrade(app.extensions["alliance"].engine)
    return app, environment


def earning_hub(server, database: str, artifacts: Path, *, partners: int, members: int):  # type: ignore[no-untyped-def]
    """The earn benchmarks' world: a migrated hub with partners and members seeded an hour ago.

    Returns (app, environment, hub, partners, members); the partners have prices and
    earn rules in force, so purchases signed now earn at once.
    """
    app, environment = migrated_hub(server, database, artifacts)
    hub = app.extensions["alliance"]
    seeded_at = utc_now() - timedelta(hours=1)
    return (app, environment, hub, seed_partners(hub, partners, seeded_at), seed_members(hub, members, seeded_at))


@dataclass(frozen=True)
class BenchPartner:
    """A partner of the benchmark alliance with one Ed25519 key."""

    partner_id: int
    code: str
    key_id: str
    private_key: Ed25519PrivateKey

    @property
    def public_key_raw(self) -> bytes:
        """The 32 raw bytes of the public key."""
        return self.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def seed_partners(hub, count: int, now: datetime) -> list[BenchPartner]:  # type: ignore[no-untyped-def]
    """Create ``count`` active partners (1 point per EUR, no caps, no return window), each with a key."""
    from alliance.services.partners import PartnerTerms, create_partner, register_key

    terms = PartnerTerms(currency="EUR", time_zone="Europe/Paris", settlement_cycle="monthly",
                         issue_price_per_point=Decimal("0.0100"), redemption_price_per_point=Decimal("0.0080"),
                         base_points_per_unit=Decimal("1"))
    partners = []
    with hub.unit_of_work() as uow:
        for number in range(count):
            code = f"bench-{number + 1}"
            partner_id = create_partner(uow.session, code=code, name=f"Bench {number + 1}", terms=terms, now=now)
            private_key = Ed25519PrivateKey.generate()
            partner = BenchPartner(partner_id, code, f"{code}-key", private_key)
            register_key(uow.session, partner_id=partner_id, key_id=partner.key_id, public_key=partner.public_key_raw,
                         now=now)
            partners.append(partner)
        uow.commit()
    return partners


def seed_members(hub, count: int, now: datetime) -> list[tuple[int, str]]:  # type: ignore[no-untyped-def]
    """Enrol ``count`` members through the hub's own service; returns (member id, card number) pairs."""
    from alliance.services.members import enrol_member

    members = []
    with hub.unit_of_work() as uow:
        for _ in range(count):
            enrolment = enrol_member(uow.session, now=now)
            members.append((enrolment.member_id, enrolment.card_number))
        uow.commit()
    return members


@dataclass(frozen=True)
class Observability:
    """How a benchmark hub runs as production runs it: Prometheus metrics in gunicorn's
    multiprocess mode behind a token, the JSON request log, ``alliance.gunicorn_conf``."""

    environment: dict[str, str]
    options: tuple[str, ...]
    log: Path
    token: str


def production_observability(artifacts: Path, name: str) -> Observability:
    """A fresh multiprocess folder and log file for the hub called ``name``, and the settings that use them."""
    import secrets
    import shutil

    token = secrets.token_urlsafe(24)
    folder = artifacts / f"{name}-metrics"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    log = artifacts / f"{name}.log"
    log.unlink(missing_ok=True)
    return Observability(environment={"ALLIANCE_METRICS": "on", "ALLIANCE_METRICS_TOKEN": token,
                                      "ALLIANCE_LOG_FORMAT": "json", "ALLIANCE_REQUEST_LOG": "on",
                                      "PROMETHEUS_MULTIPROC_DIR": str(folder)},
                         options=("-c", "python:alliance.gunicorn_conf"), log=log, token=token)


def store_policy_without_limits(hub, reason: str = "benchmark: no risk limits") -> None:  # type: ignore[no-untyped-def]
    """Store a risk policy with no limits on ``hub``'s database, in force since before the seed.

    For benchmarks whose load a velocity limit would refuse by design (a few hot
    members redeeming again and again), so that they measure what they are about.
    """
    from alliance.services import risk

    # The seed is an hour old; the version is in force from an hour before that, stored an hour earlier still.
    effective_from = utc_now() - timedelta(hours=2)
    with hub.unit_of_work() as uow:
        risk.set_policy(uow.session, document={"limits": []}, effective_from=effective_from, reason=reason,
                        now=effective_from - timedelta(hours=1), actor="bench")
        uow.commit()


def run_audit_ok(hub) -> tuple[bool, str]:  # type: ignore[no-untyped-def]
    """Run ``alliance audit``'s checks; (green, first problem or a summary)."""
    from alliance.services.audit import run_audit

    with hub.unit_of_work() as uow:
        report = run_audit(uow.session)
    failure = report.first_failure
    if failure is None:
        return True, f"audit green ({report.totals['entries']} entries)"
    return False, f"audit FAILED: {failure.name}: {failure.first_problem}"


# ---------------------------------------------------------------- signing

@dataclass(frozen=True)
class PreparedRequest:
    """One request ready to send: method, path, headers and body."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def signed_post(signer, path: str, payload: dict, idempotency_key: str) -> PreparedRequest:  # type: ignore[no-untyped-def, type-arg]
    """A POST signed by the SDK's signer (fresh nonce and created time)."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    signed = signer.sign("POST", f"http://127.0.0.1{path}", body=body, idempotency_key=idempotency_key)
    return PreparedRequest("POST", path, signed.headers, body)


def purchase_payload(receipt_id: str, card_number: str, amount_minor: int, purchased_at: datetime) -> dict:  # type: ignore[type-arg]
    """A purchase report as a till sends it."""
    return {"receipt_id": receipt_id, "card_number": card_number, "amount_minor": amount_minor, "currency": "EUR",
            "purchased_at": purchased_at.isoformat()}


def utc_now() -> datetime:
    """The wall clock, aware."""
    return datetime.now(timezone.utc)


def recent(seconds: int = 60) -> datetime:
    """A moment a little before now, whole seconds (a purchase's time)."""
    return (utc_now() - timedelta(seconds=seconds)).replace(microsecond=0)


# ---------------------------------------------------------------- servers

def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Gunicorn:
    """A gunicorn server with the benchmark's one setting; a context manager that stops it by pid.

    ``options`` are more gunicorn arguments (``-c python:alliance.gunicorn_conf``);
    ``log`` is where its standard output and error go (appended; default
    ``gunicorn-<name>.log`` in the artifacts). An ``environment`` value of None removes
    that variable from the environment the server would inherit.
    """

    def __init__(self, context: dict, application: str, environment: Mapping[str, str | None], *,  # type: ignore[type-arg]
                 ready_path: str, name: str, options: Sequence[str] = (), log: Path | None = None) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._ready_path = ready_path
        self._log = log or Path(context["artifacts"]) / f"gunicorn-{name}.log"
        self._command = [context["venv_python"], "-m", "gunicorn", *options, "--bind", f"127.0.0.1:{self.port}",
                         "--workers", str(GUNICORN_WORKERS), "--worker-class", "gthread",
                         "--threads", str(GUNICORN_THREADS), "--backlog", "256", "--log-level", "warning",
                         "--timeout", "60", application]
        merged = {**os.environ, **environment, "PYTHONPATH": str(REPOSITORY)}
        self._environment = {variable: value for variable, value in merged.items() if value is not None}
        self.process: subprocess.Popen | None = None  # type: ignore[type-arg]

    def __enter__(self) -> "Gunicorn":
        log = self._log.open("ab")
        self.process = subprocess.Popen(self._command, cwd=REPOSITORY, env=self._environment, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited at start; see {self._log}")
            try:
                with urllib.request.urlopen(self.base_url + self._ready_path, timeout=2) as reply:
                    if reply.status < 500:
                        return self
            except OSError:
                time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError(f"gunicorn did not answer {self._ready_path} within 60 s; see {self._log}")

    def worker_pids(self) -> list[int]:
        """The pids of the server's workers (children of the master)."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def __exit__(self, *_: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


# ---------------------------------------------------------------- wrk

# Each wrk thread replays its own share of a file of pre-signed requests, one per line
# (method, path, body, then header name/value pairs, tab-separated), each at most once:
# a replayed nonce would be refused, so a thread that runs out stops. Statuses are
# counted per thread and reported by done() as one JSON line.
REPLAY_LUA = r"""
local threads = {}
local counter = 0
function setup(thread)
  thread:set("thread_index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local requests = {}
local position = 0
ok = 0
refused = 0
first_refusal = ""

local function split(line)
  local parts = {}
  for part in string.gmatch(line, "([^\t]*)\t?") do table.insert(parts, part) end
  return parts
end

function init(args)
  local thread_count = tonumber(args[2])
  local number = 0
  for line in io.lines(args[1]) do
    if number % thread_count == thread_index then
      local parts = split(line)
      local headers = {}
      local index = 4
      while parts[index] ~= nil and parts[index] ~= "" do
        headers[parts[index]] = parts[index + 1]
        index = index + 2
      end
      local body = parts[3]
      if body == "" then body = nil end
      table.insert(requests, wrk.format(parts[1], parts[2], headers, body))
    end
    number = number + 1
  end
end

function request()
  position = position + 1
  if position > #requests then
    wrk.thread:stop()
    return requests[#requests]
  end
  return requests[position]
end

function response(status, headers, body)
  if position > #requests + 0 and status >= 400 then return end
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    refused = refused + 1
    if first_refusal == "" then first_refusal = tostring(status) .. " " .. string.sub(body or "", 1, 160) end
  end
end

function done(summary, latency, requests_stats)
  local total_ok, total_refused, first = 0, 0, ""
  for _, thread in ipairs(threads) do
    total_ok = total_ok + thread:get("ok")
    total_refused = total_refused + thread:get("refused")
    if first == "" then first = thread:get("first_refusal") end
  end
  first = string.gsub(first, '[%c"\\]', " ")
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "ok": %d, "refused": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %d, "first_refusal": "%s"}\n',
    summary.requests, summary.duration, total_ok, total_refused,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean, first))
end
"""


@dataclass(frozen=True)
class LoadResult:
    """What one wrk run measured."""

    requests: int
    ok: int
    refused: int
    socket_errors: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    first_refusal: str
    # wrk runs for the whole duration even when the requests run out, so a run that
    # used them all measured a lower bound of the rate: more requests are needed.
    exhausted: bool = False

    @property
    def ok_per_s(self) -> float:
        """Successful (2xx) requests per second."""
        return self.ok / self.duration_s

    def errors_note(self) -> str:
        """Errors as a short note (non-2xx and socket errors)."""
        text = f"{self.ok} ok, {self.refused} non-2xx, {self.socket_errors} socket errors"
        if self.exhausted:
            text += "; RAN OUT OF REQUESTS: the rate is a lower bound"
        if self.refused:
            text += f" (first: {self.first_refusal[:120]})"
        return text


def write_request_file(path: Path, requests: Iterable[PreparedRequest]) -> int:
    """Write pre-signed requests in the replay script's format; returns how many."""
    count = 0
    with path.open("w") as file:
        for item in requests:
            body = item.body.decode()
            if "\t" in body or "\n" in body:
                raise ValueError("request bodies must be single-line JSON without tabs")
            fields = [item.method, item.path, body]
            for name, value in item.headers.items():
                fields += [name, value]
            file.write("\t".join(fields) + "\n")
            count += 1
    return count


def run_wrk(base_url: str, request_file: Path, artifacts: Path, *, duration_s: int,
            connections: int = WRK_CONNECTIONS, threads: int = WRK_THREADS) -> LoadResult:
    """Replay ``request_file`` against ``base_url`` with wrk; stops at the duration or when requests run out."""
    script = artifacts / "replay.lua"
    script.write_text(REPLAY_LUA)
    command = ["wrk", "--latency", "-t", str(threads), "-c", str(connections), "-d", f"{duration_s}s",
               "--timeout", "10s", "-s", str(script), base_url, "--", str(request_file), str(threads)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 120)
    line = next((line for line in completed.stdout.splitlines() if line.startswith("BENCH_JSON ")), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({completed.returncode}): "
                           f"{completed.stderr[-2000:]} {completed.stdout[-2000:]}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    with request_file.open() as file:
        available = sum(1 for _ in file)
    return LoadResult(requests=data["requests"], ok=data["ok"], refused=data["refused"],
                      socket_errors=data["socket_errors"], duration_s=data["duration_us"] / 1e6,
                      p50_ms=data["p50_us"] / 1000, p90_ms=data["p90_us"] / 1000, p99_ms=data["p99_us"] / 1000,
                      first_refusal=data["first_refusal"], exhausted=data["requests"] >= available - connections)


# A load replays a file of pre-signed requests (each nonce is single-use), so the file
# must outlast the run at whatever rate the server reaches in it. Files are sized from a
# rate measured on the same server just before, with headroom for a faster moment of
# the machine; a load that still runs out is repeated with twice the requests.
REQUEST_HEADROOM = 2
CALIBRATION_S = 3
CALIBRATION_CONNECTIONS = 4
MAX_LOAD_ATTEMPTS = 3


def requests_for(rate_per_s: float, duration_s: int, *, minimum: int) -> int:
    """How many pre-signed requests a load of ``duration_s`` needs at ``rate_per_s``, with headroom."""
    if rate_per_s < 0 or duration_s <= 0 or minimum < 1:
        raise ValueError("the rate must be non-negative, the duration and the minimum positive")
    return max(minimum, math.ceil(rate_per_s * duration_s * REQUEST_HEADROOM))


def sized_load(base_url: str, make_requests: Callable[[int, str], list[PreparedRequest]], artifacts: Path,
               name: str, *, duration_s: int, rate_per_s: float, minimum: int,
               connections: int = WRK_CONNECTIONS, threads: int = WRK_THREADS) -> LoadResult:
    """One load from a request file sized for ``rate_per_s``, repeated larger if it ran out anyway.

    ``make_requests(count, tag)`` signs ``count`` fresh requests. The last attempt is
    returned even if it ran out, marked ``exhausted``, so a caller never mistakes a
    lower bound for a rate.
    """
    count = requests_for(rate_per_s, duration_s, minimum=minimum)
    for attempt in range(1, MAX_LOAD_ATTEMPTS + 1):
        request_file = artifacts / f"{name}.requests"
        write_request_file(request_file, make_requests(count, f"{name}-{attempt}"))
        result = run_wrk(base_url, request_file, artifacts, duration_s=duration_s, connections=connections,
                         threads=threads)
        if not result.exhausted:
            return result
        count *= 2
    return result


def calibrated_rate(base_url: str, make_requests: Callable[[int, str], list[PreparedRequest]], artifacts: Path,
                    name: str, *, first_count: int) -> float:
    """The server's rate over a short load that did not run out (its request count grows until one does not)."""
    result = sized_load(base_url, make_requests, artifacts, f"{name}-calibration", duration_s=CALIBRATION_S,
                        rate_per_s=0, minimum=first_count, connections=CALIBRATION_CONNECTIONS,
                        threads=min(WRK_THREADS, CALIBRATION_CONNECTIONS))
    if result.exhausted or result.ok == 0:
        raise RuntimeError(f"{name}: calibration did not measure a rate ({result.errors_note()})")
    return result.ok_per_s


# ---------------------------------------------------------------- running one module alone

def standalone(run: Callable[[dict], list[dict]], scale: str | None = None) -> None:  # type: ignore[type-arg]
    """``python -m benchmarks.<module>``: start PostgreSQL, run the module, print its table, clean up."""
    from tests.postgres_server import start_postgres

    scale = scale or os.environ.get("BENCH_SCALE", "quick")
    artifacts = ARTIFACTS / "standalone"
    artifacts.mkdir(parents=True, exist_ok=True)
    server = start_postgres(durable=True)
    try:
        figures = run({"postgres": server, "venv_python": sys.executable, "scale": scale, "artifacts": artifacts})
    finally:
        server.stop()
    print(table(figures))
