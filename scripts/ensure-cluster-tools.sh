#!/usr/bin/env bash
# Make sure the programs `make cluster` runs are installed: Debian's patroni, etcd,
# HAProxy, PgBouncer and PostgreSQL 15 packages, socat (the 127.0.0.1 forwarder) and
# iproute2 (network namespaces). Installs only what is missing, and keeps the packages'
# own service instances from being started by the installation (a policy-rc.d that
# refuses, for the duration of apt-get only, when the machine has none of its own).
# Nothing is started here, and nothing that already runs is stopped.
set -euo pipefail

declare -A package_of=(
  [patroni]=patroni [patronictl]=patroni [etcd]=etcd-server [etcdctl]=etcd-client
  [haproxy]=haproxy [pgbouncer]=pgbouncer [socat]=socat [ip]=iproute2 [setpriv]=util-linux
)
missing=()
for program in "${!package_of[@]}"; do
  command -v "$program" >/dev/null || missing+=("${package_of[$program]}")
done
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" -ne 0 ]; then
  echo "make cluster needs root and these Debian packages: ${missing[*]} (sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "Installing Debian packages for the cluster: ${missing[*]}"
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  # Exit status 101: "action forbidden", so invoke-rc.d and deb-systemd-invoke start nothing.
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for program in "${!package_of[@]}"; do
  command -v "$program" >/dev/null || { echo "installing ${package_of[$program]} did not provide $program" >&2; exit 1; }
done
[ -x /usr/lib/postgresql/15/bin/postgres ] || { echo "installing postgresql-15 did not provide its server" >&2; exit 1; }
