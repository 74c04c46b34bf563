#!/usr/bin/env bash
# The README's two quickstart commands, runnable by name: `scripts/quickstart.sh demo|test`.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  demo) python3 -m venv .venv && . .venv/bin/activate && pip install -e . && python -m spacy project run all ;;
  test) python3 -m venv .venv && . .venv/bin/activate && pip install -q -e ".[test,ray]" && ruff check src tests bench && pytest -q ;;
  *) echo "usage: scripts/quickstart.sh demo|test" >&2; exit 2 ;;
esac
