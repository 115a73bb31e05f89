"""Passwords: slow salted hashes (argon2id), password login that hands out a new token, and a
rate limit on wrong passwords, counted in an attempt log (limits.base) that every server process may
share: the wiring picks one in memory, in Redis or in PostgreSQL.

The limit is by (user, address) and by address, never by user alone: when wrong passwords for a
user came from anywhere, anyone could lock that user out (5 wrong passwords, then even the right one
got 429, for ever if repeated). Now a user under attack is slowed down only for the addresses that
have failed for it; a correct password from an address that has not failed goes through, and
tokens are never affected.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from functools import partial

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from server_min.errors import BadRequest, ServerError, Unauthorized
from server_min.limits.base import AttemptLog, Attempts
from server_min.meta.base import AccountStore

MIN_PASSWORD = 8
MAX_PASSWORD = 1024
# How many argon2 verifications may run at once: each takes tens of MiB, so a flood must queue.
CONCURRENT_VERIFY = 4

_hasher = PasswordHasher()
_verify_slots = threading.BoundedSemaphore(CONCURRENT_VERIFY)
# Checked when the user does not exist or has no password, so both cost the same time as a real check.
_DUMMY = _hasher.hash("box: no such user, no such password")


class TooManyAttempts(ServerError):
    """429: too many wrong passwords; `retry_after` says when to try again."""

    status = 429
    code = "too_many_attempts"

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(f"too many wrong passwords; try again in {self.retry_after} s",
                         retry_after=self.retry_after)


def hash_password(password: str) -> str:
    """An argon2id hash with its own random salt (the only form a password is ever stored in)."""
    check_password_rules(password)
    return _hasher.hash(password)


def check_password_rules(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise BadRequest(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise BadRequest(f"a password may have at most {MAX_PASSWORD} characters")
    if any(ch in password for ch in "\x00\r\n"):
        raise BadRequest("a password may not hold NUL or line breaks")


def verify_password(stored: str | None, password: str) -> bool:
    """True if `password` matches `stored`; takes as long when `stored` is None (no such user)."""
    with _verify_slots:
        try:
            _hasher.verify(stored or _DUMMY, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return stored is not None


class RateLimiter:
    """Counts wrong passwords per key ('user:NAME', 'addr:IP'); past `limit` in `window` seconds a key is
    locked for `lock` seconds, doubling with each further lock-out up to `max_lock`.

    The counts live in `log`, which several processes may share; a key is forgotten `max(window,
    max_lock)` seconds after its last failure or lock-out, and with it its doubling. `clock` is wall-clock
    time, the only one processes share.
    """

    def __init__(self, log: AttemptLog, limit: int, window: float = 900.0, lock: float = 30.0,
                 max_lock: float = 3600.0, clock: Callable[[], float] = time.time) -> None:
        self.log = log
        self.limit = limit
        self.window = window
        self.lock = lock
        self.max_lock = max_lock
        self.clock = clock

    def wait(self, key: str) -> float:
        """Seconds until `key` may try again (0 if it may now)."""
        now = self.clock()
        record = self.log.get(key, now)
        return max(0.0, record.locked_until - now) if record else 0.0

    def failure(self, key: str) -> None:
        now = self.clock()
        self.log.update(key, now, partial(self._failed, now=now))

    def has_failed(self, key: str) -> bool:
        """True if `key` has failed within the window, or is locked."""
        now = self.clock()
        record = self.log.get(key, now)
        return record is not None and (record.locked_until > now or any(
            now - t < self.window for t in record.failures))

    def success(self, key: str) -> None:
        self.log.forget(key)

    def _failed(self, record: Attempts | None, now: float) -> Attempts:
        """`record` after one more failure at `now` (pure: a shared log may run it twice)."""
        record = record or Attempts()
        failures = [t for t in record.failures if now - t < self.window] + [now]
        locked_until, strikes = record.locked_until, record.strikes
        if len(failures) >= self.limit:
            # min(strikes, 32): past that the lock is max_lock anyway, and 2**strikes stays a small float
            locked_until = now + min(self.max_lock, self.lock * 2 ** min(strikes, 32))
            strikes += 1
            failures = []
        expires = max([locked_until, *failures]) + max(self.window, self.max_lock)
        return Attempts(tuple(failures), locked_until, strikes, expires)


class _NoLog:
    """Stands for a missing attempt log: setting passwords works, checking one refuses loudly."""

    def get(self, key: str, now: float) -> Attempts | None:
        raise RuntimeError(_NO_LOG)

    def update(self, key: str, now: float, change: Callable[[Attempts | None], Attempts]) -> None:
        raise RuntimeError(_NO_LOG)

    def forget(self, key: str) -> None:
        raise RuntimeError(_NO_LOG)

    def close(self) -> None:
        """Nothing to release."""


_NO_LOG = "password login needs an attempt log (the wiring builds one: wiring.open_attempts)"


class Passwords:
    """Setting passwords (an admin on the server) and logging in with one (anyone, rate-limited).

    `per_pair` wrong passwords for one user from one address lock that pair; `per_addr` from one
    address, whatever the users, lock the address; `per_user` from anywhere slow the user down: while
    it lasts, every address that has failed for it waits (each lock doubles, up to an hour).

    `attempts` keeps the counts (the wiring picks it; keys of the three limits never meet); without
    it, passwords can be set but not checked.
    """

    def __init__(self, store: AccountStore, attempts: AttemptLog | None = None, per_user: int = 5,
                 per_addr: int = 20, per_pair: int = 5, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        log: AttemptLog = attempts if attempts is not None else _NoLog()
        self.users = RateLimiter(log, per_user, clock=clock)
        self.addrs = RateLimiter(log, per_addr, clock=clock)
        self.pairs = RateLimiter(log, per_pair, clock=clock)

    def set_password(self, name: str, password: str) -> None:
        user = self.store.user_by_name(name)
        if user is None:
            raise BadRequest(f"no user named {name!r}")
        self.store.set_password(user.id, hash_password(password))

    def login(self, name: str, password: str, addr: str, new_token: Callable[[], tuple[str, str]]) -> dict[str, str]:
        """Check a password and return a new token for the user; 401 if wrong, 429 when rate-limited.

        `new_token` returns (token, its hash). The same 401 answers an unknown user and a wrong
        password, so the answer does not tell which user names exist.
        """
        user_key, addr_key = f"user:{str(name).lower()}", f"addr:{addr}"
        pair_key = f"pair:{str(name).lower()}\n{addr}"
        wait = max(self.pairs.wait(pair_key), self.addrs.wait(addr_key))
        if self.pairs.has_failed(pair_key):  # a user under attack slows down the addresses that failed
            wait = max(wait, self.users.wait(user_key))
        if wait > 0:
            raise TooManyAttempts(wait)
        user = self.store.user_by_name(name) if isinstance(name, str) and 0 < len(name) <= 64 else None
        stored = user.password_hash if user is not None else None
        if not isinstance(password, str) or len(password) > MAX_PASSWORD or not verify_password(stored, password):
            self.pairs.failure(pair_key)
            self.addrs.failure(addr_key)
            self.users.failure(user_key)
            raise Unauthorized("wrong user name or password")
        assert user is not None
        self.pairs.success(pair_key)
        token, token_hash = new_token()
        self.store.add_token(user.id, token_hash)
        return {"user": user.name, "token": token}


__all__ = ["Passwords", "RateLimiter", "TooManyAttempts", "hash_password", "verify_password"]
