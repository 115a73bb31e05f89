"""server_min.proved: the blocks each user proved most recently, remembered in memory, bounded."""

from __future__ import annotations

import hashlib

from server_min.service.proved import ProvedBlocks


def digest(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest()


def test_a_user_finds_what_it_proved_and_no_one_else_does() -> None:
    proved = ProvedBlocks()
    proved.add(1, [(digest(1), 10), (digest(2), 20)])
    assert proved.sizes(1, [digest(1), digest(2), digest(3)]) == {digest(1): 10, digest(2): 20}
    assert proved.sizes(2, [digest(1), digest(2)]) == {}  # another user has to prove them itself


def test_memory_is_bounded_and_the_newest_are_kept() -> None:
    proved = ProvedBlocks(limit=100)
    proved.add(1, [(digest(n), n) for n in range(1000)])
    assert sum(map(len, proved.newer.values())) + sum(map(len, proved.older.values())) <= 200
    assert proved.sizes(1, [digest(999), digest(950), digest(900)]) == {digest(999): 999, digest(950): 950,
                                                                        digest(900): 900}
    assert proved.sizes(1, [digest(0), digest(500)]) == {}  # forgotten: the database still knows them
