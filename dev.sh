#!/usr/bin/env bash
# The two entry points of the README:
#   ./dev.sh demo   set everything up, start throwaway Postgres + Redis Stack, run the demo
#   ./dev.sh test   set everything up and run the whole test suite (what CI runs)
set -euo pipefail
cd "$(dirname "$0")"
VENV=${CONNECTOR_VENV:-$PWD/.venv}

case "${1:-}" in
    test)
        shift
        CONNECTOR_SETUP_BROWSER=1 scripts/setup.sh
        exec scripts/test.sh "$@"
        ;;
    demo)
        shift
        scripts/setup.sh
        exec "$VENV/bin/connector" demo "$@"
        ;;
    setup)
        exec scripts/setup.sh
        ;;
    *)
        echo "usage: $0 test|demo|setup" >&2
        exit 2
        ;;
esac
