"""server_min/service/passwords.py: argon2 hashes, the rate limiter's lock-outs, and login answers.

The limiter's tests run on every login attempt log (limits/: memory, Redis, PostgreSQL); with a shared
one, two limiters stand for two server processes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from server_min.errors import BadRequest, Unauthorized
from server_min.limits.base import AttemptLog
from server_min.limits.memory import MemoryAttempts
from server_min.service.passwords import Passwords, RateLimiter, TooManyAttempts, hash_password, verify_password
from server_min.wiring import service_for_data
from tests.bus_servers import attempt_logs

Logs = Callable[[], AttemptLog]


@pytest.fixture(params=["memory", "redis", "postgres"])
def logs(request: pytest.FixtureRequest) -> Iterator[Logs]:
    """Makes attempt logs over one store: each call is another server process's."""
    with attempt_logs(request.param) as make:
        yield make


@pytest.fixture
def log(logs: Logs) -> AttemptLog:
    return logs()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_hash_is_salted_argon2id_and_verifies() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first.startswith("$argon2id$") and first != second
    assert "correct horse" not in first
    assert verify_password(first, "correct horse") and not verify_password(first, "correct horsE")
    assert not verify_password(None, "anything at all")
    assert not verify_password("not a hash", "correct horse")


@pytest.mark.parametrize("bad", ["short", "", "x" * 1025, "with\nnewline", "nul\x00byte"])
def test_password_rules(bad: str) -> None:
    with pytest.raises(BadRequest):
        hash_password(bad)


def test_rate_limiter_locks_and_doubles(log: AttemptLog) -> None:
    clock = Clock()
    limiter = RateLimiter(log, limit=3, window=60, lock=10, max_lock=25, clock=clock)
    for _ in range(2):
        limiter.failure("k")
    assert limiter.wait("k") == 0
    limiter.failure("k")
    assert limiter.wait("k") == 10
    clock.now += 10
    assert limiter.wait("k") == 0
    for _ in range(3):
        limiter.failure("k")
    assert limiter.wait("k") == 20  # the second lock-out lasts twice as long
    clock.now += 20
    for _ in range(3):
        limiter.failure("k")
    assert limiter.wait("k") == 25  # capped
    limiter.success("k")
    assert limiter.wait("k") == 0


def test_failures_outside_the_window_are_forgotten(log: AttemptLog) -> None:
    clock = Clock()
    limiter = RateLimiter(log, limit=3, window=60, lock=10, clock=clock)
    limiter.failure("k")
    limiter.failure("k")
    clock.now += 61
    limiter.failure("k")
    assert limiter.wait("k") == 0


def test_rate_limiter_memory_is_bounded() -> None:
    log = MemoryAttempts(max_keys=100)
    limiter = RateLimiter(log, limit=3)
    for i in range(1000):
        limiter.failure(f"addr:{i}")
    assert len(log) <= 100


def test_login_answers(tmp_path: Path, log: AttemptLog) -> None:
    service = service_for_data(tmp_path / "data")
    service.add_user("alice")
    clock = Clock()
    accounts = Passwords(service.meta, log, per_user=2, per_addr=3, clock=clock)
    accounts.set_password("alice", "alice's password")
    with pytest.raises(BadRequest):
        accounts.set_password("nobody", "some password")
    made = accounts.login("alice", "alice's password", "10.0.0.1", lambda: ("tok", "hash-of-tok"))
    assert made == {"user": "alice", "token": "tok"}
    assert service.meta.token("hash-of-tok").name == "alice"  # a real, stored token (only its hash)
    with pytest.raises(Unauthorized) as wrong:
        accounts.login("alice", "nope nope", "10.0.0.1", lambda: ("x", "y"))
    with pytest.raises(Unauthorized) as ghost:
        accounts.login("ghost", "nope nope", "10.0.0.2", lambda: ("x", "y"))
    assert wrong.value.body() == ghost.value.body()
    with pytest.raises(Unauthorized):
        accounts.login("alice", "nope again", "10.0.0.1", lambda: ("x", "y"))
    with pytest.raises(TooManyAttempts) as locked:  # 2 wrong from 10.0.0.1: that pair waits, even if right
        accounts.login("alice", "alice's password", "10.0.0.1", lambda: ("x", "y"))
    assert locked.value.status == 429 and locked.value.retry_after >= 1
    # another address that has not failed gets in at once: no one can lock alice out
    assert accounts.login("alice", "alice's password", "10.0.0.4", lambda: ("t3", "h3"))["token"] == "t3"
    clock.now += 31
    assert accounts.login("alice", "alice's password", "10.0.0.1", lambda: ("t2", "h2"))["token"] == "t2"


