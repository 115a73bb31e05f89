#!/usr/bin/env bash
# Installs Debian's chromium for the browser test of the link page (tests/browser/).
# Idempotent: does nothing when /usr/bin/chromium is already there. Never fails the caller:
# without a browser the browser test skips and says why.
set -u
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_chromium: not root or no apt-get; the browser test will be skipped" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1 \
    || echo "install_chromium: apt-get install chromium failed; the browser test will be skipped" >&2
exit 0
