#!/usr/bin/env bash
# Make sure Debian's Prometheus is installed: `promtool` checks and unit-tests the alert
# rules (deploy/prometheus/) in the tests, and `make cluster` runs `prometheus` on the
# load balancer's namespace. Installs the package only when a program is missing, and
# keeps the package's own prometheus.service from being started by the installation (a
# policy-rc.d that refuses, for the duration of apt-get only, when the machine has none
# of its own). Nothing is started here, and nothing that already runs is stopped.
set -euo pipefail

have_prometheus() {
  command -v prometheus >/dev/null && command -v promtool >/dev/null
}

if have_prometheus; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "prometheus or promtool not found: install them (Debian: sudo apt-get install prometheus) and re-run." >&2
  exit 1
fi
echo "Installing Debian's prometheus (prometheus and promtool)..."
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  # Exit status 101: "action forbidden", so invoke-rc.d and deb-systemd-invoke start nothing.
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Without prometheus-node-exporter (recommended): the machine's own metrics are not ours to collect.
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
have_prometheus || { echo "installing prometheus did not provide prometheus and promtool" >&2; exit 1; }
