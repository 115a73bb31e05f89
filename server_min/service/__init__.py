"""What the server decides: who may do what, which blocks are missing, atomic commits, what members see.

`Service` is built from a metadata store, a block store, a notifier and a login attempt log (see
wiring.py); it knows no SQL, no HTTP and no file paths. Each concept is its own module and object:

  access     Caller, Access, Rights: the access rules, and a folder member's view of the head
  accounts   users, tokens, devices, passwords (passwords.py: hashing and the login rate limit)
  boxes      create, find, list
  blocks     missing (no oracle), upload verification, verified reads, signatures, damage
  changes    the one validator of incoming changes
  commits    atomic commits and stages (kinds.py: a path is a file or a folder, never both)
  journal    pages of changes, acknowledgements, snapshots, history
  sharing    shares of a box or one folder; links: read-only links
  wakeups    long polls
"""

from __future__ import annotations

from server_min.blocks.base import BlockStore, StoreUnavailable
from server_min.errors import Damaged, ServerError, Unavailable
from server_min.integrity import out_of_space
from server_min.limits.base import AttemptLog
from server_min.meta.base import MetaStore
from server_min.notify.base import Notifier
from server_min.service.access import Access, Caller, Rights
from server_min.service.accounts import Accounts, hash_token, new_token
from server_min.service.blocks import Blocks
from server_min.service.boxes import Boxes
from server_min.service.commits import Commits
from server_min.service.journal import Journal
from server_min.service.links import Links
from server_min.service.sharing import Sharing
from server_min.service.wakeups import Wakeups


class Service:
    """The server's rules over the stores it is given."""

    def __init__(self, meta: MetaStore, blocks: BlockStore, notifier: Notifier,
                 attempts: AttemptLog | None = None) -> None:
        """`attempts` counts wrong passwords, shared by every process when the wiring picks a shared one;
        without it, logins with a password are refused (tokens work)."""
        self.meta = meta
        self.store = blocks
        self.notifier = notifier
        self.attempts = attempts
        self.rights = Rights(meta)
        self.accounts = Accounts(meta, self.rights, notifier, attempts)
        self.boxes = Boxes(meta, self.rights)
        self.blocks = Blocks(meta, blocks)
        self.commits = Commits(meta, self.rights, self.accounts, notifier)
        self.journal = Journal(meta, self.rights, self.accounts)
        self.sharing = Sharing(meta, self.rights)
        self.links = Links(meta, self.rights, self.blocks)
        self.wakeups = Wakeups(notifier, self.accounts, self.journal)

    def authenticate(self, token: str | None) -> Caller:
        """The caller a bearer token belongs to, or Unauthorized."""
        return self.accounts.authenticate(token)

    def access(self, caller: Caller, box_id: int, write: bool = False) -> Access:
        """The caller's rights on a box (NotFound when it has none; Forbidden to write without the right)."""
        return self.rights.access(caller, box_id, write)

    def add_user(self, name: str) -> str:
        """Create a user and return its first token."""
        return self.accounts.add_user(name)

    @property
    def store_errors(self) -> tuple[type[BaseException], ...]:
        """The stores' own exceptions, which `explain` may turn into answers."""
        return (*self.meta.errors, StoreUnavailable)

    def explain(self, exc: BaseException) -> ServerError | None:
        """The answer for a store error that says what it is (a full disk, damaged metadata), or None."""
        if isinstance(exc, StoreUnavailable):
            return Unavailable(f"the block store does not answer ({exc}); try again shortly")
        fault = self.meta.fault(exc)
        if fault == "unavailable":
            return Unavailable("the metadata store does not answer; try again shortly")
        if fault == "full":
            return out_of_space()
        if fault == "damaged":
            return Damaged(f"the server's metadata is damaged ({exc}); run 'box-server check' on the server",
                           blocks=[])
        return None

    def close(self) -> None:
        """Stop listening for wake-ups and release the stores' connections."""
        self.notifier.close()
        if self.attempts is not None:
            self.attempts.close()
        self.meta.close()


__all__ = ["Access", "Caller", "Service", "hash_token", "new_token"]
