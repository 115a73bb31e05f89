#!/usr/bin/env bash
# Nightly backup of a folder to Box, for cron. Every run is one atomic commit; older versions stay
# restorable with `boxctl restore PATH --at TIME`.
#
# One-time set-up on this machine:
#   boxctl login https://box.example.com --user alice --token "$TOKEN"
#   boxctl init ~/projects --server https://box.example.com --box projects-backup --device "$(hostname)"
# crontab -e:
#   15 2 * * *  /path/to/cron_backup.sh ~/projects >> ~/.cache/box-backup.log 2>&1
#
# In CI, skip `login` and set BOX_SERVER and BOX_TOKEN (a secret) in the job's environment.
set -euo pipefail
FOLDER=${1:?usage: cron_backup.sh FOLDER}
cd "$FOLDER"
# sync = pull then push; --json gives a record a log parser can read; the exit code says what failed.
if ! boxctl sync -m "backup $(date -u +%Y-%m-%dT%H:%M:%SZ)" --json; then
    code=$?
    echo "box backup of $FOLDER failed with exit code $code" >&2
    exit "$code"
fi
