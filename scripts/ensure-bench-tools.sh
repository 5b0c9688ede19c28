#!/usr/bin/env bash
# Make sure the benchmarks' tools are installed: wrk (Debian package, the HTTP load
# generator), pyinstrument and py-spy (into the virtualenv given as $1, for profiling the
# hub in process and its gunicorn workers under load).
# Nothing is started here.
set -euo pipefail

venv_python="${1:-.venv/bin/python}"

if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "wrk not found: install it (Debian: sudo apt-get install wrk) and re-run." >&2
    exit 1
  fi
  echo "Installing Debian's wrk for the benchmarks..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
  command -v wrk >/dev/null || { echo "wrk installation failed" >&2; exit 1; }
fi

if ! "$venv_python" -c "import pyinstrument" 2>/dev/null; then
  "$venv_python" -m pip install --quiet "pyinstrument>=5,<6"
fi

if [ ! -x "$(dirname "$venv_python")/py-spy" ]; then
  "$venv_python" -m pip install --quiet "py-spy>=0.4,<0.5"
fi
