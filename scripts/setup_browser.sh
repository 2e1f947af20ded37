#!/usr/bin/env bash
# Debian's Chromium for the browser tests (tests/test_browser.py drives it with Playwright; no browser download).
# Idempotent: does nothing when a chromium is already on PATH. Needs root (or sudo) and Debian's package index.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  echo "chromium: $(command -v chromium)"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "no apt-get: install Chromium yourself (browser tests skip without it; with CI=true they fail)" >&2
  exit 0
fi
$SUDO apt-get update -q >/dev/null || true
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null \
  || { echo "could not install chromium: browser tests skip (with CI=true they fail)" >&2; exit 0; }
echo "chromium: $(command -v chromium)"
