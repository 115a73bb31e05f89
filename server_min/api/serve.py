"""Running the app under uvicorn: connection tuning, access-log redaction, TLS and trusted proxies."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from fastapi import FastAPI

from server_min.api.connections import uvicorn_options


def run(app: FastAPI, host: str, port: int, log_level: str = "warning", tls_cert: Path | None = None,
        tls_key: Path | None = None, trust_proxy: tuple[str, ...] = ()) -> None:
    """Serve `app` in the foreground until interrupted (over TLS when given a certificate and key).

    X-Forwarded-For and X-Forwarded-Proto are believed only from the addresses in `trust_proxy`
    (default none): uvicorn would otherwise believe any client on 127.0.0.1, and the password rate
    limit would see a new address in every request.
    """
    import uvicorn

    redact_access_log()  # link URLs carry their token: never write one to a log
    tls = {"ssl_certfile": str(tls_cert), "ssl_keyfile": str(tls_key)} if tls_cert and tls_key else {}
    proxies = {"proxy_headers": bool(trust_proxy), "forwarded_allow_ips": list(trust_proxy) or ""}
    # A long poll must not hold a stopping server for its whole timeout: give requests 3 s, then close.
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=3,
                **uvicorn_options(), **proxies, **tls)


class RedactLinkTokens(logging.Filter):
    """Replaces link tokens in access-log lines, so that a log never holds a working link."""

    PATTERN = re.compile(r"/l/[A-Za-z0-9_-]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.PATTERN.sub("/l/<redacted>", a) if isinstance(a, str) else a
                                for a in record.args)
        if isinstance(record.msg, str):
            record.msg = self.PATTERN.sub("/l/<redacted>", record.msg)
        return True


def redact_access_log() -> None:
    """Install the redaction on uvicorn's loggers (call before uvicorn starts)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(RedactLinkTokens())


__all__ = ["RedactLinkTokens", "redact_access_log", "run"]
