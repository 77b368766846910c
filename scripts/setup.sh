#!/usr/bin/env bash
# Set up everything the connector's tests, benchmarks and demo need on Debian 12 / Ubuntu:
#   - PostgreSQL server + wal2json (apt),
#   - libssl.so.1.1 for the Redis Stack binaries, unpacked into a private cache folder
#     (never installed system-wide; the machine's apt state is left as it was),
#   - a virtual environment in .venv with the project and its dev extra,
#   - with CONNECTOR_SETUP_BROWSER=1 (./dev.sh test), Debian's Chromium for the page's test.
# Safe to run again: each step is skipped when its result is already there.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${CONNECTOR_VENV:-$ROOT/.venv}
EXTRAS=${CONNECTOR_EXTRAS:-dev,local}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/connector
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then $SUDO apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

pg_major() {
    ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sed -E 's#.*/postgresql/([0-9]+)/.*#\1#' | sort -n | tail -1
}

# --- PostgreSQL + wal2json -------------------------------------------------------------
major=$(pg_major)
if [ -z "$major" ]; then
    log "installing PostgreSQL"
    apt_install postgresql
    major=$(pg_major)
fi
if [ ! -e "/usr/lib/postgresql/$major/lib/wal2json.so" ]; then
    log "installing wal2json for PostgreSQL $major"
    apt_install "postgresql-$major-wal2json"
fi
# The cluster created by the postgresql package is not used; the project starts its own.

# --- Chromium, for the test of the page `connector serve` shows (./dev.sh test) -------------
if [ -n "${CONNECTOR_SETUP_BROWSER:-}" ] && ! command -v chromium >/dev/null; then
    log "installing Chromium (Debian's; the browser test drives it with Playwright)"
    apt_install chromium
fi

# --- Python ------------------------------------------------------------------------------
PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null || ! "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    log "installing Python 3"
    apt_install python3 python3-venv python3-dev
fi
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "the connector needs Python 3.11+"'
if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
    log "installing python3-venv"
    apt_install python3-venv
fi
for tool in make gcc; do command -v $tool >/dev/null || apt_install build-essential; done
command -v ldd >/dev/null || apt_install libc-bin

stamp="$VENV/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-${EXTRAS//,/_}"
if [ ! -e "$stamp" ]; then
    log "installing the project into $VENV (extras: $EXTRAS)"
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # torch first, pinned: an unpinned one pulled in by sentence-transformers can be a
    # multi-GB CUDA build. Install a CPU build of your choice beforehand to skip this.
    if [[ ",$EXTRAS," == *",local,"* ]] && ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
        "$VENV/bin/python" -m pip install -q "torch==${CONNECTOR_TORCH_VERSION:-2.13.0}"
    fi
    "$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi

# --- libssl.so.1.1 for the Redis Stack server -------------------------------------------
server=$("$VENV/bin/python" -c 'from connector.testing.services import redis_stack_home; print(redis_stack_home() / "bin" / "redis-server")')
# grep reads all of ldd's output (with -q it could exit first, and pipefail would see ldd's SIGPIPE).
if ldd "$server" | grep 'libssl.so.1.1 => not found' >/dev/null && ! find "$CACHE/libssl1.1" -name libssl.so.1.1 2>/dev/null | grep -q .; then
    log "fetching libssl1.1 into $CACHE/libssl1.1 (private folder, nothing installed system-wide)"
    . /etc/os-release
    # Reuse the security mirror the machine's apt sources already name, with the older suite
    # that still ships libssl1.1 (Debian 11 / Ubuntu 20.04).
    mirror=$(grep -rhE '^[[:space:]]*(deb|URIs:)[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
        | grep -oE 'https?://[^ ]*security[^ ]*' | head -1 || true)
    if [ "$ID" = ubuntu ]; then
        suite=focal-security; mirror=${mirror:-http://security.ubuntu.com/ubuntu}
    else
        suite=bullseye-security; mirror=${mirror:-http://security.debian.org/debian-security}
    fi
    work=$(mktemp -d)
    mkdir -p "$work/lists/partial" "$CACHE/libssl1.1"
    echo "deb $mirror $suite main" > "$work/sources.list"
    opts=(-o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o Dir::State::Lists="$work/lists" -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
    apt-get "${opts[@]}" update -qq
    (cd "$work" && apt-get "${opts[@]}" download libssl1.1 >/dev/null)
    dpkg -x "$work"/libssl1.1_*.deb "$CACHE/libssl1.1"
    rm -rf "$work"
fi

log "setup complete: $VENV"
