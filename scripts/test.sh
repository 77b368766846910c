#!/usr/bin/env bash
# Quality gates, then the whole test suite, against throwaway Postgres + Redis Stack
# (or against CONNECTOR_TEST_POSTGRES_DSN / CONNECTOR_TEST_REDIS_URL when set).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CONNECTOR_VENV:-$PWD/.venv}
export PATH="$VENV/bin:$PATH"

echo "==> ruff check";         ruff check connector tests bench
echo "==> ruff format --check"; ruff format --check connector tests bench
echo "==> mypy --strict";      mypy --strict connector
echo "==> lint-imports";       lint-imports  # the package map's contracts (pyproject.toml)
echo "==> pytest"
exec pytest "$@"
