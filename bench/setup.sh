#!/usr/bin/env bash
# Install what the benchmark needs: the peers from Debian's packages (rsync, restic, borg, GNU time)
# and the Python extras (matplotlib, psutil) into the project's venv. Safe to run again: it only
# installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"

need=()
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v restic >/dev/null 2>&1 || need+=(restic)
command -v borg >/dev/null 2>&1 || need+=(borgbackup)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
    echo "bench/setup.sh: installing ${need[*]} from Debian" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "bench/setup.sh: need root (or sudo) to install ${need[*]}" >&2; exit 1; }
        SUDO="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

test -x "$VENV/bin/python" || python3 -m venv "$VENV"
if ! "$VENV/bin/python" -c 'import matplotlib, psutil, boxctl' >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install -q -e '.[bench]'
fi
