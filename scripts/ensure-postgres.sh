#!/usr/bin/env bash
# Make sure a PostgreSQL server (initdb, pg_ctl, postgres) is installed for the tests.
# The tests start their own throwaway cluster; this only installs Debian's server
# package when it is missing. Nothing is started here.
set -euo pipefail

have_server() {
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null
}

if have_server; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "PostgreSQL server not found: install it (Debian: sudo apt-get install postgresql) and re-run." >&2
  exit 1
fi
echo "Installing Debian's PostgreSQL server for the tests..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql >/dev/null
have_server || { echo "PostgreSQL installation did not provide initdb" >&2; exit 1; }
