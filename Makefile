# Two entry points for people: `make demo` runs the hub on SQLite with demo data,
# `make test` runs the whole suite against a PostgreSQL server it starts itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 5000
PYTEST_ARGS ?=

.PHONY: install demo test chaos fuzz bench postgres-server chromium clean cluster cluster-down cluster-status cluster-tools \
	cluster-chaos prometheus

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/alliance db upgrade
	$(BIN)/alliance seed-demo --host $(HOST) --port $(PORT)
	$(BIN)/alliance serve --host $(HOST) --port $(PORT)

postgres-server:
	@bash scripts/ensure-postgres.sh

chromium:
	@bash scripts/ensure-chromium.sh

# promtool for the alert rules' tests; prometheus for make cluster's load balancer host.
prometheus:
	@bash scripts/ensure-prometheus.sh

# The cluster tests (tests/cluster: the smoke test and the small failover chaos scenario,
# about two minutes) need root and Debian's cluster packages; without them they are
# skipped, saying why, and the rest of the suite runs.
test: install postgres-server chromium prometheus
	$(BIN)/ruff check .
	$(BIN)/mypy
	@bash scripts/ensure-cluster-tools.sh || echo "the cluster tests will be skipped (see above)"
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The full chaos scenarios (crash safety, reward orders, settlement crash, scheduler duplication), at
# most 10 minutes; the summary is printed and written to test-artifacts/chaos-report.txt.
chaos: install postgres-server
	CHAOS_SCALE=full timeout 600 $(BIN)/python -m pytest tests/chaos -q $(PYTEST_ARGS)

# Schemathesis over every operation and hypothesis over the partner payloads, with 100
# examples each instead of the regular suite's few; prints how many requests each sent.
fuzz: install postgres-server
	FUZZ_EXAMPLES=100 $(BIN)/python -m pytest tests/integration/test_schemathesis.py \
		tests/integration/test_payload_fuzzing.py -q -s $(PYTEST_ARGS)

# Every benchmark against this machine's floors, on its own durable PostgreSQL (about
# 20 minutes on 2 cores); BENCH_SCALE=quick is a smoke test of under two minutes. The
# table is printed and written to test-artifacts/bench/results.md and results.json.
BENCH_SCALE ?= full
bench: install postgres-server
	@bash scripts/ensure-bench-tools.sh $(BIN)/python
	$(BIN)/python -m benchmarks --scale $(BENCH_SCALE)

# The production topology of docs/operations.md on this machine, one network namespace
# per host (load balancer, three hub hosts, three database hosts with etcd; root only):
# installs Debian's patroni, etcd, haproxy, pgbouncer and postgresql-15 when missing,
# starts everything, and prints the load balancer's address (and a 127.0.0.1 forwarder
# to it, CLUSTER_PORT) and the demo credentials. `make cluster-down` removes every
# namespace, process and file it made (test-artifacts/cluster/).
CLUSTER_PORT ?= 8700
cluster-tools:
	@bash scripts/ensure-cluster-tools.sh

cluster: install cluster-tools prometheus
	$(BIN)/python -m deploy.cluster up --forward-port $(CLUSTER_PORT)

cluster-status:
	$(BIN)/python -m deploy.cluster status

cluster-down:
	$(BIN)/python -m deploy.cluster down

# The failover chaos scenario on a cluster of its own (tests/cluster/test_cluster_chaos.py,
# CLUSTER_CHAOS=full): POS tills through the load balancer while the primary's postmaster
# is killed, a hub host killed, another cut off, an etcd member stopped, a switchover, a
# rolling restart of the hub hosts and the primary cut off from etcd; at most 10 minutes.
# The per-fault table is printed and written to test-artifacts/cluster-chaos-report.txt.
cluster-chaos: install postgres-server cluster-tools prometheus
	CLUSTER_CHAOS=full timeout 600 $(BIN)/python -m pytest tests/cluster/test_cluster_chaos.py -q -s -p no:cacheprovider \
		$(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
