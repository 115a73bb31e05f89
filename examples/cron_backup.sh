#!/usr/bin/env bash
# Nightly backup of a folder to Box, for cron. Every run is one atomic commit; older versions stay
# restorable with `boxctl restore PATH --at TIME`.
#
# One-time set-up on this machine (Box cloned and installed in ~/box, as the README says):
#   ~/box/.venv/bin/boxctl login https://box.example.com --user alice --token "$TOKEN"
#   ~/box/.venv/bin/boxctl init ~/projects --server https://box.example.com --box projects-backup
# crontab -e (cron's PATH has no boxctl and makes no folder for a log: both are spelled out):
#   15 2 * * *  mkdir -p "$HOME/.cache/box" && "$HOME/box/examples/cron_backup.sh" "$HOME/projects" >> "$HOME/.cache/box/backup.log" 2>&1
#
# Each run appends one line, `box backup FOLDER TIME exit N`, then the `boxctl sync --json` record (on
# failure too: the error and its exit code), and exits with boxctl's exit code (see the README's table),
# so cron's mail and any monitor see a failure as one.
#
# boxctl is found as $BOXCTL, else beside this script (../.venv/bin/boxctl), else on the PATH.
# In CI, skip `login` and set BOX_SERVER and BOX_TOKEN (a secret) in the job's environment.
set -uo pipefail
FOLDER=${1:?usage: cron_backup.sh FOLDER}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BOXCTL=${BOXCTL:-}
if [ -z "$BOXCTL" ]; then
    if [ -x "$HERE/../.venv/bin/boxctl" ]; then
        BOXCTL="$HERE/../.venv/bin/boxctl"
    else
        BOXCTL=$(command -v boxctl) || { echo "cron_backup.sh: boxctl not found: set BOXCTL=/path/to/.venv/bin/boxctl" >&2; exit 1; }
    fi
fi

# Two runs never overlap (a slow upload past the next schedule): the second one says so and stops.
LOCKS=${XDG_RUNTIME_DIR:-$HOME/.cache}/box
mkdir -p "$LOCKS"
exec 9>"$LOCKS/backup-$(printf '%s' "$FOLDER" | cksum | cut -d' ' -f1).lock"
if ! flock -n 9; then
    echo "cron_backup.sh: a backup of $FOLDER is still running; this run does nothing" >&2
    exit 0
fi

STAMP=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ERRORS=$(mktemp)
trap 'rm -f "$ERRORS"' EXIT
# sync = pull then push; --json gives a record a log parser can read; the exit code says what failed.
RECORD=$("$BOXCTL" -C "$FOLDER" sync -m "backup $STAMP" --json 2>"$ERRORS")
CODE=$?  # boxctl's own code: read right after it, not after an `if !` (that would be the status of `!`)
echo "box backup $FOLDER $STAMP exit $CODE"
if [ -z "$RECORD" ]; then
    # A boxctl that printed no JSON for its error: make the record from its one-line message.
    MESSAGE=$(tail -n 1 "$ERRORS" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')
    RECORD="{\"error\": \"$MESSAGE\", \"exit_code\": $CODE}"
fi
printf '%s\n' "$RECORD"
cat "$ERRORS" >&2
if [ "$CODE" -ne 0 ]; then
    echo "box backup of $FOLDER failed with exit code $CODE" >&2
fi
exit "$CODE"
