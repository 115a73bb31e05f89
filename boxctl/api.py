"""The Box server's API as typed calls: one method per route, and the only module that knows URL paths.

Below it, boxctl.transport sends the requests (retries, bandwidth limit, byte counts); above it, the
engine and the command line call these methods and read typed records (box_common.schemas for the
sync protocol, the records here for accounts, devices, sharing and links).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypedDict, cast
from urllib.parse import quote

from box_common.frames import Frame
from box_common.schemas import (
    BoxInfo,
    ChangeIn,
    ChangesPage,
    CommitAnswer,
    CommitIn,
    LogAnswer,
    PendingAnswer,
    TreeAnswer,
    WaitAnswer,
)
from boxctl.transport import Transport

MISSING_PER_REQUEST = 10_000  # hashes per `POST /blocks/missing`
MAX_TREE_ANSWER = 512 << 20  # a tree is one answer: a box of 1,000,000 files is about 350 MiB of JSON


class Me(TypedDict):
    """`GET /me`: who a token belongs to."""

    user: str
    device: int | None
    boxes: list[dict[str, Any]]


class NewDevice(TypedDict):
    """`POST /devices`: a device registered for this machine, with its own token."""

    id: int
    name: str
    kind: str
    token: str


class DeviceBox(TypedDict):
    """How far one synced folder of a device has acknowledged one box (`folder`: its id, '' if unnamed)."""

    box_id: int
    box: str
    folder: str
    cursor: int
    head: int
    behind: int
    acked: float | None


class Device(TypedDict):
    """One of the user's devices in `GET /devices`."""

    id: int
    name: str
    kind: str
    created: float
    last_seen: float | None
    revoked: bool
    current: bool
    behind: int
    boxes: list[DeviceBox]


class Revoked(TypedDict):
    """`POST /devices/{ref}/revoke`."""

    id: int
    name: str
    revoked: bool


class RevokedLink(TypedDict):
    """`DELETE /links/{ref}`."""

    id: int
    revoked: bool


class Member(TypedDict):
    """One share of a box in `GET /boxes/{id}/members`."""

    user: str
    path: str
    role: str
    you: bool


class Shared(TypedDict):
    """`POST /boxes/{id}/members`: the share as it now is."""

    user: str
    path: str
    role: str
    created: bool


class Unshared(TypedDict):
    """`DELETE /boxes/{id}/members/{user}`."""

    user: str
    removed: int


class NewLink(TypedDict):
    """`POST /boxes/{id}/links`: the link's page is `url_path` on the server (the token is in it)."""

    id: int
    path: str
    kind: str
    expires: float | None
    url_path: str
    token: str


class Link(TypedDict):
    """One link in `GET /links` (never its token)."""

    id: int
    box: str
    box_id: int
    path: str
    creator: str
    created: float
    expires: float | None
    state: str  # active | expired | revoked


