#!/usr/bin/env bash
# Make sure a PostgreSQL server (initdb, pg_ctl, postgres) and PgBouncer are installed
# for the tests. The tests start their own throwaway cluster (and, for the transaction
# pooling tests, their own PgBouncer); this only installs Debian's packages when they
# are missing. Nothing is started here.
set -euo pipefail

have_server() {
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null
}

have_pgbouncer() {
  [ -x /usr/sbin/pgbouncer ] || command -v pgbouncer >/dev/null
}

if have_server && have_pgbouncer; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "PostgreSQL server or PgBouncer not found: install them (Debian: sudo apt-get install postgresql pgbouncer) and re-run." >&2
  exit 1
fi
echo "Installing Debian's PostgreSQL server and PgBouncer for the tests..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql pgbouncer >/dev/null
have_server || { echo "PostgreSQL installation did not provide initdb" >&2; exit 1; }
have_pgbouncer || { echo "PgBouncer installation did not provide pgbouncer" >&2; exit 1; }
