#!/usr/bin/env bash
# Two devices, one server, all on this machine in a temp folder: push, pull, a conflict, a restore.
set -euo pipefail
WORK=$(mktemp -d "${TMPDIR:-/tmp}/box-demo.XXXXXX")
export BOX_CONFIG_DIR="$WORK/config"        # keep the demo's credentials out of your real ones
PORT=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
URL="http://127.0.0.1:$PORT"
# Bold headings on a terminal only: piped or with NO_COLOR set, plain text (boxctl does the same).
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
    step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
    step() { printf '\n== %s\n' "$*"; }
fi

step "start a server on $URL (data in $WORK/server)"
boxctl serve --data "$WORK/server" --port "$PORT" 2>"$WORK/server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
python3 - "$URL" <<'PY'
import sys, time, urllib.request
for _ in range(100):
    try:
        urllib.request.urlopen(sys.argv[1] + "/v1/health", timeout=1); break
    except OSError:
        time.sleep(0.1)
PY

step "create user alice and log in"
TOKEN=$(boxctl admin add-user alice --data "$WORK/server")
boxctl login "$URL" --user alice --token "$TOKEN"

step "device 1 (laptop): a folder with some files, pushed"
mkdir -p "$WORK/laptop/notes"
echo "first draft" > "$WORK/laptop/notes/report.txt"
head -c 3000000 /dev/urandom > "$WORK/laptop/photo.bin"
boxctl init "$WORK/laptop" --server "$URL" --box docs --device laptop
boxctl -C "$WORK/laptop" status
boxctl -C "$WORK/laptop" push -m "first files"

step "device 2 (desk): clone the box"
boxctl clone "$URL" docs "$WORK/desk" --device desk
cat "$WORK/desk/notes/report.txt"

step "both devices edit report.txt; the laptop pushes first"
echo "laptop edit" > "$WORK/laptop/notes/report.txt"
echo "desk edit" > "$WORK/desk/notes/report.txt"
boxctl -C "$WORK/laptop" push -m "edit on laptop"
boxctl -C "$WORK/desk" push || echo "(push refused with exit code $?: the desk must pull first)"

step "the desk pulls: both versions are kept, then it pushes its copy"
boxctl -C "$WORK/desk" pull
boxctl -C "$WORK/desk" push -m "keep the desk's edit"
boxctl -C "$WORK/laptop" pull
ls "$WORK/laptop/notes"

step "history of report.txt, then restore its first version"
boxctl -C "$WORK/laptop" log notes/report.txt
boxctl -C "$WORK/laptop" restore notes/report.txt --rev 1
cat "$WORK/laptop/notes/report.txt"
boxctl -C "$WORK/desk" pull
boxctl -C "$WORK/desk" log -n 3

step "done: everything is in $WORK"