class Api:
    """Typed calls to one server as one user or device, over a Transport (shared between threads)."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    @property
    def server(self) -> str:
        return self.transport.server

    @property
    def sent_bytes(self) -> int:
        return self.transport.sent_bytes

    @property
    def received_bytes(self) -> int:
        return self.transport.received_bytes

    @property
    def retries(self) -> int:
        return self.transport.retries

    def pause(self, attempt: int) -> None:
        """Back off before retry number `attempt` of a call the caller repeats itself."""
        self.transport.pause(attempt)

    def close(self) -> None:
        """Close the transport's connections."""
        self.transport.close()

    # --- accounts and devices -------------------------------------------------------------------

    def me(self) -> Me:
        """Who the token belongs to."""
        return cast(Me, self.transport.get_json("/me"))

    def login(self, user: str, password: str) -> str:
        """A new account token for a user name and password (a transport made with no token)."""
        answer = self.transport.post_json("/login", {"user": user, "password": password}, idempotent=False)
        return str(answer["token"])

    def register_device(self, name: str, kind: str = "desktop") -> NewDevice:
        """Register a device of this user; the answer holds its token."""
        return cast(NewDevice, self.transport.post_json("/devices", {"name": name, "kind": kind}, idempotent=False))

    def devices(self) -> list[Device]:
        """The user's devices."""
        return cast(list[Device], self.transport.get_json("/devices")["devices"])

    def revoke_device(self, ref: str) -> Revoked:
        """Revoke a device by name or id."""
        route = f"/devices/{quote(ref, safe='')}/revoke"
        return cast(Revoked, self.transport.post_json(route, {}, idempotent=False))

    # --- boxes -----------------------------------------------------------------------------------

    def create_box(self, name: str) -> BoxInfo:
        """Create a box of this user (or get it, if it exists)."""
        return cast(BoxInfo, self.transport.post_json("/boxes", {"name": name}))

    def find_box(self, name: str) -> BoxInfo:
        """A box by name: the user's own, or OWNER/BOX[/FOLDER] shared with them."""
        return cast(BoxInfo, self.transport.get_json("/boxes", name=name))

    def box(self, box_id: int) -> BoxInfo:
        """A box by id, as this user sees it (role, folder)."""
        return cast(BoxInfo, self.transport.get_json(_box(box_id)))

    # --- the journal ------------------------------------------------------------------------------

    def commit(self, box_id: int, body: CommitIn) -> CommitAnswer:
        """Apply changes as one atomic commit (retried: its key makes a repeat harmless)."""
        return cast(CommitAnswer, self.transport.post_json(f"{_box(box_id)}/commits", body))

    def commit_by_key(self, box_id: int, key: str) -> int:
        """The seq of the commit sent with `key`; NotFound if it never landed."""
        return int(self.transport.get_json(f"{_box(box_id)}/commits/by-key/{key}")["seq"])

    def new_stage(self, box_id: int) -> int:
        """Open a staged commit; NotFound from a server without stages."""
        return int(self.transport.post_json(f"{_box(box_id)}/stages", {})["stage"])

    def stage(self, box_id: int, stage: int, changes: list[ChangeIn]) -> None:
        """Add a part of changes to a staged commit."""
        self.transport.post_json(f"{_box(box_id)}/stages/{stage}", {"changes": changes})

    def changes(self, box_id: int, cursor: int, limit: int | None = None, folder: str | None = None) -> ChangesPage:
        """Journal entries after `cursor`, one page of whole commits (`folder`: the synced folder asking,
        whose cursor the server notes)."""
        route = f"{_box(box_id)}/changes"
        return cast(ChangesPage, self.transport.get_json(route, cursor=cursor, limit=limit, folder=folder or None))

    def pending(self, box_id: int, cursor: int) -> PendingAnswer:
        """How many changes come after `cursor` (whoever made them), and the head."""
        return cast(PendingAnswer, self.transport.get_json(f"{_box(box_id)}/pending", cursor=cursor))

    def ack(self, box_id: int, device: int, cursor: int, folder: str = "") -> None:
        """Tell the server how far this synced folder (`folder`) of the device has applied the journal."""
        self.transport.post_json(f"{_box(box_id)}/ack", {"device": device, "cursor": cursor, "folder": folder})

    def wait(self, box_id: int, cursor: int, timeout: float) -> WaitAnswer:
        """Long poll: answers once the box has commits after `cursor`, or at `timeout`."""
        route = f"{_box(box_id)}/wait"
        return cast(WaitAnswer, self.transport.get_json(route, cursor=cursor, timeout=timeout))

    def tree(self, box_id: int, path: str = "", at: int | None = None, when: float | None = None) -> TreeAnswer:
        """The box (or folder `path`) as of commit `at`, time `when`, or now."""
        route = f"{_box(box_id)}/tree"
        return cast(TreeAnswer, self.transport.get_json(route, path=path, at=at, time=when,
                                                        max_bytes=MAX_TREE_ANSWER))

    def log(self, box_id: int, path: str | None, limit: int) -> LogAnswer:
        """Commits newest first, or the revisions of one path."""
        return cast(LogAnswer, self.transport.get_json(f"{_box(box_id)}/log", path=path, limit=limit))

    # --- sharing and links ------------------------------------------------------------------------

    def members(self, box_id: int) -> list[Member]:
        """Who has access to the box."""
        return cast(list[Member], self.transport.get_json(f"{_box(box_id)}/members")["members"])

    def share(self, box_id: int, user: str, path: str, role: str) -> Shared:
        """Give `user` `role` access to the box or a folder of it."""
        body = {"user": user, "path": path, "role": role}
        return cast(Shared, self.transport.post_json(f"{_box(box_id)}/members", body))

    def unshare(self, box_id: int, user: str, path: str | None) -> Unshared:
        """End `user`'s access (to folder `path`, or every share of theirs)."""
        route = f"{_box(box_id)}/members/{quote(user, safe='')}"
        return cast(Unshared, self.transport.delete_json(route, path=path))

    def create_link(self, box_id: int, path: str, expires_in: float | None) -> NewLink:
        """Make a read-only link to a path of the box."""
        body = {"path": path, "expires_in": expires_in}
        return cast(NewLink, self.transport.post_json(f"{_box(box_id)}/links", body, idempotent=False))

    def links(self, box_id: int | None) -> list[Link]:
        """The user's links (of one box, if given)."""
        return cast(list[Link], self.transport.get_json("/links", box=box_id)["links"])

    def revoke_link(self, ref: str) -> RevokedLink:
        """Revoke a link by id or by the SHA-256 of its token."""
        return cast(RevokedLink, self.transport.delete_json(f"/links/{ref}"))

    # --- blocks -----------------------------------------------------------------------------------

    def missing(self, hashes: list[str]) -> set[str]:
        """Which of `hashes` this user must upload."""
        found: set[str] = set()
        for start in range(0, len(hashes), MISSING_PER_REQUEST):
            part = hashes[start : start + MISSING_PER_REQUEST]
            found.update(self.transport.post_json("/blocks/missing", {"hashes": part})["missing"])
        return found

    def upload_pack(self, body: bytes | Sequence[bytes | memoryview],
                    on_sent: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Upload a body of frames (idempotent: the server skips blocks it already holds); `on_sent(n)`: how
        many bytes of the body have gone out so far (see Transport.post_frames)."""
        return cast(dict[str, Any], self.transport.post_frames("/blocks/pack", body, on_sent))

    def signatures(self, hashes: list[str], window: int) -> bytes:
        """Delta signatures of blocks, as frames (those the server does not give are left out)."""
        return self.transport.post_bytes("/blocks/signatures", {"hashes": hashes}, window=window)

    def fetch(self, hashes: list[str]) -> Iterator[Frame]:
        """Download blocks as frames, in the order asked (the caller verifies each hash)."""
        return self.transport.stream_frames("/blocks/fetch", {"hashes": hashes}, len(hashes))

    def block(self, sha: str) -> bytes:
        """One block's plain bytes; the server checks it before it answers."""
        return self.transport.get_bytes(f"/blocks/{sha}")


def _box(box_id: int) -> str:
    return f"/boxes/{box_id}"
