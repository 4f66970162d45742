#!/usr/bin/env bash
# The committed mermaid diagram (diagrams/session.mmd) must render in the real mermaid renderer.
#
# Installs what that takes, once, without downloading a browser of its own: Debian's chromium
# (apt) and mermaid-cli (npm, into .ci/node_modules, which git ignores; puppeteer's browser
# download is switched off and .ci/puppeteer.json points it at /usr/bin/chromium). Then:
#   bash .ci/mermaid-check.sh     install if needed, export MMDC, run the renderer test
#   source .ci/mermaid-check.sh   (from .ci/run) install if needed and export MMDC for pytest
# The test (tests/test_diagrams.py::test_committed_mermaid_renders_in_mermaid_cli) renders the
# file to SVG and checks every state and trigger name is in it; it fails, not skips, when
# CI=true and MMDC is missing.

# mermaid-cli 12 needs Node.js 22; this machine kind has Node.js 20, so stay on 11.x.
MERMAID_CLI_VERSION=11.17.0
_mc_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

_mermaid_install() {
  if [ ! -x /usr/bin/chromium ]; then
    echo "== apt-get install chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "== apt-get install nodejs npm"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  fi
  local bin="$_mc_root/.ci/node_modules/.bin/mmdc"
  if [ ! -x "$bin" ] || [ "$("$bin" --version 2>/dev/null)" != "$MERMAID_CLI_VERSION" ]; then
    echo "== npm install @mermaid-js/mermaid-cli@$MERMAID_CLI_VERSION (no browser download)"
    PUPPETEER_SKIP_DOWNLOAD=1 PUPPETEER_SKIP_CHROME_HEADLESS_SHELL_DOWNLOAD=1 \
      npm install --prefix "$_mc_root/.ci" --no-save --no-package-lock --no-audit --no-fund \
      --loglevel=error "@mermaid-js/mermaid-cli@$MERMAID_CLI_VERSION"
  fi
  export MMDC="$bin"
  export MMDC_PUPPETEER_CONFIG="$_mc_root/.ci/puppeteer.json"
  echo "== mmdc $("$MMDC" --version) with $(/usr/bin/chromium --version 2>/dev/null)"
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
  _mermaid_install  # sourced: the caller runs the tests with MMDC exported
else
  set -euo pipefail
  _mermaid_install
  cd "$_mc_root"
  py="${PYTHON:-python3}"
  [ -x .venv/bin/python ] && py=.venv/bin/python
  CI="${CI:-true}" exec "$py" -m pytest -q tests/test_diagrams.py -k mermaid_cli
fi
