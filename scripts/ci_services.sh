#!/usr/bin/env bash
# The services the tests use besides their own processes: nginx (Debian's package; the tests run it
# themselves), PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379. Installs or starts what is
# missing, and fails loudly when a service cannot be had: no test is skipped for want of one.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq --no-install-recommends nginx-light >/dev/null 2>&1 \
        || apt-get install -y -qq --no-install-recommends nginx >/dev/null
fi

pg_up() { python3 - <<'PY'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
except OSError:
    sys.exit(1)
PY
}
if ! pg_up; then
    (command -v service >/dev/null && service postgresql start) || pg_ctlcluster --skip-systemctl-redirect 15 main start || true
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
pg_up || { echo "ci_services: PostgreSQL does not answer on 127.0.0.1:5432" >&2; exit 1; }

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --daemonize yes >/dev/null
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 1; done
fi
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { echo "ci_services: Redis does not answer on 127.0.0.1:6379" >&2; exit 1; }
echo "ci_services: nginx $(nginx -v 2>&1 | sed 's/.*\///'), PostgreSQL and Redis answer" >&2
