#!/usr/bin/env bash
# Make sure Debian's chromium is installed for the browser tests (tests/browser/).
# Playwright drives it headless through its executable path; Playwright's own browser
# downloads are never used. Nothing is started here.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "chromium not found at $CHROMIUM: install it (Debian: sudo apt-get install chromium) and re-run." >&2
  exit 1
fi
echo "Installing Debian's chromium for the browser tests..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
[ -x "$CHROMIUM" ] || { echo "chromium installation did not provide $CHROMIUM" >&2; exit 1; }