def test_a_user_under_attack_slows_down_the_addresses_that_failed(tmp_path: Path, log: AttemptLog) -> None:
    service = service_for_data(tmp_path / "data")
    service.add_user("alice")
    clock = Clock()
    accounts = Passwords(service.meta, log, per_user=3, per_addr=10, per_pair=5, clock=clock)
    accounts.set_password("alice", "alice's password")
    for i in range(3):  # three addresses, one wrong guess each: none reaches its own limit
        with pytest.raises(Unauthorized):
            accounts.login("alice", f"guess {i}", f"10.0.1.{i}", lambda: ("x", "y"))
    with pytest.raises(TooManyAttempts):  # but alice is under attack: the guessers wait
        accounts.login("alice", "guess again", "10.0.1.0", lambda: ("x", "y"))
    assert accounts.login("alice", "alice's password", "10.0.2.1", lambda: ("t", "h"))["token"] == "t"
    # an address locked by wrong passwords for many users waits for every user
    for i in range(10):
        with pytest.raises(Unauthorized):
            accounts.login(f"user{i}", "guess", "10.0.3.1", lambda: ("x", "y"))
    with pytest.raises(TooManyAttempts):
        accounts.login("alice", "alice's password", "10.0.3.1", lambda: ("x", "y"))


def test_two_processes_share_the_count(tmp_path: Path, logs: Logs) -> None:
    """Wrong passwords sent to two server processes in turn lock the pair as if sent to one."""
    service = service_for_data(tmp_path / "data")
    service.add_user("alice")
    clock = Clock()
    one, two = (Passwords(service.meta, logs(), per_pair=4, clock=clock) for _ in range(2))
    one.set_password("alice", "alice's password")
    for i in range(4):
        with pytest.raises(Unauthorized):
            (one, two)[i % 2].login("alice", f"guess {i}", "10.0.5.1", lambda: ("x", "y"))
    for server in (one, two):
        with pytest.raises(TooManyAttempts):
            server.login("alice", "alice's password", "10.0.5.1", lambda: ("x", "y"))
    clock.now += 31
    assert two.login("alice", "alice's password", "10.0.5.1", lambda: ("t", "h"))["token"] == "t"


def test_failures_counted_at_once_by_two_processes_are_all_counted(logs: Logs) -> None:
    """Each failure is one atomic update: 2 processes x 4 threads x 10 failures lock at exactly 80."""
    clock = Clock()
    limiters = [RateLimiter(logs(), limit=81, window=60, lock=10, clock=clock) for _ in range(2)]
    threads = [threading.Thread(target=lambda lim=limiters[i % 2]: [lim.failure("k") for _ in range(10)])
               for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert limiters[0].wait("k") == 0 and limiters[1].has_failed("k")
    limiters[1].failure("k")  # the 81st: none of the 80 was lost, or this one would not lock
    assert limiters[0].wait("k") == 10


def test_a_user_name_of_any_length_or_code_point_is_counted(logs: Logs) -> None:
    """Names are the client's: a long one, or one with a lone surrogate from JSON, still counts."""
    clock = Clock()
    limiter = RateLimiter(logs(), limit=2, lock=10, clock=clock)
    for key in ("user:" + "x" * 100_000, "user:\ud800"):
        limiter.failure(key)
        limiter.failure(key)
        assert limiter.wait(key) == 10


def test_login_without_an_attempt_log_is_refused_but_passwords_can_be_set(tmp_path: Path) -> None:
    service = service_for_data(tmp_path / "data")
    service.add_user("alice")
    passwords = Passwords(service.meta)  # as `box-server admin passwd` builds it
    passwords.set_password("alice", "alice's password")
    with pytest.raises(RuntimeError, match="attempt log"):
        passwords.login("alice", "alice's password", "10.0.0.1", lambda: ("x", "y"))
