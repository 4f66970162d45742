# Real mermaid renderer for the diagram tests (Debian chromium + mermaid-cli, no browser download).
source .ci/mermaid-check.sh
